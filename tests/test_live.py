"""The service under real gunicorn workers: boot races, id races, sustained writes, a database restart."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import import_app
from tools.servers import EXAMPLE_OBSERVATION, REPO, PredictLoad

pytestmark = pytest.mark.slow
BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def stored_rows(database_url, postgres=None):
    """(observation_id, observation, proba) of every stored row, read straight from the database."""
    query = "SELECT observation_id, observation, proba FROM prediction ORDER BY observation_id"
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(query).fetchall()
    return postgres.sql(query, database=database_url.rsplit("/", 1)[1])


def predict(session, base, observation_id, observation=EXAMPLE_OBSERVATION):
    body = {"id": observation_id, "observation": observation}
    return session.post(f"{base}/predict", json=body, timeout=30)


def open_keepalive_connections(server, count):
    """`count` client connections, opened at once like a load generator's, each served once and kept open."""
    connections = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(count)]
    for connection in connections:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    for connection in connections:
        assert connection.recv(4096).startswith(b"HTTP/1.1 200")
    return connections


def connections_held(pid, port):
    """How many TCP connections to `port` process `pid` holds, matched by socket inode."""
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:  # 01 is ESTABLISHED
            established.add(fields[9])
    fds = Path(f"/proc/{pid}/fd")
    targets = [os.readlink(fd) for fd in fds.iterdir()]
    return sum(target.removeprefix("socket:[").rstrip("]") in established for target in targets)


def test_connections_are_spread_evenly_over_the_workers(live_server, tmp_path):
    """Each worker has its own listening socket: a keep-alive client's connection can't all go to one."""
    server = live_server(f"sqlite:///{tmp_path}/spread.db")
    assert len(server.wait_until_every_worker_listens()) == 2
    connections = open_keepalive_connections(server, 64)
    try:
        master = server.process.pid
        workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        held = sorted(connections_held(pid, server.port) for pid in workers)
    finally:
        for connection in connections:
            connection.close()
    assert sum(held) == 64
    assert held[0] >= 16, held  # 32 each on average; fewer than 16 by chance: 1 in 40,000


@POSTGRES
def test_instances_starting_together_on_an_empty_postgres_all_boot(database_url, live_server):
    """Like four dynos of three workers each released at once: nobody collides creating the table."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        servers = list(pool.map(lambda _: live_server(database_url, workers=3), range(4)))
    for server in servers:
        assert predict(requests.Session(), server.base, 0).status_code == 200


@POSTGRES
def test_concurrent_create_tables_on_postgres_do_not_collide(database_url, postgres):
    """Without the advisory lock, this fails with 'duplicate key ... pg_type_typname_nsp_index'."""
    service = import_app(database_url)
    for _ in range(10):
        postgres.sql("DROP TABLE prediction", database=database_url.rsplit("/", 1)[1])
        barrier = threading.Barrier(8)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create_tables_at_once, [service] * 8, [barrier] * 8))  # re-raises errors
    service.DB.close_all()


def create_tables_at_once(service, barrier):
    barrier.wait()
    service.migrations.prepare(service.DB, service.Prediction, None)


def race_for_one_id(servers, observation_id, observations):
    """Send every observation under the same id at once, spread over the servers."""

    def send(i):
        return predict(requests.Session(), servers[i % len(servers)].base, observation_id, observations[i])

    with ThreadPoolExecutor(max_workers=24) as pool:
        return list(pool.map(send, range(len(observations))))


@BOTH
def test_a_storm_of_requests_for_one_id_leaves_exactly_one_row(database_url, live_server, request):
    """Retries (same observation) and conflicts (another one) racing across workers and instances."""
    postgres = request.getfixturevalue("postgres") if database_url.startswith("postgresql") else None
    servers = [live_server(database_url, workers=2)]
    if postgres:
        servers.append(live_server(database_url, workers=2))  # a second instance, like a second dyno
    rounds = 5
    outcomes = Counter()
    for round_id in range(rounds):
        observations = [dict(EXAMPLE_OBSERVATION, Age=float(20 + i % 3)) for i in range(48)]
        responses = race_for_one_id(servers, round_id, observations)
        [(_, stored_observation, stored_proba)] = [
            row for row in stored_rows(database_url, postgres) if row[0] == round_id
        ]
        for observation, response in zip(observations, responses, strict=True):
            outcomes[response.status_code] += 1
            if json.loads(stored_observation)["Age"] == observation["Age"]:
                assert response.status_code == 200
                assert response.json()["proba"] == stored_proba
            else:
                assert response.status_code == 409
    assert len(stored_rows(database_url, postgres)) == rounds
    assert set(outcomes) == {200, 409}


@BOTH
def test_sustained_writes_from_several_workers_all_commit(database_url, live_server, request):
    postgres = request.getfixturevalue("postgres") if database_url.startswith("postgresql") else None
    server = live_server(database_url, workers=3)
    sessions = threading.local()

    def send(observation_id):
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        return predict(
            sessions.session,
            server.base,
            observation_id,
            dict(EXAMPLE_OBSERVATION, Fare=float(observation_id)),
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(response.status_code for response in pool.map(send, range(1500)))

    assert statuses == {200: 1500}
    assert [row[0] for row in stored_rows(database_url, postgres)] == list(range(1500))
    assert "database is locked" not in server.output()


@POSTGRES
def test_a_postgres_restart_under_load_loses_no_acknowledged_prediction(database_url, live_server, postgres):
    server = live_server(database_url, workers=2)
    with PredictLoad(server) as load:
        for _ in range(3):  # three restarts, each while the clients keep sending
            threading.Event().wait(1.0)
            postgres.stop("fast")
            threading.Event().wait(1.0)
            postgres.start()
        threading.Event().wait(1.5)
    statuses, acknowledged = load.statuses, load.acknowledged

    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0  # the outage was seen, and answered 503
    assert all(error.endswith("retry the request later") for error in load.errors), load.errors
    stored = {row[0] for row in stored_rows(database_url, postgres)}
    assert acknowledged <= stored  # every 200 is in the database
    after = predict(requests.Session(), server.base, -1)  # recovered without a restart
    assert after.status_code == 200
    print(f"restarts: 3, answers: {dict(statuses)}, acknowledged missing: {len(acknowledged - stored)}")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_heroku_style_postgres_urls_are_accepted(postgres, scheme):
    postgres.create_database("schemes")
    service = import_app(postgres.url("schemes", scheme=scheme))
    response = service.app.test_client().post("/predict", json={"id": 1, "observation": EXAMPLE_OBSERVATION})
    assert response.status_code == 200
    assert postgres.sql("SELECT observation_id FROM prediction", database="schemes") == [(1,)]
    service.DB.close_all()


@POSTGRES
def test_two_instances_sharing_postgres_keep_every_guarantee(database_url, live_server, postgres):
    """Like two dynos: each id is sent to both instances at once (a retry that lands elsewhere)."""
    instances = [live_server(database_url, workers=2), live_server(database_url, workers=2)]

    def send(pair):
        observation_id, instance = pair
        observation = dict(EXAMPLE_OBSERVATION, Age=float(observation_id % 70))
        return observation_id, predict(requests.Session(), instance.base, observation_id, observation)

    pairs = [(observation_id, instance) for observation_id in range(300) for instance in instances]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, pairs))

    assert {response.status_code for _, response in answers} == {200}
    probas = {}
    for observation_id, response in answers:
        assert probas.setdefault(observation_id, response.json()["proba"]) == response.json()["proba"]
    stored = stored_rows(database_url, postgres)
    assert [row[0] for row in stored] == list(range(300))  # one row per id, none lost
    assert all(probas[observation_id] == proba for observation_id, _, proba in stored)


def test_workers_fork_with_what_the_master_loaded_out_of_the_collector_s_reach(tmp_path):
    """gunicorn.conf.py's pre_fork freezes the master's objects before each fork, so that a
    worker's garbage collections (the last one at its exit too) don't walk and copy them
    (docs/operations.md, "Stopping")."""
    hooks = "import gc, runpy; hooks = runpy.run_path('gunicorn.conf.py'); hooks['pre_fork'](None, None)"
    frozen = subprocess.run(
        [sys.executable, "-c", f"{hooks}; print(gc.get_freeze_count())"],
        cwd=REPO,
        env=os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},  # else the file makes a temp folder
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(frozen) > 10_000  # the settings, the database layer and gunicorn's own modules


def test_a_reload_without_reuse_port_resets_no_connection(live_server, tmp_path):
    """The README's promise for GUNICORN_REUSE_PORT=0 (with it on, see tools/bench/reload.py)."""
    database_url = f"sqlite:///{tmp_path}/reload.db"
    server = live_server(database_url, env={"GUNICORN_REUSE_PORT": "0"})
    with PredictLoad(server) as load:
        for reload in (1, 2):
            threading.Event().wait(1.5)
            os.kill(server.process.pid, signal.SIGHUP)
            booted = server.wait_for_log("Booting worker", 2 + 2 * reload)  # 2 at start, 2 per reload
            assert booted, server.output()
        threading.Event().wait(1.5)

    assert (set(load.statuses), load.connection_errors) == ({200}, 0), (load.statuses, load.connection_errors)
    assert load.acknowledged <= {row[0] for row in stored_rows(database_url)}
