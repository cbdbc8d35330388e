"""HuggingFace callback: a real tiny ``transformers.Trainer.train`` on CPU records a run that
``bandscope analyze`` reads, and its metrics reach the ``report_to`` backends."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bandscope.cli import main  # noqa: E402
from bandscope.io import read_run  # noqa: E402
from bandscope.torch.hf import BandscopeCallback, first_tensor  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]



class TinyAE(torch.nn.Module):
    """An image autoencoder with the HF calling convention: ``forward(pixel_values, labels)``."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), torch.nn.Sigmoid())

    def forward(self, pixel_values, labels=None):
        recon = self.net(pixel_values)
        if labels is None:
            return {"reconstruction": recon}
        return {"loss": torch.nn.functional.mse_loss(recon, labels), "reconstruction": recon}


class Images(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        self.x = torch.from_numpy(np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.x[i]}


def _args(tmp_path, steps, report_to, **kw):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2,
        save_strategy="no", report_to=report_to, use_cpu=True, seed=0,
        disable_tqdm=True, **{"logging_steps": 1000, **kw})


def test_hf_train_records_a_run_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    torch.manual_seed(0)
    panel = np.random.default_rng(1).random((16, 3, 8, 8), dtype=np.float32)
    cb = BandscopeCallback(panel=panel, path=tmp_path / "run.nc", name="hf")
    has_tb = importlib.util.find_spec("tensorboard") is not None
    trainer = transformers.Trainer(model=TinyAE(), args=_args(tmp_path, 20, ["tensorboard"] if has_tb else "none",
                                                              logging_steps=5),
                                   train_dataset=Images(64, 0), callbacks=[cb])
    trainer.train()
    ds = read_run(tmp_path / "run.nc")
    steps = ds.step.values.tolist()
    assert steps[0] == 0 and steps[-1] == 20 and len(steps) >= 15
    assert (np.diff(ds.param_time.values) > 0).all() and cb.monitor.tracker.steps == 20
    # logging_steps=5 is respected: 4 log lines, each with the latest checkpoint's metrics and its step
    hist = {h["step"]: h for h in trainer.state.log_history if "bandscope/param_time" in h}
    assert sorted(hist) == [5, 10, 15, 20]
    at = {int(s): i for i, s in enumerate(steps)}
    for h in hist.values():
        cs = h["bandscope/checkpoint_step"]
        assert cs <= h["step"] and cs == max(s for s in steps if s <= h["step"])
        np.testing.assert_allclose(h["bandscope/param_time"], ds.param_time.values[at[cs]], rtol=1e-9)
    assert "bandscope/band_2" in hist[20] and "bandscope/mse" in hist[20]
    assert np.isfinite(ds.train_loss.values[1:]).all()  # read from the model output's loss
    assert main(["analyze", str(tmp_path / "run.nc")]) == 0
    if has_tb:  # the report_to backend saw them
        import glob
        import os

        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        runs = {os.path.dirname(p) for p in glob.glob(str(tmp_path / "tb" / "**" / "events.*"), recursive=True)}
        tags = set()
        for r in runs:
            acc = EventAccumulator(r)
            acc.Reload()
            tags |= set(acc.Tags()["scalars"])
        assert any(t.endswith("bandscope/param_time") for t in tags), tags


def test_hf_gradient_accumulation_and_no_panel(tmp_path):
    torch.manual_seed(0)
    cb = BandscopeCallback(schedule=[2, 4])
    trainer = transformers.Trainer(model=TinyAE(), args=_args(tmp_path, 4, "none", gradient_accumulation_steps=2),
                                   train_dataset=Images(64, 0), callbacks=[cb])
    trainer.train()
    assert [h["step"] for h in cb.monitor.history] == [0, 2, 4]
    assert cb.monitor.tracker.steps == 4 and cb.monitor.recorder is None
    assert cb.monitor.history[-1]["bandscope/param_time"] > 0


def test_first_tensor():
    t = torch.ones(1)
    assert first_tensor(t) is t and first_tensor({"a": t}) is t and first_tensor((t, 2)) is t
