"""bandscope.report.figures: every function returns what it drew on, with labelled axes (units), legends
by run and architecture, the fits and ΔBIC, unsaturated bands marked; no global backend change."""
import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bandscope import analyze  # noqa: E402
from bandscope.keysearch.synthetic import make_runs_synthetic  # noqa: E402
from bandscope.report import figures as plot  # noqa: E402
from bandscope.report.numfmt import fmt_r2  # noqa: E402


@pytest.fixture(scope="module")
def res():
    """Four synthetic runs (2 cnn, 2 vit, 5 bands); band 16 of the first run keeps falling
    through the floor window, so it is unsaturated."""
    runs = make_runs_synthetic(4, n_bands=5, noise=0.002)
    bl = runs[0].band_loss.values.copy()
    rng = bl[:, 4].max() - bl[:, 4].min()
    bl[-5:, 4] -= np.linspace(0, 0.1 * rng, 5)
    runs[0] = runs[0].drop_vars("mse", errors="ignore").assign(band_loss=(("checkpoint", "band"), bl))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = analyze(runs)
    assert not bool(out.saturated.isel(run=0).sel(band=16))
    return out


@pytest.fixture(autouse=True)
def _no_backend_switch(monkeypatch):
    """Any call of matplotlib.use during a plot fails the test; the backend must not change."""
    before = matplotlib.get_backend()

    def refuse(*a, **k):
        raise AssertionError("bandscope.report.figures must not call matplotlib.use")

    monkeypatch.setattr(matplotlib, "use", refuse)
    yield
    assert matplotlib.get_backend() == before


def _labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_import_does_not_import_pyplot():
    import subprocess
    import sys

    code = ("import sys, bandscope.report.figures as p; from bandscope.keysearch.synthetic import make_runs_synthetic; "
            "from bandscope import analyze; import warnings; warnings.simplefilter('ignore'); "
            "p.plot_weibull_shapes(); p.plot_ordering(analyze(make_runs_synthetic(2, n_bands=4))); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_weibull_shapes_is_figure_2():
    ax = plot.plot_weibull_shapes(betas=(0.5, 1, 2))
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    assert len(ax.get_lines()) == 3
    assert _labels(ax) == ["β = 0.5 (fast, then slower)", "β = 1 (exponential)", "β = 2 (warm-up, then faster)"]
    assert "s / ω" in ax.get_xlabel() and "R / A" in ax.get_ylabel()
    # every curve starts at 1 and passes through 1/e at s = ω
    for line in ax.get_lines():
        x, y = line.get_data()
        assert y[0] == pytest.approx(1.0)
        assert np.interp(1.0, x, y) == pytest.approx(np.exp(-1), abs=1e-3)


def test_band_losses_marks_unsaturated_band(res):
    run = str(res.run.values[0])
    axes = plot.plot_band_losses(res, run)
    assert len(axes) == 2 and [a.get_yscale() for a in axes] == ["linear", "log"]
    for a in axes:
        assert "parameter time s" in a.get_xlabel() and "(" in a.get_xlabel()
        assert "squared pixel value" in a.get_ylabel()
        assert len(a.get_lines()) == res.sizes["band"]
    labels = _labels(axes[0])
    assert any(lbl.startswith("band 16 (unsaturated, drift") for lbl in labels)
    assert "band 1" in labels and "floor window (last 5)" in labels
    dashed = [ln.get_linestyle() for ln in axes[0].get_lines()]
    assert dashed.count("--") == 1 and dashed[-1] == "--"


def test_band_losses_draws_on_given_axes(res):
    fig = Figure()
    ax = fig.subplots()
    out = plot.plot_band_losses(res, str(res.run.values[1]), ax=[ax], yscales=("log",))
    assert out[0] is ax and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="needs 2"):
        plot.plot_band_losses(res, str(res.run.values[1]), ax=[ax])


def test_band_fit_shows_both_fits_and_dbic(res):
    run = str(res.run.values[0])
    ax = plot.plot_band_fit(res, run, 4)
    labels = _labels(ax)
    assert labels[0] == "outside window" and labels[1] == "fitted checkpoints"
    assert labels[2].startswith("Weibull β=") and labels[3].startswith("exponential, R²=")
    r2 = float(res.r2.sel(run=run, band=4).isel(window=0))
    assert labels[2].endswith(f"R²={fmt_r2(r2)}") and (r2 == 1 or not labels[2].endswith("R²=1"))
    assert len(ax.get_lines()) == 4
    d = float(res.delta_bic.sel(run=run, band=4).isel(window=0))
    assert ax.get_legend().get_title().get_text().startswith(f"ΔBIC = {d:+.3g}")
    assert "residual" in ax.get_ylabel() and "squared pixel value" in ax.get_ylabel()
    # the Weibull line is the fitted curve: its first value is A
    x, y = ax.get_lines()[2].get_data()
    assert y[0] == pytest.approx(float(res.A.sel(run=run, band=4).isel(window=0)))
    unsat = plot.plot_band_fit(res, run, 16)
    assert "UNSATURATED" in unsat.get_title()
    assert "UNSATURATED" not in plot.plot_band_fit(res, str(res.run.values[1]), 16).get_title()


def test_band_fits_one_panel_per_band(res):
    axes = plot.plot_band_fits(res, str(res.run.values[2]))
    assert len(axes) == res.sizes["band"]
    assert [a.get_title() for a in axes][:2] == ["band 1", "band 2"]
    fig = Figure()
    given = fig.subplots(1, res.sizes["band"])
    out = plot.plot_band_fits(res, str(res.run.values[2]), ax=given)
    assert all(a is b for a, b in zip(out, given))


def test_ordering_legend_by_run_and_arch_and_rho(res):
    axes = plot.plot_ordering(res)
    assert len(axes) == 4
    for a in axes:
        assert len(a.get_lines()) == res.sizes["run"] + 1      # + the unsaturated marks
        assert a.get_xlabel() == "band resolution r" and a.get_ylabel()
        assert "median ρ = " in a.get_title()
        x, _ = a.get_lines()[-1].get_data()
        assert list(x) == [16]                                 # the one unsaturated band
    labels = _labels(axes[0])
    assert labels[:-1] == [f"{r} [{a}]" for r, a in zip(res.run.values, res.arch.values)]
    assert labels[-1].startswith("unsaturated band")
    saturated = plot.plot_ordering(res.isel(run=[1, 2]))
    assert len(saturated[0].get_lines()) == 2
    # runs of one architecture share a colour family, the two families differ
    colors = [ln.get_color() for ln in axes[0].get_lines()]
    assert np.argmax(colors[0][:3]) == 2 and np.argmax(colors[-1][:3]) == 0   # blue, orange
    med = np.nanmedian(res.rho.isel(window=0).sel(metric="width").values)
    assert f"{med:+.2f}" in axes[1].get_title()
    assert "parameter time" in axes[0].get_ylabel() and "squared pixel value" in axes[2].get_ylabel()


def test_full_loss_fit(res):
    run = str(res.run.values[3])
    ax = plot.plot_full_loss_fit(res, run)
    labels = _labels(ax)
    assert len(ax.get_lines()) == 4 and labels[1].startswith("Weibull") and labels[2].startswith("exponential")
    assert "band-sum" in labels[3]
    assert ax.get_legend().get_title().get_text() == f"ΔBIC = {float(res.total_delta_bic.sel(run=run)):+.3g}"
    axes = plot.plot_full_loss(res)
    assert len(axes) == res.sizes["run"] and axes[0].figure is axes[-1].figure


def test_write_figures_png(res, tmp_path):
    small = res.isel(run=[0, 2])
    paths = plot.write_figures(small, tmp_path, dpi=40)
    names = sorted(p.name for p in paths)
    assert "weibull_shapes.png" in names and "ordering.png" in names and "full_loss.png" in names
    assert len(paths) == 3 + 2 * small.sizes["run"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
