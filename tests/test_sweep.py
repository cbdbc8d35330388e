"""Sweeps on dask: the lazy, chunked path equals bandscope.analyze on the whole stack."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("dask")
import dask  # noqa: E402
from dask.callbacks import Callback  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import bandscope  # noqa: E402
from bandscope import io as bio  # noqa: E402
from bandscope.io import sweepfiles  # noqa: E402
from bandscope.keysearch import sweep  # noqa: E402
from bandscope.keysearch.synthetic import make_run_synthetic, make_runs_synthetic  # noqa: E402
from bandscope.report import tables  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@cache
def _runs(n: int = 8) -> tuple:
    return tuple(make_runs_synthetic(n))


def _ragged(lengths) -> list[xr.Dataset]:
    """Synthetic runs cut to the given numbers of checkpoints (unequal lengths)."""
    out = []
    for r, k in zip(_runs(), lengths):
        out.append(r.isel(checkpoint=slice(0, k)))
    return out


def assert_results_equal(got: xr.Dataset, want: xr.Dataset, rtol: float = 1e-9) -> None:
    """Same variables, dims, coords, attrs; floats to rtol (NaN where NaN), the rest exactly."""
    assert set(got.data_vars) == set(want.data_vars)
    assert set(got.coords) == set(want.coords)
    for name in want.variables:
        a, b = got[name], want[name]
        assert a.dims == b.dims, name
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a.values, b.values, rtol=rtol, atol=0, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(a.values, b.values, err_msg=name)
        assert a.attrs == b.attrs, name
    skip = {"gamma_note"}  # documented: not gathered from the chunks
    assert {k: v for k, v in got.attrs.items() if k not in skip} == \
        {k: v for k, v in want.attrs.items() if k not in skip}


class CountComputes(Callback):
    """Counts dask computations (each ``compute``/``persist`` starts once)."""

    def __init__(self):
        super().__init__()
        self.starts = 0

    def _start(self, dsk):
        self.starts += 1


# --------------------------------------------------------------------------- equality
@pytest.mark.numeric
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_dask_equals_numpy_over_chunkings_and_padding(data, rounding):
    n = data.draw(st.integers(1, 6), label="runs")
    lengths = data.draw(st.lists(st.integers(30, 53), min_size=n, max_size=n), label="lengths")
    chunk = data.draw(st.integers(1, n), label="chunk_runs")
    stack = rounding(bio.stack_runs(_ragged(lengths)))  # padded at the end with NaN
    want = bandscope.analyze(stack)
    with dask.config.set(scheduler="synchronous"):
        got = sweep.compute_sweep(sweep.analyze_sweep(stack, chunk_runs=chunk))
    assert_results_equal(got, want)


@pytest.mark.numeric
def test_per_run_results_do_not_depend_on_the_block(rounding):
    stack = rounding(bio.stack_runs(_ragged([53, 35, 44, 53, 30])))
    whole = bandscope.analyze(stack)
    for i in range(stack.sizes["run"]):
        alone = bandscope.analyze(stack.isel(run=[i]))
        assert_results_equal(alone, whole.isel(run=[i]).isel(checkpoint=slice(0, alone.sizes["checkpoint"])))


@pytest.mark.numeric
def test_cross_run_summaries_from_per_run_results(rounding):
    runs = [rounding(r) for r in _ragged([53, 40, 53, 47, 53, 36, 53])]
    want = tables.all_tables(bandscope.analyze(runs))
    with dask.config.set(scheduler="synchronous"):
        got = tables.all_tables(sweep.compute_sweep(sweep.analyze_sweep(bio.stack_runs(runs), chunk_runs=3)))
    assert set(got) == set(want)
    for key in want:
        a, b = got[key], want[key]
        num = b.select_dtypes("number").columns
        np.testing.assert_allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-9,
                                   equal_nan=True, err_msg=key)
        assert a.drop(columns=num).equals(b.drop(columns=num)), key


def test_options_are_passed_to_analyze():
    stack = bio.stack_runs(_ragged([53, 45, 53]))
    opts = dict(windows=((0.9, 0.1),), floor="final", k=4, deflation=5.0, min_points=6)
    want = bandscope.analyze(stack, **opts)
    with dask.config.set(scheduler="synchronous"):
        got = sweep.compute_sweep(sweep.analyze_sweep(stack, chunk_runs=2, **opts))
    assert_results_equal(got, want)
    assert list(got["window"].values) == ["0.90/0.10"]


def test_threaded_scheduler_reading_netcdf(tmp_path):
    """Threads read netCDF files one at a time (netCDF-C/HDF5 are not thread-safe)."""
    runs = _ragged([53, 41, 53, 50, 53, 37])
    for r in runs:
        bio.write_run(r, tmp_path / f"{r.attrs['name']}.nc")
    with dask.config.set(scheduler="threads", num_workers=3):
        got = sweep.compute_sweep(sweep.analyze_sweep(sweep.open_runs(str(tmp_path / "*.nc"), chunk_runs=1)))
    assert_results_equal(got, bandscope.analyze(bio.read_runs(sorted(tmp_path.glob("*.nc")))))


@pytest.mark.slow
def test_distributed_local_cluster_two_workers(tmp_path):
    pytest.importorskip("distributed")
    runs = _ragged([53, 40, 53, 46])
    for r in runs:
        bio.write_run(r, tmp_path / f"{r.attrs['name']}.nc")
    files = sorted(tmp_path.glob("*.nc"))
    lazy = sweep.analyze_sweep(sweep.open_runs(str(tmp_path / "*.nc"), chunk_runs=2))
    got = sweep.compute_sweep(lazy, workers=2)
    assert_results_equal(got, bandscope.analyze(bio.read_runs(files)))


def test_analyze_files_on_local_workers_equals_the_plain_path(tmp_path):
    """analyze_files (one task per chunk of files, read where it is analysed) equals
    analyze(read_runs(files)): values (to rounding), names -- also stems repeated across chunks, whose
    runs take their directory's name, and recorded names that clash (-2) -- coords and attrs; on
    the default pool of forked processes and on any executor given; from paths or from RunFiles."""
    runs = _ragged([53, 40, 53, 46, 35])
    files = []
    for i, r in enumerate(runs):
        d = tmp_path / f"dir{i}"
        d.mkdir()
        r = r.copy()
        r.attrs["name"] = "run" if i < 2 else ("clash" if i < 4 else "solo")  # "run": no recorded name
        files.append(bio.write_run(r, d / ("run.nc" if i < 2 else f"r{i}.nc")))
    want = bandscope.analyze(bio.read_runs(files))
    assert list(want.run.values) == ["dir0", "dir1", "clash", "clash-2", "solo"]
    got = sweep.analyze_files(files, workers=2, chunk_runs=2)
    assert_results_equal(got, want, rtol=1e-12)  # rounding of statistics over the chunk's widths
    assert got.attrs["gamma_note"] == want.attrs["gamma_note"]
    with ThreadPoolExecutor(2) as pool:  # files already found (the command line's RunFiles)
        got = sweep.analyze_files(sweep.RunFiles([str(f) for f in files]), workers=2, chunk_runs=3, executor=pool)
        assert pool.submit(len, "still running").result() == 13  # an executor given is left open
    assert_results_equal(got, want, rtol=1e-12)
    assert list(got.run.values) == list(want.run.values)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 30_000), workers=st.integers(1, 8), chunk=st.none() | st.integers(1, 3000))
def test_file_chunks_cover_the_sweep_once(n, workers, chunk):
    """The tasks of analyze_files cover every file once, in order; default chunks shrink (to
    one file: a round's chunks are equal to one file) and stay within the maximum."""
    chunks = sweep._file_chunks(n, workers, chunk)
    if n == 0:
        assert chunks == []
        return
    assert [a for a, _ in chunks] == [0] + [b for _, b in chunks[:-1]]
    assert chunks[-1][1] == n
    sizes = [b - a for a, b in chunks]
    assert min(sizes) > 0
    if chunk is not None:
        assert all(s == chunk for s in sizes[:-1]) and sizes[-1] <= chunk
    else:
        assert max(sizes) <= sweep._MAX_FILE_CHUNK
        assert all(b <= a + 1 for a, b in zip(sizes, sizes[1:]))
        assert len(sizes) % min(workers, n) == 0 or n < workers  # whole rounds


def test_concat_runs_equals_xarray_concat():
    """The gathering of analyze_files joins the chunks' results as xr.concat does: the same
    variables in the same order, dtypes (strings at the widest width), values, coords and attrs,
    with a chunk whose runs are shorter padded first."""
    runs = _ragged([53, 41, 53, 50, 53, 37, 53])
    parts = [bandscope.analyze(runs[i:i + 3]) for i in range(0, len(runs), 3)]
    k = max(r.sizes["checkpoint"] for r in parts)
    padded = [sweep._pad_checkpoints(r, k) for r in parts]
    got = sweep._concat_runs(padded)
    want = xr.concat(padded, dim="run", data_vars="minimal", coords="minimal", compat="override",
                     join="override", combine_attrs="override")
    xr.testing.assert_identical(got, want)
    assert list(got.variables) == list(want.variables)
    assert all(got[v].dtype == want[v].dtype for v in want.variables)


def test_cli_workers_equals_numpy(tmp_path, capsys):
    from bandscope.cli import main

    files = [str(f) for f in _write(_ragged([53, 42, 53, 48]), tmp_path / "runs", ".nc")]
    assert main(["analyze", *sorted(files), "--quiet", "--json", str(tmp_path / "np.json")]) == 0
    assert main(["analyze", str(tmp_path / "runs" / "*.nc"), "--workers", "2", "--quiet", "--json",
                 str(tmp_path / "w.json")]) == 0
    assert "chunks" in capsys.readouterr().err  # the progress count went to stderr
    a = json.loads((tmp_path / "np.json").read_text())
    b = json.loads((tmp_path / "w.json").read_text())
    assert a == b


# --------------------------------------------------------------------------- formats
def _write(runs, root: Path, suffix: str) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    return [bio.write_run(r, root / f"{r.attrs['name']}{suffix}") for r in runs]


@pytest.mark.parametrize("suffix", [".nc", ".parquet", ".zarr", ".csv"])
def test_open_runs_equals_read_runs(tmp_path, suffix):
    runs = _ragged([53, 38, 53, 44, 31])
    files = _write(runs, tmp_path, suffix)
    stack = sweep.open_runs(str(tmp_path / f"*{suffix}"), chunk_runs=2)
    assert stack["band_loss"].chunks[0] == (2, 2, 1)
    eager = bio.stack_runs(bio.read_runs(files))
    computed = stack.compute()
    for v in eager.data_vars:
        np.testing.assert_array_equal(computed[v].values, eager[v].values, err_msg=v)
        assert computed[v].dims == eager[v].dims
    for c in ("run", "arch", "seed", "band", "checkpoint"):
        np.testing.assert_array_equal(computed[c].values, eager[c].values, err_msg=c)
    with dask.config.set(scheduler="synchronous"):
        got = sweep.compute_sweep(sweep.analyze_sweep(stack))
    assert_results_equal(got, bandscope.analyze(bio.read_runs(files)))


def test_stacked_zarr_store_round_trip(tmp_path):
    runs = _ragged([53, 39, 53])
    _write(runs, tmp_path / "nc", ".nc")
    lazy = sweep.open_runs(str(tmp_path / "nc" / "*.nc"), chunk_runs=2)
    store = sweep.write_stack_zarr(lazy, tmp_path / "sweep.zarr")
    back = sweep.open_runs(store, chunk_runs=2)
    assert back["band_loss"].chunks[0] == (2, 1)
    xr.testing.assert_identical(back.compute().drop_attrs(), lazy.compute().drop_attrs())
    with dask.config.set(scheduler="synchronous"):
        got = sweep.compute_sweep(sweep.analyze_sweep(back))
    assert_results_equal(got, bandscope.analyze(runs))


def test_zarr_run_round_trip(tmp_path):
    run = make_run_synthetic(3)
    path = bio.write_run(run, tmp_path / "one.zarr")
    assert path.is_dir()
    back = bandscope.read_run(path)
    xr.testing.assert_equal(back, run)
    assert back.attrs["name"] == run.attrs["name"]  # the recorded name, as for netCDF
    assert back.attrs["true_beta"] == run.attrs["true_beta"]
    renamed = bandscope.read_run(path, name="one")
    assert renamed.attrs["name"] == "one" and renamed.attrs["recorded_name"] == run.attrs["name"]
    bio.write_run(run.isel(checkpoint=slice(0, 20)), path)  # replaces the store
    assert bandscope.read_run(path).sizes["checkpoint"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.zarr"]  # no temporary left


def test_zarr_stacked_store_is_not_one_run(tmp_path):
    store = sweep.write_stack_zarr(bio.stack_runs(_ragged([53, 53])), tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="2 stacked runs; use bandscope.keysearch.sweep.open_runs"):
        bandscope.read_run(store)


def test_run_names_follow_read_runs(tmp_path):
    named = make_run_synthetic(0)  # recorded name "synthetic-seed0"
    unnamed = make_run_synthetic(1, name="run")  # the placeholder: named by the file
    files = [bio.write_run(unnamed, tmp_path / d / "run.nc") for d in ("a", "b")]
    files += [bio.write_run(named, tmp_path / d / "run.nc") for d in ("c", "d")]
    files += [bio.write_run(named, tmp_path / d / "x.parquet") for d in ("e", "f")]
    files += [bio.write_run(named, tmp_path / "g" / "run.zarr")]
    want = [r.attrs["name"] for r in bio.read_runs(files)]
    assert want[:4] == ["a", "b", "synthetic-seed0", "synthetic-seed0-2"]
    stack = sweep.open_runs(files)
    assert stack["run"].values.tolist() == want


# --------------------------------------------------------------------------- laziness and memory
def test_nothing_is_computed_at_open_or_analyze(tmp_path, monkeypatch):
    _write(_ragged([53, 40, 53, 45, 53]), tmp_path, ".nc")
    reads = []
    real = sweepfiles.read_run
    monkeypatch.setattr(sweepfiles, "read_run", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    with CountComputes() as cb:
        stack = sweep.open_runs(str(tmp_path / "*.nc"), chunk_runs=2)
        lazy = sweep.analyze_sweep(stack)
        assert cb.starts == 0
        assert len(reads) == 1  # the first file, for its attributes
        assert all(v.chunks is not None for v in lazy.data_vars.values())
        with dask.config.set(scheduler="synchronous"):
            res = sweep.compute_sweep(lazy)
        assert cb.starts == 1
    assert len(reads) == 1 + 5
    assert res.sizes["run"] == 5


def test_memory_is_bounded_by_the_chunk(tmp_path, monkeypatch):
    """Each task reads and analyses at most chunk_runs runs."""
    _write(_ragged([53, 40, 53, 45, 53, 33, 50]), tmp_path, ".nc")
    sizes = {"read": [], "analyze": []}
    real_read, real_analyze = sweepfiles._read_block, sweep._analyze_block

    def read(paths, *a, **k):
        sizes["read"].append(len(paths))
        return real_read(paths, *a, **k)

    def analyze(block, *a, **k):
        sizes["analyze"].append(block.sizes["run"])
        return real_analyze(block, *a, **k)

    monkeypatch.setattr(sweepfiles, "_read_block", read)
    monkeypatch.setattr(sweep, "_analyze_block", analyze)
    with dask.config.set(scheduler="synchronous"):
        sweep.compute_sweep(sweep.analyze_sweep(sweep.open_runs(str(tmp_path / "*.nc"), chunk_runs=3)))
    assert sorted(sizes["read"]) == [1, 3, 3]
    assert sorted(sizes["analyze"]) == [1, 3, 3]


# --------------------------------------------------------------------------- errors
def test_no_files_match(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no run files match .*\*\.nc"):
        sweep.open_runs(str(tmp_path / "*.nc"))
    with pytest.raises(FileNotFoundError, match="no such run file"):
        sweep.open_runs(tmp_path / "missing.nc")


def test_mixed_band_sets(tmp_path):
    a = bio.write_run(make_run_synthetic(0, n_bands=7, name="a"), tmp_path / "a.nc")
    b = bio.write_run(make_run_synthetic(1, n_bands=6, name="b"), tmp_path / "b.nc")
    with pytest.raises(ValueError, match=r"mixed band sets: .*b\.nc has bands \[1, 2, 4, 8, 16, 32\] "
                       r"but .*a\.nc has \[1, 2, 4, 8, 16, 32, 64\]") as exc:
        sweep.open_runs([a, b])
    assert "same bands" in str(exc.value)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="chunk_runs must be a positive"):
        sweep.open_runs([bio.write_run(make_run_synthetic(0), tmp_path / "a.nc")], chunk_runs=0)
    with pytest.raises(ValueError, match="takes a stack with a 'run' dim"):
        sweep.analyze_sweep(make_run_synthetic(0))
    with pytest.raises(ValueError, match="unknown run file type"):
        sweep.open_runs([tmp_path / "a.nc", _touch(tmp_path / "notes.txt")])
    with pytest.raises(ValueError, match="window thresholds"):
        sweep.analyze_sweep(bio.stack_runs(_ragged([53, 53])), windows=((0.1, 0.9),))


def _touch(p: Path) -> Path:
    p.write_text("x")
    return p


def test_error_in_one_file_names_it(tmp_path):
    files = _write(_ragged([53, 53, 53]), tmp_path, ".csv")
    text = files[1].read_text().splitlines()
    text[3] = ",".join("nan" if i == 1 else v for i, v in enumerate(text[3].split(",")))
    files[1].write_text("\n".join(text) + "\n")
    lazy = sweep.analyze_sweep(sweep.open_runs(str(tmp_path / "*.csv"), chunk_runs=2))
    with dask.config.set(scheduler="synchronous"), pytest.raises(ValueError, match=files[1].name):
        sweep.compute_sweep(lazy)


# --------------------------------------------------------------------------- CLI
def test_cli_dask_equals_numpy(tmp_path, capsys):
    from bandscope.cli import main

    files = [str(f) for f in _write(_ragged([53, 42, 53, 48]), tmp_path / "runs", ".nc")]
    pattern = str(tmp_path / "runs" / "*.nc")
    assert main(["analyze", *sorted(files), "--quiet", "--json", str(tmp_path / "np.json")]) == 0
    assert main(["analyze", pattern, "--dask", "--quiet", "--json", str(tmp_path / "dask.json")]) == 0
    err = capsys.readouterr().err
    assert "100%" in err or "Completed" in err  # the progress bar went to stderr
    a = json.loads((tmp_path / "np.json").read_text())
    b = json.loads((tmp_path / "dask.json").read_text())
    a["summary"]["attrs"].pop("gamma_note", None)
    b["summary"]["attrs"].pop("gamma_note", None)
    assert _close(a, b)


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-9, atol=0))
    return a == b


def test_cli_no_match_is_a_clear_error(tmp_path, capsys):
    from bandscope.cli import main

    assert main(["analyze", str(tmp_path / "*.nc"), "--dask"]) == 2
    assert "no run files match" in capsys.readouterr().err


def test_cli_workers_must_be_positive(tmp_path, capsys):
    from bandscope.cli import main

    with pytest.raises(SystemExit):
        main(["analyze", str(tmp_path / "*.nc"), "--dask", "--workers", "0"])
    assert "--workers" in capsys.readouterr().err



# --------------------------------------------------------------------------- an existing scheduler
@pytest.mark.slow
def test_existing_scheduler_and_two_worker_processes(tmp_path, capsys):
    from bandscope.cli import main

    """``--scheduler ADDRESS``: a ``dask scheduler`` and two ``dask worker`` processes started
    apart from the test (as on a cluster of machines) compute the sweep; the results equal the
    numpy path, and the command leaves the scheduler running."""
    pytest.importorskip("distributed")
    import os
    import subprocess
    import sys
    import time

    runs = _ragged([53, 40, 53, 46, 53])
    for r in runs:
        bio.write_run(r, tmp_path / f"{r.attrs['name']}.nc")
    files = sorted(tmp_path.glob("*.nc"))
    src = str(Path(bandscope.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    sched_file = tmp_path / "scheduler.json"
    common = ["--scheduler-file", str(sched_file)]
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0",
                               "--no-dashboard", *common], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        for _ in range(600):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                    "--nthreads", "1", "--no-nanny", "--no-dashboard"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        from dask.distributed import Client

        with Client(address) as c:
            c.wait_for_workers(2, timeout=120)
            workers = c.scheduler_info()["workers"]
            assert len(workers) == 2
        want = bandscope.analyze(bio.read_runs(files))
        with sweep.scheduler_client(address) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            got = sweep.compute_sweep(sweep.analyze_sweep(sweep.open_runs(str(tmp_path / "*.nc"), chunk_runs=2)))
            assert_results_equal(got, want)
            got = sweep.analyze_files(files, chunk_runs=2, executor=client.get_executor(pure=False))
        assert_results_equal(got, want)
        out = tmp_path / "res.json"
        assert main(["analyze", str(tmp_path / "*.nc"), "--scheduler", address, "--json", str(out)]) == 0
        assert json.loads(out.read_text())
        with Client(address) as c:  # still there for the next command
            assert len(c.scheduler_info()["workers"]) == 2
        capsys.readouterr()
        assert main(["analyze", str(tmp_path / "*.nc"), "--scheduler", address, "--workers", "2"]) == 2
        assert "not both" in capsys.readouterr().err
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_scheduler_address_without_a_scheduler(tmp_path, capsys):
    from bandscope.cli import main

    pytest.importorskip("distributed")
    bio.write_run(make_run_synthetic(0), tmp_path / "a.nc")
    assert main(["analyze", str(tmp_path / "*.nc"), "--scheduler", "tcp://127.0.0.1:9", "--dask"]) == 2
    assert "no dask scheduler answers at 'tcp://127.0.0.1:9'" in capsys.readouterr().err
