"""The request schema: what a client may send, derived from columns.json and dtypes.pickle.

Contract:
- `json_object(data, content_type, is_json)` turns a request body into a JSON object, or raises
  ApiError (415 not JSON, 400 not UTF-8, not valid JSON, a repeated key, not an object). The bare
  `NaN` token is accepted and means a missing value.
- `RequestSchema(columns, dtypes)` checks an observation against the training columns and dtypes:
  `observation(body)` returns an Observation (id, features in training order, unknown fields,
  and the JSON stored and compared for retries) or raises a 400 naming the field, what it
  accepts and what arrived. `frame(rows)` lays validated features out as the DataFrame the
  pipeline was trained on.
- `checked_id`, `true_class_from`, `page_argument` and `hours_argument` check the other fields
  and query arguments the routes take.

Nothing here knows Flask or the database: the routes hand in the bytes and strings they received.
"""

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ApiError(Exception):
    """A request the service refuses: the HTTP status and a message a person can act on."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def describe(value):
    """How a JSON value is quoted back to the client in an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def article(kind):
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def is_missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_integral_float(value):
    return isinstance(value, float) and value.is_integer()  # 3.0, but not 2.5, inf or nan


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The body and the fields every route shares.
def duplicate_keys_refused(pairs):
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ApiError(400, f"the JSON object repeats the key(s) {repeated}; send each field once")
    return dict(pairs)


def json_object(data, content_type, is_json):
    """The body as a JSON object, or an ApiError saying what was wrong with it."""
    if not is_json:
        raise ApiError(
            415,
            "send the body as JSON with the header Content-Type: application/json; "
            f"got Content-Type: {content_type or 'none'}",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not valid UTF-8 text") from None
    try:
        # Python's json accepts the bare NaN token that some clients send for missing values.
        body = json.loads(text, object_pairs_hook=duplicate_keys_refused)
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object; got {describe(body)}")
    return body


def checked_id(body):
    if "id" not in body:
        raise ApiError(400, "'id' is missing: send the observation's integer id")
    value = body["id"]
    if not is_integer(value) or not INT64_MIN <= value <= INT64_MAX:
        raise ApiError(400, f"'id' must be an integer between -2**63 and 2**63-1; got {describe(value)}")
    return value


def true_class_from(body):
    if "true_class" not in body:
        raise ApiError(400, "'true_class' is missing: send 0 or 1")
    value = body["true_class"]
    if isinstance(value, bool) or (is_integer(value) and value in (0, 1)):
        return int(value)
    raise ApiError(400, f"'true_class' must be 0 or 1 (or false/true); got {describe(value)}")


def page_argument(name, raw, maximum):
    """A query argument that counts from 1, as sent (a string)."""
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError(400, f"'{name}' must be an integer from 1 to {maximum}; got {raw!r}")
    return int(raw)


def hours_argument(raw):
    """/stats' window in hours, or None for the whole history."""
    if raw is None:
        return None
    try:
        hours = float(raw)
    except ValueError:
        hours = -1
    if not 0 < hours <= 24 * 365 * 100:
        raise ApiError(400, f"'hours' must be a positive number of hours; got {raw!r}")
    return hours


# The observation, checked against the training columns and dtypes.
def feature_kind(dtype):
    """The JSON type a column accepts, from its training dtype."""
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_string_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return "string"
    return "string or number"


def nullable_dtype(dtype):
    """The training dtype's twin that can hold a missing value (int64 -> Int64, bool -> boolean)."""
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return str(dtype).capitalize()
    return dtype


@dataclass(frozen=True)
class Observation:
    """One /predict request that passed validation."""

    observation_id: int
    features: dict
    unknown_fields: list
    stored_form: str  # the features as stored and compared: a retry must match this exactly


class RequestSchema:
    """The features a model takes, from its training columns (in order) and dtypes."""

    def __init__(self, columns, dtypes):
        self.columns = list(columns)
        self.dtypes = dtypes
        self.kinds = {column: feature_kind(dtype) for column, dtype in dtypes.items()}
        self._nullable_dtypes = {column: nullable_dtype(dtype) for column, dtype in dtypes.items()}

    def observation(self, body):
        observation_id = checked_id(body)
        if "observation" not in body:
            raise ApiError(400, "'observation' is missing: send the features as a JSON object")
        raw = body["observation"]
        if not isinstance(raw, dict):
            raise ApiError(400, f"'observation' must be a JSON object of features; got {describe(raw)}")
        features = {column: self.checked_feature(column, raw.get(column)) for column in self.columns}
        unknown = sorted(set(raw) - set(self.columns))
        return Observation(observation_id, features, unknown, json.dumps(features))

    def checked_feature(self, name, value):
        """The feature's value as the model should see it, or an ApiError saying why not."""
        if is_missing(value):
            return None
        kind = self.kinds[name]
        if kind == "integer":
            whole = value if is_integer(value) else int(value) if is_integral_float(value) else None
            if whole is not None and INT64_MIN <= whole <= INT64_MAX:
                return whole
        if kind == "number" and is_number(value):
            try:
                return float(value)
            except OverflowError:
                pass
        if kind == "boolean" and isinstance(value, bool):
            return value
        if kind == "string" and isinstance(value, str):
            return value
        if kind == "string or number" and (isinstance(value, str) or is_number(value)):
            return value
        raise ApiError(400, f"'observation.{name}' must be {article(kind)} or null; got {describe(value)}")

    def frame(self, feature_rows):
        """The rows as a DataFrame with the training columns and dtypes, built column by column.

        A column keeps its exact training dtype unless it holds a missing value that dtype can't
        (an integer column with a null), which then gets the nullable twin.
        """
        return pd.DataFrame(
            {column: self._column(column, [row[column] for row in feature_rows]) for column in self.columns}
        )

    def _column(self, column, values):
        dtype = self.dtypes[column]
        if isinstance(dtype, np.dtype) and (dtype.kind == "f" or None not in values):
            return np.array(values, dtype=dtype)  # a float column turns None into NaN by itself
        return pd.array(values, dtype=self._nullable_dtypes[column])
