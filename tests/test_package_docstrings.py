"""Every package says in one line what it is: the first line of its
docstring is a whole sentence, followed by nothing or by a blank line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("coordinator", "client", "cluster", "chaos", "saga", "twopc", "consensus", "grammar")
PACKAGES = sorted(init for folder in FOLDERS for init in (REPO / folder).rglob("__init__.py"))


def test_every_folder_is_found() -> None:
    assert len(PACKAGES) >= len(FOLDERS)


@pytest.mark.parametrize("init", PACKAGES, ids=lambda p: str(p.parent.relative_to(REPO)))
def test_the_package_docstring_starts_with_one_line(init: Path) -> None:
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert docstring, f"{init.relative_to(REPO)} has no docstring"
    lines = docstring.splitlines()
    assert lines[0].endswith("."), f"{init.relative_to(REPO)}: the first line is not a whole sentence: {lines[0]!r}"
    assert len(lines) == 1 or not lines[1].strip(), f"{init.relative_to(REPO)}: the first line runs on: {lines[:2]}"
