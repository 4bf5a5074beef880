"""The README and docs/ are the manual: their commands run, their answers are real, their code is
the code's, and their lists of settings, routes and statuses are the ones the code has."""

import json
import os
import pickle
import re
import signal
import subprocess
import time

import pytest
import requests

from service import schema
from service.errors import STATUSES
from service.routes import LISTED
from service.settings import DEFAULTS
from tools.servers import EXAMPLE_DIR, REPO, LiveServer, free_port

# In the order their requests are sent: each page's curls continue the ones before.
PAGES = ["README.md", *(f"docs/{name}.md" for name in ("operations", "monitoring", "deploying"))]
PAGES += [f"docs/{name}.md" for name in ("security", "performance", "testing", "internals")]
NOT_RUN_HERE = {
    "make test": "the suite itself; CI runs it through .ci/run",
    "make check": "the half of make test that needs no server; test_make_check_... checks what it runs",
}
# Run by other tests: test_deploy.py (make run), test_bench.py, test_your_model.py (make check-model)
# and below (make notebooks).
RUN_ELSEWHERE = {
    "make run",
    "make bench",
    "make bench-reload",
    "make bench-soak",
    "make notebooks",
    "make check-model",
}
# Any ISO 8601 time passes for these, and for every key ending in _at.
TIMESTAMPS = {"as_of", "since", "start", "first_hour_served", "last_hour_served"}


def text(page):
    return (REPO / page).read_text()


def blocks(page, language):
    return re.findall(rf"^```{language}\n(.*?)^```", text(page), flags=re.S | re.M)


def console_examples(pages=PAGES):
    """(command, expected output) for every `$ ` line in the pages' console blocks, in order."""
    examples = []
    for page in pages:
        for block in blocks(page, "console"):
            for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
                command, _, output = chunk.partition("\n")
                examples.append((command, output.strip()))
    return examples


def section(page, heading):
    return text(page).split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


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
    commands = [command for command, _ in console_examples(["README.md"])]
    assert commands[:2] == ["make run", "make test"]


def test_every_page_of_the_docs_is_linked_from_the_readme_and_says_whom_it_is_for():
    pages = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md"))
    assert pages == sorted(PAGES[1:])
    for page in pages:
        assert f"`{page}`" in section("README.md", "Learn more"), page
        first_paragraph = text(page).split("\n\n")[1]
        assert first_paragraph.startswith("For "), page


def test_every_command_shown_is_run_by_a_test():
    examples = console_examples()
    others = {command for command, _ in examples if not command.startswith("curl ")}
    others -= RUN_ELSEWHERE | {"LIST_DB_TOKEN=change-me make run"}
    assert others <= set(NOT_RUN_HERE), f"commands no test runs: {others - set(NOT_RUN_HERE)}"


@pytest.mark.slow
def test_every_curl_example_gets_the_response_shown(tmp_path, prod_venv):
    """Started as the README says, on a fresh database (the example model, whatever is at the top);
    the README's requests first, then each page's, in PAGES' order."""
    examples = console_examples()
    curls = [(command, output) for command, output in examples if command.startswith("curl ")]
    assert len(curls) >= 15
    *assignments, _make, _run = ["LIST_DB_TOKEN=change-me", "make", "run"]
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


def test_every_line_of_python_shown_is_in_the_code():
    code = [REPO / "app.py", REPO / "gunicorn.conf.py", *(REPO / "service").rglob("*.py")]
    lines = {line.strip() for path in code for line in path.read_text().splitlines()}
    for page in PAGES:
        for block in blocks(page, "python"):
            for line in block.splitlines():
                assert not line.strip() or line.strip() in lines, (page, line)


def test_the_configuration_table_lists_exactly_the_settings_with_their_defaults():
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", section("README.md", "Configuration"), flags=re.M)
    assert [name for name, _ in rows] == list(DEFAULTS)
    for name, shown in rows:
        default = DEFAULTS[name][0]
        if isinstance(default, (int, float, str)) and not isinstance(default, bool) and default != "":
            assert shown.startswith(f"`{default:g}`" if isinstance(default, float) else f"`{default}`"), name


def test_the_readme_lists_the_routes_of_the_route_table():
    rows = re.findall(r"^\| `(\w+ \S+)` \| (.*) \|$", section("README.md", "Calling the service"), flags=re.M)
    assert [(key, summary.replace("\\|", "|")) for key, summary in rows] == [
        (route.key, route.summary) for route in LISTED
    ]


def test_the_readme_names_every_error_status():
    paragraph = next(
        part for part in text("README.md").split("\n\n") if part.startswith("Every error is JSON")
    )
    assert {int(status) for status in re.findall(r"\b([45]\d\d)\b", paragraph)} == set(STATUSES)


def test_the_worst_case_row_size_shown_is_what_the_example_model_stores():
    columns = json.loads((EXAMPLE_DIR / "columns.json").read_text())
    dtypes = pickle.loads((EXAMPLE_DIR / "dtypes.pickle").read_bytes())
    checker = schema.RequestSchema(columns, dtypes)  # the default MAX_STRING_CHARS
    worst_values = {"string": "\x00" * checker.max_string_chars, "number": -2.2250738585072014e-308}
    worst_values |= {"integer": -(2**63), "string or number": "\x00" * checker.max_string_chars}
    worst = {column: worst_values[checker.kinds[column]] for column in columns}
    stored = checker.observation({"id": 1, "observation": worst}).stored_form
    assert f"{len(stored.encode()):,} bytes of `observation` per row" in " ".join(
        text("docs/security.md").split()
    )


def test_the_request_bodies_shown_conform_to_the_openapi_document(tmp_path):
    """The bodies shown refused for a field (a 400 naming it) do not conform; every other does,
    including those answered 404 or 409, which no schema can foresee."""
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
            request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
            valid = Draft202012Validator({**request_schema, **document}).is_valid(json.loads(body.group(1)))
            verdicts.append((valid, json.loads(output).get("error", "")))
    assert len(verdicts) >= 7
    for valid, error in verdicts:
        assert valid == (not error.startswith("'")), error
    assert any(not valid for valid, _ in verdicts)
    service.DB.close_all()


def make(*args, timeout=600):
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_make_check_runs_the_linters_and_every_test_that_needs_no_server():
    commands = make("--dry-run", "check").stdout
    assert "ruff check ." in commands
    assert "ruff format --check ." in commands
    assert re.search(r"pytest .*-m 'not slow'", commands), commands


@pytest.mark.slow
def test_make_notebooks_opens_jupyterlab_on_the_three_notebooks():
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
            "Step 4 - Retrain on what was served.ipynb",
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
