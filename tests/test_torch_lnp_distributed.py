"""measure_lnp / LNPHook under torch.distributed: two gloo processes, each with half the batch,
give the statistics of one process on the concatenated batch (DDP-wrapped or not)."""
import json
import os
import socket
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bandscope.torch import LNPHook, measure_lnp

VARS = ["loss", "loss_scale", "network_scale", "grad_norm_sq", "spectral_position", "loss_scale_norm",
        "network_scale_norm", "loss_scale_b", "network_scale_b", "grad_dot", "spectral_position_cross"]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    a = (torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64))
    b = (torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64))
    return a, b


def _shard(batch, rank, world):
    return tuple(t.chunk(world)[rank] for t in batch)


def _worker(rank, world, port, out_dir, wrap):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ok = False
    try:
        model = _model()
        if wrap:
            model = nn.parallel.DistributedDataParallel(model)
        a, b = _data()
        sa, sb = _shard(a, rank, world), _shard(b, rank, world)
        ds = measure_lnp(model, nn.MSELoss(), sa, sb, network_scale="exact")
        hook = LNPHook(model, nn.MSELoss(), schedule=[0], eval_batch=sb, network_scale="exact")
        hook(0, sa)
        hd = hook.dataset()
        res = {v: float(ds[v]) for v in VARS}
        res["hook_P"] = float(hd.lnp_spectral_position[0])
        res["world_size"] = int(ds.attrs["world_size"])
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(res, f)
        ok = True
    finally:
        dist.destroy_process_group()
    # Leave without interpreter teardown: torch's gloo/device-mesh threads can abort it at exit
    # ("terminate called without an active exception", SIGABRT; seen in CI) after every
    # result is written and the group destroyed. Failures above still raise normally.
    if ok:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("wrap", [False, True])
def test_two_gloo_processes_equal_one_process_on_the_whole_batch(tmp_path, wrap):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), wrap), nprocs=2, join=True)
    a, b = _data()
    ref = measure_lnp(_model(), nn.MSELoss(), a, b, network_scale="exact")
    for rank in range(2):
        res = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert res["world_size"] == 2
        for v in VARS:
            np.testing.assert_allclose(res[v], float(ref[v]), rtol=1e-10, err_msg=v)
        np.testing.assert_allclose(res["hook_P"], float(ref.spectral_position), rtol=1e-10)


def test_single_process_is_unchanged():
    a, _ = _data()
    ds = measure_lnp(_model(), nn.MSELoss(), a, network_scale="exact", distributed=False)
    assert ds.attrs["world_size"] == 1
    with pytest.raises(ValueError, match="not initialised"):
        measure_lnp(_model(), nn.MSELoss(), a, network_scale="exact", distributed=True)
