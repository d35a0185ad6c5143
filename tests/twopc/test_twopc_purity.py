"""twopc/ is pure: no IO, clocks, randomness or threads; small files and functions.

(Named test_twopc_purity.py, not test_purity.py: tests/ folders have no
__init__.py, so pytest needs test file names unique across the tree.)
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "twopc"
SOURCES = sorted(PACKAGE.glob("*.py"))

FORBIDDEN = {
    "asyncio",
    "time",
    "random",
    "uuid",
    "aiohttp",
    "grpc",
    "pysyncobj",
    "socket",
    "threading",
    "os",
    "subprocess",
    "multiprocessing",
    "secrets",
    "importlib",
    "signal",
    "selectors",
    "concurrent",
    "sys",
}
ALLOWED = {"__future__", "collections", "dataclasses", "datetime", "enum", "json", "math", "re", "typing", "twopc"}
FILE_LINES_MAX = 400
FUNCTION_LINES_MAX = 60


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Name) and node.id == "__import__":
            names.add("__import__")
    return names


def test_the_package_has_sources() -> None:
    names = {path.name for path in SOURCES}
    assert {"__init__.py", "definition.py", "machine.py", "tally.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: pathlib.Path) -> None:
    found = imported_modules(path)
    assert not found & FORBIDDEN, f"{path.name} imports {sorted(found & FORBIDDEN)}"
    assert "__import__" not in found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_only_allowed_imports(path: pathlib.Path) -> None:
    found = imported_modules(path)
    assert found <= ALLOWED, f"{path.name} imports {sorted(found - ALLOWED)}"


def test_the_import_check_catches_a_forbidden_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os.path\nfrom time import monotonic\nfrom . import x\n")
    assert imported_modules(sample) == {"os", "time"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_files_and_functions_stay_small(path: pathlib.Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) < FILE_LINES_MAX
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length < FUNCTION_LINES_MAX, f"{path.name}:{node.name} {length} lines"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_assert_statements(path: pathlib.Path) -> None:
    """`python -O` drops asserts: checks raise explicitly (errors.py: InputError, `invariant()`)."""
    asserts = [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert not asserts, f"{path.name}: assert on lines {asserts}"
