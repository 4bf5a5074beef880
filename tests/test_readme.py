"""The README is the manual: its examples are run, its code is app.py's, its settings are real."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from support import REPO, LiveServer, free_port

pytestmark = pytest.mark.slow
README = (REPO / "README.md").read_text()
NOT_RUN_HERE = {"make test": "the suite itself; CI runs it through .ci/run"}
# The tests that run these: test_deploy.py (make run), this file (make bench, make notebooks).
RUN_ELSEWHERE = {"make run", "make bench", "make notebooks"}


def blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def console_examples():
    """(command, expected output) for every `$ ` line in the README's console blocks."""
    examples = []
    for block in blocks("console"):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            examples.append((command, output.strip()))
    return examples


TIMESTAMPS = {"as_of", "since", "start"}  # and every key ending in _at


def same_response(actual, expected):
    """Equal JSON, except that timestamps need only be ISO 8601 UTC."""
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(
                re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", actual[key])
                if (key.endswith("_at") or key in TIMESTAMPS) and expected[key] is not None
                else same_response(actual[key], expected[key])
                for key in expected
            )
        )
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(map(same_response, actual, expected))
    return actual == expected


def test_the_readme_has_both_quick_start_commands():
    commands = [command for command, _ in console_examples()]
    assert commands[:2] == ["make run", "make test"]


def test_every_curl_example_gets_the_response_shown(tmp_path):
    """Started as the README says, on a fresh database (the example model, whatever is at the top)."""
    examples = console_examples()
    curls = [(command, output) for command, output in examples if command.startswith("curl ")]
    [start] = [command for command, _ in examples if command.endswith(" make run")]
    others = (
        {command for command, _ in examples} - {command for command, _ in curls} - RUN_ELSEWHERE - {start}
    )
    assert others <= set(NOT_RUN_HERE), f"README commands no test runs: {others - set(NOT_RUN_HERE)}"
    assert len(curls) >= 10

    *assignments, _make, _run = start.split()
    server = LiveServer(
        f"sqlite:///{tmp_path}/readme.db",
        command=["make", "--no-print-directory", "run"],
        env=dict(assignment.split("=", 1) for assignment in assignments),
    )
    with server:
        for command, expected in curls:
            runnable = command.replace("http://localhost:5000", server.base)
            result = subprocess.run(["bash", "-c", runnable], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            assert same_response(json.loads(result.stdout), json.loads(expected)), (command, result.stdout)


def test_every_line_of_python_in_the_readme_is_in_the_code():
    app_lines = {line.strip() for path in REPO.glob("*.py") for line in path.read_text().splitlines()}
    for block in blocks("python"):
        for line in block.splitlines():
            assert not line.strip() or line.strip() in app_lines, line


def test_the_configuration_table_lists_exactly_the_settings_the_code_reads():
    code = (REPO / "app.py").read_text() + (REPO / "gunicorn.conf.py").read_text()
    read = set(re.findall(r"os\.environ\.get\(['\"](\w+)['\"]", code))
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M))
    assert read == documented


def test_make_bench_prints_the_table_and_finds_every_200_in_the_database():
    """The README's `make bench`, shortened to one 1-second run per figure."""
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "bench",
            "BENCH_ARGS=--seconds 1 --repeat 1 --sizes 1000 --postgresql-sizes --flood-rows 1000 "
            "--flood-seconds 2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    table = re.findall(r"^\| (?:sqlite|postgresql) \| (?:baseline|service) \|", result.stdout, flags=re.M)
    assert len(table) == 20, result.stdout + result.stderr  # 5 connection counts, 2 servers, 2 backends
    assert "met    every server: every 200 is a row in the database" in result.stdout
    assert "met    the service: zero errors" in result.stdout
    assert re.search(
        r"^postgresql: [\d.]+ s from starting gunicorn to the first 200", result.stdout, flags=re.M
    )
    assert re.search(r"^\| postgresql \| 1,000 \| [\d.]+ \|", result.stdout, flags=re.M)  # /stats timings
    assert re.search(r"^\| sqlite \| 1,000 \| [\d.]+ \| [\d.]+ \| [\d.]+x \| 0 \|", result.stdout, flags=re.M)


def test_make_bench_reload_prints_the_reload_table():
    """The README's `make bench-reload`, shortened to one reload of one run per setting."""
    result = subprocess.run(
        ["make", "--no-print-directory", "bench-reload", "BENCH_ARGS=--repeat 1 --reloads 1 --clients 4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| reuse_port")]
    assert len(rows) >= 2, result.stdout
    assert rows[1].startswith("| reuse_port off (GUNICORN_REUSE_PORT=0) | 0.0 |"), rows


def test_make_notebooks_opens_jupyterlab_on_the_three_notebooks(tmp_path):
    port = free_port()
    args = f"JUPYTER_ARGS=--no-browser --port={port} --ServerApp.token=test --allow-root"
    process = subprocess.Popen(
        ["make", "--no-print-directory", "notebooks", args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        contents = None
        deadline = time.monotonic() + 120
        while contents is None and time.monotonic() < deadline and process.poll() is None:
            try:
                contents = requests.get(f"http://127.0.0.1:{port}/api/contents?token=test", timeout=5).json()
            except requests.RequestException:
                time.sleep(0.5)
        notebooks = {item["name"] for item in contents["content"] if item["type"] == "notebook"}
        assert notebooks == {
            "Step 1 - Train and Serialize.ipynb",
            "Step 2 - Deserialize and use.ipynb",
            "Step 3 - Monitor predictions.ipynb",
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_the_worst_case_row_size_in_the_readme_is_what_the_example_model_stores():
    import json as json_module
    import pickle

    import schema

    columns = json_module.loads((REPO / "tests/example/columns.json").read_text())
    dtypes = pickle.loads((REPO / "tests/example/dtypes.pickle").read_bytes())
    checker = schema.RequestSchema(columns, dtypes)  # the default MAX_STRING_CHARS
    worst_values = {"string": "\x00" * checker.max_string_chars, "number": -2.2250738585072014e-308}
    worst_values |= {"integer": -(2**63), "string or number": "\x00" * checker.max_string_chars}
    worst = {column: worst_values[checker.kinds[column]] for column in columns}
    stored = checker.observation({"id": 1, "observation": worst}).stored_form
    assert f"{len(stored.encode()):,} bytes of `observation` per row" in " ".join(README.split())


def test_the_readmes_request_bodies_conform_to_the_openapi_document(tmp_path):
    """The bodies the README shows refused for a field (a 400 naming it) do not conform; every other
    does, including those answered 404 or 409, which no schema can foresee."""
    from jsonschema import Draft202012Validator
    from openapi_spec_validator import validate

    from conftest import import_app

    service = import_app(f"sqlite:///{tmp_path}/openapi.db")
    document = service.app.test_client().get("/openapi.json").get_json()
    validate(document)
    verdicts = []
    for command, output in console_examples():
        route, body = re.search(r"localhost:5000(/\w+)", command), re.search(r"-d '(.*?)'", command)
        if route and body and route.group(1) in ("/predict", "/update"):
            operation = document["paths"][route.group(1)]["post"]
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            valid = Draft202012Validator({**schema, **document}).is_valid(json.loads(body.group(1)))
            verdicts.append((valid, json.loads(output).get("error", "")))
    assert len(verdicts) >= 7
    for valid, error in verdicts:
        assert valid == (not error.startswith("'")), error
    assert any(not valid for valid, _ in verdicts)
