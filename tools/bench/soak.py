"""A long run at a steady rate, behind `make bench-soak`: does anything grow while the service lives?

It starts the service as deployed (gunicorn.conf.py, 2 workers) on a fresh database and sends, for
--minutes, --rate requests a second: POST /predict with fresh ids, an /update for every tenth, and
every 15 s what a Prometheus scrape and an owner would ask (/metrics, /stats, /drift, and a
dashboard's window that moves with the clock). Every
minute (--sample-seconds) it samples each worker: resident memory, open file descriptors, connections to the
database (its open sockets to PostgreSQL, or its handles on the SQLite file), and the minute's
p50 and p99 of /predict as the clients saw them. It prints a table of the samples and, for each
figure, its growth from the 5th sample to the last (the first minutes warm caches and pools).

    python -m tools.bench.soak [--minutes 30] [--rate 200] [--sample-seconds 60] [--database-url URL]
"""

import argparse
import http.client
import json
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tools.servers import EXAMPLE_OBSERVATION, LiveServer

CLIENTS = 8
WARM_SAMPLES = 5


class SteadyLoad:
    """CLIENTS keep-alive clients, each sending its share of `rate` on a fixed schedule."""

    def __init__(self, server, rate):
        self.server, self.interval = server, CLIENTS / rate
        self.latencies, self.errors, self.sent = [], 0, 0
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(CLIENTS)]

    def _client(self, number):
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        next_at, observation_id = time.monotonic(), number
        while not self._stop.is_set():
            next_at += self.interval
            self._call(connection, "/predict", {"id": observation_id, "observation": EXAMPLE_OBSERVATION})
            if observation_id % 10 == number:
                self._call(connection, "/update", {"id": observation_id, "true_class": observation_id % 2})
            observation_id += CLIENTS
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _call(self, connection, path, body):
        started = time.perf_counter()
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            connection.close()
            ok = False
        with self._lock:
            self.sent += 1
            self.errors += not ok
            if path == "/predict":
                self.latencies.append((time.perf_counter() - started) * 1000)

    def take_latencies(self):
        with self._lock:
            taken, self.latencies = self.latencies, []
        return taken

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()


def monitor_calls(server, stop):
    """What a Prometheus scrape and an owner's visits ask for, every 15 s; a dashboard's window
    ends now, so its hours differ a little at each call (each a new question for the service)."""
    while not stop.wait(15):
        window = f"/stats?hours={24 + random.random():.6f}"
        for path in ("/metrics", "/stats", "/drift", "/stats/series?every=hour", window):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            connection.request("GET", path)
            connection.getresponse().read()
            connection.close()


def worker_pids(server):
    pid = server.process.pid
    return sorted(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def database_handles(pid, database_url):
    """Open sockets to PostgreSQL's port, or handles on the SQLite file (and its WAL), of a process."""
    if database_url.startswith("sqlite"):
        name = Path(database_url.removeprefix("sqlite:///")).name
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir() if fd.is_symlink()]
        return sum(1 for link in links if Path(link).name.startswith(name))
    port = database_url.rsplit(":", 1)[1].split("/")[0]
    inodes = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == int(port) and f"socket:[{fields[9]}]" in inodes:
            count += 1
    return count


def sample(pid, database_url):
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return {
        "rss_mb": rss_kb / 1024,
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "db": database_handles(pid, database_url),
    }


def percentile(values, share):
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


def run(minutes, rate, database_url, sample_seconds=60):
    rows = []
    with LiveServer(database_url, workers=2) as server:
        server.wait_until_every_worker_listens()  # else the first worker up takes every client
        stop = threading.Event()
        monitor = threading.Thread(target=monitor_calls, args=(server, stop))
        monitor.start()
        with SteadyLoad(server, rate) as load:
            for sample_number in range(1, round(minutes * 60 / sample_seconds) + 1):
                time.sleep(sample_seconds)
                latencies = load.take_latencies()
                minute = sample_number * sample_seconds / 60
                row = {"minute": minute, "requests": load.sent, "errors": load.errors}
                row |= {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99)}
                row["workers"] = {pid: sample(pid, database_url) for pid in worker_pids(server)}
                rows.append(row)
                print(format_row(row), flush=True)
        stop.set()
        monitor.join()
    return rows


def format_row(row):
    workers = "  ".join(
        f"{w['rss_mb']:.1f} MB {w['fds']} fds {w['db']} db" for _pid, w in sorted(row["workers"].items())
    )
    return (
        f"{row['minute']:>6g} {row['requests']:>9} {row['errors']:>6} "
        f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}  {workers}"
    )


def growth(rows):
    """Each figure's change from the WARM_SAMPLES-th sample to the last, per worker slot."""
    first, last = rows[min(WARM_SAMPLES, len(rows)) - 1], rows[-1]
    found = {"p50_ms": last["p50_ms"] - first["p50_ms"], "p99_ms": last["p99_ms"] - first["p99_ms"]}
    if sorted(first["workers"]) != sorted(last["workers"]):
        found["workers"] = "a worker was replaced during the run: compare the rows by hand"
        return found
    for slot, pid in enumerate(sorted(last["workers"]), start=1):
        for figure in ("rss_mb", "fds", "db"):
            found[f"worker {slot} {figure}"] = last["workers"][pid][figure] - first["workers"][pid][figure]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--sample-seconds", type=int, default=60)
    parser.add_argument("--rate", type=float, default=200, help="requests a second, /predict and /update")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        database_url = args.database_url or f"sqlite:///{directory}/soak.db"
        print(f"soak: {args.minutes} minutes at {args.rate:g} requests/s on {database_url.split(':')[0]}")
        print("     min  requests errors  p50 ms  p99 ms  per worker: resident memory, fds, database handles")
        rows = run(args.minutes, args.rate, database_url, args.sample_seconds)
    first = rows[min(WARM_SAMPLES, len(rows)) - 1]["minute"]
    print(f"growth from minute {first:g} to minute {rows[-1]['minute']:g}:")
    for figure, change in growth(rows).items():
        print(f"  {figure}: {change:+.2f}" if isinstance(change, float | int) else f"  {figure}: {change}")


if __name__ == "__main__":
    main()
