"""RunRecorder: valid, readable file after every checkpoint; resume."""
from __future__ import annotations

import numpy as np
import pytest

from bandscope.io import read_run
from bandscope.torch.recorder import RunRecorder


def test_file_valid_after_each_checkpoint_and_resume(tmp_path):
    path = tmp_path / "run.nc"
    rec = RunRecorder(path, name="r", arch="cnn", seed=45, extra_attrs={"config": "{}"})
    for k in range(4):
        bl = [0.02 / (k + 1), 0.01]
        rec.record(step=10 * k, epoch=k / 2, band_loss=bl, param_time=1.5 * k, arc_length=2.0 * k, mse=sum(bl))
        ds = read_run(path)  # what `bandscope analyze` reads, at any moment
        assert ds.sizes["checkpoint"] == k + 1
    assert not (tmp_path / "run.nc.tmp").exists()
    np.testing.assert_allclose(ds["param_time"].values, [0, 1.5, 3.0, 4.5])
    assert ds.attrs["arch"] == "cnn" and int(ds.attrs["seed"]) == 45
    rec.close()  # one writer at a time: the file's owner must let go before another resumes it
    rec2 = RunRecorder(path, name="r", arch="cnn", seed=45, resume=True)
    assert len(rec2) == 4
    rec2.truncate(15)
    assert [r["step"] for r in rec2.rows] == [0, 10]
    rec2.record(step=20, band_loss=[0.1, 0.1], param_time=9.0, epoch=1.0, arc_length=9.0, mse=0.2)
    assert read_run(path).sizes["checkpoint"] == 3


def test_record_rejects_bad_rows(tmp_path):
    rec = RunRecorder(tmp_path / "run.nc")
    rec.record(step=0, band_loss=[1.0, 2.0], param_time=0.0)
    with pytest.raises(ValueError, match="not after"):
        rec.record(step=0, band_loss=[1.0, 2.0], param_time=0.0)
    with pytest.raises(ValueError, match="bands"):
        rec.record(step=1, band_loss=[1.0], param_time=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        rec.record(step=2, band_loss=[1.0, 2.0], param_time=-1.0)
    rec.record(step=2, band_loss=[1.0, 2.0], param_time=1.0)
    with pytest.raises(ValueError, match="decreases"):
        rec.record(step=3, band_loss=[1.0, 2.0], param_time=0.5)
