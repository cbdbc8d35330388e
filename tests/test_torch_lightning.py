"""Lightning callback: a real tiny ``Trainer.fit`` on CPU records a run ``bandscope analyze`` reads."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from bandscope.cli import main  # noqa: E402
from bandscope.io import read_run  # noqa: E402
from bandscope.torch.lightning import BandscopeCallback  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]



class LitAE(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), torch.nn.Sigmoid())

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = torch.nn.functional.mse_loss(self(x), x)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _images(n, seed):
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


def _trainer(tmp_path, cb, steps, **kw):
    from lightning.pytorch.loggers import CSVLogger

    return pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name="csv"),
                      callbacks=[cb], enable_checkpointing=False, enable_model_summary=False,
                      log_every_n_steps=50, **kw)


def _loader(n=64, bs=8):
    ds = torch.utils.data.TensorDataset(torch.from_numpy(_images(n, 0)))
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(0))


def test_lightning_fit_records_a_run(tmp_path):
    torch.manual_seed(0)
    cb = BandscopeCallback(panel=_images(16, 1), path=tmp_path / "run.nc", name="lit")
    trainer = _trainer(tmp_path, cb, 24)
    model = LitAE()
    trainer.fit(model, _loader())
    ds = read_run(tmp_path / "run.nc")
    steps = ds.step.values.tolist()
    assert steps[0] == 0 and steps[-1] == 24 and len(steps) >= 15  # geometric over estimated steps
    assert (np.diff(ds.param_time.values) > 0).all()
    # parameter time equals an independent tracker over the same optimizer steps: the chords of
    # the module's weights; check the last chord segment's plausibility against the arc
    assert (ds.param_time.values <= ds.arc_length.values + 1e-9).all()
    assert cb.monitor.global_step == trainer.global_step == 24
    # the logger got every checkpoint at its own step (not thinned by log_every_n_steps)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    logged = [(int(r["step"]), float(r["bandscope/param_time"])) for r in rows if r.get("bandscope/param_time")]
    assert [s for s, _ in logged] == steps
    np.testing.assert_allclose([v for _, v in logged], ds.param_time.values, rtol=1e-6)
    assert {"bandscope/band_1", "bandscope/mse"} <= set(rows[0])
    assert "s" in trainer.progress_bar_metrics and "mse" in trainer.progress_bar_metrics
    out = tmp_path / "a.json"
    assert main(["analyze", str(tmp_path / "run.nc"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())


def test_lightning_gradient_accumulation_counts_optimizer_steps(tmp_path):
    torch.manual_seed(0)
    cb = BandscopeCallback(panel=_images(8, 1), path=tmp_path / "run.nc", schedule=[2, 4, 6])
    trainer = _trainer(tmp_path, cb, 6, accumulate_grad_batches=2)
    trainer.fit(LitAE(), _loader())
    ds = read_run(tmp_path / "run.nc")
    assert ds.step.values.tolist() == [0, 2, 4, 6] and cb.monitor.tracker.steps == 6

