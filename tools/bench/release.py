"""What upgrading and storing predictions costs, for `make bench` (tools/bench/run.py calls it).

1. The release phase, on PostgreSQL: a database holding the tutorial's own table with --release-rows
   predictions (half of them labelled), as a student's database from before this service would.
   A web process started on it as on a platform (DYNO set) before the release: seconds until it
   answers, and what /ready says. The release command: seconds to upgrade. A web process started
   after it: seconds from start to its first 200 on POST /predict.
2. Bytes per prediction, on both backends: --storage-rows predictions as the service stores them
   (the README's passenger with its age varied, half labelled, over 30 days, with its feature
   bins), made in the database so that the triggers keep the running totals; the database's size
   minus the size of an empty one made by the service, per row: the table, its indexes and the
   running totals together.
3. Archiving, on PostgreSQL: the archive command run on that database's predictions (all of them,
   made before tomorrow): seconds, the CSV file's size, and the bytes the predictions table and its
   indexes give back (after VACUUM FULL) against those archived_prediction takes.

    python -m tools.bench.release [--release-rows 1000000] [--storage-rows 1000000]
"""

import argparse
import json
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from service.migrations import RELEASE_COMMAND
from service.monitoring import profile
from tools.servers import EXAMPLE_DIR, EXAMPLE_OBSERVATION, REPO, LiveServer, PostgresServer, postgres_bindir

OBSERVATION_SQL = (
    '\'{"Pclass":3,"Sex":"male","Age":\' || (i % 80) || \'.0,"SibSp":1,"Parch":0,'
    '"Fare":7.25,"Cabin":null,"Embarked":"S"}\''
)


def tutorial_database(postgres, rows):
    url = postgres.create_database("release")
    postgres.sql(
        "CREATE TABLE prediction (id SERIAL PRIMARY KEY, observation_id INTEGER UNIQUE NOT NULL, "
        "observation TEXT NOT NULL, proba REAL NOT NULL, true_class INTEGER)",
        database="release",
    )
    body = "'{\"id\": ' || i || ', \"observation\": ' || " + OBSERVATION_SQL + " || '}'"
    postgres.sql(
        "INSERT INTO prediction (observation_id, observation, proba, true_class) "
        f"SELECT i, {body}, random(), CASE WHEN i % 2 = 0 THEN (random() < 0.4)::int END "
        f"FROM generate_series(1, {rows}) AS i",
        database="release",
    )
    return url


def run_release(url):
    started = time.perf_counter()
    command = [sys.executable, "-m", *shlex.split(RELEASE_COMMAND)]
    # As a platform's release phase runs it: DYNO is set there too.
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": url,
        "ARTIFACTS_DIR": str(EXAMPLE_DIR),
        "DYNO": "release.1",
    }
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    said = [line for line in (result.stderr + result.stdout).splitlines() if "schema" in line]
    return time.perf_counter() - started, said[-1] if said else ""


def seconds_to_first_200(url):
    started = time.perf_counter()
    with LiveServer(url, env={"DYNO": "web.1"}) as server:
        while not server.post("/predict", {"id": 10**9, "observation": EXAMPLE_OBSERVATION}).ok:
            time.sleep(0.1)
        return time.perf_counter() - started


def release_phase(postgres, rows):
    url = tutorial_database(postgres, rows)
    started = time.perf_counter()
    with LiveServer(url, env={"DYNO": "web.1"}) as server:
        up = time.perf_counter() - started
        before = requests.get(f"{server.base}/ready", timeout=30)
    seconds, said = run_release(url)
    return {
        "rows": rows,
        "web_up_before_release_s": up,
        "ready_before_release": f"{before.status_code} {before.json().get('error', '')[:80]}...",
        "release_s": seconds,
        "release_said": said,
        "first_200_after_s": seconds_to_first_200(url),
    }


def feature_bins():
    """The example passenger's bin codes, as /predict stores them (every row the same length)."""
    document = json.loads((EXAMPLE_DIR / profile.FILE_NAME).read_text())
    return profile.Profile(document).codes([EXAMPLE_OBSERVATION])[0]


def fill_as_stored(execute, rows, postgres, challenger=False):
    """`rows` predictions as the service stores them, made in the database (with a challenger's
    answer and version beside each when `challenger`)."""
    if postgres:
        created = "now() at time zone 'utc' - make_interval(mins => (i % 43200)::int)"
        label = "CASE WHEN i % 2 = 0 THEN (random() < 0.4)::int END"
        series = f"generate_series(1, {rows}) AS i"
    else:
        created = "datetime('now', '-' || (i % 43200) || ' minutes')"
        label = "CASE WHEN i % 2 = 0 THEN (abs(random()) % 10 < 4) END"
        count = f"SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}"
        series = f"(WITH RECURSIVE n(i) AS ({count}) SELECT i FROM n)"
    now = "now() at time zone 'utc'" if postgres else "datetime('now')"
    random_proba = "random()" if postgres else "(abs(random()) % 1000000) / 1e6"
    shadow_columns, shadow_values = "", ""
    if challenger:
        shadow_columns, shadow_values = (
            ", challenger_proba, challenger_version",
            f", {random_proba}, 'c861abd0a3bf'",
        )
    execute(
        "INSERT INTO prediction (observation_id, observation, proba, true_class, model_version, "
        f"created_at, updated_at, feature_bins{shadow_columns}) SELECT i, {OBSERVATION_SQL}, {random_proba}, "
        f"{label}, 'eda76fe686f2', {created}, {now}, '{feature_bins()}'{shadow_values} FROM {series}"
    )


def bytes_per_prediction(postgres, scratch, rows):
    """{backend: bytes per prediction}, the table, its indexes and the running totals together;
    and the same with a challenger's answer beside each ("... with a challenger")."""
    found = {}
    path = Path(scratch) / "storage.db"
    with LiveServer(f"sqlite:///{path}", workers=1):  # the service makes its tables
        pass
    url = postgres.create_database("storage")  # archive_cost() archives its rows
    with LiveServer(url, workers=1):
        pass
    shutil.copy(path, path.with_name("storage_challenger.db"))  # empty copies, for the challenger's
    postgres.sql("CREATE DATABASE storage_challenger TEMPLATE storage")
    for challenger, suffix in ((False, ""), (True, " with a challenger")):
        name = "storage_challenger" if challenger else "storage"
        sqlite_path = path.with_name(f"{name}.db")
        empty = sqlite_size(sqlite_path)
        with sqlite3.connect(sqlite_path) as conn:
            fill_as_stored(conn.execute, rows, postgres=False, challenger=challenger)
        found["sqlite" + suffix] = (sqlite_size(sqlite_path) - empty) / rows
        empty = database_size(postgres, name)
        fill_as_stored(lambda sql, name=name: postgres.sql(sql, database=name), rows, True, challenger)
        postgres.sql("VACUUM ANALYZE", database=name)
        found["postgresql" + suffix] = (database_size(postgres, name) - empty) / rows
    return found


def archive_cost(postgres, scratch):
    """Archiving every prediction of the storage database, as a user would, by the command."""
    size = "SELECT pg_total_relation_size('prediction'), pg_total_relation_size('archived_prediction')"
    [(table_before, archived_before)] = postgres.sql(size, database="storage")
    [(rows,)] = postgres.sql("SELECT COUNT(*) FROM prediction", database="storage")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    path = Path(scratch) / "archive.csv"
    command = [sys.executable, "-m", "flask", "--app", "app", "archive-predictions"]
    url = postgres.url("storage")
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "ARTIFACTS_DIR": str(EXAMPLE_DIR)}
    started = time.perf_counter()
    subprocess.run([*command, "--before", tomorrow, "--to", str(path)], cwd=REPO, env=env, check=True)
    seconds = time.perf_counter() - started
    postgres.sql("VACUUM FULL prediction", database="storage")
    [(table_after, archived_after)] = postgres.sql(size, database="storage")
    return {
        "rows": rows,
        "seconds": seconds,
        "file_bytes": path.stat().st_size,
        "table_bytes_before": table_before,
        "table_bytes_after": table_after,
        "archived_bytes_added": archived_after - archived_before,
    }


def sqlite_size(path):
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def database_size(postgres, name="storage"):
    [(size,)] = postgres.sql(f"SELECT pg_database_size('{name}')", database=name)
    return size


def add_arguments(parser):
    parser.add_argument("--release-rows", type=int, default=1_000_000, help="rows of the tutorial's table")
    parser.add_argument("--storage-rows", type=int, default=1_000_000, help="rows stored to measure bytes")


def measure(postgres, scratch, args):
    """(the release phase, bytes per prediction by backend, the archive's cost)"""
    release = release_phase(postgres, args.release_rows)
    storage = bytes_per_prediction(postgres, scratch, args.storage_rows)
    return release, storage, archive_cost(postgres, scratch)


def print_tables(release, storage, archived):
    print(f"\nThe release phase on PostgreSQL, the tutorial's table of {release['rows']:,} rows:")
    before = release["web_up_before_release_s"]
    print(f"- a web process started before the release answered after {before:.1f} s;")
    print(f"  /ready: {release['ready_before_release']}")
    print(f"- the release command took {release['release_s']:.1f} s: {release['release_said']}")
    print(f"- a web process started after it: {release['first_200_after_s']:.1f} s to its first 200")
    print("\n| backend | bytes per prediction (table, indexes, running totals) | predictions in 1 GB |")
    print("|---|---:|---:|")
    for backend, size in storage.items():
        print(f"| {backend} | {size:,.0f} | {1e9 / size:,.0f} |")
    mb = 1e6
    print(f"\nArchiving {archived['rows']:,} predictions on PostgreSQL: {archived['seconds']:.1f} s;")
    print(f"- the CSV file: {archived['file_bytes'] / mb:,.1f} MB;")
    before, after = archived["table_bytes_before"] / mb, archived["table_bytes_after"] / mb
    print(f"- the predictions table and its indexes: {before:,.1f} MB before, {after:,.1f} MB after")
    print("  VACUUM FULL;")
    print(f"- archived_prediction grew by {archived['archived_bytes_added'] / mb:,.1f} MB.")


def targets(release):
    return {
        "PostgreSQL: a web process started after the release answers its first 200 within 10 s": (
            release["first_200_after_s"] < 10
        )
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    postgres = PostgresServer(postgres_bindir(), fsync=True)
    scratch = tempfile.mkdtemp(prefix="bench-")
    try:
        release, storage, archived = measure(postgres, scratch, args)
    finally:
        postgres.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    print_tables(release, storage, archived)
    print(json.dumps(targets(release)))


if __name__ == "__main__":
    main()
