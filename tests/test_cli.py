"""The command line: analyze -> tables + JSON in the documented structure; reproduce."""
import json
import shutil
from pathlib import Path

import pytest

from bandscope import io as bio
from bandscope.cli import main, parse_windows
from bandscope.keysearch.synthetic import make_run_synthetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    paths = []
    for seed, arch in ((1, "cnn"), (2, "vit")):
        r = make_run_synthetic(seed, arch=arch)
        paths.append(bio.write_run(r, d / f"{arch}-{seed}.csv"))
    # a log without a step column: gamma must be null
    df = bio.run_to_frame(make_run_synthetic(3, arch="cnn")).drop(columns=["step"])
    df.to_csv(d / "nostep.csv", index=False)
    paths.append(d / "nostep.csv")
    return paths


def test_parse_windows():
    assert parse_windows("0.95/0.01,0.9/0.1") == ((0.95, 0.01), (0.9, 0.1))
    import argparse

    for bad in ("0.5", "0.01/0.95", "1.2/0.1", "a/b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_windows(bad)


def test_analyze_json_structure(run_files, tmp_path, capsys):
    out = tmp_path / "res.json"
    assert main(["analyze", *map(str, run_files), "--json", str(out), "--windows", "0.95/0.01,0.90/0.10"]) == 0
    printed = capsys.readouterr().out
    assert "band" in printed.lower()
    text = out.read_text()

    def no_nan(const):  # NaN/Infinity literals are not JSON; they must be written as null
        raise AssertionError(f"{const} in JSON output")

    data = json.loads(text, parse_constant=no_nan)
    assert set(data["runs"]) == {"cnn-1", "vit-2", "nostep"}
    r = data["runs"]["cnn-1"]
    assert set(r["bands"]) == {"1", "2", "4", "8", "16", "32", "64"}
    b = r["bands"]["16"]
    for key in ("floor", "onset", "width", "initial_residual", "fits"):
        assert key in b
    assert set(b["fits"]) == {"0.95/0.01", "0.90/0.10"}
    fit = b["fits"]["0.95/0.01"]
    for key in ("n", "A", "omega", "beta", "r2", "bic_weibull", "bic_exp", "delta_bic", "delta_bic_neff", "status"):
        assert key in fit
    assert fit["status"] == "ok" and fit["n"] >= 5
    assert abs(fit["delta_bic"] - (fit["bic_weibull"] - fit["bic_exp"])) < 1e-9
    for key in ("beta", "omega", "A", "r2", "delta_bic", "band_sum_r2"):
        assert key in r["total"]
    assert set(r["ordering"]) == {"onset", "width", "floor", "initial_residual"}
    assert r["gamma"] is not None and 0.2 < r["gamma"]["gamma"] < 0.6  # synthetic s = b t^0.37
    assert data["runs"]["nostep"]["gamma"] is None
    assert "summary" in data


def test_analyze_plots_and_netcdf(run_files, tmp_path):
    pytest.importorskip("matplotlib")
    assert main(["analyze", str(run_files[0]), "--plots", str(tmp_path / "figs"), "--netcdf",
                 str(tmp_path / "r.nc"), "--quiet"]) == 0
    pngs = sorted(p.name for p in (tmp_path / "figs").glob("*.png"))
    assert pngs == ["cnn-1_band_losses.png", "cnn-1_fits.png", "full_loss.png", "loss_curves.png", "ordering.png",
                    "weibull_shapes.png"]
    import xarray as xr

    with xr.open_dataset(tmp_path / "r.nc") as ds:
        assert "delta_bic" in ds and ds.sizes["run"] == 1


def test_analyze_bad_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("step,s,band_1\n0,0,1\n1,1,0.5\n")
    assert main(["analyze", str(tmp_path / "bad.csv")]) == 2
    assert "param_time" in capsys.readouterr().err


def test_reproduce_on_synthetic(tmp_path, capsys):
    d = tmp_path / "reference_runs"
    shutil.copytree(ROOT / "reference_runs" / "synthetic", d / "synthetic")
    assert main(["reproduce", "--dir", str(d), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["runs"]) == 12


def test_reproduce_skips_unfinished_recorded_runs(tmp_path, capsys):
    d = tmp_path / "reference_runs" / "recorded"
    for i, (total, seed) in enumerate(((None, 1), (71350, 2), (10**6, 3))):
        r = make_run_synthetic(seed, n_bands=4)
        if total is not None:
            r.attrs["total_steps"] = total
        (d / f"r{i}").mkdir(parents=True)
        bio.write_run(r, d / f"r{i}" / "run.nc")
    argv = ["reproduce", "--dir", str(tmp_path / "reference_runs"), "--json", str(tmp_path / "o.json"), "--quiet"]
    assert main(argv) == 0
    assert "skipping r2: unfinished" in capsys.readouterr().err
    assert set(json.loads((tmp_path / "o.json").read_text())["runs"]) == {"r0", "r1"}


def _in_fresh_python(code: str) -> str:
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True,
                       text=True, env=env, timeout=120)
    return p.stdout.strip() + p.stderr.strip()


@pytest.mark.parametrize("first", [
    "import bandscope.cli.main",
    "import bandscope.cli",
    "import bandscope.cli.commands",
    "import importlib; importlib.import_module('bandscope.cli.main')",
    "import warnings; warnings.simplefilter('ignore'); from bandscope.cli.main import build_parser",
])
def test_bandscope_cli_main_is_the_function_whatever_is_imported_first(first):
    """``bandscope.cli.main`` (the console script ``bandscope.cli:main`` of pyproject) is the
    function in every import order: the module that holds it is ``bandscope.cli.commands``."""
    code = (f"{first}\nimport bandscope.cli, bandscope.cli.commands as c\nfrom bandscope.cli import main\n"
            "import bandscope.cli.main as m\n"
            "print(main is c.main and bandscope.cli.main is c.main and m is c.main and callable(main))")
    assert _in_fresh_python(code) == "True"


def test_console_script_resolves_to_the_function():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    import importlib

    from bandscope.cli import commands

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["bandscope"]
    module, attr = target.split(":")
    importlib.import_module("bandscope.cli.main")  # the old module name must not rebind the attribute
    assert getattr(importlib.import_module(module), attr) is commands.main


def test_old_module_name_imports_with_a_deprecation_warning():
    import warnings

    from bandscope.cli import commands

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from bandscope.cli.main import build_parser, reference_dir
    assert build_parser is commands.build_parser and reference_dir is commands.reference_dir
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert all("bandscope.cli.commands" in str(w.message) for w in caught)
    with pytest.raises(ImportError):
        from bandscope.cli.main import no_such_name  # noqa: F401
