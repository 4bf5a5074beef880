"""How the service talks to its database, whichever backend DATABASE_URL names.

Contract:
- `pool_settings(url, pool_size, timeout_seconds)` -> (url, options) for
  `playhouse.db_url.connect`: a pooled SQLite or PostgreSQL database (postgres:// is Heroku's
  spelling), or a RuntimeError naming the schemes it takes.
- `add_missing_functions(database)` gives SQLite the ln() that /stats' SQL uses where its build
  lacks the math functions.
- `create_tables(database, models)` creates missing tables once, and on PostgreSQL under an
  advisory lock, so that instances starting together on an empty database take turns.
- `UNAVAILABLE` is the exceptions that mean the database is away (down, unreachable, no free
  connection in the pool): the request may be retried later.
"""

import math
import sqlite3

from peewee import InterfaceError, OperationalError, SqliteDatabase
from playhouse.pool import MaxConnectionsExceeded

UNAVAILABLE = (OperationalError, InterfaceError, MaxConnectionsExceeded)


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


def create_tables(database, models):
    """Create the tables once, before gunicorn forks its workers.

    On PostgreSQL a transaction-scoped advisory lock makes instances that start together
    on an empty database take turns instead of colliding in the catalog.
    """
    with database.connection_context(), database.atomic():
        if not isinstance(database, SqliteDatabase):
            database.execute_sql("SELECT pg_advisory_xact_lock(hashtext('create_tables'))")
        database.create_tables(models, safe=True)
