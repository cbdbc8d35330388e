"""Files: run logs and results (:mod:`.runfiles`), checkpoints (:mod:`.checkpoints`), run-file
locks (:mod:`.lock`) and the natural order of file names (:mod:`.natural_sort`).

``bandscope.io.<name>`` is the public name of each reader and writer of :mod:`.runfiles`.
"""
from .runfiles import (
    read_results,
    read_run,
    read_runs,
    read_zarr_run,
    run_from_frame,
    run_to_frame,
    stack_runs,
    stale_temp_files,
    unstack_runs,
    write_netcdf_atomic,
    write_results,
    write_run,
    write_zarr_run,
)

__all__ = ["read_results", "read_run", "read_runs", "read_zarr_run", "run_from_frame",
           "run_to_frame", "stack_runs", "stale_temp_files", "unstack_runs", "write_netcdf_atomic",
           "write_results", "write_run", "write_zarr_run"]


def __getattr__(name):
    if name in ("results_to_dict", "write_json"):  # JSON results are a report of the analysis, not a run file
        raise AttributeError(f"bandscope.io.{name} is now bandscope.report.results_json.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
