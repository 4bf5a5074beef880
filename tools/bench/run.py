"""The load benchmark behind `make bench`.

For SQLite and then PostgreSQL it starts, each on a fresh database, the service exactly as
deployed (gunicorn.conf.py) and the tutorial's per-request baseline (tools/bench/baseline_app.py).
wrk, a separate process, drives POST /predict with unique ids at 1, 4, 16, 64 and 256
connections, alternating between the two servers so both are measured in the same minutes.
Each figure is the median of --repeat runs, and also a ratio to the baseline. After every run
the rows added to the database must equal the 200s received. Then the service's memory, the time
from starting it to its first 200, what monitoring costs (tools/bench/monitoring_cost.py), what
upgrading and storing cost (tools/bench/release.py), and the
targets.

    python -m tools.bench.run [--seconds 10] [--repeat 5] [--workers 2] [monitoring_cost.py's options]
"""

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.bench import monitoring_cost, release
from tools.servers import EXAMPLE_OBSERVATION, LiveServer, PostgresServer, postgres_bindir

BENCH = Path(__file__).resolve().parent

CONNECTIONS = [1, 4, 16, 64, 256]
KINDS = ["baseline", "service"]
COMMANDS = {
    "service": ["gunicorn", "--config", "gunicorn.conf.py", "app:app"],
    # The tutorial's deploy: gunicorn's default sync workers, as many as the service has.
    "baseline": ["gunicorn", "--bind", "0.0.0.0:{port}", "--pythonpath", "tools/bench", "baseline_app:app"],
}


def run_wrk(server, connections, seconds, first_id):
    command = [
        "wrk", "--latency", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
        "-s", str(BENCH / "predict.lua"), server.base, "--", str(first_id),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return {
        "rps": result["requests"] / result["seconds"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["non_2xx"] + result["socket_errors"],
        "ok": result["requests"] - result["non_2xx"],
    }


def count_rows(database_url, postgres):
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return conn.execute("SELECT count(*) FROM prediction").fetchone()[0]
    return postgres.sql("SELECT count(*) FROM prediction", database=database_url.rsplit("/", 1)[1])[0][0]


def rows_once_settled(database_url, postgres, quiet_seconds=0.5):
    """The table's row count once it has stopped growing. When wrk stops, a server may still
    be working through requests queued in its listening socket (the baseline's sync workers,
    at 64 and 256 connections, for a second or more): measuring the other server meanwhile
    would give it a busier machine than its own run had."""
    count = count_rows(database_url, postgres)
    for _ in range(120):
        time.sleep(quiet_seconds)
        count, previous = count_rows(database_url, postgres), count
        if count == previous:
            break
    return count


def memory_mb(server):
    """(workers, RSS, PSS) of gunicorn's master plus its workers, from /proc."""
    master = server.process.pid
    workers = [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    rss = pss = 0
    for pid in [master, *workers]:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
        )
        rss += int(fields["Rss"].split()[0])
        pss += int(fields["Pss"].split()[0])
    return len(workers), rss / 1024, pss / 1024


def bench_backend(backend, postgres, scratch, args):
    """Medians per (kind, connections) for one backend, plus the service's memory."""
    urls, servers = {}, {}
    try:
        for kind in KINDS:
            if backend == "sqlite":
                urls[kind] = f"sqlite:///{scratch}/{kind}.db"
            else:
                urls[kind] = postgres.create_database(f"bench_{kind}")
            servers[kind] = LiveServer(urls[kind], workers=args.workers, command=COMMANDS[kind])
        servers["service"].wait_until_every_worker_listens()  # else one takes every connection
        first_id = 0
        results = []
        for connections in CONNECTIONS:
            runs = {kind: [] for kind in KINDS}
            for _ in range(args.repeat):
                for kind in KINDS:  # alternate, so both see the same machine
                    first_id += 10**7  # ids stay in 32 bits: the baseline's IntegerField
                    before = count_rows(urls[kind], postgres)
                    run = run_wrk(servers[kind], connections, args.seconds, first_id)
                    run["rows"] = rows_once_settled(urls[kind], postgres) - before
                    runs[kind].append(run)
            for kind in KINDS:
                results.append(summarize(backend, kind, connections, runs[kind]))
        return results, memory_mb(servers["service"])
    finally:
        for server in servers.values():
            server.stop()


def summarize(backend, kind, connections, runs):
    return {
        "backend": backend,
        "kind": kind,
        "connections": connections,
        "rps": statistics.median(run["rps"] for run in runs),
        "p50_ms": statistics.median(run["p50_ms"] for run in runs),
        "p99_ms": statistics.median(run["p99_ms"] for run in runs),
        "errors": sum(run["errors"] for run in runs),
        "ok": sum(run["ok"] for run in runs),
        "rows": sum(run["rows"] for run in runs),
        # wrk stops the clock with up to one request per connection in flight: those rows are
        # committed but their 200s are not counted, so rows may exceed the 200s by that much.
        "rows_match": all(run["ok"] <= run["rows"] <= run["ok"] + connections for run in runs),
    }


def find(rows, backend, kind, connections):
    return next(
        r for r in rows if (r["backend"], r["kind"], r["connections"]) == (backend, kind, connections)
    )


HEADER = "| backend | server | conns | req/s | p50 ms | p99 ms | errors | 200s | rows | x req/s | x p50 |"


def print_table(rows, memory, args):
    print(
        f"\nmedians of {args.repeat} runs of {args.seconds}s; {args.workers} workers; wrk on this machine\n"
    )
    print(HEADER)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        base = find(rows, r["backend"], "baseline", r["connections"])
        print(
            f"| {r['backend']} | {r['kind']} | {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['errors']} | {r['ok']:,} | {r['rows']:,} "
            f"| {r['rps'] / base['rps']:.2f}x | {r['p50_ms'] / base['p50_ms']:.2f}x |"
        )
    print()
    for backend, (workers, rss, pss) in memory.items():
        print(f"service on {backend}, master + {workers} workers: RSS {rss:.0f} MB, PSS {pss:.0f} MB")


def check_targets(rows, memory, more_targets):
    def row(backend, kind, connections):
        return find(rows, backend, kind, connections)

    targets = {
        "SQLite, 16 connections: at least 7x the baseline's requests/s": row("sqlite", "service", 16)["rps"]
        >= 7 * row("sqlite", "baseline", 16)["rps"],
        "SQLite, 16 connections: p99 under 50 ms": row("sqlite", "service", 16)["p99_ms"] < 50,
        "SQLite, 1 connection: p50 no worse than the baseline's": row("sqlite", "service", 1)["p50_ms"]
        <= row("sqlite", "baseline", 1)["p50_ms"],
        "PostgreSQL, 16 connections: at least 4x the baseline's requests/s": row("postgresql", "service", 16)[
            "rps"
        ]
        >= 4 * row("postgresql", "baseline", 16)["rps"],
        "the service: zero errors": all(r["errors"] == 0 for r in rows if r["kind"] == "service"),
        "every server: every 200 is a row in the database": all(r["rows_match"] for r in rows),
        "the service with two workers fits a 512 MB dyno (PSS)": all(
            pss < 512 for _, _, pss in memory.values()
        ),
        **more_targets,
    }
    print()
    for target, met in targets.items():
        print(f"{'met   ' if met else 'MISSED'} {target}")
    return [target for target, met in targets.items() if not met]


def seconds_to_first_200(database_url, workers, starts=3):
    """Median seconds from starting the service to its first 200 on POST /predict (the model
    loaded, the tables checked, a worker up), polling every 0.1 s."""
    timings = []
    for attempt in range(starts):
        started = time.perf_counter()
        with LiveServer(database_url, workers=workers) as server:
            while not server.post("/predict", {"id": 2**40 + attempt, "observation": EXAMPLE_OBSERVATION}).ok:
                time.sleep(0.1)
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is reported")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for both servers")
    parser.add_argument("--starts", type=int, default=3, help="starts timed to the first 200; the median")
    monitoring_cost.add_arguments(parser)
    release.add_arguments(parser)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: install Debian's wrk package (make bench does it when run as root)")
    bindir = postgres_bindir()
    if bindir is None:
        sys.exit("PostgreSQL's server binaries not found: run tools/ensure-postgres")

    postgres = PostgresServer(bindir, fsync=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    rows, memory, first_200 = [], {}, {}
    try:
        for backend in ("sqlite", "postgresql"):
            results, memory[backend] = bench_backend(backend, postgres, scratch, args)
            rows += results
            url = (
                f"sqlite:///{scratch}/start.db" if backend == "sqlite" else postgres.create_database("start")
            )
            first_200[backend] = seconds_to_first_200(url, args.workers, args.starts)
        timings, floods = monitoring_cost.measure(postgres, scratch, args)
        upgraded, storage, archived = release.measure(postgres, scratch, args)
    finally:
        postgres.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(rows, memory, args)
    for backend, seconds in first_200.items():
        median = f"median of {args.starts} starts"
        print(f"{backend}: {seconds:.2f} s from starting gunicorn to the first 200 ({median})")
    monitoring_cost.print_tables(timings, floods)
    release.print_tables(upgraded, storage, archived)
    missed = check_targets(rows, memory, monitoring_cost.targets(timings, floods) | release.targets(upgraded))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
