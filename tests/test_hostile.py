"""Hostile and careless clients against gunicorn as deployed: bounded CPU per request whatever
the body's shape, slow clients that can't starve the others, malformed HTTP answered in JSON,
pages of /list-db-contents that don't grow a worker's memory."""

import json
import os
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest
import requests
from playhouse.db_url import connect

from tools.servers import EXAMPLE_OBSERVATION

pytestmark = pytest.mark.slow
# "About 100 ms of CPU": the worst shape, 90,000 unknown fields, costs about 0.1 s on a quiet
# run of this machine, most of it json.loads of the megabyte; the same request measured up to
# 0.17 s while the rest of the suite loaded both cores. The margin is for that; the quadratic
# checks this guards against took 22 s.
CPU_SECONDS_PER_REQUEST = 0.25
TICK = os.sysconf("SC_CLK_TCK")


def worker_pids(server):
    master = server.process.pid
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def body_with(observation):
    """As compact as JSON goes, to pack the most into the 1 MB limit."""
    return json.dumps(
        {"id": 1, "observation": observation}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def many_unknown_fields(count):
    return body_with(dict(EXAMPLE_OBSERVATION, **{f"{i:x}": 0 for i in range(count)}))


WORST_SHAPES = {
    "90,000 unknown fields": many_unknown_fields(90_000),
    "90,000 repeats of one key": b'{"id": 1, "observation": {' + b'"a": 1, ' * 90_000 + b'"a": 2}}',
    "nesting 450,000 deep": b'{"id": 1, "observation": ' + b"[" * 450_000 + b"]" * 450_000 + b"}",
    "a 900,000-character feature": body_with(dict(EXAMPLE_OBSERVATION, Cabin="\u00e9" * 450_000)),
    "200,000 numbers": body_with(dict(EXAMPLE_OBSERVATION, extra=[1.5] * 200_000)),
    "20,000 unknown fields of non-ASCII text": body_with(
        dict(EXAMPLE_OBSERVATION, **{f"{i:x}": "\u4e2d\u6587" * 6 for i in range(20_000)})
    ),
}


def test_any_body_shape_costs_about_100_ms_of_cpu_at_most(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path}/shapes.db", workers=1)
    [worker] = worker_pids(server)
    costs = {}
    for name, body in WORST_SHAPES.items():
        assert len(body) < 1_000_000, name
        samples = []
        for _ in range(3):
            before = cpu_seconds(worker)
            response = requests.post(
                f"{server.base}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            samples.append(cpu_seconds(worker) - before)
            assert response.status_code in (200, 400), (name, response.status_code)
            assert len(response.content) < 10_000, name  # an answer never echoes the body back
        costs[name] = statistics.median(samples)
    print("CPU seconds per request (median of 3):", json.dumps(costs, indent=1))
    assert max(costs.values()) <= CPU_SECONDS_PER_REQUEST, costs


def trickle(port, stop, request_head, body=b""):
    """Send a request a byte at a time, 0.5 s apart, reconnecting whenever the server closes."""
    whole = request_head + body
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                for byte in whole:
                    if stop.wait(0.5):
                        return
                    connection.sendall(bytes([byte]))
        except OSError:
            stop.wait(0.1)


def test_200_trickling_connections_leave_a_good_client_its_speed(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path}/slow.db", env={"REQUEST_READ_SECONDS": "5"})
    body = body_with(EXAMPLE_OBSERVATION)
    slow_head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    slow_body_head = slow_head + f"Content-Length: {len(body)}\r\n\r\n".encode()
    stop = threading.Event()
    tricklers = [
        threading.Thread(target=trickle, args=(server.port, stop, slow_head * 20)) for _ in range(100)
    ]
    tricklers += [
        threading.Thread(target=trickle, args=(server.port, stop, slow_body_head, body)) for _ in range(100)
    ]
    for thread in tricklers:
        thread.start()
    latencies = []
    try:
        time.sleep(2)  # every trickler connected and sending
        session = requests.Session()
        deadline = time.monotonic() + 12  # past REQUEST_READ_SECONDS: tricklers cut and reconnecting
        observation_id = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = session.post(
                f"{server.base}/predict",
                json={"id": observation_id, "observation": EXAMPLE_OBSERVATION},
                timeout=5,
            )
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200
            observation_id += 1
            time.sleep(0.02)  # a client at its own pace: 500 or so latencies, the machine left to the rest
    finally:
        stop.set()
        for thread in tricklers:
            thread.join()
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"good client under 200 trickling connections: {len(latencies)} requests, p99 {p99 * 1000:.0f} ms")
    assert p99 < 1.0


def raw_http(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ],
    ids=["bad request line", "long URL", "9 KB header"],
)
def test_malformed_http_gets_the_json_error_shape(live_server, tmp_path, request_bytes, status):
    server = live_server(f"sqlite:///{tmp_path}/http.db")
    head, body = raw_http(server.port, request_bytes)
    assert head.startswith(f"HTTP/1.1 {status} ")
    assert "Content-Type: application/json" in head
    assert json.loads(body)["error"].startswith("gunicorn refused the request: ")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_page_of_large_rows_is_streamed_without_growing_the_worker(database_url, live_server):
    """100 rows of 1.2 MB each: built whole, such a page took a worker to hundreds of megabytes."""
    server = live_server(database_url, workers=1, env={"LIST_DB_TOKEN": "t"})
    database = connect(database_url)
    observation = json.dumps({"Cabin": "\u00e9" * 200_000})  # as an earlier release stored it
    database.execute_sql(
        "INSERT INTO prediction (observation_id, observation, proba, model_version) "
        f"SELECT n, {database.param}, 0.5, 'x' FROM (SELECT 1 AS n) AS one",
        (observation,),
    )
    for observation_id in range(2, 101):  # copies of the first row, each read alone
        database.execute_sql(
            "INSERT INTO prediction (observation_id, observation, proba, model_version) "
            f"SELECT {observation_id}, observation, 0.5, 'x' FROM prediction WHERE observation_id = 1"
        )
    database.close()
    [worker] = worker_pids(server)

    def peak_rss_mb():
        status = dict(line.split(":", 1) for line in Path(f"/proc/{worker}/status").read_text().splitlines())
        return int(status["VmHWM"].split()[0]) / 1024

    token = {"Authorization": "Bearer t"}
    requests.get(f"{server.base}/list-db-contents?per_page=1", headers=token, timeout=30)
    before = peak_rss_mb()
    response = requests.get(f"{server.base}/list-db-contents?per_page=100", headers=token, timeout=60)
    grew = peak_rss_mb() - before

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 100
    assert len(response.content) > 100_000_000
    print(f"a 100-row page of {len(response.content) / 1e6:.0f} MB; the worker's peak RSS grew {grew:.0f} MB")
    assert grew < 50


def test_pipelined_requests_are_answered_in_order_a_partial_one_once_it_completes(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path}/pipelined.db")
    body = body_with(EXAMPLE_OBSERVATION)
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request += f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(request + request.replace(b'"id":1', b'"id":2') + b"GET /hea")
        time.sleep(1)
        connection.sendall(b"lth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 3
    assert received.endswith(b'{"status":"ok"}\n')
