"""LNPHook: schedule, equality with a plain loop of measure_lnp, training unaffected, run-file merge."""
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from bandscope.torch import LNPHook, measure_lnp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True),
                          nn.ConvTranspose2d(2, 1, 3, padding=1), nn.Sigmoid())
    g = torch.Generator().manual_seed(1)
    data = [torch.rand(4, 1, 4, 4, generator=g) for _ in range(16)]
    val = torch.rand(3, 1, 4, 4, generator=g)
    return model, data, (val, val)


def _train(model, data, hook=None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(123)
    for t, x in enumerate(data):
        if hook is not None:
            hook(t, (x, x))
        opt.zero_grad()
        loss = nn.functional.mse_loss(nn.functional.dropout(model(x), 0.1), x)  # uses the global RNG
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_hook_equals_loop_and_leaves_training_unchanged():
    model, data, val = _setup()
    ref_params = _train(model, data)

    model, data, val = _setup()
    hook = LNPHook(model, nn.MSELoss(), total_steps=len(data), n_windows=3, steps_per_window=2,
                   eval_batch=val, bands=True, seed=5)
    params = _train(model, data, hook)
    for p, q in zip(params, ref_params):
        assert torch.equal(p, q)  # bitwise: the measurements changed nothing
    ds = hook.dataset()
    assert ds.lnp_step.values.tolist() == hook.steps.tolist()
    assert ds.lnp_window.values.tolist() == hook.windows.tolist()
    assert ds.lnp_band_grad_dot.dims == ("lnp_step", "lnp_band")
    np.testing.assert_allclose(ds.lnp_band_grad_dot.sum("lnp_band"), ds.lnp_grad_norm_sq, rtol=1e-5)

    # the same numbers from a plain loop of measure_lnp at the same parameters and seeds
    model, data, val = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(123)
    for t, x in enumerate(data):
        if t in hook.steps:
            m = measure_lnp(model, nn.MSELoss(), (x, x), val, bands=True, seed=5 + t)
            for v in ["spectral_position", "spectral_position_cross", "network_scale", "grad_dot"]:
                assert float(ds[f"lnp_{v}"].sel(lnp_step=t)) == float(m[v])
        opt.zero_grad()
        nn.functional.mse_loss(nn.functional.dropout(model(x), 0.1), x).backward()
        opt.step()


def test_hook_writes_own_file_and_merges_into_run(tmp_path):
    model, data, val = _setup()
    hook = LNPHook(model, nn.MSELoss(), schedule=[0, 2, 5], eval_batch=lambda step: val,
                   path=tmp_path / "lnp.nc")
    for t, x in enumerate(data[:6]):
        hook(t, (x, x))
    path = hook.write()
    back = xr.open_dataset(path)
    assert back.lnp_step.values.tolist() == [0, 2, 5]
    assert np.isfinite(back.lnp_spectral_position).all()
    assert back.attrs["lnp_estimator"] == "hutchinson"

    recorder_mod = pytest.importorskip("bandscope.torch.recorder")
    rec = recorder_mod.RunRecorder(tmp_path / "run.nc", name="demo")
    rec.record(step=0, band_loss=[0.02, 0.01, 0.005], param_time=0.0)
    rec.record(step=5, band_loss=[0.01, 0.01, 0.004], param_time=1.0)
    hook.recorder = rec
    merged = xr.open_dataset(hook.write())
    assert merged.sizes["checkpoint"] == 2 and merged.sizes["lnp_step"] == 3
    from bandscope.run import validate_run

    validate_run(merged)  # still a valid run Dataset
    merged.close()
    # a later checkpoint rewrites the run file: the LNP statistics must survive it
    rec.record(step=9, band_loss=[0.009, 0.009, 0.004], param_time=1.5)
    with xr.open_dataset(rec.path) as again:
        assert again.sizes["checkpoint"] == 3 and again.sizes["lnp_step"] == 3
        np.testing.assert_array_equal(again.lnp_spectral_position.values, back.lnp_spectral_position.values)


def test_hook_rejects_bad_schedule():
    model, _, _ = _setup()
    with pytest.raises(ValueError, match="total_steps"):
        LNPHook(model, nn.MSELoss())
    hook = LNPHook(model, nn.MSELoss(), schedule=[1, 2])
    x = torch.rand(2, 1, 4, 4)
    hook(2, (x, x))
    with pytest.raises(ValueError, match="not after"):
        hook(1, (x, x))
