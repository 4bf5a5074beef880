"""A scikit-learn binary classifier behind Flask, with every prediction recorded.

The wire contract (JSON in, JSON out):

    POST /predict  {"id": 0, "observation": {"Age": 22.0, "Cabin": null, "Embarked": "S",
                    "Fare": 7.25, "Parch": 0, "Pclass": 3, "Sex": "male", "SibSp": 1}}
        200 {"proba": 0.09093563862904978}
        The answer leaves only after the prediction is committed. Sending the same id with
        the same observation again (a client retry) answers the stored proba and stores
        nothing new; the same id with a different observation is a 409.

    POST /update   {"id": 0, "true_class": 1}   (0/1, false/true, or the model's own label)
        200 {"id": 1, "observation_id": 0, "observation": "{...}", "proba": 0.0909...,
             "true_class": 1, "model_version": "...", "created_at": "...", "updated_at": "..."}

    GET /list-db-contents?page=1&per_page=100  (only with LIST_DB_TOKEN set, as a Bearer token)
    GET /health, /ready (200 when the database answers and takes writes, else 503), /model,
    GET /stats?hours=24 (served, labelled, ROC AUC, log loss, Brier score, calibration and
        histogram, overall and per model_version; from running totals, in milliseconds)
    GET /stats/series?every=day&hours=720 (the same per hour or day, per model_version)
    GET /  (a browser: the owner's page, templates/index.html; any other client: a JSON index)
    GET /metrics (Prometheus' text format), /openapi.json (OpenAPI 3.1, built from the artifacts)

Every error is {"error": "<what is wrong, what was expected, what arrived>"} with an honest
status: 400 malformed, 401 bad token (WRITE_TOKEN, LIST_DB_TOKEN, MONITORING_TOKEN), 404 unknown
id or route, 405 wrong method, 409 id already used for another observation, 413 body too large,
415 not JSON, 422 the model cannot score the observation, 429 too many monitoring requests at
once, 500 a bug (logged), 503 the database is unavailable (retry later) or refuses writes
(read-only, permission denied, full: the message says what the operator must do).

The request path reads top to bottom here; every other concern has a module of its own
(schema, artifacts, database, migrations, aggregates, batching, coalescing, monitoring,
owner_page, metrics, openapi, request_limits), which app.py
hands what it needs; gunicorn.conf.py runs it with buffering_worker's worker class.
"""

import base64
import binascii
import hmac
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, Response, g, jsonify, render_template, request, stream_with_context
from peewee import BigIntegerField, CharField, DateTimeField, DoubleField, IntegerField, Model, TextField
from playhouse.db_url import connect
from playhouse.shortcuts import model_to_dict
from werkzeug.exceptions import HTTPException

import aggregates
import artifacts
import database
import metrics
import migrations
import monitoring
import openapi
import owner_page
import request_limits
import schema
from batching import MicroBatcher
from coalescing import Coalescer, Pacer
from schema import ApiError

# Settings, all from the environment, each with a default that works on a laptop.
DATABASE_URL = os.environ.get("DATABASE_URL") or "sqlite:///predictions.db"
ARTIFACTS_DIR = Path(os.environ.get("ARTIFACTS_DIR") or Path(__file__).parent)
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES") or 1_000_000)
LIST_DB_TOKEN = os.environ.get("LIST_DB_TOKEN", "")
WRITE_TOKEN = os.environ.get("WRITE_TOKEN", "")  # when set, /predict and /update require it
MONITORING_TOKEN = os.environ.get("MONITORING_TOKEN", "")  # when set, /, /stats and /metrics require it
UPDATE_RETURNS_OBSERVATION = os.environ.get("UPDATE_RETURNS_OBSERVATION", "1") != "0"
MAX_STRING_CHARS = int(os.environ.get("MAX_STRING_CHARS") or 1000)  # per string feature
DB_TIMEOUT_SECONDS = int(os.environ.get("DB_TIMEOUT_SECONDS") or 5)
MAX_BATCH_SIZE = int(os.environ.get("MAX_BATCH_SIZE") or 64)
DB_POOL_SIZE = int(os.environ.get("DB_POOL_SIZE") or 4)  # database connections per worker, at most
STATS_MAX_AGE_SECONDS = float(os.environ.get("STATS_MAX_AGE_SECONDS") or 1)  # reuse /stats answers this old
MONITORING_PER_SECOND = float(os.environ.get("MONITORING_PER_SECOND") or 10)  # /stats answers, per worker
STATS_CACHE_MB = float(os.environ.get("STATS_CACHE_MB") or 32)  # periods' cells kept for /stats, per worker
DISCARD_AT_MOST_BYTES = 32 * 2**20  # of a body over the limit, read before answering 413

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")


# Database: SQLite in a local file by default, PostgreSQL when DATABASE_URL says so.
def database_from_url(url):
    """A pooled connection to the URL's database; database.py has each backend's settings."""
    pooled_url, options = database.pool_settings(url, DB_POOL_SIZE, DB_TIMEOUT_SECONDS)
    return connect(pooled_url, **options)


DB = database_from_url(DATABASE_URL)
database.add_missing_functions(DB)
DB_FAULTS = database.Episodes()  # logs each run of database faults once; /ready asks it too


def utc_now():
    # Naive UTC, because SQLite has no time zones; every timestamp in the table is UTC.
    return datetime.now(UTC).replace(tzinfo=None)


class Prediction(Model):
    observation_id = BigIntegerField(unique=True)  # any 64-bit id; IntegerField is 32-bit on PostgreSQL
    observation = TextField()  # the features the model saw, as JSON
    proba = DoubleField()  # FloatField is 4-byte REAL on PostgreSQL and would round the proba
    true_class = IntegerField(null=True)
    model_version = CharField(max_length=16)  # which pipeline.pickle produced the proba
    # NULL only on rows from the tutorial's table, which recorded neither (see migrations.py).
    created_at = DateTimeField(default=utc_now, index=True, null=True)
    updated_at = DateTimeField(default=utc_now, null=True)

    class Meta:
        database = DB


def create_or_upgrade_tables():
    """Create the tables, or bring an existing database's schema up to date (migrations.py)."""
    try:
        done = migrations.upgrade(DB, Prediction)
    except database.DATABASE_ERRORS as exc:
        found = database.fault(exc)
        reason = "" if found.kind == "error" else found.message.split(";")[0] + ": "
        raise RuntimeError(f"the database failed at start-up: {reason}{database.driver_error(exc)}") from exc
    # Quiet when there was nothing to do (the notebooks import this module too).
    if done.startswith("created"):
        log.info("database: %s", done)
    elif not done.endswith("up to date"):  # an upgrade, or a repair: worth the operator's attention
        log.warning("database: %s", done)


create_or_upgrade_tables()
DB.close_all()  # no connection may be inherited by gunicorn's forked workers


# Model artifacts: loaded once, checked once, so a broken deploy fails at start-up.
COLUMNS = artifacts.load_columns(ARTIFACTS_DIR)
DTYPES = artifacts.load_dtypes(ARTIFACTS_DIR, COLUMNS)
PIPELINE, PIPELINE_SHA256 = artifacts.load_pipeline(ARTIFACTS_DIR)
MODEL_VERSION = PIPELINE_SHA256[:12]
MODEL_META = artifacts.training_versions(ARTIFACTS_DIR, PIPELINE_SHA256)
artifacts.check_columns_against_pipeline(COLUMNS, PIPELINE)
SCHEMA = schema.RequestSchema(COLUMNS, DTYPES, MAX_STRING_CHARS)  # what /predict accepts
LABELS = schema.Labels(PIPELINE.classes_)  # negative first; predict_proba's second column is positive
MODEL_CARD = monitoring.model_card(PIPELINE, SCHEMA, LABELS, PIPELINE_SHA256, MODEL_META)
OPENAPI = openapi.document(SCHEMA, LABELS, MODEL_CARD, MAX_BODY_BYTES)


# Scoring and storing, a batch at a time: requests that arrive together share one
# predict_proba call and one INSERT (see batching.py). A batch may be one request.
def probabilities(feature_rows):
    return PIPELINE.predict_proba(SCHEMA.frame(feature_rows))[:, 1].tolist()


def model_accepts(features):
    try:
        probabilities([features])
    except Exception:
        return False
    return True


def score(observations):
    """One proba per observation, or an ApiError for each row the model can't score."""
    try:
        return probabilities([obs.features for obs in observations])
    except Exception as exc:
        if len(observations) == 1:
            error = schema.unscorable(observations[0].features, exc, model_accepts)
            log.warning("the model could not score observation %s: %s", observations[0].observation_id, error)
            return [error]
    # The model refused the batch: score each half on its own, so that one bad row costs its good
    # neighbours about log2(batch) extra calls instead of one call each.
    middle = len(observations) // 2
    return score(observations[:middle]) + score(observations[middle:])


def store(scored):
    """Insert the scored observations in one statement; return {id: (observation, proba)} as stored.

    One INSERT commits by itself (autocommit). A taken id is left alone (ON CONFLICT DO NOTHING)
    and its request is answered from the row the database kept, so retries and races across
    workers and instances stay correct without catching IntegrityError.
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
    # In id order: two inserts that share ids then wait for each other in the same order, never in
    # a circle (PostgreSQL aborts one of a circle as a deadlock, which would surface as a 503).
    rows.sort(key=lambda row: row["observation_id"])
    inserted = Prediction.insert_many(rows).on_conflict_ignore().as_rowcount().execute()
    DB_FAULTS.succeeded()
    metrics.PREDICTIONS.labels(MODEL_VERSION).inc(inserted)
    if inserted == len(rows):  # the usual case: every id was new, and what we wrote is stored
        return {row["observation_id"]: (row["observation"], row["proba"]) for row in rows}
    ids = [row["observation_id"] for row in rows]
    kept = Prediction.select(Prediction.observation_id, Prediction.observation, Prediction.proba)
    return {row[0]: row[1:] for row in kept.where(Prediction.observation_id.in_(ids)).tuples()}


def answer(obs, stored):
    """The /predict response for an observation, given (observation, proba) stored under its id."""
    stored_observation, stored_proba = stored
    if not SCHEMA.stored_matches(stored_observation, obs):
        return ApiError(
            409,
            f"id {obs.observation_id} was already used for a different observation; "
            "use a new id (the stored prediction is unchanged)",
        )
    warnings = SCHEMA.warnings(obs)
    return {"proba": stored_proba, "warnings": warnings} if warnings else {"proba": stored_proba}


def predict_batch(observations):
    """Score and store a batch; one response body or ApiError per observation, in order."""
    metrics.BATCH_SIZES.observe(len(observations))
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


@app.before_request
def start_clock():
    g.started = time.perf_counter()


@app.after_request
def count_request(response):
    route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded labels, whatever the URL
    metrics.request_answered(route, request.method, response.status_code, time.perf_counter() - g.started)
    return response


@app.teardown_request
def give_back_connection(exc):
    # teardown runs even when the view raised, so no connection leaks from the pool.
    if not DB.is_closed():
        DB.close()


def json_body():
    data = request_limits.read_body(request, MAX_BODY_BYTES)
    return schema.json_object(data, request.content_type, request.is_json)


def require_token(token, name):
    """Refuse a request without 'Authorization: Bearer <token>', comparing in constant time."""
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise ApiError(401, f"send the header 'Authorization: Bearer <{name}>'")


def require_monitoring_token():
    """When MONITORING_TOKEN is set: 'Authorization: Bearer <token>', or HTTP Basic with the token
    as the password (any user name), which is what a browser asks for when told so."""
    if not MONITORING_TOKEN:
        return
    sent = request.headers.get("Authorization", "")
    if sent.startswith("Basic "):
        try:
            sent = "Bearer " + base64.b64decode(sent[6:], validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            sent = ""
    if not hmac.compare_digest(sent.encode(), f"Bearer {MONITORING_TOKEN}".encode()):
        raise ApiError(
            401,
            "send the header 'Authorization: Bearer <MONITORING_TOKEN>' "
            "(a browser asks for it: any user name, the token as the password)",
            {"WWW-Authenticate": 'Basic realm="monitoring", charset="UTF-8"'},
        )


@app.post("/predict")
def predict():
    if WRITE_TOKEN:
        require_token(WRITE_TOKEN, "WRITE_TOKEN")
    observation = SCHEMA.observation(json_body())
    result = BATCHER.submit(observation)
    if isinstance(result, ApiError):
        raise result
    return jsonify(result)


def record(prediction):
    """A stored row as JSON, timestamps in ISO 8601 UTC."""
    row = model_to_dict(prediction)
    return row | {name: iso_utc(row[name]) for name in ("created_at", "updated_at")}


def iso_utc(timestamp):
    return None if timestamp is None else timestamp.isoformat() + "Z"  # None: from the tutorial's table


@app.post("/update")
def update():
    if WRITE_TOKEN:
        require_token(WRITE_TOKEN, "WRITE_TOKEN")
    body = json_body()
    observation_id = schema.checked_id(body)
    true_class = LABELS.true_class_from(body)
    with DB.atomic():
        prediction = Prediction.get_or_none(Prediction.observation_id == observation_id)
        if prediction is None:
            raise ApiError(404, f"no prediction with id {observation_id}; call /predict for it first")
        if prediction.true_class != true_class:
            prediction.true_class = true_class
            prediction.updated_at = utc_now()
            prediction.save()
    DB_FAULTS.succeeded()
    answer = record(prediction)
    if not UPDATE_RETURNS_OBSERVATION:
        del answer["observation"]
    return jsonify(answer)


@app.get("/list-db-contents")
def list_db_contents():
    if not LIST_DB_TOKEN:
        raise ApiError(404, "/list-db-contents is disabled; set LIST_DB_TOKEN on the server to enable it")
    require_token(LIST_DB_TOKEN, "LIST_DB_TOKEN")
    page = schema.page_argument("page", request.args.get("page", "1"), 10**9)
    per_page = schema.page_argument("per_page", request.args.get("per_page", "100"), 1000)
    on_page = Prediction.select(Prediction.id).order_by(Prediction.id).paginate(page, per_page)
    ids = [row.id for row in on_page]
    total = Prediction.select().count()
    return Response(stream_with_context(page_json(page, per_page, ids, total)), mimetype="application/json")


def page_json(page, per_page, ids, total, rows_at_once=10):
    """The page as JSON, written a few rows at a time: a worker never holds a whole page, which
    can be hundreds of megabytes when rows hold long observations. Keys in jsonify's order."""
    yield f'{{"page":{page},"per_page":{per_page},"predictions":['
    for start in range(0, len(ids), rows_at_once):
        chunk = Prediction.select().where(Prediction.id.in_(ids[start : start + rows_at_once]))
        for position, row in enumerate(sorted(chunk, key=lambda row: row.id), start):
            yield ("," if position else "") + app.json.dumps(record(row))
    yield f'],"total":{total}}}\n'


@app.get("/model")
def model():
    return jsonify(MODEL_CARD)


# Monitoring reads only the running totals (aggregates.py); callers that come at once share one
# computation per worker (coalescing.py), so a flood of them can't starve /predict.
STATS_CALLS = Coalescer(STATS_MAX_AGE_SECONDS)
aggregates.PERIODS.budget_bytes = int(STATS_CACHE_MB * 2**20)  # 0: every call reads every cell
# A second's worth at once, then paced; 12 of gunicorn's 16 threads at most wait their turn.
MONITORING_PACE = Pacer(MONITORING_PER_SECOND, burst=MONITORING_PER_SECOND, most_waiting=12)


def monitoring_figures(*calls):
    """The answers to calls, each (key, compute), in one turn of the pace (else a 429)."""
    if not MONITORING_PACE.wait_turn():
        limit = f"{MONITORING_PER_SECOND:g} a second per worker, MONITORING_PER_SECOND"
        raise ApiError(
            429, f"too many monitoring requests at once ({limit}); retry in a second", {"Retry-After": "1"}
        )
    return [STATS_CALLS.call(key, compute) for key, compute in calls]


def monitoring_answer(key, compute):
    return jsonify(monitoring_figures((key, compute))[0])


@app.get("/stats")
def stats():
    require_monitoring_token()
    hours = schema.hours_argument(request.args.get("hours"))
    table = Prediction._meta.table_name
    return monitoring_answer(("stats", hours), lambda: monitoring.stats_report(DB, table, hours, utc_now()))


@app.get("/stats/series")
def stats_series():
    require_monitoring_token()
    every = schema.choice_argument("every", request.args.get("every", "day"), ("hour", "day"))
    hours = schema.hours_argument(request.args.get("hours", "720"))
    most = monitoring.MAX_SERIES_POINTS * (24 if every == "day" else 1)
    if hours > most:
        points = monitoring.MAX_SERIES_POINTS
        raise ApiError(
            400, f"'hours' may be at most {most} with every={every} ({points} points); got {hours:g}"
        )
    return monitoring_answer(
        ("series", every, hours), lambda: monitoring.series_report(DB, every, hours, utc_now())
    )


@app.get("/openapi.json")
def openapi_document():
    return jsonify(OPENAPI)


ROUTES = {
    "GET /": "this index; in a browser, the owner's page: readiness, the model, its quality over time",
    "POST /predict": "score an observation and record it",
    "POST /update": "record the true class of an earlier prediction",
    "GET /stats": "served, labelled and the quality of the labelled (?hours= for a window)",
    "GET /stats/series": "the same per hour or day (?every=hour|day&hours=)",
    "GET /model": "the model card: features, classes, library versions",
    "GET /health": "the process answers",
    "GET /ready": "the database answers and takes writes",
    "GET /openapi.json": "an OpenAPI 3.1 description of every route and of the request schema",
    "GET /metrics": "counters in Prometheus' text format, added up over the workers",
    "GET /list-db-contents": "stored predictions, a page at a time (only with LIST_DB_TOKEN set)",
}


@app.get("/")
def index():
    """A browser (asking for HTML first) gets the owner's page; any other client a JSON index."""
    require_monitoring_token()
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html":
        return jsonify({"model_version": MODEL_VERSION, "routes": ROUTES, "openapi": "/openapi.json"})
    table = Prediction._meta.table_name
    now = utc_now()
    stats_now, by_hour, by_day = monitoring_figures(
        (("stats", None), lambda: monitoring.stats_report(DB, table, None, now)),
        (("series", "hour", 48.0), lambda: monitoring.series_report(DB, "hour", 48.0, now)),
        (("series", "day", 2160.0), lambda: monitoring.series_report(DB, "day", 2160.0, now)),
    )
    page = owner_page.context(MODEL_CARD, readiness(), stats_now, by_hour, by_day, OPENAPI, request.host_url)
    return render_template("index.html", **page)


@app.get("/health")
def health():
    return jsonify({"status": "ok"})


def readiness():
    """None when the database answers and takes writes, as far as can be seen without writing;
    else the refusal's message."""
    refusal = database.write_refusal(DB, Prediction._meta.table_name)
    remembered = DB_FAULTS.refusal()  # a refusal a recent write met, which the query may not see
    if refusal is None and remembered is not None and not database.can_see(DB, remembered):
        refusal = remembered
    return None if refusal is None else refusal.message


@app.get("/ready")
def ready():
    refusal = readiness()
    metrics.READY.set(refusal is None)
    if refusal is not None:
        return error_response(503, f"not ready: {refusal}")
    return jsonify({"status": "ready", "model_version": MODEL_VERSION})


@app.get("/metrics")
def prometheus_metrics():
    """Prometheus' text format, every worker's counters added up (metrics.py)."""
    require_monitoring_token()
    try:
        metrics.READY.set(readiness() is None)
    except database.DATABASE_ERRORS as exc:
        metrics.READY.set(0)
        metrics.DATABASE_ERRORS.labels(database.fault(exc).kind).inc()
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


# Errors: one JSON shape for ours, Flask's and the database's.
def error_response(status, message, headers=None):
    return jsonify({"error": message}), status, headers or {}


@app.errorhandler(ApiError)
def api_error(exc):
    return error_response(exc.status, exc.message, exc.headers)


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
        # Read what the client is still sending (up to a bound) so that it can read this answer.
        drained = request_limits.discard_rest(request.environ, DISCARD_AT_MOST_BYTES)
        message = f"the body is larger than the limit of {MAX_BODY_BYTES} bytes (MAX_BODY_BYTES)"
        return error_response(413, message, {} if drained else {"Connection": "close"})
    return error_response(exc.code, exc.description)


def database_fault(exc):
    found = database.fault(exc)
    DB_FAULTS.failed(found, exc)
    metrics.DATABASE_ERRORS.labels(found.kind).inc()
    if found.kind != "error":
        try:
            DB.manual_close()  # never hand this connection out again: the next one starts afresh
        except Exception:
            log.debug("closing the failed connection failed", exc_info=True)
    return error_response(500 if found.kind == "error" else 503, found.message)


for exception_class in database.DATABASE_ERRORS:
    app.register_error_handler(exception_class, database_fault)


@app.errorhandler(Exception)
def unexpected_error(exc):
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(500, "internal error; the details are in the server log")


if __name__ == "__main__":
    # Flask's development server, for local work only; deploys use gunicorn (gunicorn.conf.py).
    app.run(port=int(os.environ.get("PORT") or 5000), debug=os.environ.get("FLASK_DEBUG") == "1")
