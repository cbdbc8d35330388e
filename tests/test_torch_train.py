"""End-to-end: train -> record -> analyze; determinism; resume after an interruption."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from bandscope.io import read_run
from bandscope.schedule import paper_schedule
from bandscope.torch.reference.train import TrainConfig, train

TINY = TrainConfig(arch="cnn", seed=3, image_size=16, epochs=4, batch_size=32, n_train=128, n_test=64,
                   panel_size=32, threads=1)


def _final_weights(out):
    return torch.load(out / "state" / "latest.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_train_record_analyze(tmp_path):
    from bandscope.cli import main
    from bandscope.keysearch.analysis import analyze

    out = tmp_path / "run"
    ds = train(TINY, out, progress=False, save_weights=True, save_recon=True)
    steps = ds["step"].values
    np.testing.assert_array_equal(steps, paper_schedule(4, 4))  # 4 steps per epoch, A.5 scaled to 4 epochs
    assert steps[0] == 0 and steps[-1] == 16
    assert int(ds.attrs["total_steps"]) == 16  # lets readers tell a finished run from one in progress
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["checkpoint_steps"] == steps.tolist()
    run = read_run(out / "run.nc")
    np.testing.assert_allclose(run["band_loss"].sum("band"), run["mse"], rtol=1e-12)
    assert np.all(run["arc_length"].values >= run["param_time"].values - 1e-9)
    assert float(run["band_loss"][-1].sum()) < float(run["band_loss"][0].sum())  # it learned
    with pytest.warns(UserWarning, match="still moved"):  # 16 steps cannot saturate: flagged
        res = analyze(run)
    assert "floor_window_drift_pct" in res and res.sizes["band"] == 5
    assert not bool(res["saturated"].all())
    with pytest.warns(UserWarning, match="still moved"):
        assert main(["analyze", str(out / "run.nc")]) == 0
    # file-based commands reproduce the recorded numbers from the saved weights / panels
    from bandscope.cli.record import bands_table, param_time_table

    pt = param_time_table(out / "state" / "weights")
    np.testing.assert_allclose(pt["param_time"], run["param_time"], rtol=1e-5)
    bt = bands_table(out / "state" / "panel.npz", out / "state" / "recon")
    np.testing.assert_allclose(bt[[f"band_{b}" for b in (1, 2, 4, 8, 16)]].values, run["band_loss"].values,
                               rtol=2e-3, atol=1e-6)  # float16 reconstructions


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    full = train(TINY, tmp_path / "a", progress=False)
    import shutil

    b = tmp_path / "b"
    train(TINY, b, progress=False, max_steps=5)  # "crash" after step 5
    shutil.copy(b / "state" / "latest.pt", tmp_path / "old.pt")
    part = train(TINY, b, progress=False, max_steps=9)  # resume, "crash" again after step 9
    assert 5 < part["step"].values[-1] <= 9 < 16
    # a crash after run.nc was rewritten but before the state was saved leaves run.nc ahead of
    # the state: put the older state back; the resume must drop the rows it cannot vouch for
    shutil.copy(tmp_path / "old.pt", b / "state" / "latest.pt")
    resumed = train(TINY, tmp_path / "b", progress=False)
    for var in ("band_loss", "param_time", "arc_length", "step", "mse"):
        np.testing.assert_array_equal(resumed[var].values, full[var].values, err_msg=var)
    wa, wb = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="different config"):
        train(TINY, tmp_path / "b", progress=False, seed=4)


def test_same_seed_same_run_other_seed_differs(tmp_path):
    cfg = TrainConfig(arch="cnn", seed=5, image_size=16, epochs=1, batch_size=32, n_train=64, n_test=32,
                      panel_size=16, threads=1)
    a = train(cfg, tmp_path / "a", progress=False)
    b = train(cfg, tmp_path / "b", progress=False)
    c = train(cfg, tmp_path / "c", progress=False, seed=6)
    xr.testing.assert_equal(a[["band_loss", "param_time"]], b[["band_loss", "param_time"]])
    assert not np.array_equal(a["band_loss"].values, c["band_loss"].values)


def test_image_folder_and_geometric_schedule(tmp_path):
    """A user's folder (A.1 preprocessing; the last n_test images are the test split) with a
    geometric checkpoint schedule."""
    from PIL import Image

    from bandscope.schedule import geometric_schedule

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, size=(140, 130, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = TrainConfig(arch="cnn", seed=1, image_size=16, epochs=3, batch_size=2, data=str(folder), n_train=0,
                      n_test=2, panel_size=2, schedule="geometric", n_points=5, threads=1)
    ds = train(cfg, tmp_path / "run", progress=False)
    np.testing.assert_array_equal(ds["step"].values, geometric_schedule(9, 5))  # 6 train images / 2 = 3 steps per epoch
    assert "last 2 test" in ds.attrs["data"]


def test_warmup_and_latent_dim(tmp_path):
    """``warmup_steps`` ramps the Adam learning rate linearly: the first step of a run with
    warm-up over W steps moves the weights by about 1/W of the plain run's first step (Adam's
    first update is lr * sign(g) per weight); ``latent_dim`` sets the bottleneck width."""
    from bandscope.torch.reference.models import build_model

    cfg = TrainConfig(arch="cnn", seed=5, image_size=16, epochs=1, batch_size=32, n_train=64, n_test=32,
                      panel_size=16, threads=1, schedule="geometric", n_points=2)
    plain = train(cfg, tmp_path / "plain", progress=False, max_steps=1)
    warm = train(cfg, tmp_path / "warm", progress=False, max_steps=1, warmup_steps=10)
    ratio = float(warm["arc_length"][-1] / plain["arc_length"][-1])
    assert 0.09 < ratio < 0.11, ratio
    cfg_json = json.loads((tmp_path / "warm" / "config.json").read_text())["config"]
    assert cfg_json["warmup_steps"] == 10 and cfg_json["latent_dim"] == 128
    small = train(cfg, tmp_path / "small", progress=False, max_steps=1, latent_dim=8)
    assert int(small.attrs["n_parameters"]) == sum(
        p.numel() for p in build_model("cnn", 16, latent_dim=8).parameters())
    assert int(small.attrs["n_parameters"]) < int(plain.attrs["n_parameters"])


def test_grad_clip_bounds_first_adam_step(tmp_path):
    """``grad_clip`` rescales the gradient to global norm <= c before Adam. Adam's first update
    is lr * g_i / (|g_i| + eps) per weight, so with c = eps every |g_i| <= eps and the step's norm
    lies in [lr c / (2 eps), lr c / eps] = [lr/2, lr]; unclipped it is about lr * sqrt(#weights).
    A clip that never binds leaves the run bitwise unchanged; a bad norm is refused."""
    cfg = TrainConfig(arch="cnn", seed=5, image_size=16, epochs=1, batch_size=32, n_train=64, n_test=32,
                      panel_size=16, threads=1, schedule="geometric", n_points=2)
    lr, eps = cfg.lr, 1e-8  # torch.optim.Adam's default eps
    plain = train(cfg, tmp_path / "plain", progress=False, max_steps=2)
    clipped = train(cfg, tmp_path / "clip", progress=False, max_steps=1, grad_clip=eps)
    first = float(clipped["arc_length"][-1])
    assert 0.5 * lr * (1 - 1e-3) <= first <= lr * (1 + 1e-3), first / lr
    assert float(plain["arc_length"][1]) > 100 * lr
    loose = train(cfg, tmp_path / "loose", progress=False, max_steps=2, grad_clip=1e30)
    np.testing.assert_array_equal(loose["band_loss"].values, plain["band_loss"].values)
    np.testing.assert_array_equal(loose["arc_length"].values, plain["arc_length"].values)
    assert json.loads((tmp_path / "clip" / "config.json").read_text())["config"]["grad_clip"] == eps
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="grad_clip"):
            train(cfg, tmp_path / "bad", progress=False, max_steps=1, grad_clip=bad)


def test_resume_accepts_config_written_before_new_fields(tmp_path):
    """A run started by an older bandscope (config.json without ``latent_dim`` / ``warmup_steps`` / ``grad_clip``)
    resumes: missing fields count as their defaults."""
    out = tmp_path / "run"
    train(TINY, out, progress=False, max_steps=5)
    path = out / "config.json"
    doc = json.loads(path.read_text())
    del doc["config"]["latent_dim"], doc["config"]["warmup_steps"], doc["config"]["grad_clip"]
    path.write_text(json.dumps(doc))
    ds = train(TINY, out, progress=False, max_steps=9)
    assert ds["step"].values[-1] > 5
    with pytest.raises(ValueError, match="different config"):
        train(TINY, out, progress=False, warmup_steps=3)


# ------------------------------------------------------------------- device and mixed precision
def _count_host_reads(monkeypatch):
    """Count tensor -> host reads (.item, .tolist, .cpu, .numpy, float()) made by bandscope's
    code (on a GPU each is a device sync). torch's own Adam reads its CPU step counter with
    ``.item()``, which is not a device sync, so callers inside torch are not counted."""
    import sys

    counter = {"n": 0}
    for name in ("item", "tolist", "cpu", "numpy", "__float__"):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):
            f = sys._getframe(1)
            while f is not None and "contextlib" in f.f_code.co_filename:  # no_grad decorators
                f = f.f_back
            if f is not None and str(f.f_globals.get("__name__", "")).startswith("bandscope."):
                counter["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return counter


def test_train_host_reads_only_at_checkpoints(tmp_path, monkeypatch):
    """No host sync per step: doubling the steps between the same number of checkpoints leaves
    the number of tensor->host reads unchanged (they happen at checkpoints only)."""
    cfg = TrainConfig(arch="cnn", seed=5, image_size=16, batch_size=32, n_train=64, n_test=32,
                      panel_size=8, schedule="geometric", n_points=3, threads=1)
    counts = []
    for epochs in (4, 8):  # 8 and 16 steps, checkpoints at 0, 1 and the last step
        counter = _count_host_reads(monkeypatch)
        ds = train(cfg, tmp_path / f"e{epochs}", progress=False, epochs=epochs)
        counts.append(counter["n"])
        monkeypatch.undo()
        assert ds.sizes["checkpoint"] == 3
    assert counts[0] == counts[1] and counts[0] > 0


def test_train_bf16_precision_and_device_cpu(tmp_path):
    cfg = TrainConfig(arch="cnn", seed=5, image_size=16, epochs=2, batch_size=32, n_train=64, n_test=32,
                      panel_size=8, schedule="geometric", n_points=4, threads=1)
    plain = train(cfg, tmp_path / "p", progress=False)
    bf = train(cfg, tmp_path / "b", progress=False, precision="bf16", device="auto" if not
               torch.cuda.is_available() else "cpu")
    assert bf.band_loss.dtype == np.float64 and np.isfinite(bf.band_loss.values).all()
    np.testing.assert_array_equal(bf.band_loss.values[0], plain.band_loss.values[0])  # same initial weights
    # bfloat16 autocast changes the path a little, not its scale
    np.testing.assert_allclose(bf.param_time.values[-1], plain.param_time.values[-1], rtol=0.2)
    assert not np.array_equal(bf.param_time.values, plain.param_time.values)
    cfg_json = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert cfg_json["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        train(cfg, tmp_path / "x", progress=False, precision="fp8")


def test_train_resume_on_another_device_is_allowed(tmp_path):
    """``device`` is where a run runs, not what it computes: resuming with another device string
    continues the run (here cpu -> auto, which is the CPU without a GPU)."""
    if torch.cuda.is_available():
        pytest.skip("auto would pick the GPU here")
    out = tmp_path / "r"
    train(TINY, out, progress=False, max_steps=5)
    resumed = train(TINY, out, progress=False, device="auto")
    full = train(TINY, tmp_path / "full", progress=False)
    np.testing.assert_array_equal(resumed.band_loss.values, full.band_loss.values)


def test_train_cuda_without_gpu_raises_with_the_fix(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="--device cpu"):
        train(TINY, tmp_path / "c", progress=False, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_on_cuda(tmp_path):
    ds = train(TINY, tmp_path / "g", progress=False, device="cuda", precision="bf16")
    cpu = train(TINY, tmp_path / "c", progress=False)
    np.testing.assert_allclose(ds.band_loss.values[0], cpu.band_loss.values[0], rtol=1e-4)
    assert (np.diff(ds.param_time.values) > 0).all()


def test_train_cli_device_and_precision(tmp_path, capsys):
    from bandscope.cli import main

    out = tmp_path / "cli"
    code = main(["train", "--out", str(out), "--size", "16", "--epochs", "1", "--n-train", "64", "--n-test", "32",
                 "--batch-size", "32", "--panel-size", "8", "--no-progress", "--threads", "1",
                 "--device", "cpu", "--precision", "bf16"])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["device"] == "cpu" and cfg["precision"] == "bf16"
    with pytest.raises(SystemExit):
        main(["train", "--out", str(out), "--precision", "fp16"])
    if not torch.cuda.is_available():
        code = main(["train", "--out", str(tmp_path / "g"), "--size", "16", "--epochs", "1", "--n-train", "64",
                     "--n-test", "32", "--batch-size", "32", "--panel-size", "8", "--no-progress", "--device", "cuda"])
        assert code == 2 and "--device cpu" in capsys.readouterr().err
