"""The one shape of every error, and what each status means.

Contract:
- `ApiError(status, message, headers=None)`: a request the service refuses, with a message a
  person can act on (what is wrong, what was expected, what arrived). app.py turns it, and every
  error Flask, gunicorn or the database raises, into `{"error": "<message>"}` with that status.
- `STATUSES`: {status: when the service answers it}, the one list of them; /openapi.json and
  the docs are made from it or checked against it.
- `ON_EVERY_ROUTE`: the statuses gunicorn itself answers, on any route, before a request reaches
  the service (gunicorn.conf.py gives them the same JSON shape); /openapi.json lists them on
  every operation.
- `from_http_exception(exc, request, max_body_bytes)`: the ApiError for a refusal Flask made
  itself (no such route, a method the route doesn't take, a body over the limit).
"""

from service import request_limits

STATUSES = {
    400: "malformed: the message names the field or argument, what it accepts and what arrived",
    401: "a token is required and was missing or wrong (WRITE_TOKEN, LIST_DB_TOKEN, MONITORING_TOKEN)",
    404: "no such id, no such route, or the route is disabled",
    405: "the route does not take this method; the Allow header lists those it takes",
    409: "the id was already used for a different observation",
    413: "the body is larger than MAX_BODY_BYTES",
    414: "the path and query are longer than gunicorn's limit_request_line (4094 bytes by default)",
    415: "the body is not JSON",
    422: "the model could not score the observation; the message names the features to blame",
    429: "too many monitoring requests at once; retry after Retry-After seconds",
    431: "a header, or the headers together, are larger than gunicorn's limits",
    500: "a bug: the details are in the server log",
    503: "the database is unavailable (retry later) or refuses writes (the message says what to do)",
}
ON_EVERY_ROUTE = (414, 431)


class ApiError(Exception):
    """A request the service refuses: the HTTP status and a message a person can act on."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def from_http_exception(exc, request, max_body_bytes):
    if exc.code == 404:
        return ApiError(404, f"no route {request.path}; see the routes in the README")
    if exc.code == 405:
        allowed = ", ".join(exc.valid_methods or [])
        return ApiError(
            405, f"{request.method} is not allowed on {request.path}; use {allowed}", {"Allow": allowed}
        )
    if exc.code == 413:
        # Read what the client is still sending (up to a bound) so that it can read this answer.
        drained = request_limits.discard_rest(request.environ)
        message = f"the body is larger than the limit of {max_body_bytes} bytes (MAX_BODY_BYTES)"
        return ApiError(413, message, {} if drained else {"Connection": "close"})
    return ApiError(exc.code, exc.description)
