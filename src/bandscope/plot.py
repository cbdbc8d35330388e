"""Figures of the key-search analysis (optional extra: ``pip install 'bandscope[plot]'``).

- :func:`plot_band_losses` -- band loss over parameter time, linear and log y (paper Figure 1)
- :func:`plot_band_fits` -- per-band Weibull fits, points outside the active window pale (Figure 3)
- :func:`plot_ordering` -- onset, width, floor and initial residual by band (§6.2)
- :func:`write_figures` -- all of them for every run of a results Dataset, as PNG files
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise ImportError("figures need matplotlib: pip install 'bandscope[plot]'") from exc
    return plt


def _valid(res_run: xr.Dataset) -> np.ndarray:
    return np.isfinite(res_run["param_time"].values)


def plot_band_losses(results: xr.Dataset, run, ax=None):
    """Band loss L_i against parameter time s for one run; linear (left) and log (right) y."""
    plt = _plt()
    r = results.sel(run=run)
    ok = _valid(r)
    s = r["param_time"].values[ok]
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    else:
        fig = ax[0].figure
    cmap = plt.get_cmap("viridis", r.sizes["band"])
    for j, band in enumerate(r["band"].values):
        y = r["band_loss"].sel(band=band).values[ok]
        for a in ax:
            a.plot(s, y, "-o", ms=2.5, lw=1.2, color=cmap(j), label=f"band {int(band)}")
    ax[1].set_yscale("log")
    for a, t in zip(ax, ("linear", "log")):
        a.set_xlabel("parameter time s")
        a.set_ylabel("band loss $L_i$")
        a.set_title(f"{run}: band losses ({t} y)")
    ax[0].legend(fontsize=8)
    return fig


def plot_band_fits(results: xr.Dataset, run, window=None):
    """Residual R_i(s) per band with its Weibull fit over the active window; checkpoints outside
    the window are drawn pale (paper Figure 3)."""
    plt = _plt()
    r = results.sel(run=run)
    window = str(r["window"].values[0]) if window is None else window
    ok = _valid(r)
    s = r["param_time"].values[ok]
    nb = r.sizes["band"]
    ncol = min(4, nb)
    nrow = int(np.ceil(nb / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.7 * nrow), constrained_layout=True, squeeze=False)
    for j, band in enumerate(r["band"].values):
        a = axes.flat[j]
        R = r["residual"].sel(band=band).values[ok]
        f = r.sel(band=band, window=window)
        start, stop = int(f["fit_start"]), int(f["fit_stop"])
        inside = np.zeros(R.shape, bool)
        if start >= 0 and stop >= start:
            inside[start : stop + 1] = True
        a.plot(s[~inside], R[~inside], "o", ms=3, color="C0", alpha=0.25)
        a.plot(s[inside], R[inside], "o", ms=3, color="C0")
        if inside.any() and np.isfinite(float(f["A"])):
            s0 = s[start]
            ss = np.linspace(s0, s[stop], 200)
            fit = float(f["A"]) * np.exp(-(((ss - s0) / float(f["omega"])) ** float(f["beta"])))
            a.plot(ss, fit, "-", color="C3", lw=1.5,
                   label=f"β={float(f['beta']):.2f}\nR²={float(f['r2']):.3f}")
            a.legend(fontsize=7, frameon=False)
        else:
            a.text(0.5, 0.5, str(f["status"].values), transform=a.transAxes, ha="center", fontsize=8)
        a.set_title(f"band {int(band)}", fontsize=9)
        a.set_xlabel("s", fontsize=8)
    for a in list(axes.flat)[nb:]:
        a.set_visible(False)
    fig.suptitle(f"{run}: Weibull fits, window {window} (pale: outside the active window)", fontsize=10)
    return fig


def plot_ordering(results: xr.Dataset, window=None):
    """Onset, width, floor and initial residual against band resolution, one line per run."""
    plt = _plt()
    window = str(results["window"].values[0]) if window is None else window
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), constrained_layout=True)
    quantities = [
        ("onset", results["onset"].sel(window=window)),
        ("width", results["width"].sel(window=window)),
        ("floor", results["floor"]),
        ("initial residual", results["initial_residual"]),
    ]
    bands = results["band"].values
    for a, (label, da) in zip(axes, quantities):
        for run in results["run"].values:
            a.plot(bands, da.sel(run=run).values, "-o", ms=3, lw=1, alpha=0.7)
        a.set_xscale("log", base=2)
        a.set_xlabel("band resolution r")
        a.set_title(label)
        if label in ("floor", "initial residual"):
            a.set_yscale("log")
    fig.suptitle(f"band ordering (window {window}); one line per run", fontsize=10)
    return fig


def write_figures(results: xr.Dataset, outdir, *, dpi: int = 110) -> list[Path]:
    """Write Figure 1 and Figure 3 for every run and the ordering figure; returns the paths."""
    plt = _plt()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in results["run"].values:
        for tag, fig in (("band_losses", plot_band_losses(results, run)), ("fits", plot_band_fits(results, run))):
            p = outdir / f"{run}_{tag}.png"
            fig.savefig(p, dpi=dpi)
            plt.close(fig)
            paths.append(p)
    fig = plot_ordering(results)
    p = outdir / "ordering.png"
    fig.savefig(p, dpi=dpi)
    plt.close(fig)
    paths.append(p)
    return paths
