"""Check a model before deploying it: `make check-model` (add SAMPLE=your.csv to score its rows).

Contract: `python -m tools.check_model [--artifacts DIR] [--sample CSV]`
1. loads pipeline.pickle, dtypes.pickle, columns.json and model_meta.json exactly as the service
   does (artifacts.py), and checks them against each other and against the pipeline;
2. starts the service as deployed (gunicorn with gunicorn.conf.py, one worker, on a temporary
   SQLite database and a free loopback port);
3. sends it requests built from the model's own schema, and rows of the sample file (by default
   the training file model_meta.json names, when it is there): the example (a typical row of the
   training profile) must be scored and a retry get the same answer, a value of the wrong type
   must be refused, /update must take the model's positive label, each sample row must be
   scored, and /drift must compare them with training;
4. prints a report: the features and what each accepts, the classes, the training profile (or
   how to make one: a model without one serves, but /drift has nothing to compare with), how the
   model is called (the fast path, or scikit-learn and what kept it there), a curl
   line for this model with the answer it got, and every problem with what to do about it.
It exits 0 when there is no problem and 1 otherwise.

`wrong_value(feature)` builds an invalid value from /model's features; the tests use it too, and
the valid example comes from service.model_card.example_observation. This module starts the
service; it never imports app.py.
"""

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from service import artifacts
from service.model import describe_path
from service.model_card import example_observation
from tools.servers import REPO, LiveServer

SAMPLE_ROWS = 50
WRONG_TYPE = {"number": "not a number", "integer": "not an integer", "boolean": "yes", "string": 1}


def wrong_value(feature):
    """A value the feature must refuse with a 400, or None when it takes any string or number."""
    if feature["accepts"] == "category":
        return "a value never seen in training"
    return WRONG_TYPE.get(feature["accepts"])


def sample_rows(path, columns, most=SAMPLE_ROWS):
    """Up to `most` rows of the CSV as JSON observations (missing values as null)."""
    frame = pd.read_csv(path, nrows=most)
    absent = [column for column in columns if column not in frame.columns]
    if absent:
        raise ValueError(f"{path} lacks the model's column(s) {absent}")
    return json.loads(frame[columns].to_json(orient="records"))


def call(base, method, path, body=None):
    """(status, JSON answer) of one request to the service."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def start_service(artifacts_dir, scratch):
    """The service as deployed (gunicorn.conf.py, one worker), on a throwaway SQLite database."""
    return LiveServer(
        f"sqlite:///{scratch}/check.db",
        workers=1,
        env={"ARTIFACTS_DIR": str(artifacts_dir)},
        command=["gunicorn", "--config", "gunicorn.conf.py", "--bind", "127.0.0.1:{port}", "app:app"],
        python_bin=Path(sys.executable).parent,
    )


def check_artifacts(directory, problems):
    """The service's own loading and checks: (the model's columns, model_meta.json if it describes
    this pipeline, else {}), or (None, {}) when the model can't load."""
    try:
        columns = artifacts.load_columns(directory)
        artifacts.load_dtypes(directory, columns)
        pipeline, sha256 = artifacts.load_pipeline(directory)
        if artifacts.check_columns_against_pipeline(columns, pipeline) is None:
            print(
                "note: the pipeline was not fitted on a DataFrame: columns.json can't be checked against it"
            )
        meta = artifacts.training_versions(directory, sha256)
    except artifacts.ArtifactError as exc:
        problems.append(str(exc))
        return None, {}
    return columns, meta


def exercise(service, card, rows, problems):
    """Send the requests; return (example body, its answer)."""
    features = card["features"]
    example = {"id": 1, "observation": example_observation(features)}
    status, answer = call(service.base, "POST", "/predict", example)
    if status != 200:
        problems.append(f"the example request got {status} {answer}: the model cannot score {example}")
        return example, answer
    if call(service.base, "POST", "/predict", example) != (200, answer):
        problems.append("a retry of the example request got another answer")
    status, updated = call(service.base, "POST", "/update", {"id": 1, "true_class": card["positive_class"]})
    if status != 200 or updated.get("true_class") != 1:
        problems.append(f"/update with the positive class {card['positive_class']!r} got {status} {updated}")
    for feature in features:
        wrong = wrong_value(feature)
        if wrong is not None:
            body = {"id": 2, "observation": {**example["observation"], feature["name"]: wrong}}
            status, refused = call(service.base, "POST", "/predict", body)
            if status != 400 or feature["name"] not in refused.get("error", ""):
                problems.append(
                    f"{feature['name']}={wrong!r} should be a 400 naming it; got {status} {refused}"
                )
    for number, row in enumerate(rows, start=100):
        status, scored = call(service.base, "POST", "/predict", {"id": number, "observation": row})
        if status != 200:
            problems.append(f"sample row {number - 100} got {status}: {scored.get('error')}")
        elif not 0 <= scored["proba"] <= 1 or (
            isinstance(scored["proba"], float) and math.isnan(scored["proba"])
        ):
            problems.append(f"sample row {number - 100} got a proba outside [0, 1]: {scored['proba']}")
    check_drift(service, card, problems)
    return example, answer


def check_drift(service, card, problems):
    status, drift = call(service.base, "GET", "/drift")
    found = drift.get("by_model_version", {}).get(card["model_version"], {})
    if status != 200:
        problems.append(f"GET /drift got {status} {drift}")
    elif "missing" not in card["training_profile"] and not found.get("rows"):
        problems.append(f"GET /drift compared no row with the training profile: {drift}")


def describe_feature(feature):
    line = f"  {feature['name']}: {feature['dtype']} -> {feature['accepts']}"
    categories = feature.get("categories", [])
    if categories:
        line += f", one of {categories[:10]}"
        line += f" and {len(categories) - 10} more" if len(categories) > 10 else ""
    return line


def report(card, example, answer, rows, sample, problems):
    classes, positive = card["classes"], card["positive_class"]
    print(
        f"model {card['model_version']}: classes {classes}; /predict answers the probability of {positive!r}"
    )
    print(f"/update takes true_class as {card['true_class_accepts']}")
    print("features:", *map(describe_feature, card["features"]), sep="\n")
    profile = card["training_profile"]
    if "missing" in profile:
        print(f"training profile: none; {profile['missing']}")
    else:
        print(f"training profile: {profile['training_rows']} rows; test ROC AUC {profile['test_roc_auc']}")
    print(f"called through {describe_path(card['calls'])}")
    print(f"sample rows scored: {len(rows)}" + (f" from {sample}" if sample else " (no sample file)"))
    print("example:")
    curl = "curl -s -X POST http://localhost:5000/predict -H 'Content-Type: application/json' -d"
    print(f"  {curl} {shlex.quote(json.dumps(example))}")
    print(f"  {json.dumps(answer)}")
    print(f"problems: {len(problems)}")
    for problem in problems:
        print(f"  - {problem}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path(os.environ.get("ARTIFACTS_DIR") or REPO))
    parser.add_argument("--sample", type=Path, help="a CSV with the model's columns, e.g. the training data")
    args = parser.parse_args(argv)
    problems = []
    columns, meta = check_artifacts(args.artifacts, problems)
    if columns is None:
        print(f"problems: {len(problems)}\n  - {problems[0]}")
        return 1
    trained_on = meta.get("trained_on")  # only from a model_meta.json written for this pipeline
    sample = args.sample or (args.artifacts / trained_on if trained_on else None)
    sample = sample if sample and sample.is_file() else None
    try:
        rows = sample_rows(sample, columns) if sample else []
    except ValueError as exc:
        problems.append(str(exc))
        rows = []
    with (
        tempfile.TemporaryDirectory(prefix="check-model-") as scratch,
        start_service(args.artifacts, scratch) as service,
    ):
        card = call(service.base, "GET", "/model")[1]
        example, answer = exercise(service, card, rows, problems)
        problems += [line for line in service.output().splitlines() if line.startswith("WARNING")]
    report(card, example, answer, rows, sample, problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
