"""Nothing silently wrong, no traceback for bad input: the run rules and the CLI error boundary.

Each class is exercised through the API (a ``BandscopeInputError`` naming the file and rows)
and through the command line (exit 2, one message naming the file; a traceback only for bugs).
"""
from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import bandscope
from bandscope import io as bio
from bandscope.cli import main
from bandscope.errors import BandscopeInputError
from bandscope.keysearch.synthetic import make_run_synthetic
from bandscope.run import integer_steps, make_run, validate_run


@pytest.fixture
def frame():
    return bio.run_to_frame(make_run_synthetic(5, n_bands=4))


def _cli_fails(argv, capsys, *needles):
    """Exit 2, one message on stderr naming the needles, no traceback."""
    assert main(list(map(str, argv))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for n in needles:
        assert str(n) in err, (n, err)
    return err


# --------------------------------------------------------------------------- step rules
@pytest.mark.parametrize("edit, words", [
    (lambda df: df.assign(step=df["step"] / 7.0), ["step is not an integer", "rows [1, 2"]),
    (lambda df: pd.concat([df.iloc[:5], df.iloc[4:5], df.iloc[5:]]), ["duplicated checkpoints", "rows [4, 5]"]),
    (lambda df: df.assign(step=df["step"].where(df.index != 6, df["step"][5])),
     ["duplicated checkpoints", "rows [5, 6]"]),
    (lambda df: df.assign(step=df["step"].where(df.index != 6, df["step"][3])), ["duplicated checkpoints"]),
    (lambda df: df.assign(step=df["step"][::-1].values), ["step decreases"]),
    (lambda df: df.assign(param_time=df["param_time"] - 1.0), ["negative param_time", "checkpoints [0]"]),
    (lambda df: df.assign(step=df["step"].astype(float).where(df.index != 3, np.nan)), ["NaN", "rows [3]"]),
    (lambda df: df.assign(band_2=df["band_2"].where(df.index != 7, np.inf)), ["inf", "checkpoints [7]"]),
    (lambda df: df.assign(step=-1).assign(step=lambda d: d["step"].where(d.index != 0, 0)), ["unknown (-1)"]),
    (lambda df: pd.concat([df.iloc[:5], df.iloc[4:5], df.iloc[5:]]).drop(columns="step"),
     ["identical rows", "4=5"]),
])
def test_step_and_value_rules_api_and_cli(tmp_path, frame, capsys, edit, words):
    path = tmp_path / "log.csv"
    edit(frame).to_csv(path, index=False)
    with pytest.raises(BandscopeInputError) as info:
        bio.read_run(path)
    for w in [*words, str(path)]:
        assert w in str(info.value), (w, str(info.value))
    _cli_fails(["analyze", path, "--quiet"], capsys, path, words[0])


def test_rules_hold_for_every_reader_and_make_run(tmp_path, frame):
    dup = pd.concat([frame.iloc[:3], frame.iloc[2:3], frame.iloc[3:]])
    for suffix, write in ((".csv", lambda d, p: d.to_csv(p, index=False)),
                          (".parquet", lambda d, p: d.to_parquet(p, index=False))):
        write(dup, tmp_path / f"d{suffix}")
        with pytest.raises(BandscopeInputError, match=r"duplicated checkpoints: step \d+ at rows \[2, 3\]"):
            bio.read_run(tmp_path / f"d{suffix}")
    run = make_run_synthetic(5, n_bands=4)
    bad = run.copy(deep=True)
    bad["step"].values[4] = bad["step"].values[3]
    bad.to_netcdf(tmp_path / "d.nc")
    with pytest.raises(BandscopeInputError, match=r"rows \[3, 4\]"):
        bio.read_run(tmp_path / "d.nc")
    floats = run.assign(step=run["step"].astype(float) + 0.5)
    floats.to_netcdf(tmp_path / "f.nc")
    with pytest.raises(BandscopeInputError, match="not an integer"):
        bio.read_run(tmp_path / "f.nc")
    with pytest.raises(BandscopeInputError, match="not an integer"):
        make_run(run.band_loss.values, run.param_time.values, run.step.values + 0.25)
    with pytest.raises(BandscopeInputError, match="negative param_time"):
        make_run(run.band_loss.values, run.param_time.values - 5, run.step.values)
    with pytest.raises(BandscopeInputError, match="duplicated"):
        validate_run(run.assign(step=("checkpoint", np.zeros(run.sizes["checkpoint"], np.int64))))


def test_integer_valued_float_steps_are_accepted(tmp_path, frame):
    frame.assign(step=frame["step"].astype(float)).to_csv(tmp_path / "x.csv", index=False)
    np.testing.assert_array_equal(bio.read_run(tmp_path / "x.csv")["step"].values, frame["step"].values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=2, max_size=12))
def test_any_step_column_is_accepted_iff_strictly_increasing(steps):
    k = len(steps)
    bl = np.linspace(1, 0.1, k)[:, None] * [1.0, 0.5]
    pt = np.linspace(0, 1, k)
    ok = all(b > a for a, b in zip(steps, steps[1:]))
    if ok:
        assert make_run(bl, pt, steps)["step"].values.tolist() == steps
    else:
        with pytest.raises(BandscopeInputError, match="duplicated|decreases") as info:
            make_run(bl, pt, steps)
        if len(set(steps)) < k:  # every repeated step is named with its rows
            v = next(s for s in steps if steps.count(s) > 1)
            rows = [i for i, s in enumerate(steps) if s == v]
            assert f"step {v} at rows {rows}" in str(info.value)


def test_integer_steps_doctest_like():
    assert integer_steps(np.array([0.0, 3.0])).dtype == np.int64
    with pytest.raises(BandscopeInputError, match=r"rows \[1\]"):
        integer_steps([0, 1.5, 2])


def test_equal_parameter_time_is_valid_and_the_analysis_copes_with_ties():
    """Frozen weights (warm-up from lr 0, a frozen phase): ties in s are valid input."""
    r = make_run_synthetic(1, n_bands=5)
    bl, pt, stp = r.band_loss.values, r.param_time.values, r.step.values
    frozen = make_run(np.concatenate([np.repeat(bl[:1], 3, 0), bl]), np.concatenate([np.zeros(3), pt]),
                      np.concatenate([np.arange(3), stp + 3]))
    base, res = bandscope.analyze(r), bandscope.analyze(frozen)
    for v in ("onset", "width", "floor", "beta", "r2", "delta_bic"):
        np.testing.assert_allclose(res[v].values, base[v].values, rtol=1e-9, equal_nan=True, err_msg=v)
    i = 20  # a frozen phase mid-run: two extra checkpoints at the same s
    mid = make_run(np.concatenate([bl[:i + 1], np.repeat(bl[i:i + 1], 2, 0), bl[i + 1:]]),
                   np.concatenate([pt[:i + 1], [pt[i]] * 2, pt[i + 1:]]), np.arange(len(pt) + 2) * 10)
    res = bandscope.analyze(mid)
    np.testing.assert_allclose(res["onset"].values, base["onset"].values, rtol=1e-12, equal_nan=True)
    assert set(np.unique(res["status"].values)) <= {"ok", "omitted"}
    with pytest.raises(ValueError, match="does not advance"):  # nothing moved at all
        bandscope.analyze(make_run([[1.0, 1.0], [0.5, 1.0]], [0.0, 0.0], [0, 1], require_advance=False))


# --------------------------------------------------------------------------- bad and corrupt files
def _bad_files(tmp_path, frame):
    good = tmp_path / "good.csv"
    frame.to_csv(good, index=False)
    nc = tmp_path / "good.nc"
    bio.write_run(make_run_synthetic(2, n_bands=4), nc)
    cases = {}

    def case(name, data, *words):
        p = tmp_path / name
        p.write_bytes(data) if isinstance(data, bytes) else p.write_text(data)
        cases[name] = (p, words)

    case("empty.csv", b"", "empty file")
    case("header_only.csv", "step,param_time,band_1,band_2\n", "0 checkpoint rows")
    case("gzip.csv", gzip.compress(good.read_bytes()), "gzip")
    lines = good.read_text().splitlines()
    case("ragged.csv", "\n".join(lines[:4] + [lines[4] + ",1.0,2.0"] + lines[5:]) + "\n", "malformed CSV", "line 5")
    case("latin1.csv", "step,param_time,band_1\n0,0,1\n1,\xe9,2\n".encode("latin-1"), "not UTF-8")
    case("seed.csv", frame.assign(seed="forty").to_csv(index=False), "'seed'", "not an integer")
    case("seedf.csv", frame.assign(seed=4.5).to_csv(index=False), "'seed'", "not an integer")
    case("text.nc", "this is not netCDF\n", "not netCDF")
    case("truncated.nc", nc.read_bytes()[: len(nc.read_bytes()) // 2], "not a readable netCDF")
    case("garbage.nc", b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4, "not a readable netCDF")
    case("pickle.nc", pickle.dumps({"a": 1}), "pickle")
    case("text.parquet", "a,b\n1,2\n", "not Parquet")
    case("truncated.parquet", b"PAR1" + b"\0" * 40, "not a readable Parquet")
    case("run.txt", "x", "unknown run file type")
    xr.Dataset({"x": ("t", [1.0])}).to_netcdf(tmp_path / "notrun.nc")
    cases["notrun.nc"] = (tmp_path / "notrun.nc", ("not a bandscope run",))
    return cases


def test_every_bad_file_is_a_clear_error_api_and_cli(tmp_path, frame, capsys):
    for name, (path, words) in _bad_files(tmp_path, frame).items():
        with pytest.raises(BandscopeInputError) as info:
            bio.read_run(path)
        msg = str(info.value)
        assert str(path) in msg and info.value.path and all(w in msg for w in words), (name, msg)
        _cli_fails(["analyze", path, "--quiet"], capsys, path, *words)
    _cli_fails(["analyze", tmp_path / "missing.csv"], capsys, "missing.csv", "no such run file")
    _cli_fails(["analyze", tmp_path], capsys, "is a directory")


def test_output_path_under_a_regular_file(tmp_path, frame, capsys):
    frame.to_csv(tmp_path / "r.csv", index=False)
    (tmp_path / "file").write_text("x")
    for opt, out in (("--json", "file/out.json"), ("--netcdf", "file/sub/out.nc")):
        _cli_fails(["analyze", tmp_path / "r.csv", "--quiet", opt, tmp_path / out], capsys, "file")
    with pytest.raises(OSError, match="regular file"):
        bio.write_run(make_run_synthetic(1, n_bands=3), tmp_path / "file" / "run.nc")


def test_non_integer_seed_on_the_command_line_is_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "-k", "five"])
    assert info.value.code == 2 and "invalid int value" in capsys.readouterr().err


# --------------------------------------------------------------------------- stacked runs and empty panels
def test_stacked_runs_netcdf_reads_through_read_runs_and_the_cli(tmp_path, capsys):
    a, b = make_run_synthetic(1, n_bands=4, name="a"), make_run_synthetic(2, n_bands=4, name="b")
    b = b.isel(checkpoint=slice(0, 40))
    st_ = bio.stack_runs([a, b])
    bio.write_netcdf_atomic(st_, tmp_path / "stack.nc")
    with pytest.raises(BandscopeInputError, match="read_runs"):
        bio.read_run(tmp_path / "stack.nc")
    runs = bio.read_runs([tmp_path / "stack.nc"])
    assert [r.attrs["name"] for r in runs] == ["a", "b"]
    assert [r.sizes["checkpoint"] for r in runs] == [a.sizes["checkpoint"], 40]  # padding dropped
    np.testing.assert_array_equal(runs[1]["band_loss"].values, b["band_loss"].values)
    assert runs[0].attrs["arch"] == a.attrs["arch"] and runs[0].attrs["seed"] == a.attrs["seed"]
    out = tmp_path / "res.json"
    assert main(["analyze", str(tmp_path / "stack.nc"), "--quiet", "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["runs"]) == {"a", "b"}
    empty = st_.isel(run=slice(0, 0))
    bio.write_netcdf_atomic(empty, tmp_path / "empty.nc")
    with pytest.raises(BandscopeInputError, match="holds no runs"):
        bio.read_runs([tmp_path / "empty.nc"])
    _cli_fails(["analyze", tmp_path / "empty.nc"], capsys, "empty.nc", "holds no runs")
    with pytest.raises(BandscopeInputError, match="no run files"):
        bio.read_runs([])


def test_empty_panel_is_a_clear_error(tmp_path, capsys):
    np.savez(tmp_path / "panel.npz", images=np.zeros((0, 3, 8, 8), np.float32))
    np.savez(tmp_path / "recon.npz", recon=np.zeros((0, 3, 8, 8), np.float16))
    _cli_fails(["bands", tmp_path / "panel.npz", tmp_path / "recon.npz"], capsys, "panel.npz", "empty panel")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04garbage")
    _cli_fails(["bands", tmp_path / "broken.npz", tmp_path / "recon.npz"], capsys, "broken.npz")
    with pytest.raises(BandscopeInputError, match="empty run"):
        make_run(np.zeros((0, 3)), np.zeros(0))


# --------------------------------------------------------------------------- --dropna is reported
def test_dropna_is_reported_in_results_attrs_and_on_stderr(tmp_path, frame, capsys):
    frame.loc[[3, 9], "band_2"] = np.nan
    frame.to_csv(tmp_path / "holes.csv", index=False)
    out = tmp_path / "res.json"
    assert main(["analyze", str(tmp_path / "holes.csv"), "--dropna", "--quiet", "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "holes.csv" in err and "dropped 2 rows" in err and "[3, 9]" in err
    attrs = json.loads(out.read_text())["summary"]["attrs"]
    assert json.loads(attrs["dropped_rows"]) == {"holes": [3, 9]}
    nc = tmp_path / "res.nc"
    assert main(["analyze", str(tmp_path / "holes.csv"), "--dropna", "--quiet", "--netcdf", str(nc)]) == 0
    with xr.open_dataset(nc) as res:
        assert json.loads(res.attrs["dropped_rows"]) == {"holes": [3, 9]}
    capsys.readouterr()
    _cli_fails(["analyze", tmp_path / "holes.csv"], capsys, "holes.csv", "rows [3, 9]", "--dropna")


# --------------------------------------------------------------------------- the boundary itself
def test_bugs_keep_their_traceback(tmp_path, frame, monkeypatch):
    frame.to_csv(tmp_path / "r.csv", index=False)

    def bug(*a, **k):
        raise KeyError("a bug, not bad input")

    from bandscope.io import runfiles

    monkeypatch.setattr(runfiles, "read_runs_by_kind", bug)  # the reader of bandscope analyze
    with pytest.raises(KeyError):
        main(["analyze", str(tmp_path / "r.csv")])

    def library_value_error(*a, **k):
        np.zeros(3).reshape(2, 2)  # a ValueError raised deep inside numpy: a bug of ours

    monkeypatch.setattr(runfiles, "read_runs_by_kind", library_value_error)
    with pytest.raises(ValueError, match="reshape"):
        main(["analyze", str(tmp_path / "r.csv")])


def test_debug_flag_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "analyze", str(tmp_path / "x.csv")])
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(BandscopeInputError):
        main(["--debug", "analyze", str(tmp_path / "x.txt")])


def test_input_error_is_a_value_error_with_the_path(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError) as info:
        bandscope.read_run(tmp_path / "e.csv")
    assert isinstance(info.value, BandscopeInputError) and info.value.path == str(tmp_path / "e.csv")
