"""The package's layout: no import cycle between its modules.

`make lint` checks the layers of pyproject.toml (lint-imports); this checks
what layers leave open: that no module imports itself back through others.
Every import counts, those under ``if TYPE_CHECKING:`` and those inside
functions too, so neither can hide a cycle.

The graph is grimp's (what import-linter reads). grimp walks the package
on disk, and in this checkout the folders become ``coordinator.*`` only
through setup.py's mapping, so the package is first installed into a
temporary directory, as a wheel would lay it out.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "coordinator"

# Run in a fresh interpreter, where `coordinator` is not imported yet and is
# found on PYTHONPATH (the installed copy), not through the editable install.
# Prints where the package was found and, for every module, the modules it
# imports with the lines that import them.
_GRAPH_SCRIPT = """
import importlib.util, json, sys
import grimp
package = sys.argv[1]
graph = grimp.build_graph(package, exclude_type_checking_imports=False, cache_dir=None)
edges = {
    importer: {
        imported: [
            f"line {d['line_number']}: {d['line_contents']}"
            for d in graph.get_import_details(importer=importer, imported=imported)
        ]
        for imported in sorted(graph.find_modules_directly_imported_by(importer))
    }
    for importer in sorted(graph.modules)
}
print(json.dumps({"origin": importlib.util.find_spec(package).origin, "edges": edges}))
"""

Graph = dict[str, dict[str, list[str]]]  # importer -> imported -> the import lines


def import_graph(path_entry: Path, package: str) -> Graph:
    """The import graph of ``package`` as found in ``path_entry``."""
    env = {**os.environ, "PYTHONPATH": str(path_entry)}
    found = subprocess.run(
        [sys.executable, "-c", _GRAPH_SCRIPT, package], cwd=path_entry, env=env, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert Path(answer["origin"]).is_relative_to(path_entry), f"{package} was read from {answer['origin']}"
    return answer["edges"]


def modules_on_disk(path_entry: Path, package: str) -> set[str]:
    names = set()
    for path in (path_entry / package).rglob("*.py"):
        parts = path.relative_to(path_entry).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.get(module, {}):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(graph) + 100))
    try:
        for module in sorted(graph):
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def one_cycle(graph: Graph, component: list[str]) -> list[str]:
    """A shortest way from the component's first module back to it, inside the component."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for imported in graph[module]:
            if imported not in members or imported in came_from:
                continue
            came_from[imported] = module
            if imported == start:
                path = [start]
                while path[-1] != start or len(path) == 1:
                    path.append(came_from[path[-1]])
                return path[::-1]
            queue.append(imported)
    raise AssertionError(f"no cycle through {start} in {component}")


def describe(graph: Graph, component: list[str]) -> str:
    path = one_cycle(graph, component)
    lines = [f"{len(component)} modules import each other: {', '.join(component)}", "  for one:"]
    for importer, imported in itertools.pairwise(path):
        lines.append(f"    {importer} -> {imported}  ({graph[importer][imported][0]})")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed as a wheel lays it out (setup.py maps client/ to coordinator.client ...)."""
    tmp = tmp_path_factory.mktemp("layout")
    source, target = tmp / "source", tmp / "installed"
    # Built from a copy, so that the build leaves nothing (build/, *.egg-info) in the checkout.
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "docs", "tests")
    )
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile"]
    built = subprocess.run([*pip, "--target", str(target), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return target


def test_no_module_imports_itself_through_others(installed: Path) -> None:
    graph = import_graph(installed, PACKAGE)
    assert set(graph) == modules_on_disk(installed, PACKAGE)  # the whole package was read
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, component) for component in found)


def test_imports_under_type_checking_and_inside_functions_count(tmp_path: Path) -> None:
    package = tmp_path / "ring"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ring import b\n")
    (package / "b.py").write_text("def late():\n    from ring import c\n")
    (package / "c.py").write_text("import ring.a\n")
    (package / "d.py").write_text("import ring.a\n")
    graph = import_graph(tmp_path, "ring")
    assert cycles(graph) == [["ring.a", "ring.b", "ring.c"]]
    assert one_cycle(graph, ["ring.a", "ring.b", "ring.c"]) == ["ring.a", "ring.b", "ring.c", "ring.a"]
    assert "ring.c -> ring.a  (line 1: import ring.a)" in describe(graph, ["ring.a", "ring.b", "ring.c"])
