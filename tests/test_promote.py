"""Switching models (tools/promote.py, `make promote` and `make rollback`): the challenger's files
become the running model's and the replaced ones wait in previous/; a rollback trades them back;
a challenger the service would refuse is not promoted, and nothing moves."""

import hashlib
import shutil
import subprocess
import sys

import pytest

from models import titanic_challenger
from service import model
from tools.servers import EXAMPLE_DIR, REPO


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    return titanic_challenger(tmp_path_factory.mktemp("forest") / "forest")


def run(artifacts, *args):
    command = [sys.executable, "-m", "tools.promote", "--artifacts", str(artifacts), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def version(directory):
    return hashlib.sha256((directory / "pipeline.pickle").read_bytes()).hexdigest()[:12]


def example_with(tmp_path, challenger_dir=None):
    artifacts = tmp_path / "artifacts"
    shutil.copytree(EXAMPLE_DIR, artifacts)
    if challenger_dir is not None:
        shutil.copytree(challenger_dir, artifacts / "challenger")
    return artifacts


def test_promote_then_rollback_then_rollback_again(tmp_path, forest):
    artifacts = example_with(tmp_path, forest)
    example, challenger = version(artifacts), version(forest)

    promoted = run(artifacts)

    assert promoted.returncode == 0, promoted.stderr
    assert (
        f"promoted: the running model is now {challenger} (was {example}, kept in previous/)"
        in promoted.stdout
    )
    assert "git add -A pipeline.pickle" in promoted.stdout
    assert (version(artifacts), version(artifacts / "previous")) == (challenger, example)
    assert sorted(path.name for path in (artifacts / "challenger").iterdir()) == [
        "held_back.csv",
        "training.csv",
    ]
    running = model.load(artifacts, 1000, fast=False)  # the five files agree with each other
    assert running.meta["pipeline_sha256"].startswith(challenger)
    assert running.profile is not None

    rolled_back = run(artifacts, "--rollback")

    assert rolled_back.returncode == 0, rolled_back.stderr
    assert f"rolled back: the running model is now {example} again ({challenger} is kept in previous/)" in (
        rolled_back.stdout
    )
    assert (version(artifacts), version(artifacts / "previous")) == (example, challenger)
    assert model.load(artifacts, 1000, fast=False).meta["pipeline_sha256"].startswith(example)
    assert run(artifacts, "--rollback").returncode == 0  # undoes the rollback
    assert (version(artifacts), version(artifacts / "previous")) == (challenger, example)


def test_a_challenger_the_service_would_refuse_is_not_promoted(tmp_path, other_model_dirs):
    artifacts = example_with(tmp_path, other_model_dirs["mixed-dtypes-string-labels"])
    before = {path.name: path.read_bytes() for path in artifacts.iterdir() if path.is_file()}

    refused = run(artifacts)

    assert refused.returncode == 1
    assert (
        "the challenger is not promoted, and nothing changed: its classes are ['churn', 'stay']"
        in refused.stderr
    )
    assert {path.name: path.read_bytes() for path in artifacts.iterdir() if path.is_file()} == before
    assert not (artifacts / "previous").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "no challenger to promote"), (("--rollback",), "nothing to roll back to")],
)
def test_with_nothing_to_switch_to_it_says_so(tmp_path, args, message):
    found = run(example_with(tmp_path), *args)
    assert found.returncode == 1
    assert message in found.stderr
