"""``analyze()``: the whole key-search analysis of one or many runs (key search §5, §6, A, B).

A short composition of the public labelled functions: :func:`bandscope.keysearch.trajectory.floors`,
:func:`~bandscope.keysearch.trajectory.residuals`, :func:`~bandscope.keysearch.trajectory.crossings`,
:func:`~bandscope.keysearch.trajectory.onset_width`, :func:`~bandscope.keysearch.trajectory.active_windows`,
:func:`bandscope.keysearch.fitting.compare_windows` (all band windows of all runs in one batch, then the
full-loss curves), :func:`bandscope.keysearch.fitting.band_sum`,
:func:`bandscope.keysearch.ordering.band_ordering` and :func:`bandscope.transforms.paramtime.fit_run_gamma`. The
options travel as one validated :class:`AnalysisOptions`; every results variable takes its
dims and attrs from :mod:`bandscope.schema`.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from .. import schema
from ..run import validate_run
from ..transforms import paramtime
from . import fitting, ordering, trajectory
from .options import DEFAULT_GAMMA_WINDOWS, DEFAULT_WINDOWS, AnalysisOptions

__all__ = ["analyze", "AnalysisOptions", "DEFAULT_WINDOWS", "DEFAULT_GAMMA_WINDOWS",
           "collect_runs", "stack"]

#: what :func:`analyze` accepts: one run, a stacked Dataset, a list of runs or a dict name -> run
RunInput = xr.Dataset | Sequence[xr.Dataset] | Mapping[str, xr.Dataset]

# --------------------------------------------------------------------------- inputs
def _trim_padding(ds: xr.Dataset, name: str) -> xr.Dataset:
    """Drop trailing NaN-padded checkpoints; padding anywhere else is an error."""
    if "checkpoint" not in ds.dims:
        raise ValueError(f"run {name!r} has no 'checkpoint' dimension; dims are {dict(ds.sizes)}")
    if "band_loss" not in ds:  # a run without a panel: the rules say which analysis to run instead
        validate_run(ds)
    var = ds.variables["band_loss"]
    bl = np.asarray((var if var.dims == ("checkpoint", "band") else var.transpose("checkpoint", "band")).values,
                    dtype=np.float64)
    pt = np.asarray(ds.variables["param_time"].values, dtype=np.float64)
    good = np.isfinite(pt) & np.isfinite(bl).all(axis=1)
    n = int(good.sum())
    if not good[:n].all():
        bad = np.flatnonzero(~good[:n]).tolist()
        raise ValueError(f"run {name!r}: NaN at checkpoints {bad} before its last valid "
                         "checkpoint; only trailing padding is allowed (docs/format.md)")
    if n < ds.sizes["checkpoint"]:
        ds = ds.isel(checkpoint=slice(0, n))
    return ds


def _unstack(ds: xr.Dataset) -> list[tuple[str, xr.Dataset]]:
    """``(name, run)`` of each run of a stacked Dataset (``run`` dim; its ``arch`` and ``seed``
    coordinates become each run's attrs)."""
    names = ds["run"].values.tolist() if "run" in ds.coords else [f"run{i}" for i in range(ds.sizes["run"])]
    items = []
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
    return items


def collect_runs(run_or_runs: RunInput) -> list[tuple[str, xr.Dataset]]:
    """Normalise the accepted inputs to a list of ``(name, run Dataset)``.

    Accepts one run Dataset; a stacked Dataset with a ``run`` dim (trailing NaN padding of
    checkpoints is dropped per run); a list/tuple of runs (names from ``attrs['name']``,
    made unique with ``#2``, ``#3``, ...); or a dict name → run. Every run is validated with
    :func:`bandscope.run.validate_run` after its padding is dropped.
    """
    items: list[tuple[str, Any]] = []  # each checked to be a Dataset below
    if isinstance(run_or_runs, xr.Dataset):
        ds = run_or_runs
        items = _unstack(ds) if "run" in ds.dims else [(str(ds.attrs.get("name", "run")), ds)]
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
    bands0 = _band_values(out[0][1])
    for nm, ds in out[1:]:
        bands = _band_values(ds)
        if bands is not bands0 and not np.array_equal(bands, bands0):
            raise ValueError(f"run {nm!r} has bands {bands.tolist()} but run "
                             f"{out[0][0]!r} has {bands0.tolist()}; all runs need the same bands")
    return out


def _band_values(ds: xr.Dataset) -> np.ndarray:
    """``ds["band"].values`` without building a DataArray (validated runs have the coordinate)."""
    var = ds.variables.get("band")
    return np.asarray(ds["band"].values if var is None else var.values)


# --------------------------------------------------------------------------- stacking
def stack(runs: Sequence[tuple[str, xr.Dataset]]) -> xr.Dataset:
    """Stack ``collect_runs`` output into one Dataset (run, checkpoint, band), NaN-padded at the
    end of shorter runs (``step`` -1 there), with coords run, band, checkpoint, arch, seed."""
    names = [nm for nm, _ in runs]
    Ks = [ds.sizes["checkpoint"] for _, ds in runs]
    K = max(Ks)
    bands = runs[0][1]["band"].values
    L = np.full((len(runs), K, bands.size), np.nan)
    s = np.full((len(runs), K), np.nan)
    step = np.full((len(runs), K), -1, dtype=np.int64)
    for i, (_, ds) in enumerate(runs):
        v = ds.variables  # (no DataArray per variable and run)
        L[i, : Ks[i]] = v["band_loss"].transpose("checkpoint", "band").values
        s[i, : Ks[i]] = v["param_time"].values
        if "step" in v:
            step[i, : Ks[i]] = v["step"].values
    first = runs[0][1]
    return xr.Dataset(
        {"band_loss": (("run", "checkpoint", "band"), L, dict(first.variables["band_loss"].attrs)),
         "param_time": (("run", "checkpoint"), s, dict(first.variables["param_time"].attrs)),
         "step": (("run", "checkpoint"), step)},
        coords={"run": names, "band": bands, "checkpoint": np.arange(K, dtype=np.int64),
                "arch": ("run", [str(ds.attrs.get("arch", "")) for _, ds in runs]),
                "seed": ("run", np.array([int(ds.attrs.get("seed", -1)) for _, ds in runs],
                                         dtype=np.int64))})


def _warn_unsaturated(fl: xr.Dataset, opts: AnalysisOptions) -> None:
    sat = fl["saturated"].values
    if sat.all():
        return
    drift, trend, noise = (fl[v].values for v in ("floor_window_drift_pct",
                                                  "floor_window_trend_pct", "late_noise_pct"))
    names, bands = fl["run"].values, fl["band"].values
    tol = opts.saturation_tol_pct
    bad = [f"{names[i]} band {int(bands[b])} ({drift[i, b]:.2f} %; trend {trend[i, b]:.2f} %, "
           f"noise {noise[i, b]:.2f} %)" for i, b in zip(*np.nonzero(~sat))]
    warnings.warn(
        f"{len(bad)} band(s) still moved by >= {tol} % of their range over the "
        f"last k={opts.k} checkpoints (floor not reached; see 'saturated'): " + ", ".join(bad[:8])
        + (" ..." if len(bad) > 8 else "") + f". trend = steady fall (train longer); noise = "
        f"checkpoint scatter, which alone spans ~2.33x itself over 5 checkpoints (above "
        f"{tol / 2.33:.2f} % a lower learning rate helps, more steps do not)",
        UserWarning, stacklevel=3)


def _no_window_reasons(fits: xr.Dataset, fit_n: npt.NDArray[np.integer], windows_crossed: npt.NDArray[np.bool_],
                       q0_nan: npt.NDArray[np.bool_]) -> xr.Dataset:
    """Say why an omitted fit had no active window (no crossing at all)."""
    reason = fits.variables["reason"].values.copy()
    no_cross = (fit_n == 0) & ~windows_crossed & (fits.variables["status"].values == "omitted")
    for idx in zip(*np.nonzero(no_cross)):
        reason[idx] = ("no active window: R_i(s_0) <= 0 (initial loss at or below the floor), "
                       "so no threshold crossings" if q0_nan[idx[0], idx[2]] else
                       "no active window: a threshold was never crossed")
    fits.variables["reason"].values = reason
    return fits


# --------------------------------------------------------------------------- analysis
def analyze(run_or_runs: RunInput, options: AnalysisOptions | None = None, **overrides: Any) -> xr.Dataset:
    """Key-search analysis of one or many runs → results Dataset (``docs/format.md``).

    Per run: floors (A.9; both conventions, ``floor`` selects which defines the residual),
    residuals R_i = L_i - L_i^∞ and R_tot = Σ R_i, α-crossings (A.10) for every threshold of
    ``windows``, onset τ = c(hi) and width w = c(lo) - c(hi), active windows (saved
    checkpoints strictly between c(hi) and c(lo), §5.1), Weibull and exponential fits in
    each window with s rebased to 0 at the first fitted checkpoint (B.1), R², BIC, ΔBIC,
    ΔBIC with the paper's n_eff = n/deflation (A.11, B.2) and with n_eff from the residual
    autocorrelation, the full-loss fit on R_tot over all checkpoints and the band-fit
    reconstruction R̂_Σ (§6.3), Spearman ρ of band resolution against onset, width, floor
    and initial residual (§6.2), and γ of s(t) ≈ a + b t^γ (A.7).

    Every statistic is scale-free: multiplying all band losses by any positive factor within
    float range leaves R², ΔBIC, onsets, widths, the %-statistics and ρ unchanged.

    Parameters
    ----------
    run_or_runs : Dataset, stacked Dataset (``run`` dim), list/tuple or dict of Datasets
    options : AnalysisOptions, optional
        All options at once (default :class:`AnalysisOptions()`).
    **overrides
        Any field of :class:`AnalysisOptions` (``windows``, ``floor``, ``k``, ``deflation``,
        ``min_points``, ``saturation_tol_pct``, ``n_starts``, ``gamma_windows``,
        ``fallback``, ``band_sum_missing``), applied on top of ``options``.

    Returns
    -------
    xarray.Dataset
        Variables, dims, units and definitions as in :data:`bandscope.schema.RESULTS`
        (``docs/format.md``).

    Examples
    --------
    >>> from bandscope.keysearch.synthetic import make_run_synthetic
    >>> res = analyze(make_run_synthetic(0))
    >>> res.sizes["run"], res.sizes["band"], res.sizes["window"]
    (1, 7, 3)
    >>> str(res.status.sel(window="0.95/0.01", band=64).item())
    'ok'
    """
    opts = AnalysisOptions.resolve(options, **overrides)
    runs = collect_runs(run_or_runs)
    need = max(opts.k + 1, opts.min_points)
    for nm, ds in runs:
        if ds.sizes["checkpoint"] < need:
            raise ValueError(f"run {nm!r} has {ds.sizes['checkpoint']} checkpoints; the analysis "
                             f"needs at least {need} (k + 1 = {opts.k + 1} for the floor and "
                             f"min_points = {opts.min_points} for the full-loss fit)")
    st = stack(runs)
    L, s = st["band_loss"], st["param_time"]
    fit_kw: dict[str, Any] = {"deflation": opts.deflation, "min_points": opts.min_points,
              "fallback": opts.fallback, "n_starts": opts.n_starts}

    # floors (A.9), each run on its own checkpoints
    fl = trajectory.floors(L, k=opts.k, saturation_tol_pct=opts.saturation_tol_pct,
                           param_time=s)
    _warn_unsaturated(fl, opts)
    floor = fl["floor_mean_last_k" if opts.floor == "mean_last_k" else "floor_final"]
    # residuals, crossings, windows (5.1, A.9, A.10)
    R, Rtot = trajectory.residuals(L, floor)
    R = R.transpose("run", "checkpoint", "band")
    cross = trajectory.crossings(R, s, opts.alphas).transpose("run", "band", "alpha")
    onset, width = trajectory.onset_width(cross, windows=opts.windows)
    aw = trajectory.active_windows(s, cross, opts.windows)
    aw = aw.transpose("run", "window", "band", "checkpoint")
    # fits (5.2, 6.3, A.11, B.1, B.2): every band window and full-loss curve in one batch
    n_valid = xr.DataArray((np.isfinite(Rtot.values) & np.isfinite(s.values)).sum(axis=1),
                           dims="run", coords={"run": st["run"].values})
    fits, total = fitting.compare_window_sets(
        [(R, s, aw["fit_start"], aw["fit_n"]), (Rtot, s, xr.zeros_like(n_valid), n_valid)],
        **fit_kw)
    fits = fits.transpose("run", "window", "band")
    q0_nan = trajectory.normalized_residual(R).isel(checkpoint=0).isnull().values
    rwb = ("run", "window", "band")
    crossed = np.isfinite(onset.transpose(*rwb).values + width.transpose(*rwb).values)
    fits = _no_window_reasons(fits, aw["fit_n"].values, crossed, q0_nan)
    recon = fitting.band_sum(fits, R, Rtot, s, aw["fit_start"], missing=opts.band_sum_missing)
    # ordering (6.2) and gamma (A.7)
    R0 = R.isel(checkpoint=0, drop=True)
    order = ordering.band_ordering(onset, width, floor, R0)
    gam = paramtime.fit_run_gamma([ds for _, ds in runs], opts.gamma_windows)
    return _assemble(st, opts, fl, floor, R, Rtot, cross, onset, width, aw, fits, total, recon,
                     order, gam)


def _assemble(st: xr.Dataset, opts: AnalysisOptions, fl: xr.Dataset, floor: xr.DataArray, R: xr.DataArray,
              Rtot: xr.DataArray, cross: xr.DataArray, onset: xr.DataArray, width: xr.DataArray, aw: xr.Dataset,
              fits: xr.Dataset, total: xr.Dataset, recon: xr.Dataset, order: xr.Dataset,
              gam: xr.Dataset) -> xr.Dataset:
    """The results Dataset: data from the steps, dims and attrs from :mod:`bandscope.schema`."""
    from .. import __version__

    ctx = {"loss": st["band_loss"].attrs.get("units", ""),
           "time": st["param_time"].attrs.get("units", ""), "k": opts.k, "floor": opts.floor,
           "deflation": f"{opts.deflation:g}", "saturation_tol_pct": opts.saturation_tol_pct}
    rwb = ("run", "window", "band")
    def vals(da: xr.DataArray, dims: tuple[str, ...]) -> npt.NDArray[Any]:
        return np.asarray(da.values if da.dims == dims else da.transpose(*dims).values)

    data = {
        "band_loss": st["band_loss"].values, "param_time": st["param_time"].values,
        "step": st["step"].values, "floor": floor.values,
        "residual": R.values, "total_residual": vals(Rtot, ("run", "checkpoint")),
        "initial_residual": R.isel(checkpoint=0).values, "crossing": cross.values,
        "onset": vals(onset, rwb), "width": vals(width, rwb),
        "fit_n": vals(aw["fit_n"], rwb).astype(np.int64),
        "fit_start": vals(aw["fit_start"], rwb).astype(np.int64),
        "fit_stop": vals(aw["fit_stop"], rwb).astype(np.int64),
        "rho": vals(order["rho"], ("run", "window", "metric")),
        "rho_n": vals(order["rho_n"], ("run", "window", "metric")),
    }
    for name in ("floor_final", "floor_mean_last_k", "floor_convention_diff_pct",
                 "floor_window_drift_pct", "floor_window_trend_pct", "late_noise_pct",
                 "saturated"):
        data[name] = vals(fl[name], ("run", "band"))
    for name in ("A", "omega", "beta", "r2", "sse_weibull", "exp_A", "exp_omega", "exp_r2",
                 "sse_exp", "bic_weibull", "bic_exp", "delta_bic", "delta_bic_neff",
                 "n_eff_acf", "delta_bic_acf", "status", "reason"):
        data[name] = fits.variables[name].values
    for name in ("A", "omega", "beta", "r2", "sse_weibull", "exp_A", "exp_omega", "exp_r2",
                 "sse_exp", "bic_weibull", "bic_exp", "delta_bic", "delta_bic_neff",
                 "n_eff_acf", "delta_bic_acf", "n", "status", "reason"):
        data[f"total_{name}"] = total.variables[name].values
    for name in ("band_sum_fit", "band_sum_r2", "band_sum_n_fitted"):
        data[name] = recon[name].transpose("run", "window", *(("checkpoint",) if name ==
                                                              "band_sum_fit" else ())).values
    for name in ("gamma", "gamma_a", "gamma_b", "gamma_r2", "gamma_w", "gamma_w_r2"):
        data[name] = gam.variables[name].values
    missing = set(schema.RESULTS) - set(data)
    if missing:  # pragma: no cover - the schema and this function must agree
        raise RuntimeError(f"analyze() computed no data for schema variables {sorted(missing)}")
    data_vars = {name: schema.variable(name, data[name], **ctx) for name in schema.RESULTS}
    for name in ("band_loss", "param_time"):  # the inputs keep their own attrs too
        data_vars[name].attrs = {**dict(st[name].attrs), **data_vars[name].attrs}
    coords = {
        "run": ("run", st["run"].values),
        "band": ("band", st["band"].values, schema.attrs("band")),
        "window": ("window", opts.window_labels),
        "window_hi": ("window", [h for h, _ in opts.windows], schema.attrs("window_hi")),
        "window_lo": ("window", [lo for _, lo in opts.windows], schema.attrs("window_lo")),
        "checkpoint": ("checkpoint", st["checkpoint"].values),
        "alpha": ("alpha", opts.alphas),
        "metric": ("metric", list(ordering.METRICS)),
        "gamma_window": ("gamma_window", gam["gamma_window"].values,
                         schema.attrs("gamma_window")),
        "arch": ("run", st["arch"].values),
        "seed": ("run", st["seed"].values),
    }
    res = xr.Dataset(data_vars, coords=coords)
    schema.annotate_coords(res)  # every coordinate with its schema attrs (run, window, checkpoint, ...)
    res.attrs.update({
        "bandscope_results": schema.FORMAT,
        "bandscope_version": __version__,
        "floor_convention": opts.floor,
        "k": opts.k,
        "deflation": opts.deflation,
        "min_points": opts.min_points,
        "saturation_tol_pct": opts.saturation_tol_pct,
        "windows": list(opts.window_labels),
        "band_sum_missing": opts.band_sum_missing,
        "n_starts": opts.n_starts,
        "fallback": int(opts.fallback),
        "gamma_windows": [f"{a:g}-{b:g}" for a, b in opts.gamma_windows],
        "fitter": "variable projection (closed-form A) + (log omega, beta) grid + batched "
        "Levenberg-Marquardt; lmfit multistart fallback for unconverged curves "
        "(bandscope.keysearch.fitting.fit_curves)",
        "window_rule": "active window = saved checkpoints with c(hi) < s_k < c(lo), strict; "
        "empty when a crossing is NaN; s rebased to 0 at the first fitted checkpoint",
        "band_sum_rule": schema.RESULTS["band_sum_fit"].definition,
        "n_eff_acf_rule": schema.RESULTS["n_eff_acf"].definition,
        "gamma_note": "; ".join(sorted({str(n) for n in gam["note"].values if n})),
    })
    return res
