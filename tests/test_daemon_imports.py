"""The daemon's parts import downward only, and never in a circle (ARCHITECTURE.md).

Read from the sources with ``ast`` (every import counts: module level, inside
functions, under ``TYPE_CHECKING``), so an import cannot hide from the check by
being lazy. A layer may import its own layer and the ones below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUNED = ROOT / "tuned"

# Lowest first. The daemon composes the parts; the service runs it; the command
# line and the page are clients on top of everything.
LAYERS = [
    ("base", ["tuned", "tuned.config", "tuned.errors"]),
    ("core", ["tuned.core"]),
    ("store", ["tuned.store"]),
    ("run", ["tuned.run"]),
    ("serve", ["tuned.serve"]),
    ("daemon", ["tuned.daemon"]),
    ("service", ["tuned.service", "tuned.logs"]),
    ("cli", ["tuned.cli", "tuned.web", "tuned.__main__"]),
]


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best >= 0, f"{module} is in no layer of ARCHITECTURE.md"
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The tuned modules ``path`` imports, resolved to dotted names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and (node.module == "tuned" or node.module.startswith("tuned.")):
                target = node.module
            else:
                continue
            found.add(target)  # and each name that is itself a module: `from . import views`
            found.update(
                f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tuned."))
    return {m for m in found if m != name}


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


GRAPH = {module_name(p): imports(p) for p in TUNED.rglob("*.py")}


def test_no_part_imports_a_layer_above_it() -> None:
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m, deps in GRAPH.items()
        for d in deps
        if layer_of(d) > layer_of(m)
    ]
    assert upward == []


def test_nothing_below_the_daemon_names_it() -> None:
    below = [m for m in GRAPH if layer_of(m) < layer_of("tuned.daemon")]
    assert [m for m in below if any(d.startswith("tuned.daemon") for d in GRAPH[m])] == []


def test_no_import_circle_in_the_daemon() -> None:
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if dep not in GRAPH:
                continue
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep] if dep in path else [module, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("pure", ["tuned.core"])
def test_the_pure_parts_do_no_io(pure: str) -> None:
    """core/ holds data and decisions: no files, sockets, processes or clocks of its own."""
    banned = {"os", "socket", "subprocess", "shutil", "anyio", "asyncio", "psutil", "time"}
    offenders = []
    for path in (ROOT.joinpath(*pure.split("."))).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module.split(".")[0]]
            offenders += [f"{path.name}: {n}" for n in names if n in banned]
    assert offenders == []


def test_the_client_never_imports_the_daemon() -> None:
    client = ROOT / "client" / "tuned_client"
    offenders = []
    for path in client.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module == "tuned" or node.module.startswith("tuned."):
                    offenders.append(f"{path.relative_to(client)}: {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.relative_to(client)}: {a.name}"
                    for a in node.names
                    if a.name == "tuned" or a.name.startswith("tuned.")
                ]
    assert offenders == []
