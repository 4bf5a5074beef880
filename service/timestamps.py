"""Time as the predictions table keeps it: naive UTC, since SQLite has no time zones.

Contract: `utc_now()` is now as naive UTC; `iso_utc(timestamp)` is ISO 8601 with a Z, or None
for None (rows from the tutorial's table recorded no time).
"""

from datetime import UTC, datetime


def utc_now():
    return datetime.now(UTC).replace(tzinfo=None)


def iso_utc(timestamp):
    return None if timestamp is None else timestamp.isoformat() + "Z"
