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
from test_comparison import from_counts

from conftest import import_app
from models import UNSCORABLE_FARE, titanic_challenger, titanic_challenger_failing_on_one_fare, titanic_frame
from service import archive
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


def served(database_url, artifacts, observations, labelled):
    """app.py serving `artifacts`, after /predict of each observation (ids 0, 1, ...) and /update
    of the first `labelled` with the passengers' outcomes: (the app's module, its test client)."""
    service = import_app(database_url, ARTIFACTS_DIR=str(artifacts))
    client = service.app.test_client()
    _, outcomes = titanic_frame()
    for i, observation in enumerate(observations):
        assert client.post("/predict", json={"id": i, "observation": observation}).status_code == 200
    for i in range(labelled):
        assert client.post("/update", json={"id": i, "true_class": int(outcomes[i])}).status_code == 200
    return service, client


def rounded(found, digits=12):
    """`found` with every float rounded, for figures added up in different orders."""
    if isinstance(found, dict):
        return {key: rounded(value, digits) for key, value in found.items()}
    if isinstance(found, list):
        return [rounded(value, digits) for value in found]
    return round(found, digits) if isinstance(found, float) else found


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
    observations = passengers(120)
    service, client = served(database_url, artifacts, observations, labelled=100)  # 20 not labelled yet
    _, outcomes = titanic_frame()

    whole, window = (client.get(path).get_json() for path in ("/compare", "/compare?hours=1"))

    [found] = whole["comparisons"]
    assert rounded(window["comparisons"]) == rounded(whole["comparisons"])  # summed in another order
    assert (found["model_version"], found["challenger_version"]) == (
        service.MODEL_VERSION,
        client.get("/model").get_json()["challenger"]["model_version"],
    )
    assert (found["scored"], found["challenger_failed"], found["pairs"]) == (120, 0, 100)
    truth = outcomes[:100].to_numpy()
    running = expected_probas(artifacts, observations[:100])
    shadow = expected_probas(artifacts / "challenger", observations[:100])
    auc = found["metrics"]["roc_auc"]
    assert abs(auc["running"] - roc_auc_score(truth, running)) <= auc["max_error"]
    assert abs(auc["challenger"] - roc_auc_score(truth, shadow)) <= auc["max_error"]
    # The counts the triggers kept are the ones counted here from the models' own predict_proba.
    expected = from_counts(truth, running, shadow)
    assert (found["verdict"], found["pairs_to_settle"]) == (expected["verdict"], expected["pairs_to_settle"])
    for name, figures in expected["metrics"].items():
        for figure in ("running", "challenger", "difference", "interval", "max_error"):
            assert found["metrics"][name].get(figure) == pytest.approx(figures.get(figure), abs=1e-9)
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


def recount(service):
    """/compare's comparisons as the rows and the archived ones say: (model_version,
    challenger_version) -> (scored, failed, from_counts() of the labelled pairs)."""
    columns = "model_version, challenger_version, true_class, proba, challenger_proba"
    query = " UNION ALL ".join(
        f"SELECT {columns} FROM {table} WHERE challenger_version IS NOT NULL"
        for table in ("prediction", "archived_prediction")
    )
    with service.DB.connection_context():
        rows = service.DB.execute_sql(query).fetchall()
    found = {}
    for versions in {tuple(row[:2]) for row in rows}:
        mine = [row[2:] for row in rows if tuple(row[:2]) == versions]
        labelled = np.array([row for row in mine if row[0] is not None and row[2] is not None], dtype=float)
        labelled = labelled.reshape(-1, 3)
        compared = from_counts(labelled[:, 0].astype(int), labelled[:, 1], labelled[:, 2])
        found[versions] = (len(mine), sum(row[2] is None for row in mine), compared)
    return found


def assert_compare_is_the_recount(client, service):
    answered = client.get("/compare").get_json()["comparisons"]
    expected = recount(service)
    assert {(found["model_version"], found["challenger_version"]) for found in answered} == set(expected)
    for found in answered:
        scored, failed, compared = expected[found["model_version"], found["challenger_version"]]
        assert (found["scored"], found["challenger_failed"], found["pairs"]) == (
            scored,
            failed,
            compared["pairs"],
        )
        for name, figures in compared["metrics"].items():
            for figure in ("running", "difference", "interval", "max_error"):
                assert found["metrics"][name].get(figure) == pytest.approx(figures.get(figure), abs=1e-9)


@BOTH
def test_the_counts_compare_reads_follow_every_change_to_the_rows(database_url, tmp_path, challengers):
    """Labels, corrected labels, an operator's deletes and edits, an archive and (PostgreSQL) a
    TRUNCATE: after each, /compare is what the rows (and the archived ones) say."""
    artifacts = beside_the_example(tmp_path, challengers["failing on one fare"])
    observations = passengers(80)
    observations[3]["Fare"] = UNSCORABLE_FARE  # the challenger fails on it
    service, client = served(database_url, artifacts, observations, labelled=70)
    _, outcomes = titanic_frame()
    assert_compare_is_the_recount(client, service)

    for i in range(0, 20, 2):  # corrected labels
        assert client.post("/update", json={"id": i, "true_class": 1 - int(outcomes[i])}).status_code == 200
    with service.DB.connection_context():
        service.DB.execute_sql("DELETE FROM prediction WHERE observation_id IN (5, 6, 75)")
        service.DB.execute_sql("UPDATE prediction SET challenger_proba = 0.5 WHERE observation_id = 7")
        service.DB.execute_sql(
            "UPDATE prediction SET challenger_version = 'by hand' WHERE observation_id = 8"
        )
        service.DB.execute_sql("UPDATE prediction SET true_class = NULL WHERE observation_id = 9")
    assert_compare_is_the_recount(client, service)

    with service.DB.connection_context():
        archive.archive(service.DB, "prediction", datetime(2100, 1, 1), tmp_path / "archive.csv", 30)
    for i, observation in enumerate(passengers(10, start=100), start=100):  # and more since
        assert client.post("/predict", json={"id": i, "observation": observation}).status_code == 200
        assert client.post("/update", json={"id": i, "true_class": i % 2}).status_code == 200
    assert_compare_is_the_recount(client, service)

    if database_url.startswith("postgresql"):
        with service.DB.connection_context():
            service.DB.execute_sql("TRUNCATE prediction")
        assert_compare_is_the_recount(client, service)
    service.DB.close_all()
