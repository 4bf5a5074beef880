"""The house's shape (docs/internals.md): the top level shows the tutorial, app.py is a spine read
in one sitting, and the package's modules state their contract and are handed what they need."""

import ast
import subprocess

from tools.example import REPO

TEST_MODULES = {"tests", "conftest", "models"}


def tracked(suffix):
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / name for name in listed.stdout.splitlines() if name.endswith(suffix)]


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_the_only_python_at_the_top_is_the_app_and_its_server_settings():
    top = {path.name for path in tracked(".py") if path.parent == REPO}
    assert top == {"app.py", "gunicorn.conf.py"}


def test_app_py_is_at_most_350_lines():
    assert len((REPO / "app.py").read_text().splitlines()) <= 350


def test_the_package_maps_name_every_module():
    """Written once, in each package's docstring: a line per module, its name first."""
    for package in (REPO / "service", REPO / "service" / "monitoring"):
        mapped = {
            name.rstrip(",")
            for line in ast.get_docstring(ast.parse((package / "__init__.py").read_text())).splitlines()
            for name in line.split()[:1]
        }
        modules = {path.stem for path in package.glob("*.py") if path.name != "__init__.py"}
        modules |= {path.name + "/" for path in package.iterdir() if (path / "__init__.py").exists()}
        assert modules - mapped == set(), f"{package.name}/__init__.py's map leaves them out"


def test_nothing_outside_the_tests_imports_from_them():
    def from_tests(path):
        return sorted(
            name for name in set(imported_modules(path)) if name in TEST_MODULES or name.startswith("test_")
        )

    outside = [path for path in tracked(".py") if path.relative_to(REPO).parts[0] != "tests"]
    found = {str(path.relative_to(REPO)): from_tests(path) for path in outside}
    assert {path: names for path, names in found.items() if names} == {}


def test_every_module_of_the_package_states_its_contract_and_never_imports_app():
    for path in tracked(".py"):
        if path.relative_to(REPO).parts[0] != "service" or path.name == "__init__.py":
            continue
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring"
        assert "app" not in set(imported_modules(path)), f"{path} imports app"
