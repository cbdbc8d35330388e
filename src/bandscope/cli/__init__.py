"""The ``bandscope`` command line (``docs/cli.md``): :mod:`.commands` (the parser, :func:`main`,
``analyze``, ``reproduce``), :mod:`.forecast` and :mod:`.record` (``bands``, ``param-time``).

``bandscope.cli.main`` is the function :func:`~bandscope.cli.commands.main` (the console script
``bandscope``). The module that holds it was ``bandscope.cli.main`` until 0.2 and is
:mod:`bandscope.cli.commands` now: the old module name still imports (``from bandscope.cli.main
import build_parser``) with a ``DeprecationWarning``, until 0.3.
"""
from __future__ import annotations

import sys
import types
import warnings
from typing import Any

from . import commands
from .commands import (
                       analysis_options,
                       build_parser,
                       find_reference_runs,
                       main,
                       parse_epoch_windows,
                       parse_windows,
                       reference_dir,
)

__all__ = ["main", "build_parser", "analysis_options", "parse_windows", "parse_epoch_windows", "reference_dir",
           "find_reference_runs"]

_OLD_MODULE = __name__ + ".main"


def _old_module() -> types.ModuleType:
    """The module name ``bandscope.cli.main`` of 0.1: each name read from it is read from
    :mod:`bandscope.cli.commands`, with a ``DeprecationWarning``. It is its own small module object
    put in ``sys.modules`` (so importing it never rebinds the attribute ``bandscope.cli.main``,
    which stays the function)."""
    old = types.ModuleType(_OLD_MODULE, f"Moved to {commands.__name__}; this name is removed in bandscope 0.3.")

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or not hasattr(commands, name):
            raise AttributeError(f"module {_OLD_MODULE!r} has no attribute {name!r}")
        warnings.warn(f"{_OLD_MODULE} has moved to {commands.__name__}; import {name} from there or from "
                      f"{__name__} (the old module name is removed in bandscope 0.3)", DeprecationWarning,
                      stacklevel=2)
        return getattr(commands, name)

    old.__getattr__ = __getattr__  # type: ignore[method-assign]
    return old


sys.modules.setdefault(_OLD_MODULE, _old_module())
