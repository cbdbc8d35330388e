"""Files: run logs and results (:mod:`.runfiles`), checkpoints (:mod:`.checkpoints`), run-file
locks (:mod:`.lock`), the one atomic writer (:mod:`.atomic`) and the natural order of file names (:mod:`.natural_sort`).

``bandscope.io.<name>`` is the public name of each reader and writer of :mod:`.runfiles`
(and of :func:`.atomic.stale_temp_files`),
resolved lazily, so that importing a light submodule (``io.checkpoints`` for the command line)
does not import pandas and xarray.
"""
from __future__ import annotations

import importlib
from typing import Any

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
