"""What clients sending a number the model can't score (Infinity) cost the well-behaved ones.

Starts the service as deployed on a fresh SQLite database, then alternates --repeat times: wrk
with 16 good connections alone; the same beside a second wrk whose 4 connections send
"Age": Infinity; and, for comparison, beside 4 connections asking GET /health, the cheapest
request there is, as fast as they can. Prints the good clients' medians.

    python -m tools.bench.poison [--seconds 8] [--repeat 3]
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path

from tools.servers import LiveServer

BENCH = Path(__file__).resolve().parent


def wrk(server, connections, seconds, first_id, age=None):
    command = ["wrk", "--latency", "-t", "1", "-c", str(connections), "-d", f"{seconds}s"]
    command += ["-s", str(BENCH / "predict.lua"), server.base, "--", str(first_id)]
    output = subprocess.run(
        command + ([age] if age else []), capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def health_flood(server, connections, seconds):
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", f"{server.base}/health"]
    subprocess.run(command, capture_output=True, check=True)


def good_beside(server, seconds, first_id, other):
    """The good clients' figures while `other` runs beside them; what `other` returned."""
    found = {}
    thread = threading.Thread(target=lambda: found.update(result=other()))
    thread.start()
    beside = wrk(server, 16, seconds, first_id)
    thread.join()
    return beside, found["result"]


def one_round(server, seconds, first_id):
    alone = wrk(server, 16, seconds, first_id)
    poisoned, poison = good_beside(
        server, seconds, first_id + 10**8, lambda: wrk(server, 4, seconds, first_id + 2 * 10**8, "Infinity")
    )
    flooded, _ = good_beside(server, seconds, first_id + 3 * 10**8, lambda: health_flood(server, 4, seconds))
    return alone, poisoned, flooded, poison


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, LiveServer(f"sqlite:///{scratch}/poison.db") as server:
        runs = [one_round(server, args.seconds, run * 10**9) for run in range(args.repeat)]
    print("| good clients | requests/s | p50 ms | errors |")
    print("|---|---:|---:|---:|")
    scenarios = ("16 connections alone", "beside 4 sending Infinity", "beside 4 asking GET /health")
    for index, name in enumerate(scenarios):
        rps = statistics.median(run[index]["requests"] / run[index]["seconds"] for run in runs)
        p50 = statistics.median(run[index]["p50_ms"] for run in runs)
        errors = sum(run[index]["non_2xx"] + run[index]["socket_errors"] for run in runs)
        print(f"| {name} | {rps:.0f} | {p50:.1f} | {errors} |")
    statuses = sum(run[3]["non_2xx"] for run in runs), sum(run[3]["requests"] for run in runs)
    print(f"poisoned requests answered non-2xx: {statuses[0]} of {statuses[1]}")


if __name__ == "__main__":
    main()
