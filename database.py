"""How the service talks to its database, whichever backend DATABASE_URL names.

Contract:
- `pool_settings(url, pool_size, timeout_seconds)` -> (url, options) for
  `playhouse.db_url.connect`: a pooled SQLite or PostgreSQL database (postgres:// is Heroku's
  spelling), or a RuntimeError naming the schemes it takes.
- `add_missing_functions(database)` gives SQLite the ln() that /stats' SQL uses where its build
  lacks the math functions.
- `fault(exc)` sorts a database exception into a `Fault`: "unavailable" (down, unreachable,
  no free connection, a lock or deadlock: retrying later can succeed), "refused" (read-only,
  permission denied, disk or storage full: nothing succeeds until an operator acts), or
  "error" (a SQL mistake, an unexpected constraint: a bug, 500). Each carries the message a
  client gets.
- `Episodes` logs a run of identical faults once when it starts and once when the next
  success ends it, instead of once per request, and remembers a refusal for /ready.
- `write_refusal(database, table)` says, with one cheap query and no write, whether the database
  would refuse writes for a reason it can see (PostgreSQL: read-only, INSERT or UPDATE revoked).
"""

import logging
import math
import sqlite3
import threading
import time
from dataclasses import dataclass

from peewee import DatabaseError, InterfaceError, SqliteDatabase
from playhouse.pool import MaxConnectionsExceeded

# Every exception peewee raises for a database fault, and the pool's own.
DATABASE_ERRORS = (DatabaseError, InterfaceError, MaxConnectionsExceeded)

log = logging.getLogger("database")


def pool_settings(url, pool_size, timeout_seconds):
    """Each request borrows a pooled connection and gives it back, instead of paying for a new
    one; a connection the server dropped is thrown away rather than handed out again."""
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        # WAL lets readers and the writer work at once, synchronous=NORMAL makes a commit
        # cheap while staying durable across a crash of the service, and BEGIN IMMEDIATE
        # plus a busy timeout make concurrent writers queue instead of failing "locked".
        return f"sqlite+pool://{rest}", {
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
        return f"postgresql+pool://{rest}", {
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
    "is what happens when the plan's storage limit is exceeded (INSERT is revoked): delete old rows or "
    f"upgrade the plan, and writes resume within minutes; {NOTHING_STORED}",
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


def fault(exc):
    if isinstance(exc, MaxConnectionsExceeded):
        return NO_CONNECTION
    original = driver_error(exc)
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

    def failed(self, found, exc):
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

    def succeeded(self):
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
