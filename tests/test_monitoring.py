"""/model and /stats, on both backends: what is running, and how well it does on labelled rows."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from tools.servers import EXAMPLE_DIR

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
    assert [feature["name"] for feature in card["features"]] == service.MODEL.columns
    features = {feature["name"]: feature for feature in card["features"]}
    # typical: the training profile's median (numbers) or commonest value
    assert features["Age"] == {"name": "Age", "dtype": "float64", "accepts": "number", "typical": 28.5}
    assert features["Embarked"]["typical"] == "S"
    assert features["Sex"]["categories"] == ["female", "male"]
    assert features["Embarked"]["categories"] == ["C", "Q", "S"]
    for package, versions in card["versions"].items():
        assert versions["running"] == versions["trained_with"], package


def test_stats_on_an_empty_table(client, service):
    before = service.utc_now()
    body = client.get("/stats").get_json()
    as_of = body.pop("as_of")
    assert body == {
        "window_hours": None,
        "since": None,
        "overall": {"predictions": 0, "labelled": 0},
        "by_model_version": {},
    }
    assert before <= datetime.fromisoformat(as_of.removesuffix("Z")) <= service.utc_now()


def test_stats_match_scikit_learn_on_the_labelled_predictions(client, service):
    probas = replay(client, PASSENGERS)
    replay(client, PASSENGERS.tail(20).rename(index=lambda i: i + 10_000), label=False)  # unlabelled
    truth = PASSENGERS.Survived.to_numpy()

    body = client.get("/stats").get_json()

    for summary in (body["overall"], body["by_model_version"][service.MODEL_VERSION]):
        assert summary["predictions"] == 140
        assert summary["labelled"] == 120
        assert summary["roc_auc"] == pytest.approx(roc_auc_score(truth, probas), abs=1e-6)
        assert summary["roc_auc_max_error"] == 0  # few rows in doubtful bins: all read, exact
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


@pytest.mark.parametrize(
    "hours", ["abc", "0", "-5", "nan", "1e9", "inf", "\u0663", "\u00b2", "1e9999", "1e-9999"]
)
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


def test_a_window_starts_at_an_hour_or_for_longer_windows_at_midnight_utc(client, service):
    now = service.utc_now()
    for hours, start in [
        (24, (now - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)),
        (0.5, (now - timedelta(minutes=30)).replace(minute=0, second=0, microsecond=0)),
        (72, (now - timedelta(hours=72)).replace(hour=0, minute=0, second=0, microsecond=0)),
    ]:
        body = client.get(f"/stats?hours={hours}").get_json()
        assert body["window_hours"] == hours
        # The hour may turn between `now` here and there; the start is one of the two.
        assert body["since"] in {
            f"{start.isoformat()}Z",
            f"{(start + timedelta(hours=1 if hours <= 48 else 24)).isoformat()}Z",
        }


def test_stats_include_the_calibration_table_and_the_histogram_of_labelled_probas(client, service):
    probas = np.array(replay(client, PASSENGERS))
    truth = PASSENGERS.Survived.to_numpy()

    for summary in (
        client.get("/stats").get_json()["overall"],
        client.get("/stats?hours=1").get_json()["overall"],
    ):
        assert [row["from"] for row in summary["calibration"]] == pytest.approx(np.arange(10) / 10)
        for row in summary["calibration"]:
            inside = (probas >= row["from"]) & (probas < row["to"])
            assert row["labelled"] == inside.sum()
            if inside.any():
                assert row["mean_proba"] == pytest.approx(probas[inside].mean(), abs=1e-6)
                assert row["observed_positive_rate"] == pytest.approx(truth[inside].mean(), abs=1e-6)
            else:
                assert row["mean_proba"] is row["observed_positive_rate"] is None
        for row in summary["histogram"]:
            inside = (probas >= row["from"]) & (probas < row["to"])
            assert (row["positives"], row["negatives"]) == (truth[inside].sum(), (truth[inside] == 0).sum())


def test_series_has_a_point_per_hour_and_per_day_equal_to_the_rows_in_it(client, service):
    probas = replay(client, PASSENGERS)
    now = service.utc_now()
    made = {}  # id -> created_at: spread over the last three days
    for i in PASSENGERS.index:
        made[i] = now - timedelta(hours=int(i) % 70)
        service.Prediction.update(created_at=made[i]).where(
            service.Prediction.observation_id == int(i)
        ).execute()
    truth = dict(zip(PASSENGERS.index, PASSENGERS.Survived, strict=True))
    proba = dict(zip(PASSENGERS.index, probas, strict=True))

    for every, length in [("hour", timedelta(hours=1)), ("day", timedelta(days=1))]:
        body = client.get(f"/stats/series?every={every}&hours=72").get_json()
        points = body["by_model_version"][service.MODEL_VERSION]
        assert [point["start"] for point in points] == sorted(point["start"] for point in points)
        for point in points:
            start = datetime.fromisoformat(point["start"].removesuffix("Z"))
            ids = [i for i, at in made.items() if start <= at < start + length]
            assert point["predictions"] == point["labelled"] == len(ids)
            assert point["observed_positive_rate"] == pytest.approx(
                np.mean([truth[i] for i in ids]), abs=1e-6
            )
            assert point["predicted_positive_rate"] == pytest.approx(
                np.mean([proba[i] for i in ids]), abs=1e-6
            )
            both_classes = len({truth[i] for i in ids}) == 2
            if both_classes:
                exact = roc_auc_score([truth[i] for i in ids], [proba[i] for i in ids])
                assert abs(point["roc_auc"] - exact) <= point["roc_auc_max_error"] + 1e-6
            else:
                assert point["roc_auc"] is None
        assert sum(point["predictions"] for point in points) == len(PASSENGERS)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("every=week", "'every' must be one of ['hour', 'day']; got 'week'"),
        ("every=hour&hours=401", "'hours' may be at most 400 with every=hour (400 points); got 401"),
        ("every=day&hours=9601", "'hours' may be at most 9600 with every=day (400 points); got 9601"),
        ("hours=0", "'hours' must be a positive number of hours; got '0'"),
        ("every=day&from=2026", "/stats/series takes 'every' and 'hours'; got ['from']"),
    ],
)
def test_series_refuses_bad_arguments(client, query, message):
    response = client.get(f"/stats/series?{query}")
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


@pytest.mark.parametrize(("query", "window"), [("every=hour", 48), ("", 720), ("every=hour&hours=1e2", 100)])
def test_series_reaches_back_two_days_by_the_hour_and_thirty_by_the_day(client, query, window):
    response = client.get(f"/stats/series?{query}")
    assert response.status_code == 200
    assert response.get_json()["window_hours"] == window
