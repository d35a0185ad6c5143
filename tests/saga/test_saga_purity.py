"""saga/ is pure: no IO, clocks, randomness or threads; small files and functions.

(Named test_saga_purity.py rather than test_purity.py: the tests/ folders
have no __init__.py, so test file names are kept unique across the tree,
as tests/twopc does.)
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "saga"
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
    "pathlib",
    "io",
    # the other packages of the project: saga stands alone
    "cluster",
    "consensus",
    "client",
    "chaos",
    "twopc",
}
ALLOWED = {"__future__", "collections", "dataclasses", "datetime", "enum", "json", "math", "re", "typing", "saga"}
FILE_LINES_MAX = 400
FUNCTION_LINES_MAX = 60


def imported_modules(path: pathlib.Path) -> set[str]:
    """Top-level names of every module `path` imports (plus "__import__"
    when it calls that builtin); relative imports stay inside the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Name) and node.id in ("__import__", "exec", "eval"):
            names.add(node.id)
    return names


def test_the_package_has_its_modules() -> None:
    names = {path.name for path in SOURCES}
    assert {"__init__.py", "definition.py", "limits.py", "errors.py", "substitution.py", "machine.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: pathlib.Path) -> None:
    found = imported_modules(path)
    assert not found & FORBIDDEN, f"{path.name} imports {sorted(found & FORBIDDEN)}"
    assert not found & {"__import__", "exec", "eval"}, path.name


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_only_allowed_imports(path: pathlib.Path) -> None:
    found = imported_modules(path)
    assert found <= ALLOWED, f"{path.name} imports {sorted(found - ALLOWED)}"


def test_the_import_check_sees_every_form_of_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os.path\nfrom time import monotonic\nfrom . import x\n"
        "def f():\n    import random as r\n    return __import__('uuid')\n"
    )
    assert imported_modules(sample) == {"os", "time", "random", "__import__"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_files_and_functions_stay_small(path: pathlib.Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) < FILE_LINES_MAX, path.name
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length < FUNCTION_LINES_MAX, f"{path.name}:{node.name} {length} lines"


def test_the_public_names_are_exported() -> None:
    from coordinator import saga

    assert sorted(saga.__all__) == sorted(set(saga.__all__))
    for name in saga.__all__:
        assert hasattr(saga, name), name


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_assert_statements(path: pathlib.Path) -> None:
    """`python -O` drops asserts: checks raise explicitly (errors.py: InputError, `invariant()`)."""
    asserts = [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert not asserts, f"{path.name}: assert on lines {asserts}"
