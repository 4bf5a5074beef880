"""Retrain the running model on what it served: Step 4's cells, and `make retrain` without Jupyter.

Contract:
- `served(source, running)`: the labelled predictions the service stored, as a `Served`: the
  features as a DataFrame with the training dtypes (the service's own RequestSchema.frame), the
  outcomes in the model's labels, and when each was made, oldest first. `source` is
  - a database URL (sqlite:///predictions.db, postgresql://...): its predictions table;
  - a running service's URL (https://...): GET /list-db-contents, page by page (`token`: the
    service's LIST_DB_TOKEN);
  - an archive CSV (`make archive`'s file).
  `running` is the model.Model whose requests those were.
- `Served.split_in_time(recent_share)`: (older, most recent): a split in time, not a random one,
  so that the evaluation asks what the next weeks will: how each model does on the newest people.
- `training_data(running, directory)`: the rows the running model was trained from (the file
  model_meta.json names), or FileNotFoundError saying what to do.
- `retrain(running, training, served, held_out)`: a fresh copy of the running pipeline (same
  steps, same settings: scikit-learn's clone) fitted on the training data and the served rows
  together (training None: the served rows only). For each served or held-out row, a training
  row with the same features is left out: a person in both counts once, and is never trained on
  when evaluated on.
- `evaluate(running, challenger, recent)`: both models on the same recent rows, compared
  (service/monitoring/comparison.py).
- `describe(found)`: the comparison as lines of text.
- `write_model(directory, pipeline, X, y, target, tested)`: Step 1's files for any fitted
  pipeline (the tests' models are written by it too).
- `write_challenger(pipeline, X, y, directory, recent, target)`: the five files Step 1 writes, for the
  new pipeline, into `directory` (challenger/ beside the running model's: the service then
  scores with it in shadow, docs/monitoring.md), with the data it was trained on as training.csv.

    python -m tools.retrain SOURCE [--token T] [--recent-share 0.2] [--mix both|served] [--artifacts DIR]
"""

import argparse
import json
import pickle
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import joblib
import pandas as pd
from playhouse.db_url import connect
from sklearn.base import clone

from service import artifacts, model, settings
from service.monitoring import comparison, profile
from tools.servers import REPO

TABLE = "prediction"


@dataclass
class Served:
    X: pd.DataFrame
    y: pd.Series
    created_at: pd.Series

    def __len__(self):
        return len(self.y)

    def split_in_time(self, recent_share=0.2):
        cut = len(self) - max(1, round(len(self) * recent_share))
        older = Served(self.X.iloc[:cut], self.y.iloc[:cut], self.created_at.iloc[:cut])
        recent = Served(self.X.iloc[cut:], self.y.iloc[cut:], self.created_at.iloc[cut:])
        return older, recent


def served(source, running, token=""):
    source = str(source)
    if source.startswith(("http://", "https://")):
        records = from_service(source, token)
    elif source.endswith(".csv"):
        records = pd.read_csv(source, dtype={"observation": str}).to_dict("records")
    else:
        records = from_database(source)
    return as_served(records, running)


def from_database(url):
    database = connect(url)
    try:
        query = f"SELECT observation, true_class, created_at FROM {TABLE} WHERE true_class IS NOT NULL"
        cursor = database.execute_sql(query)
        return [dict(zip(("observation", "true_class", "created_at"), row, strict=True)) for row in cursor]
    finally:
        database.close()


def from_service(base, token, per_page=1000):
    records, page = [], 1
    while True:
        request = urllib.request.Request(
            f"{base.rstrip('/')}/list-db-contents?page={page}&per_page={per_page}",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            found = json.load(answer)["predictions"]
        records += found
        if len(found) < per_page:
            return records
        page += 1


def as_served(records, running):
    """The labelled records, oldest first, as a frame with the training dtypes and the labels."""
    labelled = [record for record in records if not pd.isna(record["true_class"])]
    labelled.sort(key=lambda record: str(record["created_at"]))
    features = [json.loads(record["observation"]) for record in labelled]
    X = running.schema.frame([{column: row.get(column) for column in running.columns} for row in features])
    classes = running.pipeline.classes_
    y = pd.Series([classes[int(record["true_class"])] for record in labelled], name="outcome")
    created_at = pd.to_datetime(pd.Series([record["created_at"] for record in labelled]), format="mixed")
    return Served(X, y, created_at)


def training_data(running, directory):
    """The rows the running model was trained from: the file model_meta.json names, with its target."""
    if "trained_on" not in running.meta or not (directory / running.meta["trained_on"]).is_file():
        raise FileNotFoundError(
            "model_meta.json names no training file that is here: retrain on the served rows only "
            "(--mix served), or write model_meta.json with Step 1's cells"
        )
    path, target = directory / running.meta["trained_on"], running.meta["target"]
    data = pd.read_csv(path)
    return data[running.columns].astype(running.dtypes), data[target]


def without(training, served_rows):
    """The training rows, less one for each served row with the same features: a person both in
    the training file and served (the example replays passengers from its own training file)
    counts once, as served, and none held out to evaluate is trained on."""
    X, y = training
    keys = X.columns.tolist()
    served_counts = served_rows.X.groupby(keys, dropna=False, observed=True).size().rename("_served")
    ranked = X.assign(_rank=X.groupby(keys, dropna=False, observed=True).cumcount().to_numpy())
    found = ranked.merge(served_counts.reset_index(), on=keys, how="left")
    keep = (found["_rank"] >= found["_served"].fillna(0)).to_numpy()
    return X[keep].reset_index(drop=True), pd.Series(y)[keep].reset_index(drop=True)


def retrain(running, training, served_rows, held_out=None):
    """(the new pipeline, the rows it was fitted on, their outcomes); training None: served only.
    Training rows that are also served ones (`served_rows` or `held_out`) are left out."""
    if training is not None:
        for rows in (served_rows, held_out):
            training = training if rows is None else without(training, rows)
    parts = [served_rows.X] if training is None else [training[0], served_rows.X]
    outcomes = [served_rows.y] if training is None else [training[1], served_rows.y]
    X, y = pd.concat(parts, ignore_index=True), pd.concat(outcomes, ignore_index=True)
    return clone(running.pipeline).fit(X, y), X, y


def evaluate(running_pipeline, challenger_pipeline, recent):
    truth = (recent.y == running_pipeline.classes_[1]).astype(int).to_numpy()
    probas = [pipeline.predict_proba(recent.X)[:, 1] for pipeline in (running_pipeline, challenger_pipeline)]
    return comparison.compare(truth, *probas)


def write_model(directory, pipeline, X, y, target, tested):
    """Step 1's five files for `pipeline`, fitted on (X, y), and those rows as training.csv, into
    `directory`; the profile's test figures are the `tested` (X, y) rows'. The version."""
    directory.mkdir(parents=True, exist_ok=True)
    X.assign(**{target: y}).to_csv(directory / "training.csv", index=False)
    joblib.dump(pipeline, directory / "pipeline.pickle")
    (directory / "columns.json").write_text(json.dumps(X.columns.tolist()))
    with (directory / "dtypes.pickle").open("wb") as fh:
        pickle.dump(X.dtypes, fh)
    sha256 = artifacts.write_training_meta(directory, pipeline, "training.csv", target)["pipeline_sha256"]
    X_test, y_test = tested
    probas = pipeline.predict_proba(X_test)[:, 1]
    profile.write(profile.build(X, sha256, probas, y_test == pipeline.classes_[1]), directory)
    return sha256[:12]


def write_challenger(pipeline, X, y, directory, recent, target):
    """write_model() into `directory` (challenger/), tested on the recent served rows."""
    return write_model(directory, pipeline, X, y, target, (recent.X, recent.y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a database URL, a running service's URL, or an archive CSV")
    parser.add_argument("--token", default="", help="the service's LIST_DB_TOKEN (for a service's URL)")
    parser.add_argument(
        "--recent-share", type=float, default=0.2, help="the newest rows held out to evaluate"
    )
    parser.add_argument("--artifacts", type=Path, default=REPO, help="where the running model's files are")
    parser.add_argument(
        "--mix",
        choices=["both", "served"],
        default="both",
        help="train on the training data and the served rows, or the served rows only",
    )
    args = parser.parse_args(argv)
    running = model.load(args.artifacts, settings.read().MAX_STRING_CHARS, fast=False)
    rows = served(args.source, running, args.token)
    if len(rows) < 10:
        print(f"only {len(rows)} labelled predictions: too few to retrain on", file=sys.stderr)
        return 1
    older, recent = rows.split_in_time(args.recent_share)
    try:
        training = training_data(running, args.artifacts) if args.mix == "both" else None
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    challenger, X, y = retrain(running, training, older, held_out=recent)
    found = evaluate(running.pipeline, challenger, recent)
    version = write_challenger(
        challenger,
        X,
        y,
        args.artifacts / model.CHALLENGER_FOLDER,
        recent,
        running.meta.get("target", "outcome"),
    )
    trained_with = "the training data" if training is not None else "nothing else"
    print(report(running.version, version, len(older), found, trained_with))
    return 0


def report(running_version, challenger_version, older_rows, found, trained_with):
    lines = [
        f"challenger {challenger_version}: trained on {older_rows} served rows and {trained_with},",
        f"evaluated with {running_version} on the {found['pairs']} most recent served rows:",
        describe(found),
        f"written to {model.CHALLENGER_FOLDER}/: deploy it to score in shadow",
    ]
    return "\n".join(lines)


def describe(found):
    """The comparison's figures and verdict, a line each."""
    lines = []
    for name, figures in found["metrics"].items():
        if figures["difference"] is None:
            lines.append(f"  {name}: undefined on these rows (it needs both outcomes)")
            continue
        low, high = figures["interval"] or (float("nan"), float("nan"))
        lines.append(
            f"  {name}: running {figures['running']:.4f}, challenger {figures['challenger']:.4f}, "
            f"difference {figures['difference']:+.4f} (95% interval {low:+.4f} to {high:+.4f})"
        )
    settle = (
        f", about {found['pairs_to_settle']} labelled pairs would settle it"
        if found["pairs_to_settle"]
        else ""
    )
    lines.append(f"  {found['verdict']}{settle}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
