"""The library's import graph: no cycles at import time, the pattern library depends on nothing
of zoo, and only the command-line modules import the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import zoo

ROOT = Path(zoo.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_cli_module(name: str) -> bool:
    """The command line: ``zoo.cli``, ``python -m zoo``, every ``commands`` module (they register
    subcommands), and the reference generator, which renders the CLI's ``--help``."""
    return name in {"zoo.cli", "zoo.__main__", "zoo.reference"} or name.rsplit(".", 1)[-1] == "commands"


def _imported(name: str, node: ast.ImportFrom | ast.Import) -> set[str]:
    """The zoo modules an import statement loads (``from a import b`` loads ``a`` and, if it is one, ``a.b``)."""
    if isinstance(node, ast.Import):
        found = {alias.name for alias in node.names}
    else:
        if node.level:
            package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            module = ".".join(package + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        found = {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {module for module in found if module in MODULES}


def _import_statements(tree: ast.Module, top_level_only: bool, skip_type_checking: bool):
    """Import statements; top level means run at import (module body, and its ifs and trys)."""
    if not top_level_only:
        yield from (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))
        return

    def visit(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                if not (skip_type_checking and "TYPE_CHECKING" in ast.unparse(node.test)):
                    yield from visit(node.body)
                yield from visit(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                    yield from visit(part)
            elif isinstance(node, ast.With):
                yield from visit(node.body)

    yield from visit(tree.body)


def _graph(top_level_only: bool = True, skip_type_checking: bool = True) -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        targets: set[str] = set()
        for node in _import_statements(tree, top_level_only, skip_type_checking):
            targets |= _imported(name, node)
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_parser_sees_the_known_edges():
    graph = _graph()
    assert "zoo.patterns.library" in graph["zoo.config"]
    assert "zoo.config" in graph["zoo.readers.interpreter.config"]
    assert "zoo.subjects.families.mlp" in graph["zoo.config"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_among_zoo_modules_at_import_time():
    assert _cycles(_graph()) == []


def test_the_pattern_library_imports_nothing_of_zoo():
    """``zoo.config`` validates a pattern space with the library, so the library may not import
    ``zoo.config`` back, not even for types or inside a function."""
    graph = _graph(top_level_only=False, skip_type_checking=False)
    assert graph["zoo.patterns.library"] == set()


def test_only_the_command_line_imports_the_cli_anywhere_in_the_code():
    graph = _graph(top_level_only=False, skip_type_checking=False)
    importers = sorted(name for name, targets in graph.items() if "zoo.cli" in targets and not _is_cli_module(name))
    assert importers == []


def test_importing_every_library_module_leaves_the_cli_unimported():
    library = [name for name in MODULES if not _is_cli_module(name)]
    script = (
        "import importlib, sys\n"
        f"for name in {library!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'zoo.cli' in sys.modules:\n"
        "        print('zoo.cli imported by', name); sys.exit(1)\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr[-2000:]
