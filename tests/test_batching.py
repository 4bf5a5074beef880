"""Micro-batching: callers that arrive together share a batch, and each gets its own answer."""

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from prometheus_client import REGISTRY

from service.batching import MicroBatcher
from tools.servers import EXAMPLE_OBSERVATION


def slow_doubling(batches):
    """A process_batch that records its batches and takes a while, so callers pile up."""

    def process(items):
        batches.append(list(items))
        time.sleep(0.01)
        return [item * 2 for item in items]

    return process


def test_a_lone_call_runs_at_once_in_the_callers_thread():
    threads = []
    batcher = MicroBatcher(lambda items: threads.append(threading.get_ident()) or [len(items)])

    assert batcher.submit("x") == 1
    assert threads == [threading.get_ident()]


def test_concurrent_callers_are_batched_and_each_gets_its_own_result():
    batches = []
    batcher = MicroBatcher(slow_doubling(batches))

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(batcher.submit, range(200)))

    assert results == [item * 2 for item in range(200)]
    assert sorted(item for batch in batches for item in batch) == list(range(200))  # each once
    assert max(len(batch) for batch in batches) > 1
    assert len(batches) < 200


def test_clients_just_answered_are_waited_for_so_a_steady_load_keeps_full_batches():
    """Eight clients, each sending its next request a moment after its answer (like a client
    across a network): the next leader waits for them instead of running whoever came first."""
    batches = []
    batcher = MicroBatcher(slow_doubling(batches))

    def client(first):
        for item in range(first, first + 20):
            assert batcher.submit(item) == item * 2
            time.sleep(0.0015)  # the answer's way back and the next request's way in

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(client, range(0, 160, 20)))

    sizes = sorted(len(batch) for batch in batches)
    assert sizes[len(sizes) // 2] == 8, sizes  # the median batch holds every client


def test_batches_never_exceed_the_maximum_size():
    batches = []
    batcher = MicroBatcher(slow_doubling(batches), max_batch_size=4)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(batcher.submit, range(100)))
    assert max(len(batch) for batch in batches) <= 4


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on():
    def process(items):
        time.sleep(0.005)
        if "boom" in items:
            raise ValueError("boom")
        return items

    batcher = MicroBatcher(process)
    with pytest.raises(ValueError, match="boom"):
        batcher.submit("boom")
    items = ["a", "b", "boom", "c"] * 10
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda item: _outcome(batcher, item), items))
    for item, outcome in zip(items, outcomes, strict=True):
        # a caller fails only when "boom" was in its batch, and "boom" itself always fails
        assert outcome == "ValueError" if item == "boom" else outcome in (item, "ValueError")
    assert batcher.submit("after") == "after"


def _outcome(batcher, item):
    try:
        return batcher.submit(item)
    except ValueError:
        return "ValueError"


def passenger(i):
    return dict(EXAMPLE_OBSERVATION, Age=float(i % 80), Fare=float(i), Sex=["male", "female"][i % 2])


def scored_alone(service, observation):
    """The tutorial's way: one DataFrame, cast with .astype(dtypes), one predict_proba."""
    frame = pd.DataFrame([observation], columns=service.MODEL.columns).astype(service.MODEL.dtypes)
    return service.MODEL.pipeline.predict_proba(frame)[0, 1]


def test_the_frame_has_the_training_dtypes_and_a_nullable_twin_only_where_a_value_is_missing(service):
    complete = service.SCHEMA.observation({"id": 1, "observation": EXAMPLE_OBSERVATION}).features
    missing = service.SCHEMA.observation(
        {"id": 2, "observation": dict.fromkeys(service.MODEL.columns)}
    ).features

    assert service.SCHEMA.frame([complete, complete]).dtypes.equals(service.MODEL.dtypes)
    frame = service.SCHEMA.frame([complete, missing])
    for column, dtype in service.MODEL.dtypes.items():
        assert frame.dtypes[column] == ("Int64" if dtype == "int64" else dtype), column
    assert frame["Pclass"].isna().tolist() == [False, True]


def test_batched_predictions_equal_scoring_each_row_alone(client, service):
    app = service.app

    def send(i):
        return app.test_client().post("/predict", json={"id": i, "observation": passenger(i)})

    calls_before = batch_count()
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(send, range(300)))

    for i, response in enumerate(responses):
        assert response.status_code == 200
        assert response.get_json()["proba"] == pytest.approx(scored_alone(service, passenger(i)), abs=1e-12)
    assert service.Prediction.select().count() == 300
    assert batch_count() - calls_before < 300  # some requests shared a call of the model


def batch_count():
    """Calls of the model made in this process so far (the predict_batch_size histogram's count)."""
    return REGISTRY.get_sample_value("predict_batch_size_count") or 0


def observation(service, observation_id, **features):
    body = {"id": observation_id, "observation": dict(EXAMPLE_OBSERVATION, **features)}
    return service.SCHEMA.observation(body)


def test_a_row_the_model_refuses_does_not_fail_its_batch(client, service):
    # Validation refuses an infinite Age; this row gets past it, as a value a model rejects would.
    unscorable = dataclasses.replace(
        observation(service, 2), features=dict(EXAMPLE_OBSERVATION, Age=float("inf"))
    )
    batch = [observation(service, 1), unscorable, observation(service, 3)]

    first, refused, third = service.PREDICTOR.predict_batch(batch)

    assert first == third == {"proba": scored_alone(service, EXAMPLE_OBSERVATION)}
    assert refused.status == 422
    assert [row.observation_id for row in service.Prediction.select().order_by(service.Prediction.id)] == [
        1,
        3,
    ]


def test_duplicate_ids_inside_one_batch_follow_the_retry_rules(client, service):
    batch = [observation(service, 5), observation(service, 5), observation(service, 5, Age=70.0)]

    first, retry, conflict = service.PREDICTOR.predict_batch(batch)

    assert first == retry == {"proba": scored_alone(service, EXAMPLE_OBSERVATION)}
    assert conflict.status == 409
    assert service.Prediction.select().count() == 1
