"""A scikit-learn binary classifier behind Flask, with every prediction recorded.

The wire contract (JSON in, JSON out):

    POST /predict  {"id": 0, "observation": {"Age": 22.0, "Cabin": null, "Embarked": "S",
                    "Fare": 7.25, "Parch": 0, "Pclass": 3, "Sex": "male", "SibSp": 1}}
        200 {"proba": 0.09116536016275459}
        The answer leaves only after the prediction is committed. Sending the same id with
        the same observation again (a client retry) answers the stored proba and stores
        nothing new; the same id with a different observation is a 409.

    POST /update   {"id": 0, "true_class": 1}
        200 {"id": 1, "observation_id": 0, "observation": "{...}", "proba": 0.0911...,
             "true_class": 1, "model_version": "...", "created_at": "...", "updated_at": "..."}

    GET /list-db-contents?page=1&per_page=100
        Off unless LIST_DB_TOKEN is set; then send "Authorization: Bearer <LIST_DB_TOKEN>".

    GET /health  200 while the process is up.
    GET /ready   200 when the model is loaded and the database answers, else 503.
    GET /model   the features, their dtypes and categories, the model's hash and versions.
    GET /stats?hours=24
        Predictions served and labelled, and on the labelled ones ROC AUC, log loss, Brier
        score and predicted vs observed positive rate, overall and per model_version.

Every error is {"error": "<what is wrong, what was expected, what arrived>"} with an honest
status: 400 malformed, 401 bad token, 404 unknown id or route, 405 wrong method, 409 id
already used for another observation, 413 body too large, 415 not JSON, 422 the model
cannot score the observation, 503 the database is unavailable (safe to retry).
"""

import hashlib
import hmac
import json
import logging
import math
import os
import pickle
import sqlite3
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from flask import Flask, jsonify, request
from peewee import (
    BigIntegerField,
    CharField,
    DateTimeField,
    DoubleField,
    IntegerField,
    InterfaceError,
    Model,
    OperationalError,
    TextField,
    fn,
)
from playhouse.db_url import connect
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException

from batching import MicroBatcher

# Settings, all from the environment, each with a default that works on a laptop.
DATABASE_URL = os.environ.get("DATABASE_URL") or "sqlite:///predictions.db"
ARTIFACTS_DIR = Path(os.environ.get("ARTIFACTS_DIR") or Path(__file__).parent)
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES") or 1_000_000)
LIST_DB_TOKEN = os.environ.get("LIST_DB_TOKEN", "")
DB_TIMEOUT_SECONDS = int(os.environ.get("DB_TIMEOUT_SECONDS") or 5)
MAX_BATCH_SIZE = int(os.environ.get("MAX_BATCH_SIZE") or 64)
DB_POOL_SIZE = int(os.environ.get("DB_POOL_SIZE") or 4)  # database connections per worker, at most

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")


# Database: SQLite in a local file by default, PostgreSQL when DATABASE_URL says so.
def sqlite_has_ln():
    """SQLite has ln() only when built with its math functions (Debian's is; some others aren't)."""
    try:
        sqlite3.connect(":memory:").execute("SELECT ln(1)")
    except sqlite3.OperationalError:
        return False
    return True


def database_from_url(url):
    """Open the URL's database through peewee's connection pool.

    Each request borrows a connection and gives it back, instead of paying for a new
    one; a connection the server dropped is thrown away rather than handed out again.
    """
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        # WAL lets readers and the writer work at once, synchronous=NORMAL makes a commit
        # cheap while staying durable across a crash of the service, and BEGIN IMMEDIATE
        # plus a busy timeout make concurrent writers queue instead of failing "locked".
        return connect(
            f"sqlite+pool://{rest}",
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",
                "busy_timeout": DB_TIMEOUT_SECONDS * 1000,
            },
            lock_type="IMMEDIATE",
            check_same_thread=False,
            max_connections=DB_POOL_SIZE,
            timeout=DB_TIMEOUT_SECONDS,  # the pool's: wait this long for a free connection
        )
    if scheme in ("postgres", "postgresql"):  # Heroku hands out postgres:// URLs
        return connect(
            f"postgresql+pool://{rest}",
            connect_timeout=DB_TIMEOUT_SECONDS,
            max_connections=DB_POOL_SIZE,
            timeout=DB_TIMEOUT_SECONDS,  # wait this long for a free connection, then answer 503
        )
    raise RuntimeError(
        f"DATABASE_URL must start with sqlite://, postgres:// or postgresql://; got {scheme}://"
    )


DB = database_from_url(DATABASE_URL)
if DATABASE_URL.startswith("sqlite") and not sqlite_has_ln():
    DB.register_function(math.log, "ln", 1)  # /stats computes log loss in SQL
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, MaxConnectionsExceeded)


def utc_now():
    # Naive UTC, because SQLite has no time zones; every timestamp in the table is UTC.
    return datetime.now(UTC).replace(tzinfo=None)


class Prediction(Model):
    observation_id = BigIntegerField(unique=True)  # any 64-bit id; IntegerField is 32-bit on PostgreSQL
    observation = TextField()  # the features the model saw, as JSON
    proba = DoubleField()  # FloatField is 4-byte REAL on PostgreSQL and would round the proba
    true_class = IntegerField(null=True)
    model_version = CharField(max_length=16)  # which pipeline.pickle produced the proba
    created_at = DateTimeField(default=utc_now, index=True)
    updated_at = DateTimeField(default=utc_now)

    class Meta:
        database = DB


def create_tables():
    """Create the table once, before gunicorn forks its workers.

    On PostgreSQL a transaction-scoped advisory lock makes instances that start together
    on an empty database take turns instead of colliding in the catalog.
    """
    with DB.connection_context(), DB.atomic():
        if not DATABASE_URL.startswith("sqlite"):
            DB.execute_sql("SELECT pg_advisory_xact_lock(hashtext('create_tables'))")
        DB.create_tables([Prediction], safe=True)


create_tables()
DB.close_all()  # no connection may be inherited by gunicorn's forked workers


# Model artifacts: loaded once, checked once, so a broken deploy fails at start-up.
class ArtifactError(RuntimeError):
    """The model files are missing, broken or inconsistent; the message says what to fix."""


def artifact_path(name):
    path = ARTIFACTS_DIR / name
    if not path.is_file():
        raise ArtifactError(
            f"{name} not found in {ARTIFACTS_DIR}: run 'Step 1 - Train and Serialize.ipynb' "
            "or copy your model's pipeline.pickle, dtypes.pickle and columns.json there"
        )
    return path


def load_columns():
    columns = json.loads(artifact_path("columns.json").read_text())
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not columns:
        raise ArtifactError("columns.json must hold a non-empty JSON list of column names")
    return columns


def load_dtypes(columns):
    with artifact_path("dtypes.pickle").open("rb") as fh:
        dtypes = pickle.load(fh)
    if not isinstance(dtypes, pd.Series):
        raise ArtifactError("dtypes.pickle must hold a pandas Series (X_train.dtypes)")
    if list(dtypes.index) != columns:
        only_columns = sorted(set(columns) - set(dtypes.index))
        only_dtypes = sorted(set(dtypes.index) - set(columns))
        raise ArtifactError(
            "columns.json and dtypes.pickle disagree: only in columns.json "
            f"{only_columns}, only in dtypes.pickle {only_dtypes}"
            + ("" if only_columns or only_dtypes else ", or the same names in another order")
            + "; write both from the same X_train"
        )
    return dtypes


def load_pipeline():
    path = artifact_path("pipeline.pickle")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipeline = joblib.load(path)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ArtifactError(
            f"pipeline.pickle needs code that is not importable here ({exc}). Custom transformers "
            "must live in an importable package (not in the notebook's __main__) that is deployed "
            "with the service; see 'Custom transformers' in the README"
        ) from exc
    for warning in caught:
        log.warning("while loading pipeline.pickle: %s", warning.message)
    if not callable(getattr(pipeline, "predict_proba", None)):
        raise ArtifactError(f"pipeline.pickle holds a {type(pipeline).__name__}, which has no predict_proba")
    if len(getattr(pipeline, "classes_", ())) != 2:
        raise ArtifactError(
            f"the pipeline must be a binary classifier; its classes are {getattr(pipeline, 'classes_', None)}"
        )
    return pipeline, hashlib.sha256(path.read_bytes()).hexdigest()


def warn_about_versions(pipeline_sha256):
    """Warn loudly when the libraries differ from the ones that trained the pipeline."""
    path = ARTIFACTS_DIR / "model_meta.json"
    if not path.is_file():
        log.info("no model_meta.json: the versions that trained the pipeline are unknown")
        return {}
    meta = json.loads(path.read_text())
    if meta.get("pipeline_sha256") != pipeline_sha256:
        log.warning("model_meta.json describes another pipeline.pickle; ignoring it")
        return {}
    for package in ("scikit-learn", "pandas", "numpy"):
        if meta.get(package) and meta[package] != version(package):
            log.warning(
                "VERSION MISMATCH: pipeline.pickle was written with %s %s but %s %s is running; "
                "install the versions in requirements_prod.txt",
                package,
                meta[package],
                package,
                version(package),
            )
    return meta


COLUMNS = load_columns()
DTYPES = load_dtypes(COLUMNS)
PIPELINE, PIPELINE_SHA256 = load_pipeline()
MODEL_VERSION = PIPELINE_SHA256[:12]
MODEL_META = warn_about_versions(PIPELINE_SHA256)
POSITIVE_CLASS_INDEX = 1  # predict_proba's columns follow classes_; the second is the positive class


# Request validation: the schema comes from columns.json and dtypes.pickle.
class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def describe(value):
    """How a JSON value is quoted back to the client in an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_integral_float(value):
    return isinstance(value, float) and value.is_integer()  # 3.0, but not 2.5, inf or nan


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


FEATURE_KINDS = {column: feature_kind(dtype) for column, dtype in DTYPES.items()}
NULLABLE_DTYPES = {column: nullable_dtype(dtype) for column, dtype in DTYPES.items()}


def checked_feature(name, value):
    """The feature's value as the model should see it, or an ApiError saying why not."""
    if is_missing(value):
        return None
    kind = FEATURE_KINDS[name]
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


def article(kind):
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def checked_id(body):
    if "id" not in body:
        raise ApiError(400, "'id' is missing: send the observation's integer id")
    value = body["id"]
    if not is_integer(value) or not INT64_MIN <= value <= INT64_MAX:
        raise ApiError(400, f"'id' must be an integer between -2**63 and 2**63-1; got {describe(value)}")
    return value


def duplicate_keys_refused(pairs):
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ApiError(400, f"the JSON object repeats the key(s) {repeated}; send each field once")
    return dict(pairs)


def json_body():
    """The request body as a JSON object, or an ApiError saying what was wrong with it."""
    if not request.is_json:
        raise ApiError(
            415,
            "send the body as JSON with the header Content-Type: application/json; "
            f"got Content-Type: {request.content_type or 'none'}",
        )
    try:
        text = request.get_data(cache=True).decode("utf-8")
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


@dataclass(frozen=True)
class Observation:
    """One /predict request that passed validation."""

    observation_id: int
    features: dict
    unknown_fields: list
    stored_form: str  # the features as stored and compared: a retry must match this exactly


def observation_from(body):
    observation_id = checked_id(body)
    if "observation" not in body:
        raise ApiError(400, "'observation' is missing: send the features as a JSON object")
    raw = body["observation"]
    if not isinstance(raw, dict):
        raise ApiError(400, f"'observation' must be a JSON object of features; got {describe(raw)}")
    features = {column: checked_feature(column, raw.get(column)) for column in COLUMNS}
    unknown = sorted(set(raw) - set(COLUMNS))
    return Observation(observation_id, features, unknown, json.dumps(features))


# Scoring and storing, a batch at a time: requests that arrive together share one
# predict_proba call and one transaction (see batching.py). A batch may be one request.
def to_frame(feature_rows):
    """The rows as a DataFrame with the training columns and dtypes, built column by column.

    A column keeps its exact training dtype unless it holds a missing value that dtype can't
    (an integer column with a null), which then gets the nullable twin.
    """
    return pd.DataFrame(
        {column: column_array(column, [row[column] for row in feature_rows]) for column in COLUMNS}
    )


def column_array(column, values):
    dtype = DTYPES[column]
    if isinstance(dtype, np.dtype) and (dtype.kind == "f" or None not in values):
        return np.array(values, dtype=dtype)  # a float column turns None into NaN by itself
    return pd.array(values, dtype=NULLABLE_DTYPES[column])


def probabilities(feature_rows):
    return PIPELINE.predict_proba(to_frame(feature_rows))[:, POSITIVE_CLASS_INDEX].tolist()


def score(observations):
    """One proba per observation, or an ApiError for each row the model can't score."""
    try:
        return probabilities([obs.features for obs in observations])
    except Exception as exc:
        if len(observations) == 1:
            log.info(
                "the model could not score observation %s", observations[0].observation_id, exc_info=True
            )
            return [
                ApiError(
                    422, f"the model could not score this observation: {type(exc).__name__}: {str(exc)[:300]}"
                )
            ]
    # The model refused the batch: score its rows one by one to find the culprits.
    return [result for obs in observations for result in score([obs])]


def store(scored):
    """Insert the scored observations in one statement; return {id: (observation, proba)} as stored.

    One INSERT is atomic and commits by itself (peewee runs in autocommit mode), which costs
    PostgreSQL one round trip instead of three. An id that is already taken is left alone
    (ON CONFLICT DO NOTHING), and whoever asked is then compared with the row the database
    kept: that keeps retries and races across workers and instances correct without
    catching IntegrityError.
    """
    now = utc_now()
    rows = [
        {
            "observation_id": obs.observation_id,
            "observation": obs.stored_form,
            "proba": proba,
            "model_version": MODEL_VERSION,
            "created_at": now,
            "updated_at": now,
        }
        for obs, proba in scored
    ]
    inserted = Prediction.insert_many(rows).on_conflict_ignore().as_rowcount().execute()
    if inserted == len(rows):  # the usual case: every id was new, and what we wrote is stored
        return {row["observation_id"]: (row["observation"], row["proba"]) for row in rows}
    ids = [row["observation_id"] for row in rows]
    kept = Prediction.select(Prediction.observation_id, Prediction.observation, Prediction.proba)
    return {row[0]: row[1:] for row in kept.where(Prediction.observation_id.in_(ids)).tuples()}


def answer(obs, stored):
    """The /predict response for an observation, given (observation, proba) stored under its id."""
    stored_observation, stored_proba = stored
    if stored_observation != obs.stored_form:
        return ApiError(
            409,
            f"id {obs.observation_id} was already used for a different observation; "
            "use a new id (the stored prediction is unchanged)",
        )
    body = {"proba": stored_proba}
    if obs.unknown_fields:
        body["warnings"] = [f"ignored unknown field(s) {obs.unknown_fields}; the model uses {COLUMNS}"]
    return body


def predict_batch(observations):
    """Score and store a batch; one response body or ApiError per observation, in order."""
    results = score(observations)
    pairs = list(zip(observations, results, strict=True))
    scored = [(obs, proba) for obs, proba in pairs if not isinstance(proba, ApiError)]
    stored = store(scored) if scored else {}
    return [
        proba if isinstance(proba, ApiError) else answer(obs, stored[obs.observation_id])
        for obs, proba in pairs
    ]


BATCHER = MicroBatcher(predict_batch, MAX_BATCH_SIZE)


# Web routes.
app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
app.config["DEBUG"] = False  # Flask would take FLASK_DEBUG from the environment; only `python app.py` may


@app.teardown_request
def give_back_connection(exc):
    # teardown runs even when the view raised, so no connection leaks from the pool.
    if not DB.is_closed():
        DB.close()


@app.post("/predict")
def predict():
    observation = observation_from(json_body())
    result = BATCHER.submit(observation)
    if isinstance(result, ApiError):
        raise result
    return jsonify(result)


def true_class_from(body):
    if "true_class" not in body:
        raise ApiError(400, "'true_class' is missing: send 0 or 1")
    value = body["true_class"]
    if isinstance(value, bool) or (is_integer(value) and value in (0, 1)):
        return int(value)
    raise ApiError(400, f"'true_class' must be 0 or 1 (or false/true); got {describe(value)}")


def record(prediction):
    """A stored row as JSON, timestamps in ISO 8601 UTC."""
    return {
        "id": prediction.id,
        "observation_id": prediction.observation_id,
        "observation": prediction.observation,
        "proba": prediction.proba,
        "true_class": prediction.true_class,
        "model_version": prediction.model_version,
        "created_at": prediction.created_at.isoformat() + "Z",
        "updated_at": prediction.updated_at.isoformat() + "Z",
    }


@app.post("/update")
def update():
    body = json_body()
    observation_id = checked_id(body)
    true_class = true_class_from(body)
    with DB.atomic():
        prediction = Prediction.get_or_none(Prediction.observation_id == observation_id)
        if prediction is None:
            raise ApiError(404, f"no prediction with id {observation_id}; call /predict for it first")
        if prediction.true_class != true_class:
            prediction.true_class = true_class
            prediction.updated_at = utc_now()
            prediction.save()
    return jsonify(record(prediction))


def page_argument(name, default, maximum):
    raw = request.args.get(name, str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError(400, f"'{name}' must be an integer from 1 to {maximum}; got {raw!r}")
    return int(raw)


@app.get("/list-db-contents")
def list_db_contents():
    if not LIST_DB_TOKEN:
        raise ApiError(404, "/list-db-contents is disabled; set LIST_DB_TOKEN on the server to enable it")
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {LIST_DB_TOKEN}".encode()):
        raise ApiError(401, "send the header 'Authorization: Bearer <LIST_DB_TOKEN>'")
    page = page_argument("page", 1, 10**9)
    per_page = page_argument("per_page", 100, 1000)
    rows = Prediction.select().order_by(Prediction.id).paginate(page, per_page)
    return jsonify(
        {
            "page": page,
            "per_page": per_page,
            "total": Prediction.select().count(),
            "predictions": [record(row) for row in rows],
        }
    )


def categories_seen(estimator, columns=None):
    """{column: categories seen in training}, from every fitted encoder in the pipeline."""
    found = {}
    if hasattr(estimator, "transformers_"):  # a ColumnTransformer: each part names its columns
        for _, transformer, part_columns in estimator.transformers_:
            if isinstance(part_columns, list) and not isinstance(transformer, str):
                found.update(categories_seen(transformer, part_columns))
    elif hasattr(estimator, "steps"):  # a Pipeline
        for _, step in estimator.steps:
            found.update(categories_seen(step, columns))
    elif hasattr(estimator, "categories_"):
        names = getattr(estimator, "feature_names_in_", columns)
        if names is not None:
            for name, categories in zip(names, estimator.categories_, strict=True):
                found[str(name)] = [
                    value for value in categories.tolist() if isinstance(value, (str, int, float))
                ]
    return found


def model_card():
    categories = categories_seen(PIPELINE)
    return {
        "model_version": MODEL_VERSION,
        "pipeline_sha256": PIPELINE_SHA256,
        "positive_class": PIPELINE.classes_[POSITIVE_CLASS_INDEX].item(),
        "features": [
            {"name": column, "dtype": str(dtype), "accepts": FEATURE_KINDS[column]}
            | ({"categories": categories[column]} if column in categories else {})
            for column, dtype in DTYPES.items()
        ],
        "versions": {
            package: {"running": version(package), "trained_with": MODEL_META.get(package)}
            for package in ("scikit-learn", "pandas", "numpy")
        },
    }


MODEL_CARD = model_card()


@app.get("/model")
def model():
    return jsonify(MODEL_CARD)


# Live quality: how the model does on the predictions whose true class has arrived. Everything
# is aggregated in the database, in one pass over the labelled rows (see the README for costs).
QUALITY_SQL = """
WITH keyed AS (
    SELECT {key} AS key, proba, true_class,
           CASE WHEN proba < 1e-15 THEN 1e-15 WHEN proba > 1 - 1e-15 THEN 1 - 1e-15 ELSE proba END AS clipped
    FROM prediction
    WHERE true_class IS NOT NULL AND created_at >= {param}
), ranked AS (
    SELECT *, RANK() OVER (PARTITION BY key ORDER BY proba) AS low_rank,
              COUNT(*) OVER (PARTITION BY key, proba) AS ties
    FROM keyed
)
SELECT key, COUNT(*), SUM(true_class), AVG(proba), AVG((proba - true_class) * (proba - true_class)),
       -AVG(CASE WHEN true_class = 1 THEN LN(clipped) ELSE LN(1 - clipped) END),
       SUM(CASE WHEN true_class = 1 THEN low_rank + (ties - 1) / 2.0 ELSE 0 END)
FROM ranked GROUP BY key
"""


def quality(since, by_model_version):
    """{model_version (or "" for all of them): metrics} for labelled predictions made since `since`."""
    sql = QUALITY_SQL.format(key="model_version" if by_model_version else "''", param=DB.param)
    return {row[0]: quality_metrics(*row[1:]) for row in DB.execute_sql(sql, (since,)).fetchall()}


def quality_metrics(labelled, positives, mean_proba, brier, log_loss, positive_rank_sum):
    """ROC AUC from the rank sum of the positives (Mann-Whitney), ties counted as half."""
    negatives = labelled - positives
    auc = None
    if positives and negatives:
        auc = (float(positive_rank_sum) - positives * (positives + 1) / 2) / (positives * negatives)
    return {
        "labelled": labelled,
        "roc_auc": rounded(auc),
        "log_loss": rounded(log_loss),
        "brier_score": rounded(brier),
        "predicted_positive_rate": rounded(mean_proba),
        "observed_positive_rate": rounded(positives / labelled),
    }


def rounded(value):
    return None if value is None else round(float(value), 6)


def served(since):
    """{model_version: (predictions, labelled)} since `since`."""
    query = (
        Prediction.select(Prediction.model_version, fn.COUNT(Prediction.id), fn.COUNT(Prediction.true_class))
        .where(Prediction.created_at >= since)
        .group_by(Prediction.model_version)
    )
    return {version: (total, labelled) for version, total, labelled in query.tuples()}


def window_start():
    raw = request.args.get("hours")
    if raw is None:
        return None, datetime(1970, 1, 1)
    try:
        hours = float(raw)
    except ValueError:
        hours = -1
    if not 0 < hours <= 24 * 365 * 100:
        raise ApiError(400, f"'hours' must be a positive number of hours; got {raw!r}")
    return hours, utc_now() - timedelta(hours=hours)


@app.get("/stats")
def stats():
    hours, since = window_start()
    counts = served(since)
    by_version = quality(since, by_model_version=True)
    [overall] = quality(since, by_model_version=False).values() or [None]

    def summary(predictions, labelled, metrics):
        return {"predictions": predictions, **(metrics or {"labelled": labelled})}

    return jsonify(
        {
            "window_hours": hours,
            "overall": summary(
                sum(t for t, _ in counts.values()), sum(n for _, n in counts.values()), overall
            ),
            "by_model_version": {
                version: summary(total, labelled, by_version.get(version))
                for version, (total, labelled) in sorted(counts.items())
            },
        }
    )


@app.get("/health")
def health():
    return jsonify({"status": "ok"})


@app.get("/ready")
def ready():
    try:
        DB.execute_sql("SELECT 1")
    except DATABASE_UNAVAILABLE as exc:
        log.warning("not ready: %s", exc)
        raise ApiError(503, "the database is not answering") from None
    return jsonify({"status": "ready", "model_version": MODEL_VERSION})


# Errors: one JSON shape for ours, Flask's and the database's.
def error_response(status, message, headers=None):
    return jsonify({"error": message}), status, headers or {}


@app.errorhandler(ApiError)
def api_error(exc):
    return error_response(exc.status, exc.message)


@app.errorhandler(HTTPException)
def http_error(exc):
    if exc.code == 404:
        return error_response(404, f"no route {request.path}; see the routes in the README")
    if exc.code == 405:
        allowed = exc.valid_methods or []
        return error_response(
            405,
            f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}",
            {"Allow": ", ".join(allowed)},
        )
    if exc.code == 413:
        return error_response(
            413, f"the body is larger than the limit of {MAX_BODY_BYTES} bytes (MAX_BODY_BYTES)"
        )
    return error_response(exc.code, exc.description)


def database_unavailable(exc):
    log.warning("database unavailable: %s", exc)
    try:
        DB.manual_close()  # never hand this connection out again
    except Exception:
        log.debug("closing the broken connection failed", exc_info=True)
    return error_response(503, "the database is unavailable; nothing was stored, retry the request later")


for exception_class in DATABASE_UNAVAILABLE:
    app.register_error_handler(exception_class, database_unavailable)


@app.errorhandler(Exception)
def unexpected_error(exc):
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(500, "internal error; the details are in the server log")


if __name__ == "__main__":
    # Flask's development server, for local work only; deploys use gunicorn (gunicorn.conf.py).
    app.run(port=int(os.environ.get("PORT") or 5000), debug=os.environ.get("FLASK_DEBUG") == "1")
