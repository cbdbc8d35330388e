"""Runs without a panel (language models) in the run format: built, validated, written and read
without torch; the rules that name what is wrong; the by-step view; default names."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import bandscope
from bandscope.errors import BandscopeInputError
from bandscope.io import read_run, write_run
from bandscope.io.runfiles import default_run_name
from bandscope.run import RUN_VARIABLES, by_step, make_run, validate_run

FORMAT_MD = Path(__file__).resolve().parents[1] / "docs" / "format.md"


def _lm_run(**kw):
    return make_run(None, [0.0, 1.0, 1.5], [0, 10, 20], arc_length=[0.0, 1.2, 1.9],
                    train_loss=[np.nan, 2.0, 1.5], heldout_loss=[2.5, 2.1, 1.8], **kw)


def test_run_without_panel_round_trip(tmp_path):
    run = _lm_run(extra_attrs={"n_parameters": 1234})
    assert "band" not in run.dims and run.attrs["format"] == "run/1"
    lnp = xr.Dataset({"lnp_spectral_position": ("lnp_step", [0.5, 0.4], {"units": "1"})},
                     coords={"lnp_step": np.array([0, 10], dtype=np.int64)})
    run = xr.merge([run, lnp]).assign_attrs(run.attrs)
    write_run(run, tmp_path / "lm" / "run.nc")
    back = read_run(tmp_path / "lm" / "run.nc")
    assert back.attrs["name"] == "lm"  # the directory's name: the stem is 'run'
    np.testing.assert_array_equal(back.train_loss.values, run.train_loss.values)
    np.testing.assert_array_equal(back.lnp_spectral_position.values, [0.5, 0.4])
    assert back.attrs["n_parameters"] == 1234
    with pytest.raises(BandscopeInputError, match="spectral-reach analysis"):
        bandscope.analyze(back)


def test_run_without_panel_rules():
    with pytest.raises(BandscopeInputError, match="no 'train_loss' or lnp_"):
        validate_run(xr.Dataset({"param_time": ("checkpoint", [0.0, 1.0])}), require_bands=False)
    with pytest.raises(BandscopeInputError, match="param_time decreases"):
        make_run(None, [0.0, 2.0, 1.0], [0, 1, 2], train_loss=[1.0, 1.0, 1.0])
    with pytest.raises(BandscopeInputError, match="duplicated"):
        make_run(None, [0.0, 1.0], [5, 5], train_loss=[1.0, 1.0])
    run = _lm_run()
    bad = run.assign_coords(lnp_step=("lnp_step", np.array([4, 4])))
    with pytest.raises(BandscopeInputError, match="lnp_step"):
        validate_run(bad, require_bands=False)


def test_by_step_view():
    run = _lm_run()
    v = by_step(run)
    assert float(v.sel(step=10).param_time) == 1.0
    assert v.sel(step=slice(10, 20)).sizes["checkpoint"] == 2
    assert "step" in run.data_vars  # the run itself is unchanged
    with pytest.raises(BandscopeInputError, match="unknown"):
        by_step(make_run([[1.0], [0.5]], [0.0, 1.0]))


def test_default_run_name():
    assert default_run_name("a/b/run.nc") == "b" and default_run_name("a/b/x.nc") == "x"
    assert default_run_name("run.nc") == "run"


def test_format_md_lists_every_run_variable():
    text = FORMAT_MD.read_text()
    table = text[text.index("<!-- run-variables"):text.index("<!-- end run-variables -->")]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)`[^|]*\| `([^`]+)`", table, flags=re.M)}
    for var in (*RUN_VARIABLES, "lnp_arc_length"):
        assert var in rows, f"docs/format.md's run table lacks {var}"
    run = make_run([[1.0, 0.5], [0.5, 0.2]], [0.0, 1.0], [0, 1], epoch=[0, 1], arc_length=[0, 1], mse=[1.5, 0.7],
                   train_loss=[np.nan, 1.0], heldout_loss=[1.0, 0.9])
    for v in run.variables:
        assert v in rows, v
        assert rows[v].replace(" ", "").split(",")[0] == run[v].dims[0], v
