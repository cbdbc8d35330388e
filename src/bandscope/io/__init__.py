"""Files: run logs and results (:mod:`.runfiles`), checkpoints (:mod:`.checkpoints`), run-file
locks (:mod:`.lock`), the one atomic writer (:mod:`.atomic`) and the natural order of file names (:mod:`.natural_sort`).

``bandscope.io.<name>`` is the public name of each reader and writer of :mod:`.runfiles`
(and of :func:`.atomic.stale_temp_files`),
resolved lazily, so that importing a light submodule (``io.checkpoints`` for the command line)
does not import pandas and xarray.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the lazy names below, spelled out for type checkers and IDEs (tests/test_typing.py)
    from .atomic import stale_temp_files as stale_temp_files
    from .runfiles import read_results as read_results
    from .runfiles import read_run as read_run
    from .runfiles import read_runs as read_runs
    from .runfiles import read_zarr_run as read_zarr_run
    from .runfiles import run_from_frame as run_from_frame
    from .runfiles import run_to_frame as run_to_frame
    from .runfiles import stack_runs as stack_runs
    from .runfiles import unstack_runs as unstack_runs
    from .runfiles import write_netcdf_atomic as write_netcdf_atomic
    from .runfiles import write_results as write_results
    from .runfiles import write_run as write_run
    from .runfiles import write_zarr_run as write_zarr_run

__all__ = ["read_results", "read_run", "read_runs", "read_zarr_run", "run_from_frame", "run_to_frame", "stack_runs",
           "stale_temp_files", "unstack_runs", "write_netcdf_atomic", "write_results", "write_run", "write_zarr_run"]


_HOME = {"stale_temp_files": "bandscope.io.atomic"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(_HOME.get(name, "bandscope.io.runfiles")), name)
    if name in ("results_to_dict", "write_json"):  # JSON results are a report of the analysis, not a run file
        raise AttributeError(f"bandscope.io.{name} is now bandscope.report.results_json.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
