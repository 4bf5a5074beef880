"""Before the labels come: GET /drift and the expected quality, for the example and two other models.

Each model's held-back rows are its traffic: as they are (no drift: nothing flagged), and with one
numeric feature shifted by a standard deviation (flagged on that feature only). /drift's PSI must
equal what Step 3 computes from the stored observations (profile.Profile.psi_of) to 1e-9, and the
counts it reads must agree with the rows whatever changes them.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from playhouse.db_url import connect
from sklearn.metrics import roc_auc_score

from conftest import client_on_an_empty_table, fresh_database_url, import_app
from models import OTHER_MODELS
from service import archive
from service.monitoring import population
from service.monitoring.drift import MIN_ROWS
from service.monitoring.periods import EPOCH
from service.monitoring.population import PROBA_BINS, ProbaBins
from service.monitoring.profile import Profile, decode
from tools import replay_example
from tools.example import EXAMPLE_DIR

MODELS = ["titanic", *OTHER_MODELS]
DRIFT_BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module")
def model_dirs(other_model_dirs):
    return {"titanic": EXAMPLE_DIR} | other_model_dirs


@pytest.fixture(
    scope="module",
    params=[(model, backend) for model in MODELS for backend in DRIFT_BACKENDS],
    ids=[f"{model}-{backend}" for model in MODELS for backend in DRIFT_BACKENDS],
)
def scoring(request, model_dirs, tmp_path_factory):
    """app.py serving one model on a fresh database, and the model's held-back rows."""
    model, backend = request.param
    url = fresh_database_url(backend, f"drift_{model.replace('-', '_')}", request, tmp_path_factory)
    module = import_app(url, ARTIFACTS_DIR=str(model_dirs[model]))
    if model == "titanic":
        held_back = replay_example.held_back_passengers()
    else:
        held_back = pd.read_csv(model_dirs[model] / "held_back.csv")
    yield module, held_back[module.MODEL.columns].reset_index(drop=True)
    module.DB.close_all()


def observations(frame):
    return json.loads(frame.to_json(orient="records"))  # NaN becomes null


def send(client, frame):
    for number, observation in enumerate(observations(frame)):
        answer = client.post("/predict", json={"id": number, "observation": observation})
        assert answer.status_code == 200, answer.get_json()


def stored_frame(module):
    """The stored observations, read back as Step 3 reads them."""
    rows = module.Prediction.select(module.Prediction.observation).order_by(module.Prediction.id)
    return pd.DataFrame([json.loads(row.observation) for row in rows], columns=module.MODEL.columns)


def drift_of(client, module, query=""):
    answer = client.get(f"/drift{query}")
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["by_model_version"][module.MODEL_VERSION]


def assert_equals_step_3(module, found):
    expected = module.PROFILES.running().psi_of(stored_frame(module))
    assert {feature["name"] for feature in found["features"]} == set(module.MODEL.columns)
    for feature in found["features"]:
        assert feature["psi"] == pytest.approx(expected[feature["name"]], abs=1e-9, rel=0)
    psis = [feature["psi"] for feature in found["features"]]
    assert psis == sorted(psis, reverse=True)  # worst first


def shifted_feature(module):
    """The first feature binned by deciles: a number with many values."""
    return next(feature.name for feature in module.PROFILES.running().features if feature.kind == "deciles")


def shifted(values):
    """The values one standard deviation up (whole numbers stay whole)."""
    moved = values + values.std()
    return moved.round().astype(values.dtype) if pd.api.types.is_integer_dtype(values) else moved


def test_the_held_back_rows_as_they_are_are_not_flagged(scoring):
    module, held_back = scoring
    client = client_on_an_empty_table(module)
    send(client, held_back)

    found = drift_of(client, module)
    print({feature["name"]: round(feature["psi"], 4) for feature in found["features"]})

    assert found["rows"] == found["predictions"] == len(held_back) >= MIN_ROWS
    assert not found["too_few_rows"]
    assert found["drifted"] == []
    assert_equals_step_3(module, found)
    assert drift_of(client, module, "?hours=1") == found  # every row is from the last hour


def test_a_stream_with_one_shifted_feature_is_flagged_on_that_feature_only(scoring):
    module, held_back = scoring
    client = client_on_an_empty_table(module)
    name = shifted_feature(module)
    drifted = held_back.assign(**{name: shifted(held_back[name])})
    send(client, drifted)

    found = drift_of(client, module)
    print({feature["name"]: round(feature["psi"], 4) for feature in found["features"]})

    assert found["drifted"] == [name]
    assert found["features"][0]["name"] == name
    assert found["features"][0]["unseen"] > 0 or found["features"][0]["psi"] > 0.5
    assert_equals_step_3(module, found)


def test_stats_give_the_expected_quality_of_every_prediction_and_the_test_sets(scoring):
    module, held_back = scoring
    client = client_on_an_empty_table(module)
    send(client, held_back.head(40))
    stats = client.get("/stats").get_json()
    found = stats["by_model_version"][module.MODEL_VERSION]
    series = client.get("/stats/series?every=hour&hours=2").get_json()["by_model_version"]

    rows = module.Prediction.select(module.Prediction.proba, module.Prediction.created_at)
    probas = [row.proba for row in rows]
    expected = bins_of(probas)
    assert found["labelled"] == 0  # no label yet: the expected quality needs none
    assert found["expected_roc_auc"] == pytest.approx(expected.expected_roc_auc(), abs=1e-6)
    assert found["expected_positive_rate"] == pytest.approx(np.mean(probas), abs=1e-6)
    assert found["test_roc_auc"] == module.PROFILES.running().test["roc_auc"]
    assert stats["overall"]["expected_roc_auc"] == found["expected_roc_auc"]
    for point in series[module.MODEL_VERSION]:  # one per hour (two if the sending crossed one)
        hour = pd.Timestamp(point["start"]).tz_localize(None)
        in_hour = [
            row.proba for row in rows if hour <= pd.Timestamp(row.created_at) < hour + pd.Timedelta(hours=1)
        ]
        assert point["expected_roc_auc"] == pytest.approx(bins_of(in_hour).expected_roc_auc(), abs=1e-6)


def bins_of(probas):
    bins = ProbaBins()
    for proba in probas:
        bins.add(min(int(proba * 10_000), 9_999) // (10_000 // PROBA_BINS), 1, proba, proba * proba)
    return bins


def test_few_rows_are_not_judged_an_empty_window_says_so_and_bad_windows_are_refused(scoring):
    module, held_back = scoring
    client = client_on_an_empty_table(module)
    empty = client.get("/drift?hours=0.5").get_json()
    assert empty["by_model_version"] == {}
    assert empty["message"] == "no predictions in the last 0.5 hours: nothing to compare with training"

    name = shifted_feature(module)
    send(client, held_back.head(10).assign(**{name: held_back[name].head(10) * 10}))
    found = drift_of(client, module)
    assert found["rows"] == 10
    assert found["too_few_rows"]
    assert found["drifted"] == []

    for hours in ("0", "-3", "soon", "1e99"):
        refused = client.get(f"/drift?hours={hours}")
        assert refused.status_code == 400
        assert "'hours'" in refused.get_json()["error"]


# The estimate, on simulated data: each outcome drawn from its probability, so calibrated by construction.
def simulated(rows=10_000, seed=0):
    rng = np.random.default_rng(seed)
    probas = rng.beta(2, 3, rows)
    return probas, rng.random(rows) < probas


def exact_expected_roc_auc(probas):
    """The same estimate without bins: every pair i != j, ordered by proba, ties counting half."""
    order = np.argsort(probas, kind="stable")
    p = probas[order]
    negatives_below = np.cumsum(1 - p) - (1 - p)
    pairs = p.sum() * (len(p) - p.sum()) - (p.sum() - (p * p).sum())
    return float((p * negatives_below).sum() / pairs)


def test_the_expected_roc_auc_of_calibrated_probabilities_is_the_realised_one_within_0_01():
    probas, outcomes = simulated()
    expected = bins_of(probas).expected_roc_auc()
    realised = roc_auc_score(outcomes, probas)
    print(f"expected {expected:.4f}, realised {realised:.4f}, unbinned {exact_expected_roc_auc(probas):.4f}")

    assert abs(expected - realised) < 0.01
    assert abs(expected - exact_expected_roc_auc(probas)) < 1e-3  # bins of 1/100 cost little


def test_the_expected_roc_auc_parts_from_the_realised_one_when_the_probabilities_are_not_calibrated():
    probas, outcomes = simulated()
    logits = np.log(probas / (1 - probas))
    for name, factor in (("overconfident", 3.0), ("underconfident", 0.3)):
        reported = 1 / (1 + np.exp(-factor * logits))  # the same ranking, other probabilities
        expected = bins_of(reported).expected_roc_auc()
        realised = roc_auc_score(outcomes, reported)
        print(f"{name}: expected {expected:.4f}, realised {realised:.4f}")
        assert abs(expected - realised) > 0.05


# The counts /drift and the expected quality read, against the rows, whatever changes them.
def recount(database):
    """stats_proba and stats_feature as the rows (and the archived ones) say they should be."""
    rows = database.execute_sql(
        "SELECT model_version, created_at, proba, feature_bins FROM prediction UNION ALL "
        "SELECT model_version, created_at, proba, feature_bins FROM archived_prediction"
    ).fetchall()
    probas, features = {}, {}
    for version, created_at, proba, bins in rows:
        for level, period in periods_of(created_at):
            cell = probas.setdefault((level, period, version, min(int(proba * 100), 99)), [0, 0.0, 0.0])
            cell[0], cell[1], cell[2] = cell[0] + 1, cell[1] + proba, cell[2] + proba * proba
            for position, code in enumerate(bins or "", start=1):
                key = (level, period, version, position, code)
                features[key] = features.get(key, 0) + 1
    return probas, features


def periods_of(created_at):
    if created_at is None:
        return [(0, 0), (2, -1), (3, -1)]
    if isinstance(created_at, str):
        created_at = pd.Timestamp(created_at).to_pydatetime()
    hour = math.floor((created_at - EPOCH).total_seconds() / 3600)
    return [(0, 0), (2, hour // 24), (3, hour)]


def stored_counts(database):
    probas = {
        tuple(row[:4]): [row[4], row[5], row[6]]
        for row in database.execute_sql("SELECT * FROM stats_proba WHERE predictions != 0").fetchall()
    }
    features = {
        tuple(row[:5]): row[5]
        for row in database.execute_sql("SELECT * FROM stats_feature WHERE predictions != 0").fetchall()
    }
    return probas, features


def assert_counts_match_the_rows(database):
    expected_probas, expected_features = recount(database)
    probas, features = stored_counts(database)
    assert features == expected_features
    assert probas.keys() == expected_probas.keys()
    for key, (count, total, squares) in probas.items():
        assert count == expected_probas[key][0]
        assert total == pytest.approx(expected_probas[key][1], abs=1e-9)
        assert squares == pytest.approx(expected_probas[key][2], abs=1e-9)


@pytest.mark.parametrize("database_url", DRIFT_BACKENDS, indirect=True)
def test_the_counts_follow_every_change_to_the_rows_and_keep_the_archived_ones(database_url, tmp_path):
    module = import_app(database_url)
    client = module.app.test_client()
    send(client, replay_example.held_back_passengers()[module.MODEL.columns].head(60))
    client.post("/update", json={"id": 3, "true_class": 1})  # a label moves none of these counts
    database = connect(database_url)
    database.execute_sql("UPDATE prediction SET proba = 0.999 WHERE observation_id < 5")
    database.execute_sql("UPDATE prediction SET feature_bins = NULL WHERE observation_id = 7")
    database.execute_sql("UPDATE prediction SET model_version = 'other' WHERE observation_id BETWEEN 8 AND 9")
    moved = (
        "created_at - INTERVAL '2 days'"
        if "postgresql" in database_url
        else "datetime(created_at, '-2 days')"
    )
    database.execute_sql(f"UPDATE prediction SET created_at = {moved} WHERE observation_id BETWEEN 10 AND 29")
    database.execute_sql("DELETE FROM prediction WHERE observation_id BETWEEN 50 AND 54")
    assert_counts_match_the_rows(database)

    archive.archive(database, "prediction", module.utc_now() - pd.Timedelta(days=1), tmp_path / "old.csv")
    assert database.execute_sql("SELECT COUNT(*) FROM archived_prediction").fetchone()[0] == 20
    assert_counts_match_the_rows(database)  # the archived rows stay counted
    if "postgresql" in database_url:
        database.execute_sql("TRUNCATE prediction")
        assert_counts_match_the_rows(database)
    population.install(database, "prediction")  # a rebuild from the rows gives the same counts
    assert_counts_match_the_rows(database)
    module.DB.close_all()


def test_each_bin_character_names_one_bin_and_whether_training_saw_the_value():
    profile = Profile(json.loads((EXAMPLE_DIR / "training_profile.json").read_text()))
    age = next(feature for feature in profile.features if feature.name == "Age")
    cabin = next(feature for feature in profile.features if feature.name == "Cabin")
    labels = age.labels()

    assert [decode(age.code(value)) for value in (14.0, 14.01, None, 120.0, 0.1)] == [
        (0, False), (1, False), (len(labels) - 1, False), (len(labels) - 2, True), (0, True),
    ]  # fmt: skip
    assert labels[:2] == ["<= 14", "(14, 19]"]
    assert labels[-1] == "(missing)"
    assert decode(cabin.code(cabin.labels()[0])) == (0, False)  # the commonest cabin
    assert decode(cabin.code("E12")) == (len(cabin.training) - 2, False)  # a rarer one: "(other)", seen
    assert decode(cabin.code("Z99")) == (len(cabin.training) - 2, True)  # never seen
    assert "E12" not in (EXAMPLE_DIR / "training_profile.json").read_text()  # rare values only hashed
