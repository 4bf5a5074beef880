"""A challenger in shadow: a model in a challenger/ folder beside the running model's files scores
every prediction too, through the same code that loads, checks and calls the running model. Its
answer is stored beside the running model's, under its own version, and never returned; a
challenger that can't take every request the running model takes is refused at start-up."""

import json
import pickle
import shutil
from datetime import datetime

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import import_app
from models import UNSCORABLE_FARE, titanic_challenger, titanic_challenger_failing_on_one_fare, titanic_frame
from service import archive
from service.monitoring.comparison import compare
from tools.servers import EXAMPLE_DIR

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def challengers(tmp_path_factory):
    """The challengers' folders, trained once: {name: directory}."""
    root = tmp_path_factory.mktemp("challengers")
    return {
        "forest": titanic_challenger(root / "forest"),
        "failing on one fare": titanic_challenger_failing_on_one_fare(root / "failing"),
    }


def beside_the_example(tmp_path, challenger_dir):
    """The example model's files, with `challenger_dir` copied in as their challenger/ folder."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(EXAMPLE_DIR, artifacts)
    shutil.copytree(challenger_dir, artifacts / "challenger")
    return artifacts


def passengers(count, start=0):
    """Observations of the example's passengers, as clients send them (null for a missing value)."""
    X, _ = titanic_frame()
    rows = X.iloc[start : start + count].astype(object).where(X.notna(), None)
    return [{column: plain(value) for column, value in row.items()} for _, row in rows.iterrows()]


def plain(value):
    return value.item() if isinstance(value, np.generic) else value


def expected_probas(directory, observations):
    """The model's predict_proba on the observations, read from its files as a notebook would."""
    columns = json.loads((directory / "columns.json").read_text())
    with (directory / "dtypes.pickle").open("rb") as fh:
        dtypes = pickle.load(fh)
    frame = pd.DataFrame(observations)[columns].astype(dtypes)
    return joblib.load(directory / "pipeline.pickle").predict_proba(frame)[:, 1]


def stored(service):
    rows = service.Prediction.select().order_by(service.Prediction.observation_id)
    return [(row.observation_id, row.proba, row.challenger_proba, row.challenger_version) for row in rows]


@BOTH
def test_a_challenger_scores_every_prediction_in_shadow_and_is_never_returned(
    database_url, tmp_path, challengers
):
    artifacts = beside_the_example(tmp_path, challengers["forest"])
    service = import_app(database_url, ARTIFACTS_DIR=str(artifacts))
    client = service.app.test_client()
    observations = passengers(40)

    answers = [
        client.post("/predict", json={"id": i, "observation": obs}) for i, obs in enumerate(observations)
    ]

    assert [answer.status_code for answer in answers] == [200] * 40
    assert all(answer.get_json().keys() == {"proba"} for answer in answers)  # the challenger's stays inside
    running = expected_probas(artifacts, observations)
    shadow = expected_probas(artifacts / "challenger", observations)
    rows = stored(service)
    assert [row[1] for row in rows] == pytest.approx(running.tolist(), abs=1e-12)
    assert [row[2] for row in rows] == pytest.approx(shadow.tolist(), abs=1e-12)
    card = client.get("/model").get_json()["challenger"]
    assert {row[3] for row in rows} == {card["model_version"]}
    assert card["model_version"] != service.MODEL_VERSION
    assert "Cabin" not in card["features"]
    assert card["calls"]["serves"] == "fast path"  # checked against predict_proba like the running model
    assert (
        "fails on 8 of 304 probe rows" in card["failing"]
    )  # a forest refuses an Age of 1e300: noted, served
    # A retry stores nothing twice, a conflicting id nothing at all; /update hands out no shadow answer.
    assert client.post("/predict", json={"id": 3, "observation": observations[3]}).status_code == 200
    assert client.post("/predict", json={"id": 3, "observation": observations[4]}).status_code == 409
    assert stored(service) == rows
    labelled = client.post("/update", json={"id": 3, "true_class": 1}).get_json()
    assert not {"challenger_proba", "challenger_version"} & labelled.keys()
    service.DB.close_all()


@SQLITE
def test_a_row_the_challenger_fails_on_is_stored_and_answered_as_without_it(
    database_url, tmp_path, challengers
):
    artifacts = beside_the_example(tmp_path, challengers["failing on one fare"])
    service = import_app(database_url, ARTIFACTS_DIR=str(artifacts))
    client = service.app.test_client()
    unscorable, usual = passengers(2)
    unscorable["Fare"] = UNSCORABLE_FARE

    answers = [
        client.post("/predict", json={"id": i, "observation": obs})
        for i, obs in enumerate([unscorable, usual])
    ]

    assert [answer.status_code for answer in answers] == [200, 200]
    running = expected_probas(artifacts, [unscorable, usual])
    assert [answer.get_json()["proba"] for answer in answers] == pytest.approx(running.tolist(), abs=1e-12)
    version = client.get("/model").get_json()["challenger"]["model_version"]
    (_, _, failed, failed_version), (_, _, scored, _) = stored(service)
    assert (failed, failed_version) == (None, version)  # scored by it, and failed: the count of failures
    assert scored == pytest.approx(expected_probas(artifacts / "challenger", [usual])[0], abs=1e-12)
    service.DB.close_all()


@SQLITE
@pytest.mark.parametrize(
    ("other", "why"),
    [
        ("mixed-dtypes-string-labels", "its classes are ['churn', 'stay'], the running model's [0, 1]"),
        (
            "float-features-with-spaces",
            "it needs features the requests don't carry: mean radius, mean texture",
        ),
    ],
)
def test_a_challenger_that_can_t_take_every_request_is_refused_and_scores_nothing(
    database_url, tmp_path, other_model_dirs, other, why, caplog
):
    artifacts = beside_the_example(tmp_path, other_model_dirs[other])
    service = import_app(database_url, ARTIFACTS_DIR=str(artifacts))
    client = service.app.test_client()

    assert client.post("/predict", json={"id": 1, "observation": passengers(1)[0]}).status_code == 200

    card = client.get("/model").get_json()["challenger"]
    assert why in card["refused"]
    assert "model_version" not in card
    assert f"is refused, and scores nothing: {card['refused']}" in caplog.text
    assert [row[2:] for row in stored(service)] == [(None, None)]
    service.DB.close_all()


@SQLITE
def test_without_a_challenger_folder_the_model_card_and_the_rows_are_as_before(database_url):
    service = import_app(database_url)  # the example's files: no challenger/ beside them
    client = service.app.test_client()

    assert client.post("/predict", json={"id": 1, "observation": passengers(1)[0]}).status_code == 200

    assert "challenger" not in client.get("/model").get_json()
    assert [row[2:] for row in stored(service)] == [(None, None)]
    service.DB.close_all()


@BOTH
def test_compare_puts_the_two_models_side_by_side_on_the_labelled_predictions_both_scored(
    database_url, tmp_path, challengers
):
    artifacts = beside_the_example(tmp_path, challengers["forest"])
    service = import_app(database_url, ARTIFACTS_DIR=str(artifacts))
    client = service.app.test_client()
    observations = passengers(120)
    _, outcomes = titanic_frame()
    for i, observation in enumerate(observations):
        assert client.post("/predict", json={"id": i, "observation": observation}).status_code == 200
    for i in range(100):  # 20 not labelled yet
        assert client.post("/update", json={"id": i, "true_class": int(outcomes[i])}).status_code == 200

    whole, window = (client.get(path).get_json() for path in ("/compare", "/compare?hours=1"))

    [found] = whole["comparisons"]
    assert window["comparisons"] == whole["comparisons"]
    assert (found["model_version"], found["challenger_version"]) == (
        service.MODEL_VERSION,
        client.get("/model").get_json()["challenger"]["model_version"],
    )
    assert (found["scored"], found["challenger_failed"], found["pairs"]) == (120, 0, 100)
    truth = outcomes[:100].to_numpy()
    running = expected_probas(artifacts, observations[:100])
    shadow = expected_probas(artifacts / "challenger", observations[:100])
    auc = found["metrics"]["roc_auc"]
    assert auc["running"] == pytest.approx(roc_auc_score(truth, running), abs=1e-12)
    assert auc["challenger"] == pytest.approx(roc_auc_score(truth, shadow), abs=1e-12)
    expected = compare(truth, running, shadow)  # from the models' own predict_proba
    assert (found["verdict"], found["pairs_to_settle"]) == (expected["verdict"], expected["pairs_to_settle"])
    for name, figures in expected["metrics"].items():
        assert found["metrics"][name]["difference"] == pytest.approx(figures["difference"], abs=1e-9)
        assert found["metrics"][name]["interval"] == pytest.approx(figures["interval"], abs=1e-9)
    # Archived, the pairs still count: archived_prediction keeps the challenger's answer.
    with service.DB.connection_context():
        archive.archive(service.DB, "prediction", datetime(2100, 1, 1), tmp_path / "archive.csv", 50)
    assert service.Prediction.select().count() == 0
    [archived] = client.get("/compare").get_json()["comparisons"]
    assert (archived["scored"], archived["pairs"], archived["verdict"]) == (120, 100, found["verdict"])
    for name, figures in found["metrics"].items():  # added up in another order: equal to rounding
        assert archived["metrics"][name]["running"] == pytest.approx(figures["running"], abs=1e-12)
        assert archived["metrics"][name]["interval"] == pytest.approx(figures["interval"], abs=1e-12)
    service.DB.close_all()


@SQLITE
def test_compare_without_a_challenger_has_nothing_to_compare(database_url):
    service = import_app(database_url)
    client = service.app.test_client()
    assert client.post("/predict", json={"id": 1, "observation": passengers(1)[0]}).status_code == 200

    assert client.get("/compare").get_json()["comparisons"] == []
    service.DB.close_all()
