"""The spectral-reach section (report/reach, report/lnp_figures), the LNP run reader and `bandscope analyze` on runs
with LNP variables."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bandscope.cli import main
from bandscope.errors import BandscopeInputError
from bandscope.io.lnp_runfiles import read_lnp_run, run_kinds
from bandscope.lnp.reach import reach_analysis
from bandscope.report import reach as section

ROOT = Path(__file__).resolve().parents[1] / "reference_runs"
SHORT = sorted(glob.glob(str(ROOT / "lm-scaling" / "runs" / "*.nc")))
SYNTHETIC_CSV = sorted(glob.glob(str(ROOT / "synthetic" / "*.csv")))[:1]


@pytest.fixture(scope="module")
def results():
    return reach_analysis([read_lnp_run(f) for f in SHORT])


def test_shipped_run_files_are_small_and_follow_the_layout():
    assert len(SHORT) == 6
    for f in glob.glob(str(ROOT / "lm-scaling*" / "runs" / "*.nc")):
        assert Path(f).stat().st_size < 150_000
        ds = xr.open_dataset(f)
        assert ds.attrs["format"] == "run/1" and int(ds.attrs["n_parameters"]) > 0
        assert ds["lnp_step"].dtype == np.int64 and ds["lnp_window"].dims == ("lnp_step",)
        assert ds["train_loss"].dims == ("checkpoint",) and ds["step"].dtype == np.int64
        for v in ds.data_vars:
            if v.startswith("lnp_"):
                assert {"units", "long_name", "definition"} <= set(ds[v].attrs), v
        assert run_kinds(f) == {"lnp"}


def test_reader_refuses_a_run_without_parameter_count(tmp_path):
    ds = xr.load_dataset(SHORT[0])
    del ds.attrs["n_parameters"]
    ds.to_netcdf(tmp_path / "x.nc")
    with pytest.raises(BandscopeInputError, match="n_parameters"):
        read_lnp_run(tmp_path / "x.nc")


def test_text_says_which_p_and_shows_every_run_and_test(results):
    text = section.format_reach_text(results)
    assert "Which P: P_AB is the held-out cross position" in text and "Figure 1" in text
    for run in results.run.values:
        assert str(run) in text
    for q in results.ordering.values:
        assert str(q) in text


def test_json_carries_the_numbers_of_the_results(results):
    d = json.loads(json.dumps(section.reach_to_dict(results), allow_nan=False))
    q = "spectral_position_cross_last_mean"
    assert d["ordering"][q]["p_value"] == pytest.approx(float(results.ordering_p_value.sel(ordering=q)))
    assert d["runs"]["m-seed0"][q] == pytest.approx(float(results[q].sel(run="m-seed0")))
    assert len(d["runs"]["m-seed0"]["windows"]["spectral_position_cross"]) == results.sizes["lnp_window"]


def test_figures_draw_every_run(results, tmp_path):
    pytest.importorskip("matplotlib")
    from bandscope.report import lnp_figures as lf

    axes = lf.plot_reach(results)
    assert len(axes[1].get_lines()) == results.sizes["run"]
    comp = lf.plot_lnp_components(results)
    assert all(len(a.get_lines()) == results.sizes["run"] for a in comp.ravel() if a.get_visible())
    paths = lf.write_lnp_figures(results, tmp_path)
    assert [p.name for p in paths] == ["reach_figure1.png", "reach_components.png", "reach_probe_ratio.png"]


def test_cli_analyze_lnp_runs_writes_text_json_html(tmp_path, capsys):
    rc = main(["analyze", *SHORT, "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"),
               "--netcdf", str(tmp_path / "r.nc"), "--slope-start", "1000"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Spectral reach (LNP) of 6 runs in 3 model sizes" in out
    d = json.loads((tmp_path / "r.json").read_text())
    assert set(d) == {"spectral_reach"}
    html = (tmp_path / "r.html").read_text()
    assert "id='spectral-reach'" in html and "Which P" in html
    assert xr.open_dataset(tmp_path / "r.nc").attrs["bandscope_results"] == "reach/1"


def test_cli_runs_both_analyses_on_a_mixed_list(tmp_path, capsys):
    rc = main(["analyze", *SYNTHETIC_CSV, *SHORT, "--json", str(tmp_path / "r.json"),
               "--html", str(tmp_path / "r.html"), "--quiet"])
    assert rc == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert "spectral_reach" in d and "runs" in d  # key-search results and the reach section in one file
    html = (tmp_path / "r.html").read_text()
    assert html.count("id='spectral-reach'") == 1 and html.rstrip().endswith("</html>")


def test_cli_names_the_missing_parameter_count(tmp_path, capsys):
    ds = xr.load_dataset(SHORT[0])
    del ds.attrs["n_parameters"]
    ds.to_netcdf(tmp_path / "x.nc")
    assert main(["analyze", str(tmp_path / "x.nc")]) == 2
    assert "n_parameters" in capsys.readouterr().err


def test_every_results_variable_and_coordinate_is_in_the_schema(results):
    from bandscope.schema import REACH, REACH_COORDS

    for v in results.data_vars:
        assert v in REACH and results[v].dims == REACH[v].dims, v
    for c in results.coords:
        if c not in ("time_lo", "time_hi"):
            assert c in REACH_COORDS, c


def test_format_page_holds_the_generated_reach_table():
    from bandscope.schema import reach_markdown_table

    page = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
    assert reach_markdown_table() in page, ("regenerate it: python -c \"from bandscope import schema; "
                                            "schema.update_reach_docs('docs/format.md')\"")


def test_a_band_run_with_lnp_but_no_parameter_count_still_gets_the_key_search(tmp_path, capsys):
    from bandscope.io import read_run, write_run

    band = read_run(SYNTHETIC_CSV[0])
    lnp = xr.load_dataset(SHORT[0])
    both = band.merge(lnp[[v for v in lnp.data_vars if v.startswith("lnp_")]])
    both.attrs = dict(band.attrs)
    path = write_run(both, tmp_path / "both.nc")
    assert run_kinds(path) == {"bands", "lnp"}
    assert main(["analyze", str(path), "--quiet"]) == 0
    assert "no spectral-reach analysis" in capsys.readouterr().err


def test_runs_without_probes_or_held_out_loss_or_with_fewer_windows_are_reported():
    runs = [xr.load_dataset(f) for f in SHORT]
    runs[0] = runs[0].drop_vars([v for v in runs[0].variables if v.startswith("probe_")] + ["heldout_loss"])
    runs[1] = runs[1].isel(lnp_step=slice(0, 40))
    res = reach_analysis(runs)
    assert np.isnan(float(res.probe_ratio_median.isel(run=0))) and np.isnan(float(res.heldout_loss_final.isel(run=0)))
    assert int(res.ordering_n_runs.sel(ordering="heldout_loss_final")) == 5
    text = section.format_reach_text(res)
    assert str(res.run.values[0]) in text
    json.dumps(section.reach_to_dict(res), allow_nan=False)


def test_band_positions_plot_draws_one_line_per_window():
    pytest.importorskip("matplotlib")
    import numpy as np
    import xarray as xr

    from bandscope.report.lnp_figures import plot_band_positions

    p = xr.DataArray(np.geomspace(1e-3, 1e-1, 12).reshape(3, 4), dims=("lnp_window", "lnp_band"),
                     coords={"lnp_window": [0, 1, 2], "lnp_band": [1, 2, 4, 8]})
    ax = plot_band_positions(p, window_start={0: 0, 1: 10, 2: 100})
    assert len(ax.lines) == 3 and ax.get_xscale() == "log"
    np.testing.assert_array_equal(ax.lines[2].get_ydata(), p.sel(lnp_window=2).values)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["window 0 (from step 0)",
                                                                     "window 2 (from step 100)"]
    with pytest.raises(ValueError, match="lnp_window, lnp_band"):
        plot_band_positions(p.rename(lnp_band="band"))
