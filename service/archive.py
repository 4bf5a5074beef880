"""Room without forgetting: old predictions moved to a CSV file, out of the table, and kept in the
running totals, so that /stats over the whole history stays what it was.

Contract:
- `archive(database, table, before, path, batch_rows)` archives the predictions made before
  `before` (a datetime, naive UTC; rows with no created_at, from the tutorial's table, stay):
  1. It writes them to `path` as CSV, the table's columns with a header (pandas and Step 3 read it
     as it is), a batch of rows at a time, first to `path` + ".partial". It then reads the file
     back with pandas and checks that it holds exactly the rows selected, by count and by id;
     only then does the file take its name, and the archive is recorded (table `archive`).
  2. It moves the file's rows out of the table, `batch_rows` at a time, each batch in a
     transaction of its own: into archived_prediction (the id, model_version, created_at, proba,
     true_class and feature_bins, what /stats, an exact ROC AUC and /drift need, and a
     challenger's answer, what /compare needs, without the observation) and out of the
     predictions table, whose triggers then count them as archived instead of taking them out of
     the totals. Only rows still as the file has them (same
     updated_at) move; a row labelled since stays in the table, and is counted in the report.
  Interrupted anywhere, the same command again goes on where it stopped: an existing file is
  read back (never written again) and its remaining rows moved. On PostgreSQL the moves go
  through functions that run with the owner's rights (SECURITY DEFINER), so a credential that
  may only read and delete, as a plan over capacity hands out, can run it. Returns a report.
- `install(database, table)`: those functions, on PostgreSQL (tables.create_triggers calls it), and
  archived_prediction's columns for a challenger's answer where they are missing.
- `where(database, observation_id)`: for an archived id, a sentence naming its archive, else None.
"""

import csv
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from service.monitoring.periods import SQLITE, dialect_of

COLUMNS = (
    "id",
    "observation_id",
    "observation",
    "proba",
    "true_class",
    "model_version",
    "created_at",
    "updated_at",
    "feature_bins",
    "challenger_proba",
    "challenger_version",
)
MOVED_COLUMNS = (
    "observation_id, archive_id, model_version, created_at, proba, true_class, feature_bins, "
    "challenger_proba, challenger_version"
)
# A challenger's answer (schema version 8) is kept for /compare, as the rest is for /stats.
CHALLENGER_COLUMNS = {"challenger_proba": "DOUBLE PRECISION", "challenger_version": "VARCHAR(16)"}


def postgresql_functions(table):
    owner = "LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT"
    return [
        f"""CREATE OR REPLACE FUNCTION archive_begin(file TEXT, before TIMESTAMP, row_count BIGINT)
            RETURNS INTEGER {owner} AS $$
            DECLARE found INTEGER;
            BEGIN
              INSERT INTO archive (file, before_time, archived_at, row_count)
              VALUES (file, before, now() AT TIME ZONE 'utc', row_count) RETURNING id INTO found;
              RETURN found;
            END $$""",
        f"""CREATE OR REPLACE FUNCTION archive_move(archive INTEGER, ids BIGINT[], updated TIMESTAMP[])
            RETURNS BIGINT {owner} AS $$
            DECLARE moved BIGINT;
            BEGIN
              INSERT INTO archived_prediction ({MOVED_COLUMNS})
              SELECT p.observation_id, archive, p.model_version, p.created_at, p.proba, p.true_class,
                     p.feature_bins, p.challenger_proba, p.challenger_version
              FROM {table} AS p JOIN unnest(ids, updated) AS f(id, updated_at)
                ON p.observation_id = f.id AND p.updated_at = f.updated_at
              ON CONFLICT (observation_id) DO NOTHING;
              DELETE FROM {table} AS p
              USING archived_prediction AS a, unnest(ids, updated) AS f(id, updated_at)
              WHERE a.observation_id = p.observation_id AND a.archive_id = archive AND a.proba = p.proba
                AND p.observation_id = f.id AND p.updated_at = f.updated_at;
              GET DIAGNOSTICS moved = ROW_COUNT;
              RETURN moved;
            END $$""",
    ]


def install(database, table):
    add_challenger_columns(database)
    if dialect_of(database) is not SQLITE:
        for statement in postgresql_functions(table):
            database.execute_sql(statement)


def add_challenger_columns(database):
    present = {column.name for column in database.get_columns("archived_prediction")}
    for name, kind in CHALLENGER_COLUMNS.items():
        if name not in present:
            database.execute_sql(f"ALTER TABLE archived_prediction ADD COLUMN {name} {kind}")


def where(database, observation_id):
    param = database.param
    found = database.execute_sql(
        f"""SELECT a.file, a.archived_at FROM archived_prediction AS p
            JOIN archive AS a ON a.id = p.archive_id WHERE p.observation_id = {param}""",
        (observation_id,),
    ).fetchone()
    if found is None:
        return None
    file, when = found
    day = str(when)[:10]
    return (
        f"prediction {observation_id} was archived on {day} to {file}: its record is there, and its "
        "true class can no longer change here"
    )


def timestamp_text(value):
    """As the database stores it (SQLite hands back its text; PostgreSQL a datetime)."""
    return value if isinstance(value, str) or value is None else str(value)


def write(database, table, before, partial, batch_rows):
    """The rows made before `before` into the CSV `partial`, in id order; their ids."""
    param, last_id, ids = database.param, 0, []
    query = f"""SELECT {", ".join(COLUMNS)} FROM {table}
                WHERE created_at < {param} AND id > {param} ORDER BY id LIMIT {batch_rows}"""
    with partial.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        while rows := database.execute_sql(query, (before, last_id)).fetchall():
            for row in rows:
                writer.writerow([*row[:6], timestamp_text(row[6]), timestamp_text(row[7]), *row[8:]])
                ids.append(row[1])
            last_id = rows[-1][0]
    return ids


def read_back(path):
    """The file's (observation_id, updated_at) pairs, through pandas as Step 3 would read it."""
    frame = pd.read_csv(path, usecols=["observation_id", "updated_at"], dtype={"updated_at": str})
    return frame["observation_id"].tolist(), frame["updated_at"].tolist()


def begin(database, path, before, row_count):
    """The archive's id: recorded now, or earlier for this same file."""
    param = database.param
    found = database.execute_sql(f"SELECT id FROM archive WHERE file = {param}", (str(path),)).fetchone()
    if found:
        return found[0]
    if dialect_of(database) is SQLITE:
        now = datetime.now(UTC).replace(tzinfo=None)
        cursor = database.execute_sql(
            "INSERT INTO archive (file, before_time, archived_at, row_count) VALUES (?, ?, ?, ?)",
            (str(path), before, now, row_count),
        )
        return cursor.lastrowid
    return database.execute_sql(
        "SELECT archive_begin(%s, %s, %s)", (str(path), before, row_count)
    ).fetchone()[0]


def move(database, table, archive_id, ids, updated):
    """One batch out of the table, in one transaction; how many rows moved."""
    with database.atomic():
        if dialect_of(database) is not SQLITE:
            stamps = [datetime.fromisoformat(text) for text in updated]
            query = "SELECT archive_move(%s, %s::bigint[], %s::timestamp[])"
            return database.execute_sql(query, (archive_id, list(ids), stamps)).fetchone()[0]
        pairs = ", ".join(["(?, ?)"] * len(ids))
        values = [value for pair in zip(ids, updated, strict=True) for value in pair]
        database.execute_sql(
            f"""WITH f(id, updated_at) AS (VALUES {pairs})
                INSERT INTO archived_prediction ({MOVED_COLUMNS})
                SELECT p.observation_id, ?, p.model_version, p.created_at, p.proba, p.true_class,
                       p.feature_bins, p.challenger_proba, p.challenger_version
                FROM {table} AS p JOIN f ON p.observation_id = f.id AND p.updated_at = f.updated_at WHERE true
                ON CONFLICT (observation_id) DO NOTHING""",
            (*values, archive_id),
        )
        return database.execute_sql(
            f"""WITH f(id, updated_at) AS (VALUES {pairs})
                DELETE FROM {table} WHERE id IN (
                  SELECT p.id FROM {table} AS p
                  JOIN f ON p.observation_id = f.id AND p.updated_at = f.updated_at
                  JOIN archived_prediction AS a ON a.observation_id = p.observation_id
                   AND a.archive_id = ? AND a.proba = p.proba)""",
            (*values, archive_id),
        ).rowcount


def archive(database, table, before, path, batch_rows=5000):
    path = Path(path)
    written = None
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        selected = write(database, table, before, partial, batch_rows)
        ids, _ = read_back(partial)
        if ids != selected:
            raise RuntimeError(
                f"{partial} does not hold the {len(selected):,} rows selected; nothing was deleted"
            )
        partial.rename(path)
        written = len(selected)
    ids, updated = read_back(path)
    archive_id = begin(database, path, before, len(ids))
    moved = sum(
        move(
            database, table, archive_id, ids[start : start + batch_rows], updated[start : start + batch_rows]
        )
        for start in range(0, len(ids), batch_rows)
    )
    param = database.param
    (archived,) = database.execute_sql(
        f"SELECT COUNT(*) FROM archived_prediction WHERE archive_id = {param}", (archive_id,)
    ).fetchone()
    wrote = (
        f"wrote {written:,} predictions made before {before} to {path}"
        if written is not None
        else (f"{path} was there already ({len(ids):,} predictions): going on where the archive stopped")
    )
    changed = len(ids) - archived
    stayed = f"; {changed:,} changed since the file was written and stay in the table" if changed else ""
    return f"{wrote}; moved {moved:,} out of the table now, {archived:,} of the file's in all{stayed}"
