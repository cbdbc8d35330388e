"""The import graph of the package: layers by kind, no edge from a lower layer to a higher one, no cycles.

Read from the source with ``ast`` (nothing is imported), counting every ``import`` statement,
module-level or inside a function: a lazy import is still a dependency. ``docs/architecture.md``
draws the same layers.
"""
from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: folder or module -> layer; a module may import its own layer and lower ones only
LAYERS = {
    "bandscope": 0, "bandscope._moved": 0, "bandscope.errors": 0, "bandscope.schema": 0, "bandscope.run": 0,
    "bandscope.schedule": 0, "bandscope.plugins": 0,
    "bandscope.transforms": 1, "bandscope.lnp": 1,
    "bandscope.io": 2,
    "bandscope.keysearch": 3,
    "bandscope.report": 4,
    "bandscope.cli": 5,
    "bandscope.torch": 6,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "bandscope").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _facade_names(tree: ast.Module) -> set[int]:
    """ids of the import nodes of a package ``__init__``'s module-level ``if TYPE_CHECKING:`` block:
    its lazy public names spelled out for type checkers (tests/test_typing.py), not a dependency."""
    return {id(n) for stmt in tree.body if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Name)
            and stmt.test.id == "TYPE_CHECKING" for n in ast.walk(stmt) if isinstance(n, ast.ImportFrom)}


def imports(module: str) -> set[str]:
    """The bandscope modules that ``module`` imports (a name imported from a package counts as its
    submodule when there is one). A package ``__init__``'s ``if TYPE_CHECKING:`` re-exports are
    left out (:func:`_facade_names`); every other import counts, typing-only ones included."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skip = _facade_names(tree) if MODULES[module].name == "__init__.py" else set()
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, node)
            names = [f"{src}.{a.name}" if f"{src}.{a.name}" in MODULES else src for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import bandscope.io.lock as x` -> the module itself
                name = name.rpartition(".")[0]
            if name.startswith("bandscope") and name != module:
                out.add(name)
    return out


def layer(module: str) -> int:
    key = module
    while key not in LAYERS:
        key = key.rpartition(".")[0]
    return LAYERS[key]


def test_every_module_has_a_layer():
    assert all(layer(m) is not None for m in MODULES)
    assert set(LAYERS) <= set(MODULES), "a layer names a module that does not exist"


def test_no_edge_from_a_lower_layer_to_a_higher_one():
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
           for m in sorted(MODULES) for d in sorted(imports(m)) if layer(d) > layer(m)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {m: imports(m) for m in MODULES}
    # Tarjan's strongly connected components
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    # a package __init__ that re-exports its submodules is not a cycle with them unless they import it back
    assert not cycles, cycles


def test_the_graph_reader_sees_relative_and_lazy_imports():
    assert "bandscope.keysearch.fitting" in imports("bandscope.keysearch.analysis")  # from . import fitting
    assert "bandscope.transforms.paramtime" in imports("bandscope.keysearch.analysis")  # from ..transforms import
    assert "bandscope.report.results_json" in imports("bandscope.cli.commands")  # inside a function


@pytest.mark.parametrize("old", sorted(__import__("bandscope._moved", fromlist=["MOVED"]).MOVED))
def test_old_module_names_still_import_with_a_deprecation_warning(old):
    from bandscope._moved import MOVED

    new = MOVED[old]
    if new.startswith("bandscope.torch") or old.startswith("bandscope.torch"):  # either imports torch
        pytest.importorskip("torch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import sys

        sys.modules.pop(old, None)
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new)
    assert mod.__name__ == new and mod.__spec__.name == new  # the real module keeps its identity
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_lazy_package_name_lists_match_their_modules():
    """bandscope.lnp lists its public names literally (so importing the package stays light);
    the list must be the statistics module's own."""
    import bandscope.lnp
    import bandscope.lnp.statistics

    assert bandscope.lnp.__all__ == bandscope.lnp.statistics.__all__
