"""A scikit-learn binary classifier behind Flask, with every prediction recorded.

    POST /predict {"id": 0, "observation": {"Age": 22.0, "Cabin": null, ...}} -> {"proba": 0.09...}
    POST /update  {"id": 0, "true_class": 1} -> the stored record

It reads like the tutorial: settings, database, model, routes, errors. The other routes are in
service/routes.py, the error statuses in service/errors.py, and every other concern is a module
of the `service` package, handed what it needs from here. gunicorn serves `app:app`.
"""

import contextlib
import logging
import os
import time

from flask import Flask, Response, g, jsonify, render_template, request, stream_with_context
from peewee import BigIntegerField, CharField, DateTimeField, DoubleField, IntegerField, Model, TextField
from playhouse.db_url import connect
from werkzeug.exceptions import HTTPException

from service import (
    archive,
    auth,
    commands,
    database,
    errors,
    listing,
    metrics,
    migrations,
    model,
    model_card,
    openapi,
    owner_page,
    platforms,
    request_limits,
    routes,
    schema,
    settings,
    storage,
)
from service.batching import MicroBatcher
from service.errors import ApiError
from service.monitoring import drift, reports
from service.predictions import Predictor
from service.timestamps import utc_now

# Settings: every one from the environment, with a default that works on a laptop.
SETTINGS = settings.read()
logging.basicConfig(level=SETTINGS.LOG_LEVEL, format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger(__name__)
PLATFORM = platforms.detect(os.environ)  # Heroku, Railway, Render, Fly.io, Cloud Run, or None
# A platform wipes its disk at each restart: SQLite there would lose every prediction, so no start.
WARNINGS = platforms.database_warnings(PLATFORM, SETTINGS.DATABASE_URL, SETTINGS.ALLOW_EPHEMERAL_SQLITE)


# Database: SQLite in a local file by default, PostgreSQL when DATABASE_URL says so. Each
# request borrows a connection from a pool (service/database.py has each backend's settings).
POOL_SIZE = database.connections_per_worker(SETTINGS.DB_MAX_CONNECTIONS, SETTINGS.WEB_CONCURRENCY)
url, options = database.pool_settings(SETTINGS.DATABASE_URL, POOL_SIZE, SETTINGS.DB_TIMEOUT_SECONDS)
DB = connect(url, **options)
database.add_missing_functions(DB)
DB_EPISODES = database.Episodes()  # logs each run of database faults once; /ready asks it too
metrics.CONNECTIONS_ALLOWED.set(POOL_SIZE * SETTINGS.WEB_CONCURRENCY)  # gunicorn.conf.py logs it


class Prediction(Model):
    observation_id = BigIntegerField(unique=True)  # any 64-bit id; IntegerField is 32-bit on PostgreSQL
    observation = TextField()  # the features the model saw, as JSON
    proba = DoubleField()  # FloatField is 4-byte REAL on PostgreSQL and would round the proba
    true_class = IntegerField(null=True)
    model_version = CharField(max_length=16)  # which pipeline.pickle produced the proba
    # NULL only on rows from the tutorial's table, which recorded neither (see migrations.py).
    created_at = DateTimeField(default=utc_now, index=True, null=True)
    updated_at = DateTimeField(default=utc_now, null=True)
    feature_bins = TextField(null=True)  # each feature's bin in the training profile, for /drift
    challenger_proba = DoubleField(null=True)  # a challenger's answer, stored, never returned
    challenger_version = CharField(max_length=16, null=True)  # NULL: no challenger scored the row

    class Meta:
        database = DB


# Create the tables or bring the schema up to date (migrations.py), unless on a platform that means
# passing over so many rows that the port is missed: its release does that. Until then, writes get 503.
SCHEMA_STATE = migrations.prepare(DB, Prediction, SETTINGS.UPGRADE_AT_START_ROWS, on_platform=bool(PLATFORM))


# The model: its files loaded once and checked against each other, so a broken deploy fails at
# start-up; service/model.py also finds the cheapest exact way to call it.
MODEL = model.load(SETTINGS.ARTIFACTS_DIR, SETTINGS.MAX_STRING_CHARS, fast=SETTINGS.FAST_PATH)
COLUMNS, SCHEMA, LABELS, MODEL_VERSION = MODEL.columns, MODEL.schema, MODEL.labels, MODEL.version
# A retrained model in challenger/ scores every prediction too, in shadow, if it takes what MODEL takes.
CHALLENGER = model.load_challenger(
    SETTINGS.ARTIFACTS_DIR / model.CHALLENGER_FOLDER,
    MODEL,
    SETTINGS.MAX_STRING_CHARS,
    fast=SETTINGS.FAST_PATH,
)
# The training data's profile, the reference for /drift; a model without one serves all the same.
PROFILES = drift.Profiles(DB, MODEL_VERSION, MODEL.profile, MODEL.why_no_profile)
if SCHEMA_STATE.is_current(DB):  # else the release stores it (service/commands.py)
    PROFILES.store(DB)
DB.close_all()  # no connection may be inherited by gunicorn's forked workers
MODEL_CARD = model_card.model_card(
    MODEL.pipeline,
    SCHEMA,
    LABELS,
    MODEL.sha256,
    MODEL.meta,
    WARNINGS,
    PROFILES.from_file,
    PROFILES.why_none,
    calls=MODEL.path,
)
if CHALLENGER:  # without one, /model is as it was
    MODEL_CARD["challenger"] = CHALLENGER.card()
OPENAPI = openapi.document(SCHEMA, LABELS, MODEL_CARD, SETTINGS.MAX_BODY_BYTES, auth.enforced(SETTINGS))

# Requests that arrive together share one call of the model and one INSERT (a batch may be one).
PREDICTOR = Predictor(MODEL, Prediction, DB_EPISODES, PROFILES.codes, CHALLENGER)
BATCHER = MicroBatcher(PREDICTOR.predict_batch, SETTINGS.MAX_BATCH_SIZE)
# /stats and the page read running totals kept by the database, and callers that come at once
# share one computation per worker, so a flood of them can't starve /predict.
MONITOR = reports.Monitor(DB, Prediction._meta.table_name, SETTINGS)


# Web routes: the table of them is service/routes.py.
app = Flask(__name__, template_folder="service/templates", static_folder="service/static")
app.config["MAX_CONTENT_LENGTH"] = SETTINGS.MAX_BODY_BYTES
app.config["DEBUG"] = False  # Flask would take FLASK_DEBUG from the environment; only `python app.py` may


@app.before_request
def start_clock():
    g.started = time.perf_counter()


@app.before_request
def check_token_and_schema():
    """Every rule the app serves has its row in routes.py (checked below, at start-up)."""
    if request.url_rule is None:  # no such route: a 404 follows
        return
    route = SERVED[request.url_rule.rule]
    if route.guard is not None:
        auth.require(route.guard, SETTINGS, request.path, request.headers.get("Authorization", ""))
    if route.needs_current_schema and not SCHEMA_STATE.is_current(DB):
        raise ApiError(503, SCHEMA_STATE.message)


@app.after_request
def count_request(response):
    route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded labels, whatever the URL
    metrics.request_answered(route, request.method, response.status_code, time.perf_counter() - g.started)
    return response


@app.teardown_request
def give_back_connection(exc):
    # teardown runs even when the view raised, so no connection leaks from the pool.
    database.give_back(DB)
    metrics.connections_open(database.connections_open(DB))


def json_body():
    data = request_limits.read_body(request, SETTINGS.MAX_BODY_BYTES)
    return schema.json_object(data, request.content_type, request.is_json)


@app.post("/predict")
def predict():
    observation = SCHEMA.observation(json_body())
    result = BATCHER.submit(observation)
    if isinstance(result, ApiError):
        raise result
    return jsonify(result)


@app.post("/update")
def update():
    body = json_body()
    observation_id = schema.checked_id(body)
    true_class = LABELS.true_class_from(body)
    with DB.atomic():
        prediction = Prediction.get_or_none(Prediction.observation_id == observation_id)
        if prediction is None:
            archived = archive.where(DB, observation_id)
            raise ApiError(
                404, archived or f"no prediction with id {observation_id}; call /predict for it first"
            )
        if prediction.true_class != true_class:
            prediction.true_class = true_class
            prediction.updated_at = utc_now()
            prediction.save()
    DB_EPISODES.record_success()
    return jsonify(listing.record(prediction, with_observation=SETTINGS.UPDATE_RETURNS_OBSERVATION))


@app.get("/list-db-contents")
def list_db_contents():
    page = schema.page_argument("page", request.args.get("page", "1"), schema.MAX_PAGE)
    per_page = schema.page_argument("per_page", request.args.get("per_page", "100"), schema.MAX_PER_PAGE)
    rows = listing.page_json(Prediction, page, per_page, app.json.dumps)
    return Response(stream_with_context(rows), mimetype="application/json")


@app.get("/model")
def model():
    return jsonify(MODEL_CARD)


@app.get("/stats")
def stats():
    hours = schema.hours_argument(request.args.get("hours"))
    return jsonify(MONITOR.answers(utc_now(), ("stats", hours))[0])


@app.get("/stats/series")
def stats_series():
    every, hours = schema.series_arguments(request.args)
    return jsonify(MONITOR.answers(utc_now(), ("series", every, hours))[0])


@app.get("/drift")
def drift_report():
    hours = schema.hours_argument(request.args.get("hours"))
    return jsonify(MONITOR.answers(utc_now(), ("drift", hours))[0])


@app.get("/compare")
def compare():
    hours = schema.hours_argument(request.args.get("hours"))
    return jsonify(MONITOR.answers(utc_now(), ("comparison", hours))[0])


@app.get("/openapi.json")
def openapi_document():
    return jsonify(OPENAPI)


@app.get("/")
def index():
    """A browser (asking for HTML first) gets the owner's page; any other client a JSON index."""
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html":
        index = {route.key: route.summary for route in routes.LISTED}
        return jsonify({"model_version": MODEL_VERSION, "routes": index, "openapi": "/openapi.json"})
    answers = MONITOR.answers(utc_now(), *owner_page.QUESTIONS.values())
    page = owner_page.context(
        card=MODEL_CARD,
        refusal=readiness(),
        filling=database_filling(),
        base_url=request.host_url,
        **dict(zip(owner_page.QUESTIONS, answers, strict=True)),
    )
    return render_template("index.html", **page)


@app.get("/health")
def health():
    return jsonify({"status": "ok"})


def readiness():
    """None when ready, else why not; /metrics' service_ready follows it."""
    refusal = SCHEMA_STATE.message if not SCHEMA_STATE.is_current(DB) else None
    refusal = refusal or database.readiness(DB, Prediction._meta.table_name, DB_EPISODES)
    metrics.READY.set(refusal is None)
    return refusal


def database_filling():
    return storage.usage(DB, SETTINGS.DATABASE_PLAN_GB, SETTINGS.DATABASE_WARN_SHARE, utc_now())


@app.get("/ready")
def ready():
    refusal = readiness()
    if refusal is not None:
        return error_response(503, f"not ready: {refusal}")
    warnings = {"warnings": WARNINGS} if WARNINGS else {}
    return jsonify({"status": "ready", "model_version": MODEL_VERSION} | warnings)


@app.get("/metrics")
def prometheus_metrics():
    """Prometheus' text format, every worker's counters added up (service/metrics.py)."""
    try:
        readiness()  # sets service_ready
        metrics.storage(database_filling())
        with contextlib.suppress(ApiError):  # paced out (a 429): the gauges keep their values
            questions = [("drift", metrics.DRIFT_HOURS)] + ([("comparison", None)] if CHALLENGER else [])
            drift_now, *compared = MONITOR.answers(utc_now(), *questions)
            metrics.drift(drift_now["by_model_version"].get(MODEL_VERSION))
            if compared and CHALLENGER.serves:
                metrics.comparison(compared[0], MODEL_VERSION, CHALLENGER.model.version)
    except database.EXCEPTIONS as exc:
        metrics.READY.set(0)
        metrics.DATABASE_ERRORS.labels(database.classify(exc).kind).inc()
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


# Errors: one JSON shape for ours, Flask's and the database's.
def error_response(status, message, headers=None):
    return jsonify({"error": message}), status, headers or {}


@app.errorhandler(ApiError)
def api_error(exc):
    return error_response(exc.status, exc.message, exc.headers)


@app.errorhandler(HTTPException)
def http_error(exc):
    """Flask's own refusals (no such route, wrong method, too large) in our shape (errors.py)."""
    found = errors.from_http_exception(exc, request, SETTINGS.MAX_BODY_BYTES)
    return error_response(found.status, found.message, found.headers)


def database_failure(exc):
    found = database.handle_failure(DB, DB_EPISODES, exc)
    metrics.DATABASE_ERRORS.labels(found.kind).inc()
    return error_response(500 if found.kind == "error" else 503, found.message)


for exception_class in database.EXCEPTIONS:
    app.register_error_handler(exception_class, database_failure)


@app.errorhandler(Exception)
def unexpected_error(exc):
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(500, "internal error; the details are in the server log")


# Commands beside the web process: the release's schema upgrade, and archiving (service/commands.py).
commands.register(app, Prediction, SETTINGS, after_upgrade=PROFILES.store)

# Every rule served has its row in the route table, or the service does not start (routes.py).
SERVED = routes.served(app.url_map)


if __name__ == "__main__":
    # Flask's development server, for local work only; deploys use gunicorn (gunicorn.conf.py).
    app.run(port=SETTINGS.PORT, debug=SETTINGS.FLASK_DEBUG)
