"""How the service talks to its database, whichever backend DATABASE_URL names.

Contract:
- `pool_settings(url, pool_size, timeout_seconds)` -> (url, options) for
  `playhouse.db_url.connect`: a pooled SQLite or PostgreSQL database (postgres:// is Heroku's
  spelling), or a RuntimeError naming the schemes it takes.
- `add_missing_functions(database)` gives SQLite the ln() that /stats' SQL uses where its build
  lacks the math functions.
- `EXCEPTIONS`: every exception class peewee raises for a database fault, its pool's own, and
  `ConnectionLimitWait` (a connection waited for at the database's limit, and not had in time).
- `classify(exc)` sorts a database exception into a `Fault`: "unavailable" (down, unreachable,
  no free connection, a lock or deadlock: retrying later can succeed), "refused" (read-only,
  permission denied, disk or storage full: nothing succeeds until an operator acts), or
  "error" (a SQL mistake, an unexpected constraint: a bug, 500). Each carries the message a
  client gets.
- `Episodes` logs a run of identical faults once when it starts and once when the next
  success ends it, instead of once per request, and remembers a refusal for /ready.
- `write_refusal(database, table)` says, with one cheap query and no write, whether the database
  would refuse writes for a reason it can see (PostgreSQL: read-only, INSERT or UPDATE revoked);
  `readiness()` adds the refusal a recent write met, for /ready.
- `handle_failure(database, episodes, exc)`: what a route's database exception means, logged once
  per episode, its connection dropped.
- Connections: each worker's pool holds at most `connections_per_worker(DB_MAX_CONNECTIONS,
  workers)`. A connection PostgreSQL (or PgBouncer) refuses for a connection limit is waited for,
  up to DB_TIMEOUT_SECONDS, then answered with CONNECTION_LIMIT ("the database's connection
  limit is reached", not "unavailable"). A process that holds a connection then waits for its
  own rather than ask the server again. While a process of the instance waits holding none
  (WAITING, in memory the workers share), the others open no more, `give_back()` closes each
  request's connection instead of pooling it, and a thread per database object and process
  closes the pool's idle ones; a process that starts waiting queues behind those already
  waiting. So whichever worker a request reaches gets a connection, even when the database
  allows one for all of them, and no worker starves while another takes every one that frees.
- The pools are peewee's, through its public interface, plus `CountedConnections`: a small mixin
  that sees each connection the driver opens and closes (peewee's `_connect` and `_close`, the
  methods every backend of peewee defines), for `connections_open()`. tests/test_connections.py
  fails on a peewee that stops calling them.
"""

import logging
import math
import multiprocessing
import os
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass

from peewee import DatabaseError, InterfaceError, OperationalError, PostgresqlDatabase, SqliteDatabase
from playhouse.db_url import register_database
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase, PooledSqliteDatabase


class ConnectionLimitWait(Exception):
    """A new connection this process may not open now: the database's limit is reached, and a
    connection of its own will come back, or another process of the instance needs one more.
    (Not an OperationalError: peewee would wrap that in its own, and hide what it is.)"""

    def __init__(self):
        super().__init__("the database's connection limit is reached")


EXCEPTIONS = (DatabaseError, InterfaceError, MaxConnectionsExceeded, ConnectionLimitWait)

log = logging.getLogger(__name__)


def pool_settings(url, pool_size, timeout_seconds):
    """Each request borrows a pooled connection and gives it back, instead of paying for a new
    one; a connection the server dropped is thrown away rather than handed out again."""
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        # WAL lets readers and the writer work at once, synchronous=NORMAL makes a commit
        # cheap while staying durable across a crash of the service, and BEGIN IMMEDIATE
        # plus a busy timeout make concurrent writers queue instead of failing "locked".
        return f"sqlite+counted://{rest}", {
            "pragmas": {
                "journal_mode": "wal",
                "synchronous": "normal",
                "busy_timeout": timeout_seconds * 1000,
            },
            "lock_type": "IMMEDIATE",
            "check_same_thread": False,
            "max_connections": pool_size,
            "timeout": timeout_seconds,  # the pool's: wait this long for a free connection
        }
    if scheme in ("postgres", "postgresql"):  # Heroku hands out postgres:// URLs
        return f"postgresql+waiting://{rest}", {
            # A user or password with characters URLs reserve arrives %-escaped (p%40ss for p@ss);
            # peewee leaves it escaped unless told. Query arguments (?sslmode=require) go to libpq.
            "unquote_user": True,
            "unquote_password": True,
            "connect_timeout": timeout_seconds,
            "max_connections": pool_size,
            "timeout": timeout_seconds,  # wait this long for a free connection, then answer 503
        }
    raise RuntimeError(
        f"DATABASE_URL must start with sqlite://, postgres:// or postgresql://; got {scheme}://"
    )


def sqlite_has_ln():
    """SQLite has ln() only when built with its math functions (Debian's is; some others aren't)."""
    try:
        sqlite3.connect(":memory:").execute("SELECT ln(1)")
    except sqlite3.OperationalError:
        return False
    return True


def add_missing_functions(database):
    if isinstance(database, SqliteDatabase) and not sqlite_has_ln():
        database.register_function(math.log, "ln", 1)  # /stats computes log loss in SQL


# What a failed query means for the client and the operator.
@dataclass(frozen=True)
class Fault:
    kind: str  # "unavailable" (retry later), "refused" (an operator must act) or "error" (a bug)
    cause: str  # short, for the log and /ready
    message: str  # the client's error


RETRY_LATER = "nothing was stored; retry the request later"
NOTHING_STORED = "nothing was stored, and retrying will not help until this is fixed"
READ_ONLY = Fault(
    "refused",
    "read-only",
    "the database is read-only and refuses writes (PostgreSQL: default_transaction_read_only or a "
    f"standby; SQLite: a file or directory the service can't write); {NOTHING_STORED}",
)
PERMISSION_DENIED = Fault(
    "refused",
    "permission denied",
    "the database refuses writes to the predictions table: permission denied. On Heroku Postgres this "
    "means the database is over its plan's capacity: upgrade the plan or delete data (archive the "
    "oldest predictions, docs/operations.md), and writes resume by themselves; elsewhere, grant the "
    f"service's role INSERT and UPDATE on its tables; {NOTHING_STORED}",
)
STORAGE_FULL = Fault(
    "refused",
    "storage full",
    "the database refuses writes: storage full (its disk, or on Heroku Postgres the plan's storage). "
    f"Free space (delete old rows, grow the disk) or upgrade the plan; {NOTHING_STORED}",
)
UNAVAILABLE = Fault("unavailable", "unavailable", f"the database is unavailable; {RETRY_LATER}")
BUSY = Fault("unavailable", "busy", f"the database is busy (a lock or a deadlock); {RETRY_LATER}")
NO_CONNECTION = Fault(
    "unavailable", "no free connection", f"every database connection is in use; {RETRY_LATER}"
)
CONNECTION_LIMIT = Fault(
    "unavailable",
    "connection limit",
    "the database's connection limit is reached: every connection it allows is taken (by this "
    "service's workers and instances, or by other clients) and none came free in time; "
    f"{RETRY_LATER}. If it lasts, lower DB_MAX_CONNECTIONS or the number of instances, or raise the "
    "database's limit (docs/operations.md)",
)
# What PostgreSQL (and PgBouncer) say when a connection would pass a limit: the server's
# max_connections, a role's or a database's CONNECTION LIMIT, PgBouncer's max_client_conn.
CONNECTION_LIMIT_WORDS = (
    "too many connections",
    "remaining connection slots are reserved",
    "sorry, too many clients",
    "no more connections allowed",
)
BUG = Fault("error", "error", "internal error; the details are in the server log")

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_FAULTS = {
    sqlite3.SQLITE_READONLY: READ_ONLY,
    sqlite3.SQLITE_PERM: READ_ONLY,
    sqlite3.SQLITE_FULL: STORAGE_FULL,
    sqlite3.SQLITE_BUSY: BUSY,
    sqlite3.SQLITE_LOCKED: BUSY,
    sqlite3.SQLITE_CANTOPEN: UNAVAILABLE,
    sqlite3.SQLITE_IOERR: UNAVAILABLE,
}
# PostgreSQL's SQLSTATEs, exact ones first, then by class (the first two characters).
POSTGRES_FAULTS = {
    "25006": READ_ONLY,  # read_only_sql_transaction
    "42501": PERMISSION_DENIED,  # insufficient_privilege
    "53100": STORAGE_FULL,  # disk_full
    "40001": BUSY,  # serialization_failure
    "40P01": BUSY,  # deadlock_detected
    "55P03": BUSY,  # lock_not_available
    "57014": BUSY,  # query_canceled (statement_timeout)
    "08": UNAVAILABLE,  # connection exception
    "53": UNAVAILABLE,  # insufficient resources: out of memory, too many connections
    "57": UNAVAILABLE,  # operator intervention: shutdown, crash recovery, cannot connect now
}


def driver_error(exc):
    """The driver's exception under peewee's wrapper (peewee passes it as the first argument)."""
    if exc.args and isinstance(exc.args[0], Exception):
        return exc.args[0]
    return exc.__context__ or exc


def at_connection_limit(error):
    return getattr(error, "pgcode", None) == "53300" or any(
        words in str(error) for words in CONNECTION_LIMIT_WORDS
    )


def classify(exc):
    if isinstance(exc, MaxConnectionsExceeded):
        return NO_CONNECTION
    if isinstance(exc, ConnectionLimitWait):
        return CONNECTION_LIMIT
    original = driver_error(exc)
    if at_connection_limit(original):
        return CONNECTION_LIMIT
    if isinstance(exc, InterfaceError):  # the driver's: a connection closed; peewee's own: a bug
        return UNAVAILABLE if original is not exc else BUG
    sqlite_code = getattr(original, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return SQLITE_FAULTS.get(sqlite_code & 0xFF, BUG)
    pgcode = getattr(original, "pgcode", "")
    if pgcode:
        return POSTGRES_FAULTS.get(pgcode) or POSTGRES_FAULTS.get(pgcode[:2], BUG)
    # psycopg2 gives no SQLSTATE when the connection itself failed (refused, dropped, timed out).
    is_connection_failure = type(original).__name__ in ("OperationalError", "InterfaceError")
    return UNAVAILABLE if is_connection_failure else BUG


class Episodes:
    """One log line when a kind of fault starts, one when writes succeed again; not one per request.

    Per process: each gunicorn worker logs its own episode.
    """

    def __init__(self, logger=log):
        self.logger = logger
        self._lock = threading.Lock()
        self.current = None  # the Fault of the episode under way
        self.started = self.count = 0

    def record_failure(self, found, exc):
        with self._lock:
            if self.current == found:
                self.count += 1
                return
            self.current, self.started, self.count = found, time.monotonic(), 1
        detail = f"{type(driver_error(exc)).__name__}: {driver_error(exc)}".strip()
        quiet = "repeats are not logged until the database works again"
        if found.kind == "error":
            self.logger.error("database error (%s); %s", detail, quiet, exc_info=exc)
        else:
            self.logger.error("database %s: %s; %s", found.cause, detail, quiet)

    def record_success(self):
        if self.current is None:  # the usual case, without taking the lock
            return
        with self._lock:
            ended, count, seconds = self.current, self.count, time.monotonic() - self.started
            self.current = None
        if ended is not None:
            self.logger.warning(
                "database works again after %.1f s of %s (%d failed request(s))", seconds, ended.cause, count
            )

    def refusal(self):
        current = self.current
        return current if current is not None and current.kind == "refused" else None


WRITE_REFUSAL_SQL = """
SELECT current_setting('transaction_read_only') = 'on' OR pg_is_in_recovery(),
       has_table_privilege(%s, 'INSERT') AND has_table_privilege(%s, 'UPDATE')
"""


def write_refusal(database, table):
    """READ_ONLY or PERMISSION_DENIED if PostgreSQL would refuse our writes, else None.

    SQLite can't tell without writing; a full disk can't be seen without writing either."""
    if isinstance(database, SqliteDatabase):
        return None
    read_only, may_write = database.execute_sql(WRITE_REFUSAL_SQL, (table, table)).fetchone()
    if read_only:
        return READ_ONLY
    return None if may_write else PERMISSION_DENIED


def can_see(database, refusal):
    """Whether write_refusal() would see this refusal's cause (and so see it gone)."""
    return not isinstance(database, SqliteDatabase) and refusal in (READ_ONLY, PERMISSION_DENIED)


def readiness(database, table, episodes):
    """None when the database answers and takes writes, as far as can be seen without writing;
    else the refusal's message (one a recent write met counts, where the query can't see it)."""
    refusal = write_refusal(database, table)
    remembered = episodes.refusal()
    if refusal is None and remembered is not None and not can_see(database, remembered):
        refusal = remembered
    return None if refusal is None else refusal.message


def handle_failure(database, episodes, exc):
    """The Fault of a request's database exception, logged once per episode. A connection that
    failed for any reason but a bug is never handed out again: the next one starts afresh."""
    found = classify(exc)
    episodes.record_failure(found, exc)
    if found.kind != "error":
        try:
            database.manual_close()
        except Exception:
            log.debug("closing the failed connection failed", exc_info=True)
    return found


# Connections: bounded per instance, waited for at the database's limit, shared fairly by workers.
def connections_per_worker(most_per_instance, workers):
    """Each worker's share of DB_MAX_CONNECTIONS, at least one."""
    return max(1, most_per_instance // max(1, workers))


class WaitingProcesses:
    """The processes of this instance that wait for a connection while holding none, counted in
    memory that gunicorn's workers share (made in the master, before it forks them). While any
    waits, the others give connections back to the server instead of pooling them, and open no
    more than they hold."""

    def __init__(self, stale_seconds=1.0):
        self.count = multiprocessing.Value("i", 0)
        self.polled = multiprocessing.RawValue("d", -1e9)  # time.monotonic(): one clock for every process
        # A count no one polls for (a worker killed while it waited) is ignored after this long.
        self.stale_seconds = stale_seconds
        self._lock, self._pid, self._threads = threading.Lock(), None, 0

    def _mine(self):
        """This process's threads among the waiting (none in a worker freshly forked)."""
        if self._pid != os.getpid():
            self._pid, self._threads = os.getpid(), 0
        return self._threads

    def join(self):
        with self._lock:
            self._threads = self._mine() + 1
            if self._threads == 1:
                with self.count.get_lock():
                    self.count.value += 1

    def leave(self):
        with self._lock:
            self._threads = self._mine() - 1
            if self._threads == 0:
                with self.count.get_lock():
                    self.count.value -= 1

    def poll(self):
        self.polled.value = time.monotonic()

    def others(self):
        """Whether another process of this instance waits for a connection it needs."""
        mine = 1 if self._mine() else 0
        fresh = time.monotonic() - self.polled.value < self.stale_seconds
        return fresh and self.count.value - mine > 0


WAITING = WaitingProcesses()


class CountedConnections:
    """Below peewee's pool, above the driver: every connection the driver opens, until it is closed
    by the pool, or by the server (a dropped psycopg2 connection says so in `closed`, and the pool
    throws it away without closing it: such ones are forgotten when next counted)."""

    def __init__(self, *args, **kwargs):
        self._count_lock, self._driver_connections = threading.Lock(), set()
        super().__init__(*args, **kwargs)

    def _connect(self):
        connection = super()._connect()
        with self._count_lock:
            self._driver_connections.add(connection)
        return connection

    def _close(self, connection):
        with self._count_lock:
            self._driver_connections.discard(connection)
        super()._close(connection)

    def connections_open(self):
        with self._count_lock:
            self._driver_connections = {c for c in self._driver_connections if not getattr(c, "closed", 0)}
            return len(self._driver_connections)


class CountedSqliteDatabase(CountedConnections, SqliteDatabase):
    pass


class CountedPostgresqlDatabase(CountedConnections, PostgresqlDatabase):
    pass


class CountedPooledSqliteDatabase(PooledSqliteDatabase, CountedSqliteDatabase):
    """peewee's SQLite pool, counting its connections (the mixin sits between pool and driver)."""


register_database(CountedPooledSqliteDatabase, "sqlite+counted")


class FairCountedPostgresqlDatabase(CountedPostgresqlDatabase):
    """Opens a new connection (peewee's pool calls `_connect` only when it has no idle one) only
    where that is fair at the database's connection limit: a process holding one waits for its
    own to come back rather than ask the server again, and a process holding none queues behind
    the processes already waiting, instead of taking the connection they wait for."""

    refused_at = -1e9
    refused_recently_seconds = 1.0

    def __init__(self, *args, **kwargs):
        self.waiting_thread = threading.local()
        super().__init__(*args, **kwargs)

    def _connect(self):
        if not self.may_open():
            raise ConnectionLimitWait()
        return super()._connect()

    def may_open(self):
        if self.connections_open():
            refused_recently = time.monotonic() - self.refused_at < self.refused_recently_seconds
            return not (refused_recently or WAITING.others())
        return self.thread_waits() or not WAITING.others()

    def thread_waits(self):
        """Whether the calling thread counts its process among the waiting (WAITING.join)."""
        return getattr(self.waiting_thread, "waiting", False)


class WaitingPooledPostgresqlDatabase(PooledPostgresqlDatabase, FairCountedPostgresqlDatabase):
    """peewee's pool, except that a connection the server refuses for its connection limit is
    waited for (up to the pool's timeout) instead of failing at once, and that the instance's
    processes share the connections the server allows (WAITING, give_back, the reaper)."""

    poll_seconds = 0.05  # shorter than WaitingProcesses.stale_seconds

    def __init__(self, database, timeout=None, **kwargs):
        self.wait_seconds = min(timeout or 60, 60)
        super().__init__(database, timeout=timeout, **kwargs)

    def connect(self, reuse_if_open=False):
        deadline = time.monotonic() + self.wait_seconds
        try:
            while True:
                try:
                    return super().connect(reuse_if_open)
                except (ConnectionLimitWait, OperationalError) as exc:
                    if not self.worth_waiting(exc) or time.monotonic() + self.poll_seconds > deadline:
                        raise
                self.wait_in_turn()
        finally:
            if self.thread_waits():
                self.waiting_thread.waiting = False
                WAITING.leave()

    def worth_waiting(self, exc):
        """A refusal for the connection limit, or a connection this process may not open yet."""
        if isinstance(exc, ConnectionLimitWait):
            return True
        if at_connection_limit(driver_error(exc)):
            self.refused_at = time.monotonic()
            return True
        return False

    def wait_in_turn(self):
        """A pause before asking again; a process holding no connection counts itself waiting."""
        if not self.connections_open() and not self.thread_waits():
            self.waiting_thread.waiting = True
            WAITING.join()
        if self.thread_waits():
            WAITING.poll()
        time.sleep(self.poll_seconds)


register_database(WaitingPooledPostgresqlDatabase, "postgresql+waiting")


def give_back(database):
    """The request's connection back to the pool; back to the server while another process of the
    instance waits for one, so that it may have it."""
    if database.is_closed():
        return
    if WAITING.others():
        database.manual_close()
    else:
        database.close()
    start_reaper(database)


def start_reaper(database, every_seconds=0.1):
    """Once per database object in each process: a thread that closes the pool's idle connections
    while another process of the instance waits for one, so that a worker with no request to serve
    holds none another worker needs. (A forked worker inherits the object but not the thread:
    hence the process id.)"""
    if getattr(database, "reaper_pid", None) == os.getpid():
        return
    database.reaper_pid = os.getpid()
    pool = weakref.ref(database)  # the thread ends with the database object

    def reap():
        while (found := pool()) is not None:
            if WAITING.others():
                found.close_idle()
            del found
            time.sleep(every_seconds)

    threading.Thread(target=reap, name="connection-reaper", daemon=True).start()


def connections_open(database):
    """This process's connections to the database, in use and idle."""
    return database.connections_open()
