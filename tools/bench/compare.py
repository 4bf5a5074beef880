"""Before and after, in one sitting: POST /predict's requests/s from another checkout of this
repository and from this one, taking turns, each run on a fresh database, so that a change's cost
on the hot path is measured against the same machine in the same minutes.

    git worktree add /tmp/before <commit>
    python -m tools.bench.compare /tmp/before [--connections 16] [--seconds 10] [--repeat 5] [--postgresql]

Both run as deployed (gunicorn.conf.py, two workers) with this checkout's example model; each
uses its own code. Prints the median requests/s of each and the ratio, after / before.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from tools.bench.run import run_wrk
from tools.servers import REPO, LiveServer, PostgresServer, postgres_bindir


def one_run(directory, url, args, first_id):
    with LiveServer(url, workers=2, cwd=directory) as server:
        server.wait_until_every_worker_listens()
        return run_wrk(server, args.connections, args.seconds, first_id)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="a checkout of the earlier commit")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgresql", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    postgres = PostgresServer(postgres_bindir(), fsync=True) if args.postgresql else None
    scratch = Path(tempfile.mkdtemp(prefix="compare-"))
    found = {"before": [], "after": []}
    try:
        for run in range(args.repeat):
            for name, directory in (("before", args.before), ("after", REPO)):
                database = f"{name}_{run}"
                url = postgres.create_database(database) if postgres else f"sqlite:///{scratch}/{database}.db"
                result = one_run(directory, url, args, first_id=1)
                assert result["errors"] == 0, result
                found[name].append(result["rps"])
                print(f"run {run + 1} {name}: {result['rps']:.0f} requests/s, p50 {result['p50_ms']:.1f} ms")
    finally:
        if postgres:
            postgres.destroy()
    before, after = (statistics.median(found[name]) for name in ("before", "after"))
    backend = "PostgreSQL" if postgres else "SQLite"
    print(f"\n| {backend}, {args.connections} connections | before | after | after / before |")
    print("|---|---:|---:|---:|")
    figures = f"{before:.0f} | {after:.0f} | {after / before:.3f}"
    print(f"| POST /predict requests/s, median of {args.repeat} | {figures} |")


if __name__ == "__main__":
    main()
