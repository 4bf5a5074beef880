"""The second model's whole loop, as a user lives it, through gunicorn as deployed: serve the
model, replay some passengers with their outcomes, retrain on them (`make retrain`), deploy the
result as a challenger, replay the rest, read /compare, promote (`make promote`), keep serving.
Every acknowledged prediction is stored once, and /compare's figures are a recount of the rows."""

import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import requests
from chromium import SCREENSHOTS, assert_readable, load
from playhouse.db_url import connect
from prometheus_client.parser import text_string_to_metric_families
from test_comparison import from_counts
from test_prometheus import promtool

from service import model, owner_page
from service.monitoring.comparison import compare
from tools import promote, replay_example, retrain
from tools.servers import EXAMPLE_DIR

pytestmark = pytest.mark.slow


def get(server, path):
    answer = requests.get(f"{server.base}{path}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def replay(server, rows, columns, target, first_id):
    """/predict then /update for each row, with ids from first_id; each answer must be a 200."""
    for offset, (_, row) in enumerate(rows.iterrows()):
        observation = json.loads(row[columns].to_json())  # NaN becomes null
        assert (
            server.post("/predict", {"id": first_id + offset, "observation": observation}).status_code == 200
        )
        outcome = row[target]
        true_class = outcome if isinstance(outcome, str) else int(outcome)
        assert server.post("/update", {"id": first_id + offset, "true_class": true_class}).status_code == 200


def tool(command, *args):
    """What a command (`make retrain`, `make promote`) printed, run in this process: the loop
    shares the test's imports instead of paying an interpreter's start for each (tests/test_retrain.py
    and tests/test_promote.py run the commands themselves)."""
    printed, complained = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(complained):
        returned = command.main(list(args))
    assert returned == 0, printed.getvalue() + complained.getvalue()
    return printed.getvalue()


def stored(database_url):
    database = connect(database_url)
    columns = "observation_id, model_version, true_class, proba, challenger_proba, challenger_version"
    query = f"SELECT {columns} FROM prediction"
    rows = database.execute_sql(query).fetchall()
    database.close()
    return rows


def page_comparison(browser, server, screenshot):
    """The comparison the page shows: (verdict line, {metric: {field: text}}), after checking
    that the page loads cleanly and passes axe-core with it."""
    errors, _ = load(browser, server.base + "/", screenshot)
    assert errors == []
    assert_readable(browser, "with a challenger")
    [table] = browser.find_elements("css selector", "table.comparison")
    table.screenshot(str(SCREENSHOTS / f"{screenshot}-table.png"))
    shown = table_cells(table.find_elements("css selector", "tbody tr"), "data-metric")
    return browser.find_element("css selector", "p.verdict").text, shown


FIELD = "[data-field]"


def table_cells(rows, key):
    """{each row's `key` attribute: {its cells' data-field: their text}}."""
    return {
        row.get_attribute(key): {
            cell.get_attribute("data-field"): cell.text
            for cell in row.find_elements("css selector", "[data-field]")
        }
        for row in rows
    }


SHOWN_FIELDS = ("running", "challenger", "difference", "interval", "better")


def assert_the_page_shows(found, verdict, shown):
    expected = owner_page.comparison_shown(found)
    assert verdict.startswith(found["verdict"].capitalize())
    assert f"On {expected['pairs']} labelled predictions" in verdict
    assert shown == {
        metric["key"]: {field: metric[field] for field in SHOWN_FIELDS} for metric in expected["metrics"]
    }


def assert_the_gauges_show(server, found, challenger):
    text = requests.get(f"{server.base}/metrics", timeout=30).text
    promtool("check", "metrics", stdin=text)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    mine = (("challenger_version", challenger),)
    assert samples[("model_comparison_pairs", mine)] == found["pairs"]
    assert samples[("model_challenger_failed", mine)] == found["challenger_failed"]
    verdict = {"the challenger is better": 1, "the challenger is worse": -1}.get(found["verdict"], 0)
    assert samples[("model_challenger_verdict", mine)] == verdict
    for metric, figures in found["metrics"].items():
        labels = (("challenger_version", challenger), ("metric", metric))
        assert samples[("model_comparison_difference", labels)] == pytest.approx(figures["difference"])
        assert samples[("model_comparison_difference_low", labels)] == pytest.approx(figures["interval"][0])
        assert samples[("model_comparison_difference_high", labels)] == pytest.approx(figures["interval"][1])


def assert_the_page_shows_who_took_over(browser, server, running, challenger, screenshot):
    load(browser, server.base + "/", screenshot)
    stats = get(server, "/stats")["by_model_version"]
    rows = table_cells(browser.find_elements("css selector", "#took-over tbody tr"), "data-version")
    assert rows == {
        version: {
            "from": stats[version]["first_hour_served"],
            "last": stats[version]["last_hour_served"],
            "role": role,
        }
        for version, role in ((running, "replaced"), (challenger, "running now"))
    }
    assert stats[running]["first_hour_served"] <= stats[challenger]["first_hour_served"]


def the_loop(database_url, live_server, artifacts, served, target, browser):
    columns = model.load(artifacts, 1000, fast=False).columns
    first, rest = served.iloc[: len(served) * 2 // 3], served.iloc[len(served) * 2 // 3 :]
    env = {"ARTIFACTS_DIR": str(artifacts)}  # one worker each: the loop restarts the service twice

    server = live_server(database_url, workers=1, env=env)  # the running model alone
    running = get(server, "/model")["model_version"]
    replay(server, first, columns, target, first_id=0)
    server.stop()
    tool(retrain, database_url, "--artifacts", str(artifacts))

    server = live_server(database_url, workers=1, env=env)  # deployed with its challenger
    challenger = get(server, "/model")["challenger"]["model_version"]
    replay(server, rest, columns, target, first_id=len(first))
    [found] = get(server, "/compare")["comparisons"]
    shot = f"{target.lower()}-{database_url.split(':')[0]}"  # names the screenshots
    assert_the_page_shows(found, *page_comparison(browser, server, f"comparison-{shot}"))
    assert_the_gauges_show(server, found, challenger)
    server.stop()

    assert (found["model_version"], found["challenger_version"]) == (running, challenger)
    assert (found["scored"], found["challenger_failed"], found["pairs"]) == (len(rest), 0, len(rest))
    rows = [row for row in stored(database_url) if row[5] == challenger]
    truth, probas, shadow = (np.array([row[i] for row in rows]) for i in (2, 3, 4))
    recount = from_counts(truth, probas, shadow)  # what the triggers should have counted
    for name, figures in recount["metrics"].items():
        for figure in ("running", "challenger", "interval", "max_error"):
            assert found["metrics"][name].get(figure) == pytest.approx(figures.get(figure), abs=1e-9)
    assert found["verdict"] == recount["verdict"]
    exact, auc = compare(truth, probas, shadow)["metrics"]["roc_auc"], found["metrics"]["roc_auc"]
    assert abs(auc["running"] - exact["running"]) <= auc["max_error"]  # within its bound of the rows' own

    assert f"the running model is now {challenger}" in tool(promote, "--artifacts", str(artifacts))
    server = live_server(database_url, workers=1, env=env)  # the promoted model serves
    assert get(server, "/model")["model_version"] == challenger
    assert "challenger" not in get(server, "/model")
    replay(server, rest.head(5), columns, target, first_id=len(served))
    by_version = get(server, "/stats")["by_model_version"]
    assert by_version[running]["predictions"] == len(served)  # the replaced model's history stays
    assert by_version[challenger]["predictions"] == 5
    assert_the_page_shows_who_took_over(browser, server, running, challenger, f"took-over-{shot}")
    ids = [row[0] for row in stored(database_url)]
    assert sorted(ids) == list(range(len(served) + 5))  # every acknowledged prediction stored once
    return found


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_example_retrained_on_what_it_served_earns_its_place_then_serves(
    database_url, live_server, tmp_path, browser
):
    artifacts = shutil.copytree(EXAMPLE_DIR, tmp_path / "artifacts")
    passengers = replay_example.held_back_passengers()
    found = the_loop(database_url, live_server, artifacts, passengers, "Survived", browser)
    print(f"{found['pairs']} pairs: {found['verdict']}; ROC AUC {found['metrics']['roc_auc']}")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_loop_holds_for_a_model_with_string_labels(
    database_url, live_server, tmp_path, other_model_dirs, browser
):
    artifacts = shutil.copytree(other_model_dirs["mixed-dtypes-string-labels"], tmp_path / "artifacts")
    served = pd.read_csv(artifacts / "held_back.csv")
    the_loop(database_url, live_server, artifacts, served, "status", browser)
