"""GET /metrics: the service's counters in Prometheus' text format, through prometheus_client.

Contract:
- The metrics: `http_requests_total` (route, method, status), `http_request_duration_seconds`
  (route; a histogram), `predict_batch_size` (a histogram of rows per predict_proba call),
  `predictions_total` (model_version; new rows stored), `database_errors_total` (kind:
  unavailable, refused or error, as database.fault() tells them), `service_ready` (1 or 0, as
  the last /ready or scrape found it). A route is the URL rule that matched ("unmatched" for a
  404), so a client can't make a label per URL.
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
    "predict_batch_size", "Rows scored per predict_proba call", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
PREDICTIONS = Counter("predictions_total", "New predictions stored", ["model_version"])
DATABASE_ERRORS = Counter("database_errors_total", "Requests failed by the database", ["kind"])
READY = Gauge(
    "service_ready", "1 when the database answers and takes writes", multiprocess_mode="livemostrecent"
)
# The text format every Prometheus server reads (the client's newer 1.0.0 label is for Prometheus 3).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def request_answered(route, method, status, seconds):
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def exposition():
    """The text a scrape gets: every worker's values added up when they share a directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
