"""The Dockerfile, built and run for real with podman (runtime runc), as Heroku's container stack would.

No image registry is reachable from the machines that run this suite, so `python:3.11-slim` can't
be pulled. When it isn't already in podman's storage, a stand-in is built from Debian's packages
with mmdebstrap (Debian 12's Python 3.11 in a virtualenv first on PATH, as the official image has
pip and python first on PATH) and imported under the name the Dockerfile's FROM gives. The
Dockerfile itself is built unchanged, with --pull=never. The stand-in trusts this machine's CA
certificates, because HTTPS to PyPI from inside the build passes through them here.

Podman's configuration and storage live in a temporary directory; containers use the host's
network, so each run gets a free port through PORT.
"""

import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import missing
from service.migrations import CURRENT_VERSION, RELEASE_COMMAND
from service.model_card import example_observation
from test_docs import console_examples, same_response
from tools.example import serves_the_example
from tools.servers import REPO, free_port, wait_for_200

pytestmark = pytest.mark.slow
BASE_IMAGE = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/model-service:test"
CACHE = Path.home() / ".cache" / "model-service"
STAND_IN_CACHE = CACHE / "python-3.11-slim-stand-in.tar"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class Podman:
    """podman with its own configuration in `root`, and its image storage in `storage`, which
    outlives the run: like Docker's build cache, the layer that installs requirements_prod.txt is
    built again only when that file or the base image changes."""

    def __init__(self, root, storage):
        storage.mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(CONTAINERS_CONF)
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{storage}"\nrunroot = "{storage}-run"\n'
        )
        (root / "registries.conf").write_text('unqualified-search-registries = ["docker.io"]\n')
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        }

    def succeeds(self, *args):
        return subprocess.run(["podman", *args], env=self.env, capture_output=True).returncode == 0

    def __call__(self, *args, check=True, timeout=900):
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout.strip()

    def state(self, container):
        """ "<status> <exit code>", or "" when podman can't tell this instant: its inspect may read
        the container's process as it exits, and fail ("read /proc/<pid>/cgroup: no such
        process", seen once in a clean-clone run)."""
        return self("inspect", container, "--format", "{{.State.Status}} {{.State.ExitCode}}", check=False)

    def run_to_end(self, *args, timeout=120):
        """`podman run <args>` to the command's end: (exit code, what it wrote). It asks podman for
        the container's state rather than waiting with `podman run --rm`, whose wait for conmon
        lasts its full 20 s timeout where the init process reaps no orphan (as in this sandbox)."""
        container = self("run", "--detach", *args)
        deadline = time.monotonic() + timeout
        while (state := self.state(container))[:4] not in ("exit", "stop"):
            assert time.monotonic() < deadline, f"podman run {args} did not end within {timeout} s"
            time.sleep(0.05)
        result = subprocess.run(["podman", "logs", container], env=self.env, capture_output=True, text=True)
        self("rm", "--force", container)
        return int(state.split()[1]), result.stdout + result.stderr


def build_stand_in_base(path):
    """A root filesystem with Debian's Python 3.11, pip in a virtualenv, and this machine's CAs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hooks = [
        'chroot "$1" python3 -m venv /opt/python',
        'cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"',
        'printf "[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n" > "$1/etc/pip.conf"',
    ]
    partial = path.with_name(path.stem + ".partial.tar")  # mmdebstrap picks the format by the ending
    subprocess.run(
        [
            "mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
            *[f"--customize-hook={hook}" for hook in hooks], "bookworm", str(partial),
        ],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    partial.rename(path)


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    absent = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if absent:
        missing(f"{', '.join(absent)} not found; run tools/ensure-containers", "container tests")
    tool = Podman(tmp_path_factory.mktemp("podman"), CACHE / "podman-storage")
    yield tool
    tool("rm", "--all", "--force", check=False)
    tool("image", "prune", "--force", check=False)  # earlier builds' layers no image uses now


@pytest.fixture(scope="module")
def image(podman):
    if not podman.succeeds("image", "exists", BASE_IMAGE):
        if not STAND_IN_CACHE.is_file():
            build_stand_in_base(STAND_IN_CACHE)
        path = "ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        podman("import", "--change", path, "--change", 'CMD ["python3"]', str(STAND_IN_CACHE), BASE_IMAGE)
    started = time.monotonic()
    podman("build", "--pull=never", "--network=host", "--tag", IMAGE, "--file", "Dockerfile", str(REPO))
    seconds = time.monotonic() - started
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}"))
    print(f"built {IMAGE} in {seconds:.0f} s: {size / 1e6:.0f} MB")
    return IMAGE


class Container:
    """The image running detached on a free port, as `docker run <image>` would with PORT set."""

    def __init__(self, podman, image, port=None, **env):
        self.podman = podman
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        settings = [f"--env={name}={value}" for name, value in {"PORT": self.port, **env}.items()]
        self.id = podman("run", "--detach", *settings, image)
        self.wait_until_ready()

    def wait_until_ready(self, timeout=120):
        def still_running():
            if self.podman("inspect", self.id, "--format", "{{.State.Running}}") != "true":
                raise AssertionError(f"the container exited:\n{self.logs()}")

        if not wait_for_200(f"{self.base}/ready", still_running, timeout, interval=0.25):
            raise AssertionError(f"not ready after {timeout} s:\n{self.logs()}")

    def logs(self):
        """What the service wrote, stdout and stderr (where gunicorn logs) together."""
        command = ["podman", "logs", self.id]
        result = subprocess.run(command, env=self.podman.env, capture_output=True, text=True)
        return result.stdout + result.stderr

    def predict_an_example(self):
        features = requests.get(f"{self.base}/model", timeout=10).json()["features"]
        body = {"id": 7, "observation": example_observation(features)}
        return requests.post(f"{self.base}/predict", json=body, timeout=30)

    def remove(self):
        self.podman("rm", "--force", self.id, check=False)


@pytest.fixture
def run(podman, image):
    started = []

    def start(port=None, **env):
        container = Container(podman, image, port, **env)
        started.append(container)
        return container

    yield start
    for container in started:
        container.remove()


@pytest.fixture(scope="module")
def plain(podman, image):
    """The image run with no settings at all, shared by the tests that only read from it; the
    last of them stops it."""
    container = Container(podman, image)
    yield container
    container.remove()


def requests_answered(container, route):
    scraped = requests.get(f"{container.base}/metrics", timeout=30).text  # its directory made by user 10001
    return sum(
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "http_requests_total"
        and sample.labels == {"route": route, "method": "POST", "status": "200"}
    )


def test_the_image_serves_with_no_settings_on_sqlite(plain):
    response = plain.predict_an_example()
    assert response.status_code == 200, plain.logs()
    assert 0 <= response.json()["proba"] <= 1


def test_the_readme_curls_answer_as_shown_from_the_image(run):
    if not serves_the_example():
        pytest.skip("the top-level model is not the README's example; test_your_model.py covers it")
    container = run(LIST_DB_TOKEN="change-me")
    for command, expected in console_examples():
        if command.startswith("curl "):
            runnable = command.replace("http://localhost:5000", container.base)
            result = subprocess.run(["bash", "-c", runnable], capture_output=True, text=True, timeout=30)
            assert same_response(json.loads(result.stdout), json.loads(expected)), (command, result.stdout)


def test_the_image_serves_the_owners_page_its_assets_and_metrics(plain):
    before = requests_answered(plain, "/predict")
    assert plain.predict_an_example().status_code == 200, plain.logs()
    page = requests.get(f"{plain.base}/", headers={"Accept": "text/html"}, timeout=30)
    assert page.headers["Content-Type"].startswith("text/html")
    for asset in ("/static/vendor/uplot/uPlot.iife.min.js", "/static/page.js", "/static/page.css"):
        assert asset in page.text
        assert requests.get(f"{plain.base}{asset}", timeout=30).status_code == 200
    assert requests_answered(plain, "/predict") == before + 1


def test_the_service_runs_as_an_unprivileged_user(plain, podman):
    assert podman("exec", plain.id, "id", "-u") == "10001"
    users = podman("top", plain.id, "user").split()[1:]
    assert users
    assert set(users) == {"app"}


def test_the_image_holds_the_service_and_nothing_else(podman, image):
    _, listing = podman.run_to_end("--entrypoint", "find", image, "/app", "-maxdepth", "1")
    names = {Path(path).name for path in listing.split()[1:]}
    assert {"app.py", "pipeline.pickle", "dtypes.pickle", "columns.json", "gunicorn.conf.py"} <= names
    unwanted = {"tests", "tools", "docs", ".git", ".venv", ".venv-prod", "titanic.csv"}
    assert not names & unwanted
    assert not [name for name in names if name.endswith((".ipynb", ".db", ".db-wal"))]


def test_stopping_the_container_exits_0_within_the_stop_timeout(plain, podman):
    assert plain.predict_an_example().status_code == 200
    started = time.monotonic()
    podman("stop", "--time", "10", plain.id)
    assert time.monotonic() - started < 10
    assert podman("inspect", plain.id, "--format", "{{.State.ExitCode}}") == "0"
    assert "Shutting down: Master" in plain.logs()


def platform_url(postgres, name, form):
    """A database URL in the form a platform hands out."""
    url = postgres.create_database(name)
    if form == "postgres://":  # Heroku's spelling
        return url.replace("postgresql://", "postgres://")
    if form == "sslmode=require":  # managed plans that insist on TLS
        return url + "?sslmode=require"
    if form == "sslmode=disable":  # a private network's plain connection (Fly's .flycast)
        return url + "?sslmode=disable"
    # A password with characters URLs reserve, %-escaped as platforms write it.
    password = "p@ss:w/rd%&?#"
    postgres.add_password_role("student", password)
    postgres.sql(f'ALTER DATABASE "{name}" OWNER TO student')
    return url.replace("postgres@", f"student:{urllib.parse.quote(password, safe='')}@")


# Each platform as it runs the image: its variable, its PORT (5000, 8080, Render's 10000 or one
# chosen at random), and its form of database URL.
PLATFORM_RUNS = {
    "Heroku": ({"DYNO": "web.1"}, None, "postgres://"),
    "Railway": ({"RAILWAY_PROJECT_ID": "0c1d"}, None, "escaped password"),
    "Render": ({"RENDER": "true"}, 10000, "sslmode=require"),
    "Fly.io": ({"FLY_APP_NAME": "model-service"}, 8080, "sslmode=disable"),
    "Google Cloud Run": ({"K_SERVICE": "model-service"}, 5000, "sslmode=require"),
}


@pytest.mark.parametrize("platform", PLATFORM_RUNS)
def test_the_image_releases_then_serves_as_each_platform_runs_it(platform, run, podman, image, postgres):
    variables, port, form = PLATFORM_RUNS[platform]
    name = "on_" + platform.lower().replace(" ", "_").replace(".", "_")
    url = platform_url(postgres, name, form)

    exit_code, release = podman.run_to_end(f"--env=DATABASE_URL={url}", image, *shlex.split(RELEASE_COMMAND))
    assert exit_code == 0, release
    container = run(port, DATABASE_URL=url, **variables)
    response = container.predict_an_example()

    assert f"schema version {CURRENT_VERSION}" in release  # made by the release, before the web starts
    assert response.status_code == 200, container.logs()
    assert "warnings" not in requests.get(f"{container.base}/ready", timeout=10).json()
    assert postgres.sql("SELECT observation_id FROM prediction", database=name) == [(7,)]


def test_the_image_refuses_to_start_on_a_platform_without_a_database(podman, image):
    exit_code, said = podman.run_to_end("--env=K_SERVICE=model-service", "--env=PORT=8080", image)
    assert exit_code != 0
    assert "refusing to start on Google Cloud Run without DATABASE_URL" in said
