"""Figures of the key-search analysis (optional extra: ``pip install 'bandscope[plot]'``).

Every function draws on the Axes it is given (``ax=``) or on a new
:class:`matplotlib.figure.Figure`, and returns what it drew on: one ``Axes``, or a numpy array
of Axes for multi-panel figures (``axes[0].figure`` is the Figure). Nothing here imports
``matplotlib.pyplot`` or changes matplotlib's backend or global state: figures are written with
``Figure.savefig``, which needs no backend.

- :func:`plot_weibull_shapes` -- Weibull decays for several β (the paper's Figure 2)
- :func:`plot_band_losses` -- band losses over parameter time, linear and log y (Figure 1);
  unsaturated bands dashed, the floor window shaded
- :func:`plot_band_fit` / :func:`plot_band_fits` -- residual per band with its Weibull and
  exponential fits and ΔBIC; points outside the active window pale (Figure 3)
- :func:`plot_ordering` -- onset, width, floor, initial residual against band resolution, one
  line per run coloured by architecture, median ρ in each title (§6.2)
- :func:`plot_full_loss_fit` / :func:`plot_full_loss` -- R_tot with its Weibull and
  exponential fits, ΔBIC, and the band-sum reconstruction (§6.3)
- :func:`write_figures` -- all of them as PNG files
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..keysearch.fitting import exponential, weibull
from .numfmt import fmt_r2

__all__ = ["plot_weibull_shapes", "plot_band_losses", "plot_band_fit", "plot_band_fits",
           "plot_ordering", "plot_full_loss_fit", "plot_full_loss", "write_figures", "arch_colors"]

S_LABEL = "parameter time s (L2 distance in parameter space)"
LOSS_UNIT = "squared pixel value"
_METRIC_LABELS = {
    "onset": (r"onset $\tau_i$", r"onset $\tau_i$ (parameter time)"),
    "width": (r"width $w_i$", r"width $w_i$ (parameter time)"),
    "floor": (r"floor $L_i^\infty$", r"floor $L_i^\infty$" + f" ({LOSS_UNIT})"),
    "initial_residual": (r"initial residual $R_i(s_0)$", r"$R_i(s_0)$" + f" ({LOSS_UNIT})"),
}
_ARCH_MAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def _new_axes(nrows=1, ncols=1, figsize=(6, 4)):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover
        raise ImportError("figures need matplotlib: pip install 'bandscope[plot]'") from exc
    fig = Figure(figsize=figsize, layout="constrained")
    return np.asarray(fig.subplots(nrows, ncols, squeeze=False))


def _axes_list(ax, n, ncols, panel=(3.2, 2.7)):
    """``ax`` as a flat array of ``n`` Axes (a new grid of ``ncols`` columns if None)."""
    if ax is None:
        ncols = max(1, min(ncols, n))
        nrows = int(np.ceil(n / ncols))
        axes = _new_axes(nrows, ncols, (panel[0] * ncols, panel[1] * nrows)).ravel()
        for a in axes[n:]:
            a.set_visible(False)
        return axes[:n]
    axes = np.asarray(ax, dtype=object).ravel()
    if axes.size < n:
        raise ValueError(f"ax has {axes.size} Axes; this figure needs {n} (one per panel)")
    return axes[:n]


def _cmap(name):
    import matplotlib

    return matplotlib.colormaps[name]


def _units(results, var, default):
    u = results[var].attrs.get("units") if var in results else None
    return u or default


def arch_colors(results: xr.Dataset) -> dict:
    """Run → colour: one colour family per architecture (blues, oranges, …), one shade per run.

    >>> from bandscope.keysearch.synthetic import make_runs_synthetic
    >>> from bandscope import analyze
    >>> import warnings; warnings.simplefilter("ignore")
    >>> c = arch_colors(analyze(make_runs_synthetic(2)))
    >>> len(c)
    2
    """
    runs = [str(r) for r in results["run"].values]
    archs = [str(a) for a in results["arch"].values] if "arch" in results.coords else [""] * len(runs)
    out = {}
    for j, a in enumerate(dict.fromkeys(archs)):
        members = [r for r, ra in zip(runs, archs) if ra == a]
        cmap = _cmap(_ARCH_MAPS[j % len(_ARCH_MAPS)])
        for i, r in enumerate(members):
            out[r] = cmap(0.45 + 0.5 * (i + 1) / (len(members) + 1))
    return out


def _arch(results, run):
    return str(results["arch"].sel(run=run).values) if "arch" in results.coords else ""


def _valid(res_run: xr.Dataset) -> np.ndarray:
    return np.isfinite(res_run["param_time"].values)


def plot_weibull_shapes(betas=(0.5, 1.0, 2.0, 4.0), ax=None):
    """Stylised Weibull decays R/A = exp(-(s/ω)^β) for several β: the paper's Figure 2
    (schematic, not a fit). β = 1 is the exponential; β < 1 decays fast then slows; β > 1 has a
    slow "warm-up" then decays faster.

    Returns the Axes.
    """
    ax = _new_axes(figsize=(5.5, 3.6))[0, 0] if ax is None else ax
    x = np.linspace(0, 3, 301)
    describe = {1.0: "exponential"}
    for j, b in enumerate(betas):
        note = describe.get(float(b), "fast, then slower" if b < 1 else "warm-up, then faster")
        ax.plot(x, weibull(x, 1.0, 1.0, b), lw=2 if b == 1 else 1.5, color=f"C{j}",
                ls="--" if b == 1 else "-", label=f"β = {b:g} ({note})")
    ax.set_xlabel("s / ω (parameter time in units of the scale ω)")
    ax.set_ylabel("R / A (residual, fraction of amplitude)")
    ax.set_title("Weibull decay R = A exp(-(s/ω)^β) for several β (paper Figure 2)", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return ax


def plot_band_losses(results: xr.Dataset, run, ax=None, yscales=("linear", "log")):
    """Band loss L_i against parameter time s for one run, one panel per y scale (Figure 1).

    Unsaturated bands (floor-window drift ≥ tolerance, ``saturated`` False) are dashed and
    labelled with their drift; the floor window (last k checkpoints) is shaded.

    Returns an array of Axes, one per entry of ``yscales``.
    """
    r = results.sel(run=run)
    ok = _valid(r)
    s = r["param_time"].values[ok]
    axes = _axes_list(ax, len(yscales), len(yscales), panel=(5.5, 3.8))
    cmap = _cmap("viridis")
    nb = r.sizes["band"]
    k = int(results.attrs.get("k", 5))
    for j, band in enumerate(r["band"].values):
        y = r["band_loss"].sel(band=band).values[ok]
        unsat = "saturated" in r and not bool(r["saturated"].sel(band=band))
        label = f"band {int(band)}"
        if unsat:
            drift = float(r["floor_window_drift_pct"].sel(band=band))
            label += f" (unsaturated, drift {drift:.2g} %)"
        for a in axes:
            a.plot(s, y, "--" if unsat else "-", marker="o", ms=2.5, lw=1.2,
                   color=cmap(j / max(1, nb - 1)), label=label)
    su = _units(results, "param_time", "L2 distance in parameter space")
    lu = _units(results, "band_loss", LOSS_UNIT)
    for a, scale in zip(axes, yscales):
        a.set_yscale(scale)
        if s.size > k:
            a.axvspan(s[-k], s[-1], color="0.85", zorder=0, label=f"floor window (last {k})")
        a.set_xlabel(f"parameter time s ({su})")
        a.set_ylabel(r"band loss $L_i$" + f" ({lu})")
        a.set_title(f"{run} [{_arch(results, run)}]: band losses, {scale} y", fontsize=9)
    axes[0].legend(fontsize=7)
    return axes


def plot_band_fit(results: xr.Dataset, run, band, window=None, ax=None):
    """Residual R_i(s) of one band with its Weibull and exponential fits over the active
    window; checkpoints outside the window pale; ΔBIC in the legend title; an unsaturated band
    says so in the title (red). Returns the Axes."""
    ax = _new_axes(figsize=(4, 3))[0, 0] if ax is None else ax
    r = results.sel(run=run)
    window = str(r["window"].values[0]) if window is None else window
    ok = _valid(r)
    s = r["param_time"].values[ok]
    R = r["residual"].sel(band=band).values[ok]
    f = r.sel(band=band, window=window)
    start, stop = int(f["fit_start"]), int(f["fit_stop"])
    inside = np.zeros(R.shape, bool)
    if 0 <= start <= stop:
        inside[start: stop + 1] = True
    ax.plot(s[~inside], R[~inside], "o", ms=3, color="C0", alpha=0.25, label="outside window")
    ax.plot(s[inside], R[inside], "o", ms=3, color="C0", label="fitted checkpoints")
    title = None
    if inside.any() and np.isfinite(float(f["A"])):
        s0 = s[start]
        ss = np.linspace(s0, s[stop], 200)
        ax.plot(ss, weibull(ss - s0, float(f["A"]), float(f["omega"]), float(f["beta"])), "-",
                color="C3", lw=1.6, label=f"Weibull β={float(f['beta']):.3g}, R²={fmt_r2(f['r2'])}")
        if "exp_A" in f and np.isfinite(float(f["exp_A"])):
            ax.plot(ss, exponential(ss - s0, float(f["exp_A"]), float(f["exp_omega"])), "--",
                    color="C2", lw=1.4, label=f"exponential, R²={fmt_r2(f['exp_r2'])}")
        d = float(f["delta_bic"])
        title = f"ΔBIC = {d:+.3g} ({'Weibull' if d < 0 else 'exponential'} preferred)"
    else:
        ax.text(0.5, 0.5, f"no fit: {f['status'].values}", transform=ax.transAxes, ha="center", fontsize=8)
    ax.legend(fontsize=6, title=title, title_fontsize=7, frameon=False)
    head = f"band {int(band)}"
    unsat = "saturated" in r and not bool(r["saturated"].sel(band=band))
    if unsat:
        head += f": UNSATURATED (drift {float(r['floor_window_drift_pct'].sel(band=band)):.2g} %)"
    ax.set_title(head, fontsize=8, color="C3" if unsat else "black")
    ax.set_xlabel("parameter time s", fontsize=8)
    ax.set_ylabel(r"residual $R_i = L_i - L_i^\infty$" + f" ({_units(results, 'residual', LOSS_UNIT)})",
                  fontsize=7)
    return ax


def plot_band_fits(results: xr.Dataset, run, window=None, ax=None):
    """:func:`plot_band_fit` for every band of one run (paper Figure 3); ``ax`` a sequence of
    one Axes per band. Returns the array of Axes."""
    bands = results["band"].values
    axes = _axes_list(ax, len(bands), 4, panel=(3.6, 3.0))
    window = str(results["window"].values[0]) if window is None else window
    for a, band in zip(axes, bands):
        plot_band_fit(results, run, band, window, ax=a)
    axes[0].figure.suptitle(f"{run} [{_arch(results, run)}]: Weibull and exponential fits, window "
                            f"{window} (pale: outside the active window)", fontsize=10)
    return axes


def plot_ordering(results: xr.Dataset, window=None, ax=None):
    """Onset, width, floor and initial residual against band resolution r, one line per run
    (colour family per architecture, :func:`arch_colors`); each title gives the median
    Spearman ρ across runs; unsaturated (run, band) pairs are marked with a red ×. Returns the
    array of 4 Axes."""
    from ..keysearch.ordering import METRICS

    window = str(results["window"].values[0]) if window is None else window
    axes = _axes_list(ax, 4, 4, panel=(3.8, 3.4))
    data = {"onset": results["onset"].sel(window=window), "width": results["width"].sel(window=window),
            "floor": results["floor"], "initial_residual": results["initial_residual"]}
    colors = arch_colors(results)
    bands = results["band"].values
    rho = results["rho"].sel(window=window)
    for a, m in zip(axes, METRICS):
        for run in results["run"].values:
            a.plot(bands, data[m].sel(run=run).values, "-o", ms=3, lw=1.2, color=colors[str(run)],
                   label=f"{run} [{_arch(results, run)}]")
        if "saturated" in results:
            unsat = ~results["saturated"].values.astype(bool)
            if unsat.any():
                vals = np.asarray(data[m].transpose("run", "band").values, dtype=float)
                bb = np.broadcast_to(bands, vals.shape)
                a.plot(bb[unsat], vals[unsat], "x", color="red", ms=7, mew=1.5, ls="none",
                       label="unsaturated band (floor biased up)")
        a.set_xscale("log", base=2)
        a.set_xticks(bands, [str(int(b)) for b in bands])
        a.set_xlabel("band resolution r")
        a.set_ylabel(_METRIC_LABELS[m][1])
        med = np.nanmedian(rho.sel(metric=m).values) if np.isfinite(rho.sel(metric=m).values).any() else np.nan
        a.set_title(f"{_METRIC_LABELS[m][0]}: median ρ = {med:+.2f}", fontsize=9)
        if m in ("floor", "initial_residual"):
            a.set_yscale("log")
    axes[0].legend(fontsize=7, title="run [architecture]", title_fontsize=7)
    axes[0].figure.suptitle(f"band ordering, window {window}", fontsize=10)
    return axes


def plot_full_loss_fit(results: xr.Dataset, run, window=None, ax=None):
    """R_tot(s) of one run with the single Weibull and exponential fits over all checkpoints
    (s rebased to s_0) and the band-sum reconstruction Σ_i R̂_i; ΔBIC in the legend title.
    Returns the Axes."""
    ax = _new_axes(figsize=(4.5, 3.2))[0, 0] if ax is None else ax
    r = results.sel(run=run)
    window = str(r["window"].values[0]) if window is None else window
    ok = _valid(r) & np.isfinite(r["total_residual"].values)
    s = r["param_time"].values[ok]
    R = r["total_residual"].values[ok]
    ax.plot(s, R, "o", ms=3, color="C0", label=r"$R_{tot}$ at saved checkpoints")
    title = None
    if s.size and np.isfinite(float(r["total_A"])):
        ss = np.linspace(s[0], s[-1], 300)
        ax.plot(ss, weibull(ss - s[0], float(r["total_A"]), float(r["total_omega"]), float(r["total_beta"])),
                "-", color="C3", lw=1.6,
                label=f"Weibull β={float(r['total_beta']):.3g}, R²={fmt_r2(r['total_r2'])}")
        if np.isfinite(float(r["total_exp_A"])):
            ax.plot(ss, exponential(ss - s[0], float(r["total_exp_A"]), float(r["total_exp_omega"])), "--",
                    color="C2", lw=1.4, label=f"exponential, R²={fmt_r2(r['total_exp_r2'])}")
        d = float(r["total_delta_bic"])
        title = f"ΔBIC = {d:+.3g}"
    if "band_sum_fit" in r:
        bs = r["band_sum_fit"].sel(window=window).values[ok]
        if np.isfinite(bs).any():
            ax.plot(s, bs, ":", color="k", lw=1.2,
                    label=r"band-sum $\sum_i \hat R_i$" + f", R²={fmt_r2(r['band_sum_r2'].sel(window=window))}")
    ax.set_yscale("log")
    ax.set_xlabel("parameter time s", fontsize=8)
    ax.set_ylabel(r"full-loss residual $R_{tot}$" + f" ({_units(results, 'total_residual', LOSS_UNIT)})",
                  fontsize=7)
    ax.set_title(f"{run} [{_arch(results, run)}]", fontsize=8)
    ax.legend(fontsize=6, title=title, title_fontsize=7, frameon=False)
    return ax


def plot_full_loss(results: xr.Dataset, window=None, ax=None):
    """:func:`plot_full_loss_fit` for every run; ``ax`` a sequence of one Axes per run.
    Returns the array of Axes."""
    runs = results["run"].values
    axes = _axes_list(ax, len(runs), 3, panel=(4.2, 3.2))
    for a, run in zip(axes, runs):
        plot_full_loss_fit(results, run, window, ax=a)
    axes[0].figure.suptitle("full-loss residual: one Weibull vs the exponential over all checkpoints "
                            "(paper §6.3)", fontsize=10)
    return axes


def write_figures(results: xr.Dataset, outdir, *, dpi: int = 110) -> list[Path]:
    """Write Figure 2, the ordering and full-loss figures, and per run the band losses
    (Figure 1) and band fits (Figure 3) as PNG; returns the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name):
        p = outdir / name
        fig.savefig(p, dpi=dpi)
        paths.append(p)

    save(plot_weibull_shapes().figure, "weibull_shapes.png")
    save(plot_ordering(results)[0].figure, "ordering.png")
    save(plot_full_loss(results)[0].figure, "full_loss.png")
    for run in results["run"].values:
        save(plot_band_losses(results, run)[0].figure, f"{run}_band_losses.png")
        save(plot_band_fits(results, run)[0].figure, f"{run}_fits.png")
    return paths
