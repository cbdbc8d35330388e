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
- :func:`plot_loss_curves` -- the full loss of each run over optimiser steps and over
  parameter time
- :func:`plot_forecast` / :func:`plot_forecasts` -- a forecast (``bandscope.forecast``,
  docs/forecast.md): the prefix it saw, the fitted curve, the floor and its interval, s_reach
  and its interval, and the rest of the run when it is known
- :func:`write_figures` -- all of them as PNG, SVG or PDF files

Text: no font is smaller than :data:`MIN_FONT_PT` points, and figures are at most
:data:`MAX_WIDTH_IN` inches wide, so that at the HTML report's 1,100-pixel column a point is at
least a pixel. Labels are Unicode, not mathtext (the SVG text then measures the same in a
browser as in matplotlib); users' strings (run names, architectures, units) are drawn literally
(:func:`literal_text`): a ``$`` never starts matplotlib's math mode.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..keysearch.fitting import exponential, weibull
from .arrays import values
from .numfmt import fmt_r2

__all__ = ["plot_weibull_shapes", "plot_band_losses", "plot_band_fit", "plot_band_fits",
           "plot_ordering", "plot_full_loss_fit", "plot_full_loss", "plot_loss_curves", "plot_forecast",
           "plot_forecasts", "write_figures", "arch_colors", "literal_text", "run_label", "FORMATS",
           "MIN_FONT_PT", "MAX_WIDTH_IN", "FigureError", "safe_name", "figure_specs", "draw_again"]

MIN_FONT_PT = 9.0
"""Smallest font size of any text in a figure, in points."""
MAX_WIDTH_IN = 14.0
"""Widest figure, in inches (the HTML report's column is about 1,070 px = 14.9 in at 72 px/in)."""
FORMATS = ("png", "svg", "pdf")
"""File formats of :func:`write_figures`."""
_SMALL = 9   # legends, tick labels, axis labels of the small panels
_TITLE = 10  # panel titles
_SUPTITLE = 11

S_LABEL = "parameter time s (L2 distance in parameter space)"
LOSS_UNIT = "squared pixel value"
_METRIC_LABELS = {
    "onset": ("onset τᵢ", "onset τᵢ\n(parameter time)"),
    "width": ("width wᵢ", "width wᵢ\n(parameter time)"),
    "floor": ("floor Lᵢ∞", f"floor Lᵢ∞\n({LOSS_UNIT})"),
    "initial_residual": ("initial residual Rᵢ(s₀)", f"Rᵢ(s₀)\n({LOSS_UNIT})"),
}
_ARCH_MAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


class FigureError(RuntimeError):
    """One or more figures of :func:`write_figures` failed; the others were written.
    ``failed`` maps each failed figure's name to its exception."""

    def __init__(self, failed: dict, written: list):
        self.failed, self.written = failed, written
        super().__init__("figures that could not be drawn: " + "; ".join(
            f"{k} ({type(v).__name__}: {v})" for k, v in failed.items()))


def literal_text(text: Any) -> str:
    r"""``text`` for a matplotlib label, drawn exactly as written: ``$`` (which would start
    math mode) is escaped, and a leading ``_`` (which makes matplotlib leave the artist out of
    its legend) is preceded by a zero-width space.

    >>> literal_text("lr=$1e-3$ run")
    'lr=\\$1e-3\\$ run'
    >>> literal_text("_baseline")
    '\u200b_baseline'
    """
    out = str(text).replace("$", r"\$")
    return "\u200b" + out if out.startswith("_") else out


def _rc() -> dict:
    """The rcParams of the figures this module makes (sizes only, and titles at a fixed height
    above their axes: matplotlib's automatic title placement measures every tick label again)."""
    return {"font.size": _SMALL + 1, "axes.titlesize": _TITLE, "axes.labelsize": _SMALL + 1,
            "xtick.labelsize": _SMALL, "ytick.labelsize": _SMALL, "legend.fontsize": _SMALL,
            "legend.title_fontsize": _SMALL, "figure.titlesize": _SUPTITLE, "axes.titley": 1.0}


def _yscale(ax: Any, scale: str) -> None:
    """``ax.set_yscale(scale)``; a log axis gets minor ticks at 2 and 5 times each power of ten
    only, and none over more than :data:`_MINOR_DECADES` decades (the default eight per decade
    cost most of a figure's drawing time), and Unicode tick labels (:func:`_plain_log_labels`)."""
    ax.set_yscale(scale)
    if scale == "log":
        ax.yaxis.set_minor_locator(_minor_log_locator())
        _plain_log_labels(ax.yaxis)


_MINOR_DECADES = 4.0
"""A log axis spanning more decades than this has no minor ticks (they would be marks too
close to tell apart, and making them is most of such a figure's cost)."""


def _minor_log_locator() -> Any:
    """Minor ticks of a log axis at 2 and 5 times each power of ten, none when the axis spans
    more than :data:`_MINOR_DECADES` decades."""
    return _few_minor_locator_class()(base=10, subs=(2.0, 5.0), numticks=8)


def _module_level(cls: type, name: str) -> type:
    """``cls`` (a class made on first use, since matplotlib is an optional extra) under the name
    ``name`` of this module, where pickle finds it (:func:`__getattr__`): a figure holding one
    of its objects pickles as matplotlib's own figures do."""
    cls.__module__, cls.__qualname__, cls.__name__ = __name__, name, name
    return cls


@functools.cache
def _few_minor_locator_class() -> type:
    """The locator of :func:`_minor_log_locator`."""
    from matplotlib.ticker import LogLocator

    class FewMinorLocator(LogLocator):
        def tick_values(self, vmin: float, vmax: float) -> Sequence[float]:
            lo, hi = sorted((float(vmin), float(vmax)))
            if lo > 0 and np.log10(hi / lo) > _MINOR_DECADES:
                return []
            return super().tick_values(vmin, vmax)

    return _module_level(FewMinorLocator, "_FewMinorLocator")


_SUPERSCRIPT = str.maketrans("0123456789-−+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁻⁺")


def _unmath(label: str) -> str:
    r"""A tick label of matplotlib's log formatters (``$\mathdefault{10^{-3}}$``) in Unicode
    (``10⁻³``): plain text, so no mathtext parse, and SVG text a browser draws the same.

    >>> _unmath(r"$\mathdefault{2\times10^{-3}}$"), _unmath(r"$\mathdefault{10^{0}}$"), _unmath("0.5")
    ('2×10⁻³', '10⁰', '0.5')
    """
    if len(label) < 2 or not (label.startswith("$") and label.endswith("$")):
        return label
    import re

    t = label[1:-1].replace(r"\mathdefault", "").replace(r"\times", "×")
    t = re.sub(r"\^\{([^{}]*)\}", lambda m: m.group(1).translate(_SUPERSCRIPT), t)
    return t.replace("{", "").replace("}", "").replace("-", "−")


def _unicode_log_formatter(old: Any) -> Any:
    """A log tick formatter with the settings of ``old`` (a matplotlib ``LogFormatter``: base,
    which minor ticks get labels) whose labels are Unicode (:func:`_unmath`)."""
    return _unicode_log_formatter_class()(base=old._base, labelOnlyBase=old.labelOnlyBase,
                                          minor_thresholds=old.minor_thresholds, linthresh=old._linthresh)


@functools.cache
def _unicode_log_formatter_class() -> type:
    """The formatter of :func:`_unicode_log_formatter`."""
    from matplotlib.ticker import LogFormatterSciNotation

    class UnicodeLogFormatter(LogFormatterSciNotation):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return _unmath(super().__call__(x, pos))

    return _module_level(UnicodeLogFormatter, "_UnicodeLogFormatter")


def _plain_log_labels(axis: Any) -> None:
    """Replace the log formatters of ``axis`` (major and minor) by :func:`_unicode_log_formatter`."""
    from matplotlib.ticker import LogFormatter

    for f, put in ((axis.get_major_formatter(), axis.set_major_formatter),
                   (axis.get_minor_formatter(), axis.set_minor_formatter)):
        if isinstance(f, LogFormatter):
            put(_unicode_log_formatter(f))


def _legend(ax: Any, **kwargs: Any) -> Any:
    """``ax.legend(**kwargs)``, laid out once per draw (:func:`_once_per_draw_legend`)."""
    leg = ax.legend(**kwargs)
    leg.__class__ = _once_per_draw_legend()
    return leg


@functools.cache
def _once_per_draw_legend() -> type:
    """A matplotlib ``Legend`` whose boxes (title, rows, handles, labels) are measured and
    packed once per draw. matplotlib's legend packs its nested boxes again at every level as
    it draws them (the legend's extent, then the box, then each column and row: every label
    measured about four times per draw); within one draw nothing they depend on changes, so each box's
    size and its children's offsets are kept from the first time they are worked out until the
    draw ends. Drawn the same: the same numbers, computed once."""
    from matplotlib.legend import Legend
    from matplotlib.offsetbox import OffsetBox, PackerBase, TextArea

    def boxes(box: Any) -> Iterator[Any]:
        yield box
        for c in box.get_children():
            if isinstance(c, OffsetBox):
                yield from boxes(c)

    class OncePerDrawLegend(Legend):
        def draw(self, renderer: Any) -> None:
            memo: dict = {}
            kept = []
            top: Any = getattr(self, "_legend_box")  # noqa: B009  (matplotlib's packed boxes, not in its stubs)
            for box in boxes(top):
                names = (["_get_bbox_and_child_offsets"] if isinstance(box, PackerBase)
                         else ["get_bbox"] if isinstance(box, TextArea) else [])
                if box is top:
                    names.append("get_offset")   # the legend's place ("best": a search over the Axes' data)
                for name in names:
                    if name in vars(box):
                        continue
                    real = getattr(box, name)

                    def once(*args: Any, real: Any = real, key: tuple = (id(box), name)) -> Any:
                        if key not in memo:
                            memo[key] = real(*args)
                        return memo[key]

                    setattr(box, name, once)
                    kept.append((box, name))
            try:
                super().draw(renderer)
            finally:
                for box, name in kept:
                    delattr(box, name)

    return _module_level(OncePerDrawLegend, "_OncePerDrawLegend")


_CLASSES_MADE_ON_FIRST_USE = {"_FewMinorLocator": _few_minor_locator_class,
                              "_UnicodeLogFormatter": _unicode_log_formatter_class,
                              "_OncePerDrawLegend": _once_per_draw_legend}


def __getattr__(name: str) -> Any:
    if name in _CLASSES_MADE_ON_FIRST_USE:  # what pickle looks up (:func:`_module_level`)
        return _CLASSES_MADE_ON_FIRST_USE[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _suptitle(fig: Any, text: str, fontsize: float = _SUPTITLE) -> Any:
    """A figure title wrapped to the figure's width (never clipped at its sides)."""
    import textwrap

    per_line = max(20, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
    return fig.suptitle("\n".join(textwrap.wrap(text, per_line, break_on_hyphens=False)), fontsize=fontsize)


def _new_axes(nrows: int = 1, ncols: int = 1, figsize: tuple = (6, 4)) -> np.ndarray:
    """A new Figure of ``nrows`` × ``ncols`` Axes (no layout engine: :func:`_fixed_layout` places
    them once they are drawn on), at most :data:`MAX_WIDTH_IN` wide."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover
        raise ImportError("figures need matplotlib: pip install 'bandscope[plot]'") from exc
    w, h = figsize
    if w > MAX_WIDTH_IN:
        w, h = MAX_WIDTH_IN, h * MAX_WIDTH_IN / w
    with matplotlib.rc_context(_rc()):
        fig = Figure(figsize=(w, h))
        axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    return axes


_LINE = 1.2      # line height of a text, in font sizes (matplotlib's default line spacing)
_TICK_PT = 3.5 + 3.5   # major tick length + tick label pad (rc defaults), points
_LABEL_PAD_PT = 4.0    # axis label pad (matplotlib's axes.labelpad, rc default): axis label to tick labels
_TITLE_PAD_PT = 6.0    # axes title pad
_GAP_PT = 4.0          # white space around every box


def _text_width_pt(text: str, size: float) -> float:
    """Width of one line of ``text`` in points at font size ``size`` (the default font, as drawn;
    measured once per HTML page: :func:`bandscope.report.svg.text_metrics`)."""
    from matplotlib.font_manager import FontProperties

    from .svg import text_metrics

    return float(text_metrics(text, FontProperties(size=size))[0])


def _lines(text: str) -> int:
    """Lines of ``text`` (0 when empty)."""
    return text.count("\n") + 1 if text else 0


def _tick_labels(axis: Any) -> list:
    """The tick labels ``axis`` will draw inside its view limits (major and minor), computed from
    its locators and formatters without drawing."""
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for locs, fmt in ((axis.get_majorticklocs(), axis.get_major_formatter()),
                      (axis.get_minorticklocs(), axis.get_minor_formatter())):
        locs = np.asarray(locs, dtype=float)
        labels = fmt.format_ticks(list(locs)) if locs.size else []
        eps = 1e-10 * (hi - lo)
        out += [t for x, t in zip(locs, labels) if lo - eps <= x <= hi + eps and t]
    return out


def _axes_extents(ax: Any) -> dict:
    """Room (points) the decorations of ``ax`` take outside it: tick labels, axis labels, title,
    offset texts; ``right`` is the overhang of the last x tick label."""
    ylab = _tick_labels(ax.yaxis)
    xlab = _tick_labels(ax.xaxis)
    ywidth = max((_text_width_pt(t, _SMALL) for t in set(ylab)), default=0.0)
    ytext, xtext, title = ax.yaxis.label.get_text(), ax.xaxis.label.get_text(), ax.get_title()
    left = ywidth + _TICK_PT + (_lines(ytext) * _LINE * ax.yaxis.label.get_fontsize() + _LABEL_PAD_PT
                                if ytext else 0.0)
    bottom = ((_LINE * _SMALL + _TICK_PT) if xlab else 0.0) + (
        _lines(xtext) * _LINE * ax.xaxis.label.get_fontsize() + _LABEL_PAD_PT if xtext else 0.0)
    if ax.xaxis.get_major_formatter().get_offset():
        bottom += _LINE * _SMALL
    top = _lines(title) * _LINE * ax.title.get_fontsize() + _TITLE_PAD_PT if title else 0.0
    if ax.yaxis.get_major_formatter().get_offset():
        top = max(top, _LINE * _SMALL + _TICK_PT)
    right = _text_width_pt(max(xlab, key=len), _SMALL) / 2 if xlab else 0.0
    # where matplotlib would put the axis labels (beyond the tick labels, or the ticks, by the
    # label pad), so that it need not measure every tick label again to find out
    ylabel = (_TICK_PT + ywidth if ylab else _TICK_PT / 2) + _LABEL_PAD_PT
    xlabel = (_TICK_PT + _tick_label_height_pt() if xlab else _TICK_PT / 2) + _LABEL_PAD_PT
    return {"left": left + _GAP_PT, "right": right + _GAP_PT, "top": top + _GAP_PT, "bottom": bottom + _GAP_PT,
            "ylabel": ylabel, "xlabel": xlabel}


def _tick_label_height_pt() -> float:
    """Height in points of a one-line tick label (numbers: the font's ascent plus descent, as
    matplotlib lays out text), at :data:`_SMALL` points."""
    from matplotlib.font_manager import FontProperties

    from .svg import font_height

    ascent, descent, _ = font_height(FontProperties(size=_SMALL))
    return float(ascent + descent) if ascent is not None else _LINE * _SMALL


def _place_axis_labels(ax: Any, ext: dict) -> None:
    """Put the axis labels of ``ax`` where matplotlib's automatic placement would (``ext`` from
    :func:`_axes_extents`): ``ext["ylabel"]`` points left of the Axes, ``ext["xlabel"]`` below.
    matplotlib otherwise finds these places at every draw by laying out every tick label again."""
    from matplotlib.transforms import ScaledTranslation

    inches = ax.figure.dpi_scale_trans
    if ax.yaxis.label.get_text() and ax.yaxis.get_label_position() == "left":
        ax.yaxis.set_label_coords(0, 0.5, transform=ax.transAxes + ScaledTranslation(-ext["ylabel"] / 72, 0, inches))
    if ax.xaxis.label.get_text() and ax.xaxis.get_label_position() == "bottom":
        ax.xaxis.set_label_coords(0.5, 0, transform=ax.transAxes + ScaledTranslation(0, -ext["xlabel"] / 72, inches))


def _fixed_layout(fig: Any) -> None:
    """Place the Axes grid of a figure this module made: margins and gaps (points) from the
    sizes of the texts around each Axes and of the figure title, measured without drawing.

    Replaces matplotlib's constrained layout, which draws every text of a figure three more
    times to find the same margins; the figure is then drawn once, when it is saved.
    """
    axes = [a for a in fig.axes if a.get_visible()]
    if not axes:
        return
    gs = axes[0].get_subplotspec().get_gridspec()
    nrows, ncols = gs.get_geometry()
    ext = {id(a): _axes_extents(a) for a in axes}
    zero = {"left": 0.0, "right": 0.0, "top": 0.0, "bottom": 0.0}
    grid = {}
    for a in axes:
        ss = a.get_subplotspec()
        grid[(ss.rowspan.start, ss.colspan.start)] = ext[id(a)]

    def cell(i: int, j: int) -> dict:
        return grid.get((i, j), zero)

    left = max(cell(i, 0)["left"] for i in range(nrows))
    right = max(cell(i, ncols - 1)["right"] for i in range(nrows))
    top = max(cell(0, j)["top"] for j in range(ncols))
    bottom = max(cell(nrows - 1, j)["bottom"] for j in range(ncols))
    wgap = max((cell(i, j)["right"] + cell(i, j + 1)["left"] for i in range(nrows) for j in range(ncols - 1)),
               default=0.0)
    hgap = max((cell(i, j)["bottom"] + cell(i + 1, j)["top"] for i in range(nrows - 1) for j in range(ncols)),
               default=0.0)
    W, H = fig.get_figwidth() * 72, fig.get_figheight() * 72
    sup = fig._suptitle
    if sup is not None and sup.get_text():
        top += (1 - sup.get_position()[1]) * H + _lines(sup.get_text()) * _LINE * sup.get_fontsize()
    aw = (W - left - right - (ncols - 1) * wgap) / ncols
    ah = (H - top - bottom - (nrows - 1) * hgap) / nrows
    fig.subplots_adjust(left=left / W, right=1 - right / W, bottom=bottom / H, top=1 - top / H,
                        wspace=wgap / aw if ncols > 1 else 0.2, hspace=hgap / ah if nrows > 1 else 0.2)
    for a in axes:
        _place_axis_labels(a, ext[id(a)])


def _axes_list(ax: Any, n: int, ncols: int, panel: tuple[float, float] = (3.2, 2.7)) -> np.ndarray:
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


def _emptied_axes(fig: Any) -> np.ndarray:
    """The visible Axes of ``fig`` with everything drawn on them removed (lines, patches,
    collections, texts, legends) and autoscaling on again; their axes, scales and ticks kept."""
    axes = [a for a in fig.axes if a.get_visible()]
    for a in axes:
        for art in [*a.lines, *a.collections, *a.patches, *a.texts, *a.images]:
            art.remove()
        if a.get_legend() is not None:
            a.get_legend().remove()
        a.relim()
        a.set_autoscale_on(True)
    return np.asarray(axes, dtype=object)


def draw_again(fig: Any, plot: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Draw ``plot(*args, ax=<the Axes of fig>, **kwargs)`` on a figure that the same ``plot``
    made earlier (for another run) and that has been saved: its Axes are emptied, drawn on
    again and laid out again, and ``fig`` is returned.

    The result is the figure ``plot(*args, **kwargs)`` would make; making a figure's Axes and
    their ticks is most of the cost of a small figure, so the HTML report draws its per-run
    figures this way. ``fig`` itself changes: do not use it for the earlier run any more.
    """
    plot(*args, ax=_emptied_axes(fig), **kwargs)
    _fixed_layout(fig)
    return fig


def _cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def _units(results: xr.Dataset, var: str, default: str) -> str:
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


def _arch(results: xr.Dataset, run: Any) -> str:
    return str(results["arch"].sel(run=run).values) if "arch" in results.coords else ""


def run_label(results: xr.Dataset, run: Any) -> str:
    """``"run [arch]"``, or ``"run"`` when the run has no architecture, drawn literally.

    >>> from bandscope.keysearch.synthetic import make_runs_synthetic
    >>> from bandscope import analyze
    >>> import warnings; warnings.simplefilter("ignore")
    >>> run_label(analyze(make_runs_synthetic(2, n_bands=4)), "synthetic-cnn-seed45")
    'synthetic-cnn-seed45 [synthetic-cnn]'
    """
    a = _arch(results, run)
    return literal_text(f"{run} [{a}]" if a else str(run))


def _valid(res_run: xr.Dataset) -> np.ndarray:
    return np.isfinite(res_run["param_time"].values)


def plot_weibull_shapes(betas: tuple = (0.5, 1.0, 2.0, 4.0), ax: Any = None) -> Any:
    """Stylised Weibull decays R/A = exp(-(s/ω)^β) for several β: the paper's Figure 2
    (schematic, not a fit). β = 1 is the exponential; β < 1 decays fast then slows; β > 1 has a
    slow "warm-up" then decays faster.

    Returns the Axes.
    """
    made = ax is None
    ax = _new_axes(figsize=(5.5, 3.6))[0, 0] if ax is None else ax
    x = np.linspace(0, 3, 301)
    describe = {1.0: "exponential"}
    for j, b in enumerate(betas):
        note = describe.get(float(b), "fast, then slower" if b < 1 else "warm-up, then faster")
        ax.plot(x, weibull(x, 1.0, 1.0, b), lw=2 if b == 1 else 1.5, color=f"C{j}",
                ls="--" if b == 1 else "-", label=f"β = {b:g} ({note})")
    ax.set_xlabel("s / ω (parameter time in units of the scale ω)")
    ax.set_ylabel("R / A (residual, fraction of amplitude)")
    ax.set_title("Weibull decay R = A exp(-(s/ω)^β), paper Figure 2", fontsize=_TITLE)
    ax.set_ylim(0, 1.05)
    _legend(ax, fontsize=_SMALL)
    if made:
        _fixed_layout(ax.figure)
    return ax


def _one_run(results: xr.Dataset, run: Any) -> xr.Dataset:
    """``results`` of one run (``run`` a name), selected once for all the panels of a figure."""
    return results.sel(run=run)


def plot_band_losses(results: xr.Dataset, run: Any, ax: Any = None,
                     yscales: tuple = ("linear", "log")) -> np.ndarray:
    """Band loss L_i against parameter time s for one run, one panel per y scale (Figure 1).

    Unsaturated bands (floor-window drift ≥ tolerance, ``saturated`` False) are dashed and
    labelled with their drift; the floor window (last k checkpoints) is shaded.

    Returns an array of Axes, one per entry of ``yscales``.
    """
    r = _one_run(results, run)
    ok = _valid(r)
    s = r["param_time"].values[ok]
    made = ax is None
    axes = _axes_list(ax, len(yscales), len(yscales), panel=(5.5, 3.8))
    cmap = _cmap("viridis")
    nb = r.sizes["band"]
    k = int(results.attrs.get("k", 5))
    for j, band in enumerate(r["band"].values):
        y = values(r, "band_loss", band=j)[ok]
        unsat = "saturated" in r and not bool(values(r, "saturated", band=j))
        label = f"band {int(band)}"
        if unsat:
            drift = float(values(r, "floor_window_drift_pct", band=j))
            label += f" (unsaturated, drift {drift:.2g} %)"
        for a in axes:
            a.plot(s, y, "--" if unsat else "-", marker="o", ms=2.5, lw=1.2,
                   color=cmap(j / max(1, nb - 1)), label=label)
    su = literal_text(_units(results, "param_time", "L2 distance in parameter space"))
    lu = literal_text(_units(results, "band_loss", LOSS_UNIT))
    name = run_label(results, run)
    for a, scale in zip(axes, yscales):
        _yscale(a, scale)
        if s.size > k:
            a.axvspan(s[-k], s[-1], color="0.85", zorder=0, label=f"floor window (last {k})")
        a.set_xlabel(f"parameter time s ({su})")
        a.set_ylabel(f"band loss Lᵢ ({lu})")
        a.set_title(f"{name}: band losses, {scale} y", fontsize=_TITLE)
    _legend(axes[0], fontsize=_SMALL, loc="upper right")
    if made:
        _fixed_layout(axes[0].figure)
    return axes


def plot_band_fit(results: xr.Dataset, run: Any, band: Any, window: str | None = None, ax: Any = None) -> Any:
    """Residual R_i(s) of one band with its Weibull and exponential fits over the active
    window; checkpoints outside the window pale; ΔBIC in the legend title; an unsaturated band
    says so in the title (red). Returns the Axes."""
    made = ax is None
    ax = _new_axes(figsize=(4, 3))[0, 0] if ax is None else ax
    _draw_band_fit(ax, _one_run(results, run), band, window, literal_text(_units(results, "residual", LOSS_UNIT)))
    if made:
        _fixed_layout(ax.figure)
    return ax


def _draw_band_fit(ax: Any, r: xr.Dataset, band: Any, window: str | None, unit: str) -> None:
    """:func:`plot_band_fit` on ``ax`` from ``r``, the results of one run (numpy reads only)."""
    window = str(r["window"].values[0]) if window is None else window
    j = int(np.flatnonzero(r["band"].values == band)[0])
    wk = int([str(w) for w in r["window"].values].index(window))
    ok = _valid(r)
    s = r["param_time"].values[ok]
    R = values(r, "residual", band=j)[ok]

    def f(var: str) -> Any:
        return values(r, var, band=j, window=wk)[()]

    start, stop = int(f("fit_start")), int(f("fit_stop"))
    inside = np.zeros(R.shape, bool)
    if 0 <= start <= stop:
        inside[start: stop + 1] = True
    ax.plot(s[~inside], R[~inside], "o", ms=3, color="C0", alpha=0.25, label="outside window")
    ax.plot(s[inside], R[inside], "o", ms=3, color="C0", label="fitted checkpoints")
    title = None
    if inside.any() and np.isfinite(float(f("A"))):
        s0 = s[start]
        ss = np.linspace(s0, s[stop], 200)
        ax.plot(ss, weibull(ss - s0, float(f("A")), float(f("omega")), float(f("beta"))), "-",
                color="C3", lw=1.6, label=f"Weibull β={float(f('beta')):.3g}, R²={fmt_r2(f('r2'))}")
        if "exp_A" in r and np.isfinite(float(f("exp_A"))):
            ax.plot(ss, exponential(ss - s0, float(f("exp_A")), float(f("exp_omega"))), "--",
                    color="C2", lw=1.4, label=f"exponential, R²={fmt_r2(f('exp_r2'))}")
        d = float(f("delta_bic"))
        title = f"ΔBIC = {d:+.3g} ({'Weibull' if d < 0 else 'exponential'} preferred)"
    else:
        status = f("status")
        status = status.decode() if isinstance(status, bytes) else status
        ax.text(0.5, 0.5, literal_text(f"no fit: {status}"), transform=ax.transAxes, ha="center",
                fontsize=_SMALL)
    _legend(ax, fontsize=_SMALL, title=title, title_fontsize=_SMALL, frameon=False, loc="upper right")
    head = f"band {int(band)}"
    unsat = "saturated" in r and not bool(values(r, "saturated", band=j))
    if unsat:
        head += f": UNSATURATED (drift {float(values(r, 'floor_window_drift_pct', band=j)):.2g} %)"
    ax.set_title(head, fontsize=_TITLE, color="C3" if unsat else "black")
    ax.set_xlabel("parameter time s", fontsize=_SMALL)
    ax.set_ylabel("residual Rᵢ = Lᵢ − Lᵢ∞" + f"\n({unit})", fontsize=_SMALL)


def plot_band_fits(results: xr.Dataset, run: Any, window: str | None = None, ax: Any = None) -> np.ndarray:
    """:func:`plot_band_fit` for every band of one run (paper Figure 3); ``ax`` a sequence of
    one Axes per band. Returns the array of Axes."""
    bands = results["band"].values
    made = ax is None
    axes = _axes_list(ax, len(bands), 4, panel=(3.5, 3.0))
    window = str(results["window"].values[0]) if window is None else window
    r = _one_run(results, run)
    unit = literal_text(_units(results, "residual", LOSS_UNIT))
    for a, band in zip(axes, bands):
        _draw_band_fit(a, r, band, window, unit)
    _suptitle(axes[0].figure, f"{run_label(results, run)}: Weibull and exponential fits, window "
                            f"{window} (pale: outside the active window)", fontsize=_SUPTITLE)
    if made:
        _fixed_layout(axes[0].figure)
    return axes


def plot_ordering(results: xr.Dataset, window: str | None = None, ax: Any = None) -> np.ndarray:
    """Onset, width, floor and initial residual against band resolution r, one line per run
    (colour family per architecture, :func:`arch_colors`); each title gives the median
    Spearman ρ across runs; unsaturated (run, band) pairs are marked with a red ×. Returns the
    array of 4 Axes."""
    from ..keysearch.ordering import METRICS

    window = str(results["window"].values[0]) if window is None else window
    made = ax is None
    axes = _axes_list(ax, 4, 2, panel=(5.0, 3.4))
    data = {"onset": results["onset"].sel(window=window), "width": results["width"].sel(window=window),
            "floor": results["floor"], "initial_residual": results["initial_residual"]}
    colors = arch_colors(results)
    bands = results["band"].values
    rho = results["rho"].sel(window=window)
    runs = results["run"].values
    labels = [run_label(results, run) for run in runs]
    for a, m in zip(axes, METRICS):
        per_run = np.asarray(data[m].transpose("run", "band").values)
        for i, run in enumerate(runs):
            a.plot(bands, per_run[i], "-o", ms=3, lw=1.2, color=colors[str(run)], label=labels[i])
        if "saturated" in results:
            unsat = ~results["saturated"].values.astype(bool)
            if unsat.any():
                vals = np.asarray(data[m].transpose("run", "band").values, dtype=float)
                bb = np.broadcast_to(bands, vals.shape)
                a.plot(bb[unsat], vals[unsat], "x", color="red", ms=7, mew=1.5, ls="none",
                       label="unsaturated band (floor biased up)")
        a.set_xscale("log", base=2)
        _plain_log_labels(a.xaxis)
        a.set_xticks(bands, [str(int(b)) for b in bands])
        a.set_xlabel("band resolution r")
        a.set_ylabel(_METRIC_LABELS[m][1])
        med = np.nanmedian(rho.sel(metric=m).values) if np.isfinite(rho.sel(metric=m).values).any() else np.nan
        a.set_title(f"{_METRIC_LABELS[m][0]}: median ρ = {med:+.2f}", fontsize=_TITLE)
        if m in ("floor", "initial_residual"):
            _yscale(a, "log")
    has_arch = any(_arch(results, r) for r in results["run"].values)
    _legend(axes[0], fontsize=_SMALL, title="run [architecture]" if has_arch else "run", title_fontsize=_SMALL)
    _suptitle(axes[0].figure, f"band ordering, window {window}", fontsize=_SUPTITLE)
    if made:
        _fixed_layout(axes[0].figure)
    return axes


def plot_full_loss_fit(results: xr.Dataset, run: Any, window: str | None = None, ax: Any = None) -> Any:
    """R_tot(s) of one run with the single Weibull and exponential fits over all checkpoints
    (s rebased to s_0) and the band-sum reconstruction Σ_i R̂_i; ΔBIC in the legend title.
    Returns the Axes."""
    made = ax is None
    ax = _new_axes(figsize=(4.5, 3.2))[0, 0] if ax is None else ax
    r = results.sel(run=run)
    window = str(r["window"].values[0]) if window is None else window
    ok = _valid(r) & np.isfinite(r["total_residual"].values)
    s = r["param_time"].values[ok]
    R = r["total_residual"].values[ok]
    ax.plot(s, R, "o", ms=3, color="C0", label="R_tot at saved checkpoints")
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
                    label=f"band-sum Σᵢ R̂ᵢ, R²={fmt_r2(r['band_sum_r2'].sel(window=window))}")
    _yscale(ax, "log")
    ax.set_xlabel("parameter time s", fontsize=_SMALL)
    ax.set_ylabel("full-loss residual R_tot"
                  + f"\n({literal_text(_units(results, 'total_residual', LOSS_UNIT))})", fontsize=_SMALL)
    ax.set_title(run_label(results, run), fontsize=_TITLE)
    _legend(ax, fontsize=_SMALL, title=title, title_fontsize=_SMALL, frameon=False)
    if made:
        _fixed_layout(ax.figure)
    return ax


def plot_full_loss(results: xr.Dataset, window: str | None = None, ax: Any = None) -> np.ndarray:
    """:func:`plot_full_loss_fit` for every run; ``ax`` a sequence of one Axes per run.
    Returns the array of Axes."""
    runs = results["run"].values
    made = ax is None
    axes = _axes_list(ax, len(runs), 3, panel=(4.4, 3.4))
    for a, run in zip(axes, runs):
        plot_full_loss_fit(results, run, window, ax=a)
    _suptitle(axes[0].figure, "full-loss residual: one Weibull vs the exponential (paper §6.3)",
                            fontsize=_SUPTITLE)
    if made:
        _fixed_layout(axes[0].figure)
    return axes


def plot_loss_curves(results: xr.Dataset, ax: Any = None, xs: Sequence[str] = ("step", "param_time")) -> np.ndarray:
    """The full loss L_tot = Σ_i L_i (the panel MSE) of every run over training, one panel per
    x axis: optimiser steps and parameter time s (A.7); log y, one line per run coloured by
    architecture (:func:`arch_colors`). Returns the array of Axes (one per entry of ``xs``)."""
    xs = [x for x in xs if x in results]
    made = ax is None
    axes = _axes_list(ax, len(xs), len(xs), panel=(5.2, 3.6))
    colors = arch_colors(results)
    total = results["band_loss"].sum("band", skipna=False)
    lu = literal_text(_units(results, "band_loss", LOSS_UNIT))
    labels = {"step": "optimiser step",
              "param_time": f"parameter time s ({literal_text(_units(results, 'param_time', 'L2 distance'))})"}
    runs = results["run"].values
    run_labels = [run_label(results, run) for run in runs]
    y_all = np.asarray(total.transpose("run", ...).values, dtype=float)
    for a, x in zip(axes, xs):
        x_all = np.asarray(results[x].transpose("run", ...).values, dtype=float)
        for i, run in enumerate(runs):
            xv, yv = x_all[i], y_all[i]
            ok = np.isfinite(xv) & np.isfinite(yv)
            a.plot(xv[ok], yv[ok], "-", lw=1.3, color=colors[str(run)], label=run_labels[i])
        if x == "step":
            pos = np.asarray(results["step"].values, dtype=float)
            if np.nanmin(pos) >= 0 and np.nanmax(pos) > 100 * max(1.0, np.nanmin(pos[pos > 0], initial=1.0)):
                a.set_xscale("symlog", linthresh=max(1.0, float(np.nanmin(pos[pos > 0], initial=1.0))))
                _plain_log_labels(a.xaxis)
        _yscale(a, "log")
        a.set_xlabel(labels[x])
        a.set_ylabel(f"full loss Σ_i L_i\n({lu})")
        a.set_title(f"loss over {'steps' if x == 'step' else 'parameter time'}", fontsize=_TITLE)
    if results.sizes["run"] <= 12:
        _legend(axes[0], fontsize=_SMALL, loc="upper right")
    if made:
        _fixed_layout(axes[0].figure)
    return axes


def _forecast_curve(f: Any, s: np.ndarray) -> np.ndarray:
    """L∞ + A exp(-(max(s - onset, 0)/ω)^β) for s ≥ s_start (docs/forecast.md)."""
    floor, A, om, beta, on = (float(f[k]) for k in ("floor", "A", "omega", "beta", "onset"))
    return floor + A * np.exp(-(np.maximum(s - on, 0.0) / om) ** beta)


def plot_forecast(run: xr.Dataset, forecast: xr.Dataset, band: Any = None, ax: Any = None) -> Any:
    """One forecast of ``bandscope.forecast`` (docs/forecast.md) against its run.

    ``run`` is the run Dataset the forecast was made from (or a longer one: the same run
    recorded further), or one run of a results Dataset (``results.sel(run=name)``); ``band``
    a band resolution, or None for the full loss (``total_*``). Draws the checkpoints the
    forecast saw (filled: the prefix ``start_index + n_fit``), the checkpoints after it (pale:
    what the run did afterwards, when known), the fitted curve L∞ + A exp(-(max(s − s_on,
    0)/ω)^β) from s_start on, the floor L∞ with its interval (shaded band), and s_reach with
    its interval (dotted line, shaded span; to the right edge when unbounded). A forecast that
    is not ``ok`` shows its status. Returns the Axes.
    """
    made = ax is None
    ax = _new_axes(figsize=(4.6, 3.4))[0, 0] if ax is None else ax
    s = np.asarray(run["param_time"].values, dtype=float)
    y_da = run["band_loss"].sum("band", skipna=False) if band is None else run["band_loss"].sel(band=band)
    y = np.asarray(y_da.values, dtype=float)
    f = forecast if band is None else forecast.sel(band=band)
    pre = "total_" if band is None else ""
    get = (lambda k: f[pre + k]) if band is None else (lambda k: f[k])
    fv = {k: get(k) for k in ("floor", "floor_low", "floor_high", "s_reach", "s_reach_low", "s_reach_high",
                              "A", "omega", "beta", "onset", "s_start", "start_index", "n_fit", "status")}
    ok = np.isfinite(s) & np.isfinite(y)
    start, n_fit = float(fv["start_index"]), float(fv["n_fit"])
    n_used = int(start + n_fit) if np.isfinite(start) and np.isfinite(n_fit) else int(ok.sum())
    idx = np.arange(s.size)
    seen, after = ok & (idx < n_used), ok & (idx >= n_used)
    ax.plot(s[seen], y[seen], "o", ms=3, color="C0", label=f"prefix ({int(seen.sum())} checkpoints)")
    if after.any():
        ax.plot(s[after], y[after], "o", ms=3, color="C0", alpha=0.25, label="the run afterwards")
    status = str(fv["status"].values)
    name = "full loss" if band is None else f"band {int(band)}"
    if status == "ok":
        right = np.nanmax(s[ok]) if ok.any() else 1.0
        reach, r_lo, r_hi = (float(fv[k]) for k in ("s_reach", "s_reach_low", "s_reach_high"))
        right = max(right, reach if np.isfinite(reach) else right)
        ss = np.linspace(float(fv["s_start"]), right, 300)
        ax.plot(ss, _forecast_curve({k: fv[k] for k in ("floor", "A", "omega", "beta", "onset")}, ss), "-",
                color="C3", lw=1.5, label="forecast curve")
        lo, hi = float(fv["floor_low"]), float(fv["floor_high"])
        ax.axhspan(lo, hi, color="C3", alpha=0.15, lw=0)
        ax.axhline(float(fv["floor"]), color="C3", lw=1, ls="--", label=f"floor {float(fv['floor']):.3g} "
                   f"[{lo:.3g}, {hi:.3g}]")
        if np.isfinite(reach):
            ax.axvline(reach, color="k", ls=":", lw=1.2,
                       label=f"s_reach {reach:.3g} [{r_lo:.3g}, {'inf' if np.isinf(r_hi) else f'{r_hi:.3g}'}]")
            ax.axvspan(r_lo, r_hi if np.isfinite(r_hi) else right, color="0.5", alpha=0.12, lw=0)
        ax.set_xlim(right=right * 1.02 if right > 0 else None)
    else:
        ax.text(0.5, 0.5, literal_text(f"no forecast: {status}"), transform=ax.transAxes, ha="center",
                fontsize=_SMALL)
    _yscale(ax, "log")
    ax.set_xlabel("parameter time s", fontsize=_SMALL)
    ax.set_ylabel(f"{'full loss' if band is None else 'band loss'} "
                  f"({literal_text(_units(run, 'band_loss', LOSS_UNIT))})", fontsize=_SMALL)
    ax.set_title(name, fontsize=_TITLE)
    _legend(ax, fontsize=_SMALL, frameon=False)
    if made:
        _fixed_layout(ax.figure)
    return ax


def plot_forecasts(run: xr.Dataset, forecast: xr.Dataset, ax: Any = None, name: Any = None) -> np.ndarray:
    """:func:`plot_forecast` for every band and the full loss of one run; ``ax`` a sequence of
    one Axes per band plus one. ``run`` may also be a results Dataset with ``name`` (or the
    forecast's ``name`` attribute) selecting the run. Returns the array of Axes."""
    if "run" in run.dims:
        name = name if name is not None else forecast.attrs.get("name")
        run = run.sel(run=name)
    bands = list(forecast["band"].values)
    made = ax is None
    axes = _axes_list(ax, len(bands) + 1, 4, panel=(3.5, 3.0))
    for a, band in zip(axes, [*bands, None]):
        plot_forecast(run, forecast, band, ax=a)
    label = literal_text(name if name is not None else forecast.attrs.get("name", ""))
    _suptitle(axes[0].figure, f"{label}: forecasts (floor and s_reach with their intervals)".lstrip(": "),
                            fontsize=_SUPTITLE)
    if made:
        _fixed_layout(axes[0].figure)
    return axes


def safe_name(text: Any) -> str:
    """A file-name stem from a user's string: letters, digits, ``.``, ``_``, ``-`` kept,
    anything else (``/``, spaces, ``$``, …) replaced by ``_``; never empty, never hidden.

    >>> safe_name("../run $1/a")
    '_.._run__1_a'
    """
    out = "".join(ch if (ch.isascii() and (ch.isalnum() or ch in "._-")) else "_" for ch in str(text))
    return out if out and not out.startswith(".") else "_" + (out or "run")


def figure_specs(results: xr.Dataset, *, window: str | None = None, forecasts: dict | None = None,
                 max_runs: int | None = None) -> list[tuple[str, Callable[[], Any]]]:
    """Every figure :func:`write_figures` writes, as (file stem, draw) pairs, in order: Figure 2,
    the ordering, the full loss, the loss curves, then per run its band losses and band fits
    (and its forecasts when ``forecasts`` has them)."""
    window = str(results["window"].values[0]) if window is None else window
    specs: list[tuple[str, Callable[[], Any]]] = [("weibull_shapes", lambda: plot_weibull_shapes().figure),
             ("ordering", lambda: plot_ordering(results, window)[0].figure),
             ("full_loss", lambda: plot_full_loss(results, window)[0].figure),
             ("loss_curves", lambda: plot_loss_curves(results)[0].figure)]
    runs = [str(r) for r in results["run"].values][:max_runs]
    used = set()
    for run in runs:
        stem = safe_name(run)
        while stem in used:
            stem += "_"
        used.add(stem)
        specs.append((f"{stem}_band_losses", lambda run=run: plot_band_losses(results, run)[0].figure))  # type: ignore[misc]
        specs.append((f"{stem}_fits", lambda run=run: plot_band_fits(results, run, window)[0].figure))  # type: ignore[misc]
        if forecasts and run in forecasts:
            specs.append((f"{stem}_forecast", lambda run=run: plot_forecasts(  # type: ignore[misc]
                results, forecasts[run], name=run)[0].figure))
    return specs


def write_figures(results: xr.Dataset, outdir: str | Path, *, dpi: int = 110, format: str = "png",
                  forecasts: dict | None = None, on_error: Callable[[str, Exception], Any] | None = None) -> list[Path]:
    """Write every figure of :func:`figure_specs` to ``outdir`` as ``<name>.<format>`` (``png``,
    ``svg`` or ``pdf``: :data:`FORMATS`; ``dpi`` for PNG) and return the paths written.

    File names come from run names through :func:`safe_name`. A figure that fails to draw
    does not stop the others: ``on_error(name, exc)`` is called for it, or, without
    ``on_error``, :class:`FigureError` (naming every failed figure) is raised after the rest
    are written.
    """
    if format not in FORMATS:
        from ..errors import BandscopeInputError

        raise BandscopeInputError(f"figure format {format!r}: choose one of {', '.join(FORMATS)}")
    from ..io.atomic import write_atomic

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths, failed = [], {}
    for name, draw in figure_specs(results, forecasts=forecasts):
        p = outdir / f"{name}.{format}"
        try:
            fig = draw()
            write_atomic(p, lambda tmp, fig=fig: fig.savefig(tmp, dpi=dpi, format=format))
        except ImportError:
            raise
        except Exception as exc:  # one figure must not lose the others
            failed[name] = exc
            if on_error is not None:
                on_error(name, exc)
            continue
        paths.append(p)
    if failed and on_error is None:
        raise FigureError(failed, paths)
    return paths
