"""Room without forgetting: archiving the oldest predictions to a file, on both backends. The
file holds them whole, the table no longer does, /stats over the whole history is what it was,
an archived id's label is an honest 404, and an interrupted archive goes on where it stopped;
on PostgreSQL, through a credential that may only read and delete."""

import shlex
import subprocess
import sys
from datetime import timedelta

import pandas as pd
import pytest
from playhouse.db_url import connect

from conftest import client_on_an_empty_table, import_app
from service import archive as archives
from test_aggregates import START, assert_totals_match_the_rows, insert, random_rows
from tools.example import EXAMPLE_DIR, REPO

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
BEFORE = START + timedelta(days=10)  # rows spread over three weeks from START: about half go
ROWS = 400


def filled(database_url):
    service = import_app(database_url)
    client = client_on_an_empty_table(service)
    database = connect(database_url)
    insert(database, random_rows(ROWS, seed=3))
    return service, client, database


def whole_history(client):
    """/stats over the whole history, without what a second later changes or archiving adds."""
    found = client.get("/stats").get_json()
    for part in (found["overall"], *found["by_model_version"].values()):
        part.pop("archived", None)
    return {key: value for key, value in found.items() if key != "as_of"}


def old_rows(database):
    param = database.param
    query = f"SELECT observation_id FROM prediction WHERE created_at < {param} ORDER BY id"
    return [row[0] for row in database.execute_sql(query, (BEFORE,)).fetchall()]


@BOTH
def test_an_archive_moves_the_old_rows_to_a_file_and_stats_stay_what_they_were(database_url, tmp_path):
    service, client, database = filled(database_url)
    before = whole_history(client)
    going = old_rows(database)
    path = tmp_path / "old.csv"

    said = archives.archive(database, "prediction", BEFORE, path)

    assert f"wrote {len(going):,} predictions" in said
    kept = pd.read_csv(path)  # as Step 3 or a notebook reads it
    assert kept["observation_id"].tolist() == going
    assert list(kept.columns) == list(archives.COLUMNS)
    assert old_rows(database) == []
    assert database.execute_sql("SELECT COUNT(*) FROM prediction").fetchone()[0] == ROWS - len(going)
    assert whole_history(client) == before
    assert client.get("/stats").get_json()["overall"]["archived"] == len(going)
    assert_totals_match_the_rows(database)
    refused = client.post("/update", json={"id": going[0], "true_class": 1})
    assert refused.status_code == 404
    assert "was archived on" in refused.get_json()["error"]
    assert str(path) in refused.get_json()["error"]
    database.close()
    service.DB.close_all()


@BOTH
def test_an_interrupted_archive_goes_on_where_it_stopped(database_url, tmp_path, monkeypatch):
    service, client, database = filled(database_url)
    before = whole_history(client)
    going = old_rows(database)
    path = tmp_path / "old.csv"
    moved = archives.move

    def one_batch_then_fail(*args):
        monkeypatch.setattr(archives, "move", fail)
        return moved(*args)

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(archives, "move", one_batch_then_fail)
    with pytest.raises(KeyboardInterrupt):
        archives.archive(database, "prediction", BEFORE, path, batch_rows=50)
    relabelled = going[-1]  # labelled after the file was written: it must stay
    param = database.param
    update = f"UPDATE prediction SET true_class = 1, updated_at = {param} WHERE observation_id = {param}"
    database.execute_sql(update, (BEFORE + timedelta(days=100), relabelled))
    monkeypatch.setattr(archives, "move", moved)

    said = archives.archive(database, "prediction", BEFORE, path, batch_rows=50)

    assert "was there already" in said
    assert "1 changed since the file was written and stay in the table" in said
    assert old_rows(database) == [relabelled]
    assert pd.read_csv(path)["observation_id"].tolist() == going  # written once
    after = whole_history(client)
    assert after["overall"]["predictions"] == before["overall"]["predictions"]
    assert_totals_match_the_rows(database)
    database.close()
    service.DB.close_all()


@pytest.mark.slow
def test_the_archive_command_runs_through_a_credential_that_may_only_read_and_delete(postgres, tmp_path):
    url = postgres.create_database("archived")
    service = import_app(url)
    database = connect(url)
    insert(database, random_rows(ROWS, seed=4))
    query = "SELECT COUNT(*) FROM prediction WHERE created_at < '2026-11-05'"
    going = database.execute_sql(query).fetchone()[0]
    database.close()
    service.DB.close_all()
    postgres.sql("DO $$ BEGIN CREATE ROLE deleter LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    postgres.sql(
        "GRANT SELECT, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO deleter", database="archived"
    )
    path = tmp_path / "by-the-restricted-credential.csv"
    command = [
        sys.executable,
        "-m",
        *shlex.split("flask --app app archive-predictions"),
        "--before",
        "2026-11-05",
    ]
    env = {
        "PATH": "/usr/bin:/bin",
        "ARTIFACTS_DIR": str(EXAMPLE_DIR),
        "DATABASE_URL": url.replace("postgres@", "deleter@"),
    }

    result = subprocess.run([*command, "--to", str(path)], cwd=REPO, env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert f"moved {going:,} out of the table now" in result.stdout
    assert len(pd.read_csv(path)) == going
    assert postgres.sql("SELECT COUNT(*) FROM archived_prediction", database="archived") == [(going,)]
