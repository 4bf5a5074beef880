"""The predictions table's schema, brought up to date in place at start-up.

Contract:
- `upgrade(database, prediction_model)` runs once, in gunicorn's master before it forks the
  workers. In one transaction (on PostgreSQL under an advisory lock, on SQLite under its write
  lock, so instances starting together take turns and the first does the work), it:
  - creates the tables on an empty database;
  - otherwise reads the schema version recorded in `schema_version`, or, where none is
    recorded, recognises the table: the tutorial's own (version 0) or this repository's
    first release (version 1);
  - applies each later step with peewee's `playhouse.migrate`, recording each version;
  - checks that every column the service uses is there with a usable type.
  Version 3 adds aggregates.py's running totals (tables and triggers) and fills them from the
  rows already there: one pass over the table, inside the same transaction. Version 4 adds
  the counts of changes that let /stats cache periods' cells (no pass over the rows).
  Anything it can't do raises `SchemaError` with what is wrong and what to do, and the
  transaction rolls back, so nothing starts half-migrated. Returns what it did, for the log.
- Rows are never deleted or rewritten. Rows from the tutorial's table get model_version
  "unrecorded" and no timestamps (NULL: nobody knows when they were made).
"""

import logging
from datetime import datetime

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

import aggregates

log = logging.getLogger("migrations")

CURRENT_VERSION = 4
UNRECORDED_VERSION = "unrecorded"  # the model_version of rows made before versions were recorded


class SchemaError(RuntimeError):
    """The database's schema is one this service can't use or bring up to date."""


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
    aggregates.install(database, table)


def change_counts(database, migrator, table):
    """Version 3 -> 4: the counts that tell /stats which periods' cells it may take from its cache."""
    aggregates.add_change_counts(database, table)


STEPS = {
    1: ("from the tutorial's table: model_version and timestamps added, 64-bit id and proba", from_tutorial),
    2: ("created_at and updated_at may be NULL (rows from before they were kept)", timestamps_may_be_null),
    3: ("running totals for /stats (stats_hour, stats_bin), kept by triggers", running_totals),
    4: ("counts of labelled changes per hour, for /stats' cache of periods", change_counts),
}

# Each shipped schema, recognised by its columns when no version was recorded.
TUTORIAL_COLUMNS = {"id", "observation_id", "observation", "proba", "true_class"}
FIRST_RELEASE_COLUMNS = TUTORIAL_COLUMNS | {"model_version", "created_at", "updated_at"}


def upgrade(database, prediction_model):
    table = prediction_model._meta.table_name
    SchemaVersion.bind(database)  # not bind_ctx(): threads upgrading at once would unbind it for the others
    with database.connection_context(), database.atomic():
        take_turns(database)
        if not database.table_exists(table):
            database.create_tables([prediction_model, SchemaVersion])
            aggregates.install(database, table)
            if not SchemaVersion.select().where(SchemaVersion.version == CURRENT_VERSION).exists():
                record(CURRENT_VERSION, "created the tables")
            return f"created the tables (schema version {CURRENT_VERSION})"
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
        check_usable(database, prediction_model)
        if not aggregates.installed(database, table):  # dropped by hand since: rebuilt from the rows
            aggregates.install(database, table)
            return f"schema version {CURRENT_VERSION}; the running totals were missing and are rebuilt from the rows"  # noqa: E501
    if found == CURRENT_VERSION:
        return f"schema version {CURRENT_VERSION}, up to date"
    return f"upgraded the schema in place from version {found} to {CURRENT_VERSION}"


def take_turns(database):
    # SQLite's transaction already holds the write lock (BEGIN IMMEDIATE, see database.py).
    if not isinstance(database, SqliteDatabase):
        database.execute_sql("SELECT pg_advisory_xact_lock(hashtext('create_tables'))")


def recorded_version(database, table):
    """The existing table's schema version: recorded, or recognised from its columns."""
    if database.table_exists(SchemaVersion._meta.table_name):
        newest = SchemaVersion.select(SchemaVersion.version).order_by(SchemaVersion.version.desc()).first()
        if newest is not None:
            return newest.version
    columns = {column.name for column in database.get_columns(table)}
    database.create_tables([SchemaVersion])
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
    SchemaVersion.create(version=version, applied_at=datetime.now(), description=description)


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
FIELD_TYPES = {
    "id": "integer",
    "observation_id": "bigint",
    "observation": "text",
    "proba": "double",
    "true_class": "integer",
    "model_version": "text",
    "created_at": "timestamp",
    "updated_at": "timestamp",
}


def check_usable(database, prediction_model):
    table = prediction_model._meta.table_name
    backend = "sqlite" if isinstance(database, SqliteDatabase) else "postgresql"
    columns = database.get_columns(table)
    found = {column.name: column.data_type.lower().split("(")[0].strip() for column in columns}
    for name in prediction_model._meta.columns:
        if name not in found:
            raise SchemaError(f"table {table} has no column {name}: restore it, or use another database")
        if found[name] not in USABLE_TYPES[backend][FIELD_TYPES[name]]:
            expected = sorted(USABLE_TYPES[backend][FIELD_TYPES[name]])
            raise SchemaError(
                f"column {table}.{name} is {found[name]}, and this service needs one of {expected}: "
                f"change its type (ALTER TABLE {table} ALTER COLUMN {name} TYPE ...) or point "
                "DATABASE_URL at another database"
            )
