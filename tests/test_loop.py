"""The second model's whole loop, as a user lives it, through gunicorn as deployed: serve the
model, replay some passengers with their outcomes, retrain on them (`make retrain`), deploy the
result as a challenger, replay the rest, read /compare, promote (`make promote`), keep serving.
Every acknowledged prediction is stored once, and /compare's figures are a recount of the rows."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import requests
from playhouse.db_url import connect

from service import model
from service.monitoring.comparison import compare
from tools import replay_example
from tools.servers import EXAMPLE_DIR, REPO

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


def tool(*command):
    found = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert found.returncode == 0, found.stdout + found.stderr
    return found.stdout


def stored(database_url):
    database = connect(database_url)
    columns = "observation_id, model_version, true_class, proba, challenger_proba, challenger_version"
    query = f"SELECT {columns} FROM prediction"
    rows = database.execute_sql(query).fetchall()
    database.close()
    return rows


def the_loop(database_url, live_server, artifacts, served, target):
    columns = model.load(artifacts, 1000, fast=False).columns
    first, rest = served.iloc[: len(served) * 2 // 3], served.iloc[len(served) * 2 // 3 :]
    env = {"ARTIFACTS_DIR": str(artifacts)}  # one worker each: the loop restarts the service twice

    server = live_server(database_url, workers=1, env=env)  # the running model alone
    running = get(server, "/model")["model_version"]
    replay(server, first, columns, target, first_id=0)
    server.stop()
    tool("tools.retrain", database_url, "--artifacts", str(artifacts))

    server = live_server(database_url, workers=1, env=env)  # deployed with its challenger
    challenger = get(server, "/model")["challenger"]["model_version"]
    replay(server, rest, columns, target, first_id=len(first))
    [found] = get(server, "/compare")["comparisons"]
    server.stop()

    assert (found["model_version"], found["challenger_version"]) == (running, challenger)
    assert (found["scored"], found["challenger_failed"], found["pairs"]) == (len(rest), 0, len(rest))
    rows = [row for row in stored(database_url) if row[5] == challenger]
    recount = compare([row[2] for row in rows], [row[3] for row in rows], [row[4] for row in rows])
    for name, figures in recount["metrics"].items():
        assert found["metrics"][name]["running"] == pytest.approx(figures["running"], abs=1e-12)
        assert found["metrics"][name]["challenger"] == pytest.approx(figures["challenger"], abs=1e-12)
        assert found["metrics"][name]["interval"] == pytest.approx(figures["interval"], abs=1e-12)
    assert found["verdict"] == recount["verdict"]

    assert f"the running model is now {challenger}" in tool("tools.promote", "--artifacts", str(artifacts))
    server = live_server(database_url, workers=1, env=env)  # the promoted model serves
    assert get(server, "/model")["model_version"] == challenger
    assert "challenger" not in get(server, "/model")
    replay(server, rest.head(5), columns, target, first_id=len(served))
    by_version = get(server, "/stats")["by_model_version"]
    assert by_version[running]["predictions"] == len(served)  # the replaced model's history stays
    assert by_version[challenger]["predictions"] == 5
    ids = [row[0] for row in stored(database_url)]
    assert sorted(ids) == list(range(len(served) + 5))  # every acknowledged prediction stored once
    return found


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_example_retrained_on_what_it_served_earns_its_place_then_serves(
    database_url, live_server, tmp_path
):
    artifacts = shutil.copytree(EXAMPLE_DIR, tmp_path / "artifacts")
    found = the_loop(database_url, live_server, artifacts, replay_example.held_back_passengers(), "Survived")
    print(f"{found['pairs']} pairs: {found['verdict']}; ROC AUC {found['metrics']['roc_auc']}")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_loop_holds_for_a_model_with_string_labels(database_url, live_server, tmp_path, other_model_dirs):
    artifacts = shutil.copytree(other_model_dirs["mixed-dtypes-string-labels"], tmp_path / "artifacts")
    the_loop(database_url, live_server, artifacts, pd.read_csv(artifacts / "held_back.csv"), "status")
