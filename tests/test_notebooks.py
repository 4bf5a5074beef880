"""Both notebooks run top to bottom on a fresh kernel and reproduce the shipped artifacts."""

import json
import shutil

import joblib
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from support import EXAMPLE_OBSERVATION, REPO

pytestmark = pytest.mark.slow
STEP_1 = "Step 1 - Train and Serialize.ipynb"
STEP_2 = "Step 2 - Deserialize and use.ipynb"


def execute(notebook, directory):
    """Run a notebook in directory on a fresh kernel; return its text outputs, cell by cell."""
    nb = nbformat.read(directory / notebook, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(directory)}}
    ).execute()
    return [
        "".join(
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
    observation = service.observation_from({"id": 0, "observation": EXAMPLE_OBSERVATION})
    [proba] = service.probabilities([observation.features])
    assert f"probability of survival: {proba}" in "".join(outputs)
