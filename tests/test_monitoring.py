"""/model and /stats, on both backends: what is running, and how well it does on labelled rows."""

from datetime import timedelta

import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from support import EXAMPLE_DIR

PASSENGERS = pd.read_csv(EXAMPLE_DIR / "titanic.csv").head(120)


def observation(row):
    return {
        name: (None if pd.isna(row[name]) else row[name].item() if hasattr(row[name], "item") else row[name])
        for name in ["Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Cabin", "Embarked"]
    }


def replay(client, passengers, label=True):
    """Predict every passenger, then report their true outcome; return the probas."""
    probas = []
    for i, row in passengers.iterrows():
        response = client.post("/predict", json={"id": int(i), "observation": observation(row)})
        probas.append(response.get_json()["proba"])
        if label:
            client.post("/update", json={"id": int(i), "true_class": int(row.Survived)})
    return probas


def test_model_describes_the_features_the_classes_and_the_versions(client, service):
    card = client.get("/model").get_json()

    assert card["model_version"] == service.MODEL_VERSION == card["pipeline_sha256"][:12]
    assert card["positive_class"] == 1
    assert [feature["name"] for feature in card["features"]] == service.COLUMNS
    features = {feature["name"]: feature for feature in card["features"]}
    assert features["Age"] == {"name": "Age", "dtype": "float64", "accepts": "number"}
    assert features["Sex"]["categories"] == ["female", "male"]
    assert features["Embarked"]["categories"] == ["C", "Q", "S"]
    for package, versions in card["versions"].items():
        assert versions["running"] == versions["trained_with"], package


def test_stats_on_an_empty_table(client):
    body = client.get("/stats").get_json()
    assert body == {
        "window_hours": None,
        "overall": {"predictions": 0, "labelled": 0},
        "by_model_version": {},
    }


def test_stats_match_scikit_learn_on_the_labelled_predictions(client, service):
    probas = replay(client, PASSENGERS)
    replay(client, PASSENGERS.tail(20).rename(index=lambda i: i + 10_000), label=False)  # unlabelled
    truth = PASSENGERS.Survived.to_numpy()

    body = client.get("/stats").get_json()

    for summary in (body["overall"], body["by_model_version"][service.MODEL_VERSION]):
        assert summary["predictions"] == 140
        assert summary["labelled"] == 120
        assert summary["roc_auc"] == pytest.approx(roc_auc_score(truth, probas), abs=1e-6)
        assert summary["log_loss"] == pytest.approx(log_loss(truth, probas), abs=1e-6)
        assert summary["brier_score"] == pytest.approx(brier_score_loss(truth, probas), abs=1e-6)
        assert summary["predicted_positive_rate"] == pytest.approx(sum(probas) / 120, abs=1e-6)
        assert summary["observed_positive_rate"] == pytest.approx(truth.mean(), abs=1e-6)


def test_stats_count_tied_probas_as_half_in_the_auc(client):
    same_passenger = pd.concat([PASSENGERS.head(1)] * 4, ignore_index=True)
    same_passenger["Survived"] = [1, 0, 0, 1]
    replay(client, same_passenger)
    assert client.get("/stats").get_json()["overall"]["roc_auc"] == 0.5


def test_stats_per_model_version_and_over_a_window(client, service):
    replay(client, PASSENGERS.head(40))
    older = service.Prediction.observation_id < 20
    service.Prediction.update(
        model_version="oldmodel0000", created_at=service.utc_now() - timedelta(days=3)
    ).where(older).execute()

    everything = client.get("/stats").get_json()
    recent = client.get("/stats?hours=24").get_json()

    assert set(everything["by_model_version"]) == {"oldmodel0000", service.MODEL_VERSION}
    assert everything["by_model_version"]["oldmodel0000"]["labelled"] == 20
    assert everything["overall"]["labelled"] == 40
    assert recent["window_hours"] == 24
    assert set(recent["by_model_version"]) == {service.MODEL_VERSION}
    assert recent["overall"]["predictions"] == 20


@pytest.mark.parametrize("hours", ["abc", "0", "-5", "nan", "1e9", "inf", "\u0663", "\u00b2", "1e3"])
def test_stats_window_must_be_a_positive_number_of_hours(client, hours):
    response = client.get(f"/stats?hours={hours}")
    assert response.status_code == 400
    assert "'hours' must be a positive number of hours" in response.get_json()["error"]


def test_health_ready_model_and_stats_write_nothing(client, service):
    replay(client, PASSENGERS.head(3))
    before = [(row.observation_id, row.true_class, row.updated_at) for row in service.Prediction.select()]
    for path in ("/health", "/ready", "/model", "/stats"):
        assert client.get(path).status_code == 200
    assert [
        (row.observation_id, row.true_class, row.updated_at) for row in service.Prediction.select()
    ] == before
