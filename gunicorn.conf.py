"""gunicorn's settings, in one place: the Dockerfile, heroku.yml, Procfile, `make run` and
`make bench` all start `gunicorn --config gunicorn.conf.py app:app`.

Every value can be changed from the environment (service/settings.py), which is how a platform
configures the service.
"""

import errno
import gc
import json
import os
import shutil
import signal
import socket
import sys
import tempfile

import gunicorn.util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the service package, beside this file
from service import database, settings  # noqa: E402
from service.buffering_worker import BufferingThreadWorker  # noqa: E402

SETTINGS = settings.read()

# The platform tells the service which port to listen on in $PORT; 5000 on a laptop. 0.0.0.0 is
# every interface: the platform's router reaches the service from outside its container (and on
# a laptop, so can other machines on your network).
PORT = SETTINGS.PORT
bind = f"0.0.0.0:{PORT}"

# Processes x threads: each worker process holds up to `threads` requests at once, and the
# requests that arrive together are scored as one batch (see service/batching.py).
workers = SETTINGS.WEB_CONCURRENCY
threads = SETTINGS.GUNICORN_THREADS


# gunicorn's gthread worker, but a thread is given to a request only once it has arrived whole
# (service/buffering_worker.py): a client trickling its request, or sending nothing, holds a
# socket and not one of the 16 threads, and is closed after REQUEST_READ_SECONDS.
class Worker(BufferingThreadWorker):
    read_seconds = SETTINGS.REQUEST_READ_SECONDS
    max_body_bytes = SETTINGS.MAX_BODY_BYTES


worker_class = Worker

# Each worker opens its own listening socket (SO_REUSEPORT), and the kernel spreads new
# connections evenly over them. With one shared socket, whichever worker happened to be
# idle took most of them: 13 of 16 keep-alive connections on one worker was common, and
# that worker then ran at full load while the other one waited. The price is paid at a reload
# (SIGHUP): see docs/operations.md, "Reloading" (GUNICORN_REUSE_PORT=0 turns it off).
reuse_port = SETTINGS.GUNICORN_REUSE_PORT

# /metrics adds up every worker's counters, which prometheus_client keeps in files in one directory
# (its multiprocess mode). It must be named before app.py is imported, hence here: a fresh temp
# directory, or the one PROMETHEUS_MULTIPROC_DIR names, emptied of an earlier run's files. A reload
# (SIGHUP) reads this file again in the same master; the directory and its counts stay.
METRICS_DIR_OWNER = "SERVICE_METRICS_DIR_OWNER"  # the master that prepared the directory
METRICS_DIR_MADE = "SERVICE_METRICS_DIR_MADE"  # set when that master made it, and removes it at exit
if os.environ.get(METRICS_DIR_OWNER) != str(os.getpid()):
    if SETTINGS.PROMETHEUS_MULTIPROC_DIR:
        for stale in os.scandir(SETTINGS.PROMETHEUS_MULTIPROC_DIR):
            if stale.name.endswith(".db"):
                os.remove(stale.path)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="service-metrics-")
        os.environ[METRICS_DIR_MADE] = "1"
    os.environ[METRICS_DIR_OWNER] = str(os.getpid())


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live gauges (service_ready) no longer count


def on_exit(server):
    if os.environ.get(METRICS_DIR_MADE):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


# Load app.py once in the master before forking: the tables are created once (not by every
# worker racing on an empty database), and the workers share the model's memory.
preload_app = True

# Errors to stderr, where the platform's log finds them. No access log by default: the platform's
# router already logs every request with its status and time, and a second line per request is
# a large share of the time the service spends outside the model (docs/performance.md). `make
# run` turns it on (GUNICORN_ACCESS_LOG=-) so you see your requests locally.
accesslog = SETTINGS.GUNICORN_ACCESS_LOG
errorlog = "-"
timeout = SETTINGS.GUNICORN_TIMEOUT


# Requests gunicorn refuses before the service sees them (a malformed request line, headers or a
# URL over its limits) get the service's JSON error shape instead of gunicorn's HTML page.
# gunicorn writes them through util.write_error(socket, status, reason, message), looked up at
# each call, so replacing it here (before the workers fork) reaches every worker.
def write_json_error(sock, status_int, reason, message):
    detail = f"{reason}: {message}" if message else reason
    body = json.dumps({"error": f"gunicorn refused the request: {detail}"}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn.util.write_error = write_json_error

# Heroku's router ends TLS and tells the dyno how the client connected in X-Forwarded-Proto.
# gunicorn believes that header only from the addresses in forwarded_allow_ips (FORWARDED_ALLOW_IPS,
# else 127.0.0.1), and the router's address is not known in advance. Only the router can reach a
# dyno, so on Heroku (DYNO is set there) every address is believed: Heroku's Python buildpack
# sets FORWARDED_ALLOW_IPS="*" itself, its container stack does not. Without it the page's "try
# it" line would offer http:// to a visitor who came by https://.
if "DYNO" in os.environ and SETTINGS.FORWARDED_ALLOW_IPS is None:
    forwarded_allow_ips = "*"

# gunicorn's runtime control socket is not used here, and several instances on one machine
# (tests, benchmarks) would fight over its default path.
control_socket_disable = True


def on_starting(server):
    """Refuse to start on a port another server already listens on.

    With reuse_port the kernel would let a second service share the port and hand it part of
    the connections; a socket without SO_REUSEPORT can't bind beside a listener, so a trial
    bind tells. (SO_REUSEADDR only lets it past connections left in TIME_WAIT by a restart.)
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", PORT))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise SystemExit(
                f"port {PORT} is already in use by another server: stop it, or start this one "
                f"with another port (PORT=5001 make run)"
            ) from None


def pre_fork(server, worker):
    # Everything the master loaded (the libraries, the model, the settings) lives as long as it
    # does. Frozen, those objects are out of the garbage collector's reach in every worker forked
    # after: a worker's full collections, and the last one at its exit, no longer walk them and
    # write to (so copy) the pages it shares with the master, which made stopping slow on a busy
    # machine and memory grow (docs/operations.md, "Stopping").
    gc.freeze()


def when_ready(server):
    # gunicorn's own "Listening at" line is empty with reuse_port: each worker opens its socket.
    server.log.info("Serving on http://%s (port %s on every interface), %s workers", bind, PORT, workers)
    connections = database.connections_per_worker(SETTINGS.DB_MAX_CONNECTIONS, workers) * workers
    server.log.info(
        "This instance opens at most %s connections to the database (DB_MAX_CONNECTIONS)", connections
    )


def post_worker_init(worker):
    # Ctrl-C (SIGINT to the whole terminal's process group) and the master's quick-shutdown
    # SIGQUIT both end a worker at once. gunicorn's own handler for them shuts the thread pool
    # down from inside the signal handler; when the signal lands while the worker's main thread
    # holds that pool's lock (handing it a request), the handler waits for the lock forever and
    # the master kills the worker 30 s later. A quick shutdown drops requests in flight anyway,
    # and every prediction that was answered is already committed. SIGTERM (a graceful stop, as
    # Heroku and `docker stop` send) keeps gunicorn's handler, which takes no lock.
    for quick_stop in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(quick_stop, exit_at_once)


def exit_at_once(signum, frame):
    os._exit(0)
