"""What a stored prediction costs on disk when clients send long non-ASCII text.

For SQLite and PostgreSQL it starts the service as deployed on a fresh database and sends
--requests predictions, each carrying 30 KB of non-ASCII text in a field the model doesn't use
and a 1,000-character non-ASCII Cabin (the longest MAX_STRING_CHARS allows), then prints the
table's size per row.

    python -m tools.bench.storage [--requests 1000]
"""

import argparse
import sqlite3
import tempfile
from pathlib import Path

import requests

from tools.servers import EXAMPLE_OBSERVATION, LiveServer, PostgresServer, postgres_bindir


def send(server, count):
    session = requests.Session()
    for observation_id in range(count):
        observation = dict(EXAMPLE_OBSERVATION, Cabin="\u00e9\u4e2d" * 500, notes="\u4e2d\u6587" * 5_000)
        response = session.post(
            f"{server.base}/predict", json={"id": observation_id, "observation": observation}
        )
        assert response.status_code == 200, response.text


def sqlite_bytes(path):
    """The whole file, once the write-ahead log is folded in: the table, its indexes, the schema."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Path(path).stat().st_size


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    print("| backend | requests | body bytes each | bytes per row (table and indexes) |")
    print("|---|---:|---:|---:|")
    body = len(
        str(dict(EXAMPLE_OBSERVATION, Cabin="\u00e9\u4e2d" * 500, notes="\u4e2d\u6587" * 5_000)).encode()
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = f"{scratch}/storage.db"
        with LiveServer(f"sqlite:///{path}") as server:
            send(server, args.requests)
        print(f"| sqlite | {args.requests} | ~{body:,} | {sqlite_bytes(path) / args.requests:,.0f} |")
    bindir = postgres_bindir()
    if bindir is not None:
        postgres = PostgresServer(bindir)
        try:
            with LiveServer(postgres.create_database("storage")) as server:
                send(server, args.requests)
            [(size,)] = postgres.sql("SELECT pg_total_relation_size('prediction')", database="storage")
            print(f"| postgresql | {args.requests} | ~{body:,} | {size / args.requests:,.0f} |")
        finally:
            postgres.destroy()


if __name__ == "__main__":
    main()
