"""The service's contract for whatever model sits at the top of the repository, and two others.

Nothing here knows the Titanic: every request is built from the model's own schema (its
features, their dtypes, the categories it saw in training) and, where model_meta.json names one,
rows of its training file. The same tests run on the top-level artifacts, on a model of 30 float
features whose names have spaces, and on a churn model with str, int64, float64 (with missing
values), bool and category inputs trained on the string labels "churn" and "stay".
"""

import hashlib
import json
import shutil
import subprocess
import sys

import joblib
import pandas as pd
import pytest
from markupsafe import escape

from conftest import BACKENDS, client_on_an_empty_table, fresh_database_url, import_app
from models import COPIED_OVER, OTHER_MODELS
from service.model_card import example_observation
from tools.check_model import sample_rows, wrong_value
from tools.servers import REPO

MODELS = ["top-level", *OTHER_MODELS, *COPIED_OVER]


@pytest.fixture(scope="session")
def model_dirs(other_model_dirs):
    return {"top-level": REPO} | other_model_dirs


# Files copied over another model's are a matter of files, not of databases: one backend is enough.
SERVED = [(model, backend) for model in MODELS for backend in BACKENDS[: 1 if model in COPIED_OVER else None]]


@pytest.fixture(scope="session", params=SERVED, ids=[f"{model}-{backend}" for model, backend in SERVED])
def your_service(request, model_dirs, tmp_path_factory):
    """app.py serving one of the models, on a fresh database of one backend."""
    model, backend = request.param
    name = f"yours_{model.replace('-', '_')}"
    url = fresh_database_url(backend, name, request, tmp_path_factory)
    module = import_app(url, ARTIFACTS_DIR=str(model_dirs[model]))
    module.artifacts_dir = model_dirs[model]
    yield module
    module.DB.close_all()


@pytest.fixture
def client(your_service):
    return client_on_an_empty_table(your_service)


@pytest.fixture
def card(client):
    return client.get("/model").get_json()


@pytest.fixture
def rows(your_service):
    """Rows of the model's training file, where model_meta.json names one that is there."""
    meta_path = your_service.artifacts_dir / "model_meta.json"
    trained_on = json.loads(meta_path.read_text()).get("trained_on") if meta_path.is_file() else None
    path = your_service.artifacts_dir / trained_on if trained_on else None
    return sample_rows(path, your_service.MODEL.columns, most=20) if path and path.is_file() else []


@pytest.fixture
def observation(card, rows):
    return example_observation(card["features"], rows[0] if rows else None)


def predict(client, observation_id, observation):
    return client.post("/predict", json={"id": observation_id, "observation": observation})


def another_value(feature, value):
    """A different valid value for the feature, or None when there is none to choose."""
    others = [category for category in feature.get("categories", []) if category != value]
    if others:
        return others[0]
    if feature["accepts"] in ("number", "integer") and value is not None:
        return value + 1
    return {"boolean": not value if isinstance(value, bool) else True}.get(feature["accepts"])


def test_the_model_card_names_the_classes_as_plain_json(client, your_service):
    card = client.get("/model").get_json()
    classes = joblib.load(your_service.artifacts_dir / "pipeline.pickle").classes_.tolist()
    assert card["classes"] == classes
    assert card["positive_class"] == classes[1]
    assert [feature["name"] for feature in card["features"]] == your_service.MODEL.columns


def test_an_observation_built_from_the_schema_is_scored_and_committed(client, your_service, observation):
    response = predict(client, 1, observation)

    assert response.status_code == 200, response.get_json()
    assert 0 <= response.get_json()["proba"] <= 1
    [row] = your_service.Prediction.select()
    assert row.proba == response.get_json()["proba"]
    assert list(json.loads(row.observation)) == your_service.MODEL.columns


def test_every_training_row_sent_as_json_is_scored_like_the_pipeline_does(client, your_service, rows):
    if not rows:
        pytest.skip("model_meta.json names no training file that is here")
    meta = json.loads((your_service.artifacts_dir / "model_meta.json").read_text())
    frame = pd.read_csv(your_service.artifacts_dir / meta["trained_on"], nrows=len(rows))
    frame = frame[your_service.MODEL.columns].astype(your_service.MODEL.dtypes)
    expected = your_service.MODEL.pipeline.predict_proba(frame)[:, 1]
    for i, row in enumerate(rows):
        response = predict(client, i, row)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["proba"] == pytest.approx(expected[i], abs=1e-12)


def test_a_retry_gets_the_stored_answer_and_another_observation_a_409(
    client, your_service, card, observation
):
    first = predict(client, 5, observation)
    retry = predict(client, 5, observation)
    assert retry.get_json() == first.get_json()
    changed = next(
        (
            {**observation, feature["name"]: value}
            for feature in card["features"]
            if (value := another_value(feature, observation[feature["name"]])) is not None
        ),
        None,
    )
    if changed is not None:
        assert predict(client, 5, changed).status_code == 409
    assert your_service.Prediction.select().count() == 1


def test_an_absent_feature_is_named_in_the_answer(client, your_service, observation):
    absent = your_service.MODEL.columns[0]
    response = predict(client, 1, {k: v for k, v in observation.items() if k != absent})

    body = response.get_json()
    if response.status_code == 200:  # the pipeline imputes it
        assert absent in body["warnings"][-1]
        assert "absent" in body["warnings"][-1]
    else:  # the pipeline takes no missing values: the 422 names it
        assert response.status_code == 422
        assert f"{absent}=null" in body["error"]


def test_explicit_nulls_are_not_warned_about(client, your_service, observation):
    response = predict(client, 1, {**observation, your_service.MODEL.columns[0]: None})
    assert "warnings" not in (response.get_json() or {})


def test_a_request_with_none_of_the_features_is_a_400_naming_them(client, your_service, observation):
    lower_case = {name.lower() + "_x": value for name, value in observation.items()}
    for body in ({"id": 1, "observation": lower_case}, {"id": 1, **observation}):
        response = client.post("/predict", json=body)
        assert response.status_code == 400
        assert your_service.MODEL.columns[0] in response.get_json()["error"]
    assert your_service.Prediction.select().count() == 0


def test_a_value_of_the_wrong_type_is_a_400_naming_the_feature(client, your_service, card, observation):
    checked = [feature for feature in card["features"] if wrong_value(feature) is not None]
    for feature in checked:
        response = predict(client, 1, {**observation, feature["name"]: wrong_value(feature)})
        assert response.status_code == 400, (feature, response.get_json())
        assert f"'observation.{feature['name']}'" in response.get_json()["error"]
    assert your_service.Prediction.select().count() == 0


def test_update_takes_0_1_false_true_and_the_models_own_labels(client, card, observation):
    assert predict(client, 1, observation).status_code == 200
    negative, positive = card["classes"]
    for sent, stored in [(positive, 1), (negative, 0), (True, 1), (False, 0), (1, 1), (0, 0)]:
        response = client.post("/update", json={"id": 1, "true_class": sent})
        assert response.status_code == 200, (sent, response.get_json())
        assert response.get_json()["true_class"] == stored
    refused = client.post("/update", json={"id": 1, "true_class": "neither"})
    assert refused.status_code == 400
    assert json.dumps(positive) in refused.get_json()["error"]


def test_stats_measure_the_positive_class(client, card, rows, observation):
    observations = rows[:6] or [observation] * 1
    for i, row in enumerate(observations):
        assert predict(client, i, row).status_code == 200
        client.post("/update", json={"id": i, "true_class": card["classes"][i % 2]})
    overall = client.get("/stats").get_json()["overall"]
    assert overall["predictions"] == overall["labelled"] == len(observations)
    positives = sum(i % 2 for i in range(len(observations)))
    assert overall["observed_positive_rate"] == pytest.approx(positives / len(observations))


def test_the_model_takes_the_fast_path(card):
    """The tutorial's pipeline and the suite's two other models: every step is covered."""
    assert card["calls"]["serves"] == "fast path", card["calls"]
    assert card["calls"]["largest_difference"] <= 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_the_model_check_passes_and_prints_a_curl_for_the_model(model, model_dirs):
    """It passes, unless model_meta.json was left from another model: then that is its one problem."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.check_model", "--artifacts", str(model_dirs[model])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if meta_of_another_pipeline(model_dirs[model]):
        assert result.returncode == 1, result.stdout + result.stderr
        assert "problems: 1\n  - WARNING service.artifacts: model_meta.json describes" in result.stdout
        assert "delete it or write this model's" in result.stdout
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "problems: 0" in result.stdout
    assert "curl -s -X POST http://localhost:5000/predict" in result.stdout
    assert '{"proba": ' in result.stdout
    profile = profile_for_the_pipeline(model_dirs[model])
    if profile is None:  # missing, or another model's (copied with the example)
        assert "training profile: none; " in result.stdout
    else:
        assert f"training profile: {profile['training_rows']} rows" in result.stdout
    assert "called through the fast path (agreed with predict_proba on " in result.stdout


@pytest.mark.slow
def test_make_check_model_checks_the_top_level_model(prod_venv):
    result = subprocess.run(
        ["make", "--no-print-directory", "check-model"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "problems: 0" in result.stdout


@pytest.mark.slow
def test_the_model_check_fails_on_stale_columns_and_says_what_to_do(tmp_path, model_dirs):
    for name in ("pipeline.pickle", "dtypes.pickle", "columns.json"):
        shutil.copy(model_dirs["mixed-dtypes-string-labels"] / name, tmp_path)
    columns = json.loads((tmp_path / "columns.json").read_text())
    (tmp_path / "columns.json").write_text(json.dumps(columns[::-1]))
    pd.read_pickle(tmp_path / "dtypes.pickle")[columns[::-1]].to_pickle(tmp_path / "dtypes.pickle")

    result = subprocess.run(
        [sys.executable, "-m", "tools.check_model", "--artifacts", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 1
    assert "problems: 1" in result.stdout
    assert "in another order" in result.stdout
    assert "write all three files from the same training run" in result.stdout


def schema_verdicts(document, name):
    """A function telling whether a JSON value is valid against the document's schema `name`."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator({"$ref": f"#/components/schemas/{name}", **document})
    return lambda value: validator.is_valid(value)


def test_the_openapi_document_is_valid_and_built_from_the_models_artifacts(client, card):
    from openapi_spec_validator import validate

    document = client.get("/openapi.json").get_json()
    validate(document)  # raises on anything OpenAPI 3.1 does not allow

    assert set(document["paths"]) >= {"/predict", "/update", "/stats", "/stats/series", "/model", "/"}
    properties = document["components"]["schemas"]["Observation"]["properties"]
    assert set(properties) == {feature["name"] for feature in card["features"]}
    for feature in card["features"]:
        described = properties[feature["name"]]
        if feature["accepts"] == "category":
            assert described["enum"] == [*feature["categories"], None]
        else:
            assert "null" in described["type"]
            assert described.get("examples") == feature.get("categories")
    assert document["info"]["version"] == card["model_version"]


def meta_of_another_pipeline(directory):
    path = directory / "model_meta.json"
    sha256 = hashlib.sha256((directory / "pipeline.pickle").read_bytes()).hexdigest()
    return path.is_file() and json.loads(path.read_text()).get("pipeline_sha256") != sha256


def profile_for_the_pipeline(directory):
    """training_profile.json if it is there and describes this pipeline.pickle, else None."""
    path = directory / "training_profile.json"
    if not path.is_file():
        return None
    profile = json.loads(path.read_text())
    sha256 = hashlib.sha256((directory / "pipeline.pickle").read_bytes()).hexdigest()
    return profile if profile.get("pipeline_sha256") == sha256 else None


def test_the_example_everywhere_is_a_typical_training_row(client, card, your_service):
    """The page's try-it line, /openapi.json and the model check all offer the same example: the
    profile's typical row when the model has a profile of its own, else one built from its schema."""
    typical = example_observation(card["features"])
    if your_service.PROFILES.from_file is not None:
        assert typical == your_service.PROFILES.from_file.typical_observation()
    document = client.get("/openapi.json").get_json()
    page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)

    assert example_observation(card["features"]) == typical
    assert document["components"]["schemas"]["Observation"]["examples"] == [typical]
    assert escape(json.dumps({"id": 123456789, "observation": typical})) in page
    assert predict(client, 1, typical).status_code == 200


def test_the_drift_answer_is_what_openapi_json_describes(client, observation):
    document = client.get("/openapi.json").get_json()
    described = document["paths"]["/drift"]["get"]
    is_a_drift_report = schema_verdicts(document, "DriftReport")

    assert [parameter["name"] for parameter in described["parameters"]] == ["hours"]
    assert is_a_drift_report(client.get("/drift").get_json())  # empty
    assert predict(client, 1, observation).status_code == 200
    assert is_a_drift_report(client.get("/drift").get_json())
    assert not is_a_drift_report({"by_model_version": {"x": {"rows": "many"}}})


def test_the_openapi_schemas_accept_and_refuse_what_the_service_does(client, card, observation):
    """The same bodies go to the JSON Schema and to /predict and /update: the verdicts agree (a
    422, the model refusing a well-formed observation, is beyond what a schema can say)."""
    document = client.get("/openapi.json").get_json()
    valid_prediction, valid_update = (
        schema_verdicts(document, name) for name in ("PredictRequest", "UpdateRequest")
    )
    bodies = [
        {"id": 1, "observation": observation},
        {"id": 2, "observation": dict.fromkeys(observation)},  # every feature missing: imputed
        {"id": 3, "observation": {**observation, "not a feature": 1}},  # ignored, with a warning
        {"id": 4, "observation": {}},
        {"id": 2**63, "observation": observation},
        {"observation": observation},
        {"id": 5, "observation": [observation]},
    ] + [
        {"id": 6, "observation": {**observation, feature["name"]: wrong_value(feature)}}
        for feature in card["features"]
        if wrong_value(feature) is not None
    ]
    for body in bodies:
        status = client.post("/predict", json=body).status_code
        assert status in (200, 400, 422), (body, status)
        assert valid_prediction(body) == (status != 400), (body, status)

    negative, positive = card["classes"]
    for true_class in [negative, positive, 0, 1, True, False, "neither", None, [1]]:
        body = {"id": 1, "true_class": true_class}
        status = client.post("/update", json=body).status_code
        assert status in (200, 400), (body, status)
        assert valid_update(body) == (status == 200), (body, status)


def test_the_owners_page_shows_the_models_features_classes_and_figures(client, card, observation):
    assert client.post("/predict", json={"id": 1, "observation": observation}).status_code == 200
    assert client.post("/update", json={"id": 1, "true_class": card["classes"][1]}).status_code == 200
    page = client.get("/", headers={"Accept": "text/html"})

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for feature in card["features"]:
        assert f"<td>{escape(feature['name'])}</td>" in html
    assert f"<code>{json.dumps(card['positive_class'])}</code>" in html  # Jinja's tojson keeps quotes
    assert '<td data-figure="labelled">1</td>' in html


def test_a_model_dropped_in_without_model_meta_json_serves_and_says_what_it_lacks(
    model_dirs, tmp_path, caplog
):
    """The tutorial's own instruction: replace pipeline.pickle, dtypes.pickle and columns.json."""
    for name in ("pipeline.pickle", "dtypes.pickle", "columns.json"):
        shutil.copy(model_dirs["mixed-dtypes-string-labels"] / name, tmp_path / name)
    with caplog.at_level("INFO"):
        service = import_app(f"sqlite:///{tmp_path}/own.db", ARTIFACTS_DIR=str(tmp_path))
    client = service.app.test_client()
    card = client.get("/model").get_json()

    assert "no model_meta.json beside pipeline.pickle" in caplog.text
    assert {found["trained_with"] for found in card["versions"].values()} == {None}
    assert predict(client, 1, example_observation(card["features"])).status_code == 200
    how_to_make = "run Step 1's 'Profile the training data' cell"
    assert how_to_make in card["training_profile"]["missing"]  # no profile: it serves, and says so
    drift = client.get("/drift").get_json()["by_model_version"][card["model_version"]]
    assert drift["rows"] == 0
    assert how_to_make in drift["message"]
    assert escape(how_to_make) in client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    service.DB.close_all()
