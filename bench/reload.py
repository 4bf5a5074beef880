"""What a reload (SIGHUP to gunicorn's master) costs the clients, with and without reuse_port.

For each setting it starts the service as deployed on a fresh SQLite database, keeps --clients
keep-alive clients sending POST /predict, sends --reloads SIGHUPs a few seconds apart, and
counts the requests that failed at the connection (reset, closed) beside the answers by status.
Every 200 must be in the table afterwards. When it may (root), it also measures reuse_port with
Linux's net.ipv4.tcp_migrate_req=1, and puts the sysctl back as it found it.

    python bench/reload.py [--clients 16] [--reloads 5] [--repeat 3]
"""

import argparse
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support import EXAMPLE_OBSERVATION, LiveServer  # noqa: E402


def hammer(server, stop, ids, lock, outcome, acknowledged):
    session = requests.Session()
    while not stop.is_set():
        with lock:
            observation_id = next(ids)
        try:
            response = session.post(
                f"{server.base}/predict",
                json={"id": observation_id, "observation": EXAMPLE_OBSERVATION},
                timeout=30,
            )
        except requests.ConnectionError:
            with lock:
                outcome["connection errors"] += 1
            session = requests.Session()
            continue
        with lock:
            outcome[response.status_code] += 1
            if response.status_code == 200:
                acknowledged.add(observation_id)


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
    database = f"{scratch}/reload-{reuse_port}-{time.monotonic_ns()}.db"
    server = LiveServer(f"sqlite:///{database}", env={"GUNICORN_REUSE_PORT": "1" if reuse_port else "0"})
    stop, lock, ids = threading.Event(), threading.Lock(), iter(range(10**9))
    outcome, acknowledged = Counter(), set()
    threads = [
        threading.Thread(target=hammer, args=(server, stop, ids, lock, outcome, acknowledged))
        for _ in range(clients)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        for _ in range(reloads):
            os.kill(server.process.pid, signal.SIGHUP)
            time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        server.stop()
    with sqlite3.connect(database) as conn:
        stored = {row[0] for row in conn.execute("SELECT observation_id FROM prediction")}
    assert acknowledged <= stored, "a 200 without its row"
    return outcome


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
            per_reload = statistics.median(
                outcome["connection errors"] / args.reloads for outcome in outcomes
            )
            runs = ", ".join(str(outcome["connection errors"]) for outcome in outcomes)
            ok = sum(outcome[200] for outcome in outcomes)
            print(f"| {name} | {per_reload:.1f} | {runs} | {ok} |")


if __name__ == "__main__":
    main()
