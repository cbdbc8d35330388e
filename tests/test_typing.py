"""The public names resolved lazily (``bandscope.analyze``, ``bandscope.io.read_run``, ...) are
spelled out for type checkers in each package ``__init__``'s ``if TYPE_CHECKING:`` block; that
list and the lazy table must name the same objects, so a type checker sees what users get."""
from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC.parent


def _type_checking_imports(package: str) -> dict[str, str]:
    """name -> absolute module of the ``from .x import name as name`` lines under TYPE_CHECKING."""
    path = SRC.joinpath(*package.split("."), "__init__.py")
    out = {}
    for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Name) and stmt.test.id == "TYPE_CHECKING":
            for node in ast.walk(stmt):
                if isinstance(node, ast.ImportFrom):
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                    for a in node.names:
                        assert a.asname == a.name, f"{package}: write `import {a.name} as {a.name}` (a re-export)"
                        out[a.name] = mod
    return out


@pytest.mark.parametrize("package", ["bandscope", "bandscope.io", "bandscope.lnp"])
def test_type_checking_names_are_the_lazy_names(package):
    pkg = importlib.import_module(package)
    lazy = set(pkg._LAZY) if package == "bandscope" else set(pkg.__all__)
    typed = _type_checking_imports(package)
    assert set(typed) == lazy, (sorted(lazy - set(typed)), sorted(set(typed) - lazy))
    for name, module in typed.items():
        assert getattr(pkg, name) is getattr(importlib.import_module(module), name), (package, name)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mypy") is None and importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (the lint extra)")
def test_a_type_checker_sees_the_public_signatures(tmp_path):
    """mypy reads ``bandscope.analyze`` as the annotated function, not as the Any of ``__getattr__``."""
    probe = tmp_path / "probe.py"
    probe.write_text("import bandscope\nimport bandscope.io\nimport bandscope.lnp\n"
                     "reveal_type(bandscope.analyze)\nreveal_type(bandscope.io.read_run)\n"
                     "reveal_type(bandscope.lnp.lnp_components)\n")
    p = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                        "--ignore-missing-imports", str(probe)],
                       cwd=tmp_path, env={"MYPYPATH": str(SRC), "PATH": ""}, capture_output=True, text=True,
                       timeout=600)
    notes = [ln for ln in p.stdout.splitlines() if "Revealed type" in ln]
    assert len(notes) == 3, p.stdout + p.stderr
    for ln, expect in zip(notes, ["run_or_runs:", "path:", "loss_scale:"]):
        assert "def (" in ln and expect in ln and "Any" not in ln.split("Revealed type is", 1)[1].split("->")[-1], ln
