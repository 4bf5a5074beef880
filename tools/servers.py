"""Real servers for the tests, the benchmark and the model check: a throwaway PostgreSQL cluster,
and the service under gunicorn, each on a free loopback port.

Contract:
- `PostgresServer(bindir)`: a cluster in a temp dir, run as the postgres user when root;
  `create_database(name)` returns its URL, `sql()` runs a statement, `stop()`/`start()`
  restart it, `destroy()` removes it. `postgres_bindir()` finds initdb, or None.
- `LiveServer(database_url, ...)`: `gunicorn --config gunicorn.conf.py app:app` (or `command`)
  in its own process group, up once it answers /health; `post()`, `output()`, `stop()`.
- `PgBouncer(postgres)`: Debian's pgbouncer in transaction mode in front of it; `url(database)`.
- `PredictLoad(server)`: keep-alive clients sending /predict for the length of a `with` block.
- `free_port()`, `wait_for_200()`, `listening_addresses()`.
Only the standard library is imported up front, so the model check runs it in the service's own
virtualenv; `requests` is imported where a client needs it.
"""

import atexit
import contextlib
import glob
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from tools.example import EXAMPLE_DIR, EXAMPLE_OBSERVATION, REPO


def log_folder():
    """One folder for this process's gunicorn logs, removed when the process exits: a suite
    starts a few hundred servers, and their logs are read only while a test runs."""
    global _LOG_FOLDER
    if _LOG_FOLDER is None:
        _LOG_FOLDER = tempfile.mkdtemp(prefix="gunicorn-logs-")
        atexit.register(shutil.rmtree, _LOG_FOLDER, ignore_errors=True)
    return _LOG_FOLDER


_LOG_FOLDER = None


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
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (OSError, http.client.HTTPException):
            pass  # not listening yet, or an error status (urllib's HTTPError is an OSError)
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
        self.make_certificate()
        self.start()

    def make_certificate(self):
        """A self-signed certificate, so that clients may ask for TLS (?sslmode=require), as managed
        plans insist on."""
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-keyout", self.data / "server.key", "-out", self.data / "server.crt"],
            check=True, capture_output=True,
        )  # fmt: skip
        if self.run_as:
            for name in ("server.key", "server.crt"):
                shutil.chown(self.data / name, "postgres")
        (self.data / "server.key").chmod(0o600)

    def add_password_role(self, role, password):
        """A login role that must give its password (the others are trusted): a URL's escaping of
        the password is then really tested."""
        self.sql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' CREATEDB")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f'host all "{role}" 127.0.0.1/32 scram-sha-256\n' + hba.read_text())
        self.sql("SELECT pg_reload_conf()")

    def _run(self, tool, *args):
        command = [*self.run_as, str(self.bindir / tool), *map(str, args)]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root)

    def url(self, database="postgres", scheme="postgresql"):
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def start(self):
        options = f"-p {self.port} -k {self.root} -h 127.0.0.1 -c max_connections=200 -c ssl=on"
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


class PgBouncer:
    """Debian's pgbouncer in transaction mode in front of a PostgresServer, on a free loopback
    port, as managed plans hand out pooled URLs: every database of the server, under its own name,
    through at most `pool_size` server connections per database and role."""

    def __init__(self, postgres, pool_size=10, users=("postgres", "service", "restricted")):
        self.postgres = postgres
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pgbouncer-test-"))
        (self.root / "users.txt").write_text("".join(f'"{user}" ""\n' for user in users))
        (self.root / "pgbouncer.ini").write_text(
            f"""[databases]
* = host=127.0.0.1 port={postgres.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits,options
logfile = {self.root}/pgbouncer.log
pidfile = {self.root}/pgbouncer.pid
"""
        )
        if postgres.run_as:
            shutil.chown(self.root, "postgres")
            for path in self.root.iterdir():
                shutil.chown(path, "postgres")
        subprocess.run(
            [*postgres.run_as, "pgbouncer", "-d", str(self.root / "pgbouncer.ini")],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while not listening_addresses(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def url(self, database, user="postgres", scheme="postgresql"):
        return f"{scheme}://{user}@127.0.0.1:{self.port}/{database}"

    def destroy(self):
        pid = (
            (self.root / "pgbouncer.pid").read_text().strip()
            if (self.root / "pgbouncer.pid").exists()
            else ""
        )
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)


def pgbouncer_binary():
    """pgbouncer's path (Debian puts it in /usr/sbin, which a user's PATH may lack), or None."""
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer",) if Path(path).is_file()), None
    )


class LiveServer:
    """The service in its own process on a free port; by default as deployed:
    `gunicorn --config gunicorn.conf.py app:app`."""

    def __init__(self, database_url, workers=2, env=None, command=None, cwd=REPO, python_bin=None):
        bin_dir = python_bin or Path(sys.executable).parent
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "WEB_CONCURRENCY": str(workers),
            "DATABASE_URL": database_url,
            "GUNICORN_ACCESS_LOG": "",
            "ARTIFACTS_DIR": str(EXAMPLE_DIR),
            **(env or {}),
        }
        # A command may name the port as {port}, e.g. ["gunicorn", "--bind", "0.0.0.0:{port}", ...].
        self.command_template = command or ["gunicorn", "--config", "gunicorn.conf.py", "app:app"]
        self.cwd = cwd
        chosen_port = (env or {}).get("PORT")
        for attempt in range(3):
            self.launch(int(chosen_port) if chosen_port else free_port())
            try:
                self.wait_until_up()
                return
            except BaseException as exc:
                self.stop()
                # Another test's server may take the free port between its choice and its use.
                taken = isinstance(exc, RuntimeError) and "already in use" in str(exc)
                if chosen_port or not taken or attempt == 2:
                    raise

    def launch(self, port):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.env["PORT"] = str(port)
        self.command = [part.format(port=port) for part in self.command_template]
        self.log = tempfile.NamedTemporaryFile(dir=log_folder(), suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

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

    def wait_for_log(self, line, times, timeout=60):
        """Whether `line` has appeared `times` times in the log before `timeout` seconds pass
        (a reload on a busy machine takes as long as its workers take to import the model)."""
        deadline = time.monotonic() + timeout
        while self.output().count(line) < times and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.output().count(line) >= times

    def post(self, path, body, **kwargs):
        import requests

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

    def __init__(self, server, clients=8, settle_seconds=0.0, first_id=0):
        self.server, self.settle_seconds = server, settle_seconds
        self.statuses, self.errors, self.acknowledged = Counter(), Counter(), set()
        self.connection_errors = 0  # requests that got no answer at all (reset, refused)
        ids = iter(range(first_id, first_id + 10**9))
        self._lock, self._stop, self._ids = threading.Lock(), threading.Event(), ids
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self):
        import requests

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
