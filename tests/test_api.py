"""The wire contract, through Flask's test client, on SQLite and on PostgreSQL."""

import json
import time

import pytest

from tools.servers import EXAMPLE_OBSERVATION

EXAMPLE_PROBA = 0.09093563862904978


def predict(client, observation_id=0, observation=None, **features):
    observation = dict(EXAMPLE_OBSERVATION if observation is None else observation, **features)
    return client.post("/predict", json={"id": observation_id, "observation": observation})


def rows(service):
    return list(service.Prediction.select().order_by(service.Prediction.id))


def test_predict_returns_the_proba_and_commits_the_row(client, service):
    response = predict(client, 7)

    assert response.status_code == 200
    assert response.get_json() == {"proba": EXAMPLE_PROBA}
    [row] = rows(service)
    assert row.observation_id == 7
    assert row.proba == EXAMPLE_PROBA  # stored in full, not rounded to 4-byte REAL
    assert json.loads(row.observation) == EXAMPLE_OBSERVATION
    assert row.true_class is None
    assert row.model_version == service.MODEL_VERSION
    assert row.created_at == row.updated_at


def test_predict_scores_differently_for_a_different_passenger(client):
    first_class_woman = dict(EXAMPLE_OBSERVATION, Pclass=1, Sex="female", Fare=80.0)
    response = predict(client, 1, first_class_woman)
    assert response.status_code == 200
    assert response.get_json()["proba"] > 0.8


@pytest.mark.parametrize("observation_id", [0, -1, 2**31, 2**63 - 1, -(2**63)])
def test_ids_use_the_whole_64_bit_range(client, service, observation_id):
    assert predict(client, observation_id).status_code == 200
    assert [row.observation_id for row in rows(service)] == [observation_id]
    assert client.post("/update", json={"id": observation_id, "true_class": 1}).status_code == 200


def test_retry_with_the_same_observation_returns_the_stored_proba_and_adds_no_row(client, service):
    first = predict(client, 3)
    retry = predict(client, 3)

    assert retry.status_code == 200
    assert retry.get_json() == first.get_json()
    assert len(rows(service)) == 1


def test_retry_matches_however_missing_values_were_spelled(client, service):
    observation = dict(EXAMPLE_OBSERVATION)
    del observation["Cabin"]  # absent, where the first request sent null
    assert predict(client, 3).status_code == 200
    assert predict(client, 3, observation).status_code == 200
    assert len(rows(service)) == 1


def test_same_id_with_another_observation_is_a_409_and_keeps_the_stored_row(client, service):
    predict(client, 4)
    response = predict(client, 4, Age=80.0)

    assert response.status_code == 409
    assert "id 4 was already used for a different observation" in response.get_json()["error"]
    [row] = rows(service)
    assert json.loads(row.observation)["Age"] == 22.0
    assert row.proba == EXAMPLE_PROBA


def test_missing_values_may_be_null_nan_or_absent(client, service):
    absent = {key: value for key, value in EXAMPLE_OBSERVATION.items() if key not in ("Age", "Pclass")}
    body_with_nan = (
        '{"id": 2, "observation": {"Age": NaN, "Cabin": null, "Embarked": "S", "Fare": 7.25,'
        ' "Parch": 0, "Pclass": NaN, "Sex": "male", "SibSp": 1}}'
    )
    null = predict(client, 1, Age=None, Pclass=None)
    nan = client.post("/predict", data=body_with_nan, content_type="application/json")
    missing = predict(client, 3, absent)

    assert null.status_code == nan.status_code == missing.status_code == 200
    assert null.get_json() == nan.get_json() == {"proba": missing.get_json()["proba"]}
    assert missing.get_json()["warnings"] == [
        "feature(s) absent from the request, scored as missing: ['Pclass', 'Age']"
    ]
    stored = [json.loads(row.observation) for row in rows(service)]
    assert all(observation["Age"] is None and observation["Pclass"] is None for observation in stored)


def test_a_probability_too_small_to_square_is_stored_and_counted(client, service):
    """Found by schemathesis: PostgreSQL refused the square of a proba under about 1e-162 in the
    population's trigger (underflow), and the insert failed with a 500."""
    extreme = {"Pclass": 657, "SibSp": -590, "Sex": "x", "Embarked": "y", "Parch": None, "Fare": None}
    response = predict(client, 1, extreme)

    assert response.status_code == 200
    assert response.get_json()["proba"] < 1e-162
    assert client.get("/stats").get_json()["overall"]["predictions"] == 1


def test_integral_floats_are_accepted_for_integer_features(client):
    assert predict(client, 1, Pclass=3.0, SibSp=1.0).get_json() == {"proba": EXAMPLE_PROBA}


def test_unknown_fields_are_ignored_and_listed_as_warnings(client, service):
    response = predict(client, 5, Name="Braund, Mr. Owen Harris", Ticket="A/5 21171")

    assert response.status_code == 200
    body = response.get_json()
    assert body["proba"] == EXAMPLE_PROBA
    assert "['Name', 'Ticket']" in body["warnings"][0]
    assert "Name" not in json.loads(rows(service)[0].observation)


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "1e400"])
def test_a_non_finite_number_is_refused_at_the_edge_naming_the_field(client, service, number):
    """Before batching: the model would refuse it, and its batch would pay for finding out."""
    response = client.post(
        "/predict",
        data=f'{{"id": 1, "observation": {{"Age": {number}, "Sex": "male"}}}}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert (
        response.get_json()["error"]
        == f"'observation.Age' must be a finite number or null; got {number.replace('1e400', 'Infinity')}"
    )
    assert rows(service) == []


def test_update_records_the_true_class_and_returns_the_record(client, service):
    predict(client, 0)
    response = client.post("/update", json={"id": 0, "true_class": 1})

    assert response.status_code == 200
    body = response.get_json()
    assert body["observation_id"] == 0
    assert body["proba"] == EXAMPLE_PROBA
    assert body["true_class"] == 1
    assert json.loads(body["observation"]) == EXAMPLE_OBSERVATION
    assert set(body) >= {"id", "observation_id", "observation", "proba", "true_class", "created_at"}
    assert rows(service)[0].true_class == 1


def test_update_of_an_unknown_id_is_a_404(client, service):
    response = client.post("/update", json={"id": 99, "true_class": 1})
    assert response.status_code == 404
    assert "no prediction with id 99" in response.get_json()["error"]
    assert rows(service) == []


def test_update_accepts_booleans(client, service):
    predict(client, 0)
    assert client.post("/update", json={"id": 0, "true_class": True}).get_json()["true_class"] == 1
    assert client.post("/update", json={"id": 0, "true_class": False}).get_json()["true_class"] == 0


def test_update_with_the_same_label_is_idempotent(client, service):
    predict(client, 0)
    first = client.post("/update", json={"id": 0, "true_class": 1})
    again = client.post("/update", json={"id": 0, "true_class": 1})

    assert again.status_code == 200
    assert again.get_json() == first.get_json()


def test_update_with_another_label_corrects_it_and_moves_updated_at(client, service):
    predict(client, 0)
    first = client.post("/update", json={"id": 0, "true_class": 1}).get_json()
    time.sleep(0.01)
    corrected = client.post("/update", json={"id": 0, "true_class": 0}).get_json()

    assert corrected["true_class"] == 0
    assert corrected["updated_at"] > first["updated_at"]
    assert corrected["created_at"] == first["created_at"]
    assert rows(service)[0].true_class == 0


def test_health_and_ready(client, service):
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "model_version": service.MODEL_VERSION}


def test_list_db_contents_is_off_without_a_token(client):
    response = client.get("/list-db-contents")
    assert response.status_code == 404
    assert "LIST_DB_TOKEN" in response.get_json()["error"]


@pytest.fixture
def list_token(service, monkeypatch):
    monkeypatch.setattr(service.SETTINGS, "LIST_DB_TOKEN", "s3cret")
    return "s3cret"


def test_list_db_contents_refuses_a_wrong_token(client, list_token):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": list_token}):
        response = client.get("/list-db-contents", headers=headers)
        assert response.status_code == 401
        assert "Authorization: Bearer" in response.get_json()["error"]


def test_list_db_contents_pages_the_predictions(client, list_token):
    for observation_id in range(5):
        predict(client, observation_id, Age=float(observation_id))
    headers = {"Authorization": f"Bearer {list_token}"}

    page = client.get("/list-db-contents?page=2&per_page=2", headers=headers).get_json()

    assert page["total"] == 5
    assert [row["observation_id"] for row in page["predictions"]] == [2, 3]
    bad = client.get("/list-db-contents?per_page=5000", headers=headers)
    assert bad.status_code == 400
    assert "'per_page' must be an integer from 1 to 1000" in bad.get_json()["error"]


@pytest.mark.parametrize("page", ["\u00b2", "\u0663", "+1", " 1", "1.0", "9" * 30])
def test_list_db_contents_takes_ascii_digits_only(client, list_token, page):
    """str.isdigit() says yes to "²", which int() then refuses: that was a 500."""
    response = client.get(f"/list-db-contents?page={page}", headers={"Authorization": f"Bearer {list_token}"})
    assert response.status_code == 400
    assert "'page' must be an integer from 1 to" in response.get_json()["error"]


def test_observations_are_stored_as_compact_utf8_json(client, service):
    assert predict(client, 1, Cabin="Zoë's cabin \u4e2d").status_code == 200
    [row] = rows(service)
    assert '"Cabin":"Zoë\'s cabin \u4e2d"' in row.observation  # no \\u escapes, no spaces
    assert len(row.observation.encode()) == len(
        json.dumps(json.loads(row.observation), separators=(",", ":"), ensure_ascii=False).encode()
    )


def test_a_retry_matches_a_row_stored_in_the_earlier_json_form(client, service):
    """The first release stored json.dumps(features): spaces, \\u escapes. A retry still matches."""
    observation = dict(EXAMPLE_OBSERVATION, Cabin="Zoë")
    features = service.SCHEMA.observation({"id": 7, "observation": observation}).features
    service.Prediction.create(
        observation_id=7, observation=json.dumps(features), proba=0.25, model_version="old"
    )

    retry = client.post("/predict", json={"id": 7, "observation": observation})
    conflict = client.post("/predict", json={"id": 7, "observation": dict(observation, Cabin="Zoe")})

    assert (retry.status_code, retry.get_json()) == (200, {"proba": 0.25})
    assert conflict.status_code == 409


@pytest.fixture
def write_token(service, monkeypatch):
    monkeypatch.setattr(service.SETTINGS, "WRITE_TOKEN", "w-s3cret")
    return "w-s3cret"


def test_with_write_token_set_predict_and_update_require_it(client, service, write_token):
    body = {"id": 1, "observation": EXAMPLE_OBSERVATION}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": write_token}):
        for path, sent in (("/predict", body), ("/update", {"id": 1, "true_class": 1})):
            response = client.post(path, json=sent, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.get_json()["error"] == "send the header 'Authorization: Bearer <WRITE_TOKEN>'"
    assert rows(service) == []
    authorised = {"Authorization": f"Bearer {write_token}"}
    assert client.post("/predict", json=body, headers=authorised).status_code == 200
    assert client.post("/update", json={"id": 1, "true_class": 1}, headers=authorised).status_code == 200


def test_update_can_leave_the_observation_out_of_its_answer(client, service, monkeypatch):
    monkeypatch.setattr(service.SETTINGS, "UPDATE_RETURNS_OBSERVATION", False)
    predict(client, 1)
    answer = client.post("/update", json={"id": 1, "true_class": 1}).get_json()
    assert "observation" not in answer
    assert answer["true_class"] == 1


def test_request_bodies_are_stored_as_data(client, service):
    hostile = "'); DROP TABLE prediction; --"
    assert predict(client, 1, Sex=hostile, Cabin="<script>").status_code == 200
    [row] = rows(service)
    assert json.loads(row.observation)["Sex"] == hostile
