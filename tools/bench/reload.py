"""What a reload (SIGHUP to gunicorn's master) costs the clients, with and without reuse_port.

For each setting it starts the service as deployed on a fresh SQLite database, keeps --clients
keep-alive clients sending POST /predict, sends --reloads SIGHUPs a few seconds apart, and
counts the requests that failed at the connection (reset, closed) beside the answers by status.
Every 200 must be in the table afterwards. When it may (root), it also measures reuse_port with
Linux's net.ipv4.tcp_migrate_req=1, and puts the sysctl back as it found it.

    python -m tools.bench.reload [--clients 16] [--reloads 5] [--repeat 3]
"""

import argparse
import os
import signal
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from tools.servers import LiveServer, PredictLoad

MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


class MigrateReq:
    """net.ipv4.tcp_migrate_req set to `value` for the duration (None: left alone)."""

    def __init__(self, value):
        self.value, self.saved = value, None

    def __enter__(self):
        if self.value is not None:
            self.saved = MIGRATE_REQ.read_text()
            MIGRATE_REQ.write_text(str(self.value))

    def __exit__(self, *exc):
        if self.saved is not None:
            MIGRATE_REQ.write_text(self.saved)


def settings():
    """(name, reuse_port, tcp_migrate_req) to measure."""
    found = [("reuse_port on (default)", True, None), ("reuse_port off (GUNICORN_REUSE_PORT=0)", False, None)]
    if MIGRATE_REQ.exists() and os.access(MIGRATE_REQ, os.W_OK):
        found.append(("reuse_port on, net.ipv4.tcp_migrate_req=1", True, 1))
    return found


def one_run(reuse_port, clients, reloads, scratch):
    """(connection errors, 200s) of one run."""
    database = f"{scratch}/reload-{reuse_port}-{time.monotonic_ns()}.db"
    server = LiveServer(f"sqlite:///{database}", env={"GUNICORN_REUSE_PORT": "1" if reuse_port else "0"})
    try:
        with PredictLoad(server, clients) as load:
            time.sleep(2)
            for _ in range(reloads):
                os.kill(server.process.pid, signal.SIGHUP)
                time.sleep(3)
    finally:
        server.stop()
    with sqlite3.connect(database) as conn:
        stored = {row[0] for row in conn.execute("SELECT observation_id FROM prediction")}
    assert load.acknowledged <= stored, "a 200 without its row"
    return load.connection_errors, load.statuses[200]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        header = f"connection errors per reload (median of {args.repeat})"
        print(f"| setting | {header} | per run | 200s (all runs) |")
        print("|---|---:|---|---:|")
        for name, reuse_port, migrate_req in settings():
            with MigrateReq(migrate_req):
                outcomes = [
                    one_run(reuse_port, args.clients, args.reloads, scratch) for _ in range(args.repeat)
                ]
            per_reload = statistics.median(errors / args.reloads for errors, _ in outcomes)
            runs = ", ".join(str(errors) for errors, _ in outcomes)
            ok = sum(answered for _, answered in outcomes)
            print(f"| {name} | {per_reload:.1f} | {runs} | {ok} |")


if __name__ == "__main__":
    main()
