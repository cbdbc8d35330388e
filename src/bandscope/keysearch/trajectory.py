"""Floors, residuals, threshold crossings and active windows (key search §3, §5.1, A.9, A.10).

Each quantity is a numpy kernel ``_name(..., axis)`` plus an xarray wrapper ``name(..., dim)``.

Conventions (decisions where the paper is silent are marked *choice*):

* Floor L_i^∞: mean of the last ``k`` (= 5) saved checkpoints (§5, A.9) or the final
  checkpoint; both are always computed. The total floor is Σ_i L_i^∞ so that
  R_tot = Σ_i R_i exactly (A.9).
* q_i(s_k) = R_i(s_k) / R_i(s_0) (§5.1). *Choice*: a band with R_i(s_0) ≤ 0 (its initial
  loss is at or below its floor: nothing to resolve) has no crossings (NaN): q would be
  undefined or have its sign flipped. R_i(s_0) within 16 ulps of the curve's largest |R|
  counts as 0 (rounding of L - floor).
* α-crossing (A.10): the first k with q(s_{k-1}) > α and q(s_k) ≤ α, then
  c = s_{k-1} + (q_{k-1} - α)/(q_{k-1} - q_k)·(s_k - s_{k-1}). NaN if there is no such
  bracket. If q starts at or below α the crossing is the first later *downward* transition
  (a literal reading of A.10), not s_0.
* Active window for (hi, lo) (§5.1, A.10): checkpoints with s_k > c(hi) *strictly* and
  s_k < c(lo) *strictly*. *Choice on equality*: a checkpoint with s_k exactly at a crossing
  is excluded ("after"/"before" in the paper). Only saved checkpoints enter: no interpolated
  value ever does. If c(hi) or c(lo) is NaN the window is empty (*choice*: with a
  mean-of-last-k or final floor and R_i(s_0) > 0 this cannot happen for 0 < lo < hi < 1,
  because some of the last k residuals are ≤ 0, so q reaches ≤ lo).
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

#: float64 array (numpy kernels take array-likes and return this)
F64 = npt.NDArray[np.float64]

__all__ = [
    "floors", "residuals", "normalized_residual", "crossings", "active_windows",
    "onset_width", "window_label", "threshold_pairs",
]


# --------------------------------------------------------------------------- floors
def _window_and_range(L: npt.ArrayLike, k: int, axis: int) -> tuple[F64, int, F64, F64]:
    """Shared by the floor-window statistics: L as float64 with checkpoints last, k checked
    against the number of checkpoints, the band range max L - min L, and that range with 0
    replaced by 1 (a safe divisor)."""
    L = np.moveaxis(np.asarray(L, dtype=np.float64), axis, -1)
    K = L.shape[-1]
    k = int(k)
    if not 1 <= k <= K:
        raise ValueError(f"k must be between 1 and the number of checkpoints ({K}), got {k}")
    rng = L.max(axis=-1) - L.min(axis=-1)
    return L, k, rng, np.where(rng > 0, rng, 1.0)


def _time_like(s: npt.ArrayLike, L: F64, axis: int) -> F64:
    """Parameter time s as float64 laid out like ``L`` from :func:`_window_and_range`
    (checkpoints last): a 1-d s is broadcast, an n-d s has its ``axis`` moved last."""
    s = np.asarray(s, dtype=np.float64)
    return np.broadcast_to(s if s.ndim == 1 else np.moveaxis(s, axis, -1), L.shape)


def _floors(L: npt.ArrayLike, k: int = 5, axis: int = -1) -> tuple[F64, F64, F64, F64]:
    """Floor statistics along ``axis`` (checkpoints): returns
    ``(mean_last_k, final, convention_diff_pct, window_drift_pct)``.

    ``convention_diff_pct = |mean_last_k - final| / (max L - min L) · 100`` (A.9) and
    ``window_drift_pct = (max - min of L over the last k) / (max L - min L) · 100``. A band
    with max L = min L (constant) gets 0 for both.
    """
    L, k, rng, safe = _window_and_range(L, k, axis)
    last = L[..., L.shape[-1] - k:]
    mean_k = last.mean(axis=-1)
    final = L[..., -1]
    diff = np.where(rng > 0, np.abs(mean_k - final) / safe * 100.0, 0.0)
    drift = np.where(rng > 0, (last.max(axis=-1) - last.min(axis=-1)) / safe * 100.0, 0.0)
    return mean_k, final, diff, drift


def _window_trend(L: npt.ArrayLike, s: npt.ArrayLike, k: int = 5, axis: int = -1) -> F64:
    """Net fall of L over the floor window by its least-squares line, % of the band's range.

    ``trend = -b · (s_K - s_{K-k+1}) / (max L - min L) · 100`` where ``b`` is the ordinary
    least-squares slope of L on parameter time s over the last k checkpoints. Positive: the band
    was still falling while its floor was measured; near 0 with a large window drift: the drift
    is fluctuation, not a trend. ``s`` runs along ``axis`` like ``L`` (or is 1-d). Returns NaN
    where s does not advance over the window or k < 2; 0 for a constant band.
    """
    L, k, rng, safe = _window_and_range(L, k, axis)
    s = _time_like(s, L, axis)
    K = L.shape[-1]
    y, x = L[..., K - k:], s[..., K - k:]
    xc = x - x.mean(axis=-1, keepdims=True)
    sxx = (xc * xc).sum(axis=-1)
    span = x[..., -1] - x[..., 0]
    ok = (sxx > 0) & (k >= 2)
    slope = np.where(ok, (xc * y).sum(axis=-1) / np.where(ok, sxx, 1.0), np.nan)
    return np.where(rng > 0, -slope * span / safe * 100.0, np.where(ok, 0.0, np.nan))


def _late_noise(L: npt.ArrayLike, s: npt.ArrayLike, k: int = 5, axis: int = -1) -> F64:
    """Checkpoint-to-checkpoint noise of L late in the run, % of the band's range.

    Over the last ``m = min(K, 2k + 2)`` checkpoints (*choice*: 2k second differences, twice
    the floor window), each consecutive triple with gaps ``a = s_j - s_{j-1}``,
    ``b = s_{j+1} - s_j`` gives ``d_j = b L_{j-1} - (a + b) L_j + a L_{j+1}``, which is 0 for
    any L linear in s and has variance ``(a^2 + (a+b)^2 + b^2) sigma^2`` for independent noise
    of sd sigma. The estimate is ``sigma = sqrt(mean_j d_j^2 / (a^2 + (a+b)^2 + b^2))`` and the
    result ``sigma / (max L - min L) · 100``. Five independent draws span 2.33 sigma on average,
    so a noise above about tol / 2.33 explains a floor-window drift of tol by itself. NaN with
    fewer than 3 checkpoints (or s never advancing); 0 for a constant band.
    """
    L, k, rng, safe = _window_and_range(L, k, axis)
    s = _time_like(s, L, axis)
    K = L.shape[-1]
    m = min(K, 2 * k + 2)
    y, x = L[..., K - m:], s[..., K - m:]
    a = x[..., 1:-1] - x[..., :-2]
    b = x[..., 2:] - x[..., 1:-1]
    y = y / safe[..., None]  # scale-free: squares of O(1) numbers neither under- nor overflow
    d = b * y[..., :-2] - (a + b) * y[..., 1:-1] + a * y[..., 2:]
    w = a * a + (a + b) ** 2 + b * b
    ok = w > 0
    n = ok.sum(axis=-1)
    var = np.where(ok, d * d / np.where(ok, w, 1.0), 0.0).sum(axis=-1) / np.maximum(n, 1)
    return np.where(n > 0, np.where(rng > 0, np.sqrt(var) * 100.0, 0.0), np.nan)


def _floor_table(L: npt.ArrayLike, s: npt.ArrayLike | None = None, k: int = 5,
                 axis: int = -1) -> tuple[F64, ...]:
    """All floor statistics of curves that may end in NaN padding (a stack of runs of unequal
    length): ``(mean_last_k, final, diff_pct, drift_pct, trend_pct, noise_pct)``.

    Each curve is cut to its leading finite checkpoints (finite L and, if given, finite s) and
    the kernels :func:`_floors`, :func:`_window_trend`, :func:`_late_noise` run on each group
    of curves of equal length, so a padded stack gives exactly what each run gives alone.
    ``trend_pct`` and ``noise_pct`` are NaN when ``s`` is None.
    """
    L = np.moveaxis(np.asarray(L, dtype=np.float64), axis, -1)
    lead = L.shape[:-1]
    K = L.shape[-1]
    flat = L.reshape(-1, K)
    fin = np.isfinite(flat)
    if s is not None:
        sf = np.broadcast_to(_time_like(s, L, axis), L.shape).reshape(-1, K)
        fin = fin & np.isfinite(sf)
    n = fin.sum(axis=1)
    out = [np.full(flat.shape[0], np.nan) for _ in range(6)]
    for m in np.unique(n):
        rows = np.flatnonzero(n == m)
        if m < 1:
            continue
        part = flat[rows, :m]
        for j, v in enumerate(_floors(part, k=k, axis=-1)):
            out[j][rows] = v
        if s is not None:
            out[4][rows] = _window_trend(part, sf[rows, :m], k=k, axis=-1)
            out[5][rows] = _late_noise(part, sf[rows, :m], k=k, axis=-1)
    return tuple(o.reshape(lead) for o in out)


def floors(band_loss: xr.DataArray, k: int = 5, dim: str = "checkpoint", saturation_tol_pct: float = 2.0,
           param_time: xr.DataArray | None = None) -> xr.Dataset:
    """Band floors under both conventions and how settled each band is (§5, A.9).

    Parameters
    ----------
    band_loss : xarray.DataArray
        L_i with dimension ``dim``. A stack of runs may be NaN-padded at the end of ``dim``
        (``docs/format.md``): each run's statistics use its own checkpoints.
    k : int
        Number of final checkpoints averaged (paper: 5).
    saturation_tol_pct : float
        A band is ``saturated`` when its drift over the floor window is below this percentage
        of its full dynamic range.
    param_time : xarray.DataArray, optional
        Parameter time s over ``dim``; with it, ``floor_window_trend_pct`` and
        ``late_noise_pct`` are added.

    Returns
    -------
    xarray.Dataset
        ``floor_mean_last_k``, ``floor_final``, ``floor_convention_diff_pct``,
        ``floor_window_drift_pct``, (``floor_window_trend_pct``, ``late_noise_pct``),
        ``saturated``; attrs from :mod:`bandscope.schema`.

    Examples
    --------
    >>> L = xr.DataArray([[4.0], [2.0], [1.0], [1.0], [1.2]], dims=("checkpoint", "band"))
    >>> f = floors(L, k=2)
    >>> float(f.floor_mean_last_k[0]), float(f.floor_final[0])
    (1.1, 1.2)
    >>> round(float(f.floor_convention_diff_pct[0]), 6)  # 0.1 / 3 * 100
    3.333333
    """
    from .. import schema

    names = ["floor_mean_last_k", "floor_final", "floor_convention_diff_pct",
             "floor_window_drift_pct", "floor_window_trend_pct", "late_noise_pct"]
    args = [band_loss] if param_time is None else [band_loss, param_time]
    parts = xr.apply_ufunc(
        lambda L, s=None: _floor_table(L, s, k=k, axis=-1), *args,
        input_core_dims=[[dim]] * len(args), output_core_dims=[[]] * 6,
        dask="parallelized", output_dtypes=[float] * 6)
    if param_time is None:
        names, parts = names[:4], parts[:4]
    ctx = {"loss": band_loss.attrs.get("units", ""), "k": int(k),
           "saturation_tol_pct": saturation_tol_pct}
    out = xr.Dataset({nm: _with_attrs(p, schema.attrs(nm, **ctx)) for nm, p in zip(names, parts)})
    out["saturated"] = _with_attrs(out["floor_window_drift_pct"] < saturation_tol_pct, schema.attrs("saturated", **ctx))
    return schema.annotate(out, "trajectory", coords_only=True)  # older xarray drops the band coordinate's attrs


def _with_attrs(da: xr.DataArray, attrs: dict[str, str]) -> xr.DataArray:
    """``da`` with exactly ``attrs`` (none carried over from its inputs)."""
    out = da.copy(deep=False)
    out.attrs = dict(attrs)
    return out


def residuals(band_loss: xr.DataArray, floor: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """R_i = L_i - L_i^∞ and R_tot = Σ_i R_i (= L_tot - Σ_i L_i^∞ exactly, A.9).

    Returns ``(residual, total_residual)`` as DataArrays (total sums over ``band``; a NaN
    band loss, e.g. padding, gives a NaN total).

    Examples
    --------
    >>> L = xr.DataArray([[3.0, 2.0], [1.0, 1.0]], dims=("checkpoint", "band"))
    >>> R, Rt = residuals(L, xr.DataArray([1.0, 1.0], dims="band"))
    >>> Rt.values.tolist()
    [3.0, 0.0]
    """
    from .. import schema

    loss = band_loss.attrs.get("units", "")
    R = _with_attrs(band_loss - floor, schema.attrs("trajectory", "residual", loss=loss))
    Rt = _with_attrs(R.sum("band", skipna=False), schema.attrs("trajectory", "total_residual", loss=loss))
    return R, Rt


# --------------------------------------------------------------------------- crossings
#: R(s_0) at or below this many ulps of the curve's largest |R| counts as 0 (rounding of L - floor)
_R0_ULPS = 16.0


def _normalized_residual(R: npt.ArrayLike, axis: int = -1) -> F64:
    """q = R / R(s_0) along ``axis``; NaN everywhere for a curve with R(s_0) ≤ 0 (or NaN).

    ``R(s_0) ≤ 16·eps·max|R|`` counts as 0: that is rounding of ``L - floor`` (e.g. a flat band
    whose floor is the mean of identical values), not a residual to resolve.
    """
    R = np.moveaxis(np.asarray(R, dtype=np.float64), axis, -1)
    R0 = R[..., :1]
    with np.errstate(invalid="ignore"):
        scale = np.nanmax(np.abs(R), axis=-1, keepdims=True, initial=0.0)
    pos = R0 > _R0_ULPS * np.finfo(np.float64).eps * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(pos, R / np.where(pos, R0, 1.0), np.nan)
    return np.moveaxis(q, -1, axis)


def normalized_residual(residual: xr.DataArray, dim: str = "checkpoint") -> xr.DataArray:
    """q_i(s_k) = R_i(s_k) / R_i(s_0) (§5.1); NaN for bands with R_i(s_0) ≤ 0."""
    from .. import schema

    q = xr.apply_ufunc(_normalized_residual, residual, input_core_dims=[[dim]],
                       output_core_dims=[[dim]], kwargs={"axis": -1},
                       dask="parallelized", output_dtypes=[float])
    return _with_attrs(q, schema.attrs("trajectory", "normalized_residual"))


def _crossings(q: npt.ArrayLike, s: npt.ArrayLike, alphas: npt.ArrayLike, axis: int = -1) -> F64:
    """α-crossings by the A.10 interpolation, vectorised over curves and alphas.

    Parameters
    ----------
    q : array (..., K) along ``axis``
        Normalised residuals (NaN = missing checkpoint, e.g. trailing padding).
    s : array broadcastable to ``q``
        Parameter time at each checkpoint.
    alphas : 1-d array (m,)

    Returns
    -------
    array (..., m)
        c(α) for every curve and α; NaN where no bracket q_{k-1} > α ≥ q_k exists.

    Examples
    --------
    >>> q = np.array([1.0, 0.8, 0.4, 0.0])
    >>> s = np.array([0.0, 1.0, 2.0, 3.0])
    >>> _crossings(q, s, [0.9, 0.5, 0.4, 0.01]).tolist()  # 0.4 lands on s=2 exactly
    [0.5, 1.75, 2.0, 2.975]
    """
    q = np.moveaxis(np.asarray(q, dtype=np.float64), axis, -1)
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == q.ndim:
        s = np.moveaxis(s, axis, -1)
    s = np.broadcast_to(s, np.broadcast_shapes(s.shape, q.shape))
    q = np.broadcast_to(q, s.shape)
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    qp, qn = q[..., :-1, None], q[..., 1:, None]  # (..., K-1, 1)
    br = (qp > a) & (qn <= a)  # (..., K-1, m); NaN compares False
    has = br.any(axis=-2)
    k = np.argmax(br, axis=-2)  # first bracket index (of k-1)
    take = lambda arr: np.take_along_axis(arr[..., None], k[..., None, :], axis=-2)[..., 0, :]  # noqa: E731
    q0, q1 = take(q[..., :-1]), take(q[..., 1:])
    s0, s1 = take(s[..., :-1]), take(s[..., 1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        c = s0 + (q0 - a) / (q0 - q1) * (s1 - s0)
    return np.where(has, c, np.nan)


def crossings(residual: xr.DataArray, param_time: xr.DataArray, alphas: npt.ArrayLike,
              dim: str = "checkpoint") -> xr.DataArray:
    """c_i(α) for every band and α (§5.1, A.10); adds an ``alpha`` dimension.

    Scale-invariant: multiplying all losses by c > 0 leaves q and hence c(α) unchanged.

    Examples
    --------
    >>> R = xr.DataArray([[1.0], [0.5], [0.0]], dims=("checkpoint", "band"))
    >>> s = xr.DataArray([0.0, 2.0, 4.0], dims="checkpoint")
    >>> crossings(R, s, [0.95, 0.01]).values.round(6).tolist()
    [[0.2, 3.96]]
    """
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if not np.all((alphas > 0) & (alphas < 1)):
        raise ValueError(f"crossing thresholds must lie in (0, 1), got {alphas.tolist()}")
    q = normalized_residual(residual, dim)
    out = xr.apply_ufunc(_crossings, q, param_time, input_core_dims=[[dim], [dim]],
                         output_core_dims=[["alpha"]], kwargs={"alphas": alphas, "axis": -1},
                         dask="parallelized", output_dtypes=[float],
                         dask_gufunc_kwargs={"output_sizes": {"alpha": alphas.size}})
    from .. import schema

    return _with_attrs(out.assign_coords(alpha=("alpha", alphas, schema.attrs("trajectory", "alpha"))),
                       schema.attrs("trajectory", "crossing", time=param_time.attrs.get("units", "")))


def onset_width(crossing: xr.DataArray, hi: float = 0.95, lo: float = 0.01, *,
                windows: Sequence[tuple[float, float]] | None = None) -> tuple[xr.DataArray, xr.DataArray]:
    """Onset τ = c(hi) and active width w = c(lo) - c(hi) (§5.1).

    With ``windows`` (a sequence of (hi, lo) threshold pairs) both get a ``window`` dim
    labelled as in :func:`active_windows`; otherwise the single pair ``hi``, ``lo``.

    Examples
    --------
    >>> c = xr.DataArray([[1.0, 2.0, 5.0]], dims=("band", "alpha"), coords={"alpha": [0.9, 0.5, 0.1]})
    >>> on, w = onset_width(c, windows=[(0.9, 0.1), (0.5, 0.1)])
    >>> on.values.tolist(), w.values.tolist()
    ([[1.0], [2.0]], [[4.0], [3.0]])
    """
    from .. import schema

    ctx = {"time": crossing.attrs.get("units", "")}
    if windows is None:
        c_hi = crossing.sel(alpha=hi, drop=True)
        c_lo = crossing.sel(alpha=lo, drop=True)
        width = c_lo - c_hi
    else:
        c_hi, c_lo = _window_crossings(crossing, threshold_pairs(windows))
        width = c_hi.copy(data=c_lo.values - c_hi.values)
    return (_with_attrs(c_hi, schema.attrs("trajectory", "onset", **ctx)),
            _with_attrs(width, schema.attrs("trajectory", "width", **ctx)))


def _window_crossings(crossing: xr.DataArray,
                      windows: Sequence[tuple[float, float]]) -> tuple[xr.DataArray, xr.DataArray]:
    """c(hi) and c(lo) of each threshold pair along a new leading ``window`` dim (a numpy
    take along ``alpha``: the pairs' thresholds must be among the ``alpha`` coordinate)."""
    alphas = np.asarray(crossing["alpha"].values, dtype=np.float64)
    ax = crossing.get_axis_num("alpha")
    others = [d for d in crossing.dims if d != "alpha"]
    from .. import schema

    coords: dict[Hashable, Any] = {"window": ("window", [window_label(h, lo) for h, lo in windows],
                                              schema.attrs("trajectory", "window"))}
    coords.update({k: v for k, v in crossing.coords.items() if "alpha" not in v.dims})

    def pick(j: int) -> xr.DataArray:
        idx = []
        for w in windows:
            hit = np.flatnonzero(alphas == w[j])
            if not hit.size:
                raise ValueError(f"crossing has no alpha = {w[j]!r} (has {alphas.tolist()}); "
                                 "compute crossings for every threshold of the windows")
            idx.append(int(hit[0]))
        data = np.moveaxis(np.take(crossing.values, idx, axis=ax), ax, 0)
        return xr.DataArray(data, dims=("window", *others), coords=coords,
                            attrs=dict(crossing.attrs))

    return pick(0), pick(1)


def threshold_pairs(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Threshold pairs as floats, checked: at least one, each 0 < lo < hi < 1.

    >>> threshold_pairs([(0.95, 0.01)])
    [(0.95, 0.01)]
    """
    pairs = [(float(h), float(lo)) for h, lo in windows]
    if not pairs:
        raise ValueError("windows must contain at least one (hi, lo) threshold pair")
    for h, lo in pairs:
        if not 0 < lo < h < 1:
            raise ValueError(f"window thresholds must satisfy 0 < lo < hi < 1, got ({h}, {lo}); "
                             "give (hi, lo), e.g. (0.95, 0.01)")
    return pairs


# --------------------------------------------------------------------------- active windows
def _active_window(s: npt.ArrayLike, c_hi: npt.ArrayLike, c_lo: npt.ArrayLike,
                   axis: int = -1) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64],
                                            npt.NDArray[np.int64]]:
    """Active-window mask: checkpoints with c_hi < s_k < c_lo (strict; NaN s never included).

    Returns ``(mask, start, stop, n)``: ``mask`` has the shape of ``s`` broadcast against the
    crossings (window along the last axis), ``start``/``stop`` are the first/last checkpoint
    index in the window (-1 when empty) and ``n`` the number of checkpoints.

    Examples
    --------
    >>> s = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    >>> m, a, b, n = _active_window(s, 1.0, 3.5)  # s=1 sits exactly on c(hi): excluded
    >>> m.astype(int).tolist(), int(a), int(b), int(n)
    ([0, 0, 1, 1, 0], 2, 3, 2)
    """
    s = np.moveaxis(np.asarray(s, dtype=np.float64), axis, -1)
    c_hi = np.asarray(c_hi, dtype=np.float64)[..., None]
    c_lo = np.asarray(c_lo, dtype=np.float64)[..., None]
    mask = (s > c_hi) & (s < c_lo)  # NaN anywhere -> False
    n = mask.sum(axis=-1)
    K = mask.shape[-1]
    start = np.where(n > 0, np.argmax(mask, axis=-1), -1)
    stop = np.where(n > 0, K - 1 - np.argmax(mask[..., ::-1], axis=-1), -1)
    return mask, start, stop, n


def active_windows(param_time: xr.DataArray, crossing: xr.DataArray, windows: Sequence[tuple[float, float]],
                   dim: str = "checkpoint") -> xr.Dataset:
    """Active windows for each (hi, lo) threshold pair (§5.1).

    Parameters
    ----------
    param_time : xarray.DataArray with ``dim``
    crossing : xarray.DataArray with an ``alpha`` dim containing every hi and lo
    windows : sequence of (hi, lo)

    Returns
    -------
    xarray.Dataset
        ``in_window`` (bool, …, window, checkpoint), ``fit_start``, ``fit_stop``, ``fit_n``
        with a ``window`` dimension labelled ``"hi/lo"`` and coords ``window_hi``,
        ``window_lo``; attrs from :mod:`bandscope.schema` (kind ``trajectory``).
    """
    windows = threshold_pairs(windows)
    c_hi, c_lo = _window_crossings(crossing, windows)
    mask, start, stop, n = xr.apply_ufunc(
        _active_window, param_time, c_hi, c_lo, input_core_dims=[[dim], [], []],
        output_core_dims=[[dim], [], [], []], kwargs={"axis": -1}, dask="parallelized",
        output_dtypes=[bool, np.int64, np.int64, np.int64])
    from .. import schema

    ds = xr.Dataset({"in_window": mask, "fit_start": start, "fit_stop": stop, "fit_n": n})
    ds = ds.assign_coords(window_hi=("window", [h for h, _ in windows]),
                          window_lo=("window", [lo for _, lo in windows]))
    for name in ("in_window", "fit_start", "fit_stop", "fit_n", "window_hi", "window_lo", "window"):
        ds[name].attrs = schema.attrs("trajectory", name)
    return ds


def window_label(hi: float, lo: float) -> str:
    """``"0.95/0.01"``-style label of a threshold pair.

    >>> window_label(0.9, 0.1)
    '0.90/0.10'
    """
    def fmt(v: float) -> str:
        t = f"{v:.2f}"
        return t if float(t) == v else repr(float(v))
    return f"{fmt(hi)}/{fmt(lo)}"
