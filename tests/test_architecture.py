"""The package's shape: layers that import only downwards, no import cycles, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("scalewise", "stages", "flows")
# The library's layers, lowest first: a sub-package may import only itself and the ones before it.
LAYERS = ("core", "data", "models", "sampling", "posterior", "training", "evaluation", "bench", "api", "project", "cli")
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for top in TOPS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (module level and inside functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports the module pkg.mod when there is one
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                targets |= subs or {node.module}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "scalewise" and len(parts) > 1 else parts[0]


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_library_layers_import_only_downwards():
    bad = []
    for module, targets in import_graph().items():
        if not module.startswith("scalewise."):
            continue
        mine = layer_of(module)
        if mine not in LAYERS:
            bad.append(f"{module}: outside the layer sub-packages {LAYERS}")
            continue
        for target in targets:
            if not target.startswith("scalewise."):
                bad.append(f"{module} imports {target} (the library imports no stage or flow)")
            elif LAYERS.index(layer_of(target)) > LAYERS.index(mine):
                bad.append(f"{module} ({mine}) imports {target} ({layer_of(target)}), a layer above it")
    assert not bad, "\n".join(bad)


def test_stages_and_flows_import_only_the_layer_below():
    bad = []
    for module, targets in import_graph().items():
        top = module.split(".")[0]
        for target in targets:
            if top == "stages" and not target.startswith("scalewise"):
                bad.append(f"{module} imports {target}: a stage imports only the library")
            if top == "flows" and target.startswith("stages"):
                bad.append(f"{module} imports {target}: flows run stages through DVC, never import them")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("top", TOPS)
def test_modules_are_small(top):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / top).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"
