"""Run logs in and out: wide CSV / Parquet, netCDF; every bad log is refused with a reason."""
import numpy as np
import pytest

from bandscope import io as bio
from bandscope.keysearch.synthetic import make_run_synthetic
from bandscope.run import make_run, validate_run


@pytest.fixture
def run():
    return make_run_synthetic(7, n_bands=5)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".nc"])
def test_roundtrip(tmp_path, run, suffix):
    path = bio.write_run(run, tmp_path / f"r{suffix}")
    back = bio.read_run(path)
    np.testing.assert_array_equal(back.band_loss.values, run.band_loss.values)
    np.testing.assert_array_equal(back.param_time.values, run.param_time.values)
    np.testing.assert_array_equal(back.step.values, run.step.values)
    np.testing.assert_array_equal(back.band.values, [1, 2, 4, 8, 16])
    assert back.attrs["arch"] == run.attrs["arch"]
    assert back.attrs["seed"] == run.attrs["seed"]
    # netCDF keeps the name the run was recorded with; wide logs carry none: the file stem
    assert back.attrs["name"] == (run.attrs["name"] if suffix == ".nc" else "r")


def _frame(run):
    return bio.run_to_frame(run)


def test_misnamed_band_columns(tmp_path, run):
    df = _frame(run).rename(columns={"band_2": "Band2"})
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="misnamed"):
        bio.read_run(tmp_path / "x.csv")


def test_missing_param_time(tmp_path, run):
    df = _frame(run).rename(columns={"param_time": "s"})
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="param_time"):
        bio.read_run(tmp_path / "x.csv")


def test_non_contiguous_bands(tmp_path, run):
    df = _frame(run).drop(columns=["band_4"])
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="contiguous dyadic"):
        bio.read_run(tmp_path / "x.csv")


def test_decreasing_param_time(tmp_path, run):
    df = _frame(run)
    df.loc[10, "param_time"] = df.loc[9, "param_time"] - 1.0
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="param_time decreases"):
        bio.read_run(tmp_path / "x.csv")


def test_nan_rows_error_or_dropped_and_reported(tmp_path, run):
    df = _frame(run)
    df.loc[[3, 8], "band_2"] = np.nan
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match=r"rows \[3, 8\]"):
        bio.read_run(tmp_path / "x.csv")
    ds = bio.read_run(tmp_path / "x.csv", dropna=True)
    assert ds.attrs["dropped_rows"] == [3, 8]
    assert ds.sizes["checkpoint"] == run.sizes["checkpoint"] - 2
    np.testing.assert_array_equal(ds.param_time.values, np.delete(run.param_time.values, [3, 8]))


def test_mse_column_must_match_band_sum(tmp_path, run):
    df = _frame(run)
    df["mse"] = df["mse"] * 1.1
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="mse column"):
        bio.read_run(tmp_path / "x.csv")


def test_unknown_columns_warned_and_recorded(tmp_path, run):
    df = _frame(run)
    df["lr"] = 3e-4
    df.to_parquet(tmp_path / "x.parquet", index=False)
    with pytest.warns(UserWarning, match="ignoring columns"):
        ds = bio.read_run(tmp_path / "x.parquet")
    assert ds.attrs["ignored_columns"] == ["lr"]


def test_non_constant_arch(tmp_path, run):
    df = _frame(run)
    df.loc[0, "arch"] = "other"
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="not constant"):
        bio.read_run(tmp_path / "x.csv")


def test_too_few_rows(tmp_path, run):
    _frame(run).iloc[:1].to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="at least 2"):
        bio.read_run(tmp_path / "x.csv")


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        bio.read_run(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(ValueError, match="unknown run file type"):
        bio.read_run(tmp_path / "x.txt")


def test_validate_rejects_negative_and_bad_band_coord():
    with pytest.raises(ValueError, match="negative band loss"):
        make_run([[1.0, -1.0], [1.0, 1.0]], [0.0, 1.0])
    ds = make_run([[1.0, 1.0], [1.0, 1.0]], [0.0, 1.0])
    with pytest.raises(ValueError, match="band coordinate"):
        validate_run(ds.assign_coords(band=[1, 3]))


def test_stack_runs_pads_at_end():
    a = make_run_synthetic(1, n_bands=4)
    b = make_run_synthetic(2, n_bands=4).isel(checkpoint=slice(0, 40))
    b.attrs["name"] = "short"
    st = bio.stack_runs([a, b])
    assert st.sizes == {"run": 2, "checkpoint": 53, "band": 4}
    assert np.isnan(st.param_time.sel(run="short").values[40:]).all()
    assert list(st.arch.values) == [a.attrs["arch"], b.attrs["arch"]]
    with pytest.raises(ValueError, match="not unique"):
        bio.stack_runs([a, a])


def test_stacked_netcdf_not_a_single_run(tmp_path):
    st = bio.stack_runs([make_run_synthetic(1, n_bands=3, name="a"), make_run_synthetic(2, n_bands=3, name="b")])
    st.to_netcdf(tmp_path / "s.nc")
    with pytest.raises(ValueError, match="read_runs"):
        bio.read_run(tmp_path / "s.nc")


def test_read_runs_unique_names(tmp_path, run):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    bio.write_run(run, tmp_path / "a" / "run.csv")
    bio.write_run(run, tmp_path / "b" / "run.csv")
    bio.write_run(run, tmp_path / "a" / "other.csv")
    runs = bio.read_runs([tmp_path / "a" / "run.csv", tmp_path / "b" / "run.csv", tmp_path / "a" / "other.csv"])
    assert [r.attrs["name"] for r in runs] == ["a", "b", "other"]
    runs = bio.read_runs([tmp_path / "a" / "run.csv", tmp_path / "a" / "run.csv"])
    assert [r.attrs["name"] for r in runs] == ["a", "a-2"]


def test_constant_param_time_is_refused():
    with pytest.raises(ValueError, match="does not advance"):
        make_run([[1.0, 1.0], [0.5, 0.9], [0.4, 0.8]], [0.0, 0.0, 0.0])


def test_whole_variable_equals_netcdf4_indexing(tmp_path):
    """The direct whole-variable read of the netCDF fast path gives exactly ``v[...]`` (values,
    shape, dtype) for every numeric type, byte order and shape, an empty dimension included."""
    import netCDF4

    from bandscope.io.runfiles import _whole_variable

    rng = np.random.default_rng(3)
    path = tmp_path / "kinds.nc"
    with netCDF4.Dataset(path, "w") as f:
        f.createDimension("checkpoint", None)
        f.createDimension("band", 5)
        f.createDimension("empty", 0)
        specs = {"f8": ("checkpoint", "band"), "f4": ("checkpoint",), "i8": ("checkpoint",),
                 "i4": ("band",), "u2": ("band",), "i1": ("checkpoint", "band")}
        for dtype, dims in specs.items():
            for endian in ("native", "big"):
                dt = np.dtype(dtype).newbyteorder(">") if endian == "big" else np.dtype(dtype)
                v = f.createVariable(f"{dtype}_{endian}", dt, dims, endian=endian)
                shape = tuple(11 if d == "checkpoint" else 5 for d in dims)
                v[...] = (rng.normal(size=shape) * 100).astype(dtype)
        f.createVariable("nothing", "f8", ("empty",))
        f.createVariable("scalar", "f8", ())[...] = 2.5
    with netCDF4.Dataset(path) as f:
        f.set_auto_maskandscale(False)
        for name, v in f.variables.items():
            got, ref = _whole_variable(v), np.asarray(v[...])
            assert got.shape == ref.shape and got.dtype == ref.dtype, name
            assert np.array_equal(got, ref), name


def test_direct_netcdf_read_equals_xarray(tmp_path):
    """The netCDF4 fast path of ``read_run`` builds exactly what ``xarray.open_dataset`` gives
    (values, dtypes, attrs); a file it does not take (packed values) goes through xarray."""
    import xarray as xr

    from bandscope.io import runfiles
    from bandscope.keysearch.synthetic import make_run_synthetic

    path = tmp_path / "a.nc"
    bio.write_run(make_run_synthetic(4), path)
    fast = runfiles._read_netcdf_direct(path)
    with xr.open_dataset(path) as f:
        ref = f.load()
    xr.testing.assert_identical(fast, ref)
    for k in ref.variables:
        assert fast[k].dtype == ref[k].dtype
    for k, v in ref.attrs.items():
        assert type(fast.attrs[k]) is type(v) and np.array_equal(fast.attrs[k], v)
    floaty = tmp_path / "float-coord.nc"  # a float dimension coordinate (NaN _FillValue, as xarray writes it)
    make_run_synthetic(4).assign_coords(checkpoint=np.arange(53) * 0.5).to_netcdf(floaty)
    with xr.open_dataset(floaty) as f:
        xr.testing.assert_identical(runfiles._read_netcdf_direct(floaty), f.load())
    packed = tmp_path / "packed.nc"
    ds = make_run_synthetic(4)
    ds.to_netcdf(packed, encoding={"epoch": {"dtype": "int32", "scale_factor": 1e-6, "_FillValue": -1}})
    assert runfiles._read_netcdf_direct(packed) is None
    assert bio.read_run(packed).sizes["checkpoint"] == 53
