"""What monitoring costs, for `make bench` (tools/bench/run.py calls it; it also runs on its own).

1. GET /stats (whole history, ?hours=24, ?hours=168), /stats/series (30 days per day),
   GET /drift (whole history, ?hours=24, ?hours=168) and GET /compare (whole history,
   ?hours=24; on tables up to COMPARE_UP_TO rows) on tables of growing size, both backends:
   the rows are made in the database (probas uniform, outcomes drawn from them, created_at
   spread over the last 30 days, two model versions with the example's training profile, random
   feature bins, each scored by a challenger too: the proba moved by up to 0.1) and the
   triggers keep the totals as they would for real traffic (on PostgreSQL, then ANALYZE, as
   autovacuum would soon). One gunicorn worker reusing no answer; median of --calls calls (5), each
   (a) after a new prediction and its label (POST /predict, POST /update), as in a service
   that is being used: the periods that changed are read again, the others come from the
   worker's cache; (b) with nothing changed since the call before; (c) with no cache
   (STATS_CACHE_MB=0), as the first call after a start pays.
2. The flood: one well-behaved client calling POST /predict one request at a time (wrk, one
   connection), alone and then beside 12 connections calling /stats, /stats?hours=24 and
   /stats/series in turn, both for --flood-seconds, on the table of --flood-rows rows.

    python -m tools.bench.monitoring_cost [--sizes 10000 100000 1000000] [--postgresql-sizes 10000000]
"""

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from playhouse.db_url import connect

from service.monitoring import population
from tools.example import EXAMPLE_DIR
from tools.servers import EXAMPLE_OBSERVATION, LiveServer, PostgresServer, postgres_bindir

BENCH = Path(__file__).resolve().parent

QUERIES = {
    "/stats": "whole history",
    "/stats?hours=24": "last 24 hours",
    "/stats?hours=168": "last 7 days",
    "/stats/series?every=day&hours=720": "30 days, per day",
    "/drift": "whole history",
    "/drift?hours=24": "last 24 hours",
    "/drift?hours=168": "last 7 days",
    "/compare": "whole history",
    "/compare?hours=24": "last 24 hours",
}
COMPARE_UP_TO = 1_000_000  # /compare reads the rows themselves: timed on tables up to this size
VERSIONS = ("older", "newer")
# Each row's bins: one of the first four of each of the example's 8 features (every one has as many).
SQLITE_BINS = " || ".join(["substr('0123', abs(random()) % 4 + 1, 1)"] * 8)
POSTGRESQL_BINS = " || ".join(["substr('0123', floor(random() * 4)::int + 1, 1)"] * 8)
MINUTES_IN_30_DAYS = 43_200


def store_profiles(database_url):
    """The example's training profile for both versions the rows are made with, so that /drift
    compares them as it would a real model's."""
    database = connect(database_url)
    document = json.loads((EXAMPLE_DIR / "training_profile.json").read_text())
    for version in VERSIONS:
        population.store_profile(database, version, document)
    database.close()


def add_rows(database_url, postgres, first, last):
    """Labelled predictions first..last, made in the database itself (the triggers count them)."""
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(f"""
                WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last}),
                drawn AS MATERIALIZED (SELECT i, ((abs(random()) % 1000000) + 0.5) / 1e6 AS p,
                                              (abs(random()) % 1000000) / 1e6 AS u FROM n)
                INSERT INTO prediction (observation_id, observation, proba, true_class, model_version,
                                        created_at, updated_at, feature_bins, challenger_proba,
                                        challenger_version)
                SELECT i, '{{}}', p, u < p, CASE WHEN i % 3 = 0 THEN 'older' ELSE 'newer' END,
                       datetime('now', '-' || (i % {MINUTES_IN_30_DAYS}) || ' minutes'), datetime('now'),
                       {SQLITE_BINS}, min(max(p + ((abs(random()) % 1000) - 500) / 5e3, 0.001), 0.999),
                       'challenger'
                FROM drawn""")
        return
    postgres.sql(
        f"""INSERT INTO prediction (observation_id, observation, proba, true_class, model_version,
                                    created_at, updated_at, feature_bins, challenger_proba,
                                    challenger_version)
        SELECT i, '{{}}', p, (u < p)::int, CASE WHEN i % 3 = 0 THEN 'older' ELSE 'newer' END,
               now() at time zone 'utc' - make_interval(mins => (i % {MINUTES_IN_30_DAYS})::int),
               now() at time zone 'utc', {POSTGRESQL_BINS},
               least(greatest(p + (random() - 0.5) / 5, 0.001), 0.999), 'challenger'
        FROM (SELECT i, random() AS p, random() AS u FROM generate_series({first}, {last}) AS i) AS drawn""",
        database=database_url.rsplit("/", 1)[1],
    )
    # Autovacuum would analyze the grown tables within a minute; the benchmark doesn't wait for it.
    postgres.sql("ANALYZE", database=database_url.rsplit("/", 1)[1])


MODES = {
    "after_a_label": "after a new labelled prediction",
    "unchanged": "nothing changed since the call before",
    "no_cache": "no cache (STATS_CACHE_MB=0)",
}
LABELLED_IDS = iter(range(2 * 10**9, 3 * 10**9))  # ids of the predictions labelled between calls


def median_ms(server, path, before_each=lambda: None, repeat=5):
    """Median milliseconds of `path`, as a client measures it, after one call to warm up, each
    call after `before_each()`. The server reuses no answer (STATS_MAX_AGE_SECONDS=0) and the
    calls are spaced out so that the pacing never delays them: this is what an answer costs."""
    requests.get(f"{server.base}{path}", timeout=600).raise_for_status()
    timings = []
    for _ in range(repeat):
        time.sleep(0.2)
        before_each()
        started = time.perf_counter()
        requests.get(f"{server.base}{path}", timeout=600).raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def label_a_new_prediction(server):
    observation_id = next(LABELLED_IDS)
    body = {"id": observation_id, "observation": EXAMPLE_OBSERVATION}
    requests.post(f"{server.base}/predict", json=body, timeout=60).raise_for_status()
    requests.post(
        f"{server.base}/update", json={"id": observation_id, "true_class": 1}, timeout=60
    ).raise_for_status()


@dataclass(frozen=True)
class Asked:
    """How the queries are timed: the calls of each (the median is reported), and the MODES."""

    calls: int = 5
    modes: tuple = tuple(MODES)


def asked(args):
    return Asked(args.calls, tuple(args.modes))


def timings_of(url, size, how):
    """{mode: {path: median ms of how.calls calls}} on a table of `size` labelled rows and a few more."""
    found = {}
    for mode in how.modes:
        env = {"STATS_MAX_AGE_SECONDS": "0"} | ({"STATS_CACHE_MB": "0"} if mode == "no_cache" else {})
        with LiveServer(url, workers=1, env=env) as server:
            assert requests.get(f"{server.base}/stats", timeout=600).json()["overall"]["labelled"] >= size
            before = (lambda: label_a_new_prediction(server)) if mode == "after_a_label" else (lambda: None)
            paths = [path for path in QUERIES if size <= COMPARE_UP_TO or not path.startswith("/compare")]
            found[mode] = {path: median_ms(server, path, before, how.calls) for path in paths}
    return found


def run_wrk(server, script, connections, seconds, *args):
    command = [
        "wrk", "--latency", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
        "-s", str(BENCH / script), server.base, "--", *map(str, args),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def wrk_result(process):
    output, _ = process.communicate()
    return json.loads(output.strip().splitlines()[-1])


def flood(server, seconds, first_id):
    """The /predict client's p50 and errors alone, then beside 12 /stats connections."""
    alone = wrk_result(run_wrk(server, "predict.lua", 1, seconds, first_id))
    stats = run_wrk(server, "stats.lua", 12, seconds)
    beside = wrk_result(run_wrk(server, "predict.lua", 1, seconds, first_id + 10**7))
    flooding = wrk_result(stats)
    return {
        "alone_p50_ms": alone["p50_ms"],
        "beside_p50_ms": beside["p50_ms"],
        "predict_errors": alone["non_2xx"]
        + alone["socket_errors"]
        + beside["non_2xx"]
        + beside["socket_errors"],
        "predictions": alone["requests"] + beside["requests"],
        "stats_calls": flooding["requests"],
        "stats_errors": flooding["non_2xx"] + flooding["socket_errors"],
    }


def measure_backend(backend, postgres, scratch, sizes, flood_rows, flood_seconds, how):
    url = (
        f"sqlite:///{scratch}/monitoring.db"
        if backend == "sqlite"
        else postgres.create_database("bench_stats")
    )
    LiveServer(url, workers=1).stop()  # the service creates its tables and triggers
    store_profiles(url)
    timings, floods, made = [], {}, 0
    for size in sorted(set(sizes) | ({flood_rows} if flood_seconds else set())):
        started = time.perf_counter()
        add_rows(url, postgres, made + 1, size)
        fill_seconds, made = time.perf_counter() - started, size
        if size in sizes:
            row = {"backend": backend, "rows": size, "fill_seconds": fill_seconds}
            timings.append(row | timings_of(url, size, how))
        if size == flood_rows and flood_seconds:
            with LiveServer(url, workers=2) as server:
                server.wait_until_every_worker_listens()
                floods[backend] = flood(server, flood_seconds, first_id=10**9) | {"rows": size}
    return timings, floods


def print_tables(timings, floods, how):
    for mode in how.modes:
        what = MODES[mode]
        print(f"\nGET /stats, /drift and /compare, one worker, median of {how.calls} calls (ms), {what}:\n")
        print("| backend | labelled rows | " + " | ".join(f"`{path}`" for path in QUERIES) + " |")
        print("|---|---:|" + "---:|" * len(QUERIES))
        for row in timings:
            cells = " | ".join(
                f"{row[mode][path]:.1f}" if path in row[mode] else "not timed" for path in QUERIES
            )
            print(f"| {row['backend']} | {row['rows']:,} | {cells} |")
    if floods:
        print("\n/predict, one connection, alone and beside 12 connections calling /stats:\n")
        columns = ["backend", "labelled rows", "p50 alone ms", "p50 beside ms", "ratio", "/predict errors"]
        print("| " + " | ".join([*columns, "/stats calls", "/stats errors"]) + " |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for backend, found in floods.items():
            cells = [
                backend,
                f"{found['rows']:,}",
                f"{found['alone_p50_ms']:.2f}",
                f"{found['beside_p50_ms']:.2f}",
                f"{found['beside_p50_ms'] / found['alone_p50_ms']:.2f}x",
                str(found["predict_errors"]),
                f"{found['stats_calls']:,}",
                str(found["stats_errors"]),
            ]
            print("| " + " | ".join(cells) + " |")


def targets(timings, floods):
    """{target: met} for what issues #14 and #32 ask, judged after a new label (when timed)."""
    found = {}
    for row in (row for row in timings if "after_a_label" in row):
        if row["rows"] in (1_000_000, 10_000_000):
            limit = 100 if row["rows"] == 1_000_000 else 1000
            after = row["after_a_label"]
            worst = max(after[path] for path in QUERIES if not path.startswith("/compare"))
            target = f"{row['backend']}, {row['rows']:,} rows: every /stats and /drift query under {limit} ms"
            found[f"{target}, after a new label"] = worst < limit
        if row["rows"] == 1_000_000:  # issue #32: the comparison costs what /stats does
            worst = max(row["after_a_label"][path] for path in QUERIES if path.startswith("/compare"))
            target = f"{row['backend']}, 1,000,000 labelled pairs: /compare under 100 ms, after a new label"
            found[target] = worst < 100
    for backend, flooded in floods.items():
        found[f"{backend}, 12 /stats callers: /predict p50 at most 2x alone, no errors"] = (
            flooded["beside_p50_ms"] <= 2 * flooded["alone_p50_ms"] and flooded["predict_errors"] == 0
        )
    return found


def measure(postgres, scratch, args):
    timings, floods = [], {}
    for backend in ("sqlite", "postgresql"):
        sizes = args.sizes + (args.postgresql_sizes if backend == "postgresql" else [])
        found_timings, found_floods = measure_backend(
            backend, postgres, scratch, sizes, args.flood_rows, args.flood_seconds, asked(args)
        )
        timings += found_timings
        floods |= found_floods
    return timings, floods


def add_arguments(parser):
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--postgresql-sizes", type=int, nargs="*", default=[10_000_000])
    parser.add_argument("--flood-rows", type=int, default=1_000_000, help="table size for the flood")
    parser.add_argument("--flood-seconds", type=int, default=60, help="0: no flood")
    parser.add_argument("--calls", type=int, default=5, help="timed calls of each query; the median")
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="what comes between the calls"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    postgres = PostgresServer(postgres_bindir(), fsync=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        timings, floods = measure(postgres, scratch, args)
    finally:
        postgres.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    print_tables(timings, floods, asked(args))
    for target, met in targets(timings, floods).items():
        print(f"{'met   ' if met else 'MISSED'} {target}")


if __name__ == "__main__":
    main()
