"""GET /metrics: the service's counters in Prometheus' text format, through prometheus_client.

Contract:
- The metrics: `http_requests_total` (route, method, status), `http_request_duration_seconds`
  (route; a histogram), `predict_batch_size` (a histogram of rows per call of the model),
  `model_calls_total` (path: "fast" or "scikit-learn", model.py),
  `predictions_total` (model_version; new rows stored), `database_errors_total` (kind:
  unavailable, refused or error, as database.classify() tells them), `service_ready` (1 or 0, as
  the last /ready or scrape found it), `database_connections_allowed` (the instance's bound),
  `database_connections_open` (added up over the workers), the database's filling (`storage()`),
  and for the running model version's last 24 hours `model_feature_psi` and
  `model_feature_drifted` (feature), `model_expected_roc_auc` and `model_test_roc_auc` (`drift()`,
  from GET /drift's figures); with a challenger deployed, its comparison with the running
  model over their whole history (`comparison()`, from GET /compare's figures):
  `model_comparison_pairs`, `model_challenger_failed`, `model_challenger_verdict` and, per
  metric, `model_comparison_difference` with its 95% interval (`_low`, `_high`). A route is
  the URL rule that matched ("unmatched" for a 404), so a client can't make a label per URL.
  monitoring/alerts.yml says which of them page someone.
- Across gunicorn's worker processes: when PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py
  sets it, to a fresh directory, before app.py is imported), every process writes its values
  to files there and `exposition()` adds them up, so a scrape answered by any worker counts
  every worker's requests. Without it (Flask's test client, `python app.py`) the values are
  the process's own.
Nothing here knows Flask or the database.
"""

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from the request reaching Flask to its answer",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZES = Histogram(
    "predict_batch_size", "Rows scored per call of the model", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
MODEL_CALLS = Counter(
    "model_calls_total", "Batches scored, by how: the fast path or scikit-learn's predict_proba", ["path"]
)
PREDICTIONS = Counter("predictions_total", "New predictions stored", ["model_version"])
DATABASE_ERRORS = Counter("database_errors_total", "Requests failed by the database", ["kind"])
READY = Gauge(
    "service_ready", "1 when the database answers and takes writes", multiprocess_mode="livemostrecent"
)
CONNECTIONS_ALLOWED = Gauge(
    "database_connections_allowed",
    "The most connections this instance opens to the database (DB_MAX_CONNECTIONS, split over workers)",
    multiprocess_mode="max",
)
CONNECTIONS_OPEN = Gauge(
    "database_connections_open",
    "Connections to the database open now, in use or idle",
    multiprocess_mode="livesum",
)
STORAGE = {
    "database_bytes": Gauge(
        "database_size_bytes", "The database's size on disk", multiprocess_mode="mostrecent"
    ),
    "predictions": Gauge(
        "database_predictions", "Rows of the predictions table", multiprocess_mode="mostrecent"
    ),
    "bytes_per_prediction": Gauge(
        "database_bytes_per_prediction", "The database's size per prediction", multiprocess_mode="mostrecent"
    ),
    "share_used": Gauge(
        "database_plan_used_ratio", "The share of DATABASE_PLAN_GB used", multiprocess_mode="mostrecent"
    ),
    "days_left": Gauge(
        "database_plan_days_left",
        "Days until the plan is full at the last week's rate",
        multiprocess_mode="mostrecent",
    ),
}
# The running model version's last DRIFT_HOURS, as GET /drift?hours=24 answers (a scrape refreshes them).
DRIFT_HOURS = 24.0
FEATURE_PSI = Gauge(
    "model_feature_psi",
    "Population stability index of each feature of the last 24 hours against training",
    ["feature"],
    multiprocess_mode="mostrecent",
)
FEATURE_DRIFTED = Gauge(
    "model_feature_drifted",
    "1 when GET /drift?hours=24 counts the feature as drifted (PSI past its threshold and chance)",
    ["feature"],
    multiprocess_mode="mostrecent",
)
EXPECTED_ROC_AUC = Gauge(
    "model_expected_roc_auc",
    "ROC AUC to expect over the last 24 hours if the probabilities are calibrated",
    multiprocess_mode="mostrecent",
)
TEST_ROC_AUC = Gauge(
    "model_test_roc_auc",
    "ROC AUC on the held-out test set at training (the training profile's)",
    multiprocess_mode="mostrecent",
)
# The running model against the challenger deployed beside it, as GET /compare answers (a
# scrape refreshes them; labelled by the challenger's version, so a new one starts new series).
COMPARISON_PAIRS = Gauge(
    "model_comparison_pairs",
    "Labelled predictions both the running model and the challenger scored",
    ["challenger_version"],
    multiprocess_mode="mostrecent",
)
CHALLENGER_FAILED = Gauge(
    "model_challenger_failed",
    "Predictions the challenger failed to score (stored and answered as without it)",
    ["challenger_version"],
    multiprocess_mode="mostrecent",
)
COMPARISON = {
    part: Gauge(
        f"model_comparison_{part}",
        f"The challenger's figure minus the running model's on the same labelled predictions: {words}",
        ["metric", "challenger_version"],
        multiprocess_mode="mostrecent",
    )
    for part, words in (
        ("difference", "the difference"),
        ("difference_low", "the low end of its 95% interval"),
        ("difference_high", "the high end of its 95% interval"),
    )
}
CHALLENGER_VERDICT = Gauge(
    "model_challenger_verdict",
    "On ROC AUC: 1 the challenger is better, -1 worse (the 95% interval leaves out 0), 0 not yet",
    ["challenger_version"],
    multiprocess_mode="mostrecent",
)
VERDICTS = {"the challenger is better": 1, "the challenger is worse": -1}
_open_now = [None]  # this process's last value, so that a request writes the gauge only on a change
# The text format every Prometheus server reads (the client's newer 1.0.0 label is for Prometheus 3).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def request_answered(route, method, status, seconds):
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def connections_open(count):
    if count != _open_now[0]:
        _open_now[0] = count
        CONNECTIONS_OPEN.set(count)


def storage(usage):
    """The database's filling, as storage.usage() found it (a figure it lacks is left unset)."""
    for name, gauge in STORAGE.items():
        if usage.get(name) is not None:
            gauge.set(usage[name])


def drift(version_report):
    """The gauges from /drift's figures for the running version (None: no prediction in the window)."""
    if not version_report:
        return
    if version_report.get("expected_roc_auc") is not None:
        EXPECTED_ROC_AUC.set(version_report["expected_roc_auc"])
    test_roc_auc = version_report.get("probabilities", {}).get("test_roc_auc")
    if test_roc_auc is not None:
        TEST_ROC_AUC.set(test_roc_auc)
    for feature in version_report.get("features", []):
        FEATURE_PSI.labels(feature["name"]).set(feature["psi"])
        FEATURE_DRIFTED.labels(feature["name"]).set(feature["drifted"])


def comparison(report, running, challenger):
    """The comparison gauges from /compare's answer, for the running version and its challenger
    (nothing to set until both have scored a prediction)."""
    for found in report["comparisons"]:
        if (found["model_version"], found["challenger_version"]) == (running, challenger):
            set_comparison(found, challenger)


def set_comparison(found, challenger):
    COMPARISON_PAIRS.labels(challenger).set(found["pairs"])
    CHALLENGER_FAILED.labels(challenger).set(found["challenger_failed"])
    CHALLENGER_VERDICT.labels(challenger).set(VERDICTS.get(found["verdict"], 0))
    for metric, figures in found["metrics"].items():
        if figures["difference"] is not None:
            COMPARISON["difference"].labels(metric, challenger).set(figures["difference"])
        if figures["interval"] is not None:
            COMPARISON["difference_low"].labels(metric, challenger).set(figures["interval"][0])
            COMPARISON["difference_high"].labels(metric, challenger).set(figures["interval"][1])


def exposition():
    """The text a scrape gets: every worker's values added up when they share a directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
