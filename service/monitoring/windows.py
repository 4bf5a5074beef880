"""Reading the running totals: hours and days, a window's histograms, and a cache of periods.

Contract (use inside `snapshot(database)`, so that every query sees one committed state):
- `hour_tables()` and `day_tables()`: {model_version: PeriodTable} of stats_hour, per hour, or
  with each day's hours added up in the database.
- `whole_history_histograms(database, tables, cache)`, `histograms_since(database, first_hour,
  tables, cache)` (a window, as the pieces that cost least: weeks, days and hours, each edge
  added up from finer periods or taken whole minus its other side) and `series_histograms()`
  (per day or hour, on the coarse bins): {model_version: Histogram}.
- `served_hours(database)`: per model version, the first and last hour it served in.
- `PeriodCache(budget_bytes)` keeps the cells of the periods read, per process, and hands them
  back only while the period's count of labelled changes (the sum of `labelled_changes` over its
  hours, which every trigger adds to in the transaction that changes its cells, and which never
  goes down) is the one read with them, in the same database generation (`stats_generation`).
  So a cached period is always the period as stored. The least recently used go past the budget.
Reads only; the tables are tables.py's.
"""

import threading
from collections import OrderedDict

import numpy as np

from service.monitoring.histogram import Histogram
from service.monitoring.periods import (
    ALL,
    COARSE_BINS,
    DAY,
    DAY_COARSE,
    FINE_BINS,
    FINER,
    HOUR,
    HOUR_COARSE,
    HOURS_IN,
    SQLITE,
    UNKNOWN_PERIOD,
    WEEK,
    dialect_of,
)
from service.monitoring.pgcopy import copy_rows
from service.monitoring.tables import HOUR_COLUMNS


def snapshot(database):
    """A read-only transaction whose queries all see the same committed state, without blocking
    writers: PostgreSQL's REPEATABLE READ; on SQLite a deferred transaction (in WAL mode)."""
    if dialect_of(database) is SQLITE:
        return database.atomic(lock_type="DEFERRED")
    return database.atomic(isolation_level="REPEATABLE READ READ ONLY")


class PeriodTable:
    """One model version's rows of stats_hour (each an hour, or a day added up at its first hour):
    `hours`, and `values` with a column per HOUR_COLUMNS."""

    def __init__(self, hours, values):
        self.hours = hours
        self.values = values

    def column(self, name):
        return self.values[:, HOUR_COLUMNS.index(name)]

    def totals(self, first_hour=None):
        """{column: total} over the hours from `first_hour` on (None: every hour)."""
        rows = self.values if first_hour is None else self.values[self.hours >= first_hour]
        return dict(zip(HOUR_COLUMNS, rows.sum(axis=0).tolist(), strict=True))

    def totals_by_period(self, hours_per_period):
        """{period: {column: total}}, periods of `hours_per_period` hours."""
        periods, inverse = np.unique(self.hours // hours_per_period, return_inverse=True)
        sums = np.zeros((len(periods), len(HOUR_COLUMNS)))
        np.add.at(sums, inverse, self.values)
        return {
            period: dict(zip(HOUR_COLUMNS, row, strict=True))
            for period, row in zip(periods.tolist(), sums.tolist(), strict=True)
        }

    def labelled_periods(self, level):
        """(periods, labelled rows, labelled changes) of `level`'s periods that hold labelled rows,
        in order. An hour of -1 (no created_at) is period -1 at every level but ALL."""
        keys = np.zeros_like(self.hours) if level == ALL else self.hours // HOURS_IN[level]
        periods, inverse = np.unique(keys, return_inverse=True)
        labelled = np.bincount(inverse, weights=self.column("labelled"), minlength=len(periods))
        changes = np.bincount(inverse, weights=self.column("labelled_changes"), minlength=len(periods))
        holding = labelled > 0
        return periods[holding], labelled[holding], changes[holding]


def hour_tables(database, first_hour=None):
    """{model_version: PeriodTable} of stats_hour, from `first_hour` on (None: every hour)."""
    where, params = ("", ()) if first_hour is None else (f"WHERE hour >= {database.param}", (first_hour,))
    query = f"SELECT model_version, hour, {', '.join(HOUR_COLUMNS)} FROM stats_hour {where} ORDER BY 1, 2"
    return tables_of(database.execute_sql(query, params).fetchall())


def day_tables(database, hourly_day=None, first_hour=None):
    """{model_version: PeriodTable} of stats_hour with the hours of each day added up, as one row
    at the day's first hour, except those of `hourly_day` (and hour -1, no created_at); from
    `first_hour` on (None: every hour). Weeks, days and the whole history add up the same; a
    table running for a year reads 365 rows per version instead of 8,760."""
    param = database.param
    start = f"CASE WHEN hour < 0 THEN hour WHEN hour / 24 = {param} THEN hour ELSE hour / 24 * 24 END"
    where = "" if first_hour is None else f"WHERE hour >= {param}"
    query = f"""SELECT model_version, {start}, {", ".join(f"SUM({column})" for column in HOUR_COLUMNS)}
                FROM stats_hour {where} GROUP BY 1, 2 ORDER BY 1, 2"""
    params = (-1 if hourly_day is None else hourly_day,) + (() if first_hour is None else (first_hour,))
    return tables_of(database.execute_sql(query, params).fetchall())


def served_hours(database):
    """{model_version: (first hour, last hour)} in which it served a prediction still counted
    (hours with created_at only): when each version took over, and when it last served."""
    query = """SELECT model_version, MIN(hour), MAX(hour) FROM stats_hour
               WHERE hour >= 0 AND predictions > 0 GROUP BY model_version"""
    return {version: (first, last) for version, first, last in database.execute_sql(query).fetchall()}


def tables_of(rows):
    """{model_version: PeriodTable} of rows (model_version, hour, *HOUR_COLUMNS) in that order."""
    if not rows:
        return {}
    versions = np.array([row[0] for row in rows])
    numbers = np.array([row[1:] for row in rows], dtype=float)
    tables = {}
    for version in dict.fromkeys(versions.tolist()):
        mine = numbers[versions == version]
        tables[version] = PeriodTable(mine[:, 0].astype(np.int64), mine[:, 1:])
    return tables


FOREVER = 2**62  # a period later than any row's


class PeriodCache:
    """The cells of stats_bin periods already read, by (generation, level, period, model_version),
    each with the period's count of labelled changes when read. The triggers add to that count in
    the transaction that changes the period's cells, and it never goes down, so cells are taken
    from here only while the count read in the same snapshot is the one they were stored with.
    The least recently used go beyond `budget_bytes`."""

    def __init__(self, budget_bytes):
        self.budget_bytes = budget_bytes
        self.entries = OrderedDict()
        self.size = 0
        self.reads = 0  # periods read from the database and stored here
        self.lock = threading.Lock()

    def get(self, key, changes):
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or entry[0] != changes:
                return None
            self.entries.move_to_end(key)
            return entry[1]

    def fetch(self, wanted, read_missing):
        """{key: cells} for `wanted`, {key: changes as counted now}: from here where the count is
        the one stored, the others from read_missing(keys) -> {key: cells}, then stored."""
        found = {key: self.get(key, changes) for key, changes in wanted.items()}
        missing = [key for key, cells in found.items() if cells is None]
        if missing:
            for key, cells in read_missing(missing).items():
                found[key] = cells
                self.put(key, wanted[key], cells)
        return found

    def put(self, key, changes, cells):
        with self.lock:
            self.reads += 1
            old = self.entries.pop(key, None)
            self.size += cells.nbytes - (0 if old is None else old[1].nbytes)
            self.entries[key] = (changes, cells)
            while self.size > self.budget_bytes and self.entries:
                _, (_, dropped) = self.entries.popitem(last=False)
                self.size -= dropped.nbytes

    def clear(self):
        with self.lock:
            self.entries.clear()
            self.size = 0


CACHED_COST = 50  # what adding up a cached period costs, in cells read
QUERY_COST = 100  # what one more query costs, in cells read


def generation(database):
    (found,) = database.execute_sql("SELECT MAX(generation) FROM stats_generation").fetchone()
    return found


CELL_COLUMNS = """CAST(bin AS INTEGER), CAST(positives AS BIGINT), CAST(negatives AS BIGINT),
    CAST(sum_proba AS DOUBLE PRECISION), CAST(min_proba AS DOUBLE PRECISION),
    CAST(max_proba AS DOUBLE PRECISION)"""


class Plan:
    """For a set of pieces (level, first period, last period, sign) to add up into histograms:
    per level and model version the periods that hold labelled rows, and what each costs to add,
    little when the cache holds its cells, else its cells and a query. Use inside snapshot()."""

    def __init__(self, database, tables, cache):
        self.database = database
        self.cache = cache
        self.generation = generation(database)
        self.versions = sorted(tables)
        self.periods = {}
        for version, table in tables.items():
            for level in (ALL, WEEK, DAY, HOUR):
                periods, labelled, changes = table.labelled_periods(level)
                cached = [
                    cache.get(self.key(level, period, version), count) is not None
                    for period, count in zip(periods.tolist(), changes.tolist(), strict=True)
                ]
                cost = np.where(cached, CACHED_COST, np.minimum(labelled, FINE_BINS) + QUERY_COST)
                self.periods[level, version] = (periods, changes, np.concatenate([[0], np.cumsum(cost)]))

    def key(self, level, period, version):
        return self.generation, level, period, version

    def span(self, level, version, first, last):
        periods = self.periods[level, version][0]
        return int(np.searchsorted(periods, first, "left")), int(np.searchsorted(periods, last, "right"))

    def cost(self, pieces):
        total = 0.0
        for level, first, last, _ in pieces:
            for version in self.versions:
                low, high = self.span(level, version, first, last)
                cumulative = self.periods[level, version][2]
                total += cumulative[high] - cumulative[low]
        return total

    def histograms(self, pieces):
        """{model_version: Histogram} of the pieces, for the versions with labelled rows in any."""
        found = {}
        for version in self.versions:
            parts = [
                (level, sign, *self.span(level, version, first, last)) for level, first, last, sign in pieces
            ]
            if all(low == high for *_, low, high in parts):
                continue
            histogram = found[version] = Histogram()
            for level, sign, low, high in parts:
                periods, changes, _ = self.periods[level, version]
                for period, count in zip(periods[low:high].tolist(), changes[low:high].tolist(), strict=True):
                    histogram.add_rows(self.cells(level, period, version, count), sign)
        return found

    def cells(self, level, period, version, changes):
        """The period's cells (bin, positives, negatives, sum_proba, min, max), cached or read."""
        key = self.key(level, period, version)

        return self.cache.fetch({key: changes}, self.read_missing)[key]

    def read_missing(self, keys):
        """{key: cells} read from the database, for keys made by key()."""
        return {key: self.read_cells(*key[1:]) for key in keys}

    def read_cells(self, level, period, version):
        param = self.database.param
        query = f"SELECT {CELL_COLUMNS} FROM stats_bin WHERE level = {param} AND period = {param} AND model_version = {param}"  # noqa: E501
        return read_cells(self.database, query, (level, period, version))


CELL_FIELDS = [
    ("bin", ">i4"), ("positives", ">i8"), ("negatives", ">i8"),
    ("sum_proba", ">f8"), ("low", ">f8"), ("high", ">f8"),
]  # fmt: skip
PERIOD_FIELD = ("period", ">i8")


def read_cells(database, query, params, fields=CELL_FIELDS):
    """The query's rows (bin, positives, negatives, sum_proba, min, max; or as `fields` says) as
    an array of floats; from PostgreSQL in its binary COPY format (pgcopy.py)."""
    if dialect_of(database) is SQLITE:
        return np.array(database.execute_sql(query, params).fetchall(), dtype=float).reshape(-1, len(fields))
    return copy_rows(database, query, params, fields)


def histograms_since(database, first_hour, tables, cache):
    """{model_version: Histogram} of the labelled rows whose hour is `first_hour` or later, from
    the pieces that cost least to add up (`tables`, from day_tables(), size them): weeks, days
    and hours of the window, each edge either added up from finer periods or taken as a whole
    minus its other side; or everything minus the periods before the window."""
    plan = Plan(database, tables, cache)
    week = first_hour // HOURS_IN[WEEK]
    inside = [*tail(WEEK, first_hour, plan.cost), (WEEK, week + 1, FOREVER, 1)]
    outside = [
        (ALL, 0, 0, 1),
        (WEEK, UNKNOWN_PERIOD, week - 1, -1),
        *negated(head(WEEK, first_hour, plan.cost)),
    ]
    return plan.histograms(min(inside, outside, key=plan.cost))


def tail(level, first_hour, cost):
    """Pieces (level, first period, last period, sign) for the hours of `level`'s period that
    holds first_hour, from first_hour on."""
    period, hours = first_hour // HOURS_IN[level], HOURS_IN[level]
    if first_hour % hours == 0:
        return [(level, period, period, 1)]
    finer = FINER[level]
    child, first_child, last_child = child_periods(level, first_hour)
    later = [(finer, child + 1, last_child, 1)] if child < last_child else []
    earlier = [(finer, first_child, child - 1, -1)] if child > first_child else []
    added_up = [*later, *tail(finer, first_hour, cost)]
    whole_minus = [(level, period, period, 1), *earlier, *negated(head(finer, first_hour, cost))]
    return min(added_up, whole_minus, key=cost)


def head(level, first_hour, cost):
    """Pieces for the hours of `level`'s period that holds first_hour, before first_hour."""
    period, hours = first_hour // HOURS_IN[level], HOURS_IN[level]
    if first_hour % hours == 0:
        return []
    finer = FINER[level]
    child, first_child, last_child = child_periods(level, first_hour)
    earlier = [(finer, first_child, child - 1, 1)] if child > first_child else []
    later = [(finer, child + 1, last_child, -1)] if child < last_child else []
    added_up = [*earlier, *head(finer, first_hour, cost)]
    whole_minus = [(level, period, period, 1), *later, *negated(tail(finer, first_hour, cost))]
    return min(added_up, whole_minus, key=cost)


def child_periods(level, hour):
    """The finer level's period holding `hour`, and the first and last inside `level`'s period."""
    per_child = HOURS_IN[FINER[level]]
    first = hour // HOURS_IN[level] * HOURS_IN[level] // per_child
    return hour // per_child, first, first + HOURS_IN[level] // per_child - 1


def negated(pieces):
    return [(level, first, last, -sign) for level, first, last, sign in pieces]


def whole_history_histograms(database, tables, cache):
    """{model_version: Histogram} of every labelled row: from the whole history's cells, or from
    the weeks' when those are cached."""
    plan = Plan(database, tables, cache)
    return plan.histograms(min([(ALL, 0, 0, 1)], [(WEEK, UNKNOWN_PERIOD, FOREVER, 1)], key=plan.cost))


def series_histograms(database, every_day, tables, cache):
    """{(model_version, period): Histogram} on the coarse bins, per day or hour, for the periods
    of `tables` (its hours or days, from the series' first) that hold labelled rows. Each
    version's periods come from the cache while unchanged; the others in one query."""
    level, finer = (DAY_COARSE, DAY) if every_day else (HOUR_COARSE, HOUR)
    this_generation = generation(database)
    found = {}
    for version, by_hour in tables.items():
        periods, _, changes = by_hour.labelled_periods(finer)
        wanted = {
            (this_generation, level, period, version): count
            for period, count in zip(periods.tolist(), changes.tolist(), strict=True)
        }

        def read_missing(keys, version=version):
            periods = [key[2] for key in keys]
            read = coarse_cells(database, level, version, min(periods), max(periods))
            return {key: read.get(key[2], np.empty((0, 6))) for key in keys}

        for key, cells in cache.fetch(wanted, read_missing).items():
            found[version, key[2]] = Histogram(COARSE_BINS).add_rows(cells)
    return found


def coarse_cells(database, level, version, first, last):
    """{period: cells} of one version's periods first..last at a coarse level."""
    param = database.param
    query = f"""SELECT CAST(period AS BIGINT), {CELL_COLUMNS} FROM stats_bin
                WHERE level = {param} AND model_version = {param} AND period BETWEEN {param} AND {param}
                ORDER BY 1"""
    rows = read_cells(database, query, (level, version, first, last), [PERIOD_FIELD, *CELL_FIELDS])
    if not len(rows):
        return {}
    starts = np.flatnonzero(np.diff(rows[:, 0], prepend=np.nan))  # where each period's rows begin
    return {
        int(rows[start, 0]): part[:, 1:]
        for start, part in zip(starts, np.split(rows, starts[1:]), strict=True)
    }
