"""The shape docs/ARCHITECTURE.md promises: imports run one way (function-level imports
included), no import cycle, no function over 80 lines, no file over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "netadv"

#: The layers of docs/ARCHITECTURE.md, lowest first: a module may import its own layer and
#: the ones before it. ``netadv`` is the package's public face (its ``__init__``).
LAYERS = [
    ("netadv.errors", "netadv.defaults", "netadv.symbolic"),
    ("netadv.fused",),
    ("netadv.activations",),
    ("netadv.decompose",),
    ("netadv.functional",),
    ("netadv.layers",),
    ("netadv.rewrite",),
    ("netadv.diagnostics", "netadv.plots", "netadv.saving"),
    ("netadv.doctor",),
    ("netadv",),
    ("netadv.experiments", "netadv.bench"),
    ("netadv.demo",),
    ("netadv.cli", "netadv.__main__"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (
                best is None or len(p) > len(best[1])
            ):
                best = (i, p)
    assert best is not None, f"{module} is in no layer of docs/ARCHITECTURE.md"
    return best[0]


def _imports(path: Path) -> set[str]:
    """The netadv modules a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "netadv":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "netadv"}
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    upward = [t for t in GRAPH[module] if _layer(t) > _layer(module)]
    assert not upward, f"{module} imports from a later layer: {upward}"


def test_no_import_cycle():
    # depth-first search for a back edge over the whole graph (package imports included)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for t in sorted(GRAPH.get(m, ())):
            if t not in MODULES or t == m:
                continue
            if state.get(t) == 1:
                cycle.extend(stack[stack.index(t) :] + [m, t] if t in stack else [m, t])
                return True
            if state.get(t) is None and visit(t, stack + [m]):
                return True
        state[m] = 2
        return False

    # a package's __init__ importing its own submodules is not a cycle with them
    for m in sorted(MODULES):
        if state.get(m) is None:
            assert not visit(m, []), f"import cycle: {' -> '.join(cycle)}"


def test_functions_and_files_are_short():
    long_functions, long_files = [], []
    for name, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > 500:
            long_files.append(f"{path.relative_to(SRC)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long_functions.append(f"{name}.{node.name} ({length} lines)")
    assert not long_files, f"files over 500 lines: {long_files}"
    assert not long_functions, f"functions over 80 lines: {long_functions}"
