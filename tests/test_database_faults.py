"""database.classify() on the errors real drivers raise: what each means for the client."""

import pytest
from peewee import InterfaceError, PostgresqlDatabase, SqliteDatabase
from playhouse.pool import MaxConnectionsExceeded

from service import database


def raised_by(db, statement):
    """The peewee exception the statement raises."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 - which one is what the test inspects
        db.execute_sql(statement)
    db.close()
    return caught.value


def test_sqlite_read_only_file_is_a_read_only_refusal(tmp_path):
    path = tmp_path / "ro.db"
    SqliteDatabase(path).execute_sql("CREATE TABLE t (x INTEGER)")
    read_only = SqliteDatabase(f"file:{path}?mode=ro", uri=True)
    assert database.classify(raised_by(read_only, "INSERT INTO t VALUES (1)")) is database.READ_ONLY


def test_sqlite_sql_mistake_is_a_bug(tmp_path):
    db = SqliteDatabase(tmp_path / "bug.db")
    assert database.classify(raised_by(db, "SELECT nope FROM nowhere")) is database.BUG


@pytest.fixture
def pg_database(postgres):
    postgres.create_database("faults")
    postgres.sql("DO $$ BEGIN CREATE ROLE reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    postgres.sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)", database="faults")
    return postgres


def test_postgres_read_only_transaction_is_a_read_only_refusal(pg_database):
    db = PostgresqlDatabase("faults", host="127.0.0.1", port=pg_database.port, user="postgres")
    db.execute_sql("SET default_transaction_read_only = on")
    assert database.classify(raised_by(db, "INSERT INTO t VALUES (1)")) is database.READ_ONLY


def test_postgres_missing_privilege_is_a_permission_refusal(pg_database):
    db = PostgresqlDatabase("faults", host="127.0.0.1", port=pg_database.port, user="reader")
    assert database.classify(raised_by(db, "INSERT INTO t VALUES (1)")) is database.PERMISSION_DENIED


def test_postgres_sql_mistake_is_a_bug(pg_database):
    db = PostgresqlDatabase("faults", host="127.0.0.1", port=pg_database.port, user="postgres")
    assert database.classify(raised_by(db, "SELECT nope FROM t")) is database.BUG


def test_postgres_nobody_listening_is_unavailable(pg_database):
    from tools.servers import free_port

    db = PostgresqlDatabase("faults", host="127.0.0.1", port=free_port(), user="postgres", connect_timeout=2)
    assert database.classify(raised_by(db, "SELECT 1")) is database.UNAVAILABLE


def test_an_exhausted_pool_and_peewees_own_misuse_are_told_apart():
    assert database.classify(MaxConnectionsExceeded("no connection")) is database.NO_CONNECTION
    assert database.classify(InterfaceError("Query must be bound to a database")) is database.BUG
