"""The one table of the service's routes.

Contract:
- `ROUTES`: every route app.py serves, in the order the docs list them, each a `Route`: method
  and path, a one-line summary, what its 200 holds, the error statuses it may answer
  (errors.STATUSES), the token that guards it (auth.GUARDS), its request body and its query
  parameters. The JSON index at GET /, the paths of /openapi.json and the README's list of routes
  are made from it or checked against it, and the tests check that app.py serves exactly these.
- `BY_PATH`: the route of each path (app.py's before_request looks its guard up there).
"""

from dataclasses import dataclass

from service.monitoring.reports import SERIES_DEFAULT_HOURS, series_max_hours
from service.schema import MAX_HOURS, MAX_PAGE, MAX_PER_PAGE


@dataclass(frozen=True)
class Parameter:
    name: str
    description: str
    schema: dict
    exploded: bool = False  # an object whose properties are the query's arguments (style form)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    answer: str = ""  # what a 200 holds
    errors: tuple = ()
    guard: str | None = None  # the setting whose token is required (see auth.py)
    body: str | None = None  # the request body's schema, by its name in /openapi.json
    answer_schema: str | None = None  # the 200's schema by name; None: a JSON object
    parameters: tuple = ()
    stores: bool = False  # reads or writes the predictions: 503 until the schema is current
    media_type: str = "application/json"  # what a 200 is

    @property
    def key(self):
        return f"{self.method} {self.path}"


WINDOW = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_HOURS}  # schema.hours_argument
HOURS = Parameter("hours", "the window, in hours back from now (the whole history without it)", WINDOW)
# every and hours as one object, because how far back a series may reach depends on its step.
SERIES = Parameter(
    "series",
    "every: one point per hour or per day; hours: how far back (default "
    f"{SERIES_DEFAULT_HOURS['hour']} by the hour, {SERIES_DEFAULT_HOURS['day']} by the day; "
    f"at most {series_max_hours('hour')} by the hour, {series_max_hours('day')} by the day)",
    {
        "type": "object",
        "properties": {
            "every": {"enum": ["hour", "day"], "default": "day"},
            "hours": {**WINDOW, "maximum": series_max_hours("day")},
        },
        "additionalProperties": False,
        "if": {"required": ["every"], "properties": {"every": {"const": "hour"}}},
        "then": {"properties": {"hours": {"maximum": series_max_hours("hour")}}},
    },
    exploded=True,
)
PAGE = Parameter("page", "the page, from 1", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE})
PER_PAGE = Parameter(
    "per_page",
    f"rows per page, at most {MAX_PER_PAGE}",
    {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE},
)
ROUTES = (
    Route(
        "GET",
        "/",
        "this index; in a browser, the owner's page: readiness, the model, its quality over time",
        answer="the index",
        errors=(401,),
        guard="MONITORING_TOKEN",
    ),
    Route(
        "POST",
        "/predict",
        "score an observation and record it",
        answer="the probability of the positive class; committed",
        errors=(400, 401, 409, 413, 415, 422, 503),
        guard="WRITE_TOKEN",
        body="PredictRequest",
        answer_schema="PredictAnswer",
        stores=True,
    ),
    Route(
        "POST",
        "/update",
        "record the true class of an earlier prediction",
        answer="the stored prediction",
        errors=(400, 401, 404, 413, 415, 503),
        guard="WRITE_TOKEN",
        body="UpdateRequest",
        answer_schema="StoredPrediction",
        stores=True,
    ),
    Route(
        "GET",
        "/stats",
        "served, labelled and the quality of the labelled (?hours= for a window)",
        answer="the figures, overall and per model version",
        errors=(400, 401, 429, 503),
        guard="MONITORING_TOKEN",
        parameters=(HOURS,),
        stores=True,
    ),
    Route(
        "GET",
        "/stats/series",
        "the same per hour or day (?every=hour|day&hours=)",
        answer="one point per period that had predictions",
        errors=(400, 401, 429, 503),
        guard="MONITORING_TOKEN",
        parameters=(SERIES,),
        stores=True,
    ),
    Route(
        "GET",
        "/drift",
        "each feature of the people scored against training, before labels (?hours= for a window)",
        answer="per model version, per feature: PSI, missing and unseen shares, the bins that moved",
        errors=(400, 401, 429, 503),
        guard="MONITORING_TOKEN",
        answer_schema="DriftReport",
        parameters=(HOURS,),
        stores=True,
    ),
    Route("GET", "/model", "the model card: features, classes, library versions", answer="the card"),
    Route("GET", "/health", "the process answers", answer="ok"),
    Route("GET", "/ready", "the database answers and takes writes", answer="ready", errors=(503,)),
    Route(
        "GET",
        "/openapi.json",
        "an OpenAPI 3.1 description of every route and of the request schema",
        answer="OpenAPI 3.1",
    ),
    Route(
        "GET",
        "/metrics",
        "counters in Prometheus' text format, added up over the workers",
        answer="Prometheus' text format",
        errors=(401,),
        guard="MONITORING_TOKEN",
        media_type="text/plain",
    ),
    Route(
        "GET",
        "/list-db-contents",
        "stored predictions, a page at a time (only with LIST_DB_TOKEN set)",
        answer="a page of stored predictions",
        errors=(400, 401, 404),
        guard="LIST_DB_TOKEN",
        parameters=(PAGE, PER_PAGE),
        stores=True,
    ),
)
BY_PATH = {route.path: route for route in ROUTES}  # one route per path here
