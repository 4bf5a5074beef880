"""The load benchmark behind `make bench`.

For SQLite and then PostgreSQL it starts, each on a fresh database, the service exactly as
deployed (gunicorn.conf.py), the same with the model called through scikit-learn only
(FAST_PATH=0: what the fast path saves), the same with a challenger in shadow (what a challenger
costs) and the tutorial's per-request baseline
(tools/bench/baseline_app.py). wrk, a separate process, drives POST /predict with unique ids at
1, 4, 16, 64 and 256 connections, and GET /health on the service (the floor under any route),
taking the servers in turn so all are measured in the same minutes. Each figure is the median of
--repeat runs, and also a ratio to the baseline; CPU per request is the servers' processes' CPU
time over the run, divided by its requests. After every run the rows added to the database
must equal the 200s received. Then the service's memory, the time
from starting it to its first 200, what monitoring costs (tools/bench/monitoring_cost.py), what
upgrading and storing cost (tools/bench/release.py), and the
targets.

    python -m tools.bench.run [--seconds 10] [--repeat 5] [--workers 2] [--connections 1 16]
                              [monitoring_cost.py's and release.py's options]
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from service.model import CHALLENGER_FOLDER
from tools.bench import monitoring_cost, release
from tools.servers import EXAMPLE_DIR, EXAMPLE_OBSERVATION, LiveServer, PostgresServer, postgres_bindir

BENCH = Path(__file__).resolve().parent

CONNECTIONS = [1, 4, 16, 64, 256]
SERVICE = ["gunicorn", "--config", "gunicorn.conf.py", "app:app"]
# The tutorial's deploy: gunicorn's default sync workers, as many as the service has.
BASELINE = ["gunicorn", "--bind", "0.0.0.0:{port}", "--pythonpath", "tools/bench", "baseline_app:app"]
SERVERS = {
    "baseline": (BASELINE, {}),
    "service": (SERVICE, {}),
    "scikit-learn": (SERVICE, {"FAST_PATH": "0"}),  # the service without its fast path
    "challenger": (SERVICE, {}),  # the service with a challenger in shadow (with_challenger)
}
# Each kind measured: (the server, wrk's script). "health" is GET /health on the service.
KINDS = {
    "baseline": ("baseline", "predict.lua"),
    "service": ("service", "predict.lua"),
    "scikit-learn": ("scikit-learn", "predict.lua"),
    "challenger": ("challenger", "predict.lua"),
    "health": ("service", "health.lua"),
}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(server):
    """User and system CPU time of gunicorn's master and workers so far, from /proc."""
    master = server.process.pid
    pids = [master, *map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split())]
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def run_wrk(server, connections, seconds, first_id, script="predict.lua"):
    command = [
        "wrk", "--latency", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
        "-s", str(BENCH / script), server.base, "--", str(first_id),
    ]  # fmt: skip
    cpu_before = cpu_seconds(server)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(server) - cpu_before
    result = json.loads(output.strip().splitlines()[-1])
    return {
        "rps": result["requests"] / result["seconds"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["non_2xx"] + result["socket_errors"],
        "ok": result["requests"] - result["non_2xx"],
        "cpu_ms": 1000 * cpu / max(result["requests"], 1),
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


def with_challenger(scratch):
    """The example's files with a copy of themselves as the challenger: what `make retrain` makes
    (a clone of the running pipeline) costs as much to call as the running model."""
    artifacts = scratch / "with-challenger"
    if not artifacts.exists():
        shutil.copytree(EXAMPLE_DIR, artifacts)
        shutil.copytree(EXAMPLE_DIR, artifacts / CHALLENGER_FOLDER)
    return artifacts


def bench_backend(backend, postgres, scratch, args):
    """Medians per (kind, connections) for one backend; the memory of the service with and
    without its fast path, {server: (workers, RSS, PSS)}; and the seconds the service took from
    its start to its first 200 (the first of the starts timed)."""
    urls, servers = {}, {}
    try:
        for name, (command, env) in SERVERS.items():
            if name == "challenger":
                env = {**env, "ARTIFACTS_DIR": str(with_challenger(scratch))}
            if backend == "sqlite":
                urls[name] = f"sqlite:///{scratch}/{name}.db"
            else:
                urls[name] = postgres.create_database(f"bench_{name.replace('-', '_')}")
            started = time.perf_counter()
            servers[name] = LiveServer(urls[name], workers=args.workers, command=command, env=env)
            if name == "service":
                first_start = until_first_200(servers[name], started, attempt=0)
            if command is SERVICE:
                servers[name].wait_until_every_worker_listens()  # else one takes every connection
        first_id = 0
        results = []
        for connections in args.connections:
            runs = {kind: [] for kind in KINDS}
            for _ in range(args.repeat):
                for kind, (server, script) in KINDS.items():  # in turn, so all see the same machine
                    first_id += 10**7  # ids stay in 32 bits: the baseline's IntegerField
                    before = count_rows(urls[server], postgres)
                    run = run_wrk(servers[server], connections, args.seconds, first_id, script)
                    run["rows"] = rows_once_settled(urls[server], postgres) - before
                    if kind == "health":
                        run["rows"] = run["ok"]  # /health writes nothing: nothing to account for
                    runs[kind].append(run)
            for kind in KINDS:
                results.append(summarize(backend, kind, connections, runs[kind]))
        memory = {name: memory_mb(servers[name]) for name in ("service", "scikit-learn", "challenger")}
        return results, memory, first_start
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
        "cpu_ms": statistics.median(run["cpu_ms"] for run in runs),
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


HEADER = (
    "| backend | server | conns | req/s | p50 ms | p99 ms | CPU ms/req | errors | 200s | rows "
    "| x req/s | x p50 | / health req/s | / health p50 |"
)


def ratio(value, reference, spec):
    """value / reference, or "n/a" when the reference run answered nothing (a very short run of
    a server still warming up, on a machine busy with other work)."""
    return format(value / reference, spec) if reference else "n/a"


def print_table(rows, memory, args):
    print(
        f"\nmedians of {args.repeat} runs of {args.seconds}s; {args.workers} workers; wrk on this machine\n"
    )
    print(HEADER)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        base = find(rows, r["backend"], "baseline", r["connections"])
        health = find(rows, r["backend"], "health", r["connections"])
        print(
            f"| {r['backend']} | {r['kind']} | {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['cpu_ms']:.2f} | {r['errors']} | {r['ok']:,} | {r['rows']:,} "
            f"| {ratio(r['rps'], base['rps'], '.2f')}x | {ratio(r['p50_ms'], base['p50_ms'], '.2f')}x "
            f"| {ratio(r['rps'], health['rps'], '.2f')} | {ratio(r['p50_ms'], health['p50_ms'], '.1f')}x |"
        )
    print()
    for (backend, name), (workers, rss, pss) in memory.items():
        print(f"{name} on {backend}, master + {workers} workers: RSS {rss:.0f} MB, PSS {pss:.0f} MB")


def check_targets(rows, memory, more_targets):
    def row(backend, kind, connections):
        return find(rows, backend, kind, connections)

    measured = {r["connections"] for r in rows}
    targets = {}
    for backend, name in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        if 16 in measured:
            service, health = row(backend, "service", 16), row(backend, "health", 16)
            targets |= {
                f"{name}, 16 connections: /predict at least 60% of /health's requests/s": service["rps"]
                >= 0.6 * health["rps"],
                f"{name}, 16 connections: at least 10x the baseline's requests/s": service["rps"]
                >= 10 * row(backend, "baseline", 16)["rps"],
                f"{name}, 16 connections: p99 under 50 ms": service["p99_ms"] < 50,
                f"{name}, 16 connections: with a challenger, at least 80% of the requests/s without": row(
                    backend, "challenger", 16
                )["rps"]
                >= 0.8 * service["rps"],
            }
        if 1 in measured:
            targets[f"{name}, 1 connection: p50 at most 5x /health's"] = (
                row(backend, "service", 1)["p50_ms"] <= 5 * row(backend, "health", 1)["p50_ms"]
            )
            targets[f"{name}, 1 connection: p50 with a challenger within 1 ms of without"] = (
                row(backend, "challenger", 1)["p50_ms"] <= row(backend, "service", 1)["p50_ms"] + 1
            )
    targets |= {
        "the service: zero errors": all(r["errors"] == 0 for r in rows if r["kind"] != "baseline"),
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


def until_first_200(server, started, attempt):
    """Seconds from `started` (the server's launch) to its first 200 on POST /predict (the model
    loaded, the tables checked, a worker up), polling every 0.1 s."""
    while not server.post("/predict", {"id": 2**40 + attempt, "observation": EXAMPLE_OBSERVATION}).ok:
        time.sleep(0.1)
    return time.perf_counter() - started


def seconds_to_first_200(database_url, workers, first_start, starts=3):
    """Median seconds from starting the service on an empty database to its first 200: the
    benchmark's own service server was the first start, the others are made here."""
    timings = [first_start]
    for attempt in range(1, starts):
        started = time.perf_counter()
        with LiveServer(database_url, workers=workers) as server:
            timings.append(until_first_200(server, started, attempt))
    return statistics.median(timings)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is reported")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for each server")
    parser.add_argument("--connections", type=int, nargs="+", default=CONNECTIONS, help="wrk's connections")
    parser.add_argument(
        "--starts", type=int, default=3, help="starts timed to the first 200 (at least 1); the median"
    )
    monitoring_cost.add_arguments(parser)
    release.add_arguments(parser)
    args = parser.parse_args()
    if args.starts < 1:
        parser.error("--starts: at least 1 (the service's own server is the first start timed)")
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
            results, found, first_start = bench_backend(backend, postgres, scratch, args)
            memory |= {(backend, name): figures for name, figures in found.items()}
            rows += results
            url = (
                f"sqlite:///{scratch}/start.db" if backend == "sqlite" else postgres.create_database("start")
            )
            first_200[backend] = seconds_to_first_200(url, args.workers, first_start, args.starts)
        timings, floods = monitoring_cost.measure(postgres, scratch, args)
        upgraded, storage, archived = release.measure(postgres, scratch, args)
    finally:
        postgres.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(rows, memory, args)
    for backend, seconds in first_200.items():
        median = f"median of {args.starts} starts"
        print(f"{backend}: {seconds:.2f} s from starting gunicorn to the first 200 ({median})")
    monitoring_cost.print_tables(timings, floods, monitoring_cost.asked(args))
    release.print_tables(upgraded, storage, archived)
    missed = check_targets(rows, memory, monitoring_cost.targets(timings, floods) | release.targets(upgraded))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
