"""Real servers for the tests and the benchmark: a throwaway PostgreSQL cluster and gunicorn."""

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
# The Titanic model and its data, for the tests that check the example's own figures; the
# contract tests use the top-level artifacts, whatever model they hold (see tests/example/).
EXAMPLE_DIR = REPO / "tests" / "example"
EXAMPLE_OBSERVATION = {
    "Age": 22.0,
    "Cabin": None,
    "Embarked": "S",
    "Fare": 7.25,
    "Parch": 0,
    "Pclass": 3,
    "Sex": "male",
    "SibSp": 1,
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port):
    """The local address of every TCP socket listening on `port`, from /proc/net/tcp."""
    addresses = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local_address, _remote_address, state = line.split()[1:4]
        host, port_hex = local_address.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A is LISTEN
            addresses.append(socket.inet_ntoa(bytes.fromhex(host)[::-1]))
    return addresses


def wait_for_200(url, check_still_running, timeout, interval=0.1):
    """Poll url until it answers 200 (True) or the timeout passes (False); check_still_running
    raises when the server is gone, so that a crash is reported at once, not after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_still_running()
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(interval)
    return False


def postgres_bindir():
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if directory and Path(directory, "initdb").is_file():
            return Path(directory)
    return None


class PostgresServer:
    """A PostgreSQL cluster in a temp dir on a free loopback port, run as a non-root user."""

    def __init__(self, bindir, fsync=False):
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.root / "data"
        self.fsync = fsync
        # The server refuses to run as root; as root, run it as the postgres user.
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, tool, *args):
        command = [*self.run_as, str(self.bindir / tool), *map(str, args)]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root)

    def url(self, database="postgres", scheme="postgresql"):
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def start(self):
        options = f"-p {self.port} -k {self.root} -h 127.0.0.1 -c max_connections=200"
        if not self.fsync:
            options += " -F"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "log", "-w", "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def create_database(self, name):
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def sql(self, statement, database="postgres"):
        import psycopg2

        conn = psycopg2.connect(self.url(database))
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else None
        finally:
            conn.close()

    def destroy(self):
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class LiveServer:
    """The service in its own process on a free port; by default as deployed:
    `gunicorn --config gunicorn.conf.py app:app`."""

    def __init__(self, database_url, workers=2, env=None, command=None, cwd=REPO, python_bin=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        bin_dir = python_bin or Path(sys.executable).parent
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "DATABASE_URL": database_url,
            "GUNICORN_ACCESS_LOG": "",
            "ARTIFACTS_DIR": str(EXAMPLE_DIR),
            **(env or {}),
        }
        # A command may name the port as {port}, e.g. ["gunicorn", "--bind", "0.0.0.0:{port}", ...].
        command = command or ["gunicorn", "--config", "gunicorn.conf.py", "app:app"]
        self.command = [part.format(port=self.port) for part in command]
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self.wait_until_up()
        except BaseException:
            self.stop()
            raise

    def wait_until_up(self, timeout=180):
        def still_running():
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")

        if not wait_for_200(f"{self.base}/health", still_running, timeout):
            raise RuntimeError(f"gunicorn did not answer within {timeout}s:\n{self.output()}")

    def wait_until_every_worker_listens(self, timeout=30):
        """The service answers as soon as one worker is up; with reuse_port each worker opens its
        own listening socket when it has booted. The listening addresses, once all are open."""
        workers = int(self.env["WEB_CONCURRENCY"])
        deadline = time.monotonic() + timeout
        while len(listening_addresses(self.port)) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        return listening_addresses(self.port)

    def output(self):
        return Path(self.log.name).read_text(errors="replace")

    def post(self, path, body, **kwargs):
        return requests.post(f"{self.base}{path}", json=body, timeout=30, **kwargs)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class PredictLoad:
    """`clients` keep-alive clients sending POST /predict with fresh ids, from the start of a
    `with` block to its end (plus `settle_seconds` either side); what they were answered."""

    def __init__(self, server, clients=8, settle_seconds=0.0):
        self.server, self.settle_seconds = server, settle_seconds
        self.statuses, self.errors, self.acknowledged = Counter(), Counter(), set()
        self.connection_errors = 0  # requests that got no answer at all (reset, refused)
        self._lock, self._stop, self._ids = threading.Lock(), threading.Event(), iter(range(10**9))
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self):
        session = requests.Session()
        while not self._stop.is_set():
            with self._lock:
                observation_id = next(self._ids)
            body = {"id": observation_id, "observation": EXAMPLE_OBSERVATION}
            try:
                response = session.post(f"{self.server.base}/predict", json=body, timeout=30)
            except requests.ConnectionError:
                session = requests.Session()
                with self._lock:
                    self.connection_errors += 1
                continue
            with self._lock:
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.acknowledged.add(observation_id)
                else:
                    self.errors[response.json()["error"]] += 1

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        time.sleep(self.settle_seconds)
        return self

    def __exit__(self, *exc):
        time.sleep(self.settle_seconds)
        self._stop.set()
        for thread in self._threads:
            thread.join()
