"""Where the service runs: the platforms it knows, told apart by the variables each one sets.

Contract:
- `PLATFORMS`: for Heroku, Railway, Render, Fly.io and Google Cloud Run, the variable that
  gives each away and the one command or click that gives it a PostgreSQL database. Every one
  of them wipes the container's disk at each restart or deploy.
- `detect(environ)`: the Platform the service runs on, or None (a laptop, a VM, a host unknown
  here, where the disk is taken to be kept).
- `database_warnings(platform, database_url, allow_ephemeral)`: on a platform with no
  DATABASE_URL (the local SQLite file, on a disk the platform wipes), a SystemExit naming the
  platform, why, and how to add a database, unless ALLOW_EPHEMERAL_SQLITE: then the warning,
  logged once, that the log, /ready, /model and the owner's page repeat. Elsewhere, none.
"""

import logging
from dataclasses import dataclass

from service import settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Platform:
    name: str
    variable: str  # set by the platform in every container it runs
    add_database: str  # the one command or click that gives the service a PostgreSQL database


PLATFORMS = (
    Platform("Heroku", "DYNO", "heroku addons:create heroku-postgresql:essential-0"),
    Platform(
        "Railway",
        "RAILWAY_PROJECT_ID",
        "in the project, + New > Database > PostgreSQL, then add the variable "
        "DATABASE_URL=${{Postgres.DATABASE_URL}} to this service",
    ),
    Platform(
        "Render",
        "RENDER",
        "deploy the repository's render.yaml as a Blueprint (it creates the database), or create a "
        "PostgreSQL and set DATABASE_URL to its Internal Database URL",
    ),
    Platform("Fly.io", "FLY_APP_NAME", "fly mpg create, then fly mpg attach <cluster id>"),
    Platform(
        "Google Cloud Run",
        "K_SERVICE",
        "create a PostgreSQL database (Cloud SQL, or any provider's) and "
        "gcloud run services update <service> --update-env-vars DATABASE_URL=<its URL>",
    ),
)


def detect(environ):
    return next((platform for platform in PLATFORMS if environ.get(platform.variable)), None)


def database_warnings(platform, database_url, allow_ephemeral):
    """What to warn of about where predictions are stored; a SystemExit saying what to do when, on a
    platform, they would go to SQLite on the wiped disk without ALLOW_EPHEMERAL_SQLITE."""
    if platform is None or database_url != settings.DEFAULTS["DATABASE_URL"][0]:
        return []
    if not allow_ephemeral:
        raise SystemExit(
            f"refusing to start on {platform.name} without DATABASE_URL: the predictions would go to "
            f"SQLite on the container's disk, which {platform.name} wipes at every restart and deploy, "
            f"and every one of them would be lost. Give the service a database: {platform.add_database}. "
            "(For a throwaway demo, set ALLOW_EPHEMERAL_SQLITE=1.)"
        )
    warning = (
        f"predictions are stored in SQLite on {platform.name}'s disk, which is wiped at every restart "
        "and deploy: every prediction will be lost at the next restart (ALLOW_EPHEMERAL_SQLITE is "
        "set). Give the service a database to keep them."
    )
    log.warning(warning)
    return [warning]
