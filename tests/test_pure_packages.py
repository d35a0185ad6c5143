"""saga/, twopc/ and grammar/ are pure: no IO, clocks, randomness or threads;
small files and functions; no assert; and each imports only the standard
modules below and the project's packages it is allowed (the machines: the
grammar they share; pyproject.toml's import-linter contracts say the same).

One test for the three packages, so that the rules are the same for each.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# package folder -> the project's modules it may import (absolute imports)
PROJECT_IMPORTS = {"saga": {"coordinator.grammar"}, "twopc": {"coordinator.grammar"}, "grammar": set()}
STANDARD = {"__future__", "collections", "dataclasses", "datetime", "enum", "json", "math", "re", "typing"}
FILE_LINES_MAX = 400
FUNCTION_LINES_MAX = 60

SOURCES = [(package, path) for package in sorted(PROJECT_IMPORTS) for path in sorted((ROOT / package).glob("*.py"))]
IDS = [f"{package}/{path.name}" for package, path in SOURCES]


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, by its absolute dotted name ("json",
    "coordinator.grammar"; `from coordinator import twopc` is
    "coordinator.twopc"), plus the names of the builtins that import or run
    code ("__import__", "exec", "eval") it uses. Relative imports stay inside
    the package and are left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "coordinator":
                names.update(f"coordinator.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
        elif isinstance(node, ast.Name) and node.id in ("__import__", "exec", "eval"):
            names.add(node.id)
    return names


def allowed(package: str, module: str) -> bool:
    if module.split(".")[0] in STANDARD:
        return True
    return any(module == ok or module.startswith(ok + ".") for ok in PROJECT_IMPORTS[package])


def test_each_package_has_its_modules() -> None:
    names = {package: {path.name for p, path in SOURCES if p == package} for package in PROJECT_IMPORTS}
    assert {"__init__.py", "definition.py", "limits.py", "errors.py", "machine.py", "substitution.py"} <= names["saga"]
    assert {"__init__.py", "definition.py", "limits.py", "errors.py", "machine.py", "tally.py"} <= names["twopc"]
    assert {"__init__.py", "checks.py", "limits.py", "errors.py"} <= names["grammar"]


@pytest.mark.parametrize("package, path", SOURCES, ids=IDS)
def test_only_allowed_imports(package: str, path: pathlib.Path) -> None:
    refused = sorted(module for module in imported_modules(path) if not allowed(package, module))
    assert not refused, f"{package}/{path.name} imports {refused}"


def test_the_import_check_sees_every_form_of_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os.path\nfrom time import monotonic\nfrom . import x\nfrom coordinator import twopc\n"
        "from coordinator.grammar import field\n"
        "def f():\n    import random as r\n    return __import__('uuid')\n"
    )
    found = imported_modules(sample)
    assert found == {"os.path", "time", "random", "coordinator.twopc", "coordinator.grammar", "__import__"}
    assert [m for m in sorted(found) if allowed("saga", m)] == ["coordinator.grammar"]
    assert not any(allowed("grammar", m) for m in found)


@pytest.mark.parametrize("package, path", SOURCES, ids=IDS)
def test_files_and_functions_stay_small(package: str, path: pathlib.Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) < FILE_LINES_MAX, f"{package}/{path.name}"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length < FUNCTION_LINES_MAX, f"{package}/{path.name}:{node.name} {length} lines"


@pytest.mark.parametrize("package, path", SOURCES, ids=IDS)
def test_no_assert_statements(package: str, path: pathlib.Path) -> None:
    """`python -O` drops asserts: checks raise explicitly (InputError,
    `invariant()` in each machine's errors.py)."""
    asserts = [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert not asserts, f"{package}/{path.name}: assert on lines {asserts}"


@pytest.mark.parametrize("package", sorted(PROJECT_IMPORTS))
def test_the_public_names_are_exported(package: str) -> None:
    module = importlib.import_module(f"coordinator.{package}")
    assert sorted(module.__all__) == sorted(set(module.__all__))
    for name in module.__all__:
        assert hasattr(module, name), name
