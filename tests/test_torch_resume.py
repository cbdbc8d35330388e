"""Kill and resume: a job stopped after a training checkpoint and resumed from it gives the run file an
uninterrupted job gives, for a plain loop, Lightning and the HuggingFace Trainer.

Tolerances: both jobs run in this process on the same deterministic CPU kernels with the same
inputs, so every float64 quantity is computed by the same operations in the same order; rtol 1e-12
leaves room for nothing but float rounding (a changed summation order of the arc length would show
as ~1e-16 relative), while a lost step, a restarted parameter time or a chord measured from the
wrong place changes these numbers at 1e-3 or more.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bandscope.errors import BandscopeInputError  # noqa: E402
from bandscope.io import read_run  # noqa: E402
from bandscope.torch import Monitor  # noqa: E402
from torch_models import lightning_autoencoder, seeded_mlp_ae  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]

RTOL = 1e-12
CHECKPOINT_VARS = ("param_time", "arc_length", "band_loss", "mse", "train_loss", "heldout_loss")


def assert_same_run(resumed, full, rtol=RTOL):
    """Steps identical; every float variable equal to float rounding; LNP on the same steps."""
    assert resumed.step.values.tolist() == full.step.values.tolist()
    for v in CHECKPOINT_VARS:
        if v in full:
            np.testing.assert_allclose(resumed[v].values, full[v].values, rtol=rtol, atol=0, err_msg=v)
    lnp = sorted(v for v in full.data_vars if v.startswith("lnp_") and full[v].dtype.kind == "f")
    assert sorted(v for v in resumed.data_vars if v.startswith("lnp_") and resumed[v].dtype.kind == "f") == lnp
    if lnp:
        assert resumed.lnp_step.values.tolist() == full.lnp_step.values.tolist()
        for v in lnp:
            np.testing.assert_allclose(resumed[v].values, full[v].values, rtol=1e-9, atol=1e-15, err_msg=v)


# ------------------------------------------------------------------------------ plain loop
_net = seeded_mlp_ae  # float64: resumed runs are compared at float64 tolerances


def _batch(t):
    g = torch.Generator().manual_seed(100 + t)
    x = torch.rand(8, 3, 4, 4, generator=g, dtype=torch.float64)
    return x, x


PANEL = np.random.default_rng(5).random((8, 3, 4, 4))
HELDOUT = (torch.from_numpy(np.random.default_rng(6).random((8, 3, 4, 4))),) * 2
MSE = torch.nn.functional.mse_loss


def _monitor(model, path, **kw):
    return Monitor(model, panel=PANEL, path=path, schedule=range(0, 31, 3), lnp=MSE, lnp_batch=_batch(0),
                   lnp_options={"schedule": [0, 5, 14, 16, 25], "network_scale": "exact"},
                   heldout_batch=HELDOUT, forecast=False, **kw)


def _loop(model, opt, mon, start, stop, on_step=None):
    for t in range(start, stop):
        x, y = _batch(t)
        opt.zero_grad()
        loss = MSE(model(x), y)
        loss.backward()
        opt.step()
        mon.step(loss=loss)
        if on_step is not None:
            on_step(t + 1)


def test_plain_loop_killed_and_resumed_equals_uninterrupted(tmp_path):
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    full = _monitor(model, tmp_path / "full.nc")
    _loop(model, opt, full, 0, 30)
    full = full.close()

    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mon = _monitor(model, tmp_path / "job.nc")
    saved = {}

    def save(step):
        if step == 13:  # a training checkpoint between two run checkpoints (12 and 15)
            saved.update(torch.load(_save(tmp_path / "ckpt.pt", model, opt, mon), weights_only=True))

    _loop(model, opt, mon, 0, 17, save)  # killed at step 17: the run file already holds step 15
    mon.recorder.close()  # what SIGKILL does to the lock; nothing else is flushed
    assert read_run(tmp_path / "job.nc").step.values.tolist()[-1] == 15

    with pytest.raises(BandscopeInputError, match=r"resume=True.*overwrite=True"):
        _monitor(_net(), tmp_path / "job.nc")  # a new job on the same path is refused
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    with pytest.warns(UserWarning, match=r"steps \[15\].*LNP measurements at steps \[14\]"):
        mon = _monitor(model, tmp_path / "job.nc", resume=True, state=saved["bandscope"])
    _loop(model, opt, mon, 13, 30)
    resumed = mon.close()
    assert_same_run(resumed, full)
    assert_same_run(read_run(tmp_path / "job.nc"), read_run(tmp_path / "full.nc"))
    assert resumed.attrs["name"] == "job" and resumed.attrs["created"] == read_run(tmp_path / "job.nc").attrs["created"]


def _save(path, model, opt, mon):
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "bandscope": mon.state_dict()}, path)
    return path


def test_monitor_resume_with_load_state_dict_and_overwrite(tmp_path):
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mon = _monitor(model, tmp_path / "run.nc")
    _loop(model, opt, mon, 0, 6)
    state = mon.state_dict()
    mon.close(final_checkpoint=False)
    again = _monitor(model, tmp_path / "run.nc", resume=True)
    with pytest.raises(RuntimeError, match="load_state_dict"):
        again.step()
    again.load_state_dict(state)
    _loop(model, opt, again, 6, 9)
    assert again.close().step.values.tolist() == [0, 3, 6, 9]
    fresh = _monitor(_net(), tmp_path / "run.nc", overwrite=True)
    assert fresh.close().step.values.tolist() == [0]


def test_resume_without_the_run_file_keeps_no_false_step_zero(tmp_path):
    """The run file is gone (a node-local disk): the constructor's "step 0" is the restored
    weights, not step 0, so it must not stay in the file."""
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mon = _monitor(model, tmp_path / "run.nc")
    _loop(model, opt, mon, 0, 7)
    state = mon.state_dict()
    mon.close(final_checkpoint=False)
    (tmp_path / "run.nc").unlink()
    again = _monitor(model, tmp_path / "run.nc", resume=True)
    with pytest.warns(UserWarning, match="without its run file"):
        again.load_state_dict(state)
    _loop(model, opt, again, 7, 10)
    assert again.close().step.values.tolist() == [9, 10]


def test_lock_released_when_the_constructor_raises(tmp_path):
    path = tmp_path / "run.nc"
    with pytest.raises(BandscopeInputError, match="heldout_loss_fn"):
        Monitor(_net(), panel=PANEL, path=path, heldout_batch=HELDOUT)  # after the recorder took the lock
    with pytest.raises(ValueError, match="lnp_batch"):
        Monitor(_net(), panel=PANEL, path=path, lnp=MSE, total_steps=10)
    Monitor(_net(), panel=PANEL, path=path).close()  # the same process may retry at once


# ------------------------------------------------------------------------------ Lightning
def _lightning_run(tmp_path, path, *, kill_at=None, ckpt_path=None, **cb_kw):
    pl = pytest.importorskip("lightning.pytorch")
    from bandscope.torch.lightning import BandscopeCallback

    class Kill(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if kill_at is not None and trainer.global_step == kill_at:
                raise KeyboardInterrupt  # Ctrl-C; Lightning's on_exception runs

    # one batch per epoch: Lightning restarts an interrupted epoch of a plain DataLoader from its first
    # batch (its own resume is not exact in the data order otherwise); every step sees the same batch
    data = torch.utils.data.TensorDataset(torch.from_numpy(np.random.default_rng(0).random((16, 3, 4, 4))))
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=False)
    cb = BandscopeCallback(panel=PANEL, path=path, schedule=range(0, 19, 3), progress_bar=False, **cb_kw)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=7, save_top_k=-1)
    trainer = pl.Trainer(max_steps=18, accelerator="cpu", devices=1, logger=False, callbacks=[cb, Kill(), ckpt],
                         enable_model_summary=False, enable_progress_bar=False)
    model = lightning_autoencoder(_net)
    if kill_at is not None:
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            trainer.fit(model, loader)
    else:
        trainer.fit(model, loader, ckpt_path=ckpt_path)
    return cb


def test_lightning_killed_and_resumed_equals_uninterrupted(tmp_path):
    _lightning_run(tmp_path / "a", tmp_path / "full.nc")
    full = read_run(tmp_path / "full.nc")
    assert full.step.values.tolist() == [0, 3, 6, 9, 12, 15, 18]
    _lightning_run(tmp_path / "b", tmp_path / "job.nc", kill_at=11)  # Lightning checkpoint at step 7
    assert read_run(tmp_path / "job.nc").step.values.tolist() == [0, 3, 6, 9]
    (ckpt,) = (tmp_path / "b" / "ckpt").glob("*step=7.ckpt")
    with pytest.warns(UserWarning, match=r"steps \[9\]"):
        cb = _lightning_run(tmp_path / "b", tmp_path / "job.nc", ckpt_path=ckpt)
    assert cb.monitor.closed
    assert_same_run(read_run(tmp_path / "job.nc"), full)


def test_lightning_refuses_an_existing_run_without_resume(tmp_path):
    _lightning_run(tmp_path / "a", tmp_path / "run.nc")
    with pytest.raises(BandscopeInputError, match="resume=True"):
        _lightning_run(tmp_path / "b", tmp_path / "run.nc")
    cb = _lightning_run(tmp_path / "c", tmp_path / "run.nc", overwrite=True)  # lock was released above
    assert cb.monitor.closed


# ------------------------------------------------------------------------------ HuggingFace
def _hf_run(tmp_path, path, *, kill_at=None, resume=None, max_steps=18):
    transformers = pytest.importorskip("transformers")
    from bandscope.torch.hf import BandscopeCallback

    class AE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, pixel_values, labels=None):
            out = self.net(pixel_values)
            return {"loss": MSE(out, labels), "reconstruction": out} if labels is not None else {"reconstruction": out}

    class Images(torch.utils.data.Dataset):
        x = torch.from_numpy(np.random.default_rng(0).random((48, 3, 4, 4)))

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"pixel_values": self.x[i], "labels": self.x[i]}

    class Kill(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if kill_at is not None and state.global_step == kill_at:
                raise RuntimeError("killed")

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=max_steps, per_device_train_batch_size=8, learning_rate=1e-2,
        logging_steps=6, save_strategy="steps", save_steps=6, report_to="none", use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_num_workers=0)
    cb = BandscopeCallback(panel=PANEL, path=path, schedule=range(0, 19, 3))
    torch.manual_seed(0)
    trainer = transformers.Trainer(model=AE(), args=args, train_dataset=Images(), callbacks=[cb, Kill()])
    if kill_at is not None:
        with pytest.raises(RuntimeError, match="killed"):
            trainer.train()
    else:
        trainer.train(resume_from_checkpoint=resume)
    return cb, trainer


def test_hf_killed_and_resumed_equals_uninterrupted(tmp_path):
    _, trainer = _hf_run(tmp_path / "a", tmp_path / "full.nc")
    full = read_run(tmp_path / "full.nc")
    assert full.step.values.tolist() == [0, 3, 6, 9, 12, 15, 18]
    assert np.isfinite(full.train_loss.values[1:]).all() and np.isnan(full.train_loss.values[0])
    # logging_steps is respected: 3 log lines (6, 12, 18) each with the latest checkpoint's metrics
    logged = [h for h in trainer.state.log_history if "bandscope/param_time" in h]
    assert [h["step"] for h in logged] == [6, 12, 18]
    assert [h["bandscope/checkpoint_step"] for h in logged] == [6, 12, 18]

    cb, _ = _hf_run(tmp_path / "b", tmp_path / "job.nc", kill_at=10)  # last Trainer checkpoint: step 6
    assert cb.monitor.closed  # train() raised, the run file was released
    assert read_run(tmp_path / "job.nc").step.values.tolist() == [0, 3, 6, 9]
    with pytest.warns(UserWarning, match=r"steps \[9\]"):
        _hf_run(tmp_path / "b", tmp_path / "job.nc", resume=True)
    assert_same_run(read_run(tmp_path / "job.nc"), full)


@pytest.mark.slow
def test_lightning_ddp_two_processes_killed_and_resumed(tmp_path):
    """2-process DDP (gloo, CPU): both ranks die at step 9 (after the Lightning checkpoint at step 7
    and the run file's checkpoint at 8); the resumed job's run file equals an uninterrupted one's.
    Gloo's two-rank all-reduce sums in a fixed order, so the same rounding as in one process."""
    pytest.importorskip("lightning.pytorch")
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("lightning_ddp_job.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for mode in ("full", "kill", "resume"):
        subprocess.run([sys.executable, str(script), mode, str(tmp_path)], check=True, env=env, timeout=600,
                       cwd=tmp_path)
    full = read_run(tmp_path / "full.nc")
    assert full.step.values.tolist() == [0, 4, 8, 12, 15]
    assert "steps [8]" in (tmp_path / "warnings-resume.txt").read_text()
    assert_same_run(read_run(tmp_path / "job.nc"), full)
