"""``.ci/run``: every lane runs and is summarised even when one fails; a failure fails the run.

The script runs with ``--dry-run`` (each lane as ``make -n``, nothing installed) and with
``CI_MAKE`` pointing at a stand-in for make that records its arguments and fails the lanes named
in ``FAIL_TARGETS``, so the lane logic is checked in a second, without building a venv.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "run"
LANES = ["lint", "typecheck", "doctest", "fast", "full", "rounding", "core", "min", "docs"]

pytestmark = pytest.mark.skipif(sys.platform == "win32" or shutil.which("bash") is None,
                                reason=".ci/run is a bash script")


def _run(tmp_path, fail: str = "", lanes: str | None = None, real_make: bool = False):
    log = tmp_path / "make.log"
    fake = tmp_path / "make"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'echo "$*" >> "$MAKE_LOG"\n'
        'for t in "$@"; do for f in $FAIL_TARGETS; do [[ $t == "$f" ]] && exit 2; done; done\n'
        "exit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "MAKE_LOG": str(log), "FAIL_TARGETS": fail}
    if not real_make:
        env["CI_MAKE"] = str(fake)
    env.pop("CI_LANES", None)
    if lanes is not None:
        env["CI_LANES"] = lanes
    p = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    calls = log.read_text().splitlines() if log.exists() else []
    return p, calls


def _summary(out: str) -> dict[str, str]:
    lines = out.split("::: lanes", 1)[1].splitlines()[1:]
    return {ln.split()[0]: ln.split()[1] for ln in lines if ln and not ln.startswith(":::")}


def test_every_lane_runs_and_passes(tmp_path):
    p, calls = _run(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _summary(p.stdout) == {lane: "ok" for lane in LANES}
    assert "::: every lane passed" in p.stdout
    assert all(c.startswith("-n ") for c in calls), calls  # dry run: make -n only


def test_a_broken_lane_hides_no_other_lane(tmp_path):
    p, calls = _run(tmp_path, fail="test-core")
    assert p.returncode == 1, p.stdout + p.stderr
    summary = _summary(p.stdout)
    assert summary.pop("core") == "FAILED"
    assert summary == {lane: "ok" for lane in LANES if lane != "core"}
    assert "FAILED lanes: core" in p.stderr
    assert "-n test-min" in calls and "-n docs docs-check" in calls  # lanes after the broken one ran


def test_two_broken_lanes_are_both_reported(tmp_path):
    p, _ = _run(tmp_path, fail="lint test-min")
    assert p.returncode == 1
    summary = _summary(p.stdout)
    assert [lane for lane, s in summary.items() if s != "ok"] == ["lint", "min"]
    assert "FAILED lanes: lint min" in p.stderr


def test_selected_lanes_only(tmp_path):
    p, calls = _run(tmp_path, lanes="fast rounding")
    assert p.returncode == 0, p.stderr
    assert list(_summary(p.stdout)) == ["fast", "rounding"]
    assert [c for c in calls if "docs-check" not in c] == ["-n test-fast", "-n test-rounding"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_dry_run_with_the_real_makefile(tmp_path):
    """Every lane's make target exists: `make -n` of each succeeds on the real Makefile."""
    p, _ = _run(tmp_path, real_make=True, lanes="lint typecheck doctest fast full rounding core min")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert set(_summary(p.stdout).values()) == {"ok"}
