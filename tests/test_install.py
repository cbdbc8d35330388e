"""bandscope installs like a library: the sdist builds, a wheel built from it installs into a
fresh venv (no system site-packages, core dependencies only), and `bandscope reproduce` then
analyses the reference runs shipped inside the package, run from a directory that is not the
repository. Slow (builds and installs; about a minute): not in the fast lane."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd, cwd, **kw):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """sdist and a wheel built from that sdist (python -m build), in isolated build envs."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, REPO], cwd=out)
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return sdist, wheel


def test_sdist_has_docs_tests_license_and_runs(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for need in ("LICENSE", "README.md", "pyproject.toml", "constraints.txt", "docs/format.md",
                 "tests/test_install.py", "tests/conftest.py", "reference_runs/recorded/README.md",
                 "reference_runs/recorded/cnn-seed45/run.nc", "reference_runs/synthetic/README.md"):
        assert need in names, f"{need} missing from {sdist.name}"
    assert not any("/state/" in n or n.endswith(".pyc") for n in names)


def test_wheel_ships_the_run_sets_as_data_only(dists):
    _, wheel = dists
    import bandscope

    assert wheel.name.startswith(f"bandscope-{bandscope.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    data = [n for n in names if n.startswith("bandscope/reference_runs/")]
    assert sum(n.endswith("/run.nc") for n in data) == 6
    assert sum(n.endswith(".csv") for n in data) == 12
    for s in ("recorded", "synthetic", "lnp"):
        assert f"bandscope/reference_runs/{s}/README.md" in data
    assert not [n for n in data if n.endswith((".py", ".sh", ".log")) or "pilots" in n or "/state/" in n]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "bandscope/keysearch/forecast_calibration.json" in names  # the shipped floor calibration


def test_wheel_in_fresh_venv_reproduces_from_anywhere(dists, tmp_path):
    """Core dependencies only (reproduce needs no torch), at the versions of this environment."""
    _, wheel = dists
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    freeze = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], cwd=tmp_path).stdout
    pins = tmp_path / "pins.txt"
    pins.write_text("\n".join(x for x in freeze.splitlines() if "==" in x and not x.startswith("bandscope")))
    _run([py, "-m", "pip", "install", "-q", "-c", pins, wheel], cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = _run([py, "-c", "import importlib.util as u; from bandscope.cli.commands import reference_dir as r; "
                  "print(u.find_spec('torch') is None, r().resolve())"], cwd=elsewhere)
    no_torch, ref = probe.stdout.split()
    assert no_torch == "True"
    assert Path(ref) == Path(probe.stdout.split()[1]) and "site-packages" in ref and str(REPO) not in ref
    res = _run([venv / "bin" / "bandscope", "reproduce", "--json", "out.json"], cwd=elsewhere)
    assert "recorded" in res.stdout
    runs = json.loads((elsewhere / "out.json").read_text())["runs"]
    assert sorted(runs) == [f"{a}-seed{s}" for a in ("cnn", "vit") for s in (45, 46, 47)]
    # the forecast's calibration is package data: forecasting a shipped run works from anywhere
    shipped = Path(ref) / "recorded" / "cnn-seed45" / "run.nc"
    fc = _run([venv / "bin" / "bandscope", "forecast", shipped, "--prefix", "0.5", "--json", "fc.json", "--quiet"],
              cwd=elsewhere)
    assert fc.returncode == 0
    bands = json.loads((elsewhere / "fc.json").read_text())["runs"]["cnn-seed45"]["bands"]
    assert all(b["floor"] is not None and b["floor_low"] <= b["floor"] <= b["floor_high"]
               for b in bands.values() if b["floor_high"] is not None)
    version = _run([venv / "bin" / "bandscope", "--version"], cwd=elsewhere).stdout
    import bandscope

    assert bandscope.__version__ in version
