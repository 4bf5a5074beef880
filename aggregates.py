"""Running totals of the predictions table, kept by the database itself, so that /stats reads a
few thousand small rows however many predictions there are.

Contract:
- Two tables, changed by triggers on `prediction` inside the same transaction as every INSERT,
  UPDATE and DELETE (and TRUNCATE on PostgreSQL). They agree with the rows whoever writes them
  (this service, a second /update correcting a label, an operator in psql), at any concurrency:
  - `stats_hour` (model_version, hour): predictions, labelled, positives, and over the labelled
    rows the sums of proba, squared error (Brier) and log loss; `sum_proba_all` over every row;
    `labelled_changes`, the labelled rows that have arrived in or left the hour's bins.
  - `stats_bin` (level, period, model_version, bin): labelled positives and negatives whose proba
    falls in the bin, their summed proba, and the smallest and largest proba the bin has held.
    Levels: ALL (period 0), WEEK, DAY and HOUR with FINE_BINS bins of 1/10,000 (floor(proba *
    10,000)), DAY_COARSE and HOUR_COARSE with COARSE_BINS bins of 1/100, for the time series.
- A period counts whole hours, days or weeks (of 168 hours) since 1970-01-01 UTC to created_at.
  Rows without created_at (the tutorial's table recorded none) are period -1 at every level: in
  the whole history, never in a window.
- `install(database, table)` (re)creates both tables, `stats_generation`, an index on the
  labelled rows' proba and the triggers, and fills the totals from the rows already there;
  migrations.py calls it inside the upgrade's transaction (schema version 3), or when
  `installed()` finds a part missing. `add_change_counts()` is version 4: what version 3 lacked.
- Reading, inside `snapshot(database)`: `hour_tables()` and `day_tables()` ({model_version:
  HourTable}); `whole_history_histograms()`, `histograms_since(first_hour)` (a window as the
  pieces that cost least) and `series_histograms()`, each {model_version: Histogram};
  `add_exact_probas()` reads the rows of the bins that leave ROC AUC too unsure.
- `PERIODS` keeps the cells of the periods read, per process, and hands them back only while
  the period's count of labelled changes (the sum of `labelled_changes` over its hours, which
  every trigger adds to in the transaction that changes its cells, and which never goes down)
  is the one read with them, in the same database generation (`stats_generation`: random at
  install(), moved on by a TRUNCATE). So a cached period is always the period as stored.
- `Histogram.roc_auc()` is the Mann-Whitney statistic over the bins, ties counted as half, with
  `max_error`, the most it can differ from the statistic over the rows: pairs in different bins
  are ordered exactly; only a positive and a negative sharing a bin whose smallest and largest
  proba differ (and whose exact probas weren't read) are unknown, and each such pair counts 1/2
  where the truth is 0, 1/2 or 1. So |binned - exact| <= sum(pos_b * neg_b) / (2 P N) over those
  bins: about 3e-5 with probas spread evenly over 10,000 bins.

What /stats makes of them is in monitoring.py.
"""

import io
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import peewee
from peewee import SqliteDatabase

FINE_BINS = 10_000
COARSE_BINS = 100
ALL, WEEK, DAY, HOUR, DAY_COARSE, HOUR_COARSE = range(6)
LEVELS = range(6)
HOURS_IN = {WEEK: 168, DAY: 24, HOUR: 1}  # a period's length at each level
FINER = {WEEK: DAY, DAY: HOUR}
UNKNOWN_PERIOD = -1  # the hour and day of a row without created_at
EPOCH = datetime(1970, 1, 1)  # naive UTC, as the table's timestamps are
CLIP = 2.220446049250313e-16  # log loss clips probas to [CLIP, 1 - CLIP], as scikit-learn does (float64 eps)

TABLES = """
CREATE TABLE stats_hour (
    model_version VARCHAR(16) NOT NULL,
    hour BIGINT NOT NULL,
    predictions BIGINT NOT NULL,
    labelled BIGINT NOT NULL,
    positives BIGINT NOT NULL,
    sum_proba_all DOUBLE PRECISION NOT NULL,
    sum_proba DOUBLE PRECISION NOT NULL,
    sum_squared_error DOUBLE PRECISION NOT NULL,
    sum_log_loss DOUBLE PRECISION NOT NULL,
    labelled_changes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (model_version, hour)
);
CREATE TABLE stats_bin (
    level INTEGER NOT NULL,
    period BIGINT NOT NULL,
    model_version VARCHAR(16) NOT NULL,
    bin INTEGER NOT NULL,
    positives INTEGER NOT NULL,
    negatives INTEGER NOT NULL,
    sum_proba DOUBLE PRECISION NOT NULL,
    min_proba DOUBLE PRECISION NOT NULL,
    max_proba DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (level, period, model_version, bin)
);
CREATE TABLE stats_generation (generation BIGINT PRIMARY KEY)
"""


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


# The totals' changes for the rows of `source`: a subquery with the columns model_version,
# created_at, proba, true_class and sign (+1 for a row that arrives, -1 for one that leaves).
def hour_upsert(dialect, source):
    labelled = "(CASE WHEN r.true_class IS NULL THEN 0 ELSE 1 END)"
    outcome = "(CASE WHEN r.true_class = 1 THEN 1 ELSE 0 END)"
    clipped = f"{dialect.least}({dialect.greatest}(r.proba, {CLIP}), 1 - {CLIP})"
    log_loss = f"(CASE WHEN r.true_class = 1 THEN -LN({clipped}) ELSE -LN(1 - {clipped}) END)"
    sums = {
        "predictions": "SUM(r.sign)",
        "labelled": f"SUM(r.sign * {labelled})",
        "positives": f"SUM(r.sign * {outcome} * {labelled})",
        "sum_proba_all": "SUM(r.sign * r.proba)",
        "sum_proba": f"SUM(r.sign * r.proba * {labelled})",
        "sum_squared_error": f"SUM(r.sign * {labelled} * (r.proba - {outcome}) * (r.proba - {outcome}))",
        "sum_log_loss": f"SUM(r.sign * {labelled} * {log_loss})",
        # Unsigned: it only grows, by one for each labelled row that arrives in or leaves the
        # hour's bins, so an unchanged sum over a period's hours means its bins are unchanged.
        "labelled_changes": f"SUM({labelled})",
    }
    return f"""
INSERT INTO stats_hour (model_version, hour, {", ".join(sums)})
SELECT r.model_version, {period(dialect, HOUR)}, {", ".join(sums.values())}
FROM {source} WHERE true
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (model_version, hour) DO UPDATE SET
{", ".join(f"{name} = stats_hour.{name} + excluded.{name}" for name in sums)}"""


def bin_upsert(dialect, source):
    """Each labelled row counts in one bin of every level. Rows are written in key order, so two
    transactions that share cells take their locks in the same order (no deadlock)."""
    periods = " ".join(f"WHEN {level} THEN {period(dialect, level)}" for level in LEVELS)
    bin = f"CASE WHEN l.level < {DAY_COARSE} THEN {dialect.fine_bin} ELSE {dialect.fine_bin} / {FINE_BINS // COARSE_BINS} END"  # noqa: E501
    levels = " UNION ALL ".join(f"SELECT {level} AS level" for level in LEVELS)
    return f"""
INSERT INTO stats_bin
    (level, period, model_version, bin, positives, negatives, sum_proba, min_proba, max_proba)
SELECT l.level, CASE l.level {periods} END, r.model_version, {bin},
       SUM(CASE WHEN r.true_class = 1 THEN r.sign ELSE 0 END),
       SUM(CASE WHEN r.true_class = 1 THEN 0 ELSE r.sign END), SUM(r.sign * r.proba),
       MIN(CASE WHEN r.sign > 0 THEN r.proba ELSE 2 END), MAX(CASE WHEN r.sign > 0 THEN r.proba ELSE -1 END)
FROM {source} CROSS JOIN ({levels}) AS l WHERE r.true_class IS NOT NULL
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (level, period, model_version, bin) DO UPDATE SET
positives = stats_bin.positives + excluded.positives, negatives = stats_bin.negatives + excluded.negatives,
sum_proba = stats_bin.sum_proba + excluded.sum_proba,
min_proba = {dialect.least}(stats_bin.min_proba, excluded.min_proba),
max_proba = {dialect.greatest}(stats_bin.max_proba, excluded.max_proba)"""


def changes(dialect, source):
    return [hour_upsert(dialect, source), bin_upsert(dialect, source)]


def row_source(*rows):
    """A subquery of trigger rows: ("NEW", 1), ("OLD", -1)."""
    selects = " UNION ALL ".join(
        f"SELECT {name}.model_version AS model_version, {name}.created_at AS created_at, "
        f"{name}.proba AS proba, {name}.true_class AS true_class, {sign} AS sign"
        for name, sign in rows
    )
    return f"({selects}) AS r"


def table_source(table, sign):
    return f"(SELECT model_version, created_at, proba, true_class, {sign} AS sign FROM {table}) AS r"


# What a change to a row's label, proba, version or time must move; updated_at alone moves nothing.
COUNTED_COLUMNS = ("true_class", "proba", "model_version", "created_at")


SQLITE_TRIGGERS = {"stats_on_insert", "stats_on_labelled_insert", "stats_on_update", "stats_on_delete"}
POSTGRESQL_TRIGGERS = {"stats_on_insert", "stats_on_update", "stats_on_delete", "stats_on_truncate"}
TRIGGER_NAMES = sorted(SQLITE_TRIGGERS | POSTGRESQL_TRIGGERS)


def sqlite_triggers(table):
    """Row by row (SQLite has no statement triggers). A new row moves its hour's counts, and its
    bins only when it arrives labelled, so /predict's inserts skip the bins' statement."""
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in COUNTED_COLUMNS)

    def trigger(name, event, rows, statements, when=""):
        body = ";\n".join(statements(SQLITE, row_source(*rows)))
        return f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {when} BEGIN {body}; END"

    def hours_only(dialect, source):
        return [hour_upsert(dialect, source)]

    def bins_only(dialect, source):
        return [bin_upsert(dialect, source)]

    return [
        trigger("stats_on_insert", "INSERT", [("NEW", 1)], hours_only),
        trigger(
            "stats_on_labelled_insert", "INSERT", [("NEW", 1)], bins_only, "WHEN NEW.true_class IS NOT NULL"
        ),
        trigger("stats_on_update", "UPDATE", [("OLD", -1), ("NEW", 1)], changes, f"WHEN {changed}"),
        trigger("stats_on_delete", "DELETE", [("OLD", -1)], changes),
    ]


def postgresql_triggers(table):
    """Inserts and deletes are counted once per statement (a /predict batch is one upsert of its
    hour), updates once per row, and only when a counted column changed."""
    changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in COUNTED_COLUMNS)

    def function(name, statements, returns="NULL"):
        body = ";\n".join(statements)
        return f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN {returns}; END $$"  # noqa: E501

    return [
        function("stats_on_insert", changes(POSTGRESQL, table_source("arrived", 1))),
        function("stats_on_update", changes(POSTGRESQL, row_source(("OLD", -1), ("NEW", 1)))),
        function("stats_on_delete", changes(POSTGRESQL, table_source("departed", -1))),
        # The change counts start again from zero: a new generation keeps cached cells from passing.
        function(
            "stats_on_truncate",
            ["TRUNCATE stats_hour, stats_bin", "UPDATE stats_generation SET generation = generation + 1"],
        ),
        f"CREATE TRIGGER stats_on_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS arrived "
        "FOR EACH STATEMENT EXECUTE FUNCTION stats_on_insert()",
        f"CREATE TRIGGER stats_on_update AFTER UPDATE ON {table} FOR EACH ROW WHEN ({changed}) "
        "EXECUTE FUNCTION stats_on_update()",
        f"CREATE TRIGGER stats_on_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS departed "
        "FOR EACH STATEMENT EXECUTE FUNCTION stats_on_delete()",
        f"CREATE TRIGGER stats_on_truncate AFTER TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION stats_on_truncate()",
    ]


def install(database, table):
    """Create the totals' tables and triggers and fill them from the rows already in `table`.
    They hold nothing but what the rows say, so any left from before are dropped and rebuilt."""
    dialect = dialect_of(database)
    drop_triggers(database, table)
    for name in ("stats_hour", "stats_bin", "stats_generation"):
        database.execute_sql(f"DROP TABLE IF EXISTS {name}")
    for statement in TABLES.split(";"):
        # SQLite: stored in key order, so a period's bins are read in one sweep, not row by row.
        database.execute_sql(statement + (" WITHOUT ROWID" if dialect is SQLITE else ""))
    # For the rows of a bin, when ROC AUC needs their exact probas (add_exact_probas).
    database.execute_sql(
        f"CREATE INDEX IF NOT EXISTS {table}_labelled_proba ON {table} (proba) WHERE true_class IS NOT NULL"
    )
    for statement in changes(dialect, table_source(table, 1)):
        database.execute_sql(statement)
    start_generation(database)
    create_triggers(database, table)
    if dialect is POSTGRESQL:  # planner statistics for the filled tables, before autovacuum's own
        database.execute_sql("ANALYZE stats_hour, stats_bin")


def add_change_counts(database, table):
    """Schema version 3 -> 4: the counts of changes that tell /stats which cached periods still
    hold (labelled_changes, stats_generation). The totals stay as they are; counting starts at 0.
    A database upgraded from before version 3 has them already: install() made the tables."""
    if "labelled_changes" not in {column.name for column in database.get_columns("stats_hour")}:
        database.execute_sql("ALTER TABLE stats_hour ADD COLUMN labelled_changes BIGINT NOT NULL DEFAULT 0")
    if not database.table_exists("stats_generation"):
        without_rowid = " WITHOUT ROWID" if dialect_of(database) is SQLITE else ""
        database.execute_sql(f"CREATE TABLE stats_generation (generation BIGINT PRIMARY KEY){without_rowid}")
        start_generation(database)
    drop_triggers(database, table)
    create_triggers(database, table)


def start_generation(database):
    """A random generation, so the cells cached from a database are never taken for another's, or
    for this one's before its totals were rebuilt."""
    database.execute_sql(f"INSERT INTO stats_generation VALUES ({secrets.randbits(62)})")


def drop_triggers(database, table):
    for name in TRIGGER_NAMES:
        on_table = "" if dialect_of(database) is SQLITE else f" ON {table}"
        database.execute_sql(f"DROP TRIGGER IF EXISTS {name}{on_table}")


def create_triggers(database, table):
    triggers = sqlite_triggers(table) if dialect_of(database) is SQLITE else postgresql_triggers(table)
    for statement in triggers:
        database.execute_sql(statement)


def installed(database, table):
    """Whether the totals' tables, their change counts and every trigger that keeps them are there."""
    if dialect_of(database) is SQLITE:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?"
    else:
        query = "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal"
    found = {name for (name,) in database.execute_sql(query, (table,)).fetchall()}
    wanted = SQLITE_TRIGGERS if dialect_of(database) is SQLITE else POSTGRESQL_TRIGGERS
    tables = ("stats_hour", "stats_bin", "stats_generation")
    return (
        wanted <= found
        and all(database.table_exists(name) for name in tables)
        and "labelled_changes" in {column.name for column in database.get_columns("stats_hour")}
    )


# Reading: a histogram of labelled probas, per bin, and what it says about ranking.
class Histogram:
    """Per fine bin: positives, negatives, sum of proba, smallest and largest proba (numpy arrays);
    and for some bins the rows' exact probas: {bin: {proba: [positives, negatives]}}."""

    def __init__(self, bins=FINE_BINS):
        self.positives = np.zeros(bins, dtype=np.int64)
        self.negatives = np.zeros(bins, dtype=np.int64)
        self.sum_proba = np.zeros(bins)
        self.low = np.full(bins, 2.0)  # no proba yet: low > high
        self.high = np.full(bins, -1.0)
        self.exact = {}

    def add_rows(self, rows, sign=1):
        """rows: (bin, positives, negatives, sum_proba, min_proba, max_proba), one per bin. With
        sign -1 they are taken away; the extremes stay (still bounds, if wider than needed)."""
        if not len(rows):
            return self
        bins, pos, neg, sum_proba, low, high = np.asarray(rows, dtype=float).T
        bins = bins.astype(np.int64)
        self.positives[bins] += sign * pos.astype(np.int64)
        self.negatives[bins] += sign * neg.astype(np.int64)
        self.sum_proba[bins] += sign * sum_proba
        if sign > 0:
            self.low[bins] = np.minimum(self.low[bins], low)
            self.high[bins] = np.maximum(self.high[bins], high)
        return self

    def merge(self, other):
        self.positives += other.positives
        self.negatives += other.negatives
        self.sum_proba += other.sum_proba
        np.minimum(self.low, other.low, out=self.low)
        np.maximum(self.high, other.high, out=self.high)
        for bin, probas in other.exact.items():
            mine = self.exact.setdefault(bin, {})
            for proba, (pos, neg) in probas.items():
                counts = mine.setdefault(proba, [0, 0])
                counts[0] += pos
                counts[1] += neg
        return self

    def unknown_pairs(self):
        """Per bin, the positive-negative pairs whose order the counts alone don't tell."""
        unknown = np.where(self.low < self.high, self.positives * self.negatives, 0)
        unknown[list(self.exact)] = 0
        return unknown

    def roc_auc(self):
        """(ROC AUC, max_error), or (None, None) without both classes; see the module docstring."""
        positives, negatives = int(self.positives.sum()), int(self.negatives.sum())
        if not positives or not negatives:
            return None, None
        below = np.cumsum(self.negatives) - self.negatives  # negatives in the bins below each bin
        ranked = self.positives * (below + self.negatives / 2)
        for bin, probas in self.exact.items():
            ranked[bin] = ranked_within(probas, int(below[bin]))
        pairs = positives * negatives
        return float(ranked.sum()) / pairs, float(self.unknown_pairs().sum()) / 2 / pairs

    def worst_bins(self, target):
        """The bins whose exact probas would bring max_error down to `target`, worst first."""
        allowed = 2 * target * int(self.positives.sum()) * int(self.negatives.sum())
        unknown = self.unknown_pairs()
        order = np.argsort(-unknown, kind="stable")
        left_after = unknown.sum() - np.cumsum(unknown[order])  # unknown pairs left once these are read
        needed = int(np.searchsorted(-left_after, -allowed)) + 1 if unknown.sum() > allowed else 0
        return [int(bin) for bin in order[:needed]]

    def rolled_up(self, groups):
        """(positives, negatives, sum_proba), each summed into `groups` groups of bins."""
        return tuple(
            column.reshape(groups, -1).sum(axis=1)
            for column in (self.positives, self.negatives, self.sum_proba)
        )


def ranked_within(probas, negatives_below):
    """Pairs ordered right (ties as half) for the positives among rows of exactly known probas."""
    ranked = 0
    for proba in sorted(probas):
        pos, neg = probas[proba]
        ranked += pos * (negatives_below + neg / 2)
        negatives_below += neg
    return ranked


def add_exact_probas(
    database, table, histograms, first_hour, target, most_rows, exact_up_to_rows, rows_outside_window=0
):
    """Read the rows of the bins that leave ROC AUC's max_error above `target` (in any of
    `histograms`, {model_version: Histogram}, or in all of them together), worst bins first and at
    most `most_rows` rows in all, through the index on the labelled rows' proba. When reading
    every bin that leaves any doubt passes over `exact_up_to_rows` rows or fewer, read them all:
    exact. `rows_outside_window`, the labelled rows before first_hour, are in the index too, so
    reading a bin passes over its share of them (taken as spread evenly over the bins)."""
    overall = Histogram()
    for histogram in histograms.values():
        overall.merge(histogram)
    in_index = overall.positives + overall.negatives + rows_outside_window / FINE_BINS  # per bin
    if in_index[overall.unknown_pairs() > 0].sum() <= exact_up_to_rows:
        target = 0.0
    wanted = dict.fromkeys(overall.worst_bins(target))
    for histogram in histograms.values():
        wanted.update(dict.fromkeys(histogram.worst_bins(target)))
    unknown, chosen, rows_read = overall.unknown_pairs(), set(), 0
    for bin in sorted(wanted, key=lambda bin: -unknown[bin]):
        rows_read += in_index[bin]
        if rows_read > most_rows:
            break
        chosen.add(bin)
    runs = spans(sorted(chosen), in_index)
    for version, bin, proba, pos, neg in rows_of_bins(database, table, runs, first_hour):
        if int(bin) in chosen:  # a run's edges may take in rows of its neighbours
            histograms[version].exact.setdefault(int(bin), {})[proba] = [int(pos), int(neg)]


SPAN_GAP_ROWS = 50  # rows between two wanted bins that cost less to read than one more range (roughly)


def spans(bins, rows_in):
    """The sorted bins as (first, last) runs, two bins in one run when the rows between them (as
    the index holds them, rows_in per bin) are fewer than SPAN_GAP_ROWS."""
    runs = []
    for bin in bins:
        if runs and rows_in[runs[-1][1] + 1 : bin].sum() < SPAN_GAP_ROWS:
            runs[-1][1] = bin
        else:
            runs.append([bin, bin])
    return [tuple(run) for run in runs]


RUNS_PER_QUERY = 400  # each run is two parameters


def rows_of_bins(database, table, runs, first_hour):
    """(model_version, bin, proba, positives, negatives) of the labelled rows in the runs of bins
    (first, last): one query per RUNS_PER_QUERY runs, each run a range of the index on proba, so
    scattered bins cost one round trip, not one each. A row on the edge of two runs comes once per
    run, with the same counts."""
    found = []
    for start in range(0, len(runs), RUNS_PER_QUERY):
        found += rows_of_runs(database, table, runs[start : start + RUNS_PER_QUERY], first_hour)
    return found


def rows_of_runs(database, table, runs, first_hour):
    dialect, param = dialect_of(database), database.param
    window = "" if first_hour is None else f"AND r.created_at >= {param}"
    real = f"CAST({param} AS DOUBLE PRECISION)"  # as proba is, so its index serves the join
    ranges = ", ".join([f"(CAST({param} AS INTEGER), {real}, {real})"] * len(runs))
    in_run = "r.proba >= runs.low AND r.proba < runs.high AND r.true_class IS NOT NULL"
    if dialect is SQLITE:  # which searches the index on proba once per run
        rows = f"runs JOIN {table} AS r ON {in_run}"
    else:  # PostgreSQL may instead test every row of the window against every run, or AND the
        # window's index into each run's search: OFFSET 0 keeps the subquery to the index on proba
        rows = f"runs CROSS JOIN LATERAL (SELECT * FROM {table} AS r WHERE {in_run} OFFSET 0) AS r"
    query = f"""WITH runs (run, low, high) AS (VALUES {ranges})
                SELECT r.model_version, {dialect.fine_bin}, r.proba,
                       SUM(CASE WHEN r.true_class = 1 THEN 1 ELSE 0 END),
                       SUM(CASE WHEN r.true_class = 1 THEN 0 ELSE 1 END)
                FROM {rows} WHERE true {window}
                GROUP BY runs.run, r.model_version, r.proba"""
    params = [
        value
        for run, (first, last) in enumerate(runs)
        # a hundredth of a bin wider each side than the run, for rounding at its edges; the bin decides
        for value in (run, (first - 0.01) / FINE_BINS, (last + 1.01) / FINE_BINS)
    ]
    params += [] if first_hour is None else [hour_start(first_hour)]
    return database.execute_sql(query, params).fetchall() if runs else []


def snapshot(database):
    """A read-only transaction whose queries all see the same committed state, without blocking
    writers: PostgreSQL's REPEATABLE READ; on SQLite a deferred transaction (in WAL mode)."""
    if dialect_of(database) is SQLITE:
        return database.atomic(lock_type="DEFERRED")
    return database.atomic(isolation_level="REPEATABLE READ READ ONLY")


HOUR_COLUMNS = (
    "predictions", "labelled", "positives", "sum_proba_all", "sum_proba", "sum_squared_error", "sum_log_loss",
    "labelled_changes",
)  # fmt: skip


class HourTable:
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
    """{model_version: HourTable} of stats_hour, from `first_hour` on (None: every hour)."""
    where, params = ("", ()) if first_hour is None else (f"WHERE hour >= {database.param}", (first_hour,))
    query = f"SELECT model_version, hour, {', '.join(HOUR_COLUMNS)} FROM stats_hour {where} ORDER BY 1, 2"
    return tables_of(database.execute_sql(query, params).fetchall())


def day_tables(database, hourly_day=None, first_hour=None):
    """{model_version: HourTable} of stats_hour with the hours of each day added up, as one row
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


def tables_of(rows):
    """{model_version: HourTable} of rows (model_version, hour, *HOUR_COLUMNS) in that order."""
    if not rows:
        return {}
    versions = np.array([row[0] for row in rows])
    numbers = np.array([row[1:] for row in rows], dtype=float)
    tables = {}
    for version in dict.fromkeys(versions.tolist()):
        mine = numbers[versions == version]
        tables[version] = HourTable(mine[:, 0].astype(np.int64), mine[:, 1:])
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


# A period of 10,000 cells is 480 kB: this holds a busy month's weeks, days and hours per version.
PERIODS = PeriodCache(budget_bytes=32 * 2**20)
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
    little when PERIODS holds its cells, else its cells and a query. Use inside snapshot()."""

    def __init__(self, database, tables):
        self.database = database
        self.generation = generation(database)
        self.versions = sorted(tables)
        self.periods = {}
        for version, table in tables.items():
            for level in (ALL, WEEK, DAY, HOUR):
                periods, labelled, changes = table.labelled_periods(level)
                cached = [
                    PERIODS.get(self.key(level, period, version), count) is not None
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
        return PERIODS.fetch({key: changes}, lambda keys: {key: self.read_cells(level, period, version)})[key]

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
    an array of floats. PostgreSQL sends them in its binary COPY format: parsing 10,000 rows of
    text costs psycopg2 about 30 ms, numpy reads the binary in well under one."""
    if dialect_of(database) is SQLITE:
        return np.array(database.execute_sql(query, params).fetchall(), dtype=float).reshape(-1, len(fields))
    cursor = database.cursor()
    copied = io.BytesIO()
    with peewee.__exception_wrapper__:  # psycopg2's errors as peewee's, as every other query's
        cursor.copy_expert(
            f"COPY ({cursor.mogrify(query, params).decode()}) TO STDOUT (FORMAT binary)", copied
        )
    return from_binary_copy(copied.getvalue(), fields)


COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def from_binary_copy(data, fields):
    """Rows of NOT NULL fixed-width `fields` [(name, numpy big-endian kind)], from PostgreSQL's
    binary COPY output, as an array of floats with a column per field."""
    layout = np.dtype(
        [("fields", ">i2")]
        + [part for name, kind in fields for part in [(f"{name}_length", ">i4"), (name, kind)]]
    )
    header_length = 19 + int.from_bytes(data[15:19], "big")  # signature, flags, extension length
    rows = np.frombuffer(data[header_length:-2], dtype=layout)  # the last 2 bytes end the data
    wrong_length = any(
        set(rows[f"{name}_length"].tolist()) - {np.dtype(kind).itemsize} for name, kind in fields
    )
    if data[:11] != COPY_SIGNATURE or set(rows["fields"].tolist()) - {len(fields)} or wrong_length:
        raise RuntimeError(f"PostgreSQL's binary COPY output is not the {len(fields)} fields expected")
    return np.column_stack([rows[name].astype(float) for name, _ in fields]).reshape(-1, len(fields))


def histograms_since(database, first_hour, tables):
    """{model_version: Histogram} of the labelled rows whose hour is `first_hour` or later, from
    the pieces that cost least to add up (`tables`, from day_tables(), size them): weeks, days
    and hours of the window, each edge either added up from finer periods or taken as a whole
    minus its other side; or everything minus the periods before the window."""
    plan = Plan(database, tables)
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


def whole_history_histograms(database, tables):
    """{model_version: Histogram} of every labelled row: from the whole history's cells, or from
    the weeks' when those are cached."""
    plan = Plan(database, tables)
    return plan.histograms(min([(ALL, 0, 0, 1)], [(WEEK, UNKNOWN_PERIOD, FOREVER, 1)], key=plan.cost))


def series_histograms(database, every_day, tables):
    """{(model_version, period): Histogram} on the coarse bins, per day or hour, for the periods
    of `tables` (its hours or days, from the series' first) that hold labelled rows. Each
    version's periods come from PERIODS while unchanged; the others in one query."""
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

        for key, cells in PERIODS.fetch(wanted, read_missing).items():
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
