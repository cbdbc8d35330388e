"""The scripts under ``tools/`` loaded as modules for the tests (``tools/`` is not a package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str, *, register: bool = False) -> ModuleType:
    """``tools/NAME.py`` as module ``NAME``; with ``register``, also put in ``sys.modules`` (before it
    runs, as an import does: dataclasses and pickling look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
