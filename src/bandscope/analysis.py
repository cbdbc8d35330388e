"""``analyze()``: the whole key-search analysis of one or many runs (key search §5, §6, A, B).

Wires :mod:`bandscope.trajectory` (floors, residuals, crossings, windows),
:mod:`bandscope.fitting` (Weibull vs exponential, BIC) and :mod:`bandscope.ordering`
(Spearman ρ) into the results Dataset of ``docs/format.md``. All fits of all runs, bands and
windows go through one batched call of :func:`bandscope.fitting.compare_curves`.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from . import fitting, ordering, trajectory
from .run import validate_run

__all__ = ["analyze", "DEFAULT_WINDOWS", "collect_runs"]

DEFAULT_WINDOWS = ((0.95, 0.01), (0.90, 0.10), (0.80, 0.20))
_FLOOR_CONVENTIONS = ("mean_last_k", "final")

_DEFINITIONS = {
    "residual": "R_i = L_i - L_i^inf (floor convention in attrs['floor_convention'])",
    "total_residual": "R_tot = sum_i R_i = L_tot - sum_i L_i^inf (key search A.9)",
    "initial_residual": "R_i(s_0)",
    "crossing": "c_i(alpha): first k with q_{k-1} > alpha >= q_k, q = R_i/R_i(s_0), linear "
    "interpolation (key search A.10); NaN if never crossed or R_i(s_0) <= 0",
    "onset": "tau_i = c_i(hi) of the window",
    "width": "w_i = c_i(lo) - c_i(hi) of the window",
    "fit_n": "saved checkpoints with c_i(hi) < s_k < c_i(lo) (strict; key search 5.1)",
    "fit_start": "first checkpoint index in the active window, -1 if none",
    "fit_stop": "last checkpoint index in the active window, -1 if none",
    "A": "Weibull R = A exp(-((s - s_start)/omega)^beta), s_start = s at fit_start (B.1)",
    "omega": "Weibull scale, parameter-time units",
    "beta": "Weibull shape, bounded to [0.05, 8]",
    "r2": "R^2 of the Weibull fit on the linear scale (5.2)",
    "sse_weibull": "sum of squared residuals of the Weibull fit (linear scale)",
    "exp_A": "exponential (beta = 1) fit amplitude, same window",
    "exp_omega": "exponential fit scale",
    "exp_r2": "R^2 of the exponential fit",
    "sse_exp": "SSE of the exponential fit",
    "bic_weibull": "n log(SSE/n) + 3 log n (A.11)",
    "bic_exp": "n log(SSE/n) + 2 log n (A.11)",
    "delta_bic": "bic_weibull - bic_exp; negative favours Weibull (5.2)",
    "delta_bic_neff": "same with n_eff = n / deflation: n_eff log(SSE/n) + p log n_eff (B.2)",
    "status": "'ok', 'omitted' (fewer than min_points checkpoints in the window) or 'failed'",
    "reason": "why a fit is not 'ok' (empty when ok)",
    "band_sum_fit": "R_hat_Sigma = sum_i R_hat_i on the full grid; before band i's window "
    "starts R_hat_i = A_i (its value at s = 0), after it A_i exp(-((s - s_start)/omega_i)^beta_i) "
    "(6.3); NaN for a run/window where any band's fit is not 'ok'",
    "band_sum_r2": "R^2 of band_sum_fit against total_residual over the run's checkpoints (6.3); "
    "NaN if any band's fit is not 'ok' (a partial sum would not be the reconstruction) "
    "unless band_sum_missing='observed'",
    "rho": "Spearman rho between band resolution and the metric over bands (6.2, B.3.2)",
    "rho_n": "bands with a finite metric used for rho",
    "saturated": "floor_window_drift_pct < saturation_tol_pct",
    "gamma": "s(t) ~ a + b t^gamma over all checkpoints (A.7); NaN without step",
    "gamma_w": "gamma fitted in each epoch window (A.7 table); NaN without epoch",
}


# --------------------------------------------------------------------------- inputs
def _trim_padding(ds, name):
    """Drop trailing NaN-padded checkpoints; padding anywhere else is an error."""
    if "checkpoint" not in ds.dims:
        raise ValueError(f"run {name!r} has no 'checkpoint' dimension; dims are {dict(ds.sizes)}")
    bl = np.asarray(ds["band_loss"].transpose("checkpoint", "band").values, dtype=np.float64)
    pt = np.asarray(ds["param_time"].values, dtype=np.float64)
    good = np.isfinite(pt) & np.isfinite(bl).all(axis=1)
    n = int(good.sum())
    if not good[:n].all():
        bad = np.flatnonzero(~good[:n]).tolist()
        raise ValueError(f"run {name!r}: NaN at checkpoints {bad} before its last valid "
                         "checkpoint; only trailing padding is allowed (docs/format.md)")
    if n < ds.sizes["checkpoint"]:
        ds = ds.isel(checkpoint=slice(0, n))
    return ds


def collect_runs(run_or_runs):
    """Normalise the accepted inputs to a list of ``(name, run Dataset)``.

    Accepts one run Dataset; a stacked Dataset with a ``run`` dim (trailing NaN padding of
    checkpoints is dropped per run); a list/tuple of runs (names from ``attrs['name']``,
    made unique with ``#2``, ``#3``, ...); or a dict name → run. Every run is validated with
    :func:`bandscope.run.validate_run` after its padding is dropped.
    """
    items = []
    if isinstance(run_or_runs, xr.Dataset):
        ds = run_or_runs
        if "run" in ds.dims:
            names = (ds["run"].values.tolist() if "run" in ds.coords
                     else [f"run{i}" for i in range(ds.sizes["run"])])
            for i, nm in enumerate(names):
                one = ds.isel(run=i)
                attrs = dict(ds.attrs)
                for key in ("arch", "seed"):
                    if key in one.coords or key in one.data_vars:
                        attrs[key] = one[key].values.item()
                        one = one.drop_vars(key)
                one = one.drop_vars("run", errors="ignore")
                attrs["name"] = str(nm)
                one.attrs = attrs
                items.append((str(nm), one))
        else:
            items.append((str(ds.attrs.get("name", "run")), ds))
    elif isinstance(run_or_runs, Mapping):
        items = [(str(k), v) for k, v in run_or_runs.items()]
    elif isinstance(run_or_runs, Sequence) and not isinstance(run_or_runs, str):
        seen: dict[str, int] = {}
        for i, ds in enumerate(run_or_runs):
            if not isinstance(ds, xr.Dataset):
                raise TypeError(f"runs[{i}] is a {type(ds).__name__}, expected an xarray.Dataset")
            nm = str(ds.attrs.get("name", f"run{i}"))
            seen[nm] = seen.get(nm, 0) + 1
            items.append((nm if seen[nm] == 1 else f"{nm}#{seen[nm]}", ds))
    else:
        raise TypeError("analyze() takes a run Dataset, a stacked Dataset with a 'run' dim, a "
                        f"list/tuple of runs or a dict name -> run; got {type(run_or_runs).__name__}")
    if not items:
        raise ValueError("analyze() got no runs")
    out = []
    for nm, ds in items:
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"run {nm!r} is a {type(ds).__name__}, expected an xarray.Dataset")
        ds = _trim_padding(ds, nm)
        try:
            validate_run(ds)
        except ValueError as exc:
            raise ValueError(f"run {nm!r}: {exc}") from exc
        out.append((nm, ds))
    bands0 = out[0][1]["band"].values
    for nm, ds in out[1:]:
        if not np.array_equal(ds["band"].values, bands0):
            raise ValueError(f"run {nm!r} has bands {ds['band'].values.tolist()} but run "
                             f"{out[0][0]!r} has {bands0.tolist()}; all runs need the same bands")
    return out


# --------------------------------------------------------------------------- gamma
def _get(res, key):
    for k in (key, key.upper(), {"r2": "r_squared"}.get(key, key)):
        try:
            v = res[k]
        except (KeyError, TypeError, IndexError):
            v = getattr(res, k, None)
        if v is not None:
            return np.asarray(getattr(v, "values", v), dtype=np.float64)
    return None


def _gamma(ds, gamma_windows):
    """Run-level γ (all checkpoints) and per epoch window, via paramtime.fit_power_time."""
    nan4 = {"gamma": np.nan, "gamma_a": np.nan, "gamma_b": np.nan, "gamma_r2": np.nan}
    nw = len(gamma_windows)
    gw = np.full(nw, np.nan)
    gwr2 = np.full(nw, np.nan)
    if "step" not in ds or (np.asarray(ds["step"].values) < 0).all():
        return nan4, gw, gwr2, "no step: gamma not computed"
    from .paramtime import fit_power_time

    step = ds["step"].values
    s = ds["param_time"].values
    note = ""
    try:
        res = fit_power_time(step, s)
        out = {f"gamma{'' if k == 'gamma' else '_' + k}": _get(res, k)
               for k in ("gamma", "a", "b", "r2")}
        out = {k: (float(v) if v is not None and v.size == 1 else np.nan) for k, v in out.items()}
        status = str(np.asarray(res["status"]).item()) if "status" in res else "ok"
        if status != "ok":
            note = f"gamma fit {status}: {np.asarray(res['reason']).item()}"
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        # a gamma fit that cannot be done must not kill the band analysis: NaN + note
        out, note = nan4, f"fit_power_time failed: {type(exc).__name__}: {exc}"
    if nw and "epoch" in ds:
        try:
            res = fit_power_time(step, s, windows=[tuple(w) for w in gamma_windows],
                                 epoch=ds["epoch"].values)
            g, r2 = _get(res, "gamma"), _get(res, "r2")
            if g is not None and g.size == nw:
                gw = g.reshape(nw)
            if r2 is not None and r2.size == nw:
                gwr2 = r2.reshape(nw)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            note += f"; windowed fit_power_time failed: {type(exc).__name__}: {exc}"
    return out, gw, gwr2, note


# --------------------------------------------------------------------------- analysis
def analyze(
    run_or_runs,
    *,
    windows=DEFAULT_WINDOWS,
    floor="mean_last_k",
    k=5,
    deflation=10.0,
    min_points=5,
    saturation_tol_pct=2.0,
    n_starts=5,
    gamma_windows=((0, 10), (0, 25), (0, 50)),
    fallback=True,
    band_sum_missing="nan",
):
    """Key-search analysis of one or many runs → results Dataset (``docs/format.md``).

    Per run: floors (A.9; both conventions, ``floor`` selects which defines the residual),
    residuals R_i = L_i - L_i^∞ and R_tot = Σ R_i, α-crossings (A.10) for every threshold of
    ``windows``, onset τ = c(hi) and width w = c(lo) - c(hi), active windows (saved
    checkpoints strictly between c(hi) and c(lo), §5.1), Weibull and exponential fits in
    each window with s rebased to 0 at the first fitted checkpoint (B.1), R², BIC, ΔBIC and
    ΔBIC with n_eff = n/deflation (A.11, B.2), the full-loss fit on R_tot over all
    checkpoints and the band-fit reconstruction R̂_Σ (§6.3), Spearman ρ of band resolution
    against onset, width, floor and initial residual (§6.2), and γ of s(t) ≈ a + b t^γ (A.7).

    Parameters
    ----------
    run_or_runs : Dataset, stacked Dataset (``run`` dim), list/tuple or dict of Datasets
    windows : sequence of (hi, lo)
        Threshold pairs, 0 < lo < hi < 1 (paper: 0.95/0.01, B.3 adds 0.90/0.10, 0.80/0.20).
    floor : {"mean_last_k", "final"}
    k : int
        Checkpoints averaged by the mean-of-last-k floor (paper: 5).
    deflation : float
        n_eff = n / deflation for ``delta_bic_neff`` (paper: 10).
    min_points : int
        Windows with fewer checkpoints are not fitted (status ``"omitted"``; paper: 5).
    saturation_tol_pct : float
        A band whose floor-window drift is at least this many % of its range is flagged
        (``saturated`` False) and a warning is issued.
    n_starts : int
        Starts of the lmfit multistart fallback (the batch solver always searches a grid).
    gamma_windows : sequence of (epoch0, epoch1)
        Epoch windows for ``gamma_w`` (needs an ``epoch`` variable).
    fallback : bool
        Re-fit curves the batch solver did not converge on with lmfit.
    band_sum_missing : {"nan", "observed"}
        What R̂_Σ does with a band whose fit is not ``"ok"``: ``"nan"`` (default) makes
        ``band_sum_fit``/``band_sum_r2`` NaN for that run and window (a partial sum is not the
        reconstruction); ``"observed"`` puts the band's observed R_i in the sum instead
        (which flatters R², so it is opt-in). ``band_sum_n_fitted`` counts fitted bands.

    Returns
    -------
    xarray.Dataset
        See ``docs/format.md``. Extra variables: ``crossing`` has an ``alpha`` dim;
        ``rho_n`` (bands used per ρ); ``gamma_w``, ``gamma_w_r2`` (run, gamma_window).

    Examples
    --------
    >>> from bandscope.synthetic import make_run_synthetic
    >>> res = analyze(make_run_synthetic(0))
    >>> res.sizes["run"], res.sizes["band"], res.sizes["window"]
    (1, 7, 3)
    >>> str(res.status.sel(window="0.95/0.01", band=64).item())
    'ok'
    """
    if band_sum_missing not in ("nan", "observed"):
        raise ValueError(f"band_sum_missing must be 'nan' or 'observed', got {band_sum_missing!r}")
    if floor not in _FLOOR_CONVENTIONS:
        raise ValueError(f"floor must be one of {_FLOOR_CONVENTIONS}, got {floor!r}")
    windows = [(float(h), float(lo)) for h, lo in windows]
    if not windows:
        raise ValueError("windows must contain at least one (hi, lo) pair")
    for h, lo in windows:
        if not 0 < lo < h < 1:
            raise ValueError(f"window thresholds must satisfy 0 < lo < hi < 1, got ({h}, {lo})")
    k = int(k)
    min_points = int(min_points)
    if k < 1 or min_points < 4:
        raise ValueError(f"need k >= 1 and min_points >= 4 (3 Weibull parameters + 1); got "
                         f"k={k}, min_points={min_points}")
    runs = collect_runs(run_or_runs)
    for nm, ds in runs:
        K = ds.sizes["checkpoint"]
        if K < max(k + 1, min_points):
            raise ValueError(f"run {nm!r} has {K} checkpoints; the analysis needs at least "
                             f"{max(k + 1, min_points)} (k + 1 = {k + 1} for the floor and "
                             f"min_points = {min_points} for the full-loss fit)")

    names = [nm for nm, _ in runs]
    bands = runs[0][1]["band"].values
    nR, nB, nW = len(runs), bands.size, len(windows)
    Ks = np.array([ds.sizes["checkpoint"] for _, ds in runs])
    K = int(Ks.max())
    L = np.full((nR, K, nB), np.nan)
    s = np.full((nR, K), np.nan)
    step = np.full((nR, K), -1, dtype=np.int64)
    valid = np.arange(K)[None, :] < Ks[:, None]
    for i, (_, ds) in enumerate(runs):
        L[i, : Ks[i]] = ds["band_loss"].transpose("checkpoint", "band").values
        s[i, : Ks[i]] = ds["param_time"].values
        if "step" in ds:
            step[i, : Ks[i]] = ds["step"].values

    # floors (A.9), per run on its own checkpoints
    fl_mean = np.empty((nR, nB))
    fl_final = np.empty((nR, nB))
    fl_diff = np.empty((nR, nB))
    fl_drift = np.empty((nR, nB))
    fl_trend = np.empty((nR, nB))
    fl_noise = np.empty((nR, nB))
    for i in range(nR):
        fl_mean[i], fl_final[i], fl_diff[i], fl_drift[i] = trajectory._floors(
            L[i, : Ks[i]], k=k, axis=0)
        fl_trend[i] = trajectory._window_trend(L[i, : Ks[i]], s[i, : Ks[i]], k=k, axis=0)
        fl_noise[i] = trajectory._late_noise(L[i, : Ks[i]], s[i, : Ks[i]], k=k, axis=0)
    fl = fl_mean if floor == "mean_last_k" else fl_final
    saturated = fl_drift < saturation_tol_pct
    if not saturated.all():
        bad = [f"{names[i]} band {int(bands[b])} ({fl_drift[i, b]:.2f} %; trend {fl_trend[i, b]:.2f} %, "
               f"noise {fl_noise[i, b]:.2f} %)" for i, b in zip(*np.nonzero(~saturated))]
        warnings.warn(
            f"{len(bad)} band(s) still moved by >= {saturation_tol_pct} % of their range over the "
            f"last k={k} checkpoints (floor not reached; see 'saturated'): " + ", ".join(bad[:8])
            + (" ..." if len(bad) > 8 else "") + f". trend = steady fall (train longer); noise = "
            f"checkpoint scatter, which alone spans ~2.33x itself over 5 checkpoints (above "
            f"{saturation_tol_pct / 2.33:.2f} % a lower learning rate helps, more steps do not)",
            UserWarning, stacklevel=2)

    # residuals and crossings (5.1, A.10)
    R = L - fl[:, None, :]  # (run, checkpoint, band), NaN in padding
    Rtot = R.sum(axis=2)
    Rtot[~valid] = np.nan
    R0 = R[:, 0, :]
    alphas = np.array(sorted({a for w in windows for a in w}, reverse=True))
    q = trajectory._normalized_residual(R, axis=1)  # (run, checkpoint, band)
    cross = trajectory._crossings(np.moveaxis(q, 1, 2), s[:, None, :], alphas, axis=-1)  # (R,B,m)
    ai = {a: j for j, a in enumerate(alphas)}
    c_hi = np.stack([cross[..., ai[h]] for h, _ in windows], axis=1)  # (R, W, B)
    c_lo = np.stack([cross[..., ai[lo]] for _, lo in windows], axis=1)
    onset, width = c_hi, c_lo - c_hi
    mask, start, stop, nfit = trajectory._active_window(s[:, None, None, :], c_hi, c_lo)
    # mask (R, W, B, K)

    # pack window points left-aligned: curve c = (run, window, band)
    C = nR * nW * nB
    N = max(int(nfit.max()), 1)
    j = np.arange(N)
    st = np.maximum(start, 0).reshape(C)
    idx = st[:, None] + j[None, :]
    inwin = j[None, :] < nfit.reshape(C)[:, None]
    idx = np.where(inwin, idx, 0)
    run_of = np.repeat(np.arange(nR), nW * nB)
    band_of = np.tile(np.arange(nB), nR * nW)
    s_pk = s[run_of[:, None], idx]
    x = np.where(inwin, s_pk - s_pk[:, :1], np.nan)
    y = np.where(inwin, R[run_of[:, None], idx, band_of[:, None]], np.nan)
    # the full-loss curves (6.3: R_tot over all checkpoints, s rebased to checkpoint 0) ride in
    # the same batch as the band windows: one grid + one LM call per model
    Np = max(N, K)
    padc = lambda a, fill: np.pad(a, ((0, 0), (0, Np - a.shape[1])), constant_values=fill)  # noqa: E731
    allfits = fitting.compare_curves(
        np.concatenate([padc(x, np.nan), padc(s - s[:, :1], np.nan)]),
        np.concatenate([padc(y, np.nan), padc(Rtot, np.nan)]),
        np.concatenate([padc(inwin, False), padc(valid, False)]),
        deflation=deflation, min_points=min_points, fallback=fallback, n_starts=n_starts)
    fits = {key: np.asarray(val)[:C] for key, val in allfits.items()}
    tot = {key: np.asarray(val)[C:] for key, val in allfits.items()}
    shape = (nR, nW, nB)
    F = {key: np.asarray(val).reshape(shape) for key, val in fits.items()}
    no_cross = (nfit.reshape(shape) == 0) & ~np.isfinite(c_hi + c_lo)
    for r_, w_, b_ in zip(*np.nonzero(no_cross & (F["status"] == "omitted"))):
        F["reason"][r_, w_, b_] = ("no active window: R_i(s_0) <= 0 (initial loss at or below "
                                   "the floor), so no threshold crossings"
                                   if np.isnan(q[r_, 0, b_]) else
                                   "no active window: a threshold was never crossed")


    # band-fit reconstruction (6.3)
    s_start = np.take_along_axis(s, np.maximum(start, 0).reshape(nR, nW * nB),
                                 axis=1).reshape(shape)
    ok = F["status"] == "ok"
    with np.errstate(invalid="ignore"):
        xx = np.clip(s[:, None, None, :] - s_start[..., None], 0.0, None)
        Rhat = fitting.weibull(xx, F["A"][..., None], F["omega"][..., None], F["beta"][..., None])
    if band_sum_missing == "observed":
        Robs = np.moveaxis(R, 1, 2)[:, None, :, :]  # (R, 1, B, K)
        Rhat = np.where(ok[..., None], Rhat, Robs)
        all_ok = np.ones(ok.shape[:2], dtype=bool)
    else:
        all_ok = ok.all(axis=2)  # (R, W)
    band_sum = np.where(all_ok[..., None], Rhat.sum(axis=2), np.nan)
    band_sum[~np.broadcast_to(valid[:, None, :], band_sum.shape)] = np.nan
    band_sum_r2 = np.where(
        all_ok, fitting.r_squared(Rtot[:, None, :], np.nan_to_num(band_sum), axis=-1,
                                  where=np.broadcast_to(valid[:, None, :], band_sum.shape)),
        np.nan)

    # ordering (6.2)
    run_c = xr.DataArray(names, dims="run")
    coords_rwb = {"run": names, "window": [trajectory.window_label(h, lo) for h, lo in windows],
                  "band": bands}
    da_rwb = lambda a: xr.DataArray(a, dims=("run", "window", "band"), coords=coords_rwb)  # noqa: E731
    da_rb = lambda a: xr.DataArray(a, dims=("run", "band"), coords={"run": names, "band": bands})  # noqa: E731
    order = ordering.band_ordering(da_rwb(onset), da_rwb(width), da_rb(fl), da_rb(R0))

    # gamma (A.7)
    gam = [_gamma(ds, gamma_windows) for _, ds in runs]

    # ---------------------------------------------------------------- assemble
    dims_rck = ("run", "checkpoint", "band")
    attrs_of = runs[0][1]
    coords = {
        "run": run_c,
        "band": ("band", bands, {"units": "pixels per side", "long_name": "band resolution r"}),
        "window": ("window", coords_rwb["window"]),
        "window_hi": ("window", [h for h, _ in windows]),
        "window_lo": ("window", [lo for _, lo in windows]),
        "checkpoint": ("checkpoint", np.arange(K, dtype=np.int64)),
        "alpha": ("alpha", alphas),
        "metric": ("metric", list(ordering.METRICS)),
        "gamma_window": ("gamma_window", [f"{a:g}-{b:g}" for a, b in gamma_windows]),
        "arch": ("run", [str(ds.attrs.get("arch", "")) for _, ds in runs]),
        "seed": ("run", np.array([int(ds.attrs.get("seed", -1)) for _, ds in runs], dtype=np.int64)),
    }
    data_vars = {}
    units = attrs_of["band_loss"].attrs.get("units", "")
    sunits = attrs_of["param_time"].attrs.get("units", "")

    def put(name, dims, data, **attrs):
        if name in _DEFINITIONS:
            attrs.setdefault("definition", _DEFINITIONS[name])
        data_vars[name] = xr.Variable(dims, data, attrs)

    put("band_loss", dims_rck, L, **dict(attrs_of["band_loss"].attrs))
    put("param_time", ("run", "checkpoint"), s, **dict(attrs_of["param_time"].attrs))
    put("step", ("run", "checkpoint"), step, units="optimizer steps",
        long_name="raw training time t", note="-1 = unknown or padding")
    put("floor", ("run", "band"), fl, units=units,
        long_name=f"band floor L_i^inf ({floor})")
    put("floor_final", ("run", "band"), fl_final, units=units,
        definition="L_i at the last saved checkpoint")
    put("floor_mean_last_k", ("run", "band"), fl_mean, units=units,
        definition=f"mean of L_i over the last k={k} saved checkpoints (key search A.9)")
    put("floor_convention_diff_pct", ("run", "band"), fl_diff, units="% of band range",
        definition="|mean of last k - final| / (max L_i - min L_i) * 100 (key search A.9)")
    put("floor_window_drift_pct", ("run", "band"), fl_drift, units="% of band range",
        definition=f"(max - min of L_i over the last k={k} checkpoints) / (max L_i - min L_i) * 100")
    put("floor_window_trend_pct", ("run", "band"), fl_trend, units="% of band range",
        definition=f"-(least-squares slope of L_i on s over the last k={k} checkpoints) x (s span of "
        "those checkpoints) / (max L_i - min L_i) * 100: the part of the drift that is a steady "
        "fall (positive = still falling), as opposed to fluctuation")
    put("late_noise_pct", ("run", "band"), fl_noise, units="% of band range",
        definition=f"sd of L_i between checkpoints over the last 2k+2={2 * k + 2} checkpoints, from second "
        "differences in s that cancel any linear trend, / (max L_i - min L_i) * 100; 5 noisy "
        "checkpoints span ~2.33 sd, so noise > tol/2.33 makes the drift exceed tol by itself")
    put("saturated", ("run", "band"), saturated,
        definition=f"floor_window_drift_pct < {saturation_tol_pct} %")
    put("residual", dims_rck, R, units=units)
    put("total_residual", ("run", "checkpoint"), Rtot, units=units)
    put("initial_residual", ("run", "band"), R0, units=units)
    put("crossing", ("run", "band", "alpha"), cross, units=sunits)
    rwb = ("run", "window", "band")
    put("onset", rwb, onset, units=sunits)
    put("width", rwb, width, units=sunits)
    put("fit_n", rwb, F["n"].astype(np.int64))
    put("fit_start", rwb, start.astype(np.int64))
    put("fit_stop", rwb, stop.astype(np.int64))
    for key, u in (("A", units), ("omega", sunits), ("beta", "1"), ("r2", "1"),
                   ("sse_weibull", f"({units})^2"), ("exp_A", units), ("exp_omega", sunits),
                   ("exp_r2", "1"), ("sse_exp", f"({units})^2"), ("bic_weibull", "1"),
                   ("bic_exp", "1"), ("delta_bic", "1"), ("delta_bic_neff", "1")):
        put(key, rwb, F[key].astype(np.float64), units=u)
    put("status", rwb, F["status"].astype(str))
    put("reason", rwb, F["reason"].astype(str))
    tmap = {"total_A": "A", "total_omega": "omega", "total_beta": "beta", "total_r2": "r2",
            "total_bic_weibull": "bic_weibull", "total_bic_exp": "bic_exp",
            "total_delta_bic": "delta_bic", "total_delta_bic_neff": "delta_bic_neff",
            "total_exp_r2": "exp_r2", "total_sse_weibull": "sse_weibull",
            "total_sse_exp": "sse_exp", "total_exp_A": "exp_A", "total_exp_omega": "exp_omega"}
    for key, src in tmap.items():
        put(key, ("run",), np.asarray(tot[src], dtype=np.float64),
            definition="full-loss fit to R_tot over all saved checkpoints, s rebased to s_0 "
            f"(key search 6.3): {_DEFINITIONS.get(src, src)}")
    put("total_n", ("run",), np.asarray(tot["n"], dtype=np.int64))
    put("total_status", ("run",), np.asarray(tot["status"]).astype(str))
    put("total_reason", ("run",), np.asarray(tot["reason"]).astype(str))
    put("band_sum_fit", ("run", "window", "checkpoint"), band_sum, units=units)
    put("band_sum_r2", ("run", "window"), band_sum_r2)
    put("band_sum_n_fitted", ("run", "window"), ok.sum(axis=2).astype(np.int64),
        definition="bands with an 'ok' fit in the reconstruction")
    put("rho", ("run", "window", "metric"), order["rho"].transpose("run", "window", "metric").values)
    put("rho_n", ("run", "window", "metric"),
        order["rho_n"].transpose("run", "window", "metric").values)
    for key in ("gamma", "gamma_a", "gamma_b", "gamma_r2"):
        put(key, ("run",), np.array([g[0][key] for g in gam]),
            definition=_DEFINITIONS["gamma"] + f" ({key})")
    put("gamma_w", ("run", "gamma_window"), np.array([g[1] for g in gam]).reshape(nR, -1))
    put("gamma_w_r2", ("run", "gamma_window"), np.array([g[2] for g in gam]).reshape(nR, -1),
        definition="R^2 of the windowed s(t) fit")
    from . import __version__

    res = xr.Dataset(data_vars, coords=coords)
    res.attrs.update({
        "bandscope_results": "results/1",
        "bandscope_version": __version__,
        "floor_convention": floor,
        "k": k,
        "deflation": float(deflation),
        "min_points": min_points,
        "saturation_tol_pct": float(saturation_tol_pct),
        "windows": list(coords_rwb["window"]),
        "band_sum_missing": band_sum_missing,
        "n_starts": int(n_starts),
        "fitter": "variable projection (closed-form A) + (log omega, beta) grid + batched "
        "Levenberg-Marquardt; lmfit multistart fallback for unconverged curves "
        "(bandscope.fitting.fit_curves)",
        "window_rule": "active window = saved checkpoints with c(hi) < s_k < c(lo), strict; "
        "empty when a crossing is NaN; s rebased to 0 at the first fitted checkpoint",
        "band_sum_rule": _DEFINITIONS["band_sum_fit"],
        "gamma_note": "; ".join(sorted({g[3] for g in gam if g[3]})),
    })
    return res
