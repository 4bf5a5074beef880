"""The model's files, loaded and checked once, so that a broken deploy fails at start-up.

Contract: each loader takes the directory that holds the artifacts and returns what the service
needs, or raises ArtifactError with a message that says what to fix.
- `load_columns(directory)`: columns.json, a non-empty JSON list of column names.
- `load_dtypes(directory, columns)`: dtypes.pickle, a pandas Series indexed by exactly those
  columns, in that order.
- `load_pipeline(directory)`: pipeline.pickle, a binary classifier with predict_proba whose
  classes are strings, numbers or booleans, and the file's SHA-256 (the model's version).
- `check_columns_against_pipeline(columns, pipeline)`: the columns are the ones the pipeline was
  fitted on, in its order (where the pipeline knows them).
- `training_versions(directory, pipeline_sha256)`: model_meta.json as Step 1 wrote it for this
  pipeline, or {} when it is absent or describes another one. It logs a warning for every
  library whose running version differs from the one that trained the model.
- `write_training_meta(directory, pipeline, trained_on, target)`: model_meta.json as Step 1's
  cell writes it, for the pipeline.pickle in `directory` (tools/retrain.py, the tests' models).

Only load pickles you made: unpickling runs code.
"""

import hashlib
import json
import logging
import pickle
import platform
import warnings
from importlib.metadata import version

import joblib
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
CHECKED_PACKAGES = ("scikit-learn", "pandas", "numpy")


class ArtifactError(RuntimeError):
    """The model files are missing, broken or inconsistent; the message says what to fix."""


def artifact_path(directory, name):
    path = directory / name
    if not path.is_file():
        raise ArtifactError(
            f"{name} not found in {directory}: run 'Step 1 - Train and Serialize.ipynb' "
            "or copy your model's pipeline.pickle, dtypes.pickle and columns.json there"
        )
    return path


def load_columns(directory):
    columns = json.loads(artifact_path(directory, "columns.json").read_text())
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not columns:
        raise ArtifactError("columns.json must hold a non-empty JSON list of column names")
    return columns


def load_dtypes(directory, columns):
    with artifact_path(directory, "dtypes.pickle").open("rb") as fh:
        dtypes = pickle.load(fh)
    if not isinstance(dtypes, pd.Series):
        raise ArtifactError("dtypes.pickle must hold a pandas Series (X_train.dtypes)")
    if list(dtypes.index) != columns:
        only_columns = sorted(set(columns) - set(dtypes.index))
        only_dtypes = sorted(set(dtypes.index) - set(columns))
        raise ArtifactError(
            "columns.json and dtypes.pickle disagree: only in columns.json "
            f"{only_columns}, only in dtypes.pickle {only_dtypes}"
            + ("" if only_columns or only_dtypes else ", or the same names in another order")
            + "; write both from the same X_train"
        )
    return dtypes


def load_pipeline(directory):
    path = artifact_path(directory, "pipeline.pickle")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipeline = joblib.load(path)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ArtifactError(
            f"pipeline.pickle needs code that is not importable here ({exc}). Custom transformers "
            "must live in an importable package (not in the notebook's __main__) that is deployed "
            "with the service; see 'Custom transformers' in the README"
        ) from exc
    for warning in caught:
        log.warning("while loading pipeline.pickle: %s", warning.message)
    if not callable(getattr(pipeline, "predict_proba", None)):
        raise ArtifactError(f"pipeline.pickle holds a {type(pipeline).__name__}, which has no predict_proba")
    if len(getattr(pipeline, "classes_", ())) != 2:
        raise ArtifactError(
            f"the pipeline must be a binary classifier; its classes are {getattr(pipeline, 'classes_', None)}"
        )
    labels = np.asarray(pipeline.classes_).tolist()
    if not all(isinstance(label, (str, int, float)) for label in labels):
        raise ArtifactError(f"the pipeline's classes must be strings, numbers or booleans; got {labels!r}")
    return pipeline, hashlib.sha256(path.read_bytes()).hexdigest()


def check_columns_against_pipeline(columns, pipeline):
    """columns.json must name the features the pipeline was fitted on, in the same order.

    Only a pipeline fitted on a DataFrame knows its feature names; for others there is nothing
    to compare, and None is returned instead of the names.
    """
    fitted = getattr(pipeline, "feature_names_in_", None)
    if fitted is None:
        return None
    fitted = [str(name) for name in fitted]
    if fitted != columns:
        missing = [name for name in fitted if name not in columns]
        extra = [name for name in columns if name not in fitted]
        problems = []
        if missing:
            problems.append(f"lacks {missing}")
        if extra:
            problems.append(f"has {extra}, which it was not fitted on")
        problem = "columns.json " + (" and ".join(problems) or "lists them in another order")
        raise ArtifactError(
            f"pipeline.pickle was fitted on the columns {fitted}, but {problem}. columns.json and "
            "dtypes.pickle are stale: write all three files from the same training run (Step 1)"
        )
    return fitted


def training_versions(directory, pipeline_sha256):
    """model_meta.json for this pipeline; warn loudly when the libraries differ from training."""
    path = directory / "model_meta.json"
    if not path.is_file():
        log.info(
            "no model_meta.json beside pipeline.pickle: the library versions that trained it are "
            "unknown, so a mismatch with the running ones can't be caught (Step 1 writes the file)"
        )
        return {}
    meta = json.loads(path.read_text())
    if meta.get("pipeline_sha256") != pipeline_sha256:
        log.warning(
            "model_meta.json describes another pipeline.pickle (left from another model?), so it is "
            "ignored: delete it or write this model's with Step 1's cells"
        )
        return {}
    for package in CHECKED_PACKAGES:
        if meta.get(package) and meta[package] != version(package):
            log.warning(
                "VERSION MISMATCH: pipeline.pickle was written with %s %s but %s %s is running; "
                "install the versions in requirements_prod.txt",
                package,
                meta[package],
                package,
                version(package),
            )
    return meta


def write_training_meta(directory, pipeline, trained_on, target):
    """model_meta.json for the pipeline.pickle in directory, as Step 1 writes it; the meta."""
    meta = {
        "pipeline_sha256": hashlib.sha256((directory / "pipeline.pickle").read_bytes()).hexdigest(),
        "python": platform.python_version(),
        **{package: version(package) for package in CHECKED_PACKAGES},
        "positive_class": pipeline.classes_.tolist()[1],  # plain JSON, whatever the label type
        "trained_on": trained_on,
        "target": target,
    }
    (directory / "model_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
