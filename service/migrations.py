"""The predictions table's schema, brought up to date in place: by the release, or at start-up.

Contract:
- `upgrade(database, prediction_model)` is the release command's work (`RELEASE_COMMAND`, run
  by the platform before a new version takes traffic, or by hand). In one transaction (on
  PostgreSQL under an advisory lock, on SQLite under its write lock, so instances starting
  together take turns and the first does the work), it:
  - creates the tables on an empty database;
  - otherwise reads the schema version recorded in `schema_version`, or, where none is
    recorded, recognises the table: the tutorial's own (version 0) or this repository's
    first release (version 1);
  - applies each later step with peewee's `playhouse.migrate`, recording each version;
  - checks that every column the service uses is there with a usable type.
  Version 3 adds the running totals (monitoring/tables.py) and fills them from the rows
  already there: one pass over the table, inside the same transaction. Version 4 adds the
  counts of changes that let /stats cache periods' cells, version 5 the archive's tables (no
  pass over the rows). Version 6 adds each row's feature bins and the population's counts
  (monitoring/population.py), a pass again; version 7 only rewrites the triggers; version 8 adds
  a challenger's answer and version beside each row's (no pass); version 9 the counts of the
  pairs a challenger scored (monitoring/pairs.py), a pass over the rows. The
  triggers, as this code writes them, are created once the steps are done.
  Anything it can't do raises `SchemaError` with what is wrong and what to do, and the
  transaction rolls back, so nothing starts half-migrated. Returns what it did, for the log.
- `prepare(database, prediction_model, most_rows, on_platform)` is what app.py runs at start-up,
  in gunicorn's master before it forks the workers: upgrade()'s work where it is quick (always
  on a laptop; on a platform, only when no step passes over more than `most_rows` rows and no
  release holds the lock), else a `SchemaState` that answers 503 until the release is done.
- Rows are never deleted or rewritten. Rows from the tutorial's table get model_version
  "unrecorded" and no timestamps (NULL: nobody knows when they were made).
"""

import logging
import threading
import time
from dataclasses import dataclass

from peewee import (
    BigIntegerField,
    CharField,
    DateTimeField,
    DoubleField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)
from playhouse.migrate import SchemaMigrator, migrate

from service import archive
from service import database as databases
from service.monitoring import pairs
from service.monitoring import population as populations
from service.monitoring import tables as totals
from service.timestamps import utc_now

log = logging.getLogger(__name__)

CURRENT_VERSION = 9
UNRECORDED_VERSION = "unrecorded"  # the model_version of rows made before versions were recorded


class SchemaError(RuntimeError):
    """The database's schema is one this service can't use or bring up to date."""


@dataclass(frozen=True)
class Outcome:
    """What an upgrade did: its message for the log, and which kind of thing that was."""

    message: str
    kind: str  # "created", "upgraded", "repaired" (the totals rebuilt) or "current" (nothing to do)


class SchemaVersion(Model):
    version = IntegerField(primary_key=True)
    applied_at = DateTimeField()
    description = TextField()

    class Meta:
        table_name = "schema_version"


# The steps, each from the version before it. Each must also work on any table that a
# crashed earlier attempt could have left, which one transaction per upgrade rules out anyway.
def from_tutorial(database, migrator, table):
    """Version 0 -> 1: the tutorial's table gets what this repository's first release had."""
    columns = {column.name: column for column in database.get_columns(table)}
    operations = [
        migrator.add_column(table, "model_version", CharField(max_length=16, default=UNRECORDED_VERSION)),
        migrator.add_column(table, "created_at", DateTimeField(null=True)),
        migrator.add_column(table, "updated_at", DateTimeField(null=True)),
        migrator.add_index(table, ("created_at",)),
    ]
    if not isinstance(database, SqliteDatabase):  # SQLite's INTEGER and REAL are 64-bit already
        if columns["observation_id"].data_type != "bigint":
            operations.append(migrator.alter_column_type(table, "observation_id", BigIntegerField()))
        if columns["proba"].data_type != "double precision":
            operations.append(migrator.alter_column_type(table, "proba", DoubleField()))
    migrate(*operations)


def timestamps_may_be_null(database, migrator, table):
    """Version 1 -> 2: rows upgraded from the tutorial's table have no timestamps."""
    columns = {column.name: column for column in database.get_columns(table)}
    not_null = [name for name in ("created_at", "updated_at") if not columns[name].null]
    migrate(*[migrator.drop_not_null(table, name) for name in not_null])


def running_totals(database, migrator, table):
    """Version 2 -> 3: the totals /stats reads, kept by triggers, filled from the rows there."""
    totals.install(database, table)


def change_counts(database, migrator, table):
    """Version 3 -> 4: the counts that tell /stats which periods' cells it may take from its cache."""
    totals.add_change_counts(database, table)


def archives(database, migrator, table):
    """Version 4 -> 5: the tables the archive moves predictions to, counted in the totals."""
    totals.add_archives(database, table)
    archive.install(database, table)


def population(database, migrator, table):
    """Version 5 -> 6: each prediction's feature bins, and the counts /drift and the expected
    quality read, filled from the rows there (those of a prediction's proba only)."""
    if not populations.installed(database, table):
        populations.install(database, table)


def triggers_only(database, migrator, table):
    """Version 6 -> 7: nothing but the triggers, which every upgrade writes anew once its steps are done."""


def challenger_columns(database, migrator, table):
    """Version 7 -> 8: a challenger's answer and version beside each row's (NULL on the rows there)."""
    present = {column.name for column in database.get_columns(table)}
    wanted = {
        "challenger_proba": DoubleField(null=True),
        "challenger_version": CharField(max_length=16, null=True),
    }
    migrate(
        *[migrator.add_column(table, name, field) for name, field in wanted.items() if name not in present]
    )


def pair_counts(database, migrator, table):
    """Version 8 -> 9: the running counts /compare reads (monitoring/pairs.py), filled from the
    rows there that a challenger scored."""
    pairs.install(database, table)


STEPS = {
    1: ("from the tutorial's table: model_version and timestamps added, 64-bit id and proba", from_tutorial),
    2: ("created_at and updated_at may be NULL (rows from before they were kept)", timestamps_may_be_null),
    3: ("running totals for /stats (stats_hour, stats_bin), kept by triggers", running_totals),
    4: ("counts of labelled changes per hour, for /stats' cache of periods", change_counts),
    5: ("archived predictions, kept in the running totals; triggers any deleting role can fire", archives),
    6: ("feature bins and the population's counts, for /drift and the expected quality", population),
    7: (
        "triggers that count a proba too small to square (PostgreSQL's underflow) instead of failing",
        triggers_only,
    ),
    8: ("a challenger's answer and version beside each prediction", challenger_columns),
    9: ("running counts of the pairs a challenger scored, for /compare", pair_counts),
}
PASSES_OVER_ROWS = {3, 6, 9}  # the steps whose time grows with the table
RELEASE_COMMAND = "flask --app app upgrade-database"

# Each shipped schema, recognised by its columns when no version was recorded.
TUTORIAL_COLUMNS = {"id", "observation_id", "observation", "proba", "true_class"}
FIRST_RELEASE_COLUMNS = TUTORIAL_COLUMNS | {"model_version", "created_at", "updated_at"}


def upgrade(database, prediction_model):
    SchemaVersion.bind(database)  # not bind_ctx(): threads upgrading at once would unbind it for the others
    with database.connection_context(), database.atomic():
        take_turns(database)
        return upgrade_locked(database, prediction_model).message


def upgrade_locked(database, prediction_model):
    """upgrade()'s work, inside its transaction and lock: an Outcome."""
    table = prediction_model._meta.table_name
    if not database.table_exists(table):
        database.create_tables([prediction_model, SchemaVersion])
        totals.install(database, table)
        archive.install(database, table)
        if not SchemaVersion.select().where(SchemaVersion.version == CURRENT_VERSION).exists():
            record(CURRENT_VERSION, "created the tables")
        return Outcome(f"created the tables (schema version {CURRENT_VERSION})", "created")
    found = recorded_version(database, table)
    if found > CURRENT_VERSION:
        raise SchemaError(
            f"the database's schema is version {found}, newer than this code's {CURRENT_VERSION}: "
            "deploy the newer code, or restore the backup taken before the upgrade"
        )
    migrator = SchemaMigrator.from_database(database)
    for version in range(found + 1, CURRENT_VERSION + 1):
        description, step = STEPS[version]
        run_step(database, migrator, table, version, step)
        record(version, description)
    if found < CURRENT_VERSION:  # each step made what the triggers and functions of this code use
        totals.recreate_triggers(database, table)
        archive.install(database, table)
    check_usable(database, prediction_model)
    if not totals.installed(database, table):  # dropped by hand since: rebuilt from the rows
        totals.install(database, table)
        archive.install(database, table)
        missing = "the running totals were missing and are rebuilt from the rows"
        return Outcome(f"schema version {CURRENT_VERSION}; {missing}", "repaired")
    if found == CURRENT_VERSION:
        return Outcome(f"schema version {CURRENT_VERSION}, up to date", "current")
    return Outcome(f"upgraded the schema in place from version {found} to {CURRENT_VERSION}", "upgraded")


def take_turns(database, wait=True):
    """The upgrade's lock, for the transaction: True once held; with wait=False, False at once when
    another process holds it. SQLite's transaction already holds the write lock (BEGIN IMMEDIATE)."""
    if isinstance(database, SqliteDatabase):
        return True
    function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    (held,) = database.execute_sql(f"SELECT {function}(hashtext('create_tables'))").fetchone()
    return held is not False  # pg_advisory_xact_lock returns void (None)


def recorded_version(database, table):
    """The existing table's schema version: recorded, or recognised from its columns."""
    if database.table_exists(SchemaVersion._meta.table_name):
        newest = SchemaVersion.select(SchemaVersion.version).order_by(SchemaVersion.version.desc()).first()
        if newest is not None:
            return newest.version
    found = recognised_version(database, table)
    database.create_tables([SchemaVersion])
    return found


def recognised_version(database, table):
    """The version of a table with no recorded one, from its columns."""
    columns = {column.name for column in database.get_columns(table)}
    if columns == TUTORIAL_COLUMNS:
        return 0
    if columns == FIRST_RELEASE_COLUMNS:
        return 1
    raise SchemaError(
        f"table {table} has the columns {sorted(columns)}, which is neither the tutorial's table "
        f"({sorted(TUTORIAL_COLUMNS)}) nor one this service made; rename it (the service then "
        "creates its own) or point DATABASE_URL at another database"
    )


def run_step(database, migrator, table, version, step):
    log.warning("upgrading the database schema to version %s", version)
    try:
        step(database, migrator, table)
    except Exception as exc:
        raise SchemaError(
            f"upgrading the schema to version {version} failed, and nothing was changed: {exc}. "
            "Fix the cause and restart; the upgrade runs again"
        ) from exc


def record(version, description):
    SchemaVersion.create(version=version, applied_at=utc_now(), description=description)


# The column types each field can live with, as each backend names them.
USABLE_TYPES = {
    "postgresql": {
        "integer": {"integer", "bigint"},
        "bigint": {"bigint"},
        "double": {"double precision"},
        "text": {"text", "character varying"},
        "timestamp": {"timestamp without time zone", "timestamp with time zone"},
    },
    "sqlite": {  # by SQLite's type affinity rules, on the declared type's name
        "integer": {"integer", "bigint", "int"},
        "bigint": {"integer", "bigint", "int"},
        "double": {"real", "double", "double precision", "float"},
        "text": {"text", "varchar", "character varying"},
        "timestamp": {"datetime", "timestamp"},
    },
}
# Each peewee field type of the Prediction model (app.py, where the columns are declared once),
# as one of USABLE_TYPES' kinds.
FIELD_KINDS = {
    "AUTO": "integer",
    "INT": "integer",
    "BIGINT": "bigint",
    "DOUBLE": "double",
    "FLOAT": "double",
    "TEXT": "text",
    "VARCHAR": "text",
    "DATETIME": "timestamp",
}


def usable_types(backend, field):
    kind = FIELD_KINDS.get(field.field_type)
    if kind is None:
        raise SchemaError(
            f"the Prediction model's field {field.name} is a {field.field_type} field, which "
            "service/migrations.py can't check: add its kind to FIELD_KINDS"
        )
    return USABLE_TYPES[backend][kind]


def check_usable(database, prediction_model):
    table = prediction_model._meta.table_name
    backend = "sqlite" if isinstance(database, SqliteDatabase) else "postgresql"
    columns = database.get_columns(table)
    found = {column.name: column.data_type.lower().split("(")[0].strip() for column in columns}
    for name, field in prediction_model._meta.columns.items():
        if name not in found:
            raise SchemaError(f"table {table} has no column {name}: restore it, or use another database")
        if found[name] not in usable_types(backend, field):
            expected = sorted(usable_types(backend, field))
            raise SchemaError(
                f"column {table}.{name} is {found[name]}, and this service needs one of {expected}: "
                f"change its type (ALTER TABLE {table} ALTER COLUMN {name} TYPE ...) or point "
                "DATABASE_URL at another database"
            )


class SchemaState:
    """Whether the schema is the code's: `message` says why not (None when it is). A web process
    that started behind asks the database again, at most once a second, until the release is done."""

    def __init__(self, message=None):
        self.message = message
        self.checked = 0.0
        self.lock = threading.Lock()

    def is_current(self, database):
        if self.message is None:  # the usual case, without a query
            return True
        with self.lock:
            if time.monotonic() - self.checked >= 1:
                self.checked = time.monotonic()
                if peek_version(database) == CURRENT_VERSION:
                    self.message = None
                    log.warning("database: the schema is version %s now; serving", CURRENT_VERSION)
        return self.message is None


def prepare(database, prediction_model, most_rows, on_platform=False):
    """The schema as a web process starts: a SchemaState. Tables are created, and an upgrade is
    applied, at once on a laptop; on a platform (which gives the process a minute to bind its
    port) only when no step passes over more than `most_rows` rows and no other process (the
    release) holds the upgrade's lock. Otherwise the state says to run the release command and
    the service answers 503 meanwhile. A database fault is a RuntimeError saying what failed."""
    table = prediction_model._meta.table_name
    try:
        with database.connection_context():
            found = peek_version(database, table)  # reads the catalog: never waits for a lock
            if found == CURRENT_VERSION and totals.installed(database, table):
                check_usable(database, prediction_model)
                return SchemaState()
            SchemaVersion.bind(database)
            creating = found is None
            with database.atomic():
                # Waiting for the lock is quick only when creating the tables; a laptop may wait.
                if not take_turns(database, wait=creating or not on_platform):
                    return SchemaState(behind(found, "another process (the release) is upgrading it"))
                if on_platform and not creating and passes_over(database, table, found, most_rows):
                    return SchemaState(behind(found, "its upgrade passes over every row, too long to run"))
                done = upgrade_locked(database, prediction_model)
    except databases.EXCEPTIONS as exc:
        found = databases.classify(exc)
        reason = "" if found.kind == "error" else found.message.split(";")[0] + ": "
        raise RuntimeError(f"the database failed at start-up: {reason}{databases.driver_error(exc)}") from exc
    if done.kind in LOG_LEVELS:  # quiet when there was nothing to do (the notebooks import app.py)
        log.log(LOG_LEVELS[done.kind], "database: %s", done.message)
    return SchemaState()


LOG_LEVELS = {"created": logging.INFO, "upgraded": logging.WARNING, "repaired": logging.WARNING}


def behind(found, why):
    message = (
        f"the database's schema is version {found} and this code needs {CURRENT_VERSION}: {why} while "
        f"the web process starts. Run the release command, `{RELEASE_COMMAND}` (docs/deploying.md); "
        "nothing was stored"
    )
    log.warning("database: schema version %s, and this code needs %s: %s", found, CURRENT_VERSION, why)
    return message


def passes_over(database, table, found, most_rows):
    """Whether a pending step, or rebuilding missing totals, passes over more than
    `most_rows` rows (counted no further)."""
    pending = set(range(found + 1, CURRENT_VERSION + 1))
    if not PASSES_OVER_ROWS & pending and (pending or totals.installed(database, table)):
        return False
    query = f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT {int(most_rows) + 1}) AS counted"
    return database.execute_sql(query).fetchone()[0] > most_rows


def peek_version(database, table="prediction"):
    """The schema's version without writing or locking: recorded, or recognised from the table's
    columns; None when there is no table yet."""
    if not database.table_exists(table):
        return None
    if database.table_exists(SchemaVersion._meta.table_name):
        (newest,) = database.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()
        if newest is not None:
            return newest
    return recognised_version(database, table)
