"""tools/validate_forecast.py: which runs count (finished ones only) and the test set's table."""
from __future__ import annotations

from pathlib import Path

import pytest

from tools_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vf():
    return load_tool("validate_forecast")


def test_only_finished_runs_count(vf, tmp_path, monkeypatch):
    """A run counts once its train.log has an ``exit 0`` line; a run still being recorded (no
    such line, or no log yet) and the diverged pilots are left out."""
    base = tmp_path / "reference_runs" / "some-set"
    logs = {"done": "start x\nrecorded 53 checkpoints\nexit 0 2026-12-06T10:00:00Z\n",
            "running": "start x\n", "failed": "start x\nexit 1 2026-12-06T10:00:00Z\n",
            "diverged-done": "exit 0 now\n", "nolog": None}
    for name, text in logs.items():
        (base / name).mkdir(parents=True)
        (base / name / "run.nc").write_bytes(b"")
        if text is not None:
            (base / name / "train.log").write_text(text)
    monkeypatch.setattr(vf, "ROOT", tmp_path)
    assert [Path(f).parent.name for f in vf._run_files("some-set/*/run.nc")] == ["done"]


def test_the_test_set_is_not_in_the_corpus(vf):
    """The held-out set is never a calibration set."""
    assert vf.HELDOUT.split("/")[0] == "forecast-test"
    assert all(not pattern.startswith("forecast-test") for pattern in vf.CORPUS.values())
    assert set(vf.CORPUS) == {"recorded", "pilots", "forecast-cnn-1k"}
