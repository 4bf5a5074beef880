"""Tokens: the one check every protected route passes (routes.py says which token guards which).

Contract:
- `WRITE`, `MONITORING`, `LIST_DB`: the guards, each a `Guard` naming its token's setting, what an
  unset token means ("open": anyone may call the route; "disabled": the route answers 404) and
  whether a browser may send it as an HTTP Basic password. A route holds its guard (or None).
- `require(guard, settings, path, authorization)` returns when the request may go on, else raises
  ApiError: 401 naming the header to send (with WWW-Authenticate where a browser may ask for the
  password), or 404 for a disabled route. Tokens are compared in constant time.
- `enforced(settings)`: the guards whose token is set, so required (/openapi.json says so).
"""

import base64
import binascii
import hmac
from dataclasses import dataclass

from service.errors import ApiError


@dataclass(frozen=True)
class Guard:
    setting: str  # the token's setting (service/settings.py), as the operator sets it
    when_unset: str  # "open" or "disabled"
    browser: bool  # a browser may send the token as the password of HTTP Basic

    def token(self, settings):
        return getattr(settings, self.setting)


WRITE = Guard("WRITE_TOKEN", "open", browser=False)
MONITORING = Guard("MONITORING_TOKEN", "open", browser=True)
LIST_DB = Guard("LIST_DB_TOKEN", "disabled", browser=False)
GUARDS = (WRITE, MONITORING, LIST_DB)


def enforced(settings):
    return tuple(guard for guard in GUARDS if guard.token(settings))


def require(guard, settings, path, authorization):
    token = guard.token(settings)
    if not token:
        if guard.when_unset == "disabled":
            raise ApiError(404, f"{path} is disabled; set {guard.setting} on the server to enable it")
        return
    if guard.browser and authorization.startswith("Basic "):
        authorization = "Bearer " + basic_password(authorization)
    if not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        if not guard.browser:
            raise ApiError(401, f"send the header 'Authorization: Bearer <{guard.setting}>'")
        raise ApiError(
            401,
            f"send the header 'Authorization: Bearer <{guard.setting}>' "
            "(a browser asks for it: any user name, the token as the password)",
            {"WWW-Authenticate": 'Basic realm="monitoring", charset="UTF-8"'},
        )


def basic_password(authorization):
    """The password of an HTTP Basic header (any user name), or "" when it is malformed."""
    try:
        return base64.b64decode(authorization[6:], validate=True).decode().partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return ""
