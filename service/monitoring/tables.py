"""The running totals' tables and the triggers that keep them, on SQLite and PostgreSQL.

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
- Where the table holds a challenger's answer (schema version 8 on), the same transactions keep
  pairs.py's counts (`pairs_on_*` triggers; install() fills them too).
- `stats_generation` holds a random number, drawn at install() and moved on by a TRUNCATE, so
  that cells cached from one state of the totals are never taken for another's (windows.py).

Reading them is windows.py's; what /stats makes of them is reports.py's.
"""

import secrets

from service.monitoring import pairs, population
from service.monitoring.periods import (
    COARSE_BINS,
    DAY_COARSE,
    FINE_BINS,
    HOUR,
    LEVELS,
    POSTGRESQL,
    SQLITE,
    dialect_of,
    period,
    row_source,
    table_source,
)

LABEL = "true_class"  # what the totals read of a row, beside its version, time and proba
BINS = population.COLUMN  # what the population's counts read
CLIP = 2.220446049250313e-16  # log loss clips probas to [CLIP, 1 - CLIP], as scikit-learn does (float64 eps)

# stats_hour's sums, and the rows counted in them that the table no longer holds (archived).
COUNTS = (
    "predictions", "labelled", "positives", "sum_proba_all", "sum_proba", "sum_squared_error", "sum_log_loss",
    "labelled_changes",
)  # fmt: skip
HOUR_COLUMNS = (*COUNTS, "archived")

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
    archived BIGINT NOT NULL DEFAULT 0,
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


# Archived predictions (archive.py): deleted from the table, kept in the totals. A deleted row is
# archived when archived_prediction holds it, as the archive's transaction moved it there.
def is_archived(row):
    return (
        f"EXISTS (SELECT 1 FROM archived_prediction AS a WHERE a.observation_id = {row}.observation_id "
        f"AND a.proba = {row}.proba)"
    )


def archived_upsert(dialect, source):
    """Count the rows of `source` as archived in their hour; every other total stays."""
    zeros = ", ".join(["0"] * len(COUNTS))
    return f"""
INSERT INTO stats_hour (model_version, hour, {", ".join(COUNTS)}, archived)
SELECT r.model_version, {period(dialect, HOUR)}, {zeros}, COUNT(*) FROM {source} WHERE true
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (model_version, hour) DO UPDATE SET archived = stats_hour.archived + excluded.archived"""


ARCHIVED_SOURCE = table_source(LABEL, "archived_prediction", 1)
ARCHIVE_TABLES = {
    "archive": """CREATE TABLE IF NOT EXISTS archive (
        id {serial} PRIMARY KEY, file TEXT NOT NULL, before_time {timestamp} NOT NULL,
        archived_at {timestamp} NOT NULL, row_count BIGINT NOT NULL)""",
    "archived_prediction": """CREATE TABLE IF NOT EXISTS archived_prediction (
        observation_id BIGINT PRIMARY KEY, archive_id INTEGER NOT NULL, model_version VARCHAR(16) NOT NULL,
        created_at {timestamp}, proba DOUBLE PRECISION NOT NULL, true_class INTEGER)""",
}


# What a change to a row's label, proba, version or time must move; updated_at alone moves nothing.
COUNTED_COLUMNS = ("true_class", "proba", "model_version", "created_at")


SQLITE_TRIGGERS = {
    "stats_on_insert", "stats_on_labelled_insert", "stats_on_update", "stats_on_delete", "stats_on_archive",
    "population_on_update",
}  # fmt: skip
POSTGRESQL_TRIGGERS = {
    "stats_on_insert", "stats_on_update", "stats_on_delete", "stats_on_truncate", "population_on_update",
}  # fmt: skip
# The pairs' (pairs.py), on a table that holds a challenger's answer (schema version 8 on).
PAIRS_TRIGGERS = {"pairs_on_insert", "pairs_on_update", "pairs_on_delete"}
TRIGGER_NAMES = sorted(SQLITE_TRIGGERS | POSTGRESQL_TRIGGERS | PAIRS_TRIGGERS)
# What a change to a row must move in the pairs' counts.
PAIRS_COUNTED = (
    "true_class",
    "proba",
    "model_version",
    "created_at",
    "challenger_proba",
    "challenger_version",
)


def counted(dialect, rows):
    """What a row's arrival (sign 1) or departure (-1) moves: the totals and the population."""
    return [
        *changes(dialect, row_source(LABEL, *rows)),
        *population.statements(dialect, row_source(BINS, *rows)),
    ]


def sqlite_triggers(table):
    """Row by row (SQLite has no statement triggers). A new row moves its hour's counts and the
    population's, and its bins only when it arrives labelled, so /predict's inserts skip the
    bins' statement; a new label moves the totals only."""
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in COUNTED_COLUMNS)
    moved = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in population.COUNTED_COLUMNS)

    def trigger(name, event, statements, when=""):
        body = ";\n".join(statements)
        return f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {when} BEGIN {body}; END"

    arrived, departed = [("NEW", 1)], [("OLD", -1)]
    return [
        trigger(
            "stats_on_insert",
            "INSERT",
            [hour_upsert(SQLITE, row_source(LABEL, *arrived)), *population.new_row_statements()],
        ),
        trigger(
            "stats_on_labelled_insert",
            "INSERT",
            [bin_upsert(SQLITE, row_source(LABEL, *arrived))],
            "WHEN NEW.true_class IS NOT NULL",
        ),
        trigger(
            "stats_on_update",
            "UPDATE",
            changes(SQLITE, row_source(LABEL, *departed, *arrived)),
            f"WHEN {changed}",
        ),
        trigger(
            "population_on_update",
            "UPDATE",
            population.statements(SQLITE, row_source(BINS, *departed, *arrived)),
            f"WHEN {moved}",
        ),
        trigger("stats_on_delete", "DELETE", counted(SQLITE, departed), f"WHEN NOT {is_archived('OLD')}"),
        trigger(
            "stats_on_archive",
            "DELETE",
            [archived_upsert(SQLITE, row_source(LABEL, *departed))],
            f"WHEN {is_archived('OLD')}",
        ),
    ]


def sqlite_pairs_triggers(table):
    """Row by row, only for rows a challenger was asked to score."""
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in PAIRS_COUNTED)
    asked = "(OLD.challenger_version IS NOT NULL OR NEW.challenger_version IS NOT NULL)"

    def trigger(name, event, rows, when):
        body = ";\n".join(pairs.statements(SQLITE, row_source(pairs.COLUMNS, *rows)))
        return f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW WHEN {when} BEGIN {body}; END"

    arrived, departed = [("NEW", 1)], [("OLD", -1)]
    return [
        trigger("pairs_on_insert", "INSERT", arrived, "NEW.challenger_version IS NOT NULL"),
        trigger("pairs_on_update", "UPDATE", departed + arrived, f"({changed}) AND {asked}"),
        trigger(
            "pairs_on_delete",
            "DELETE",
            departed,
            f"OLD.challenger_version IS NOT NULL AND NOT {is_archived('OLD')}",
        ),
    ]


def postgresql_pairs_triggers(table):
    """Inserts and deletes once per statement, updates once per changed row; a TRUNCATE keeps
    the archived predictions' pairs, as it keeps their totals."""
    changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in PAIRS_COUNTED)
    asked = "(OLD.challenger_version IS NOT NULL OR NEW.challenger_version IS NOT NULL)"
    kept = f"WHERE challenger_version IS NOT NULL AND NOT {is_archived('d')}"
    # Without a challenger, every /predict's INSERT pays one look at its rows, not two upserts.
    asked_to_score = "challenger_version IS NOT NULL"
    shadowed = table_source(pairs.COLUMNS, "arrived", 1, f"WHERE {asked_to_score}")
    return [
        trigger_function(
            "pairs_on_insert",
            [
                only_if(
                    f"EXISTS (SELECT 1 FROM arrived WHERE {asked_to_score})",
                    pairs.statements(POSTGRESQL, shadowed),
                )
            ],
        ),
        trigger_function(
            "pairs_on_update",
            pairs.statements(POSTGRESQL, row_source(pairs.COLUMNS, ("OLD", -1), ("NEW", 1))),
        ),
        trigger_function(
            "pairs_on_delete",
            pairs.statements(POSTGRESQL, table_source(pairs.COLUMNS, "departed AS d", -1, kept)),
        ),
        f"CREATE TRIGGER pairs_on_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS arrived "
        "FOR EACH STATEMENT EXECUTE FUNCTION pairs_on_insert()",
        f"CREATE TRIGGER pairs_on_update AFTER UPDATE ON {table} FOR EACH ROW WHEN (({changed}) AND {asked}) "
        "EXECUTE FUNCTION pairs_on_update()",
        f"CREATE TRIGGER pairs_on_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS departed "
        "FOR EACH STATEMENT EXECUTE FUNCTION pairs_on_delete()",
    ]


def only_if(condition, statements):
    """PL/pgSQL: the statements, run only when `condition` holds."""
    return f"IF {condition} THEN {'; '.join(statements)}; END IF"


def trigger_function(name, statements, returns="NULL"):
    # SECURITY DEFINER: a role that may delete but not write the totals (a plan over capacity
    # hands out such a credential) still keeps them right when it deletes.
    body = ";\n".join(statements)
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        f"SET search_path FROM CURRENT AS $$ BEGIN {body}; RETURN {returns}; END $$"
    )


def pairs_refill(with_pairs):
    """After a TRUNCATE, the pairs' counts of the archived predictions alone."""
    if not with_pairs:
        return []
    archived = table_source(pairs.COLUMNS, "archived_prediction", 1)
    return [f"TRUNCATE {', '.join(pairs.TABLE_NAMES)}", *pairs.statements(POSTGRESQL, archived)]


def postgresql_triggers(table, with_pairs=False):
    """Inserts and deletes are counted once per statement (a /predict batch is one upsert of its
    hour), updates once per row, and only when a counted column changed."""
    changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in COUNTED_COLUMNS)
    moved = " OR ".join(
        f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in population.COUNTED_COLUMNS
    )

    kept = f"WHERE NOT {is_archived('d')}"
    archived = table_source(LABEL, "departed AS d", -1, f"WHERE {is_archived('d')}")
    archived_rows = table_source(BINS, "archived_prediction", 1)
    return [
        trigger_function(
            "stats_on_insert",
            [
                *changes(POSTGRESQL, table_source(LABEL, "arrived", 1)),
                *population.statements(POSTGRESQL, table_source(BINS, "arrived", 1)),
            ],
        ),
        trigger_function("stats_on_update", changes(POSTGRESQL, row_source(LABEL, ("OLD", -1), ("NEW", 1)))),
        trigger_function(
            "population_on_update",
            population.statements(POSTGRESQL, row_source(BINS, ("OLD", -1), ("NEW", 1))),
        ),
        trigger_function(
            "stats_on_delete",
            [
                *changes(POSTGRESQL, table_source(LABEL, "departed AS d", -1, kept)),
                *population.statements(POSTGRESQL, table_source(BINS, "departed AS d", -1, kept)),
                archived_upsert(POSTGRESQL, archived),
            ],
        ),
        # The change counts start again from zero: a new generation keeps cached cells from passing.
        # The archived predictions stay in the totals.
        trigger_function(
            "stats_on_truncate",
            [
                f"TRUNCATE stats_hour, stats_bin, {', '.join(population.COUNT_TABLES)}",
                "UPDATE stats_generation SET generation = generation + 1",
                *changes(POSTGRESQL, ARCHIVED_SOURCE),
                archived_upsert(POSTGRESQL, ARCHIVED_SOURCE),
                *population.statements(POSTGRESQL, archived_rows),
                *pairs_refill(with_pairs),
            ],
        ),
        f"CREATE TRIGGER stats_on_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS arrived "
        "FOR EACH STATEMENT EXECUTE FUNCTION stats_on_insert()",
        f"CREATE TRIGGER stats_on_update AFTER UPDATE ON {table} FOR EACH ROW WHEN ({changed}) "
        "EXECUTE FUNCTION stats_on_update()",
        f"CREATE TRIGGER population_on_update AFTER UPDATE ON {table} FOR EACH ROW WHEN ({moved}) "
        "EXECUTE FUNCTION population_on_update()",
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
    # For the rows of a bin, when ROC AUC needs their exact probas (exact.exact_probas).
    database.execute_sql(
        f"CREATE INDEX IF NOT EXISTS {table}_labelled_proba ON {table} (proba) WHERE true_class IS NOT NULL"
    )
    create_archive_tables(database)
    for statement in [*changes(dialect, table_source(LABEL, table, 1)), *archived_fill(dialect)]:
        database.execute_sql(statement)
    population.install(database, table)
    if pairs.has_columns(database, table):
        pairs.install(database, table)
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


def archived_fill(dialect):
    """The archived predictions' share of the totals, from archived_prediction."""
    return [*changes(dialect, ARCHIVED_SOURCE), archived_upsert(dialect, ARCHIVED_SOURCE)]


def create_archive_tables(database):
    """archive and archived_prediction, where they are not yet: they hold what no row holds now."""
    sqlite = dialect_of(database) is SQLITE
    types = {"serial": "INTEGER" if sqlite else "SERIAL", "timestamp": "DATETIME" if sqlite else "TIMESTAMP"}
    for statement in ARCHIVE_TABLES.values():
        database.execute_sql(statement.format(**types))
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS archived_prediction_labelled_proba ON archived_prediction (proba) "
        "WHERE true_class IS NOT NULL"
    )


def add_archives(database, table):
    """Schema version 4 -> 5: archived predictions, counted in the totals (stats_hour.archived)
    and kept for an exact ROC AUC, and triggers that a role that may only delete can fire."""
    if "archived" not in {column.name for column in database.get_columns("stats_hour")}:
        database.execute_sql("ALTER TABLE stats_hour ADD COLUMN archived BIGINT NOT NULL DEFAULT 0")
    create_archive_tables(database)


def start_generation(database):
    """A random generation, so the cells cached from a database are never taken for another's, or
    for this one's before its totals were rebuilt."""
    database.execute_sql(f"INSERT INTO stats_generation VALUES ({secrets.randbits(62)})")


def recreate_triggers(database, table):
    """The triggers as this code writes them, once an upgrade's steps have made what they use."""
    drop_triggers(database, table)
    create_triggers(database, table)


def drop_triggers(database, table):
    for name in TRIGGER_NAMES:
        on_table = "" if dialect_of(database) is SQLITE else f" ON {table}"
        database.execute_sql(f"DROP TRIGGER IF EXISTS {name}{on_table}")


def create_triggers(database, table):
    """The totals' triggers, and the pairs' where the table holds a challenger's answer."""
    with_pairs = pairs.has_columns(database, table)
    if dialect_of(database) is SQLITE:
        triggers = sqlite_triggers(table) + (sqlite_pairs_triggers(table) if with_pairs else [])
    else:
        triggers = postgresql_triggers(table, with_pairs) + (
            postgresql_pairs_triggers(table) if with_pairs else []
        )
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
    with_pairs = pairs.has_columns(database, table)
    if with_pairs:
        wanted = wanted | PAIRS_TRIGGERS
    tables = ("stats_hour", "stats_bin", "stats_generation", *ARCHIVE_TABLES)
    return (
        wanted <= found
        and population.installed(database, table)
        and (not with_pairs or pairs.installed(database))
        and all(database.table_exists(name) for name in tables)
        and {"labelled_changes", "archived"} <= {column.name for column in database.get_columns("stats_hour")}
    )
