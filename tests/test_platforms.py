"""Every platform students deploy to: the files each one reads, what the service does when it
starts there without a database, and the release phase that upgrades the schema before the web
processes start (which never spend long on it themselves). The image itself is run the way each
platform runs it in test_container.py."""

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import pytest
import requests
import yaml

from conftest import missing
from service.migrations import CURRENT_VERSION, RELEASE_COMMAND
from service.platforms import PLATFORMS
from tools.example import EXAMPLE_DIR, EXAMPLE_OBSERVATION, REPO

WEB_COMMAND = "gunicorn --config gunicorn.conf.py app:app"
# A web process on a platform upgrades itself only past this many rows; the tests' tables are
# small, so they lower the bound (UPGRADE_AT_START_ROWS) rather than fill 100,000 rows.
AT_START_ROWS = 100
LONG = AT_START_ROWS + 1


def dockerfile_cmd():
    [line] = [line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    return " ".join(json.loads(line.removeprefix("CMD ")))


def test_every_platform_file_releases_first_starts_the_same_web_command_and_checks_ready():
    procfile = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines())
    heroku = yaml.safe_load((REPO / "heroku.yml").read_text())
    render = yaml.safe_load((REPO / "render.yaml").read_text())
    fly = tomllib.loads((REPO / "fly.toml").read_text())
    [web] = render["services"]

    assert dockerfile_cmd() == WEB_COMMAND
    assert procfile == {"release": RELEASE_COMMAND, "web": WEB_COMMAND}
    assert heroku["build"] == {"docker": {"web": "Dockerfile"}}
    assert heroku["release"] == {"image": "web", "command": [RELEASE_COMMAND]}
    assert heroku["run"] == {"web": WEB_COMMAND}
    assert (web["type"], web["runtime"], web["dockerfilePath"]) == ("web", "docker", "./Dockerfile")
    assert web["dockerCommand"] == WEB_COMMAND
    assert web["preDeployCommand"] == RELEASE_COMMAND
    assert web["plan"] != "free"  # Render runs a pre-deploy command on paid instances only
    assert web["healthCheckPath"] == "/ready"
    [database] = render["databases"]
    wired = {
        "key": "DATABASE_URL",
        "fromDatabase": {"name": database["name"], "property": "connectionString"},
    }
    assert wired in web["envVars"]
    assert fly["build"]["dockerfile"] == "Dockerfile"
    assert fly["deploy"]["release_command"] == RELEASE_COMMAND
    assert fly["http_service"]["internal_port"] == int(fly["env"]["PORT"]) == 8080
    assert [check["path"] for check in fly["http_service"]["checks"]] == ["/ready"]
    assert fly["kill_signal"] == "SIGTERM"  # Fly's default, SIGINT, is gunicorn's quick stop


NODE_MODULES = REPO / "tests" / "js" / "node_modules"
# Runs the file's program as Railway's CLI would, with the SDK's own context and project(), and
# prints what it defines and what the SDK's validateGraph finds wrong with it.
RAILWAY_CHECK = """
import { createRailwayContext, project, validateGraph } from "railway/iac";
import program from "./definition.ts";

const definition = await program(createRailwayContext({ environment: "production" }), project);
const resources = (definition.resources ?? []).flat();
const graph = {
  version: 1 as const, project: { name: definition.name }, environments: [], resources, edges: [],
};
console.log(JSON.stringify({ problems: validateGraph(graph), resources }));
"""


def railway_definition(tmp_path, source=REPO / ".railway" / "railway.ts"):
    """.railway/railway.ts type-checked (strict: an unknown key is an error) and run against
    Railway's published SDK from npm, pinned in tests/js/package-lock.json."""
    if not (NODE_MODULES / "railway").is_dir() or shutil.which("node") is None:
        missing("Railway's SDK not installed; run tools/ensure-node-packages", "Railway SDK check")
    shutil.copy(source, tmp_path / "definition.ts")
    (tmp_path / "check.mts").write_text(RAILWAY_CHECK)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)
    options = "--noEmit --strict --target es2022 --module nodenext --moduleResolution nodenext"
    options += " --allowImportingTsExtensions"
    tsc = [str(NODE_MODULES / ".bin" / "tsc"), *options.split(), "definition.ts", "check.mts"]
    checked = subprocess.run(tsc, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    run = subprocess.run(
        [str(NODE_MODULES / ".bin" / "tsx"), "check.mts"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_railway_applies_the_release_the_web_command_and_the_ready_check_with_a_database(tmp_path):
    found = railway_definition(tmp_path)

    assert found["problems"] == []
    [database] = [r for r in found["resources"] if r["type"] == "database"]
    [web] = [r for r in found["resources"] if r["type"] == "service"]
    assert database["engine"] == "postgres"
    assert web["build"] == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"}
    assert web["deploy"]["startCommand"] == dockerfile_cmd() == WEB_COMMAND
    assert web["deploy"]["preDeployCommand"] == [RELEASE_COMMAND]
    assert web["deploy"]["healthcheckPath"] == "/ready"
    assert web["deploy"]["drainingSeconds"] == 30  # time to finish requests in flight
    wired = {"type": "reference", "resource": database["address"], "output": "DATABASE_URL"}
    assert web["variables"]["DATABASE_URL"] == wired
    assert not (REPO / "railway.json").exists()  # deprecated Config as Code: not shipped beside it


def test_a_wrong_key_in_the_railway_file_fails_its_check(tmp_path):
    wrong = tmp_path / "wrong.ts"
    wrong.write_text(
        (REPO / ".railway" / "railway.ts").read_text().replace("healthcheckPath", "healthCheckPath")
    )
    (tmp_path / "check").mkdir()
    with pytest.raises(AssertionError, match="'healthCheckPath' does not exist in type 'DeployConfig'"):
        railway_definition(tmp_path / "check", wrong)


def start_app(tmp_path, env, script="import app"):
    """app.py imported in a new process, in an empty directory, with only these variables."""
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "ARTIFACTS_DIR": str(EXAMPLE_DIR)}
    command = [sys.executable, "-c", script]
    return subprocess.run(command, cwd=tmp_path, env=base | env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("platform", PLATFORMS, ids=[platform.name for platform in PLATFORMS])
def test_on_a_platform_without_a_database_the_service_refuses_to_start(platform, tmp_path):
    result = start_app(tmp_path, {platform.variable: "set by the platform"})

    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert f"refusing to start on {platform.name} without DATABASE_URL" in message
    assert "every one of them would be lost" in message
    assert platform.add_database in message
    assert not (tmp_path / "predictions.db").exists()


CHECK_EVERY_WARNING = """
import json, app
client = app.app.test_client()
page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
print(json.dumps([client.get("/ready").get_json(), client.get("/model").get_json().get("warnings"), page]))
"""


def test_a_throwaway_demo_on_a_platform_says_everywhere_that_predictions_will_be_lost(tmp_path):
    result = start_app(tmp_path, {"K_SERVICE": "demo", "ALLOW_EPHEMERAL_SQLITE": "1"}, CHECK_EVERY_WARNING)
    ready, model_warnings, page = json.loads(result.stdout)

    [warning] = ready["warnings"]
    assert "every prediction will be lost at the next restart" in warning
    assert "Google Cloud Run" in warning
    assert model_warnings == [warning]
    assert "every prediction will be lost at the next restart" in page
    assert "every prediction will be lost at the next restart" in result.stderr  # the log


def test_on_a_laptop_sqlite_in_the_working_directory_needs_no_setting(tmp_path):
    result = start_app(tmp_path, {}, CHECK_EVERY_WARNING)
    ready, model_warnings, page = json.loads(result.stdout)

    assert ready["status"] == "ready"
    assert "warnings" not in ready
    assert model_warnings is None
    assert "will be lost" not in page
    assert (tmp_path / "predictions.db").exists()


def tutorial_table(postgres, name, rows):
    """The tutorial's own table, holding `rows` predictions, half of them labelled."""
    url = postgres.create_database(name)
    postgres.sql(
        "CREATE TABLE prediction (id SERIAL PRIMARY KEY, observation_id INTEGER UNIQUE NOT NULL, "
        "observation TEXT NOT NULL, proba REAL NOT NULL, true_class INTEGER)",
        database=name,
    )
    postgres.sql(
        "INSERT INTO prediction (observation_id, observation, proba, true_class) "
        "SELECT i, '{}', random(), CASE WHEN i % 2 = 0 THEN i % 4 / 2 END "
        f"FROM generate_series(1, {rows}) AS i",
        database=name,
    )
    return url


def release(database_url, **env):
    """The release command, as the platforms run it: its own process, before the web starts."""
    command = [sys.executable, "-m", *shlex.split(RELEASE_COMMAND)]
    variables = {"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "ARTIFACTS_DIR": str(EXAMPLE_DIR)}
    variables |= env
    return subprocess.run(command, cwd=REPO, env=variables, capture_output=True, text=True, timeout=300)


def predict(server, observation_id):
    body = {"id": observation_id, "observation": EXAMPLE_OBSERVATION}
    return requests.post(f"{server.base}/predict", json=body, timeout=30)


def ready_within(server, seconds):
    deadline = time.monotonic() + seconds
    while requests.get(f"{server.base}/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.2)


@pytest.mark.slow
def test_a_web_process_needing_a_long_upgrade_binds_at_once_answers_503_and_serves_after_the_release(
    postgres, live_server
):
    url = tutorial_table(postgres, "long_upgrade", LONG)
    server = live_server(url, env={"DYNO": "web.1", "UPGRADE_AT_START_ROWS": str(AT_START_ROWS)})

    not_ready, refused = requests.get(f"{server.base}/ready", timeout=10), predict(server, 10**9)
    assert not_ready.status_code == refused.status_code == 503
    assert f"Run the release command, `{RELEASE_COMMAND}`" in refused.json()["error"]
    assert refused.json()["error"] in not_ready.json()["error"]
    assert requests.get(f"{server.base}/model", timeout=10).status_code == 200
    rows = postgres.sql("SELECT count(*) FROM prediction", database="long_upgrade")
    assert rows == [(LONG,)]

    done = release(url)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr  # on a laptop importing app.py already upgrades; here, DYNO is unset
    assert f"upgraded the schema in place from version 0 to {CURRENT_VERSION}" in said

    ready_within(server, 5)  # no restart: the web processes see the new schema by themselves
    assert predict(server, 10**9).status_code == 200


@pytest.mark.slow
def test_a_release_and_web_processes_started_together_do_the_upgrade_once(postgres, live_server):
    url = tutorial_table(postgres, "together", LONG)
    outcome = {}
    releasing = threading.Thread(target=lambda: outcome.update(done=release(url)))
    releasing.start()
    servers = [
        live_server(url, env={"RENDER": "true", "UPGRADE_AT_START_ROWS": str(AT_START_ROWS)})
        for _ in range(2)
    ]
    releasing.join()

    assert outcome["done"].returncode == 0, outcome["done"].stderr
    for server in servers:
        ready_within(server, 5)
    assert [predict(server, 10**9 + i).status_code for i, server in enumerate(servers)] == [200, 200]
    versions = postgres.sql("SELECT version FROM schema_version ORDER BY version", database="together")
    assert versions == [(version,) for version in range(1, CURRENT_VERSION + 1)]


@pytest.mark.slow
def test_make_release_upgrades_the_database_database_url_names(postgres, prod_venv):
    url = tutorial_table(postgres, "by_hand", 10)
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "ARTIFACTS_DIR": str(EXAMPLE_DIR)}
    result = subprocess.run(
        ["make", "--no-print-directory", "release"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    versions = postgres.sql("SELECT max(version) FROM schema_version", database="by_hand")
    assert versions == [(CURRENT_VERSION,)]


def test_a_cloud_sql_url_through_its_unix_socket_serves(postgres):
    """Cloud Run mounts a Cloud SQL instance as a Unix socket in /cloudsql/<instance>/, and the
    URL docs/deploying.md gives names it with ?host=. Here the instance's directory holds a link
    to the test server's own socket, under the name PostgreSQL's default port gives it."""
    from conftest import client_on_an_empty_table, import_app

    postgres.create_database("cloud_sql")
    root = Path(tempfile.mkdtemp(prefix="cs-"))  # a socket's path must be short (107 bytes)
    instance = root / "cloudsql" / "my-project:europe-west1:predictions"
    instance.mkdir(parents=True)
    (instance / ".s.PGSQL.5432").symlink_to(postgres.root / f".s.PGSQL.{postgres.port}")
    url = f"postgresql://postgres:unused-under-trust@/cloud_sql?host={instance}"

    module = import_app(url)
    try:
        client = client_on_an_empty_table(module)
        answer = client.post("/predict", json={"id": 1, "observation": EXAMPLE_OBSERVATION})
        assert answer.status_code == 200
        assert postgres.sql("SELECT count(*) FROM prediction", "cloud_sql") == [(1,)]
    finally:
        module.DB.close_all()
        shutil.rmtree(root)
