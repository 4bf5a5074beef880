"""The request schema: what a client may send, derived from columns.json and dtypes.pickle.

Contract:
- `json_object(data, content_type, is_json)` turns a request body into a JSON object, or raises
  ApiError (415 not JSON, 400 not UTF-8, not valid JSON, a repeated key, not an object). The bare
  `NaN` token is accepted and means a missing value.
- `RequestSchema(columns, dtypes, max_string_chars)` checks an observation against the training
  columns and dtypes: `observation(body)` returns an Observation (id, features in training
  order, unknown fields in the order sent, the model's features the request left out, and the
  compact UTF-8 JSON stored and compared for retries) or raises a 400 naming the field, what it
  accepts and what arrived; numbers must be finite, strings at most max_string_chars long; a
  row stored in an earlier JSON form still matches its retry. A category column takes its
  training categories only; a request that carries none of the model's features is refused.
  `warnings(observation)` lists what was ignored or absent. `frame(rows)` lays validated
  features out as the DataFrame the pipeline was trained on.
- `Labels(classes)` maps what /update receives as `true_class` to 0 (negative) or 1 (positive):
  0/1, false/true, or the model's own labels.
- `checked_id`, `page_argument`, `hours_argument` and `series_arguments` check the other fields
  and the query arguments the routes take.

Nothing here knows Flask or the database: the routes hand in the bytes and strings they received.
"""

import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from service.errors import ApiError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ASCII_DIGITS = re.compile(r"[0-9]{1,18}")  # str.isdigit() also takes "²" and "٣", which int() refuses
# A JSON number in ASCII (a query string carries 1e-05 as a client's float prints it), not "inf".
ASCII_NUMBER = re.compile(r"[0-9]{1,18}(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,3})?")
MAX_HOURS = 24 * 365 * 100
MAX_PAGE, MAX_PER_PAGE = 10**9, 1000  # /list-db-contents' arguments
MAX_SERIES_POINTS = 400  # /stats/series' arguments
SERIES_DEFAULT_HOURS = {"hour": 48, "day": 720}  # two days by the hour, thirty by the day


def describe(value):
    """How a JSON value is quoted back to the client in an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return shortened(json.dumps(value))


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
    found = dict(pairs)
    if len(found) < len(pairs):  # in linear time: a body may carry tens of thousands of keys
        seen, repeated = set(), set()
        for key, _ in pairs:
            (repeated if key in seen else seen).add(key)
        raise ApiError(
            400, f"the JSON object repeats the key(s) {listed(sorted(repeated))}; send each field once"
        )
    return found


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
    if is_integral_float(value) and INT64_MIN <= value <= INT64_MAX:
        value = int(value)  # JSON Schema's integer: 7.0 is the integer 7
    if not is_integer(value) or not INT64_MIN <= value <= INT64_MAX:
        raise ApiError(400, f"'id' must be an integer between -2**63 and 2**63-1; got {describe(value)}")
    return value


class Labels:
    """The model's two classes (classes_, negative first) and what /update takes for them.

    0/1 and false/true always mean negative/positive, unless the model's own labels give one of
    them another meaning (labels 1 and 2, say): then only the model's labels are taken. The
    model's labels ("stay"/"churn") are taken too. The database stores 0 or 1.
    """

    CONVENTION = [(0, 0), (1, 1), (False, 0), (True, 1)]

    def __init__(self, classes):
        self.negative, self.positive = np.asarray(classes).tolist()  # plain JSON values
        own = [(self.negative, 0), (self.positive, 1)]
        collides = any(
            same_value(value, label) and index != label_index
            for value, index in self.CONVENTION
            for label, label_index in own
        )
        self.conventional = not collides
        self.accepted = own + ([] if collides else self.CONVENTION)

    def describe(self):
        labels = f"{json.dumps(self.negative)} (negative) or {json.dumps(self.positive)} (positive)"
        if not self.conventional:
            return f"the model's label {labels}"
        if {self.negative, self.positive} == {0, 1}:
            return "0 or 1 (or false/true)"
        return f"0 or 1 (or false/true), or the model's label {labels}"

    def true_class_from(self, body):
        """0 or 1, for negative or positive."""
        if "true_class" not in body:
            raise ApiError(400, f"'true_class' is missing: send {self.describe()}")
        value = body["true_class"]
        for label, index in self.accepted:
            if type(value) is type(label) and value == label:  # 1.0 is not the label 1, nor true
                return index
        raise ApiError(400, f"'true_class' must be {self.describe()}; got {describe(value)}")


def page_argument(name, raw, maximum):
    """A query argument that counts from 1, as sent (a string)."""
    if not ASCII_DIGITS.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise ApiError(400, f"'{name}' must be an integer from 1 to {maximum}; got {raw!r}")
    return int(raw)


def hours_argument(raw):
    """/stats' window in hours, or None for the whole history."""
    if raw is None:
        return None
    hours = float(raw) if ASCII_NUMBER.fullmatch(raw) else -1  # float() also reads "٣" and "inf"
    if not 0 < hours <= MAX_HOURS:
        raise ApiError(400, f"'hours' must be a positive number of hours; got {raw!r}")
    return hours


def series_max_hours(every):
    return MAX_SERIES_POINTS * (24 if every == "day" else 1)


def series_arguments(args):
    """/stats/series' arguments (the query's mapping of strings), checked: (every, hours). Its
    document describes them as one object, so another argument is refused, not ignored."""
    unknown = sorted(set(args) - {"every", "hours"})
    if unknown:
        raise ApiError(400, f"/stats/series takes 'every' and 'hours'; got {listed(unknown, where='')}")
    every = choice_argument("every", args.get("every", "day"), ("hour", "day"))
    hours = hours_argument(args.get("hours", str(SERIES_DEFAULT_HOURS[every])))
    most = series_max_hours(every)
    if hours > most:
        raise ApiError(
            400,
            f"'hours' may be at most {most} with every={every} ({MAX_SERIES_POINTS} points); got {hours:g}",
        )
    return every, hours


def choice_argument(name, raw, choices):
    if raw not in choices:
        raise ApiError(400, f"'{name}' must be one of {listed(list(choices))}; got {shortened(raw)!r}")
    return raw


# The observation, checked against the training columns and dtypes.
def feature_kind(dtype):
    """The JSON type a column accepts, from its training dtype."""
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_string_dtype(dtype):
        return "string"
    return "string or number"


def nullable_dtype(dtype):
    """The training dtype's twin that can hold a missing value (int64 -> Int64, bool -> boolean)."""
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return str(dtype).capitalize()
    return dtype


def shortened(value, most=40):
    """A string quoted back in an error message, cut to `most` characters (other values as they are)."""
    return value if not isinstance(value, str) or len(value) <= most else value[: most - 3] + "..."


def listed(values, most=20, where="GET /model lists them"):
    """A list quoted in an error message, cut short when it is long (and so are its strings)."""
    shown = [shortened(value) for value in values[:most]]
    if len(values) <= most:
        return str(shown)
    return f"{str(shown)[:-1]}, ... ({len(values)} in all{'; ' + where if where else ''})]"


def is_scalar(value):
    return isinstance(value, (str, int, float))  # bool is an int


def same_value(a, b):
    """Equal as JSON values: 1 and 1.0 are, 1 and true and "1" are not."""
    kind = (bool, str)
    return (
        is_scalar(a)
        and is_scalar(b)
        and [isinstance(a, k) for k in kind] == [isinstance(b, k) for k in kind]
        and a == b
    )


@dataclass(frozen=True)
class Observation:
    """One /predict request that passed validation."""

    observation_id: int
    features: dict
    unknown_fields: list
    absent_features: list  # the model's features the request did not carry at all
    stored_form: str  # the features as stored and compared: a retry must match this exactly


class RequestSchema:
    """The features a model takes, from its training columns (in order) and dtypes."""

    def __init__(self, columns, dtypes, max_string_chars=1000):
        self.columns = list(columns)
        self.max_string_chars = max_string_chars
        self.dtypes = dtypes
        self.kinds = {column: feature_kind(dtype) for column, dtype in dtypes.items()}
        # A pandas category column takes exactly its categories: anything else would silently
        # become a missing value when the frame is built.
        self.categories = {
            column: dtype.categories.tolist()
            for column, dtype in dtypes.items()
            if isinstance(dtype, pd.CategoricalDtype)
        }
        self._nullable_dtypes = {column: nullable_dtype(dtype) for column, dtype in dtypes.items()}

    def observation(self, body):
        observation_id = checked_id(body)
        if "observation" not in body:
            misplaced = [column for column in self.columns if column in body]
            where = f"; the body has the feature(s) {listed(misplaced)} outside it" if misplaced else ""
            raise ApiError(400, f"'observation' is missing: send the features as a JSON object{where}")
        raw = body["observation"]
        if not isinstance(raw, dict):
            raise ApiError(400, f"'observation' must be a JSON object of features; got {describe(raw)}")
        absent = [column for column in self.columns if column not in raw]
        if len(absent) == len(self.columns):
            raise ApiError(
                400,
                f"'observation' has none of the model's features; expected {listed(self.columns)} "
                f"(send null for a missing value); got {listed(sorted(raw))}",
            )
        features = {column: self.checked_feature(column, raw.get(column)) for column in self.columns}
        unknown = [key for key in raw if key not in self.kinds]  # in the order sent; no sort of 90,000 keys
        return Observation(observation_id, features, unknown, absent, stored_form(features))

    def stored_matches(self, stored, observation):
        """Whether the observation stored under an id is the one this request sent.

        Equal text is the usual case. Otherwise the stored JSON is read and checked like a
        request, so that a retry still matches a row stored in another form: by an earlier
        release (other JSON formatting), or by the tutorial, which stored the whole request body.
        """
        if stored == observation.stored_form:
            return True
        try:
            parsed = json.loads(stored)
        except (TypeError, ValueError):
            return False
        if isinstance(parsed, dict) and isinstance(parsed.get("observation"), dict):
            parsed = parsed["observation"]  # the tutorial's row: {"id": ..., "observation": {...}}
        if not isinstance(parsed, dict):
            return False
        try:
            features = {column: self.checked_feature(column, parsed.get(column)) for column in self.columns}
        except ApiError:
            return False
        return features == observation.features

    def warnings(self, observation):
        """What the client should know about a request that was scored anyway."""
        found = []
        if observation.unknown_fields:
            found.append(
                f"ignored unknown field(s) {listed(observation.unknown_fields, where='')}; "
                f"the model uses {listed(self.columns)}"
            )
        if observation.absent_features:
            found.append(
                f"feature(s) absent from the request, scored as missing: {observation.absent_features}"
            )
        return found

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
            return self.checked_finite(name, value)
        if kind == "boolean" and isinstance(value, bool):
            return value
        if kind in ("string", "string or number") and isinstance(value, str):
            return self.checked_length(name, value)
        if kind == "string or number" and is_number(value):
            fits = is_integer(value) and INT64_MIN <= value <= INT64_MAX
            return value if fits else self.checked_finite(name, value)
        if kind == "category":
            return self.checked_category(name, value)
        raise ApiError(400, f"'observation.{name}' must be {article(kind)} or null; got {describe(value)}")

    def checked_finite(self, name, value):
        """Infinity, -Infinity and numbers too large for a double (1e400) are refused here: the
        model would refuse them anyway, and would take the rest of their batch down with them."""
        number = float(value) if not is_integer(value) or abs(value) < 2**1023 else math.inf
        if not math.isfinite(number):
            raise ApiError(
                400, f"'observation.{name}' must be a finite number or null; got {describe(value)}"
            )
        return number

    def checked_length(self, name, value):
        if len(value) > self.max_string_chars:
            raise ApiError(
                400,
                f"'observation.{name}' is {len(value)} characters long; the limit is "
                f"{self.max_string_chars} (MAX_STRING_CHARS)",
            )
        return value

    def checked_category(self, name, value):
        """The training category the value names; an unseen value is refused, never made missing."""
        for category in self.categories[name]:
            if same_value(value, category):
                return category
        raise ApiError(
            400,
            f"'observation.{name}' must be one of the categories {listed(self.categories[name])} "
            f"or null; got {describe(value)}",
        )

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


def stored_form(features):
    """Compact JSON, non-ASCII text as UTF-8 rather than \\u escapes (a third of the bytes)."""
    return json.dumps(features, ensure_ascii=False, separators=(",", ":"))


# When the model refuses a row.
def in_words(text, most=200):
    """The text cut at a word boundary, never mid-word."""
    text = " ".join(text.split())
    return text if len(text) <= most else text[: text.rfind(" ", 0, most)] + " ..."


def features_to_blame(features, exc, model_accepts, most_probes=32):
    """The features whose value makes the model refuse the row, where that can be told.

    A non-finite number is to blame by itself, and so are missing values when the model says it
    takes none (scikit-learn: "Input X contains NaN"). Otherwise each feature in turn is set to
    missing and the row offered again, at most `most_probes` times, so the cost stays bounded.
    """
    infinite = [name for name, value in features.items() if isinstance(value, float) and math.isinf(value)]
    if infinite:
        return infinite
    missing = [name for name, value in features.items() if value is None]
    if missing and "NaN" in str(exc):
        return missing
    present = [name for name, value in features.items() if value is not None][:most_probes]
    return [name for name in present if model_accepts({**features, name: None})]


def unscorable(features, exc, model_accepts):
    """The 422 for a row the model refused: the features to blame, and the model's own words."""
    blamed = features_to_blame(features, exc, model_accepts)
    reason = f"{type(exc).__name__}: {in_words(str(exc))}"
    if not blamed:
        return ApiError(422, f"the model could not score this observation ({reason})")
    values = ", ".join(f"{name}={describe(features[name])}" for name in blamed[:20])
    if len(blamed) > 20:
        values += f", ... ({len(blamed)} features in all)"
    return ApiError(422, f"the model could not score this observation because of {values} ({reason})")
