"""Fixtures: the service on SQLite and on a real PostgreSQL, and live gunicorn servers.

The API tests take the `service` fixture, which is parametrized by backend, so each of them
runs once on SQLite and once on PostgreSQL. `service` is app.py imported with DATABASE_URL
pointing at that backend, exactly as production configures it.
"""

import fcntl
import importlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tools.servers import (
    EXAMPLE_DIR,
    REPO,
    LiveServer,
    PgBouncer,
    PostgresServer,
    pgbouncer_binary,
    postgres_bindir,
)

# The API tests run on each: SQLite, PostgreSQL, and PostgreSQL through PgBouncer in transaction
# mode, as managed plans' pooled URLs reach it.
BACKENDS = ["sqlite", "postgresql", "pgbouncer"]

# The files that take longest, longest first. pytest-xdist hands each worker whole files in the
# order collected (`--no-loadscope-reorder` in pyproject.toml: by default it sorts them by their
# number of tests, which left the benchmark's two long tests to start last and run alone while
# the other workers sat idle). `pytest --durations=30` shows which files take longest.
LONGEST_FIRST = [
    "test_bench.py",
    "test_deploy.py",
    "test_live.py",
    "test_connections.py",
    "test_fuzz.py",
    "test_notebooks.py",
    "test_loop.py",
    "test_upgrades.py",
    "test_container.py",
    "test_properties.py",
    "test_page.py",
    "test_hostile.py",
    "test_platforms.py",
    "test_your_model.py",
    "test_refusals.py",
    "test_aggregates.py",
]


# A test that takes one of these starts a gunicorn or a browser of its own: not for `make check`.
SERVER_FIXTURES = {"live_server", "browser"}


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if SERVER_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)

    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


def missing(message, tests):
    """A real component this machine lacks: its tests are skipped, or fail under CI=true, where
    every component the suite needs must run (`make test` installs them when it runs as root)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (under CI=true the {tests} must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def other_model_dirs(tmp_path_factory):
    """The other models of tests/models.py, trained once per test process: {name: directory}.
    Tests read them; one that changes a file copies it first."""
    from models import COPIED_OVER, OTHER_MODELS

    root = tmp_path_factory.mktemp("models")
    return {name: make(root / name) for name, make in (OTHER_MODELS | COPIED_OVER).items()}


@pytest.fixture(scope="session")
def prod_venv():
    """The virtualenv `make run` builds: requirements_prod.txt and nothing else. Built by one test
    process at a time (make test builds it before the tests start)."""
    with (REPO / ".venv-prod.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "--no-print-directory", ".venv-prod/.installed"], cwd=REPO, check=True)
    return REPO / ".venv-prod" / "bin"


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster for the whole run (missing: skip, or fail under CI)."""
    bindir = postgres_bindir()
    if bindir is None:
        missing("PostgreSQL server binaries not found; run tools/ensure-postgres", "PostgreSQL tests")
    server = PostgresServer(bindir)
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def pgbouncer(postgres):
    """PgBouncer in transaction mode in front of the throwaway cluster (missing: skip, or fail
    under CI)."""
    if pgbouncer_binary() is None:
        missing("pgbouncer not found; run tools/ensure-postgres", "PgBouncer tests")
    bouncer = PgBouncer(postgres)
    yield bouncer
    bouncer.destroy()


def fresh_database_url(backend, name, request, tmp_path_factory):
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp(name)}/predictions.db"
    url = request.getfixturevalue("postgres").create_database(name)
    return request.getfixturevalue("pgbouncer").url(name) if backend == "pgbouncer" else url


def import_app(database_url, **env):
    """app.py imported afresh, configured by the environment like a deploy; the example model
    unless ARTIFACTS_DIR says otherwise. Tests empty the table between them, so no /stats answer
    is reused (STATS_MAX_AGE_SECONDS 0) unless they say otherwise."""
    saved = os.environ.copy()
    defaults = {"ARTIFACTS_DIR": str(EXAMPLE_DIR), "STATS_MAX_AGE_SECONDS": "0"}
    os.environ.update(DATABASE_URL=database_url, **{**defaults, **env})
    try:
        sys.modules.pop("app", None)
        return importlib.import_module("app")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sys.modules.pop("app", None)


@pytest.fixture(scope="session", params=BACKENDS)
def service(request, tmp_path_factory):
    """app.py bound to a fresh database on one backend. On PgBouncer's, the model is called
    through scikit-learn only (FAST_PATH=0), so the in-process tests pass both ways."""
    fast = {"FAST_PATH": "0"} if request.param == "pgbouncer" else {}
    module = import_app(fresh_database_url(request.param, "api", request, tmp_path_factory), **fast)
    module.backend = request.param
    yield module
    module.DB.close_all()


def client_on_an_empty_table(module):
    """Flask's test client for an imported app.py, its predictions table emptied."""
    module.Prediction.delete().execute()
    module.DB.close()
    return module.app.test_client()


@pytest.fixture
def client(service):
    """Flask's test client on an empty predictions table."""
    return client_on_an_empty_table(service)


@pytest.fixture
def database_url(request, tmp_path_factory):
    """A fresh, empty database; the backend comes from a `backend` parametrization."""
    name = request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:50]
    return fresh_database_url(request.param, name, request, tmp_path_factory)


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the tests that look at the page (tests/chromium.py)."""
    pytest.importorskip("selenium.webdriver")
    from chromium import start_browser

    browser = start_browser()
    yield browser
    browser.quit()


@pytest.fixture
def live_server():
    """Start real gunicorn services; they are stopped when the test ends."""
    started = []

    def start(database_url, **kwargs):
        server = LiveServer(database_url, **kwargs)
        started.append(server)
        return server

    yield start
    with ThreadPoolExecutor(max(1, len(started))) as pool:  # each stop mostly waits: all at once
        list(pool.map(LiveServer.stop, started))
