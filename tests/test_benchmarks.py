"""Smoke tests of the speed benchmarks in ``benchmarks/`` (``bench_*.py`` and ``run.py``).

Each benchmark runs at its smallest size (the flags its docstring names for a smoke run), must
complete, and must return (or write as JSON) the ratio keys its docstring promises, as finite
numbers; what ``benchmarks/run.py --json`` writes must be valid JSON. The values themselves are not
checked: timings on a shared machine are noise, and speed targets belong to the benchmarks, never
to tests. Benchmark subprocesses get ``PYTHONPATH`` pointing at this tree's ``src``; files go to
``tmp_path`` (``TMPDIR`` and :data:`tempfile.tempdir` point there too, for the benchmarks that
write to a temporary directory of their own).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SRC = ROOT / "src"

pytestmark = pytest.mark.slow

#: every benchmark this file runs (a new ``bench_*.py`` must be added here, and get a test)
COVERED = {"analysis", "bands", "forecast_monitor", "lnp", "longrun", "report", "startup", "sweep", "torch"}


def load_bench(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/bench_NAME.py`` as module ``bench_NAME``, registered in ``sys.modules`` for the
    test's duration (before it runs, as an import does: pickling to a process pool looks functions
    up there)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"bench_{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def bench_env(tmp_path, monkeypatch):
    """Subprocesses import this tree's ``src``; temporary directories are made under ``tmp_path``;
    matplotlib draws without a display."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])  # benchmarks that parse sys.argv see no flags


def assert_finite(d: dict, keys, where: str = "") -> None:
    """Every key of ``keys`` is in ``d`` and is a finite number (a number, or a median-and-interval
    tuple of them)."""
    missing = [k for k in keys if k not in d]
    assert not missing, f"{where}missing keys {missing}; got {sorted(d)}"
    for k in keys:
        v = d[k]
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        assert vals, f"{where}{k} is empty"
        for x in vals:
            assert not isinstance(x, bool) and math.isfinite(float(x)), f"{where}{k} = {v!r} is not a finite number"


def json_round_trip(got):
    """What ``benchmarks/run.py --json`` does with a ``main()``'s return value (``json.dumps``,
    ``default=float``), read back."""
    return json.loads(json.dumps(got, default=float))


def test_every_benchmark_is_covered():
    assert {p.stem[len("bench_"):] for p in BENCH.glob("bench_*.py")} == COVERED


def test_bench_analysis(monkeypatch):
    mod = load_bench("analysis", monkeypatch)
    got = mod.main(repeats=1, n_runs=2)
    assert_finite(got, ["analyze_s", "analyze_cpu_s", "gamma_part_s", "baseline_s", "speedup",
                        "max_rel_sse_excess_overall"])
    assert got["band_fits"] > 0
    assert_finite(got["max_rel_sse_excess"], ["sse_weibull", "sse_exp", "total_sse_weibull", "total_sse_exp"])
    json_round_trip(got)


def test_bench_bands(monkeypatch):
    mod = load_bench("bands", monkeypatch)
    shape = (2, 3, 8, 8)
    got = mod.main(rounds=1, shape=shape, half_shapes=(shape,))
    keys = ["f16_over_f32_numpy"]
    for k in ("fast_f32", "fast_f64", "public_default", "public_f64"):
        keys += [f"pywt_over_{k}", f"{k}_over_floor"]
    for k in ("fast_f32_in_f16", "fast_f64_in_f16"):
        keys += [f"{k}_over_floor", f"{k}_over_floor_f16"]
    for pre in ("2x3x8x8_", "dark_2x3x8x8_"):
        keys += [pre + "f16_over_f32_numpy", pre + "public_f16_over_public_f32"]
    if importlib.util.find_spec("torch") is not None:  # the torch twin's rows are there when torch is
        keys += ["torch_f32_over_floor", "torch_f16_over_torch_f32", "public_f16_over_public_f32"]
    assert_finite(got, keys)
    json_round_trip(got)


def test_bench_forecast_monitor(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    mod = load_bench("forecast_monitor", monkeypatch)
    out = tmp_path / "monitor.json"
    got = mod.main(["--pairs", "1", "--steps", "3", "--schedule", "dense", "--n-points", "2",
                    "--json", str(out)])
    written = json.loads(out.read_text())
    for res in (got, written):
        assert_finite(res["ab"]["monitor"], ["wall", "cpu", "thread", "checkpoints"], "ab: ")
        assert res["ab"]["monitor"]["checkpoints"] >= 1
        assert_finite(res["attribution"]["monitor"],
                      ["wall", "cpu", "worker", "predicted_wall_ratio", "predicted_cpu_ratio",
                       "predicted_thread_ratio", "rest_wall_ratio", "rest_thread_ratio", "dense_start_wall",
                       "dense_start_cpu", "whole_run_wall", "whole_run_cpu"], "attribution: ")
        assert set(res["agrees"]["monitor"]) == {"wall", "cpu", "thread"}
    json_round_trip(got)


def test_bench_forecast_monitor_profile(monkeypatch):
    pytest.importorskip("torch")
    mod = load_bench("forecast_monitor", monkeypatch)
    got = mod.main(["--profile", "--reps", "1"])
    assert_finite(got, ["train_step", "tracker_step", "probe", "record_and_write", "tracker_checkpoint",
                        "forecast", "predicted_train_thread"])
    json_round_trip(got)


def test_bench_lnp(monkeypatch):
    pytest.importorskip("torch")
    mod = load_bench("lnp", monkeypatch)
    got = mod.main(cases=["cnn32"], draws=1)
    got = json_round_trip(got)  # run.py --json writes it: its keys must be strings
    for backend in ("hooks", "vmap"):
        row = got[f"cnn32/{backend}"]
        assert_finite(row, ["steps_median", "steps_min", "steps_cpu_median", "first_steps", "rel_std"],
                      f"{backend}: ")
        assert row["draws"] == 2
    assert isinstance(got["cnn32/hooks"]["pass"], bool)


def test_bench_longrun(monkeypatch, tmp_path):
    mod = load_bench("longrun", monkeypatch)
    out = tmp_path / "longrun.json"
    got = mod.main(["--sizes", "60,120", "--base", "60", "--repeats", "1", "--json", str(out)])
    written = json.loads(out.read_text())
    assert [r["checkpoints"] for r in got["rows"]] == [r["checkpoints"] for r in written] == [60, 120]
    keys = ["analyze_cpu_s", "analyze_ratio_to_base"] + [f"{s}_ratio_to_base" for s in mod.STAGES]
    for row in written:
        assert_finite(row, keys, f"{row['checkpoints']} checkpoints: ")
    json_round_trip(got)


def test_bench_report(monkeypatch):
    mod = load_bench("report", monkeypatch)
    # --compare-src with this very tree: the before/after path runs too
    got = mod.main(["--runs", "2", "--rounds", "1", "--repeats", "1", "--compare-src", str(SRC)])
    trees = [k for k in got if k not in ("html_after_over_before", "load_average")]
    assert len(trees) == 2
    for tree in trees:
        assert_finite(got[tree], ["analyze", "json", "html", "json_ratio", "html_ratio"], f"{tree}: ")
    assert_finite(got, ["html_after_over_before"])
    json_round_trip(got)


def test_bench_startup(monkeypatch, tmp_path):
    mod = load_bench("startup", monkeypatch)
    out = tmp_path / "startup.json"
    got = mod.main(["--repeats", "1", "--json", str(out)])
    for res in (json_round_trip(got), json.loads(out.read_text())):
        assert [r["command"] for r in res["rows"]] == list(mod.COMMANDS)
        for row in res["rows"]:
            assert_finite(row, ["median_s", "min_s", "ratio_median", "ratio_min"], f"{row['command']}: ")


def test_bench_sweep_dask(monkeypatch, tmp_path):
    pytest.importorskip("dask")
    mod = load_bench("sweep", monkeypatch)
    out = tmp_path / "sweep.json"
    got = mod.main(["--sizes", "3", "--dir", str(tmp_path / "runs"), "--json", str(out)])
    written = json.loads(out.read_text())
    assert sorted(r["path"] for r in written["rows"]) == sorted(mod.PATHS)
    assert_finite(written["summary"], [f"{p}_3_cpu_ms_per_run_median" for p in mod.PATHS]
                  + [f"{p}_3_speedup_vs_numpy_median" for p in mod.PATHS if p != "numpy"]
                  + ["workers-2_3_serial_s_median", "workers-2_3_bound_2_cores_median"])
    workers = next(r for r in written["rows"] if r["path"] == "workers-2")
    assert 0 < workers["serial_s"] < workers["total_s"]
    json_round_trip(got)


def test_bench_sweep_fails_when_a_path_fails(monkeypatch, tmp_path):
    """A path whose process fails is printed as FAILED, the other paths still run and the rows are
    written, then the benchmark exits with an error naming it (``make bench`` must not pass)."""
    mod = load_bench("sweep", monkeypatch)
    out = tmp_path / "sweep.json"
    with pytest.raises(SystemExit, match="no-such-path at 2 runs"):
        mod.main(["--sizes", "2", "--paths", "numpy,no-such-path", "--dir", str(tmp_path / "runs"),
                  "--json", str(out)])
    assert [r["path"] for r in json.loads(out.read_text())["rows"]] == ["numpy"]


def test_bench_sweep_compare_src(monkeypatch, tmp_path):
    mod = load_bench("sweep", monkeypatch)
    got = mod.main(["--sizes", "2", "--paths", "numpy", "--dir", str(tmp_path / "runs"), "--compare-src", str(SRC)])
    assert sorted(r["path"] for r in got["rows"]) == ["numpy", "numpy@other"]
    assert_finite(got["summary"], ["numpy_2_cpu_ms_per_run_median", "numpy_2_cpu_vs_other_median"])


def test_bench_sweep_parallel_capacity(monkeypatch, tmp_path):
    mod = load_bench("sweep", monkeypatch)
    files = mod.write_files(tmp_path / "runs", 6, "nc")
    lst = tmp_path / "files.txt"
    lst.write_text("\n".join(map(str, files)))
    cap = mod.parallel_capacity(lst, n=2)
    assert math.isfinite(cap) and cap > 0


def test_bench_torch(monkeypatch):
    pytest.importorskip("torch")
    mod = load_bench("torch", monkeypatch)
    got = mod.main(["--quick", "--size", "16"])
    assert_finite(got, ["tracker_step_ratio_cpu", "tracker_step_ratio_wall", "tracked_train_step_ratio_cpu",
                        "tracked_train_step_ratio_wall", "probe_ratio_cpu", "probe_ratio_wall",
                        "probe_amortised_A5_ratio_cpu", "probe_over_panel_forward_cpu",
                        "probe_float64_over_panel_forward_cpu"])
    json_round_trip(got)


def test_run_py_json(monkeypatch, tmp_path):
    """``run.py`` discovers ``bench_*.py`` in its folder, runs each ``main()`` with no flags and
    writes the results and times keyed by topic. Pointed at a folder holding one real benchmark
    (``bench_bands``, through a two-line ``main()`` that gives it its smallest size: its defaults
    are the full size)."""
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "bench_bands.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('bench_bands_full', {str(BENCH / 'bench_bands.py')!r})\n"
        "full = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(full)\n\n\n"
        "def main():\n"
        "    import sys\n"
        "    assert sys.argv[1:] == [], sys.argv  # run.py gives every benchmark its own defaults\n"
        "    return full.main(rounds=1, shape=(2, 3, 8, 8), half_shapes=((2, 3, 8, 8),))\n")
    monkeypatch.setattr(run, "here", folder)
    out = tmp_path / "build" / "bench.json"
    argv = [sys.argv[0], "--stays"]
    monkeypatch.setattr(sys, "argv", argv)
    run.main(["--json", str(out)])
    assert sys.argv is argv  # restored
    written = json.loads(out.read_text())
    assert set(written) == {"bands", "bands_seconds"}
    assert_finite(written["bands"], ["f16_over_f32_numpy", "pywt_over_fast_f32", "fast_f32_over_floor"])
    assert_finite(written, ["bands_seconds"])
    run.main(["--json", str(out), "bands"])  # by name
    assert set(json.loads(out.read_text())) == {"bands", "bands_seconds"}
