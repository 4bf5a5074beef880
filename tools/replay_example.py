"""Replay the passengers Step 1 held back through a live service, with their true outcomes, then
run Step 3 and Step 4 on the database that fills.

    python -m tools.replay_example            check that their committed outputs are current
    python -m tools.replay_example --write    run them and save them with their outputs

The committed Step 3 and Step 4 are made with --write; the test suite runs the check, so the
outputs a reader sees on GitHub cannot go stale unnoticed. The example model
(tools/example_model/) is used, whatever model sits at the top of the repository; Step 4 writes
its challenger/ into a copy of it.
"""

import argparse
import difflib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pandas as pd
from nbclient import NotebookClient
from sklearn.model_selection import train_test_split

from tools.servers import EXAMPLE_DIR, REPO, LiveServer

STEP_3 = REPO / "Step 3 - Monitor predictions.ipynb"
STEP_4 = REPO / "Step 4 - Retrain on what was served.ipynb"


def held_back_passengers():
    """The test split of Step 1: passengers the model never saw."""
    passengers = pd.read_csv(EXAMPLE_DIR / "titanic.csv")
    _, held_back = train_test_split(passengers, test_size=0.2, random_state=42, stratify=passengers.Survived)
    return held_back


def replay(server, passengers):
    """Predict each passenger, then send its outcome; return the probas answered."""
    columns = json.loads((EXAMPLE_DIR / "columns.json").read_text())
    probas = []
    for passenger_id, passenger in passengers.iterrows():
        observation = json.loads(passenger[columns].to_json())  # NaN becomes null
        answer = server.post("/predict", {"id": int(passenger_id), "observation": observation})
        probas.append(answer.json()["proba"])
        outcome = server.post("/update", {"id": int(passenger_id), "true_class": int(passenger.Survived)})
        outcome.raise_for_status()
    return probas


def run_step_3(database_url, artifacts_dir=EXAMPLE_DIR):
    """Step 3 executed on a fresh kernel against that database; the notebook with its outputs."""
    return run(STEP_3, database_url, artifacts_dir)


def run_step_4(database_url, artifacts_dir):
    """Step 4 likewise: it writes challenger/ into artifacts_dir (never the example's own)."""
    return run(STEP_4, database_url, artifacts_dir)


def run(path, database_url, artifacts_dir):
    notebook = nbformat.read(path, as_version=4)
    saved = os.environ.copy()
    os.environ.update(DATABASE_URL=database_url, ARTIFACTS_DIR=str(artifacts_dir))
    try:
        NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return notebook


def text_outputs(notebook):
    """What each code cell printed, as text (the plots are left out: their pixels may vary)."""
    return [
        "".join(
            output.get("text", "") or output.get("data", {}).get("text/plain", "")
            for output in cell.get("outputs", [])
            if output.get("output_type") in ("stream", "execute_result")
        )
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]


def replayed():
    """{path: the notebook run on the replayed passengers}, for Step 3 and Step 4."""
    with tempfile.TemporaryDirectory(prefix="replay-") as scratch:
        url = f"sqlite:///{scratch}/replay.db"
        with LiveServer(url, workers=1) as server:
            replay(server, held_back_passengers())
        artifacts = shutil.copytree(EXAMPLE_DIR, Path(scratch) / "artifacts")
        return {STEP_3: run_step_3(url), STEP_4: run_step_4(url, artifacts)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="save Step 3 and Step 4 with the new outputs")
    args = parser.parse_args()
    stale = False
    for path, notebook in replayed().items():
        if args.write:
            for cell in notebook.cells:  # no kernel run times in the committed file
                cell.get("metadata", {}).pop("execution", None)
            nbformat.write(notebook, path)
            print(f"wrote {path.name}")
            continue
        found = differences(notebook, path)
        if found:
            print(f"{path.name}'s committed outputs are stale; run: python -m tools.replay_example --write")
            print("\n".join(found))
            stale = True
    if not args.write and not stale:
        print("the committed outputs are current")
    return 1 if stale else 0


def differences(notebook, committed=STEP_3):
    """How the text the notebook printed differs from the committed one's (none: current)."""
    before = "\n".join(text_outputs(nbformat.read(committed, as_version=4))).splitlines()
    fresh = "\n".join(text_outputs(notebook)).splitlines()
    return list(difflib.unified_diff(before, fresh, "committed", "replayed", lineterm=""))


if __name__ == "__main__":
    sys.exit(main())
