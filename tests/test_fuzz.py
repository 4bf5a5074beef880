"""/openapi.json as a client developer's tool reads it: schemathesis, every check, every phase
(its examples, coverage of each schema's edges, fuzzing, and the stateful phase that follows the
document's link from /predict to /update), against gunicorn as deployed with every token set, on
SQLite and on PostgreSQL. A failure prints schemathesis' report, with the curl that reproduces it.

The seed is fixed so that a run can be repeated; SCHEMATHESIS_SEED=random tries new inputs.
schemathesis.toml and schemathesis_hooks.py, beside this file, say what schemathesis is told and
why."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fresh_database_url

TOKEN = "fuzz-token"
TOKENS = {"WRITE_TOKEN": TOKEN, "MONITORING_TOKEN": TOKEN, "LIST_DB_TOKEN": TOKEN}
SEED = "20261206"
HERE = Path(__file__).parent


def schemathesis_command(base, report_dir):
    seed = os.environ.get("SCHEMATHESIS_SEED", SEED)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        "70",
        "--workers",
        "1",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
    ]
    return command + ([] if seed == "random" else ["--seed", seed])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_schemathesis_finds_nothing_the_document_and_the_service_disagree_on(
    backend, live_server, request, tmp_path_factory, tmp_path
):
    if shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("schemathesis is in requirements_dev.txt; run make test to install it")
    database_url = fresh_database_url(backend, f"fuzz_{backend}", request, tmp_path_factory)
    server = live_server(database_url, workers=2, env=TOKENS)

    # Its own working directory: schemathesis keeps a hypothesis database where it runs.
    run = subprocess.run(
        schemathesis_command(server.base, tmp_path / "report"),
        cwd=tmp_path,
        env=os.environ | {"SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(HERE)},
        capture_output=True,
        text=True,
        timeout=400,
    )

    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    print(summary)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    assert "API Links:    1 covered" in run.stdout  # the stateful phase followed /predict to /update
    assert "Traceback" not in server.output()
