"""Retraining on what was served (tools/retrain.py): the labelled predictions read back with the
training dtypes, the same from the database, from a running service and from an archive CSV;
and `python -m tools.retrain` writing a challenger the service loads, for the example and for
the suite's other models."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import import_app
from service import model
from tools import replay_example, retrain
from tools.servers import EXAMPLE_DIR, REPO

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
TOKEN = "a-token-for-the-listing"


def observations(frame, columns):
    return [json.loads(row.to_json()) for _, row in frame[columns].iterrows()]  # NaN becomes null


def serve(post, frame, columns, target, labelled):
    """Predict every row of `frame`, then send the outcomes of the first `labelled` ones."""
    for i, observation in enumerate(observations(frame, columns)):
        assert post("/predict", {"id": i, "observation": observation}).status_code == 200
    for i, outcome in enumerate(frame[target].iloc[:labelled]):
        true_class = outcome if isinstance(outcome, str) else int(outcome)
        assert post("/update", {"id": i, "true_class": true_class}).status_code == 200


@BOTH
def test_the_database_a_service_and_an_archive_give_the_same_labelled_rows(
    database_url, live_server, tmp_path
):
    server = live_server(database_url, env={"LIST_DB_TOKEN": TOKEN})
    passengers = replay_example.held_back_passengers().head(60)
    running = model.load(EXAMPLE_DIR, 1000, fast=False)
    serve(server.post, passengers, running.columns, "Survived", labelled=50)

    from_database = retrain.served(database_url, running)
    from_service = retrain.served(server.base, running, token=TOKEN)
    archived = tmp_path / "archive.csv"
    command = [
        "flask",
        "--app",
        "app",
        "archive-predictions",
        "--before",
        "2100-01-01",
        "--to",
        str(archived),
    ]
    subprocess.run(command, cwd=REPO, env=server.env, check=True, capture_output=True)
    from_archive = retrain.served(archived, running)

    expected = passengers[running.columns].head(50).reset_index(drop=True).astype(running.dtypes)
    for found in (from_database, from_service, from_archive):
        pd.testing.assert_frame_equal(found.X, expected)
        assert found.y.tolist() == passengers["Survived"].head(50).tolist()
        assert found.created_at.is_monotonic_increasing


def retrained(artifacts, database_url, *args):
    command = [sys.executable, "-m", "tools.retrain", database_url, "--artifacts", str(artifacts), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("name", ["example", "mixed-dtypes-string-labels"])  # Step 4's test runs both others
def test_retrain_writes_a_challenger_the_service_serves(database_url, tmp_path, other_model_dirs, name):
    source = EXAMPLE_DIR if name == "example" else other_model_dirs[name]
    artifacts = tmp_path / "artifacts"
    shutil.copytree(source, artifacts)
    running = model.load(artifacts, 1000, fast=False)
    served_file = "titanic.csv" if name == "example" else "held_back.csv"
    rows = pd.read_csv(artifacts / served_file).head(150)
    service = import_app(database_url, ARTIFACTS_DIR=str(artifacts))
    client = service.app.test_client()
    serve(
        lambda path, body: client.post(path, json=body),
        rows,
        running.columns,
        running.meta["target"],
        labelled=120,
    )
    service.DB.close_all()

    found = retrained(artifacts, database_url)

    assert found.returncode == 0, found.stderr
    assert f"evaluated with {running.version} on the 24 most recent served rows" in found.stdout
    challenger = model.load_challenger(artifacts / "challenger", running, 1000, fast=False)
    assert challenger.serves, challenger.refused
    assert f"challenger {challenger.model.version}:" in found.stdout
    assert challenger.model.meta["trained_on"] == "training.csv"
    trained = pd.read_csv(artifacts / "challenger" / "training.csv")
    training_rows = len(pd.read_csv(artifacts / running.meta["trained_on"]))
    # For each labelled served row, one training row with its features is left out: the example's
    # 120 come from its own training file (counted once, as served), the others' from held_back.csv.
    left_out = 120 if name == "example" else 0
    assert len(trained) == training_rows - left_out + 96


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_a_training_file_it_says_how_to_retrain_on_the_served_rows_only(database_url, tmp_path):
    artifacts = tmp_path / "artifacts"
    shutil.copytree(EXAMPLE_DIR, artifacts)
    (artifacts / "titanic.csv").unlink()
    service = import_app(database_url, ARTIFACTS_DIR=str(artifacts))
    client = service.app.test_client()
    passengers = replay_example.held_back_passengers().head(40)
    running = model.load(EXAMPLE_DIR, 1000, fast=False)
    serve(
        lambda path, body: client.post(path, json=body),
        passengers,
        running.columns,
        "Survived",
        labelled=40,
    )
    service.DB.close_all()

    refused = retrained(artifacts, database_url)
    assert refused.returncode == 1
    assert "--mix served" in refused.stderr

    served_only = retrained(artifacts, database_url, "--mix", "served")
    assert served_only.returncode == 0, served_only.stderr
    assert "trained on 32 served rows and nothing else" in served_only.stdout
