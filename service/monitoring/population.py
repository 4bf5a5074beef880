"""Who is being scored: running counts of every prediction's probability and of each feature's
training bin, kept by the same triggers as the totals of tables.py. /drift and the expected
quality in /stats read them, labelled or not.

Contract:
- The tables:
  - `stats_proba` (level, period, model_version, bin): every prediction in PROBA_BINS bins of its
    proba: how many, and the sum of their probas and of their squares.
  - `stats_feature` (level, period, model_version, feature, code): how many predictions had the
    bin character `code` (profile.py) at position `feature` (1: the first column) of their
    `feature_bins`. A row with no feature_bins (its model had no training profile, or it was
    stored before schema version 6) counts in stats_proba only.
  - `feature_position` (position): 1, 2, ... for the widest profile stored: the join that splits
    feature_bins into its characters.
  - `model_profile` (model_version, profile, stored_at): each model version's training profile,
    the first stored for it, so that every row of a version is binned the same way.
  Levels ALL (period 0), DAY and HOUR, periods as tables.py counts them. Archived predictions
  stay counted; a deleted one leaves.
- `statements(dialect, source)`: the upserts that count a trigger's rows (`sign` +1 or -1).
- `install(database, table)`: feature_bins on the predictions and the archived ones where it
  lacks, the tables (the counts dropped and refilled from the rows: one pass), for
  tables.install() and schema version 6.
- `store_profile(database, model_version, document)`: the version's profile as stored (the one
  given, when none was), with the positions its features need. `profiles(database)`:
  {model_version: document}.
- `window_level(first_hour, every_day)`: the level and first period a window reads;
  `feature_counts()` and `proba_counts()` read a window's counts, `proba_series()` them per
  period: ProbaBins, whose `expected_roc_auc()` is the ROC AUC to expect if the probas are
  calibrated.
Reading happens inside the caller's snapshot (windows.snapshot).
"""

import json

import numpy as np

from service.monitoring.periods import ALL, DAY, FINE_BINS, HOUR, SQLITE, dialect_of, period, table_source
from service.timestamps import utc_now

PROBA_BINS = 100
LEVELS = (ALL, DAY, HOUR)

TABLES = """
CREATE TABLE stats_proba (
    level INTEGER NOT NULL,
    period BIGINT NOT NULL,
    model_version VARCHAR(16) NOT NULL,
    bin INTEGER NOT NULL,
    predictions BIGINT NOT NULL,
    sum_proba DOUBLE PRECISION NOT NULL,
    sum_squared_proba DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (level, period, model_version, bin)
);
CREATE TABLE stats_feature (
    level INTEGER NOT NULL,
    period BIGINT NOT NULL,
    model_version VARCHAR(16) NOT NULL,
    feature INTEGER NOT NULL,
    code VARCHAR(1) NOT NULL,
    predictions BIGINT NOT NULL,
    PRIMARY KEY (level, period, model_version, feature, code)
)"""
KEPT_TABLES = """
CREATE TABLE IF NOT EXISTS feature_position (position INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS model_profile (
    model_version VARCHAR(16) PRIMARY KEY,
    profile TEXT NOT NULL,
    stored_at {timestamp} NOT NULL
)"""
COUNT_TABLES = ("stats_proba", "stats_feature")
COLUMN = "feature_bins"  # what the counts read of a row, beside its version, time and proba


def periods(dialect):
    cases = " ".join(f"WHEN {level} THEN {period(dialect, level)}" for level in LEVELS)
    levels = " UNION ALL ".join(f"SELECT {level} AS level" for level in LEVELS)
    return f"CASE l.level {cases} END", f"({levels}) AS l"


# A proba's square, 0 where it would underflow: PostgreSQL refuses a double that rounds to 0
# ("value out of range: underflow") and would fail the insert of a proba under about 1e-162.
SQUARE = "(CASE WHEN ABS(r.proba) < 1e-150 THEN 0 ELSE r.proba * r.proba END)"


def proba_upsert(dialect, source):
    when, levels = periods(dialect)
    return f"""
INSERT INTO stats_proba (level, period, model_version, bin, predictions, sum_proba, sum_squared_proba)
SELECT l.level, {when}, r.model_version, {dialect.fine_bin} / {FINE_BINS // PROBA_BINS},
       SUM(r.sign), SUM(r.sign * r.proba), SUM(r.sign * {SQUARE})
FROM {source} CROSS JOIN {levels} WHERE true
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (level, period, model_version, bin) DO UPDATE SET
predictions = stats_proba.predictions + excluded.predictions,
sum_proba = stats_proba.sum_proba + excluded.sum_proba,
sum_squared_proba = stats_proba.sum_squared_proba + excluded.sum_squared_proba"""


def feature_upsert(dialect, source):
    when, levels = periods(dialect)
    return f"""
INSERT INTO stats_feature (level, period, model_version, feature, code, predictions)
SELECT l.level, {when}, r.model_version, f.position, SUBSTR(r.feature_bins, f.position, 1), SUM(r.sign)
FROM {source} CROSS JOIN {levels} JOIN feature_position AS f ON f.position <= LENGTH(r.feature_bins)
WHERE r.feature_bins IS NOT NULL
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (level, period, model_version, feature, code) DO UPDATE SET
predictions = stats_feature.predictions + excluded.predictions"""


def statements(dialect, source):
    """Count the rows of `source` (model_version, created_at, proba, feature_bins, sign)."""
    return [proba_upsert(dialect, source), feature_upsert(dialect, source)]


def new_row_statements():
    """statements() for SQLite's insert trigger, which runs for one row at a time (/predict's
    path): the same counts without the grouping a set of rows needs, the row's hour computed once.
    Each row adds 3 cells of stats_proba and 3 per feature of stats_feature."""
    hour = f"COALESCE({SQLITE.divide.format(seconds=SQLITE.seconds, length=3600)}, -1)".replace("r.", "NEW.")
    source = f"(SELECT NEW.model_version AS model_version, {hour} AS hour, NEW.proba AS proba) AS r"
    when = f"CASE l.level WHEN {ALL} THEN 0 WHEN {DAY} THEN (CASE WHEN r.hour < 0 THEN -1 ELSE r.hour / 24 END) ELSE r.hour END"  # noqa: E501
    _, levels = periods(SQLITE)
    return [
        f"""INSERT INTO stats_proba
    (level, period, model_version, bin, predictions, sum_proba, sum_squared_proba)
SELECT l.level, {when}, r.model_version, {SQLITE.fine_bin} / {FINE_BINS // PROBA_BINS},
       1, r.proba, {SQUARE}
FROM {source} CROSS JOIN {levels} WHERE true
ON CONFLICT (level, period, model_version, bin) DO UPDATE SET
predictions = stats_proba.predictions + 1, sum_proba = stats_proba.sum_proba + excluded.sum_proba,
sum_squared_proba = stats_proba.sum_squared_proba + excluded.sum_squared_proba""",
        f"""INSERT INTO stats_feature (level, period, model_version, feature, code, predictions)
SELECT l.level, {when}, r.model_version, f.position, SUBSTR(NEW.feature_bins, f.position, 1), 1
FROM {source} CROSS JOIN {levels} JOIN feature_position AS f ON f.position <= LENGTH(NEW.feature_bins)
WHERE NEW.feature_bins IS NOT NULL
ON CONFLICT (level, period, model_version, feature, code) DO UPDATE SET
predictions = stats_feature.predictions + 1""",
    ]


# What moves a row's counts: its proba, version, time or bins; a new label moves nothing here.
COUNTED_COLUMNS = ("proba", "model_version", "created_at", "feature_bins")


def install(database, table):
    """feature_bins where it lacks, and the counts rebuilt from the rows (and the archived ones)."""
    dialect = dialect_of(database)
    for name in (table, "archived_prediction"):
        if "feature_bins" not in {column.name for column in database.get_columns(name)}:
            database.execute_sql(f"ALTER TABLE {name} ADD COLUMN feature_bins TEXT")
    timestamp = "DATETIME" if dialect is SQLITE else "TIMESTAMP"
    for statement in KEPT_TABLES.format(timestamp=timestamp).split(";"):
        database.execute_sql(statement)
    for name in COUNT_TABLES:
        database.execute_sql(f"DROP TABLE IF EXISTS {name}")
    for statement in TABLES.split(";"):
        database.execute_sql(statement + (" WITHOUT ROWID" if dialect is SQLITE else ""))
    for source in (table_source(COLUMN, table, 1), table_source(COLUMN, "archived_prediction", 1)):
        for statement in statements(dialect, source):
            database.execute_sql(statement)
    if dialect is not SQLITE:
        database.execute_sql("ANALYZE stats_proba, stats_feature")


def installed(database, table):
    tables = (*COUNT_TABLES, "feature_position", "model_profile")
    return all(database.table_exists(name) for name in tables) and "feature_bins" in {
        column.name for column in database.get_columns(table)
    }


def store_profile(database, model_version, document):
    """The profile stored for the version: the one given, unless another was stored first. Writes
    only when none is stored yet (a credential that may only read and delete still starts)."""
    stored = profiles(database).get(model_version)
    if stored is not None:
        return stored
    with database.atomic():
        database.execute_sql(
            "INSERT INTO model_profile (model_version, profile, stored_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (model_version) DO NOTHING".replace("%s", database.param),
            (model_version, json.dumps(document, ensure_ascii=False), utc_now()),
        )
        (stored,) = database.execute_sql(
            f"SELECT profile FROM model_profile WHERE model_version = {database.param}", (model_version,)
        ).fetchone()
        stored = json.loads(stored)
        positions = [(position,) for position in range(1, len(stored["features"]) + 1)]
        query = f"INSERT INTO feature_position (position) VALUES ({database.param}) ON CONFLICT DO NOTHING"
        database.cursor().executemany(query, positions)
    return stored


def profiles(database):
    rows = database.execute_sql("SELECT model_version, profile FROM model_profile").fetchall()
    return {version: json.loads(text) for version, text in rows}


def window_level(first_hour, every_day):
    """(level, first period) of a window from `first_hour` (None: the whole history)."""
    if first_hour is None:
        return ALL, 0
    return (DAY, first_hour // 24) if every_day else (HOUR, first_hour)


def feature_counts(database, level, first):
    """{version: {feature: {code: rows}}} over the periods from `first` at `level`."""
    query = (
        "SELECT model_version, feature, code, SUM(predictions) FROM stats_feature "
        f"WHERE level = {level} AND period >= {int(first)} GROUP BY 1, 2, 3"
    )
    counts = {}
    for version, feature, code, rows in database.execute_sql(query).fetchall():
        if rows:
            counts.setdefault(version, {}).setdefault(feature, {})[code] = int(rows)
    return counts


def proba_counts(database, level, first):
    """{version: ProbaBins} over the periods from `first` at `level`."""
    query = (
        "SELECT model_version, bin, SUM(predictions), SUM(sum_proba), SUM(sum_squared_proba) "
        f"FROM stats_proba WHERE level = {level} AND period >= {int(first)} GROUP BY 1, 2"
    )
    return bins_by_key(database.execute_sql(query).fetchall(), key_columns=1)


def proba_series(database, level, first):
    """{(version, period): ProbaBins} for each period from `first` at `level`."""
    query = (
        "SELECT model_version, period, bin, predictions, sum_proba, sum_squared_proba FROM stats_proba "
        f"WHERE level = {level} AND period >= {int(first)}"
    )
    return bins_by_key(database.execute_sql(query).fetchall(), key_columns=2)


def bins_by_key(rows, key_columns):
    """{key: ProbaBins} from rows of (*key, bin, predictions, sum_proba, sum_squared_proba), added
    up with numpy: a month of days for two versions is 6,000 rows."""
    grouped = {}
    for row in rows:
        key = row[0] if key_columns == 1 else tuple(row[:key_columns])
        grouped.setdefault(key, []).append(row[key_columns:])
    found = {}
    for key, cells in grouped.items():
        cells = np.array(cells, dtype=float)  # PostgreSQL sums BIGINTs as NUMERIC (Decimal)
        found[key] = ProbaBins()
        np.add.at(found[key].values.T, cells[:, 0].astype(int), cells[:, 1:])
    return found


class ProbaBins:
    """Per bin of proba: the predictions, their summed proba and summed squared proba."""

    def __init__(self):
        self.values = np.zeros((3, PROBA_BINS))

    def add(self, bin, predictions, sum_proba, sum_squared_proba):
        self.values[:, bin] += (predictions, sum_proba, sum_squared_proba)
        return self

    def predictions(self):
        return round(self.values[0].sum())

    def merge(self, other):
        self.values += other.values
        return self

    def expected_roc_auc(self):
        """The ROC AUC to expect if the probas are calibrated (each prediction is positive with
        its proba): over every pair of predictions i != j, the chance that i is positive and j
        negative, counted when i's proba is in a higher bin and half when they share one,
        divided by the chance of such a pair at all. None when no pair can have both classes."""
        counts, sums, squares = self.values
        negatives = counts - sums  # the negatives to expect in each bin
        below = np.cumsum(negatives) - negatives
        within = sums * negatives - (sums - squares)  # sum over i != j in a bin of p_i (1 - p_j)
        total, total_sum, total_squares = counts.sum(), sums.sum(), squares.sum()
        pairs = total_sum * (total - total_sum) - (total_sum - total_squares)
        if pairs <= 1e-9:
            return None
        return float(((sums * below).sum() + within.sum() / 2) / pairs)
