"""pytest configuration for the doctest lane (``pytest --doctest-modules src/bandscope``).

The doctests of :mod:`bandscope.torch` need torch and those of :mod:`bandscope.report.figures` need
matplotlib; they are not collected where those optional packages are missing (the core-only
lane). Single doctests that need dask or zarr (the sweep and Zarr functions) are skipped there,
so the other doctests of their modules still run. Test-suite settings live in
``tests/conftest.py``.
"""
import importlib.util

import pytest

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob += ["src/bandscope/torch/*"]
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore_glob += ["src/bandscope/report/figures.py", "src/bandscope/report/lnp_figures.py"]

# doctest name -> the optional package it needs
_DOCTEST_NEEDS = {
    "bandscope.io.sweepfiles.open_runs": "dask",
    "bandscope.keysearch.sweep.analyze_sweep": "dask",
    "bandscope.keysearch.sweep.compute_sweep": "dask",
    "bandscope.io.sweepfiles.write_stack_zarr": "zarr",
    "bandscope.io.runfiles.write_zarr_run": "zarr",
    "bandscope.io.runfiles.read_zarr_run": "zarr",
}


def pytest_collection_modifyitems(config, items):
    """Skip the doctests whose optional package is not installed."""
    for item in items:
        need = _DOCTEST_NEEDS.get(item.name)
        if need and importlib.util.find_spec(need) is None:
            item.add_marker(pytest.mark.skip(reason=f"doctest needs the optional package {need!r}"))
