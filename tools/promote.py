"""Switch the running model to its challenger, or back: `make promote`, `make rollback`.

Contract: `python -m tools.promote [--rollback] [--artifacts DIR]` (DIR: where the running
model's files are, the repository by default).
- Promote: the challenger's files (model.MODEL_FILES in challenger/) become the running model's,
  the running model's move to previous/ (replacing any there), and challenger/ is removed once
  empty (other files, such as its training data, stay there). Only
  a challenger the service would serve is promoted (model.load_challenger: it loads, has the
  same classes, takes every request the running model takes); otherwise nothing moves, the
  reason is printed, and it exits 1.
- Rollback: the model in previous/ and the running one trade places, so the replaced model runs
  again and the one undone waits in previous/ (a second rollback undoes the first).
- Each prints the versions before and after, the files it moved, and the git commands that
  deploy the change: a switch is an ordinary deploy (commit, push; the platform's release runs).
Files move through a staging folder, renamed into place one at a time; the service reads them
only when it starts, so a service running meanwhile is not affected until it is restarted.
"""

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from service import model, settings
from tools.servers import REPO

PREVIOUS_FOLDER = "previous"


def version_of(directory):
    return hashlib.sha256((directory / "pipeline.pickle").read_bytes()).hexdigest()[:12]


def present(directory):
    return [name for name in model.MODEL_FILES if (directory / name).is_file()]


def swap(artifacts, incoming, outgoing):
    """The model files in `incoming` become the running ones; the running ones go to `outgoing`."""
    staging = artifacts / ".switching"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(incoming, staging)
    shutil.rmtree(outgoing, ignore_errors=True)
    outgoing.mkdir()
    for name in model.MODEL_FILES:
        if (artifacts / name).is_file():
            (artifacts / name).replace(outgoing / name)
        if (staging / name).is_file():
            (staging / name).replace(artifacts / name)
    shutil.rmtree(staging)


def promote(artifacts):
    challenger_dir = artifacts / model.CHALLENGER_FOLDER
    if not (challenger_dir / "pipeline.pickle").is_file():
        return fail(f"no challenger to promote: {challenger_dir} holds no pipeline.pickle")
    most_chars = settings.read().MAX_STRING_CHARS  # as the service will check the requests
    running = model.load(artifacts, most_chars, fast=False)
    challenger = model.load_challenger(challenger_dir, running, most_chars, fast=False)
    if not challenger.serves:
        return fail(f"the challenger is not promoted, and nothing changed: {challenger.refused}")
    before, after = running.version, challenger.model.version
    moved = present(challenger_dir)
    swap(artifacts, challenger_dir, artifacts / PREVIOUS_FOLDER)
    for name in moved:
        (challenger_dir / name).unlink()
    print(f"promoted: the running model is now {after} (was {before}, kept in {PREVIOUS_FOLDER}/)")
    print(f"moved {', '.join(moved)} from {model.CHALLENGER_FOLDER}/ to the top level")
    left = sorted(path.name for path in challenger_dir.iterdir())
    if left:
        print(f"left in {model.CHALLENGER_FOLDER}/, not being a model's files: {', '.join(left)}")
    else:
        challenger_dir.rmdir()
    return deploy_hint(f"Promote challenger {after} (replacing {before})")


def rollback(artifacts):
    previous_dir = artifacts / PREVIOUS_FOLDER
    if not (previous_dir / "pipeline.pickle").is_file():
        return fail(f"nothing to roll back to: {previous_dir} holds no pipeline.pickle")
    before, after = version_of(artifacts), version_of(previous_dir)
    held = artifacts / ".rolled-back"
    shutil.rmtree(held, ignore_errors=True)
    swap(artifacts, previous_dir, held)
    shutil.rmtree(previous_dir)
    held.rename(previous_dir)
    print(f"rolled back: the running model is now {after} again ({before} is kept in {PREVIOUS_FOLDER}/)")
    return deploy_hint(f"Roll back to model {after} (from {before})")


def deploy_hint(message):
    files = " ".join([*model.MODEL_FILES, model.CHALLENGER_FOLDER, PREVIOUS_FOLDER])
    print("to deploy it, commit and push as for any change (the platform's release runs as usual):")
    print(f'  git add -A {files} && git commit -m "{message}" && git push')
    return 0


def fail(message):
    print(message, file=sys.stderr)
    return 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollback", action="store_true", help="switch back to the model in previous/")
    parser.add_argument("--artifacts", type=Path, default=REPO, help="where the running model's files are")
    args = parser.parse_args(argv)
    return rollback(args.artifacts) if args.rollback else promote(args.artifacts)


if __name__ == "__main__":
    sys.exit(main())
