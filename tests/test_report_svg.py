"""bandscope.report.svg: the HTML report's figures come out byte for byte as ``Figure.savefig(format="svg")``
writes them (the oracle), markers copied from the first of each call included."""
import re
import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from bandscope import analyze  # noqa: E402
from bandscope.keysearch.synthetic import make_runs_synthetic  # noqa: E402
from bandscope.report import htmlpage  # noqa: E402
from bandscope.report.sections import report_context, sections  # noqa: E402
from bandscope.report.svg import figure_svg  # noqa: E402

_SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "bandscope-test"}


def _plain(svg):
    """``svg`` without its metadata (which holds the time of writing)."""
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)


def _both(fig):
    """(fast, savefig) SVG texts of ``fig`` without their metadata."""
    with matplotlib.rc_context(_SVG_RC):
        fast, slow = figure_svg(fig), figure_svg(fig, fast=False)
    return _plain(fast), _plain(slow)


@pytest.fixture(scope="module")
def res():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(make_runs_synthetic(3, n_bands=5))


@pytest.mark.parametrize("view", ["own", "paper"])
def test_every_report_figure_is_what_savefig_writes(res, view):
    ctx = report_context(res, None, view=view, max_runs=2)
    specs = [spec for s in sections(ctx) for spec in s.figures]
    assert len(specs) >= 5
    uses = 0
    for spec in specs:
        fast, slow = _both(spec.draw())
        assert fast == slow, spec.name
        uses += fast.count("<use ")
    assert uses > 300  # markers (points and ticks) were drawn, most of them copied from the first of their call


def test_markers_nan_clipped_linked_and_single_points_as_savefig_writes():
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    x = np.linspace(0, 1, 40)
    ax.plot(x, np.where(x < 0.1, np.nan, x), "o", ms=3)             # the first points are NaN
    ax.plot(x, x ** 2, "s", ms=2, url="https://example.org/a")       # a marker with a link
    ax.plot([0.5], [0.5], "x")                                       # one point
    ax.plot([-50.0, 0.2, 0.4], [0.1, 0.2, 0.3], "^")                 # the first point far outside the figure
    ax.plot(x, 1 - x, "o-", markevery=3, label="line & <markers>")   # markers on a line, text to escape
    ax.scatter(x, x / 2, s=4)                                        # a collection, not markers
    ax.legend()
    fast, slow = _both(fig)
    assert fast == slow


def test_the_canvas_is_left_as_it_was():
    fig = Figure()
    fig.subplots().plot([1, 2, 3], "o")
    before = fig.canvas
    _both(fig)
    assert fig.canvas is before


def test_the_page_is_the_page_savefig_makes(res, monkeypatch):
    fast = htmlpage.to_html(res, view="paper", max_runs=1)
    real = htmlpage._svg
    monkeypatch.setattr(htmlpage, "_svg", lambda fig, n: real(fig, n, fast=False))
    assert htmlpage.to_html(res, view="paper", max_runs=1) == fast


def test_markers_after_the_first_are_copied_not_drawn_by_matplotlib(res, monkeypatch):
    """The fast path is taken: matplotlib's own draw_markers sees one point of each plain marker line."""
    from matplotlib.backends.backend_svg import RendererSVG

    seen = []
    real = RendererSVG.draw_markers

    def counting(self, gc, marker_path, marker_trans, path, trans, rgbFace=None):
        seen.append(len(path.vertices))
        return real(self, gc, marker_path, marker_trans, path, trans, rgbFace)

    monkeypatch.setattr(RendererSVG, "draw_markers", counting)
    fig = Figure()
    fig.subplots().plot(np.arange(50.0), "o")
    with matplotlib.rc_context(_SVG_RC):
        figure_svg(fig, fast=False)
        slow, seen[:] = list(seen), []
        text = figure_svg(fig)
    assert 50 in slow and max(seen) < 50 and text.count("<use ") == sum(slow)


def test_text_measured_once_per_page_and_as_matplotlib_measures(monkeypatch):
    """text_metrics is TextToPath's measurement; within shared_text_metrics each (string, font)
    is measured once, by the layout and every figure's renderer together; outside, nothing is kept."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    from bandscope.report.svg import shared_text_metrics, text_metrics

    prop = FontProperties(size=9)
    assert text_metrics("10⁻³ & 0.25", prop) == TextToPath().get_text_width_height_descent("10⁻³ & 0.25", prop, False)
    calls = []
    real = TextToPath.get_text_width_height_descent
    monkeypatch.setattr(TextToPath, "get_text_width_height_descent",
                        lambda self, s, p, m: calls.append(s) or real(self, s, p, m))
    fig = Figure(figsize=(3, 2))
    fig.subplots().plot([0, 1, 2], [3, 1, 2], label="a line")
    fig.axes[0].legend()
    with shared_text_metrics() as memo, matplotlib.rc_context(_SVG_RC):
        first = _plain(figure_svg(fig))
        n = len(calls)
        again = _plain(figure_svg(fig))
        assert len(calls) == n and again == first   # the second figure measured nothing again
        text_metrics("a line", FontProperties(size=matplotlib.rcParams["legend.fontsize"]))
        assert len(calls) == n
        big = prop.copy()
        big.set_size(30)
        text_metrics("a line", big)
        assert len(calls) == n + 1                   # another size is another font
        assert len(memo) == len(calls)                # each (string, font) measured once
    text_metrics("outside", prop)
    text_metrics("outside", prop)
    assert calls.count("outside") == 2               # no block: nothing kept
    with matplotlib.rc_context(_SVG_RC):
        assert _plain(figure_svg(fig)) == first


def test_the_legend_laid_out_once_draws_what_matplotlib_draws(res):
    """The report's legends (boxes packed once per draw) come out as matplotlib's own Legend
    draws them, and keep no memo after the draw."""
    from matplotlib.legend import Legend

    from bandscope.report import figures

    figs = [figures.plot_band_fits(res, str(res.run.values[0]))[0].figure,
            figures.plot_ordering(res)[0].figure, figures.plot_weibull_shapes().figure,
            figures.plot_full_loss(res)[0].figure]
    for fig in figs:
        legends = [a.get_legend() for a in fig.axes if a.get_legend() is not None]
        assert legends and all(type(leg) is not Legend and isinstance(leg, Legend) for leg in legends)
        with matplotlib.rc_context(_SVG_RC):
            once = figure_svg(fig, fast=False)
            for leg in legends:
                leg.__class__ = Legend
            plain = figure_svg(fig, fast=False)
        assert _plain(once) == _plain(plain)
        for leg in legends:
            for box in [leg._legend_box, *leg._legend_box.get_children()]:
                assert not {"get_bbox", "get_offset", "_get_bbox_and_child_offsets"} & set(vars(box))


@pytest.mark.parametrize("plot", ["plot_band_fits", "plot_band_losses"])
def test_a_figure_drawn_again_is_the_figure_drawn_anew(res, plot):
    """draw_again (the HTML page's per-run figures) writes the SVG a new figure of that run
    writes: the same elements and text, coordinates within 1e-5 px (float rounding)."""
    from bandscope.report import figures

    fn = getattr(figures, plot)
    runs = [str(r) for r in res.run.values]
    fig = fn(res, runs[0])[0].figure
    _both(fig)
    again, _ = _both(figures.draw_again(fig, fn, res, runs[1]))
    anew, _ = _both(fn(res, runs[1])[0].figure)
    number = re.compile(r"-?\d+\.\d+")
    assert number.sub("#", again) == number.sub("#", anew)
    np.testing.assert_allclose([float(x) for x in number.findall(again)],
                               [float(x) for x in number.findall(anew)], rtol=0, atol=1e-5)


def test_a_figure_with_the_report_legend_pickles_as_matplotlib_figures_do(res):
    """The legend class is found again by pickle (in this process and in a new one)."""
    import os
    import pickle
    import subprocess
    import sys

    from bandscope.report import figures

    fig = figures.plot_full_loss(res)[0].figure
    data = pickle.dumps(fig)
    again = pickle.loads(data)
    assert type(again.axes[0].get_legend()) is type(fig.axes[0].get_legend())
    assert _both(again)[0] == _both(fig)[0]
    code = "import pickle, sys; f = pickle.loads(sys.stdin.buffer.read()); print(type(f.axes[0].get_legend()).__name__)"
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, check=True,
                         env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.stdout.decode().strip() == "_OncePerDrawLegend"
