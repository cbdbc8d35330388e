"""Figures of the spectral-reach analysis: ℒ, 𝒩, P and P_AB over training, grouped by model size.

Every function reads a results Dataset of :func:`bandscope.lnp.reach.reach_analysis` (it never
computes an LNP number), draws on the Axes it is given (``ax=``) or on a new
:class:`matplotlib.figure.Figure`, and returns what it drew on. Runs are coloured by model size
(``n_parameters``, light to dark with size); seeds of one size share the colour with different
line styles. Nothing here imports ``matplotlib.pyplot`` or changes matplotlib's global state.

- :func:`plot_over_training` -- one quantity's window means over training, log-log
- :func:`plot_reach` -- the layout of spectral reach Figure 1: loss over training (top) and the
  held-out cross position P_AB over training (bottom), by model size
- :func:`plot_lnp_components` -- ℒ̃, 𝒩̃, P, P_AB, P_B and cos(∇L_A, ∇L_B) over training
  (spectral reach appendix D.4, Figures 10/11)
- :func:`plot_probe_ratio` -- the §5.1 probe ratio over normalised time (Figure 4)
- :func:`plot_band_positions` -- band-resolved spectral positions P_i per Haar band, one line per
  measurement window (``docs/LNP``'s band-resolved LNP; the caller takes the window means)
- :func:`write_lnp_figures` -- all of them as PNG files
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["LABELS", "size_colours", "plot_over_training", "plot_reach", "plot_lnp_components",
           "plot_probe_ratio", "plot_band_positions", "write_lnp_figures"]

#: axis label of each plotted results variable
LABELS = {
    "spectral_position": "P (self, batch A = training batch)",
    "spectral_position_cross": "P_AB (step on A, loss on held-out B)",
    "spectral_position_b": "P_B (self, held-out batch B)",
    "gradient_cosine": "cos(∇L_A, ∇L_B)",
    "loss_scale_norm": r"$\tilde{\mathcal{L}} = M\mathcal{L}$ (normalised loss scale)",
    "network_scale_norm": r"$\tilde{\mathcal{N}} = \mathcal{N}/M$ (normalised network scale)",
    "loss_scale": r"$\mathcal{L}$ (loss scale)",
    "network_scale": r"$\mathcal{N}$ (network scale)",
    "train_loss": "training loss",
    "heldout_loss": "held-out loss",
}
_STYLES = ("-", "--", ":", "-.")


def _new_axes(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4)) -> np.ndarray:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover
        raise ImportError("figures need matplotlib: pip install 'bandscope[plot]'") from exc
    fig = Figure(figsize=figsize, layout="constrained")
    return np.asarray(fig.subplots(nrows, ncols, squeeze=False))


def _size_label(n: int) -> str:
    if n < 0:
        return "size unknown"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit} params"
    return f"{n} params"


def size_colours(results: xr.Dataset) -> dict:
    """n_parameters -> colour: viridis from light (small) to dark (large), one colour per size."""
    from matplotlib import colormaps

    sizes = sorted({int(n) for n in results["n_parameters"].values})
    cmap = colormaps["viridis_r"]
    pos = np.linspace(0.15, 0.95, len(sizes)) if len(sizes) > 1 else [0.6]
    return {s: cmap(float(p)) for s, p in zip(sizes, pos)}


def _styles(results: xr.Dataset) -> dict:
    """run -> line style: the i-th run of its size gets the i-th style."""
    seen: dict = {}
    out = {}
    for run, n in zip(results["run"].values, results["n_parameters"].values):
        i = seen.get(int(n), 0)
        seen[int(n)] = i + 1
        out[str(run)] = _STYLES[i % len(_STYLES)]
    return out


def _series_label(results: xr.Dataset, run: Any) -> str:
    n = int(results["n_parameters"].sel(run=run))
    return f"{run} ({_size_label(n)})"


def plot_over_training(results: xr.Dataset, var: str = "spectral_position_cross", ax: Any = None, *,
                       legend: bool = True, logy: bool | None = None) -> Any:
    """Window means of ``var`` against the window's mean step + 1, one line per run, log-log.

    ``var`` is a (run, lnp_window) variable of the results (``spectral_position_cross``: P_AB,
    the quantity of spectral reach Figure 1; ``spectral_position``: self P; ``loss_scale_norm``,
    ``network_scale_norm``, ``gradient_cosine``, ...) or ``train_loss`` / ``heldout_loss``
    (over the run's checkpoints). Values that are not positive are left out on a log axis;
    ``logy=None`` picks a log axis unless the variable has negative values.
    """
    if var not in results:
        raise KeyError(f"{var!r} is not in the results; available: "
                       f"{[v for v in results.data_vars if 'lnp_window' in results[v].dims]}")
    ax = _new_axes()[0, 0] if ax is None else ax
    colours, styles = size_colours(results), _styles(results)
    x_name = "checkpoint_step" if "checkpoint" in results[var].dims else "window_step"
    vals = results[var].values
    if logy is None:
        logy = not np.any(np.asarray(vals)[np.isfinite(vals)] < 0)
    for run in results["run"].values:
        x = np.asarray(results[x_name].sel(run=run).values, dtype=float) + 1
        y = np.asarray(results[var].sel(run=run).values, dtype=float)
        keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if logy else True)
        n = int(results["n_parameters"].sel(run=run))
        ax.plot(x[keep], y[keep], styles[str(run)], color=colours[n], marker="o" if x_name == "window_step" else None,
                ms=2.5, lw=1.2, label=_series_label(results, run))
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step + 1")
    ax.set_ylabel(LABELS.get(var, var))
    if legend:
        ax.legend(fontsize=7)
    return ax


def plot_reach(results: xr.Dataset, ax: Any = None) -> Any:
    """The layout of spectral reach Figure 1 for one setting: loss (top) and P_AB (bottom) over training.

    Top: the held-out loss over training when the runs logged one, else the training loss; bottom:
    the window means of the held-out cross position P_AB (the quantity of Figure 1, appendix
    B.2.1), falling with training and lower for larger models when the paper's claim holds. The
    bottom title quotes the size-ordering test of the last-window mean of P_AB. Returns the
    (2,) array of Axes.
    """
    axes = _new_axes(2, 1, (6.4, 7.0))[:, 0] if ax is None else np.asarray(ax).ravel()
    loss = "heldout_loss" if "heldout_loss" in results and np.isfinite(results["heldout_loss"].values).any() \
        else "train_loss"
    if loss in results:
        plot_over_training(results, loss, axes[0], legend=True)
        axes[0].set_title(f"{LABELS[loss]} over training, by model size")
    else:
        axes[0].set_visible(False)
    var = "spectral_position_cross" if "spectral_position_cross" in results else "spectral_position"
    plot_over_training(results, var, axes[1], legend=False)
    title = f"{'P_AB, held-out cross position' if var.endswith('cross') else 'P, self position'} (window means)"
    q = f"{var}_last_mean"
    if "ordering" in results.coords and q in results["ordering"].values:
        row = results.sel(ordering=q)
        title += (f"\nsize ordering of the last-window mean: Spearman ρ = {float(row.ordering_rho):.2f},"
                  f"\nexact one-sided p = {float(row.ordering_p_value):.3g} over {int(row.ordering_n_assignments)} "
                  "assignments of runs to sizes")
    axes[1].set_title(title, fontsize=9)
    return axes


def plot_lnp_components(results: xr.Dataset, ax: Any = None) -> Any:
    """ℒ̃, 𝒩̃, P, P_AB, P_B and cos(∇L_A, ∇L_B) over training by model size (appendix D.4).

    Raw scales stand in for the normalised ones when a run has no unit count. Panels the runs
    did not record are hidden. Returns the (2, 3) array of Axes.
    """
    axes = _new_axes(2, 3, (14, 7.2)) if ax is None else np.asarray(ax).reshape(2, 3)
    panels = [
        "loss_scale_norm" if "loss_scale_norm" in results else "loss_scale",
        "network_scale_norm" if "network_scale_norm" in results else "network_scale",
        "gradient_cosine", "spectral_position", "spectral_position_cross", "spectral_position_b",
    ]
    for a, var in zip(axes.ravel(), panels):
        if var not in results or not np.isfinite(results[var].values).any():
            a.set_visible(False)
            continue
        plot_over_training(results, var, a, legend=False, logy=False if var == "gradient_cosine" else None)
        a.set_title(LABELS.get(var, var), fontsize=9)
    first = next(a for a in axes.ravel() if a.get_visible())
    first.legend(fontsize=7)
    return axes


def plot_probe_ratio(results: xr.Dataset, ax: Any = None) -> Any:
    """The §5.1 probe ratio ⟨P_trained⟩_τ / ⟨P_random⟩_τ per run over normalised time τ (Figure 4).

    Below the dashed line at 1 the probe on the trained backbone reaches lower P than on the
    random one. Raises ``KeyError`` when the results hold no probe ratio.
    """
    if "probe_ratio" not in results:
        raise KeyError("the results hold no probe_ratio: the runs recorded no linear probes (docs/format.md)")
    ax = _new_axes()[0, 0] if ax is None else ax
    colours, styles = size_colours(results), _styles(results)
    t = results["time_bin"].values
    for run in results["run"].values:
        y = results["probe_ratio"].sel(run=run).values
        keep = np.isfinite(y)
        n = int(results["n_parameters"].sel(run=run))
        ax.plot(t[keep], y[keep], styles[str(run)], marker="o", ms=3, color=colours[n],
                label=_series_label(results, run))
    ax.axhline(1.0, color="0.4", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("normalised probe time τ")
    ax.set_ylabel("⟨P_trained⟩_τ / ⟨P_random⟩_τ")
    ax.set_title("linear probes (§5.1): trained vs random backbone", fontsize=9)
    ax.legend(fontsize=7)
    return ax


def plot_band_positions(band_p: xr.DataArray, ax: Any = None, *, window_start: Any = None) -> Any:
    """Band spectral position P_i against Haar band resolution, one line per LNP window.

    ``band_p`` holds window means over (``lnp_window``, ``lnp_band``), e.g.
    ``bandscope.lnp.window_mean(run["lnp_band_spectral_position"], run["lnp_window"])``; lines go
    from light (early windows) to dark (late). ``window_start`` (optional, a mapping or DataArray
    from window to its first optimizer step) labels the first and last windows. Log-log axes.
    Returns the Axes.
    """
    if set(band_p.dims) != {"lnp_window", "lnp_band"}:
        raise ValueError(f"band_p must be over (lnp_window, lnp_band), got dims {band_p.dims}")
    a = _new_axes(1, 1, (7, 3.8))[0, 0] if ax is None else ax
    from matplotlib import colormaps

    windows = band_p["lnp_window"].values
    cmap = colormaps["viridis"].resampled(max(len(windows), 2))
    for j, w in enumerate(windows):
        label = None
        if j in (0, len(windows) - 1):
            start = None if window_start is None else window_start[int(w)] if not hasattr(window_start, "sel") \
                else int(window_start.sel(lnp_window=w))
            label = f"window {int(w)}" + ("" if start is None else f" (from step {int(start)})")
        a.plot(band_p["lnp_band"].values, band_p.sel(lnp_window=w).values, "o-", ms=3, color=cmap(j), label=label)
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("Haar band resolution r")
    a.set_ylabel("band spectral position P_i")
    a.set_title("window mean of P_i per band (colour: training time)", fontsize=10)
    a.legend(fontsize=8)
    return a


def write_lnp_figures(results: xr.Dataset, outdir: str | Path, *, dpi: int = 110, prefix: str = "reach") -> list[Path]:
    """Write ``{prefix}_figure1.png`` (:func:`plot_reach`), ``{prefix}_components.png``
    (:func:`plot_lnp_components`) and, with probes, ``{prefix}_probe_ratio.png`` into ``outdir``."""
    from ..io.atomic import write_atomic

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in (("figure1", plot_reach), ("components", plot_lnp_components), ("probe_ratio", plot_probe_ratio)):
        if name == "probe_ratio" and "probe_ratio" not in results:
            continue
        axes = np.atleast_1d(fn(results))
        path = outdir / f"{prefix}_{name}.png"
        fig = axes.ravel()[0].figure
        write_atomic(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=dpi, format="png"))
        paths.append(path)
    return paths
