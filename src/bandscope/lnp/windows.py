"""Per-run LNP summaries over the log measurement windows: window means, late slopes, last-window means.

A run with LNP (``docs/format.md``) holds ℒ, 𝒩, P and P_AB at each measured optimizer step
(``lnp_step``), grouped into log-spaced windows (``lnp_window``, spectral reach appendix B.1).
This module reduces one run to what spectral reach §4 and Figure 1 read off it:

- the window means of each quantity (appendix C.1: the figure plots window averages);
- the late log-log slope ``d log Q / d log step`` of the window means (about 0 once Q has
  flattened out, negative while it still falls: "smaller models flatten out", §4);
- the mean of the last ``k`` window means and their standard deviation (where Q ends up);
- the cosine between the training-batch and held-out gradients, which links the self and the
  cross position: ``P_AB = cos(∇L_A, ∇L_B) · sqrt(P_A · P_B)`` (:func:`gradient_cosine`);
- the §5.1 linear-probe ratio ⟨P_trained⟩_τ / ⟨P_random⟩_τ when probes were recorded.

Numpy kernels are ``_name(..., axis)``; the public functions take and return xarray objects.
"""
from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt
import xarray as xr

from ..errors import BandscopeInputError
from ..schema import annotate, attrs
from .options import ReachOptions
from .statistics import probe_ratio, window_mean

__all__ = ["ReachOptions", "QUANTITIES", "gradient_cosine", "window_means", "loglog_slope",
           "last_windows", "run_probe_ratio", "summarise_run"]

#: the per-step quantities summarised per window: results name -> (run variable, what it is)
QUANTITIES = {
    "spectral_position": ("lnp_spectral_position", "P = P_A, self position of the update batch A"),
    "spectral_position_cross": ("lnp_spectral_position_cross",
                                "P_AB, held-out cross position (spectral reach Figure 1, appendix B.2.1)"),
    "spectral_position_b": ("lnp_spectral_position_b", "P_B, self position of the held-out batch B"),
    "gradient_cosine": (None, "cos(grad L_A, grad L_B) = grad_dot / sqrt(||grad L_A||^2 ||grad L_B||^2)"),
    "loss_scale_norm": ("lnp_loss_scale_norm", "normalised loss scale M L of batch A (appendix A.2)"),
    "network_scale_norm": ("lnp_network_scale_norm", "normalised network scale N / M of batch A (appendix A.2)"),
    "loss_scale": ("lnp_loss_scale", "raw loss scale ||dL_A/df||^2 of batch A"),
    "network_scale": ("lnp_network_scale", "raw network scale Tr K_AA of batch A"),
}


# --------------------------------------------------------------------------------------------
# numpy kernels
# --------------------------------------------------------------------------------------------
def _gradient_cosine(dot: npt.ArrayLike, sq_a: npt.ArrayLike, sq_b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """dot / sqrt(sq_a sq_b), elementwise; NaN where a squared norm is not positive."""
    dot, sq_a, sq_b = (np.asarray(v, dtype=np.float64) for v in (dot, sq_a, sq_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((sq_a > 0) & (sq_b > 0), dot / np.sqrt(sq_a * sq_b), np.nan)


def _loglog_slope(step: npt.ArrayLike, values: npt.ArrayLike, start: float, axis: int = -1,
                  min_points: int = 3) -> npt.NDArray[np.float64]:
    """Least-squares slope of log(values) on log(step) over step >= start (finite, positive values).

    NaN where fewer than ``min_points`` points qualify. ``step`` broadcasts against ``values``.
    """
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    t = np.broadcast_to(np.moveaxis(np.asarray(step, dtype=np.float64), axis, -1) if np.ndim(step) == np.ndim(values)
                        else np.asarray(step, dtype=np.float64), v.shape)
    out = np.full(v.shape[:-1], np.nan)
    for idx in np.ndindex(*v.shape[:-1]):
        x, y = t[idx], v[idx]
        with np.errstate(invalid="ignore"):
            keep = (x >= start) & (x > 0) & np.isfinite(y) & (y > 0) & np.isfinite(x)
        if keep.sum() >= min_points:
            lx, ly = np.log(x[keep]), np.log(y[keep])
            lx0 = lx - lx.mean()
            denom = np.sum(lx0**2)
            if denom > 0:
                out[idx] = np.sum(lx0 * (ly - ly.mean())) / denom
    return out


def _last_finite(values: npt.ArrayLike, k: int,
                 axis: int = -1) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean and standard deviation (ddof 1) of the last ``k`` finite entries along ``axis``."""
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    mean, sd = np.full(v.shape[:-1], np.nan), np.full(v.shape[:-1], np.nan)
    for idx in np.ndindex(*v.shape[:-1]):
        x = v[idx][np.isfinite(v[idx])][-k:]
        if x.size:
            mean[idx] = x.mean()
        if x.size >= 2:
            sd[idx] = x.std(ddof=1)
    return mean, sd


# --------------------------------------------------------------------------------------------
# public, labelled API
# --------------------------------------------------------------------------------------------
def gradient_cosine(grad_dot: xr.DataArray | npt.ArrayLike, grad_norm_sq: xr.DataArray | npt.ArrayLike,
                    grad_norm_sq_b: xr.DataArray | npt.ArrayLike) -> xr.DataArray | npt.NDArray[np.float64]:
    """Cosine between the update-batch and held-out gradients, cos(∇L_A, ∇L_B).

    ``cos = ∇L_B·∇L_A / sqrt(‖∇L_A‖² ‖∇L_B‖²)``. With the LNP definitions (LNP.md)
    ``P_A = ‖∇L_A‖²/(ℒ_A 𝒩_A)``, ``P_B = ‖∇L_B‖²/(ℒ_B 𝒩_B)`` and
    ``P_AB = ∇L_B·∇L_A / sqrt(ℒ_A ℒ_B 𝒩_A 𝒩_B)``, the scales cancel and

        P_AB = cos(∇L_A, ∇L_B) · sqrt(P_A · P_B)

    exactly: the held-out cross position is the geometric mean of the two self positions times
    the gradient cosine, so P_AB falls below P_A when the step on A transfers poorly to B.
    NaN where a squared norm is not positive.

    Examples
    --------
    >>> float(gradient_cosine(1.0, 4.0, 1.0))
    0.5
    """
    args = (grad_dot, grad_norm_sq, grad_norm_sq_b)
    if any(isinstance(a, xr.DataArray) for a in args):
        out = xr.apply_ufunc(_gradient_cosine, *args, dask="parallelized", output_dtypes=[float])
        out = out.rename("gradient_cosine")
        out.attrs = attrs("lnp_windows", "gradient_cosine")
        return out
    return _gradient_cosine(*args)


def _per_step(run: xr.Dataset, name: str) -> xr.DataArray | None:
    var, _ = QUANTITIES[name]
    if name == "gradient_cosine":
        need = ("lnp_grad_dot", "lnp_grad_norm_sq", "lnp_grad_norm_sq_b")
        if not all(v in run for v in need):
            return None
        return cast(xr.DataArray, gradient_cosine(*(run[v] for v in need)))
    return run[var] if var in run else None


def window_means(run: xr.Dataset) -> xr.Dataset:
    """Window means (appendix C.1) of each quantity of :data:`QUANTITIES` the run has.

    Dim ``lnp_window``; coordinate ``window_step``, the mean optimizer step of each window's
    measurements (the x position of the window in Figure 1). NaN values are skipped.

    Examples
    --------
    >>> run = xr.Dataset({"lnp_spectral_position": ("lnp_step", [0.4, 0.2, 0.1])},
    ...                  coords={"lnp_step": [0, 1, 10], "lnp_window": ("lnp_step", [0, 0, 1])})
    >>> window_means(run).spectral_position.values.tolist()
    [0.30000000000000004, 0.1]
    """
    from ..schema import reach_attrs

    _need_lnp(run)
    labels = run["lnp_window"]
    steps = window_mean(run["lnp_step"].astype(np.float64), labels)
    out = xr.Dataset(coords={"lnp_window": ("lnp_window", steps["lnp_window"].values, reach_attrs("lnp_window")),
                             "window_step": ("lnp_window", steps.values, reach_attrs("window_step"))})
    for name in QUANTITIES:
        per_step = _per_step(run, name)
        if per_step is not None:
            var = QUANTITIES[name][0]
            units = {"units": run[var].attrs["units"]} if var in run and "units" in run[var].attrs else {}
            out[name] = ("lnp_window", window_mean(per_step, labels).values, {**reach_attrs(name), **units})
    return annotate(out, "lnp_summary", coords_only=True)  # older xarray drops an index coordinate's attrs here


def loglog_slope(values: xr.DataArray, step: xr.DataArray | npt.ArrayLike, start: float = 0.0,
                 dim: str = "lnp_window") -> xr.DataArray:
    """Least-squares slope of log(values) on log(step) over the entries with step >= ``start``.

    ``d log Q / d log step``: a power law Q ∝ step^a gives ``a``; about 0 once Q has flattened
    out (spectral reach §4). Entries that are not finite or not positive are skipped; fewer than
    three remaining give NaN.

    Examples
    --------
    >>> t = xr.DataArray([10.0, 100.0, 1000.0], dims="lnp_window")
    >>> round(float(loglog_slope(3 * t ** -0.5, t)), 12)
    -0.5
    """
    step = step if isinstance(step, xr.DataArray) else xr.DataArray(np.asarray(step, float), dims=(dim,))
    out = xr.apply_ufunc(_loglog_slope, step, values, input_core_dims=[[dim], [dim]],
                         kwargs={"start": float(start)}, output_dtypes=[float])
    out.attrs = attrs("lnp_windows", "late_slope", start=f"{start:g}")
    return out


def last_windows(values: xr.DataArray, k: int = 3, dim: str = "lnp_window") -> tuple[xr.DataArray, xr.DataArray]:
    """Mean and standard deviation (ddof 1) of the last ``k`` finite window means along ``dim``.

    Examples
    --------
    >>> m, s = last_windows(xr.DataArray([9.0, 1.0, 2.0, 3.0], dims="lnp_window"), k=3)
    >>> float(m), float(s)
    (2.0, 1.0)
    """
    mean, sd = xr.apply_ufunc(_last_finite, values, input_core_dims=[[dim]], kwargs={"k": int(k)},
                              output_core_dims=[[], []], output_dtypes=[float, float])
    units = {"units": values.attrs["units"]} if "units" in values.attrs else {}
    mean.attrs = {**attrs("lnp_windows", "last_mean"), **units}
    sd.attrs = {**attrs("lnp_windows", "last_sd"), **units}
    return mean, sd


def run_probe_ratio(run: xr.Dataset, options: ReachOptions | None = None) -> xr.DataArray | None:
    """The §5.1 linear-probe ratio ⟨P_trained⟩_τ / ⟨P_random⟩_τ of one run (Eq. 12/55), or None.

    Reads ``probe_spectral_position(probe_backbone, probe_lnp_step)`` with backbones
    ``trained`` and ``random`` and windows ``probe_lnp_window`` (``docs/format.md``) and calls
    :func:`bandscope.lnp.probe_ratio` (top ``options.probe_fraction`` of each window,
    ``options.probe_bins`` bins of normalised time τ). Below 1: the trained backbone reaches
    lower P. None when the run has no probe variables.
    """
    options = options or ReachOptions()
    if "probe_spectral_position" not in run:
        return None
    p = run["probe_spectral_position"]
    try:
        tr, rd = p.sel(probe_backbone="trained"), p.sel(probe_backbone="random")
    except KeyError:
        raise BandscopeInputError(
            f"run {run.attrs.get('name', '?')!r}: probe_backbone is {run['probe_backbone'].values.tolist()}, "
            "need 'trained' and 'random' (docs/format.md)") from None
    tr = tr.rename(probe_lnp_step="lnp_step")
    rd = rd.rename(probe_lnp_step="lnp_step")
    win = run["probe_lnp_window"].rename(probe_lnp_step="lnp_step").values
    return probe_ratio(tr, rd, bins=int(options.probe_bins), fraction=float(options.probe_fraction),
                       window_pretrained=win, window_random=win)


def _need_lnp(run: xr.Dataset) -> None:
    name = run.attrs.get("name", "?")
    if "lnp_step" not in run.dims or "lnp_window" not in run.coords and "lnp_window" not in run:
        raise BandscopeInputError(
            f"run {name!r} has no LNP measurements (dim 'lnp_step' with coordinate 'lnp_window'); "
            "record LNP with bandscope.torch (docs/lnp.md) or run the key-search analysis instead")
    if "lnp_spectral_position" not in run and "lnp_spectral_position_cross" not in run:
        raise BandscopeInputError(f"run {name!r} has neither lnp_spectral_position nor "
                                  "lnp_spectral_position_cross: nothing to summarise")


def _last_valid(da: xr.DataArray) -> float:
    v = np.asarray(da.values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v[-1]) if v.size else float("nan")


def summarise_run(run: xr.Dataset, options: ReachOptions | None = None) -> xr.Dataset:
    """One run's spectral-reach summary: window means, late slopes, last-window means, probe ratio.

    A composition of :func:`window_means`, :func:`loglog_slope`, :func:`last_windows` and
    :func:`run_probe_ratio`. Scalars per quantity Q of :data:`QUANTITIES` present in the run:
    ``Q_late_slope`` (from step ``options.slope_start``, default the last decade),
    ``Q_last_mean`` / ``Q_last_sd`` (last ``options.last_k`` windows). Also ``n_parameters``
    (attrs), ``train_loss_final`` / ``heldout_loss_final`` (last finite value) and, with probes,
    ``probe_ratio(time_bin)``, ``probe_ratio_median``, ``probe_ratio_bins_below_1``,
    ``probe_ratio_bins``. Attrs of each variable come from :data:`bandscope.schema.REACH`.
    """
    from ..schema import reach_attrs

    options = options or ReachOptions()
    w = window_means(run)
    last_step = float(np.nanmax(run["lnp_step"].values))
    start = float(options.slope_start) if options.slope_start is not None else last_step / 10.0
    out = xr.Dataset(coords=w.coords)
    for name in QUANTITIES:
        if name not in w:
            continue
        var = QUANTITIES[name][0]
        units = {"units": run[var].attrs["units"]} if var in run and "units" in run[var].attrs else {}
        out[name] = w[name].assign_attrs({**reach_attrs(name), **units})
        out[f"{name}_late_slope"] = loglog_slope(w[name], w["window_step"], start).assign_attrs(
            reach_attrs(f"{name}_late_slope"))
        m, s = last_windows(w[name], options.last_k)
        out[f"{name}_last_mean"] = m.assign_attrs({**reach_attrs(f"{name}_last_mean"), **units})
        out[f"{name}_last_sd"] = s.assign_attrs({**reach_attrs(f"{name}_last_sd"), **units})
    n_par = run.attrs.get("n_parameters")
    out["n_parameters"] = ((), np.int64(n_par) if n_par is not None else np.int64(-1), reach_attrs("n_parameters"))
    for var in ("train_loss", "heldout_loss"):
        out[f"{var}_final"] = ((), _last_valid(run[var]) if var in run else np.nan, reach_attrs(f"{var}_final"))
    curves = [v for v in ("train_loss", "heldout_loss") if v in run and run[v].dims == ("checkpoint",)]
    if curves and "step" in run.coords:  # carried along for the loss panels of Figure 1
        n = run.sizes["checkpoint"]
        out = out.assign_coords(checkpoint=("checkpoint", np.arange(n), reach_attrs("checkpoint")), checkpoint_step=(
            "checkpoint", np.asarray(run["step"].values, dtype=np.float64), reach_attrs("checkpoint_step")))
        for v in curves:
            out[v] = ("checkpoint", np.asarray(run[v].values, dtype=np.float64),
                      {**reach_attrs(v), **({"units": run[v].attrs["units"]} if "units" in run[v].attrs else {})})
    ratio = run_probe_ratio(run, options)
    if ratio is not None:
        vals = ratio.values
        out["probe_ratio"] = ratio.assign_attrs(reach_attrs("probe_ratio"))
        out["probe_ratio_median"] = ((), float(np.nanmedian(vals)) if np.isfinite(vals).any() else np.nan,
                                     reach_attrs("probe_ratio_median"))
        out["probe_ratio_bins_below_1"] = ((), int((vals < 1).sum()), reach_attrs("probe_ratio_bins_below_1"))
        out["probe_ratio_bins"] = ((), int(np.isfinite(vals).sum()), reach_attrs("probe_ratio_bins"))
    out.attrs = {"name": str(run.attrs.get("name", "?")), "slope_start": start, "last_k": int(options.last_k)}
    return annotate(out, "lnp_summary", coords_only=True)  # older xarray drops an index coordinate's attrs
