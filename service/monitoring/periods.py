"""Periods and the SQL that differs between SQLite and PostgreSQL, for the running counts.

Contract:
- Levels: ALL (period 0), WEEK, DAY and HOUR, and DAY_COARSE and HOUR_COARSE (the same periods
  on coarser bins). A period counts whole hours, days or weeks (of 168 hours) since 1970-01-01
  UTC to a row's created_at; a row without created_at is period -1 at every level but ALL.
- `period(dialect, level)`: the SQL for the period of row `r`; `dialect_of(database)`: SQLITE
  or POSTGRESQL, each a Dialect of the expressions that differ.
- `window_start(hours, now)`: the first hour (or day) of the reports' windows, the one that holds
  `now - hours`; `start_time(period)` its start as the reports show it.
- `row_source(column, *rows)` and `table_source(column, table, sign, where)`: the rows `r` a
  count statement adds up, with `column` and the sign each counts with (a trigger's NEW and OLD,
  or a table's rows).
tables.py and population.py build their triggers from these.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import SqliteDatabase

from service.timestamps import iso_utc

FINE_BINS = 10_000
COARSE_BINS = 100
ALL, WEEK, DAY, HOUR, DAY_COARSE, HOUR_COARSE = range(6)
LEVELS = range(6)
HOURS_IN = {WEEK: 168, DAY: 24, HOUR: 1}  # a period's length at each level
FINER = {WEEK: DAY, DAY: HOUR}
UNKNOWN_PERIOD = -1  # the hour and day of a row without created_at
EPOCH = datetime(1970, 1, 1)  # naive UTC, as the table's timestamps are


@dataclass(frozen=True)
class Dialect:
    """What differs between the two backends' SQL, as expressions over a row alias `r`."""

    seconds: str  # created_at as whole seconds since 1970, or NULL
    divide: str  # {seconds} divided by {length}, rounded down
    fine_bin: str
    least: str
    greatest: str


SQLITE = Dialect(
    seconds="CAST(strftime('%s', r.created_at) AS INTEGER)",
    divide="{seconds} / {length}",
    fine_bin=f"MIN(MAX(CAST(r.proba * {FINE_BINS} AS INTEGER), 0), {FINE_BINS - 1})",
    least="MIN",
    greatest="MAX",
)
POSTGRESQL = Dialect(
    seconds="EXTRACT(EPOCH FROM r.created_at)",
    divide="FLOOR({seconds} / {length})::bigint",
    fine_bin=f"LEAST(GREATEST(FLOOR(r.proba * {FINE_BINS})::int, 0), {FINE_BINS - 1})",
    least="LEAST",
    greatest="GREATEST",
)


def hour_start(hour):
    return EPOCH + timedelta(hours=hour)


def period(dialect, level):
    """The SQL for the period of row `r` at `level` (-1 when it has no created_at)."""
    if level == ALL:
        return "0"
    hours = HOURS_IN[{DAY_COARSE: DAY, HOUR_COARSE: HOUR}.get(level, level)]
    return f"COALESCE({dialect.divide.format(seconds=dialect.seconds, length=hours * 3600)}, -1)"


def dialect_of(database):
    return SQLITE if isinstance(database, SqliteDatabase) else POSTGRESQL


HOURLY_WINDOWS_UP_TO = 48  # hours; a longer window starts at midnight UTC


def window_start(hours, now, every_day=False):
    """The first hour (or day) of a window: the one that holds `now - hours`, so a window of 24
    hours holds every row of the last 24 hours and at most one hour more. A window of over 48
    hours starts at the midnight (UTC) before, which makes it cheaper to read (fewer pieces)."""
    first_hour = max(0, math.floor((now - EPOCH - timedelta(hours=hours)) / timedelta(hours=1)))
    if every_day:
        return first_hour // 24
    return first_hour if hours <= HOURLY_WINDOWS_UP_TO else first_hour // 24 * 24


def start_time(period, every_day=False):
    return iso_utc(hour_start(period * (24 if every_day else 1)))


def read_columns(column):
    """model_version, created_at and proba, and `column` (a name, or a tuple of them)."""
    return ("model_version", "created_at", "proba", *((column,) if isinstance(column, str) else column))


def row_source(column, *rows):
    """A subquery of trigger rows, ("NEW", 1) or ("OLD", -1): what every count reads, `column`
    (the label for the totals, the bins for the population, a tuple for the pairs) and the sign
    each row counts with."""
    columns = read_columns(column)
    selects = []
    for name, sign in rows:
        picked = ", ".join(f"{name}.{each} AS {each}" for each in columns)
        selects.append(f"SELECT {picked}, {sign} AS sign")
    return f"({' UNION ALL '.join(selects)}) AS r"


def table_source(column, table, sign, where=""):
    """The same of a table's rows (or a trigger's transition table), each counted with `sign`."""
    return f"(SELECT {', '.join(read_columns(column))}, {sign} AS sign FROM {table} {where}) AS r"
