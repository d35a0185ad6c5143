"""No import cycle through the node's modules: the cluster's layers, the
consensus package and the simulator's nodes.

Every import counts: at the top of a module, under ``if TYPE_CHECKING:``
and inside a function - an import moved into a function or under
TYPE_CHECKING hides a cycle from the interpreter, not from a reader. A
lower layer that needs something of a higher one states it as a
typing.Protocol (e.g. ``NodeExecutor`` in cluster/core/node.py).

The graph is read from the source folders, mapped to ``coordinator.*`` as
setup.py maps them. A cycle fails this test when one of its modules is in
``SCOPE``; the client, chaos and the bench are freed of their cycles apart,
and SCOPE can grow to all of ``coordinator`` when they are.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCOPE = (
    "coordinator.cluster.api",
    "coordinator.cluster.core",
    "coordinator.cluster.executor",
    "coordinator.cluster.launcher",
    "coordinator.cluster.stores",
    "coordinator.consensus",
    "coordinator.chaos.sim.cluster",
    "coordinator.chaos.sim.node",
)


def _folders() -> tuple[str, ...]:
    """FOLDERS of setup.py: the folders installed as coordinator.<folder>."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FOLDERS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no FOLDERS")


def modules() -> dict[str, Path]:
    found = {}
    for folder in ("coordinator", *_folders()):
        base = ROOT / folder
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            prefix = ["coordinator"] if folder == "coordinator" else ["coordinator", folder]
            found[".".join(prefix + parts)] = path
    return found


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    targets = set()
    for name in names:
        while name and name not in known:  # "coordinator.x.y.Class" -> the module that defines it
            name = name.rpartition(".")[0]
        if name and name != module:
            targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {module: _imported(module, path, known) for module, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
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

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "coordinator.cluster.core.node" in graph["coordinator.cluster.launcher.process"]
    assert "coordinator.consensus.codec" in graph["coordinator.consensus"]  # a relative import


def test_no_cycle_runs_through_the_nodes_modules():
    ours = [c for c in cycles(import_graph()) if any(m == s or m.startswith(s + ".") for m in c for s in SCOPE)]
    assert ours == []


if __name__ == "__main__":  # every cycle of the namespace, for a reader
    for component in cycles(import_graph()):
        print(" ".join(component))
