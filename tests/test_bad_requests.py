"""Every request the service can't serve gets a 4xx JSON error that says why, and writes nothing."""

import json

import pytest

from tools.servers import EXAMPLE_OBSERVATION

JSON = "application/json"


def body(observation_id=1, **features):
    return json.dumps({"id": observation_id, "observation": dict(EXAMPLE_OBSERVATION, **features)})


def raw_id(text):
    return f'{{"id": {text}, "observation": {json.dumps(EXAMPLE_OBSERVATION)}}}'


# (method, path, content type, body, expected status, words the error must contain)
BAD_REQUESTS = [
    # the body itself
    ("POST", "/predict", JSON, "", 400, "not valid JSON"),
    ("POST", "/predict", JSON, "{", 400, "not valid JSON"),
    ("POST", "/predict", JSON, "{'id': 1}", 400, "not valid JSON"),
    ("POST", "/predict", JSON, '{"id": 1,}', 400, "not valid JSON"),
    ("POST", "/predict", JSON, "NaN", 400, "must be a JSON object; got NaN"),
    ("POST", "/predict", JSON, "[]", 400, "must be a JSON object; got a list"),
    ("POST", "/predict", JSON, "[1, 2]", 400, "must be a JSON object; got a list"),
    ("POST", "/predict", JSON, '"text"', 400, 'must be a JSON object; got "text"'),
    ("POST", "/predict", JSON, "42", 400, "must be a JSON object; got 42"),
    ("POST", "/predict", JSON, "null", 400, "must be a JSON object; got null"),
    ("POST", "/predict", JSON, b'{"id": 1, "observation": {"Sex": "\xff"}}', 400, "not valid UTF-8"),
    ("POST", "/predict", JSON, "[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
    ("POST", "/predict", JSON, '{"id": 1, "id": 2, "observation": {}}', 400, "repeats the key(s) ['id']"),
    # the content type
    ("POST", "/predict", None, body(), 415, "Content-Type: application/json; got Content-Type: none"),
    ("POST", "/predict", "text/plain", body(), 415, "got Content-Type: text/plain"),
    ("POST", "/predict", "application/x-www-form-urlencoded", body(), 415, "Content-Type: application/json"),
    ("POST", "/update", "text/plain", '{"id": 1, "true_class": 1}', 415, "Content-Type: application/json"),
    # id
    ("POST", "/predict", JSON, json.dumps({"observation": EXAMPLE_OBSERVATION}), 400, "'id' is missing"),
    (
        "POST",
        "/predict",
        JSON,
        raw_id('"1"'),
        400,
        "'id' must be an integer between -2**63 and 2**63-1; got \"1\"",
    ),
    ("POST", "/predict", JSON, raw_id('"abc"'), 400, "'id' must be an integer"),
    (
        "POST",
        "/predict",
        JSON,
        raw_id("1.5"),
        400,
        "'id' must be an integer between -2**63 and 2**63-1; got 1.5",
    ),
    ("POST", "/predict", JSON, raw_id("1e300"), 400, "got 1e+300"),
    (
        "POST",
        "/predict",
        JSON,
        raw_id("true"),
        400,
        "'id' must be an integer between -2**63 and 2**63-1; got true",
    ),
    ("POST", "/predict", JSON, raw_id("false"), 400, "got false"),
    ("POST", "/predict", JSON, raw_id("null"), 400, "got null"),
    ("POST", "/predict", JSON, raw_id("NaN"), 400, "got NaN"),
    ("POST", "/predict", JSON, raw_id("Infinity"), 400, "got Infinity"),
    ("POST", "/predict", JSON, raw_id("[1]"), 400, "got a list"),
    ("POST", "/predict", JSON, raw_id('{"n": 1}'), 400, "got an object"),
    ("POST", "/predict", JSON, raw_id(str(2**63)), 400, "got 9223372036854775808"),
    ("POST", "/predict", JSON, raw_id(str(-(2**63) - 1)), 400, "got -9223372036854775809"),
    ("POST", "/predict", JSON, raw_id("1" + "0" * 40), 400, "'id' must be an integer"),
    # observation
    ("POST", "/predict", JSON, '{"id": 1}', 400, "'observation' is missing"),
    ("POST", "/predict", JSON, '{"id": 1, "observation": null}', 400, "'observation' must be a JSON object"),
    ("POST", "/predict", JSON, '{"id": 1, "observation": [1, 2]}', 400, "object of features; got a list"),
    ("POST", "/predict", JSON, '{"id": 1, "observation": "Age=22"}', 400, 'got "Age=22"'),
    ("POST", "/predict", JSON, '{"id": 1, "observation": 5}', 400, "object of features; got 5"),
    # features of the wrong type
    (
        "POST",
        "/predict",
        JSON,
        body(Age="abc"),
        400,
        "'observation.Age' must be a number or null; got \"abc\"",
    ),
    ("POST", "/predict", JSON, body(Age="22"), 400, "'observation.Age' must be a number or null; got \"22\""),
    ("POST", "/predict", JSON, body(Age=[22]), 400, "'observation.Age' must be a number or null; got a list"),
    ("POST", "/predict", JSON, body(Age={"years": 22}), 400, "got an object"),
    ("POST", "/predict", JSON, body(Age=True), 400, "'observation.Age' must be a number or null; got true"),
    ("POST", "/predict", JSON, body(Fare="cheap"), 400, "'observation.Fare' must be a number"),
    ("POST", "/predict", JSON, body(Fare=10**400), 400, "'observation.Fare' must be a finite number"),
    (
        "POST",
        "/predict",
        JSON,
        body(Pclass=2.5),
        400,
        "'observation.Pclass' must be an integer or null; got 2.5",
    ),
    ("POST", "/predict", JSON, body(Pclass="3"), 400, "'observation.Pclass' must be an integer or null"),
    (
        "POST",
        "/predict",
        JSON,
        body(Pclass=False),
        400,
        "'observation.Pclass' must be an integer or null; got false",
    ),
    ("POST", "/predict", JSON, body(Pclass=2**64), 400, "'observation.Pclass' must be an integer"),
    ("POST", "/predict", JSON, body(Pclass=10**400), 400, "'observation.Pclass' must be an integer or null"),
    ("POST", "/predict", JSON, body(Pclass=float("inf")), 400, "'observation.Pclass' must be an integer"),
    (
        "POST",
        "/predict",
        JSON,
        body(SibSp=[1]),
        400,
        "'observation.SibSp' must be an integer or null; got a list",
    ),
    ("POST", "/predict", JSON, body(Sex=1), 400, "'observation.Sex' must be a string or null; got 1"),
    ("POST", "/predict", JSON, body(Sex=True), 400, "'observation.Sex' must be a string or null; got true"),
    (
        "POST",
        "/predict",
        JSON,
        body(Sex={"v": "male"}),
        400,
        "'observation.Sex' must be a string or null; got an object",
    ),
    ("POST", "/predict", JSON, body(Embarked=["S"]), 400, "'observation.Embarked' must be a string"),
    ("POST", "/predict", JSON, body(Cabin=0), 400, "'observation.Cabin' must be a string or null; got 0"),
    # numbers the model can't score, and strings past the limit
    (
        "POST",
        "/predict",
        JSON,
        body(Age=float("inf")),
        400,
        "'observation.Age' must be a finite number or null",
    ),
    ("POST", "/predict", JSON, body(Fare=float("-inf")), 400, "got -Infinity"),
    ("POST", "/predict", JSON, body(Cabin="C" * 1001), 400, "is 1001 characters long; the limit is 1000"),
    # /update
    ("POST", "/update", JSON, "[]", 400, "must be a JSON object; got a list"),
    ("POST", "/update", JSON, '{"true_class": 1}', 400, "'id' is missing"),
    ("POST", "/update", JSON, '{"id": "0", "true_class": 1}', 400, "'id' must be an integer"),
    ("POST", "/update", JSON, '{"id": 0.5, "true_class": 1}', 400, "got 0.5"),
    ("POST", "/update", JSON, '{"id": 0}', 400, "'true_class' is missing: send 0 or 1"),
    (
        "POST",
        "/update",
        JSON,
        '{"id": 0, "true_class": 2}',
        400,
        "'true_class' must be 0 or 1 (or false/true); got 2",
    ),
    ("POST", "/update", JSON, '{"id": 0, "true_class": -1}', 400, "got -1"),
    ("POST", "/update", JSON, '{"id": 0, "true_class": "1"}', 400, 'got "1"'),
    ("POST", "/update", JSON, '{"id": 0, "true_class": 1.0}', 400, "got 1.0"),
    ("POST", "/update", JSON, '{"id": 0, "true_class": null}', 400, "got null"),
    ("POST", "/update", JSON, '{"id": 0, "true_class": NaN}', 400, "got NaN"),
    ("POST", "/update", JSON, '{"id": 0, "true_class": [1]}', 400, "got a list"),
    ("POST", "/update", JSON, '{"id": 12345, "true_class": 1}', 404, "no prediction with id 12345"),
    # routes and methods
    ("GET", "/predict", None, None, 405, "GET is not allowed on /predict; use"),
    ("PUT", "/predict", JSON, body(), 405, "PUT is not allowed on /predict"),
    ("DELETE", "/update", None, None, 405, "DELETE is not allowed on /update"),
    ("POST", "/health", JSON, "{}", 405, "POST is not allowed on /health"),
    ("POST", "/", JSON, body(), 405, "POST is not allowed on /;"),
    ("GET", "/index.html", None, None, 404, "no route /index.html"),
    ("POST", "/predictions", JSON, body(), 404, "no route /predictions"),
    ("GET", "/admin", None, None, 404, "no route /admin"),
    ("GET", "/list-db-contents", None, None, 404, "disabled; set LIST_DB_TOKEN"),
]
assert len(BAD_REQUESTS) >= 50


@pytest.mark.parametrize(
    ("method", "path", "content_type", "data", "status", "words"),
    BAD_REQUESTS,
    ids=[f"{case[4]}-{i}" for i, case in enumerate(BAD_REQUESTS)],
)
def test_bad_request_gets_a_clear_json_error_and_writes_nothing(
    client, service, method, path, content_type, data, status, words
):
    response = client.open(path, method=method, data=data, content_type=content_type)

    assert response.status_code == status
    assert response.is_json, response.data[:200]
    assert words in response.get_json()["error"]
    assert service.Prediction.select().count() == 0


@pytest.mark.parametrize("sent", ["7.0", "7e0", "0.7e1"])
def test_an_id_with_no_fractional_part_is_the_integer_as_json_schema_says(client, service, sent):
    assert client.post("/predict", data=raw_id(sent), content_type=JSON).status_code == 200
    update = client.post("/update", data=f'{{"id": {sent}, "true_class": 1}}', content_type=JSON)

    assert (update.status_code, update.get_json()["observation_id"]) == (200, 7)
    assert service.Prediction.get().observation_id == 7


def test_body_over_the_limit_is_a_413(client, service):
    too_big = body(Cabin="C" * service.SETTINGS.MAX_BODY_BYTES)
    response = client.post("/predict", data=too_big, content_type=JSON)

    assert response.status_code == 413
    assert f"larger than the limit of {service.SETTINGS.MAX_BODY_BYTES} bytes" in response.get_json()["error"]
    assert service.Prediction.select().count() == 0


def test_a_409_leaves_the_stored_row_as_it_was(client, service):
    client.post("/predict", data=body(1), content_type=JSON)
    before = service.Prediction.get()
    response = client.post("/predict", data=body(1, Sex="female"), content_type=JSON)

    assert response.status_code == 409
    after = service.Prediction.get()
    assert (after.observation, after.proba, after.updated_at) == (
        before.observation,
        before.proba,
        before.updated_at,
    )
