"""Read run files with LNP measurements (``docs/format.md``, runs without a panel) for the spectral-reach analysis.

:func:`bandscope.io.read_run` validates a run for the key-search analysis and needs
``band_loss``; a language-model run has none. :func:`read_lnp_run` opens a netCDF (``.nc``)
or Zarr (``.zarr``) run file as it is and checks only what the spectral-reach analysis reads:
the ``lnp_step`` dim with its ``lnp_window`` coordinate, a spectral position, and
``n_parameters``. :func:`run_kinds` says which analyses a file supports.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import BandscopeInputError

__all__ = ["run_kinds", "read_lnp_run"]

_LNP_SUFFIXES = (".nc", ".nc4", ".netcdf", ".zarr")


def _open(path: Path) -> xr.Dataset:
    if path.suffix.lower() == ".zarr":
        from .zarrstore import check_zarr_store

        return xr.open_zarr(check_zarr_store(path))
    return xr.open_dataset(path, engine="netcdf4")


def run_kinds(path) -> set[str]:
    """Which analyses the run file at ``path`` supports: ``"bands"`` (it has ``band_loss``: the
    key-search analysis), ``"lnp"`` (an ``lnp_step`` dim and a spectral position: the spectral-reach
    analysis). CSV and Parquet run logs are ``{"bands"}`` (they cannot hold LNP variables)."""
    path = Path(path)
    if path.suffix.lower() not in _LNP_SUFFIXES:
        return {"bands"}
    if not path.exists():
        raise FileNotFoundError(f"no such run file: {path}")
    names = _netcdf_names(path) if path.suffix.lower() != ".zarr" else None
    if names is None:
        try:
            ds = _open(path)
        except Exception:  # not a readable store: the key-search reader says what is wrong with it
            return {"bands"}
        with ds:
            names = set(ds.variables), set(ds.dims)
    return kinds_of(*names)


def kinds_of(variables: set[str], dims: set[str]) -> set[str]:
    """The analyses a run file supports, from its variable and dimension names (the rule of
    :func:`run_kinds`).

    Parameters
    ----------
    variables, dims : set of str
        The file's variable (coordinates included) and dimension names.

    Returns
    -------
    set of str
        ``"bands"`` and/or ``"lnp"``; ``{"bands"}`` when neither applies (the key-search reader
        then says what is missing).

    Examples
    --------
    >>> sorted(kinds_of({"band_loss", "param_time"}, {"checkpoint", "band"}))
    ['bands']
    """
    kinds = set()
    if "band_loss" in variables:
        kinds.add("bands")
    if "lnp_step" in dims and ({"lnp_spectral_position", "lnp_spectral_position_cross"} & set(variables)):
        kinds.add("lnp")
    return kinds or {"bands"}  # neither: let the key-search reader say what is missing


def _netcdf_names(path: Path) -> tuple[set[str], set[str]] | None:
    """The variable and dimension names of a netCDF file's root group, read with netCDF4
    without decoding anything (a third of the time of opening it with xarray).

    Parameters
    ----------
    path : pathlib.Path
        A netCDF file.

    Returns
    -------
    tuple of (set of str, set of str) or None
        ``(variables, dimensions)``; None when netCDF4 cannot open the file (the caller then
        tries xarray, which names the problem).
    """
    try:
        import netCDF4

        with netCDF4.Dataset(path) as f:
            return set(f.variables), set(f.dimensions)
    except Exception:  # noqa: BLE001 -- unreadable here: xarray's route decides and explains
        return None


def read_lnp_run(path, *, name: str | None = None) -> xr.Dataset:
    """Load a run file with LNP variables for :func:`bandscope.lnp.reach.reach_analysis`.

    ``attrs['name']``: ``name``, else the file's ``name`` attr, else its stem (the directory's
    name when the stem is ``run``). ``attrs['n_parameters']`` must be a positive integer (it
    groups runs by model size); ``lnp_window`` must be an integer coordinate along ``lnp_step``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run file: {path}")
    if path.suffix.lower() not in _LNP_SUFFIXES:
        raise BandscopeInputError(f"{path}: LNP run files are netCDF (.nc) or Zarr (.zarr), got {path.suffix!r}")
    with _open(path) as f:
        ds = f.load()
    if "lnp_step" not in ds.dims:
        raise BandscopeInputError(f"{path}: no 'lnp_step' dim, so no LNP measurements; record LNP with "
                                  "bandscope.torch (docs/lnp.md) or run the key-search analysis on band losses")
    if "lnp_window" not in ds.variables or ds["lnp_window"].dims != ("lnp_step",):
        raise BandscopeInputError(f"{path}: needs an 'lnp_window' coordinate along 'lnp_step' (the log-window "
                                  "index of each measurement, spectral reach B.1; docs/format.md)")
    if "lnp_window" in ds.data_vars:
        ds = ds.set_coords("lnp_window")
    n = ds.attrs.get("n_parameters")
    if n is None or not np.isfinite(float(n)) or int(n) < 1:
        raise BandscopeInputError(f"{path}: attrs['n_parameters'] = {n!r}; the spectral-reach analysis groups runs "
                                  "by model size and needs the trainable parameter count: set it when recording "
                                  "(docs/format.md)")
    ds.attrs["n_parameters"] = int(n)
    if name is None:
        name = ds.attrs.get("name") or (path.parent.name if path.stem == "run" else path.stem)
    ds.attrs["name"] = str(name)
    ds.attrs["file"] = str(path)
    return ds
