"""The one table of the service's routes.

Contract:
- `ROUTES`: every route app.py serves, in the order the docs list them, each a `Route`: method
  and path, a one-line summary, what its 200 holds, the error statuses it may answer
  (errors.STATUSES), the guard whose token it requires (auth.py; None: open to all), its request
  body and its query parameters. The JSON index at GET /, the paths of /openapi.json and the
  README's list of routes are made from the listed ones; Flask's static files are served too,
  unlisted and open.
- `served(url_map)`: the route of each of the app's URL rules, {rule: Route}. A rule with no row
  here, or a row the app doesn't serve, is a RuntimeError naming it, so app.py fails at start-up
  rather than serve a route unguarded; app.py's before_request follows each rule to its route.
"""

from dataclasses import dataclass

from service.auth import LIST_DB, MONITORING, WRITE
from service.schema import MAX_HOURS, MAX_PAGE, MAX_PER_PAGE, SERIES_DEFAULT_HOURS, series_max_hours


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
    guard: object = None  # the auth.Guard whose token is required; None: open to all
    body: str | None = None  # the request body's schema, by its name in /openapi.json
    answer_schema: str | None = None  # the 200's schema by name; None: a JSON object
    parameters: tuple = ()
    needs_current_schema: bool = False  # reads or writes the predictions: 503 until it is current
    media_type: str = "application/json"  # what a 200 is
    listed: bool = True  # in the index, /openapi.json and the README

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
        guard=MONITORING,
    ),
    Route(
        "POST",
        "/predict",
        "score an observation and record it",
        answer="the probability of the positive class; committed",
        errors=(400, 401, 409, 413, 415, 422, 503),
        guard=WRITE,
        body="PredictRequest",
        answer_schema="PredictAnswer",
        needs_current_schema=True,
    ),
    Route(
        "POST",
        "/update",
        "record the true class of an earlier prediction",
        answer="the stored prediction",
        errors=(400, 401, 404, 413, 415, 503),
        guard=WRITE,
        body="UpdateRequest",
        answer_schema="StoredPrediction",
        needs_current_schema=True,
    ),
    Route(
        "GET",
        "/stats",
        "served, labelled and the quality of the labelled (?hours= for a window)",
        answer="the figures, overall and per model version",
        errors=(400, 401, 429, 503),
        guard=MONITORING,
        parameters=(HOURS,),
        needs_current_schema=True,
    ),
    Route(
        "GET",
        "/stats/series",
        "the same per hour or day (?every=hour|day&hours=)",
        answer="one point per period that had predictions",
        errors=(400, 401, 429, 503),
        guard=MONITORING,
        parameters=(SERIES,),
        needs_current_schema=True,
    ),
    Route(
        "GET",
        "/drift",
        "each feature of the people scored against training, before labels (?hours= for a window)",
        answer="per model version, per feature: PSI, missing and unseen shares, the bins that moved",
        errors=(400, 401, 429, 503),
        guard=MONITORING,
        answer_schema="DriftReport",
        parameters=(HOURS,),
        needs_current_schema=True,
    ),
    Route(
        "GET",
        "/compare",
        "the running model against its challenger on the same labelled predictions (?hours= for a window)",
        answer="per running model and challenger: each one's ROC AUC, log loss and Brier score, "
        "the paired differences with 95% intervals, and a verdict",
        errors=(400, 401, 429, 503),
        guard=MONITORING,
        parameters=(HOURS,),
        needs_current_schema=True,
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
        guard=MONITORING,
        media_type="text/plain",
    ),
    Route(
        "GET",
        "/list-db-contents",
        "stored predictions, a page at a time (only with LIST_DB_TOKEN set)",
        answer="a page of stored predictions",
        errors=(400, 401, 404),
        guard=LIST_DB,
        parameters=(PAGE, PER_PAGE),
        needs_current_schema=True,
    ),
    Route("GET", "/static/<path:filename>", "the page's script, styles and chart library", listed=False),
)
LISTED = tuple(route for route in ROUTES if route.listed)
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # Flask answers them for every GET rule by itself


def served(url_map):
    """{rule: Route} for every rule the app serves; a rule and the table disagreeing stops start-up."""
    table = {(route.method, route.path): route for route in ROUTES}
    found = {}
    for rule in url_map.iter_rules():
        for method in sorted(rule.methods - IGNORED_METHODS):
            route = table.pop((method, rule.rule), None)
            if route is None:
                raise RuntimeError(
                    f"{method} {rule.rule} is served but has no row in service/routes.py's ROUTES: "
                    "add one, with the guard whose token it requires (or guard=None to leave it open)"
                )
            if rule.rule in found:
                raise RuntimeError(f"{rule.rule} is served for more than one method: one route per path")
            found[rule.rule] = route
    if table:
        missing = ", ".join(f"{method} {path}" for method, path in table)
        raise RuntimeError(f"service/routes.py lists {missing}, which app.py does not serve")
    return found
