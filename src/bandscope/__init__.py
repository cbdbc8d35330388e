"""bandscope: what a neural network learns when.

The core (this package minus :mod:`bandscope.torch`) is pure numpy / scipy / xarray and never
imports torch. Public entry points:

- :func:`band_losses` -- orthogonal Haar band losses of reconstruction errors (key search A.6)
- :func:`parameter_time` -- chord parameter time between checkpoints (key search A.7)
- :func:`read_run` / :func:`write_run` -- run logs (CSV, Parquet, netCDF)
- :func:`analyze` -- the whole key-search analysis of one or many runs
- :mod:`bandscope.report.tables` -- the paper's tables as pandas DataFrames
- :mod:`bandscope.lnp` -- LNP decomposition from gradient statistics (spectral reach)

Names are resolved lazily so that ``import bandscope`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _moved

if TYPE_CHECKING:  # the lazy names below, spelled out for type checkers and IDEs (tests/test_typing.py)
    from .io.runfiles import read_run as read_run
    from .io.runfiles import read_runs as read_runs
    from .io.runfiles import stack_runs as stack_runs
    from .io.runfiles import write_run as write_run
    from .keysearch.analysis import analyze as analyze
    from .keysearch.forecasting import forecast as forecast
    from .run import by_step as by_step
    from .run import make_run as make_run
    from .run import validate_run as validate_run
    from .transforms.bands import band_decompose as band_decompose
    from .transforms.bands import band_energies as band_energies
    from .transforms.bands import band_losses as band_losses
    from .transforms.paramtime import fit_power_time as fit_power_time
    from .transforms.paramtime import parameter_time as parameter_time

__version__ = "0.1.0"

_LAZY = {
    "band_losses": "bandscope.transforms.bands",
    "band_energies": "bandscope.transforms.bands",
    "band_decompose": "bandscope.transforms.bands",
    "parameter_time": "bandscope.transforms.paramtime",
    "fit_power_time": "bandscope.transforms.paramtime",
    "make_run": "bandscope.run",
    "validate_run": "bandscope.run",
    "by_step": "bandscope.run",
    "read_run": "bandscope.io",
    "read_runs": "bandscope.io",
    "write_run": "bandscope.io",
    "stack_runs": "bandscope.io",
    "analyze": "bandscope.keysearch.analysis",
    "forecast": "bandscope.keysearch.forecasting",
}
_SUBMODULES = {"transforms", "keysearch", "lnp", "io", "report", "cli", "run", "schema", "errors", "schedule"}
#: the old flat module names (bandscope.tables, ...): importable with a DeprecationWarning (:mod:`._moved`)
_OLD_SUBMODULES = {"tables", "bands", "paramtime", "trajectory", "fitting", "ordering", "analysis", "synthetic", "plot"}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES) + ["__version__"]

_moved.install()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES or name in _OLD_SUBMODULES:
        return importlib.import_module(f"bandscope.{name}")
    raise AttributeError(f"module 'bandscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
