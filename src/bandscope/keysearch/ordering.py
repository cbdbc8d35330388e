"""Band ordering: Spearman ρ between band resolution and per-band descriptors (§6.2, B.3.2).

Per run (and per window), ρ is Spearman's rank correlation (what ``scipy.stats.spearmanr``
gives: the Pearson correlation of average ranks) between the band resolution r and a
descriptor (onset τ_i, width w_i, floor L_i^∞, initial residual R_i(s_0)). Bands whose
descriptor is NaN (e.g. no crossing because R_i(s_0) ≤ 0) are left out and the number of
bands used is recorded; fewer than 3 bands, or a constant descriptor, gives NaN. Across runs
we report median, IQR (25th/75th percentiles, numpy's linear interpolation) and min--max,
ignoring NaN runs.
"""
from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import xarray as xr

__all__ = ["spearman_rho", "band_ordering", "summarize_runs", "METRICS"]

#: Descriptors in §6.2 order.
METRICS = ("onset", "width", "floor", "initial_residual")


def _average_ranks(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ranks 1..k of each row of ``a`` (no NaN), ties given their average rank: what
    ``scipy.stats.rankdata(a, axis=1)`` returns (its default ``method="average"``; tested),
    without importing ``scipy.stats`` (about a second, more than the analysis of 100 runs).

    Examples
    --------
    >>> _average_ranks(np.array([[3.0, 1.0, 3.0, 2.0]]))
    array([[3.5, 1. , 3.5, 2. ]])
    """
    a = np.atleast_2d(a)
    k = a.shape[1]
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    first = np.ones(s.shape, dtype=bool)  # first of its group of equal values
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    last = np.ones(s.shape, dtype=bool)  # last of its group
    last[:, :-1] = first[:, 1:]
    pos = np.arange(k)
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, pos, k - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=1)
    return ranks


def _pearson_of_ranks(rv: npt.NDArray[np.float64], rr: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Pearson correlation of each row of ``rv`` with ``rr`` (ranks)."""
    rv = rv - rv.mean(axis=1, keepdims=True)
    rr = rr - rr.mean()
    return np.asarray((rv @ rr) / np.sqrt((rv * rv).sum(axis=1) * (rr @ rr)))


def _spearman(values: npt.ArrayLike, resolution: npt.ArrayLike,
              axis: int = -1) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Spearman ρ of each curve along ``axis`` against ``resolution``, NaN-aware.

    Returns ``(rho, n)`` with ``n`` the number of finite entries used.

    Examples
    --------
    >>> rho, n = _spearman(np.array([[1.0, 3.0, 2.0, np.nan]]), np.array([1, 2, 4, 8]))
    >>> round(float(rho[0]), 6), int(n[0])
    (0.5, 3)
    """
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    r = np.asarray(resolution, dtype=np.float64)
    flat = v.reshape(-1, v.shape[-1])
    rho = np.full(flat.shape[0], np.nan)
    n = np.zeros(flat.shape[0], dtype=np.int64)
    finite = np.isfinite(flat)
    n[:] = finite.sum(axis=1)
    full = finite.all(axis=1) & (np.ptp(np.where(finite, flat, 0.0), axis=1) > 0) & (n >= 3)
    if full.any() and np.ptp(r) > 0:
        # complete rows at once: Spearman = Pearson of average ranks (what spearmanr does;
        # tests/test_ordering.py checks equality with scipy.stats.spearmanr and rankdata)
        rho[full] = _pearson_of_ranks(_average_ranks(flat[full]), _average_ranks(r)[0])
    for i in np.flatnonzero(~full):
        row = flat[i]
        ok = finite[i]
        if n[i] >= 3 and np.ptp(row[ok]) > 0:
            with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
                warnings.simplefilter("ignore")  # a constant resolution: NaN, as spearmanr gives
                rho[i] = _pearson_of_ranks(_average_ranks(row[ok]), _average_ranks(r[ok])[0])[0]
    return rho.reshape(v.shape[:-1]), n.reshape(v.shape[:-1])


def spearman_rho(values: xr.DataArray, dim: str = "band") -> tuple[xr.DataArray, xr.DataArray]:
    """ρ between the ``band`` coordinate (resolution) and ``values`` along ``dim``.

    Returns ``(rho, n)`` DataArrays.

    Examples
    --------
    >>> v = xr.DataArray([0.1, 0.3, 0.2, 0.5], dims="band", coords={"band": [1, 2, 4, 8]})
    >>> rho, n = spearman_rho(v)
    >>> round(float(rho), 12), int(n)
    (0.8, 4)
    """
    return xr.apply_ufunc(_spearman, values, values[dim], input_core_dims=[[dim], [dim]],
                          output_core_dims=[[], []], kwargs={"axis": -1})


def band_ordering(onset: xr.DataArray, width: xr.DataArray, floor: xr.DataArray, initial_residual: xr.DataArray,
                  dim: str = "band") -> xr.Dataset:
    """ρ for the four §6.2 descriptors, stacked along a ``metric`` dimension.

    ``floor`` and ``initial_residual`` do not depend on the window; they are broadcast
    against ``onset``/``width`` so every (run, window) has all four.

    Returns
    -------
    xarray.Dataset
        ``rho`` and ``rho_n`` (bands used) with dims (metric, ...); attrs from :mod:`bandscope.schema`
        (kind ``trajectory``).
    """
    parts = {"onset": onset, "width": width, "floor": floor,
             "initial_residual": initial_residual}
    arrays = xr.broadcast(*parts.values())
    from .. import schema

    stacked = xr.concat(arrays, dim=xr.Variable("metric", list(METRICS), schema.attrs("trajectory", "metric")))
    rho, n = spearman_rho(stacked, dim)

    rho.attrs = schema.attrs("trajectory", "rho")
    n.attrs = schema.attrs("trajectory", "rho_n")
    return schema.annotate(xr.Dataset({"rho": rho, "rho_n": n}), "trajectory", coords_only=True)  # older xarray
    # drops the attrs of a coordinate made by concat


def summarize_runs(da: xr.DataArray, dim: str = "run") -> xr.Dataset:
    """Across-run summary: ``median``, ``q25``, ``q75``, ``min``, ``max``, ``n_runs``.

    NaN runs are ignored (``n_runs`` counts the finite ones); all-NaN gives NaN. Attrs from
    :mod:`bandscope.schema` (kind ``across_runs``), with the units of ``da``.

    Examples
    --------
    >>> da = xr.DataArray([0.5, 0.75, 1.0, np.nan], dims="run")
    >>> s = summarize_runs(da)
    >>> float(s["median"]), float(s.q25), float(s.q75), int(s.n_runs)
    (0.75, 0.625, 0.875, 3)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN
        out = xr.Dataset({
            "median": da.median(dim, skipna=True),
            "q25": da.quantile(0.25, dim, skipna=True).drop_vars("quantile"),
            "q75": da.quantile(0.75, dim, skipna=True).drop_vars("quantile"),
            "min": da.min(dim, skipna=True),
            "max": da.max(dim, skipna=True),
            "n_runs": da.notnull().sum(dim),
        })
    from .. import schema

    units = {"units": da.attrs["units"]} if "units" in da.attrs else {}
    for name in out.data_vars:
        out[name].attrs = {**schema.attrs("across_runs", str(name)), **({} if name == "n_runs" else units)}
    return out.assign_attrs(definition=f"across '{dim}': median, 25th/75th percentiles "
                            "(linear interpolation), min, max of finite values")
