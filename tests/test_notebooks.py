"""The notebooks run top to bottom on a fresh kernel, and Step 1 reproduces the shipped model on any CPU."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import nbformat
import pandas as pd
import pytest
import requests
from nbclient import NotebookClient
from sklearn.metrics import roc_auc_score

from conftest import import_app
from service import model
from tools import replay_example
from tools.servers import EXAMPLE_DIR, EXAMPLE_OBSERVATION, REPO

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
    for name in (STEP_1, STEP_2):
        shutil.copy(REPO / name, directory / name)
    copy_what_step_1_needs(directory)
    step_1 = execute(STEP_1, directory)
    step_2 = execute(STEP_2, directory)
    return directory, step_1, step_2


def copy_what_step_1_needs(directory):
    """The data, and the service package its profile cell imports, as beside it in the repository."""
    shutil.copy(EXAMPLE_DIR / "titanic.csv", directory)
    (directory / "service").symlink_to(REPO / "service")


def test_step_1_writes_the_artifacts(workdir):
    directory, outputs, _ = workdir
    for name in (
        "pipeline.pickle",
        "dtypes.pickle",
        "columns.json",
        "model_meta.json",
        "training_profile.json",
    ):
        assert (directory / name).is_file()
    assert any("test ROC AUC: 0.8" in text for text in outputs)


# OpenBLAS picks a kernel per CPU, and each rounds differently; a laptop may run any of these.
# Each: the CPU flag it needs (pni is SSE3), and the names OpenBLAS reports for it.
KERNELS = {"Prescott": ("pni", ["Katmai", "Prescott"]), "Haswell": ("avx2", ["Haswell"]),
           "SkylakeX": ("avx512f", ["SkylakeX"])}  # fmt: skip


def cpu_flags():
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return set(next(line for line in lines if line.startswith("flags")).split(":", 1)[1].split())


def blas_kernel_in_use():
    """The kernel OpenBLAS reports in a new process with this process's environment."""
    script = "import numpy, threadpoolctl; print(threadpoolctl.threadpool_info()[0]['architecture'])"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("kernel", KERNELS)
def test_step_1_reproduces_the_shipped_model_under_every_blas_kernel(kernel, tmp_path, monkeypatch):
    flag, reported_names = KERNELS[kernel]
    if flag not in cpu_flags():
        pytest.skip(f"this CPU lacks {flag}, which OpenBLAS's {kernel} kernel needs")
    shutil.copy(REPO / STEP_1, tmp_path)
    copy_what_step_1_needs(tmp_path)
    monkeypatch.setenv("OPENBLAS_CORETYPE", kernel)
    assert blas_kernel_in_use() in reported_names

    execute(STEP_1, tmp_path)

    passengers = pd.read_csv(EXAMPLE_DIR / "titanic.csv")
    columns = json.loads((EXAMPLE_DIR / "columns.json").read_text())
    retrained = joblib.load(tmp_path / "pipeline.pickle").predict_proba(passengers[columns])
    shipped = joblib.load(EXAMPLE_DIR / "pipeline.pickle").predict_proba(passengers[columns])
    assert abs(retrained - shipped).max() < 1e-9
    assert json.loads((tmp_path / "columns.json").read_text()) == columns
    assert pd.read_pickle(tmp_path / "dtypes.pickle").equals(pd.read_pickle(EXAMPLE_DIR / "dtypes.pickle"))
    meta, shipped_meta = (json.loads((d / "model_meta.json").read_text()) for d in (tmp_path, EXAMPLE_DIR))
    assert {**meta, "pipeline_sha256": None} == {**shipped_meta, "pipeline_sha256": None}
    profile, shipped_profile = (
        json.loads((d / "training_profile.json").read_text()) for d in (tmp_path, EXAMPLE_DIR)
    )
    assert {**profile, "pipeline_sha256": None} == {**shipped_profile, "pipeline_sha256": None}


def test_step_2_predicts_the_readme_passenger_like_the_service(workdir, service):
    _, _, outputs = workdir
    observation = service.SCHEMA.observation({"id": 0, "observation": EXAMPLE_OBSERVATION})
    [proba] = service.MODEL.probabilities([observation.features])
    printed = re.search(r"probability of survival: (\S+)", "".join(outputs)).group(1)
    assert float(printed) == pytest.approx(proba, abs=1e-9)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_step_3_monitors_a_replayed_slice_of_passengers(database_url, live_server, tmp_path):
    """Replay the held-back passengers through the live API, with their outcomes, then run Step 3."""
    server = live_server(database_url)
    held_back = replay_example.held_back_passengers()
    probas = replay_example.replay(server, held_back)
    auc = roc_auc_score(held_back.Survived, probas)
    stats = requests.get(f"{server.base}/stats", timeout=30).json()
    assert stats["overall"]["roc_auc"] == pytest.approx(auc, abs=1e-6)
    print(f"live ROC AUC of the {len(held_back)} held-back passengers: {stats['overall']['roc_auc']}")

    notebook = replay_example.run_step_3(database_url)
    outputs = "\n".join(replay_example.text_outputs(notebook))

    if database_url.startswith("sqlite"):  # as tools/replay_example.py makes the committed outputs
        assert replay_example.differences(notebook) == [], "run: python -m tools.replay_example --write"
        assert_step_4_retrains_on_them(database_url, tmp_path)
    assert f"{len(held_back)} predictions, {len(held_back)} with a true outcome" in outputs
    assert f"ROC AUC on {len(held_back)} labelled predictions: {auc:.4f}" in outputs
    drift = dict(re.findall(r"^(\w+)\s+(\d+\.\d+)$", outputs, flags=re.M))
    assert set(drift) == set(json.loads((EXAMPLE_DIR / "columns.json").read_text()))
    assert all(float(psi) < 0.25 for psi in drift.values()), drift  # the same population: no real drift


def assert_step_4_retrains_on_them(database_url, tmp_path):
    """Step 4 on the replayed passengers, as tools/replay_example.py makes its committed outputs."""
    artifacts = shutil.copytree(EXAMPLE_DIR, tmp_path / "artifacts")
    notebook = replay_example.run_step_4(database_url, artifacts)
    assert replay_example.differences(notebook, replay_example.STEP_4) == [], (
        "run: python -m tools.replay_example --write"
    )
    outputs = "\n".join(replay_example.text_outputs(notebook))
    assert "179 labelled predictions" in outputs
    assert "the 36 most recent" in outputs
    running = model.load(artifacts, 1000, fast=False)
    assert model.load_challenger(artifacts / "challenger", running, 1000, fast=False).serves


@pytest.mark.parametrize("name", ["float-features-with-spaces", "mixed-dtypes-string-labels"])
def test_step_4_works_unchanged_for_another_model(name, other_model_dirs, tmp_path):
    artifacts = shutil.copytree(other_model_dirs[name], tmp_path / "artifacts")
    running = model.load(artifacts, 1000, fast=False)
    url = f"sqlite:///{tmp_path}/served.db"
    service = import_app(url, ARTIFACTS_DIR=str(artifacts))
    client = service.app.test_client()
    held_back = pd.read_csv(artifacts / "held_back.csv")
    for i, (_, row) in enumerate(held_back.iterrows()):
        observation = json.loads(row[running.columns].to_json())
        assert client.post("/predict", json={"id": i, "observation": observation}).status_code == 200
        outcome = row[running.meta["target"]]
        true_class = outcome if isinstance(outcome, str) else int(outcome)
        assert client.post("/update", json={"id": i, "true_class": true_class}).status_code == 200
    service.DB.close_all()

    outputs = "\n".join(replay_example.text_outputs(replay_example.run_step_4(url, artifacts)))

    assert f"{len(held_back)} labelled predictions of model {running.version}" in outputs
    assert "roc_auc: running" in outputs
    assert model.load_challenger(artifacts / "challenger", running, 1000, fast=False).serves


def test_step_3_is_committed_with_its_charts():
    """Its text is checked against a fresh replay above (the sqlite case); its charts are here."""
    images = [
        output
        for cell in nbformat.read(REPO / STEP_3, as_version=4).cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 4  # volume, probabilities, ROC and calibration, the features


def test_step_3_runs_on_an_empty_database_with_the_top_level_model(tmp_path):
    outputs = replay_example.text_outputs(replay_example.run_step_3(f"sqlite:///{tmp_path}/empty.db", REPO))
    assert "0 predictions, 0 with a true outcome" in outputs[0]
    assert "Nothing to show yet" in outputs[0]
    assert "No true outcomes yet" in "".join(outputs)


def test_step_3_shows_volume_and_drift_before_any_outcome_arrives(tmp_path, live_server):
    url = f"sqlite:///{tmp_path}/unlabelled.db"
    server = live_server(url)
    columns = json.loads((EXAMPLE_DIR / "columns.json").read_text())
    for passenger_id, passenger in replay_example.held_back_passengers().head(30).iterrows():
        observation = json.loads(passenger[columns].to_json())
        assert server.post("/predict", {"id": int(passenger_id), "observation": observation}).ok

    outputs = "\n".join(replay_example.text_outputs(replay_example.run_step_3(url)))

    assert "30 predictions, 0 with a true outcome" in outputs
    assert "No true outcomes yet" in outputs
    assert "PSI of model version" in outputs
