"""The database at its limits, on a real PostgreSQL with the service connecting as an ordinary
role, as on a managed plan: a connection cap waited for under 20 seconds of load, a cap smaller
than one instance needs, a plan over capacity (one connection, a credential that can read,
delete and truncate but not write), and three instances through one PgBouncer."""

import html
import json
import subprocess
import threading
import time
from collections import Counter

import psycopg2
import pytest
import requests

from tools.servers import EXAMPLE_OBSERVATION, REPO, LiveServer, PredictLoad

pytestmark = pytest.mark.slow
BENCH = REPO / "tools" / "bench"


def service_database(postgres, name, connection_limit):
    """A database owned by the role `service`, which may open `connection_limit` connections."""
    postgres.sql("DO $$ BEGIN CREATE ROLE service LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    postgres.sql(f"ALTER ROLE service CONNECTION LIMIT {connection_limit}")
    postgres.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    postgres.sql(f'CREATE DATABASE "{name}" OWNER service')
    return f"postgresql://service@127.0.0.1:{postgres.port}/{name}"


def wrk(server, connections, seconds, first_id):
    command = [
        "wrk", "--latency", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
        "-s", str(BENCH / "predict_update.lua"), server.base, "--", str(first_id),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def rows(postgres, name):
    [(count,)] = postgres.sql("SELECT count(*) FROM prediction", database=name)
    return count


def test_three_instances_of_four_workers_wait_for_a_cap_of_20_connections_for_20_seconds(postgres):
    """64 connections of /predict and /update against a role capped at 20. Each instance may open 8
    (DB_MAX_CONNECTIONS): 24 in all, more than the cap, so refused connections are waited for."""
    url = service_database(postgres, "capped", 20)
    env = {"DB_MAX_CONNECTIONS": "8", "WEB_CONCURRENCY": "4"}
    servers = [LiveServer(url, workers=4, env=env) for _ in range(3)]
    try:
        results = [None] * 3
        clients = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, wrk(servers[i], 22, 20, i * 10**8)))
            for i in range(3)
        ]  # 66 connections in all
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    finally:
        for server in servers:
            server.stop()
    errors = sum(result["non_2xx"] + result["socket_errors"] for result in results)
    p99 = max(result["p99_ms"] for result in results)
    answered = sum(result["requests"] for result in results)
    print(
        f"cap of 20, 3 x 4 workers, 66 connections, 20 s: {answered} requests, {errors} errors, p99 {p99} ms"
    )
    assert errors == 0, results
    # Every prediction sent is a row (all were answered 200), but for the one request per wrk thread
    # made and never sent, and up to one per connection still in flight when wrk stopped.
    sent = sum(result["predictions"] for result in results)
    assert sent - 6 - 66 <= rows(postgres, "capped") <= sent


def test_a_cap_smaller_than_an_instance_needs_is_waited_for_then_a_503_naming_it(postgres, live_server):
    url = service_database(postgres, "too_small", 2)
    server = live_server(url, env={"DB_TIMEOUT_SECONDS": "2"})
    hogs = [psycopg2.connect(url) for _ in range(2)]  # another client holds every connection allowed
    try:
        started = time.monotonic()
        refused = server.post("/predict", {"id": 1, "observation": EXAMPLE_OBSERVATION})
        waited = time.monotonic() - started
        not_ready = requests.get(f"{server.base}/ready", timeout=30)
    finally:
        for hog in hogs:
            hog.close()
    assert refused.status_code == not_ready.status_code == 503
    assert "the database's connection limit is reached" in refused.json()["error"]
    assert "the database's connection limit is reached" in not_ready.json()["error"]
    assert 1.5 <= waited < 10
    assert server.post("/predict", {"id": 1, "observation": EXAMPLE_OBSERVATION}).status_code == 200
    assert rows(postgres, "too_small") == 1


def over_capacity(postgres, name, restricted):
    """What Heroku does past a plan's capacity: one connection, and a credential that can read,
    delete and truncate, but not insert or update."""
    postgres.sql(
        f"DO $$ BEGIN CREATE ROLE {restricted} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    postgres.sql(f"ALTER ROLE {restricted} CONNECTION LIMIT 1")
    postgres.sql(
        f"GRANT SELECT, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {restricted}", database=name
    )
    postgres.sql(f"REVOKE INSERT, UPDATE ON ALL TABLES IN SCHEMA public FROM {restricted}", database=name)


def restored(postgres, name, restricted):
    postgres.sql(f"ALTER ROLE {restricted} CONNECTION LIMIT -1")
    postgres.sql(f"GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {restricted}", database=name)
    postgres.sql(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {restricted}", database=name)


OVER_CAPACITY = "over its plan's capacity: upgrade the plan or delete data"


def test_a_plan_over_capacity_answers_what_it_can_on_one_connection_and_recovers(postgres, live_server):
    url = service_database(postgres, "full", -1)
    with LiveServer(url) as owner:  # the service as it ran before: its tables, and predictions
        for i in range(20):
            assert owner.post("/predict", {"id": i, "observation": EXAMPLE_OBSERVATION}).ok
        assert requests.post(f"{owner.base}/update", json={"id": 0, "true_class": 1}, timeout=30).ok
    over_capacity(postgres, "full", "restricted")
    restricted_url = url.replace("service@", "restricted@")
    server = live_server(restricted_url, env={"LIST_DB_TOKEN": "t"})

    answers = Counter()
    for i in range(6):  # each route several times: both workers share the one connection
        predicted = server.post("/predict", {"id": 100 + i, "observation": EXAMPLE_OBSERVATION})
        updated = server.post("/update", {"id": 1, "true_class": 1})
        ready = requests.get(f"{server.base}/ready", timeout=30)
        assert predicted.status_code == updated.status_code == ready.status_code == 503
        for refused in (predicted, updated, ready):
            assert OVER_CAPACITY in refused.json()["error"], refused.json()
        stats = requests.get(f"{server.base}/stats", timeout=30)
        assert stats.status_code == 200, stats.text
        assert stats.json()["overall"]["predictions"] == 20
        assert requests.get(f"{server.base}/model", timeout=30).status_code == 200
        page = requests.get(f"{server.base}/", headers={"Accept": "text/html"}, timeout=30)
        assert page.status_code == 200
        assert OVER_CAPACITY in html.unescape(page.text)
        listed = requests.get(
            f"{server.base}/list-db-contents", headers={"Authorization": "Bearer t"}, timeout=30
        )
        assert listed.status_code == 200
        assert listed.json()["total"] == 20
        answers[predicted.status_code] += 1
    assert rows(postgres, "full") == 20

    restored(postgres, "full", "restricted")
    deadline = time.monotonic() + 20
    while requests.get(f"{server.base}/ready", timeout=30).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert server.post("/predict", {"id": 200, "observation": EXAMPLE_OBSERVATION}).status_code == 200
    assert rows(postgres, "full") == 21


def test_three_instances_through_one_pgbouncer_keep_every_guarantee(postgres, pgbouncer):
    postgres.create_database("pooled")
    url = pgbouncer.url("pooled")
    servers = [LiveServer(url, workers=2) for _ in range(3)]
    try:
        loads = [PredictLoad(server, clients=6, first_id=i * 10**6) for i, server in enumerate(servers)]
        for load in loads:
            load.__enter__()
        time.sleep(10)
        for load in loads:
            load.__exit__(None, None, None)
        for i in range(0, 300, 3):  # labels, through every instance
            server = servers[i % 3]
            assert requests.post(f"{server.base}/update", json={"id": i, "true_class": i % 2}, timeout=30).ok
        stats = requests.get(f"{servers[0].base}/stats", timeout=30).json()
    finally:
        for server in servers:
            server.stop()
    statuses = sum((load.statuses for load in loads), Counter())
    acknowledged = set().union(*(load.acknowledged for load in loads))
    stored = {row for (row,) in postgres.sql("SELECT observation_id FROM prediction", database="pooled")}
    print(f"through one PgBouncer, 3 x 2 workers, 18 clients, 10 s: {statuses}, {len(stored)} rows")
    assert set(statuses) == {200}, statuses
    assert acknowledged <= stored
    assert stats["overall"]["predictions"] == len(stored)
    [(labelled,)] = postgres.sql(
        "SELECT count(*) FROM prediction WHERE true_class IS NOT NULL", database="pooled"
    )
    assert stats["overall"]["labelled"] == labelled == 100
