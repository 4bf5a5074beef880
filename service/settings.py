"""Every setting the service reads from the environment, each with a default that works on a laptop.

Contract:
- `DEFAULTS`: {name: (default, parse)}, the one list of them. app.py and gunicorn.conf.py read
  theirs through `read()`; the README's configuration table is checked against this list (names
  and defaults), so neither can name a setting the other lacks.
- `read(environ=os.environ)` returns every setting, parsed, as attributes named like the
  variables (SETTINGS.DATABASE_URL). An unset or empty variable takes its default.
  DATABASE_DIRECT_URL is also found under the names Neon (DATABASE_URL_UNPOOLED) and Railway's
  PgBouncer (DATABASE_UNPOOLED_URL) give it.
A few variables are read by others, and only named here for the table: FORWARDED_ALLOW_IPS
(gunicorn), PROMETHEUS_MULTIPROC_DIR (prometheus_client), FLASK_DEBUG (`python app.py`).
"""

import os
from pathlib import Path
from types import SimpleNamespace

REPOSITORY = Path(__file__).resolve().parent.parent  # where app.py and the model's files are


def flag(text):
    return text != "0"


DEFAULTS = {
    "DATABASE_URL": ("sqlite:///predictions.db", str),
    "DATABASE_DIRECT_URL": (None, str),
    "ALLOW_EPHEMERAL_SQLITE": (False, lambda text: text == "1"),
    "PORT": (5000, int),
    "WEB_CONCURRENCY": (2, int),
    "GUNICORN_THREADS": (16, int),
    "GUNICORN_REUSE_PORT": (True, flag),
    "GUNICORN_TIMEOUT": (30, int),
    "FORWARDED_ALLOW_IPS": (None, str),
    "GUNICORN_ACCESS_LOG": (None, str),
    "MAX_BODY_BYTES": (1_000_000, int),
    "MAX_BATCH_SIZE": (64, int),
    "DB_TIMEOUT_SECONDS": (5, int),
    "UPGRADE_AT_START_ROWS": (100_000, int),
    "DB_MAX_CONNECTIONS": (6, int),
    "DATABASE_PLAN_GB": (None, float),
    "DATABASE_WARN_SHARE": (0.8, float),
    "STATS_MAX_AGE_SECONDS": (1.0, float),
    "STATS_CACHE_MB": (32.0, float),
    "MONITORING_PER_SECOND": (10.0, float),
    "LIST_DB_TOKEN": ("", str),
    "WRITE_TOKEN": ("", str),
    "MONITORING_TOKEN": ("", str),
    "PROMETHEUS_MULTIPROC_DIR": (None, str),
    "UPDATE_RETURNS_OBSERVATION": (True, flag),
    "MAX_STRING_CHARS": (1000, int),
    "REQUEST_READ_SECONDS": (10.0, float),
    "ARTIFACTS_DIR": (REPOSITORY, Path),
    "FAST_PATH": (True, flag),
    "LOG_LEVEL": ("INFO", str),
    "FLASK_DEBUG": (False, lambda text: text == "1"),
}


# The names some platforms give the direct (unpooled) URL beside a pooled DATABASE_URL.
ALIASES = {"DATABASE_DIRECT_URL": ("DATABASE_URL_UNPOOLED", "DATABASE_UNPOOLED_URL")}


def read(environ=os.environ):
    found = {}
    for name, (default, parse) in DEFAULTS.items():
        given = next((environ[alias] for alias in (name, *ALIASES.get(name, ())) if environ.get(alias)), None)
        found[name] = default if given is None else parse(given)
    return SimpleNamespace(**found)
