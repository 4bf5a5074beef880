"""Monitoring callers that come at once: one computation for all of them (coalescing.py), and a
flood of them beside a /predict client on a live gunicorn, on both backends."""

import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service.coalescing import Coalescer, Pacer
from tools.servers import EXAMPLE_OBSERVATION, PredictLoad


def slow_counter(seconds):
    """compute() that takes `seconds` and returns how many times it ran."""
    calls = []

    def compute():
        calls.append(time.monotonic())
        time.sleep(seconds)
        return len(calls)

    return compute, calls


def test_callers_arriving_during_a_computation_share_the_next_one():
    coalescer, (compute, calls) = Coalescer(max_age_seconds=0), slow_counter(0.3)
    with ThreadPoolExecutor(10) as pool:
        first = pool.submit(coalescer.call, "stats", compute)
        time.sleep(0.1)  # the first computation is running: these arrived after it started
        later = [pool.submit(coalescer.call, "stats", compute) for _ in range(9)]
        assert first.result() == 1
        assert {future.result() for future in later} == {2}  # one more computation, shared
    assert len(calls) == 2


def test_one_computation_runs_at_a_time_whatever_the_key():
    coalescer, running, most = Coalescer(max_age_seconds=0), [], []

    def compute():
        running.append(1)
        most.append(len(running))
        time.sleep(0.05)
        running.pop()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: coalescer.call(key, compute), range(8)))
    assert max(most) == 1


def test_an_answer_is_reused_only_while_younger_than_max_age():
    coalescer, (compute, _) = Coalescer(max_age_seconds=0.2), slow_counter(0)
    assert coalescer.call("stats", compute) == coalescer.call("stats", compute) == 1
    assert coalescer.call("other", compute) == 2
    time.sleep(0.25)
    assert coalescer.call("stats", compute) == 3


def test_answers_past_their_age_are_let_go_whatever_keys_clients_make_up():
    """/stats?hours=1.01, 1.02, ...: each a key of its own; none may cost memory past max_age."""

    class Answer:  # an object a weak reference can follow
        pass

    coalescer = Coalescer(max_age_seconds=0.05)
    kept = [weakref.ref(coalescer.call(("stats", 1 + n / 100), Answer)) for n in range(200)]
    time.sleep(0.06)
    coalescer.call(("stats", 24.0), Answer)  # storing the next answer lets the old ones go
    gc.collect()
    assert sum(ref() is not None for ref in kept) == 0


def test_every_caller_of_a_failed_computation_gets_its_error_and_the_next_caller_retries():
    coalescer, attempts = Coalescer(max_age_seconds=10), []

    def failing():
        attempts.append(1)
        time.sleep(0.1)
        raise RuntimeError("the database went away")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(coalescer.call, "stats", failing) for _ in range(4)]
        for future in futures:
            with pytest.raises(RuntimeError, match="went away"):
                future.result()
    with pytest.raises(RuntimeError):
        coalescer.call("stats", failing)  # a failure is never reused
    assert len(attempts) <= 4


def test_the_pacer_lets_a_burst_through_then_spaces_callers_out_and_refuses_past_its_queue():
    pacer = Pacer(rate=20, burst=5, most_waiting=3)
    started = time.monotonic()
    assert all(pacer.wait_turn() for _ in range(5))  # the burst: no wait
    assert time.monotonic() - started < 0.05
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: (pacer.wait_turn(), time.monotonic() - started), range(5)))
    waited = sorted(at for turn, at in answers if turn)
    assert [turn for turn, _ in answers].count(False) == 2  # three may wait; the others are told at once
    assert waited == pytest.approx([0.05, 0.10, 0.15], abs=0.04)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_flood_of_stats_callers_costs_predict_clients_no_error(database_url, live_server):
    server = live_server(database_url, workers=2)
    server.wait_until_every_worker_listens()
    for i in range(200):  # something to compute
        assert server.post(
            "/predict", {"id": 10**9 + i, "observation": dict(EXAMPLE_OBSERVATION, Age=i % 80)}
        ).ok
        assert server.post("/update", {"id": 10**9 + i, "true_class": i % 2}).ok
    stop, stats_statuses = threading.Event(), []

    def dashboard(path):
        session = requests.Session()
        while not stop.is_set():
            stats_statuses.append(session.get(f"{server.base}{path}", timeout=30).status_code)

    paths = ["/stats", "/stats?hours=24", "/stats/series?every=day&hours=720"] * 4
    dashboards = [threading.Thread(target=dashboard, args=(path,)) for path in paths]
    for thread in dashboards:
        thread.start()
    with PredictLoad(server, clients=1) as load:
        time.sleep(5)
    stop.set()
    for thread in dashboards:
        thread.join()

    assert not load.errors
    assert load.connection_errors == 0
    assert set(load.statuses) == {200}
    assert stats_statuses.count(200) > 12
    assert set(stats_statuses) <= {200, 429}  # 429: a worker had 12 waiting their turn already
    time.sleep(1.1)  # past STATS_MAX_AGE_SECONDS: the next answer is computed afresh
    stats = requests.get(f"{server.base}/stats", timeout=30).json()
    assert stats["overall"]["predictions"] == 200 + len(load.acknowledged)  # every 200 committed
