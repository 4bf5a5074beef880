"""Bad model artifacts stop the service at start-up with a message that says what to fix."""

import io
import json
import logging
import pickle
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import joblib
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from conftest import import_app
from service.artifacts import ArtifactError
from tools.servers import EXAMPLE_DIR, REPO, LiveServer

ARTIFACTS = ["pipeline.pickle", "dtypes.pickle", "columns.json", "model_meta.json"]


@pytest.fixture
def artifacts(tmp_path):
    """A copy of the shipped artifacts, to break one at a time."""
    for name in ARTIFACTS:
        shutil.copy(EXAMPLE_DIR / name, tmp_path / name)
    return tmp_path


@dataclass
class Started:
    """How a start-up ended, as a process would report it: its exit code and what it wrote."""

    returncode: int
    stderr: str


def start_app(artifacts_dir, tmp_path, extra_path=None):
    """Import app.py as gunicorn's master does. In this process, whose libraries are loaded
    already (a fraction of a second instead of two): the log, and a refusal's last line as Python
    prints it; in a new process when `extra_path` must be importable."""
    if extra_path:
        env = {
            "ARTIFACTS_DIR": str(artifacts_dir),
            "DATABASE_URL": f"sqlite:///{tmp_path}/startup.db",
            "PYTHONPATH": f"{REPO}:{extra_path}",
            "PATH": "/usr/bin:/bin",
        }
        command = [sys.executable, "-c", "import app"]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    try:
        module = import_app(f"sqlite:///{tmp_path}/startup.db", ARTIFACTS_DIR=str(artifacts_dir))
    except ArtifactError as exc:
        return Started(1, f"{log.getvalue()}service.artifacts.ArtifactError: {exc}\n")
    finally:
        root.removeHandler(handler)
        root.level = level
    module.DB.close_all()
    return Started(0, log.getvalue())


def assert_refused(result, *words):
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("service.artifacts.ArtifactError:"), result.stderr[-2000:]
    for word in words:
        assert word in last_line


def test_shipped_artifacts_start_cleanly(artifacts, tmp_path):
    result = start_app(artifacts, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr


@pytest.mark.parametrize("name", ["pipeline.pickle", "dtypes.pickle", "columns.json"])
def test_a_missing_file_is_named(artifacts, tmp_path, name):
    (artifacts / name).unlink()
    assert_refused(start_app(artifacts, tmp_path), f"{name} not found in {artifacts}", "Step 1")


def test_columns_and_dtypes_that_disagree_are_refused(artifacts, tmp_path):
    columns = json.loads((artifacts / "columns.json").read_text())
    (artifacts / "columns.json").write_text(json.dumps([*columns[:-1], "Deck"]))
    assert_refused(
        start_app(artifacts, tmp_path),
        "columns.json and dtypes.pickle disagree",
        "only in columns.json ['Deck']",
        "only in dtypes.pickle ['Embarked']",
    )


def test_columns_in_another_order_than_the_dtypes_are_refused(artifacts, tmp_path):
    columns = json.loads((artifacts / "columns.json").read_text())
    (artifacts / "columns.json").write_text(json.dumps(columns[::-1]))
    assert_refused(start_app(artifacts, tmp_path), "disagree", "in another order")


def test_columns_json_must_be_a_list_of_names(artifacts, tmp_path):
    (artifacts / "columns.json").write_text('{"Age": "float"}')
    assert_refused(start_app(artifacts, tmp_path), "columns.json must hold a non-empty JSON list")


def test_dtypes_must_be_a_series(artifacts, tmp_path):
    with (artifacts / "dtypes.pickle").open("wb") as fh:
        pickle.dump({"Age": "float64"}, fh)
    assert_refused(start_app(artifacts, tmp_path), "dtypes.pickle must hold a pandas Series")


def test_a_model_without_predict_proba_is_refused(artifacts, tmp_path):
    joblib.dump(LinearRegression().fit([[0], [1]], [0, 1]), artifacts / "pipeline.pickle")
    assert_refused(start_app(artifacts, tmp_path), "LinearRegression, which has no predict_proba")


def test_a_model_with_three_classes_is_refused(artifacts, tmp_path):
    joblib.dump(LogisticRegression().fit([[0], [1], [2]], [0, 1, 2]), artifacts / "pipeline.pickle")
    assert_refused(start_app(artifacts, tmp_path), "must be a binary classifier", "[0 1 2]")


def test_a_pickle_needing_a_missing_module_points_to_custom_transformers(artifacts, tmp_path):
    package = tmp_path / "pkg"
    (package / "my_transformers").mkdir(parents=True)
    (package / "my_transformers" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from sklearn.base import BaseEstimator, TransformerMixin

            class Passthrough(BaseEstimator, TransformerMixin):
                def fit(self, X, y=None):
                    return self

                def transform(self, X):
                    return X
            """
        )
    )
    pickle_path = str(artifacts / "pipeline.pickle")
    write_pickle = (
        f"import joblib, my_transformers; joblib.dump(my_transformers.Passthrough(), {pickle_path!r})"
    )
    subprocess.run([sys.executable, "-c", write_pickle], cwd=package, check=True)

    assert_refused(
        start_app(artifacts, tmp_path),
        "No module named 'my_transformers'",
        "Custom transformers must live in an importable package",
    )
    # With the package importable, loading gets past unpickling (and on to the next check).
    assert_refused(start_app(artifacts, tmp_path, extra_path=package), "has no predict_proba")


def test_other_library_versions_than_the_training_ones_are_a_loud_warning(artifacts, tmp_path):
    meta = json.loads((artifacts / "model_meta.json").read_text())
    meta.update({"scikit-learn": "1.0.2", "pandas": "1.5.3"})
    (artifacts / "model_meta.json").write_text(json.dumps(meta))

    result = start_app(artifacts, tmp_path)

    assert result.returncode == 0, result.stderr
    assert (
        "VERSION MISMATCH: pipeline.pickle was written with scikit-learn 1.0.2 but scikit-learn 1.9.1"
        in result.stderr
    )
    assert "pandas 1.5.3 but pandas 3.1.1" in result.stderr


def test_model_meta_of_another_pipeline_is_ignored(artifacts, tmp_path):
    meta = json.loads((artifacts / "model_meta.json").read_text())
    meta.update({"pipeline_sha256": "0" * 64, "scikit-learn": "1.0.2"})
    (artifacts / "model_meta.json").write_text(json.dumps(meta))

    result = start_app(artifacts, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "model_meta.json describes another pipeline.pickle (left from another model?)" in result.stderr
    assert "VERSION MISMATCH" not in result.stderr


def test_no_database_connection_is_left_open_for_gunicorn_to_fork(tmp_path):
    script = "import app; print(app.DB.is_closed(), len(app.DB._connections), len(app.DB._in_use))"
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/fork.db", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.stdout.split() == ["True", "0", "0"], result.stderr


def test_gunicorn_refuses_to_start_on_bad_artifacts(artifacts, tmp_path):
    (artifacts / "dtypes.pickle").unlink()
    with pytest.raises(RuntimeError, match="dtypes.pickle not found"):
        LiveServer(f"sqlite:///{tmp_path}/g.db", env={"ARTIFACTS_DIR": str(artifacts)})


def test_a_model_without_an_imputer_answers_missing_values_with_a_422(tmp_path):
    """Swap in a model that can't take NaN: validation still passes it, the model's reason comes back."""
    passengers = pd.read_csv(EXAMPLE_DIR / "titanic.csv")
    features = passengers[["Age", "Fare"]]
    complete = features.notna().all(axis=1)
    joblib.dump(
        LogisticRegression().fit(features[complete], passengers.Survived[complete]),
        tmp_path / "pipeline.pickle",
    )
    (tmp_path / "columns.json").write_text(json.dumps(["Age", "Fare"]))
    features.dtypes.to_pickle(tmp_path / "dtypes.pickle")
    service = import_app(f"sqlite:///{tmp_path}/own.db", ARTIFACTS_DIR=str(tmp_path))
    client = service.app.test_client()

    scored = client.post("/predict", json={"id": 1, "observation": {"Age": 30.0, "Fare": 10.0}})
    refused = client.post("/predict", json={"id": 2, "observation": {"Age": None, "Fare": 10.0}})

    assert scored.status_code == 200
    assert refused.status_code == 422
    assert "Input X contains NaN" in refused.get_json()["error"]
    assert [row.observation_id for row in service.Prediction.select()] == [1]
    service.DB.close_all()


def rewrite_columns(artifacts, columns):
    """columns.json and dtypes.pickle that agree with each other, but name these columns."""
    dtypes = pd.read_pickle(artifacts / "dtypes.pickle")
    dtypes = pd.Series({column: dtypes.get(column, dtypes["Sex"]) for column in columns})
    (artifacts / "columns.json").write_text(json.dumps(columns))
    dtypes.to_pickle(artifacts / "dtypes.pickle")


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        (["Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"], "columns.json lacks ['Cabin']"),
        (
            ["Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Cabin", "Embarked", "Name"],
            "has ['Name'], which it was not fitted on",
        ),
        (["Sex", "Pclass", "Age", "SibSp", "Parch", "Fare", "Cabin", "Embarked"], "in another order"),
    ],
)
def test_columns_that_disagree_with_the_pipeline_stop_start_up(artifacts, tmp_path, columns, words):
    rewrite_columns(artifacts, columns)
    result = start_app(artifacts, tmp_path)
    assert_refused(result, "pipeline.pickle was fitted on the columns", words, "stale")
