"""The running totals behind /stats (service/monitoring/), on both backends: the triggers keep them
equal to a recount of the rows through inserts, label corrections, other updates and deletes,
at any concurrency; a window's pieces add up to the window's rows; an upgrade fills them in."""

import math
import random
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import numpy as np
import pytest
import requests
from playhouse.db_url import connect
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from conftest import import_app
from service.monitoring import periods, tables, windows
from service.monitoring import reports as monitoring
from service.monitoring.histogram import Histogram
from tools.servers import EXAMPLE_OBSERVATION

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
START = datetime(2026, 10, 26, 7, 30)  # a Monday morning; rows spread over three weeks from it


def recount(database):
    """stats_hour and stats_bin as they must be, computed here from the prediction rows and the
    archived ones (counted in the totals, and as archived)."""
    rows = database.execute_sql(
        "SELECT model_version, created_at, proba, true_class, 0 FROM prediction UNION ALL "
        "SELECT model_version, created_at, proba, true_class, 1 FROM archived_prediction"
    ).fetchall()
    hours, bins = defaultdict(Counter), defaultdict(Counter)
    for version, created_at, proba, true_class, archived in rows:
        if isinstance(created_at, str):
            created_at = datetime.fromisoformat(created_at)
        hour = -1 if created_at is None else math.floor((created_at - periods.EPOCH).total_seconds() / 3600)
        totals = hours[version, hour]
        totals["predictions"] += 1
        totals["archived"] += archived
        if true_class is None:
            continue
        totals["labelled"] += 1
        totals["positives"] += true_class == 1
        fine = min(int(proba * periods.FINE_BINS), periods.FINE_BINS - 1)
        for level, period, bin in [
            (periods.ALL, 0, fine),
            (periods.WEEK, -1 if hour < 0 else hour // 168, fine),
            (periods.DAY, -1 if hour < 0 else hour // 24, fine),
            (periods.HOUR, hour, fine),
            (periods.DAY_COARSE, -1 if hour < 0 else hour // 24, fine // 100),
            (periods.HOUR_COARSE, hour, fine // 100),
        ]:
            bins[level, period, version, bin]["positives" if true_class == 1 else "negatives"] += 1
    return hours, bins


def stored(database):
    hours = {
        (version, hour): Counter(
            predictions=int(n), labelled=int(labelled), positives=int(positives), archived=int(archived)
        )
        for version, hour, n, labelled, positives, archived in database.execute_sql(
            "SELECT model_version, hour, predictions, labelled, positives, archived FROM stats_hour"
        ).fetchall()
    }
    bins = {
        (level, period, version, bin): Counter(positives=int(pos), negatives=int(neg))
        for level, period, version, bin, pos, neg in database.execute_sql(
            "SELECT level, period, model_version, bin, positives, negatives FROM stats_bin"
        ).fetchall()
    }
    return hours, bins


def assert_totals_match_the_rows(database):
    expected_hours, expected_bins = recount(database)
    hours, bins = stored(database)
    # A cell whose rows have all gone stays, with zeros: Counter equality ignores them.
    assert {key: +value for key, value in hours.items() if +value} == {
        key: value for key, value in expected_hours.items()
    }
    assert {key: +value for key, value in bins.items() if +value} == dict(expected_bins)


def fresh_database(database_url):
    service = import_app(database_url)
    service.DB.close_all()
    return connect(database_url)


def insert(database, rows):
    """rows: (observation_id, proba, true_class, model_version, created_at)."""
    param = database.param
    values = ", ".join([f"({param}, '{{}}', {param}, {param}, {param}, {param}, {param})"] * len(rows))
    flat = [value for row in rows for value in (*row, row[-1])]
    database.execute_sql(
        "INSERT INTO prediction (observation_id, observation, proba, true_class, model_version, created_at, "
        f"updated_at) VALUES {values}",
        flat,
    )


def random_rows(count, first_id=0, seed=0):
    rng = random.Random(seed)
    return [
        (
            first_id + i,
            rng.random(),
            rng.choice([0, 1, None]),
            rng.choice(["version_a", "version_b"]),
            None if rng.random() < 0.05 else START + timedelta(seconds=rng.randrange(21 * 24 * 3600)),
        )
        for i in range(count)
    ]


def every(n, rows=600):
    return f"observation_id IN ({', '.join(str(i) for i in range(0, rows, n))})"


@BOTH
def test_totals_follow_inserts_label_corrections_other_updates_and_deletes(database_url):
    database = fresh_database(database_url)
    param = database.param
    insert(database, random_rows(600))
    assert_totals_match_the_rows(database)
    for observation_id in range(0, 600, 3):  # a label, a corrected label, a label removed
        database.execute_sql(
            f"UPDATE prediction SET true_class = {param} WHERE observation_id = {param}",
            (observation_id % 2, observation_id),
        )
    database.execute_sql(f"UPDATE prediction SET true_class = 1 - true_class WHERE {every(5)}")
    database.execute_sql(f"UPDATE prediction SET true_class = NULL WHERE {every(7)}")
    database.execute_sql(f"UPDATE prediction SET created_at = {param} WHERE {every(11)}", (START,))
    database.execute_sql(
        f"UPDATE prediction SET proba = proba / 2, model_version = 'version_c' WHERE {every(13)}"
    )
    database.execute_sql(f"UPDATE prediction SET updated_at = {param}", (START,))  # moves nothing
    database.execute_sql(f"DELETE FROM prediction WHERE {every(17)}")
    assert_totals_match_the_rows(database)
    database.execute_sql("DELETE FROM prediction")
    assert_totals_match_the_rows(database)
    database.close()


@BOTH
def test_totals_stay_equal_to_the_rows_under_concurrent_writers(database_url):
    database = fresh_database(database_url)
    insert(database, [(i, i / 400, None, "version_a", START + timedelta(minutes=i)) for i in range(400)])
    database.close()

    def relabel(seed):
        options = {"pragmas": {"busy_timeout": 30_000}} if database_url.startswith("sqlite") else {}
        writer = connect(database_url, **options)
        rng = random.Random(seed)
        update = "UPDATE prediction SET true_class = {0} WHERE observation_id = {0}".replace(
            "{0}", writer.param
        )
        for _ in range(150):  # the same few rows, so writers collide on rows and on cells
            with writer.atomic():
                writer.execute_sql(update, (rng.choice([0, 1, None]), rng.randrange(40)))
        writer.close()

    threads = [threading.Thread(target=relabel, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    database = connect(database_url)
    assert_totals_match_the_rows(database)
    database.close()


@BOTH
def test_a_window_read_from_pieces_equals_the_rows_of_the_window(database_url):
    database = fresh_database(database_url)
    rows = random_rows(3000, seed=1)
    insert(database, rows)
    start_hour = math.floor((START - periods.EPOCH).total_seconds() / 3600)
    # Window starts at a week's, a day's and an hour's start, mid-day, mid-week, before and after all rows.
    for offset in [-200, -7, 0, 1, 16, 17, 23, 24, 100, 160, 161, 168, 200, 333, 500, 503, 600]:
        first_hour = start_hour + offset
        by_day = windows.day_tables(database, first_hour // 24)  # as /stats reads them
        histograms = windows.histograms_since(database, first_hour, by_day, windows.PeriodCache(0))
        for version in ("version_a", "version_b"):
            expected = np.zeros((2, periods.FINE_BINS), dtype=int)
            for _, proba, true_class, row_version, created_at in rows:
                in_window = created_at is not None and created_at >= periods.hour_start(first_hour)
                if row_version == version and true_class is not None and in_window:
                    expected[1 - true_class, min(int(proba * periods.FINE_BINS), periods.FINE_BINS - 1)] += 1
            found = histograms.get(version, Histogram())
            assert (found.positives == expected[0]).all(), (offset, version)
            assert (found.negatives == expected[1]).all(), (offset, version)
    database.close()


def exact_quality(database, version=None):
    """The figures /stats must give, from the labelled rows, by scikit-learn."""
    where = "" if version is None else f"AND model_version = '{version}'"
    rows = database.execute_sql(
        f"SELECT proba, true_class FROM prediction WHERE true_class IS NOT NULL {where}"
    ).fetchall()
    probas, truth = np.array([row[0] for row in rows]), np.array([row[1] for row in rows])
    return {
        "labelled": len(rows),
        "roc_auc": roc_auc_score(truth, probas),
        "log_loss": log_loss(truth, probas),
        "brier_score": brier_score_loss(truth, probas),
        "observed_positive_rate": truth.mean(),
        "predicted_positive_rate": probas.mean(),
    }


def assert_stats_equal_the_rows(summary, exact):
    assert summary["labelled"] == exact["labelled"]
    shown_to_6_places = 1e-6
    assert abs(summary["roc_auc"] - exact["roc_auc"]) <= summary["roc_auc_max_error"] + shown_to_6_places
    assert summary["roc_auc_max_error"] <= 1e-4
    for name in ("log_loss", "brier_score", "observed_positive_rate", "predicted_positive_rate"):
        assert summary[name] == pytest.approx(exact[name], abs=1e-6), name


@BOTH
def test_stats_equal_the_rows_after_concurrent_predictions_and_corrected_labels(database_url, live_server):
    server = live_server(database_url, workers=2)
    rng = random.Random(5)
    ids = list(range(300))

    def client(part):
        session = requests.Session()
        for i in ids[part::6]:
            age = rng.uniform(1, 80)
            response = session.post(
                f"{server.base}/predict",
                json={"id": i, "observation": dict(EXAMPLE_OBSERVATION, Age=age)},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            for label in [1, 0] if i % 4 == 0 else [i % 2]:  # every fourth label corrected
                response = session.post(
                    f"{server.base}/update", json={"id": i, "true_class": label}, timeout=30
                )
                assert response.status_code == 200, response.text

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(client, range(6)))  # re-raises a client's failed assertion

    stats = requests.get(f"{server.base}/stats", timeout=30).json()
    database = connect(database_url)
    assert_totals_match_the_rows(database)
    assert stats["overall"]["predictions"] == 300
    assert_stats_equal_the_rows(stats["overall"], exact_quality(database))
    database.close()


CACHE = windows.PeriodCache(32 * 2**20)  # as a worker's, for the reports read in-process here


def reports(database, now):
    """/stats for the whole history and windows whose pieces are weeks, days and hours, and
    /stats/series per day and per hour."""
    found = {}
    for hours in (None, 5, 24, 30, 200, 400):
        report = monitoring.stats_report(database, "prediction", CACHE, hours, now)
        found[hours] = {key: value for key, value in report.items() if key != "as_of"}
    for every, hours in (("day", 720), ("hour", 400)):
        report = monitoring.series_report(database, CACHE, every, hours, now)
        found[every] = {key: value for key, value in report.items() if key != "as_of"}
    return found


def cold_reports(database, now):
    CACHE.clear()
    return reports(database, now)


@BOTH
def test_cached_periods_are_used_only_while_their_rows_are_unchanged(database_url):
    database = fresh_database(database_url)
    param = database.param
    insert(database, random_rows(3000, seed=7))
    now = START + timedelta(days=21)
    first = cold_reports(database, now)
    CACHE.reads = 0
    assert reports(database, now) == first
    assert CACHE.reads == 0  # nothing changed: every period from the cache
    changes = [
        (f"UPDATE prediction SET true_class = 1 - true_class WHERE {every(97, 3000)}", ()),  # corrected
        (f"UPDATE prediction SET true_class = NULL WHERE {every(89, 3000)}", ()),  # withdrawn
        (f"UPDATE prediction SET true_class = 1 WHERE observation_id = {param}", (5,)),  # one, long ago
        (f"UPDATE prediction SET proba = proba / 3 WHERE {every(83, 3000)}", ()),
        (f"UPDATE prediction SET created_at = {param} WHERE {every(79, 3000)}", (START,)),
        (f"UPDATE prediction SET model_version = 'version_c' WHERE {every(73, 3000)}", ()),
        (f"DELETE FROM prediction WHERE {every(71, 3000)}", ()),
    ]
    for statement, params in changes:
        database.execute_sql(statement, params)
        CACHE.reads = 0
        warm = reports(database, now)
        assert CACHE.reads > 0, statement
        assert warm == cold_reports(database, now), statement
    assert_stats_equal_the_rows(warm[None]["overall"], exact_quality(database))
    tables.install(database, "prediction")  # rebuilt: a new generation, nothing cached passes
    assert reports(database, now) == warm
    database.execute_sql("DELETE FROM prediction")
    insert(database, random_rows(500, seed=8))
    assert reports(database, now) == cold_reports(database, now)
    database.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_truncated_table_starts_a_new_generation_of_cached_periods(database_url):
    database = fresh_database(database_url)
    rows = random_rows(300, seed=9)
    insert(database, rows)
    now = START + timedelta(days=21)
    reports(database, now)
    database.execute_sql("TRUNCATE prediction")  # the counts of changes start again from zero
    insert(database, [(i, 1 - proba, *rest) for i, proba, *rest in rows])  # as many changes, other cells
    assert reports(database, now) == cold_reports(database, now)
    database.close()
