"""The request schema on its own: no Flask, no database, and a model that is not the Titanic one.

The schema is built from a columns list and a dtypes Series, exactly what columns.json and
dtypes.pickle hold, so these tests describe what any user's model gets.
"""

import math

import numpy as np
import pandas as pd
import pytest

from service.errors import ApiError
from service.schema import Labels, RequestSchema, hours_argument, json_object, page_argument, unscorable

DTYPES = pd.Series(
    {
        "plan": pd.api.types.pandas_dtype("str"),
        "tenure months": pd.api.types.pandas_dtype("int64"),
        "monthly fee": pd.api.types.pandas_dtype("float64"),
        "has phone": pd.api.types.pandas_dtype("bool"),
        "region": pd.CategoricalDtype(["east", "north", "south"]),
        "rooms": pd.CategoricalDtype([1, 2, 3]),
    }
)
SCHEMA = RequestSchema(list(DTYPES.index), DTYPES)
COMPLETE = {
    "plan": "basic",
    "tenure months": 12,
    "monthly fee": 9.5,
    "has phone": True,
    "region": "east",
    "rooms": 2,
}


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
        "region": "category",
        "rooms": "category",
    }


def test_a_valid_observation_keeps_the_training_order_and_lists_unknown_fields():
    observation = SCHEMA.observation({"id": 7, "observation": {"zeta": 1, **COMPLETE, "alpha": 2}})
    assert observation.observation_id == 7
    assert list(observation.features) == list(DTYPES.index)
    assert observation.unknown_fields == ["zeta", "alpha"]  # in the order sent


@pytest.mark.parametrize("missing", [None, math.nan])
def test_null_and_nan_mean_missing_for_every_kind(missing):
    features = SCHEMA.observation({"id": 1, "observation": dict.fromkeys(DTYPES.index, missing)}).features
    assert features == dict.fromkeys(DTYPES.index)


def test_an_absent_feature_is_missing_and_listed():
    observation = SCHEMA.observation({"id": 1, "observation": {"plan": "pro", "other": 1}})
    assert observation.features == {**dict.fromkeys(DTYPES.index), "plan": "pro"}
    assert observation.absent_features == ["tenure months", "monthly fee", "has phone", "region", "rooms"]
    unknown, absent = SCHEMA.warnings(observation)
    assert "ignored unknown field(s) ['other']" in unknown
    assert "absent from the request, scored as missing: ['tenure months'," in absent


def test_explicit_missing_values_get_no_warning():
    observation = SCHEMA.observation({"id": 1, "observation": dict.fromkeys(DTYPES.index)})
    assert SCHEMA.warnings(observation) == []


@pytest.mark.parametrize("raw", [{}, {"Plan": "pro", "tenure": 3}])
def test_an_observation_with_none_of_the_features_is_refused(raw):
    status, message = refusal(SCHEMA.observation, {"id": 1, "observation": raw})
    assert status == 400
    assert "has none of the model's features; expected ['plan', 'tenure months'," in message


def test_a_category_takes_its_training_categories_and_stores_the_category_itself():
    assert observe(region="north").features["region"] == "north"
    assert observe(rooms=3.0).features["rooms"] == 3
    for name, value, words in [
        (
            "region",
            "west",
            "'observation.region' must be one of the categories ['east', 'north', 'south'] or null",
        ),
        ("rooms", 4, "got 4"),
        ("rooms", "2", 'got "2"'),
        ("rooms", True, "got true"),
    ]:
        status, message = refusal(observe, **{name: value})
        assert status == 400
        assert words in message


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
        ("monthly fee", 10**400, "must be a finite number or null"),
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
    missing = SCHEMA.observation({"id": 1, "observation": dict.fromkeys(DTYPES.index)}).features

    assert SCHEMA.frame([complete, complete]).dtypes.equals(DTYPES)
    frame = SCHEMA.frame([complete, missing])
    assert str(frame.dtypes["tenure months"]) == "Int64"
    assert str(frame.dtypes["has phone"]) == "boolean"
    assert frame.dtypes["monthly fee"] == "float64"
    assert frame.dtypes["region"] == DTYPES["region"]
    assert frame.isna().sum().tolist() == [1] * len(DTYPES)


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


@pytest.mark.parametrize(
    ("classes", "sent", "stored"),
    [
        ([0, 1], 0, 0),
        ([0, 1], 1, 1),
        ([0, 1], False, 0),
        ([0, 1], True, 1),
        ([False, True], True, 1),
        (["churn", "stay"], "stay", 1),
        (["churn", "stay"], "churn", 0),
        (["churn", "stay"], 1, 1),
        (["churn", "stay"], False, 0),
        ([1, 2], 1, 0),  # the model's label 1 is its negative class: 0/1 are not taken
        ([1, 2], 2, 1),
    ],
)
def test_true_class_takes_the_models_labels_and_0_1_where_they_are_unambiguous(classes, sent, stored):
    assert Labels(np.array(classes)).true_class_from({"true_class": sent}) == stored


@pytest.mark.parametrize(
    ("classes", "sent", "words"),
    [
        ([0, 1], 2, "'true_class' must be 0 or 1 (or false/true); got 2"),
        ([0, 1], "1", 'got "1"'),
        ([0, 1], 1.0, "got 1.0"),
        ([0, 1], None, "got null"),
        (
            ["churn", "stay"],
            "gone",
            'or the model\'s label "churn" (negative) or "stay" (positive); got "gone"',
        ),
        ([1, 2], 0, "must be the model's label 1 (negative) or 2 (positive); got 0"),
        ([1, 2], True, "got true"),
    ],
)
def test_true_class_refuses_anything_else_and_says_what_it_takes(classes, sent, words):
    status, message = refusal(Labels(np.array(classes)).true_class_from, {"true_class": sent})
    assert status == 400
    assert words in message


def test_labels_are_plain_json_whatever_numpy_held():
    labels = Labels(np.array(["no", "yes"], dtype=object))
    assert (labels.negative, labels.positive) == ("no", "yes")
    assert type(Labels(np.array([0, 1])).positive) is int


def test_a_refused_row_names_the_feature_to_blame_in_whole_words():
    features = dict(COMPLETE, **{"monthly fee": math.inf})
    error = unscorable(features, ValueError("Input X contains infinity " + "word " * 100), lambda f: False)
    assert error.status == 422
    assert "because of monthly fee=Infinity" in error.message
    assert error.message.endswith("word ...)")


def test_the_feature_to_blame_is_found_by_leaving_each_out():
    refuses_plus = lambda features: features["plan"] != "plus"  # noqa: E731
    error = unscorable(dict(COMPLETE, plan="plus"), KeyError("plus"), refuses_plus)
    assert 'because of plan="plus"' in error.message


def test_query_arguments():
    assert page_argument("page", "3", 10) == 3
    assert hours_argument(None) is None
    assert hours_argument("1.5") == 1.5
    for raw in ("0", "11", "x", "-1"):
        assert "'page' must be an integer from 1 to 10" in refusal(page_argument, "page", raw, 10)[1]
    for raw in ("0", "nan", "1e9", "abc"):
        assert "'hours' must be a positive number of hours" in refusal(hours_argument, raw)[1]
