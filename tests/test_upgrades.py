"""Databases made by earlier code: the tutorial's table and this repository's first release,
upgraded in place at start-up with every row intact and servable; schemas that can't be used
stop start-up."""

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest
import requests
from peewee import (
    BigIntegerField,
    CharField,
    DateTimeField,
    DoubleField,
    FloatField,
    IntegerField,
    Model,
    TextField,
)
from playhouse.db_url import connect
from test_comparison import from_counts

from conftest import import_app
from service.migrations import CURRENT_VERSION
from service.monitoring import pairs, population
from service.monitoring import tables as totals
from service.monitoring.periods import SQLITE, dialect_of
from test_aggregates import assert_stats_equal_the_rows, assert_totals_match_the_rows, exact_quality
from test_drift import assert_counts_match_the_rows, bins_of
from tools.servers import EXAMPLE_OBSERVATION

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
ROWS = 12  # ids 0..11; the even ones labelled


class TutorialPrediction(Model):
    """The tutorial's model definition, verbatim (README, "ORMs and peewee")."""

    observation_id = IntegerField(unique=True)
    observation = TextField()
    proba = FloatField()
    true_class = IntegerField(null=True)

    class Meta:
        table_name = "prediction"


class FirstReleasePrediction(Model):
    """This repository's first release (4318b00 to 60df880)."""

    observation_id = BigIntegerField(unique=True)
    observation = TextField()
    proba = DoubleField()
    true_class = IntegerField(null=True)
    model_version = CharField(max_length=16)
    created_at = DateTimeField(index=True)
    updated_at = DateTimeField()

    class Meta:
        table_name = "prediction"


def observation(i):
    return dict(EXAMPLE_OBSERVATION, Age=20.0 + i, Cabin=None if i % 3 else "C85")


def tutorial_row(i):
    """As the tutorial stored it: the raw request body (here with the bare NaN some clients send)."""
    body = json.dumps({"id": i, "observation": observation(i)}).replace("null", "NaN")
    return {
        "observation_id": i,
        "observation": body,
        "proba": 0.1 + i / 100,
        "true_class": i % 4 // 2 if i % 2 == 0 else None,
    }


def first_release_row(i):
    from datetime import datetime

    when = datetime(2026, 11, 26, 12, i)
    return {
        "observation_id": i,
        "observation": json.dumps(observation(i)),  # the first release's stored form
        "proba": 0.1 + i / 100,
        "true_class": i % 4 // 2 if i % 2 == 0 else None,
        "model_version": "0123456789ab",
        "created_at": when,
        "updated_at": when,
    }


def make_old_database(url, model, row):
    database = connect(url)
    with database.bind_ctx([model]):
        database.create_tables([model])
        model.insert_many([row(i) for i in range(ROWS)]).execute()
    database.close()


def table_rows(url):
    database = connect(url)
    columns = "observation_id, observation, proba, true_class"
    rows = database.execute_sql(f"SELECT id, {columns} FROM prediction ORDER BY id").fetchall()
    database.close()
    return rows


def column_values(url, sql):
    database = connect(url)
    cursor = database.execute_sql(sql)
    values = cursor.fetchall() if cursor.description else None
    database.close()
    return values


def same_rows(before, after, is_postgres):
    """Row for row equal; the tutorial's REAL proba on PostgreSQL was 4 bytes, and stays that number."""
    if not is_postgres:
        return before == after
    as_stored = [(*row[:3], float(np.float32(row[3])), row[4]) for row in before]
    return as_stored == [(*row[:3], float(np.float32(row[3])), row[4]) for row in after]


def post(server, path, body):
    return requests.post(f"{server.base}{path}", json=body, timeout=30)


@BOTH
@pytest.mark.parametrize("old", ["tutorial", "first_release"])
def test_an_old_table_is_upgraded_in_place_and_every_row_still_served(database_url, old, live_server):
    model, row = (
        (TutorialPrediction, tutorial_row)
        if old == "tutorial"
        else (FirstReleasePrediction, first_release_row)
    )
    make_old_database(database_url, model, row)
    before = table_rows(database_url)

    server = live_server(database_url)

    found = 0 if old == "tutorial" else 1
    assert f"upgraded the schema in place from version {found} to {CURRENT_VERSION}" in server.output()
    after = table_rows(database_url)
    assert len(after) == ROWS
    assert same_rows(before, after, database_url.startswith("postgresql"))
    versions = column_values(database_url, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(version,) for version in range(found + 1, CURRENT_VERSION + 1)]
    # A retry of an old id with the same observation answers the stored proba; another is a 409.
    for i in range(ROWS):
        retry = post(server, "/predict", {"id": i, "observation": observation(i)})
        assert retry.status_code == 200, retry.text
        assert retry.json()["proba"] == pytest.approx(after[i][3])
    conflict = post(server, "/predict", {"id": 1, "observation": observation(2)})
    assert conflict.status_code == 409
    # Old rows can be labelled; a new id past 32 bits is stored beside them.
    labelled = post(server, "/update", {"id": 1, "true_class": 1})
    assert labelled.status_code == 200
    assert labelled.json()["true_class"] == 1
    assert post(server, "/predict", {"id": 2**40, "observation": EXAMPLE_OBSERVATION}).status_code == 200
    assert len(table_rows(database_url)) == ROWS + 1
    database = connect(database_url)
    assert_totals_match_the_rows(database)  # filled by the upgrade, kept by the triggers since
    database.close()


@BOTH
def test_an_upgrade_from_version_2_fills_the_running_totals_from_the_rows(database_url, live_server):
    service = import_app(database_url)
    service.Prediction.insert_many(hourly_rows(service)).execute()
    with service.DB.atomic():  # what version 2 had: no totals, no triggers
        drop_triggers(service.DB, database_url)
        back_to_version_5(service.DB, database_url)
        for table in ("stats_hour", "stats_bin", "stats_generation", "archive", "archived_prediction"):
            service.DB.execute_sql(f"DROP TABLE {table}")
        record_version(service.DB, 2)
    service.DB.close_all()

    server = live_server(database_url)

    assert f"upgraded the schema in place from version 2 to {CURRENT_VERSION}" in server.output()
    assert_stats_right_after_the_upgrade(server, database_url)


@BOTH
def test_an_upgrade_from_version_3_counts_changes_from_then_on(database_url, live_server):
    service = import_app(database_url)
    service.Prediction.insert_many(hourly_rows(service)).execute()
    with service.DB.atomic():  # version 3 had the totals, without labelled_changes or a generation
        back_to_version_4(service.DB, database_url)
        service.DB.execute_sql("ALTER TABLE stats_hour DROP COLUMN labelled_changes")
        service.DB.execute_sql("DROP TABLE stats_generation")
        record_version(service.DB, 3)
    service.DB.close_all()

    server = live_server(database_url, env={"STATS_MAX_AGE_SECONDS": "0"})  # every /stats afresh

    assert f"upgraded the schema in place from version 3 to {CURRENT_VERSION}" in server.output()
    assert_stats_right_after_the_upgrade(server, database_url)
    before = requests.get(f"{server.base}/stats", timeout=30).json()
    for i in range(0, 200, 4):  # labels for old predictions: cached periods must not outlive them
        assert post(server, "/update", {"id": i, "true_class": 1}).status_code == 200
    after = requests.get(f"{server.base}/stats", timeout=30).json()
    assert after["overall"]["labelled"] == before["overall"]["labelled"] + 50
    assert_stats_right_after_the_upgrade(server, database_url)


@BOTH
def test_an_upgrade_from_version_4_keeps_the_totals_and_adds_the_archive(database_url, live_server):
    service = import_app(database_url)
    service.Prediction.insert_many(hourly_rows(service)).execute()
    with service.DB.atomic():  # version 4: no archive, no archived count, triggers of its own
        back_to_version_4(service.DB, database_url)
        record_version(service.DB, 4)
    service.DB.close_all()

    server = live_server(database_url)

    assert f"upgraded the schema in place from version 4 to {CURRENT_VERSION}" in server.output()
    database = connect(database_url)
    assert totals.installed(database, "prediction")
    database.close()
    assert_stats_right_after_the_upgrade(server, database_url)


@BOTH
def test_an_upgrade_from_version_5_counts_every_probability_and_bins_features_from_then_on(
    database_url, live_server
):
    service = import_app(database_url)
    service.Prediction.insert_many(hourly_rows(service)).execute()
    with service.DB.atomic():  # version 5: no feature bins, no population counts
        back_to_version_5(service.DB, database_url)
        record_version(service.DB, 5)
    service.DB.close_all()

    server = live_server(database_url)

    assert f"upgraded the schema in place from version 5 to {CURRENT_VERSION}" in server.output()
    assert_stats_right_after_the_upgrade(server, database_url)
    assert post(server, "/predict", {"id": 2**40, "observation": EXAMPLE_OBSERVATION}).status_code == 200
    drift = requests.get(f"{server.base}/drift", timeout=30).json()["by_model_version"]
    assert drift["version_0"]["rows"] == 0  # an earlier model's, with no profile: nothing to compare
    assert "no training profile" in drift["version_0"]["message"]
    running = requests.get(f"{server.base}/model", timeout=30).json()["model_version"]
    assert drift[running]["rows"] == drift[running]["predictions"] == 1  # binned from the upgrade on


@BOTH
def test_an_upgrade_from_version_7_adds_the_challenger_s_columns_empty(database_url, live_server):
    server = upgraded(database_url, live_server, 7, back_to_version_7)

    found = column_values(
        database_url, "SELECT count(*), count(challenger_proba), count(challenger_version) FROM prediction"
    )
    assert found == [(200, 0, 0)]
    assert post(server, "/predict", {"id": 2**40, "observation": EXAMPLE_OBSERVATION}).status_code == 200


@BOTH
def test_an_upgrade_from_version_8_counts_the_pairs_already_scored(database_url, live_server):
    rows = []

    def with_a_challenger(service):  # beside version_1, failing on one row
        rows.extend(hourly_rows(service))
        for i, row in enumerate(rows):
            beside = row["model_version"] == "version_1"
            row["challenger_version"] = "challenger01" if beside else None
            row["challenger_proba"] = (i % 13) / 13 if beside and i != 7 else None
        return rows

    server = upgraded(database_url, live_server, 8, back_to_version_8, with_a_challenger)

    [found] = requests.get(f"{server.base}/compare", timeout=30).json()["comparisons"]
    assert (found["model_version"], found["scored"], found["challenger_failed"]) == ("version_1", 100, 1)
    labelled = [
        row for row in rows if row.get("challenger_proba") is not None and row["true_class"] is not None
    ]
    truth, probas, shadow = (
        np.array([row[name] for row in labelled]) for name in ("true_class", "proba", "challenger_proba")
    )
    expected = from_counts(truth, probas, shadow)
    assert found["pairs"] == expected["pairs"] == len(labelled)
    for name, figures in expected["metrics"].items():
        assert found["metrics"][name]["interval"] == pytest.approx(figures["interval"], abs=1e-9)


def upgraded(database_url, live_server, version, back_to, rows=None):
    """A live server started on a database of `rows(service)` (hourly_rows) taken back to
    `version`: it upgrades."""
    service = import_app(database_url)
    service.Prediction.insert_many((rows or hourly_rows)(service)).execute()
    with service.DB.atomic():
        back_to(service.DB)
        record_version(service.DB, version)
    service.DB.close_all()
    server = live_server(database_url)
    assert f"upgraded the schema in place from version {version} to {CURRENT_VERSION}" in server.output()
    return server


def record_version(database, version):
    database.execute_sql("DELETE FROM schema_version")
    values = f"({version}, '2026-01-01', 'an earlier release')"
    database.execute_sql(f"INSERT INTO schema_version (version, applied_at, description) VALUES {values}")


def back_to_version_8(database):
    """What version 9 added, taken away."""
    on_table = "" if dialect_of(database) is SQLITE else " ON prediction"
    for name in totals.PAIRS_TRIGGERS:
        database.execute_sql(f"DROP TRIGGER IF EXISTS {name}{on_table}")
    for table in pairs.TABLE_NAMES:
        database.execute_sql(f"DROP TABLE IF EXISTS {table}")


def back_to_version_7(database):
    """What versions 8 and 9 added, taken away."""
    back_to_version_8(database)
    for table in ("prediction", "archived_prediction"):
        for column in ("challenger_proba", "challenger_version"):
            database.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")


def back_to_version_5(database, database_url):
    """What versions 6 to 8 added, taken away (the triggers too: the caller's version makes its own)."""
    back_to_version_7(database)
    drop_triggers(database, database_url)
    for table in (*population.COUNT_TABLES, "feature_position", "model_profile"):
        database.execute_sql(f"DROP TABLE {table}")
    for table in ("prediction", "archived_prediction"):
        database.execute_sql(f"ALTER TABLE {table} DROP COLUMN feature_bins")


def back_to_version_4(database, database_url):
    """What versions 5 to 8 added, taken away."""
    back_to_version_5(database, database_url)
    for table in ("archive", "archived_prediction"):
        database.execute_sql(f"DROP TABLE {table}")
    database.execute_sql("ALTER TABLE stats_hour DROP COLUMN archived")


def drop_triggers(database, database_url):
    for trigger in totals.TRIGGER_NAMES:
        on_table = "" if database_url.startswith("sqlite") else " ON prediction"
        database.execute_sql(f"DROP TRIGGER IF EXISTS {trigger}{on_table}")


def assert_stats_right_after_the_upgrade(server, database_url):
    database = connect(database_url)
    assert_totals_match_the_rows(database)
    assert totals.installed(database, "prediction")
    assert_counts_match_the_rows(database)  # the population's counts too
    stats = requests.get(f"{server.base}/stats", timeout=30).json()
    assert stats["overall"]["predictions"] == 200
    for version in ("version_0", "version_1"):
        assert_stats_equal_the_rows(stats["by_model_version"][version], exact_quality(database, version))
        probas = [
            proba
            for (proba,) in column_values(
                database_url, f"SELECT proba FROM prediction WHERE model_version = '{version}'"
            )
        ]
        expected = bins_of(probas).expected_roc_auc()
        assert stats["by_model_version"][version]["expected_roc_auc"] == pytest.approx(expected, abs=1e-6)
    database.close()


def hourly_rows(service):
    return [
        {
            "observation_id": i,
            "observation": "{}",
            "proba": (i % 17) / 17,
            "true_class": i % 3 % 2 if i % 4 else None,
            "model_version": f"version_{i % 2}",
            "created_at": service.utc_now() - timedelta(hours=i),
        }
        for i in range(200)
    ]


@BOTH
def test_tutorial_rows_show_in_stats_as_unrecorded_with_no_timestamps(database_url, live_server):
    make_old_database(database_url, TutorialPrediction, tutorial_row)
    server = live_server(database_url)

    row = post(server, "/update", {"id": 1, "true_class": 1}).json()
    assert (row["model_version"], row["created_at"]) == ("unrecorded", None)
    assert row["updated_at"] is not None  # the label's time is known
    stats = requests.get(f"{server.base}/stats", timeout=30).json()
    assert stats["by_model_version"]["unrecorded"]["predictions"] == ROWS
    assert stats["by_model_version"]["unrecorded"]["labelled"] == 7  # 6 in the tutorial, 1 now
    windowed = requests.get(f"{server.base}/stats?hours=24", timeout=30).json()
    assert "unrecorded" not in windowed["by_model_version"]  # made at an unknown time


@BOTH
def test_instances_starting_together_on_an_old_database_upgrade_it_once(database_url, live_server):
    make_old_database(database_url, TutorialPrediction, tutorial_row)
    with ThreadPoolExecutor(max_workers=3) as pool:
        servers = list(pool.map(lambda _: live_server(database_url), range(3)))

    logs = [server.output() for server in servers]
    assert sum("upgraded the schema in place" in log for log in logs) == 1
    assert sum("database:" in log for log in logs) == 1  # the others found nothing to do
    assert column_values(database_url, "SELECT version FROM schema_version ORDER BY version") == [
        (version,) for version in range(1, CURRENT_VERSION + 1)
    ]
    assert len(table_rows(database_url)) == ROWS


@BOTH
def test_the_upgrade_runs_once_and_then_is_a_no_op(database_url):
    make_old_database(database_url, TutorialPrediction, tutorial_row)
    for _ in range(2):
        service = import_app(database_url)
        service.DB.close_all()
    assert column_values(database_url, "SELECT version FROM schema_version ORDER BY version") == [
        (version,) for version in range(1, CURRENT_VERSION + 1)
    ]


@BOTH
def test_running_totals_dropped_by_hand_are_rebuilt_at_start_up(database_url, live_server):
    service = import_app(database_url)
    service.Prediction.insert_many(
        [
            {
                "observation_id": i,
                "observation": "{}",
                "proba": i / 10,
                "true_class": i % 2,
                "model_version": "v",
            }
            for i in range(10)
        ]
    ).execute()
    service.DB.execute_sql("DROP TABLE stats_bin")
    service.DB.close_all()

    server = live_server(database_url)

    assert "the running totals were missing and are rebuilt from the rows" in server.output()
    database = connect(database_url)
    assert_totals_match_the_rows(database)
    database.close()
    assert (
        requests.get(f"{server.base}/stats", timeout=30).json()["overall"]["roc_auc"] == 0.6
    )  # 15 of 25 pairs ranked right


@POSTGRES
def test_a_failed_upgrade_changes_nothing_and_says_what_to_do(database_url):
    make_old_database(database_url, TutorialPrediction, tutorial_row)
    view = "CREATE VIEW confident AS SELECT * FROM prediction WHERE proba > 0.9"
    column_values(database_url, view)  # PostgreSQL can't change the type of a column a view uses

    with pytest.raises(
        RuntimeError, match="upgrading the schema to version 1 failed, and nothing was changed"
    ):
        import_app(database_url)

    columns = column_values(
        database_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'prediction'"
    )
    assert sorted(name for (name,) in columns) == sorted(
        ["id", "observation_id", "observation", "proba", "true_class"]
    )
    assert column_values(database_url, "SELECT to_regclass('schema_version')") == [(None,)]


@BOTH
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "ALTER TABLE prediction RENAME COLUMN proba TO probability",
            "which is neither the tutorial's table",
        ),
        (
            "INSERT INTO schema_version VALUES (99, '2030-01-01', 'from the future')",
            f"newer than this code's {CURRENT_VERSION}",
        ),
    ],
)
def test_a_schema_the_service_cannot_use_stops_start_up(database_url, damage, message):
    service = import_app(database_url)
    service.DB.close_all()
    if "RENAME" in damage:
        column_values(database_url, "DROP TABLE schema_version")
    column_values(database_url, damage)
    with pytest.raises(RuntimeError, match=message):
        import_app(database_url)


def test_a_column_of_the_wrong_type_stops_start_up(tmp_path):
    url = f"sqlite:///{tmp_path}/typed.db"
    service = import_app(url)
    service.DB.close_all()
    with sqlite3.connect(tmp_path / "typed.db") as conn:
        # SQLite won't drop a column its triggers use.
        for trigger in totals.SQLITE_TRIGGERS | totals.PAIRS_TRIGGERS:
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("ALTER TABLE prediction DROP COLUMN model_version")
        conn.execute("ALTER TABLE prediction ADD COLUMN model_version BLOB")
    with pytest.raises(
        RuntimeError, match=r"column prediction.model_version is blob, and this service needs one of"
    ):
        import_app(url)
