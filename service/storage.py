"""How full the database is: its size, the predictions it holds, what one costs, and how long
until the plan is full.

Contract:
- `usage(database, plan_gb, warn_share, now)`: {"database_bytes": the whole database on disk
  (PostgreSQL's pg_database_size; SQLite's pages), "predictions": the rows of the predictions
  table, "bytes_per_prediction": the one divided by the other (the table, its indexes, the running
  totals and what else the database holds, shared out), "added_last_week"}; with `plan_gb` (the
  plan's storage, 1 GB = 10^9 bytes) also "plan_bytes", "share_used", "days_left" at the last
  week's rate (None when it isn't growing) and "warning", a sentence, from `warn_share` of the
  plan on (else None), logged once an hour per process. Read from the running totals and two
  cheap queries: its cost does not grow with the table. Reads only, so it answers through a
  read-only credential too.
"""

import logging
import math
import time

from service.monitoring.periods import EPOCH, SQLITE, dialect_of

WEEK_HOURS = 168
log = logging.getLogger(__name__)
WARNED = [float("-inf")]  # when this process last logged the warning: once an hour is enough


def database_bytes(database):
    if dialect_of(database) is SQLITE:
        (pages,) = database.execute_sql("PRAGMA page_count").fetchone()
        (size,) = database.execute_sql("PRAGMA page_size").fetchone()
        return pages * size
    (size,) = database.execute_sql("SELECT pg_database_size(current_database())").fetchone()
    return size


def counts(database, since_hour):
    """(rows in the table, rows added since `since_hour`), from the running totals."""
    param = database.param
    query = f"""SELECT COALESCE(SUM(predictions - archived), 0),
                       COALESCE(SUM(CASE WHEN hour >= {param} THEN predictions ELSE 0 END), 0)
                FROM stats_hour"""
    return tuple(int(value) for value in database.execute_sql(query, (since_hour,)).fetchone())


def usage(database, plan_gb, warn_share, now):
    this_hour = math.floor((now - EPOCH).total_seconds() / 3600)
    size = database_bytes(database)
    rows, added = counts(database, this_hour - WEEK_HOURS)
    per_row = size / rows if rows else None
    found = {
        "database_bytes": size,
        "predictions": rows,
        "bytes_per_prediction": round(per_row) if per_row else None,
        "added_last_week": added,
    }
    if not plan_gb:
        return found
    plan = plan_gb * 1e9
    share = size / plan
    growth_per_day = added / 7 * per_row if per_row else 0
    days_left = max(0.0, (plan - size) / growth_per_day) if growth_per_day else None
    warning = None
    if share >= warn_share:
        left = (
            f"about {days_left:.0f} days at the last week's rate"
            if days_left is not None
            else "no growth last week"
        )
        warning = (
            f"the database uses {share:.0%} of the plan's {plan_gb:g} GB ({left}): archive the oldest "
            "predictions or upgrade the plan before it is full (docs/operations.md)"
        )
    if warning and time.monotonic() - WARNED[0] > 3600:
        WARNED[0] = time.monotonic()
        log.warning("database: %s", warning)
    return found | {
        "plan_bytes": int(plan),
        "share_used": round(share, 4),
        "days_left": None if days_left is None else round(days_left, 1),
        "warning": warning,
    }
