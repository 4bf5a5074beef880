"""The request schema on its own: no Flask, no database, and a model that is not the Titanic one.

The schema is built from a columns list and a dtypes Series, exactly what columns.json and
dtypes.pickle hold, so these tests describe what any user's model gets.
"""

import math

import pandas as pd
import pytest

from schema import ApiError, RequestSchema, hours_argument, json_object, page_argument, true_class_from

DTYPES = pd.Series(
    {
        "plan": pd.api.types.pandas_dtype("str"),
        "tenure months": pd.api.types.pandas_dtype("int64"),
        "monthly fee": pd.api.types.pandas_dtype("float64"),
        "has phone": pd.api.types.pandas_dtype("bool"),
    }
)
SCHEMA = RequestSchema(list(DTYPES.index), DTYPES)
COMPLETE = {"plan": "basic", "tenure months": 12, "monthly fee": 9.5, "has phone": True}


def refusal(call, *args, **kwargs):
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value.status, caught.value.message


def observe(**features):
    return SCHEMA.observation({"id": 7, "observation": dict(COMPLETE, **features)})


def test_each_dtype_maps_to_the_json_type_it_accepts():
    assert SCHEMA.kinds == {
        "plan": "string",
        "tenure months": "integer",
        "monthly fee": "number",
        "has phone": "boolean",
    }


def test_a_valid_observation_keeps_the_training_order_and_lists_unknown_fields():
    observation = SCHEMA.observation({"id": 7, "observation": {"zeta": 1, **COMPLETE, "alpha": 2}})
    assert observation.observation_id == 7
    assert list(observation.features) == list(DTYPES.index)
    assert observation.unknown_fields == ["alpha", "zeta"]


@pytest.mark.parametrize("missing", [None, math.nan])
def test_null_and_nan_mean_missing_for_every_kind(missing):
    features = SCHEMA.observation({"id": 1, "observation": dict.fromkeys(DTYPES.index, missing)}).features
    assert features == dict.fromkeys(DTYPES.index)


def test_an_absent_feature_is_missing():
    assert SCHEMA.observation({"id": 1, "observation": {}}).features == dict.fromkeys(DTYPES.index)


def test_integral_floats_are_integers_and_integers_are_numbers():
    features = observe(**{"tenure months": 3.0, "monthly fee": 10}).features
    assert features["tenure months"] == 3
    assert isinstance(features["tenure months"], int)
    assert features["monthly fee"] == 10.0
    assert isinstance(features["monthly fee"], float)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("tenure months", 2.5, "'observation.tenure months' must be an integer or null; got 2.5"),
        ("tenure months", 2**63, "must be an integer or null"),
        ("tenure months", True, "got true"),
        ("monthly fee", "9.5", "'observation.monthly fee' must be a number or null; got \"9.5\""),
        ("monthly fee", 10**400, "must be a number or null"),
        ("has phone", 1, "'observation.has phone' must be a boolean or null; got 1"),
        ("plan", 3, "'observation.plan' must be a string or null; got 3"),
        ("plan", ["basic"], "got a list"),
        ("plan", {"a": 1}, "got an object"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_400_naming_the_feature(name, value, words):
    status, message = refusal(observe, **{name: value})
    assert status == 400
    assert words in message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"observation": COMPLETE}, "'id' is missing"),
        ({"id": "7", "observation": COMPLETE}, "'id' must be an integer"),
        ({"id": 7}, "'observation' is missing"),
        ({"id": 7, "observation": [1, 2]}, "'observation' must be a JSON object of features; got a list"),
    ],
)
def test_the_id_and_the_observation_object_are_checked(body, words):
    status, message = refusal(SCHEMA.observation, body)
    assert status == 400
    assert words in message


def test_a_retry_is_recognised_by_the_stored_form():
    assert observe().stored_form == observe().stored_form
    assert observe(plan="pro").stored_form != observe().stored_form


def test_the_frame_has_the_training_dtypes_and_a_nullable_twin_only_where_a_value_is_missing():
    complete = observe().features
    missing = SCHEMA.observation({"id": 1, "observation": {}}).features

    assert SCHEMA.frame([complete, complete]).dtypes.equals(DTYPES)
    frame = SCHEMA.frame([complete, missing])
    assert str(frame.dtypes["tenure months"]) == "Int64"
    assert str(frame.dtypes["has phone"]) == "boolean"
    assert frame.dtypes["monthly fee"] == "float64"
    assert frame.isna().sum().tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("data", "content_type", "is_json", "expected"),
    [
        (b"{}", "text/plain", False, (415, "got Content-Type: text/plain")),
        (b"{}", None, False, (415, "got Content-Type: none")),
        (b'{"a": "\xff"}', "application/json", True, (400, "not valid UTF-8")),
        (b"{", "application/json", True, (400, "not valid JSON")),
        (b"[1]", "application/json", True, (400, "must be a JSON object; got a list")),
        (b'{"a": 1, "a": 2}', "application/json", True, (400, "repeats the key(s) ['a']")),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(data, content_type, is_json, expected):
    status, message = refusal(json_object, data, content_type, is_json)
    assert status == expected[0]
    assert expected[1] in message


def test_the_bare_nan_token_is_read_as_a_missing_value():
    body = json_object(b'{"id": 1, "observation": {"monthly fee": NaN}}', "application/json", True)
    assert SCHEMA.observation(body).features["monthly fee"] is None


@pytest.mark.parametrize(("sent", "stored"), [(0, 0), (1, 1), (False, 0), (True, 1)])
def test_true_class_takes_0_1_false_true(sent, stored):
    assert true_class_from({"true_class": sent}) == stored


@pytest.mark.parametrize("sent", [2, -1, "1", None, 1.0])
def test_true_class_refuses_anything_else(sent):
    assert refusal(true_class_from, {"true_class": sent})[0] == 400


def test_query_arguments():
    assert page_argument("page", "3", 10) == 3
    assert hours_argument(None) is None
    assert hours_argument("1.5") == 1.5
    for raw in ("0", "11", "x", "-1"):
        assert "'page' must be an integer from 1 to 10" in refusal(page_argument, "page", raw, 10)[1]
    for raw in ("0", "nan", "1e9", "abc"):
        assert "'hours' must be a positive number of hours" in refusal(hours_argument, raw)[1]
