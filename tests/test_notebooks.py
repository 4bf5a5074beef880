"""Both notebooks run top to bottom on a fresh kernel and reproduce the shipped artifacts."""

import json
import re
import shutil

import joblib
import nbformat
import pandas as pd
import pytest
import requests
from nbclient import NotebookClient
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from support import EXAMPLE_OBSERVATION, REPO

pytestmark = pytest.mark.slow
STEP_1 = "Step 1 - Train and Serialize.ipynb"
STEP_2 = "Step 2 - Deserialize and use.ipynb"
STEP_3 = "Step 3 - Monitor predictions.ipynb"


def execute(notebook, directory):
    """Run a notebook in directory on a fresh kernel; return its text outputs, cell by cell.

    The kernel inherits this process's environment (DATABASE_URL for Step 3)."""
    nb = nbformat.read(directory / notebook, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(directory)}}
    ).execute()
    return [
        "\n".join(
            output.get("text", "") or output.get("data", {}).get("text/plain", "") for output in cell.outputs
        )
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory holding only the notebooks and the data, where Step 1 then Step 2 have run."""
    directory = tmp_path_factory.mktemp("notebooks")
    for name in (STEP_1, STEP_2, "titanic.csv"):
        shutil.copy(REPO / name, directory / name)
    step_1 = execute(STEP_1, directory)
    step_2 = execute(STEP_2, directory)
    return directory, step_1, step_2


def test_step_1_writes_the_artifacts(workdir):
    directory, outputs, _ = workdir
    for name in ("pipeline.pickle", "dtypes.pickle", "columns.json", "model_meta.json"):
        assert (directory / name).is_file()
    assert any("test ROC AUC: 0.8" in text for text in outputs)


def test_step_1_reproduces_the_shipped_artifacts(workdir):
    directory, _, _ = workdir
    passengers = pd.read_csv(REPO / "titanic.csv")
    columns = json.loads((REPO / "columns.json").read_text())
    features = passengers[columns]

    retrained = joblib.load(directory / "pipeline.pickle").predict_proba(features)
    shipped = joblib.load(REPO / "pipeline.pickle").predict_proba(features)

    assert (retrained == shipped).all()  # exactly, not approximately
    assert json.loads((directory / "columns.json").read_text()) == columns
    assert pd.read_pickle(directory / "dtypes.pickle").equals(pd.read_pickle(REPO / "dtypes.pickle"))
    assert json.loads((directory / "model_meta.json").read_text()) == json.loads(
        (REPO / "model_meta.json").read_text()
    )


def test_step_2_predicts_the_readme_passenger_like_the_service(workdir, service):
    _, _, outputs = workdir
    observation = service.SCHEMA.observation({"id": 0, "observation": EXAMPLE_OBSERVATION})
    [proba] = service.probabilities([observation.features])
    assert f"probability of survival: {proba}" in "".join(outputs)


def held_back_passengers():
    """The test split of Step 1: passengers the model never saw."""
    passengers = pd.read_csv(REPO / "titanic.csv")
    _, held_back = train_test_split(passengers, test_size=0.2, random_state=42, stratify=passengers.Survived)
    return held_back


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_step_3_monitors_a_replayed_slice_of_passengers(database_url, live_server, monkeypatch):
    """Replay the held-back passengers through the live API, with their outcomes, then run Step 3."""
    server = live_server(database_url)
    columns = json.loads((REPO / "columns.json").read_text())
    held_back = held_back_passengers()
    probas = []
    for passenger_id, passenger in held_back.iterrows():
        observation = json.loads(passenger[columns].to_json())  # NaN becomes null
        probas.append(
            server.post("/predict", {"id": int(passenger_id), "observation": observation}).json()["proba"]
        )
        assert server.post("/update", {"id": int(passenger_id), "true_class": int(passenger.Survived)}).ok
    live_auc = requests.get(f"{server.base}/stats", timeout=30).json()["overall"]["roc_auc"]
    auc = roc_auc_score(held_back.Survived, probas)
    assert live_auc == pytest.approx(auc, abs=1e-6)
    print(f"live ROC AUC of the {len(held_back)} held-back passengers: {live_auc}")

    monkeypatch.setenv("DATABASE_URL", database_url)
    outputs = "\n".join(execute(STEP_3, REPO))

    assert f"{len(held_back)} predictions, {len(held_back)} with a true outcome" in outputs
    assert f"ROC AUC on {len(held_back)} labelled predictions: {auc:.4f}" in outputs
    drift = dict(re.findall(r"^(\w+)\s+(\d+\.\d+)$", outputs, flags=re.M))
    assert set(drift) == set(columns)
    assert all(float(psi) < 0.25 for psi in drift.values()), drift  # the same population: no real drift
