"""measure_lnp / LNPHook under torch.distributed: two gloo processes, each with half the batch,
give the statistics of one process on the concatenated batch, for a plain, a DDP-wrapped and an
FSDP2-sharded (``fully_shard``) model; with Haar bands; on a GPT-style LM sharded per block."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bandscope.torch import LNPHook, measure_lnp
from bandscope.torch.reference.lm import LMConfig, TinyGPT
from gloo_workers import run_gloo

VARS = ["loss", "loss_scale", "network_scale", "grad_norm_sq", "spectral_position", "loss_scale_norm",
        "network_scale_norm", "loss_scale_b", "network_scale_b", "grad_dot", "spectral_position_cross"]
BAND_VARS = ["band_grad_dot", "band_grad_norm_sq", "band_loss_scale", "band_spectral_position"]
LM_VARS = ["loss", "loss_scale", "network_scale", "grad_norm_sq", "spectral_position", "grad_dot",
           "spectral_position_cross"]
WRAPS = ["none", "ddp", "fsdp2"]


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _conv_ae():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 1, 3, padding=1)).double()


def _gpt():
    torch.manual_seed(2)
    return TinyGPT(LMConfig(vocab_size=8, context=4, d_model=8, n_layers=2, n_heads=2, d_ff=16)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    a = (torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64))
    b = (torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64))
    return a, b


def _images():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return x, x.flip(-1)


def _tokens():
    g = torch.Generator().manual_seed(4)
    a = torch.randint(0, 8, (4, 5), generator=g)
    b = torch.randint(0, 8, (2, 5), generator=g)
    return (a[:, :-1], a[:, 1:]), (b[:, :-1], b[:, 1:])


def _lm_loss(out, y):
    """Token cross-entropy as a plain function (M cannot be inferred: raw statistics only)."""
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


def _half(batch, rank, world):
    return tuple(t.chunk(world)[rank] for t in batch)


def _wrap(model, wrap):
    if wrap == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    if wrap == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        with_params = [m for m in model.children() if next(m.parameters(), None) is not None]
        subs = model.blocks if isinstance(model, TinyGPT) else with_params
        for m in subs:
            fully_shard(m)
        fully_shard(model)
    return model


def _local(model):
    """This rank's parameter values and gradients (the local shards under FSDP2)."""
    def loc(t):
        return None if t is None else (t.to_local() if hasattr(t, "to_local") else t).detach().clone()
    return [(loc(p), loc(p.grad)) for p in model.parameters()]


def _body(rank, world, out_dir, wrap):
    res = {}
    # -- MLP: every statistic, self and cross, through measure_lnp and LNPHook
    model = _wrap(_mlp(), wrap)
    a, b = _data()
    sa, sb = _half(a, rank, world), _half(b, rank, world)
    ds = measure_lnp(model, nn.MSELoss(), sa, sb, network_scale="exact")
    res.update({v: float(ds[v]) for v in VARS}, world_size=int(ds.attrs["world_size"]))
    hook = LNPHook(model, nn.MSELoss(), schedule=[0], eval_batch=sb, network_scale="exact")
    hook(0, sa)
    res["hook_P"] = float(hook.dataset().lnp_spectral_position[0])

    # -- the model is left as found and trains on exactly as without the measurement
    def step():
        model.zero_grad(set_to_none=True)
        F.mse_loss(model(sa[0]), sa[1]).backward()
        return _local(model)

    before = step()
    measure_lnp(model, nn.MSELoss(), sa, sb, network_scale="hutchinson", seed=0)
    after_measure = _local(model)
    again = step()
    res["unchanged"] = all(torch.equal(p, q) and (g is None and h is None or torch.equal(g, h))
                           for (p, g), (q, h) in zip(before, after_measure))
    res["same_step"] = all(torch.equal(g, h) for (_, g), (_, h) in zip(before, again))
    res["param_types"] = sorted({type(p).__name__ for p in model.parameters()})

    # -- Haar bands of a conv autoencoder
    ae = _wrap(_conv_ae(), wrap)
    dsb = measure_lnp(ae, nn.MSELoss(), _half(_images(), rank, world), network_scale="exact", bands=True)
    res.update({v: dsb[v].values.tolist() for v in BAND_VARS}, band_grad_norm_sq_total=float(dsb.grad_norm_sq))

    # -- a GPT-style LM (tied nothing, SDPA, positional embedding), cross-entropy as a plain function
    lm = _wrap(_gpt(), wrap)
    ta, tb = _tokens()
    dsl = measure_lnp(lm, _lm_loss, _half(ta, rank, world), _half(tb, rank, world), network_scale="exact")
    res.update({f"lm_{v}": float(dsl[v]) for v in LM_VARS})
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(res, f)


@pytest.mark.parametrize("wrap", WRAPS)
def test_two_gloo_processes_equal_one_process_on_the_whole_batch(tmp_path, wrap):
    if wrap == "fsdp2":
        pytest.importorskip("torch.distributed.fsdp", reason="FSDP2")
        from torch.distributed import fsdp

        if not hasattr(fsdp, "fully_shard"):
            pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (FSDP2, torch >= 2.6)")
    run_gloo(_body, 2, str(tmp_path), wrap)
    a, b = _data()
    ref = measure_lnp(_mlp(), nn.MSELoss(), a, b, network_scale="exact")
    refb = measure_lnp(_conv_ae(), nn.MSELoss(), _images(), network_scale="exact", bands=True)
    ta, tb = _tokens()
    refl = measure_lnp(_gpt(), _lm_loss, ta, tb, network_scale="exact")
    for rank in range(2):
        res = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert res["world_size"] == 2
        for v in VARS:
            np.testing.assert_allclose(res[v], float(ref[v]), rtol=1e-10, err_msg=v)
        np.testing.assert_allclose(res["hook_P"], float(ref.spectral_position), rtol=1e-10)
        assert res["unchanged"], "measure_lnp changed the parameters or gradients"
        assert res["same_step"], "a training step after measure_lnp differs from one before it"
        assert res["param_types"] == (["DTensor"] if wrap == "fsdp2" else ["Parameter"])
        for v in BAND_VARS:
            np.testing.assert_allclose(res[v], refb[v].values, rtol=1e-9, err_msg=v)
        np.testing.assert_allclose(sum(res["band_grad_dot"]), res["band_grad_norm_sq_total"], rtol=1e-9)
        for v in LM_VARS:
            np.testing.assert_allclose(res[f"lm_{v}"], float(refl[v]), rtol=1e-9, err_msg=f"LM {v}")


def test_single_process_is_unchanged():
    a, _ = _data()
    ds = measure_lnp(_mlp(), nn.MSELoss(), a, network_scale="exact", distributed=False)
    assert ds.attrs["world_size"] == 1
    with pytest.raises(ValueError, match="not initialised"):
        measure_lnp(_mlp(), nn.MSELoss(), a, network_scale="exact", distributed=True)


def _fsdp1_body(rank, world, out_dir):
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = FullyShardedDataParallel(_mlp(), device_id=torch.device("cpu"))
    a, _ = _data()
    try:
        measure_lnp(model, nn.MSELoss(), _half(a, rank, world), network_scale="exact")
        msg = "no error"
    except NotImplementedError as exc:
        msg = str(exc)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(msg)


def test_fsdp1_is_refused_naming_the_supported_wrappers(tmp_path):
    run_gloo(_fsdp1_body, 2, str(tmp_path))
    for rank in range(2):
        msg = (tmp_path / f"rank{rank}.txt").read_text()
        assert "FSDP1" in msg and "fully_shard" in msg and "DistributedDataParallel" in msg, msg
