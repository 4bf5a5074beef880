"""What /compare reads: running counts of the predictions a challenger scored beside the running
model, kept by the same triggers as the totals of tables.py, so that comparing the two costs the
same on a hundred labelled pairs or ten million.

Contract:
- The tables, per level (ALL, DAY and HOUR, periods as tables.py counts them), running model
  version and challenger version:
  - `compare_joint` (..., true_class, running_bin, challenger_bin): every prediction the
    challenger was asked to score. Labelled pairs sit in JOINT_BINS x JOINT_BINS cells of both
    probas, with their sums of each per-row loss the comparison needs (the running model's log
    loss and squared error, and the challenger's minus the running model's, and its square);
    unlabelled ones (true_class -1) and the ones the challenger failed on (challenger_bin -1) are
    only counted.
  - `compare_margin` (..., scorer, bin): the labelled pairs' positives and negatives in
    MARGIN_BINS bins of each model's proba (scorer 0 the running model, 1 the challenger).
  Archived predictions stay counted; a deleted one leaves.
- `statements(dialect, source)`: the upserts that count a trigger's rows (`r` with COLUMNS and
  `sign`); `install(database, table)` (re)creates the tables and fills them from the rows and
  the archived ones (one pass), for tables.install() and schema version 9; `installed()`.
- `counts(database, level, first)`: {(model_version, challenger_version): Counts} over the
  periods from `first` at `level` (population.window_level), for comparison.compare_counts().
Reading happens inside the caller's snapshot (windows.snapshot).
"""

from dataclasses import dataclass, field

import numpy as np

from service.monitoring.periods import ALL, FINE_BINS, POSTGRESQL, dialect_of, table_source
from service.monitoring.population import periods

COLUMNS = ("true_class", "challenger_proba", "challenger_version")  # what the counts read, beside proba
MARGIN_BINS = 1000  # each model's proba: ROC AUC within sum(pos_b * neg_b) / (2 P N) of the rows'
JOINT_BINS = 100  # both probas at once: how the two models' rankings go together
UNLABELLED = -1  # the true_class of a pair whose outcome hasn't come
FAILED = -1  # the challenger_bin of a prediction the challenger failed to score
CLIP = 1e-15  # log loss clips probas to [CLIP, 1 - CLIP], as comparison.py does
SUMS = (
    "sum_running_log_loss", "sum_log_loss_difference", "sum_log_loss_difference_squared",
    "sum_running_squared_error", "sum_squared_error_difference", "sum_squared_error_difference_squared",
)  # fmt: skip
TABLE_NAMES = ("compare_joint", "compare_margin")
KEY = "level INTEGER NOT NULL, period BIGINT NOT NULL, model_version VARCHAR(16) NOT NULL, challenger_version VARCHAR(16) NOT NULL"  # noqa: E501
TABLES = f"""
CREATE TABLE compare_joint (
    {KEY},
    true_class INTEGER NOT NULL,
    running_bin INTEGER NOT NULL,
    challenger_bin INTEGER NOT NULL,
    pairs BIGINT NOT NULL,
    {", ".join(f"{name} DOUBLE PRECISION NOT NULL" for name in SUMS)},
    PRIMARY KEY (level, model_version, challenger_version, period, true_class, running_bin, challenger_bin)
);
CREATE TABLE compare_margin (
    {KEY},
    scorer INTEGER NOT NULL,
    bin INTEGER NOT NULL,
    positives BIGINT NOT NULL,
    negatives BIGINT NOT NULL,
    PRIMARY KEY (level, model_version, challenger_version, period, scorer, bin)
)"""


def bin_of(dialect, column, bins):
    return f"{dialect.fine_bin.replace('r.proba', f'r.{column}')} / {FINE_BINS // bins}"


def square(expression):
    """Its square, 0 where that would underflow (PostgreSQL refuses a double that rounds to 0)."""
    return f"(CASE WHEN ABS({expression}) < 1e-150 THEN 0 ELSE ({expression}) * ({expression}) END)"


def losses(dialect):
    """{sum: per-row SQL} over a labelled pair; 0 for any other row."""
    outcome = "(CASE WHEN r.true_class = 1 THEN 1 ELSE 0 END)"

    def log_loss(column):
        clipped = f"{dialect.least}({dialect.greatest}(r.{column}, {CLIP}), 1 - {CLIP})"
        return f"(CASE WHEN r.true_class = 1 THEN -LN({clipped}) ELSE -LN(1 - {clipped}) END)"

    def squared_error(column):
        return square(f"r.{column} - {outcome}")

    log_loss_difference = f"({log_loss('challenger_proba')} - {log_loss('proba')})"
    squared_error_difference = f"({squared_error('challenger_proba')} - {squared_error('proba')})"
    per_row = {
        "sum_running_log_loss": log_loss("proba"),
        "sum_log_loss_difference": log_loss_difference,
        "sum_log_loss_difference_squared": square(log_loss_difference),
        "sum_running_squared_error": squared_error("proba"),
        "sum_squared_error_difference": squared_error_difference,
        "sum_squared_error_difference_squared": square(squared_error_difference),
    }
    labelled_pair = "r.true_class IS NOT NULL AND r.challenger_proba IS NOT NULL"
    return {name: f"(CASE WHEN {labelled_pair} THEN {sql} ELSE 0 END)" for name, sql in per_row.items()}


def joint_upsert(dialect, source):
    when, levels = periods(dialect)
    counted = "r.true_class IS NULL OR r.challenger_proba IS NULL"
    running_bin = f"CASE WHEN {counted} THEN 0 ELSE {bin_of(dialect, 'proba', JOINT_BINS)} END"
    challenger_bin = (
        f"CASE WHEN r.challenger_proba IS NULL THEN {FAILED} WHEN r.true_class IS NULL THEN 0 "
        f"ELSE {bin_of(dialect, 'challenger_proba', JOINT_BINS)} END"
    )
    sums = losses(dialect)
    return f"""
INSERT INTO compare_joint (level, period, model_version, challenger_version, true_class, running_bin,
                           challenger_bin, pairs, {", ".join(sums)})
SELECT l.level, {when}, r.model_version, r.challenger_version, COALESCE(r.true_class, {UNLABELLED}),
       {running_bin}, {challenger_bin}, SUM(r.sign),
       {", ".join(f"SUM(r.sign * {sql})" for sql in sums.values())}
FROM {source} CROSS JOIN {levels} WHERE r.challenger_version IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 3, 4, 2, 5, 6, 7
ON CONFLICT (level, model_version, challenger_version, period, true_class, running_bin, challenger_bin)
DO UPDATE SET pairs = compare_joint.pairs + excluded.pairs,
{", ".join(f"{name} = compare_joint.{name} + excluded.{name}" for name in sums)}"""


def margin_upsert(dialect, source):
    when, levels = periods(dialect)
    running, challenger = (
        bin_of(dialect, "proba", MARGIN_BINS),
        bin_of(dialect, "challenger_proba", MARGIN_BINS),
    )
    return f"""
INSERT INTO compare_margin
    (level, period, model_version, challenger_version, scorer, bin, positives, negatives)
SELECT l.level, {when}, r.model_version, r.challenger_version, s.scorer,
       CASE s.scorer WHEN 0 THEN {running} ELSE {challenger} END,
       SUM(CASE WHEN r.true_class = 1 THEN r.sign ELSE 0 END),
       SUM(CASE WHEN r.true_class = 1 THEN 0 ELSE r.sign END)
FROM {source} CROSS JOIN {levels} CROSS JOIN (SELECT 0 AS scorer UNION ALL SELECT 1 AS scorer) AS s
WHERE r.challenger_version IS NOT NULL AND r.challenger_proba IS NOT NULL AND r.true_class IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 3, 4, 2, 5, 6
ON CONFLICT (level, model_version, challenger_version, period, scorer, bin) DO UPDATE SET
positives = compare_margin.positives + excluded.positives,
negatives = compare_margin.negatives + excluded.negatives"""


def statements(dialect, source):
    """Count the rows of `source` (model_version, created_at, proba, COLUMNS, sign). Both tables
    in the same order in every trigger, their cells in key order: no deadlock."""
    return [joint_upsert(dialect, source), margin_upsert(dialect, source)]


def has_columns(database, table):
    """Whether `table` holds a challenger's answer (schema version 8 on)."""
    return {"challenger_proba", "challenger_version"} <= {
        column.name for column in database.get_columns(table)
    }


def install(database, table):
    """The tables, dropped and refilled from the rows and the archived ones."""
    dialect = dialect_of(database)
    for name in TABLE_NAMES:
        database.execute_sql(f"DROP TABLE IF EXISTS {name}")
    for statement in TABLES.split(";"):
        database.execute_sql(statement + ("" if dialect is POSTGRESQL else " WITHOUT ROWID"))
    for name in (table, "archived_prediction"):
        if database.table_exists(name) and has_columns(database, name):
            for statement in statements(dialect, table_source(COLUMNS, name, 1)):
                database.execute_sql(statement)
    if dialect is POSTGRESQL:
        database.execute_sql(f"ANALYZE {', '.join(TABLE_NAMES)}")


def installed(database):
    return all(database.table_exists(name) for name in TABLE_NAMES)


@dataclass
class Counts:
    """One running model and challenger's counts over a window: `scored` and `failed` over every
    prediction; per outcome (0, 1) the labelled pairs' JOINT_BINS x JOINT_BINS `joint` counts;
    the sums of SUMS over the labelled pairs; and per scorer (0 running, 1 challenger) the
    positives and negatives in MARGIN_BINS bins."""

    scored: int = 0
    failed: int = 0
    joint: dict = field(
        default_factory=lambda: {outcome: np.zeros((JOINT_BINS, JOINT_BINS)) for outcome in (0, 1)}
    )
    sums: dict = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    positives: np.ndarray = field(default_factory=lambda: np.zeros((2, MARGIN_BINS)))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros((2, MARGIN_BINS)))


def counts(database, level, first):
    """{(model_version, challenger_version): Counts} over the periods from `first` at `level`.
    Each pair of versions' rows are one range of each table's key, added up by the database."""
    found = {}
    query = f"SELECT model_version, challenger_version FROM compare_joint WHERE level = {ALL} GROUP BY 1, 2"
    for versions in database.execute_sql(query).fetchall():
        window = Window(database, tuple(versions), level, first)
        scored, failed, *sums = window.read(TOTALS).fetchone()
        if scored:
            found[window.versions] = Counts(
                scored, failed, sums=dict(zip(SUMS, map(float, sums), strict=True))
            )
            add_cells(found[window.versions], integers(window.read(CELLS).fetchall()))
            add_margins(found[window.versions], integers(window.read(MARGINS).fetchall()))
    return found


@dataclass(frozen=True)
class Window:
    """One pair of versions' periods from `first` at `level`: what each query below reads."""

    database: object
    versions: tuple
    level: int
    first: int

    def read(self, query):
        param = self.database.param
        where = f"""WHERE level = {int(self.level)} AND model_version = {param}
                    AND challenger_version = {param} AND period >= {int(self.first)}"""
        return self.database.execute_sql(query.format(where=where), self.versions)


def as_integer(sql):
    return f"CAST({sql} AS BIGINT)"  # PostgreSQL's SUM of a BIGINT is a numeric


TOTALS = f"""SELECT {as_integer("SUM(pairs)")},
             {as_integer(f"SUM(CASE WHEN challenger_bin = {FAILED} THEN pairs ELSE 0 END)")},
             {", ".join(f"SUM({name})" for name in SUMS)} FROM compare_joint {{where}}"""
# The unlabelled and failed cells' sums are 0: only their counts matter.
CELLS = f"""SELECT true_class, running_bin, challenger_bin, {as_integer("SUM(pairs)")} FROM compare_joint
            {{where}} AND true_class <> {UNLABELLED} AND challenger_bin <> {FAILED} GROUP BY 1, 2, 3"""
MARGINS = f"""SELECT scorer, bin, {as_integer("SUM(positives)")}, {as_integer("SUM(negatives)")}
              FROM compare_margin {{where}} GROUP BY 1, 2"""


def integers(rows):
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def add_cells(into, rows):
    """rows: (true_class, running_bin, challenger_bin, pairs)."""
    for outcome in (0, 1):
        mine = rows[rows[:, 0] == outcome]
        np.add.at(into.joint[outcome], (mine[:, 1], mine[:, 2]), mine[:, 3])


def add_margins(into, rows):
    """rows: (scorer, bin, positives, negatives)."""
    np.add.at(into.positives, (rows[:, 0], rows[:, 1]), rows[:, 2])
    np.add.at(into.negatives, (rows[:, 0], rows[:, 1]), rows[:, 3])
