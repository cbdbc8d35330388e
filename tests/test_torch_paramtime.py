"""ParamTimeTracker: exact arc length against hand-computed sequences, chords, sharded all-reduce."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bandscope.torch.paramtime import ParamTimeTracker

# numeric: runs again in the rounding lane (`make test-rounding`, AVX-512 kernels off)
pytestmark = pytest.mark.numeric


def _walk(tracker, params, deltas, checkpoint_at=()):
    """Apply parameter deltas step by step; return (param_time, arc) at each checkpoint."""
    out = [tracker.checkpoint()]
    for t, d in enumerate(deltas, start=1):
        with torch.no_grad():
            for p, dp in zip(params, d):
                p += dp
        tracker.step()
        if t in checkpoint_at:
            out.append(tracker.checkpoint())
    return out


def test_arc_and_chord_hand_computed():
    # theta: (0,0) -> (3,4) -> (3,0) -> (0,0) ; steps 5, 4, 3 ; chord 0->end = 0
    w = torch.nn.Parameter(torch.zeros(2))
    tr = ParamTimeTracker([w])
    deltas = [[torch.tensor([3.0, 4.0])], [torch.tensor([0.0, -4.0])], [torch.tensor([-3.0, 0.0])]]
    res = _walk(tr, [w], deltas, checkpoint_at={1, 3})
    assert res[0] == (0.0, 0.0)
    assert res[1] == pytest.approx((5.0, 5.0), abs=1e-6)
    # chord from (3,4) back to (0,0) is 5; arc is 5 + 4 + 3
    assert res[2] == pytest.approx((10.0, 12.0), abs=1e-6)


def test_multiple_tensors_joint_norm():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2, 2))
    tr = ParamTimeTracker([a, b])
    tr.checkpoint()
    with torch.no_grad():
        a += torch.tensor([1.0, 2.0, 2.0])  # ||.||^2 = 9
        b += 4.0  # ||.||^2 = 64
    tr.step()
    assert tr.checkpoint() == pytest.approx((np.sqrt(73.0),) * 2, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.floats(-3, 3), min_size=5, max_size=5), min_size=1, max_size=12),
       st.integers(1, 4))
def test_arc_matches_numpy_loop(steps, every):
    """Arc = sum of per-step norms, chord sum over checkpoints every `every` steps (float64 oracle)."""
    w1 = torch.nn.Parameter(torch.zeros(3))
    w2 = torch.nn.Parameter(torch.zeros(2))
    tr = ParamTimeTracker(torch.nn.ParameterList([w1, w2]))
    path = [np.zeros(5)]
    ck = set(range(every, len(steps) + 1, every))
    deltas = [[torch.tensor(s[:3], dtype=torch.float32), torch.tensor(s[3:], dtype=torch.float32)] for s in steps]
    res = _walk(tr, [w1, w2], deltas, checkpoint_at=ck)
    for d in deltas:
        path.append(path[-1] + np.concatenate([d[0].double().numpy(), d[1].double().numpy()]))
    path = np.array(path)
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    ks = [0] + sorted(ck)
    chord = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(path[ks], axis=0), axis=1))])
    got = np.array(res)
    np.testing.assert_allclose(got[:, 1], arc[ks], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 0], chord, rtol=1e-5, atol=1e-5)
    assert np.all(got[:, 0] <= got[:, 1] + 1e-5)  # chords never exceed the arc


def test_attach_optimizer_hook_and_frozen_params():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)  # frozen: not counted
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    tr = ParamTimeTracker(model).attach(opt)
    assert len(tr.params) == 3
    before = [p.detach().clone() for p in tr.params]
    tr.checkpoint()
    loss = model(torch.randn(8, 4)).square().mean()
    loss.backward()
    opt.step()
    assert tr.steps == 1
    expect = float(torch.sqrt(sum((p.detach() - b).double().square().sum() for p, b in zip(tr.params, before))))
    assert tr.checkpoint() == pytest.approx((expect, expect), rel=1e-6)
    tr.detach()
    opt.step()
    assert tr.steps == 1


def test_state_dict_resume_continues_sums():
    w = torch.nn.Parameter(torch.zeros(2))
    tr = ParamTimeTracker([w])
    _walk(tr, [w], [[torch.tensor([3.0, 4.0])]], checkpoint_at={1})
    state = tr.state_dict()
    tr2 = ParamTimeTracker([w])  # e.g. a new process after reloading the weights
    tr2.load_state_dict(state)
    res = _walk(tr2, [w], [[torch.tensor([0.0, -4.0])]], checkpoint_at={1})
    assert res[-1] == pytest.approx((9.0, 9.0), abs=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no parameters"):
        ParamTimeTracker([])
    with pytest.raises(ValueError, match="mode"):
        ParamTimeTracker([torch.zeros(1)], mode="bogus")


# ----------------------------------------------------------------------------- distributed
def _body(rank, world, deltas_full, result_path):
    for mode in ("sharded", "replicated"):
        _walk_mode(rank, mode, deltas_full, result_path)
    _ddp_run(rank, result_path)
    _fsdp_run(rank, result_path)


def _walk_mode(rank, mode, deltas_full, result_path):
    full = torch.zeros(10)
    if mode == "sharded":  # uneven shards: rank 0 holds 6 values, rank 1 holds 4
        sl = slice(0, 6) if rank == 0 else slice(6, 10)
    else:  # replicated (DDP): every rank holds everything
        sl = slice(0, 10)
    p = torch.nn.Parameter(full[sl].clone())
    tr = ParamTimeTracker([p], mode=mode)
    out = [tr.checkpoint()]
    for t, d in enumerate(deltas_full, start=1):
        with torch.no_grad():
            p += torch.tensor(d, dtype=torch.float32)[sl]
        tr.step()
        if t % 2 == 0:
            out.append(tr.checkpoint())
    np.save(result_path.format(rank=rank, mode=mode), np.array(out))


def _ddp_run(rank, result_path):
    """A real DistributedDataParallel model, different data per rank: the tracker (default mode)
    must give the same numbers on every rank, equal to the float64 path of the weights."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)  # same init on both ranks (DDP also broadcasts rank 0's)
    model = DDP(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    tr = ParamTimeTracker(model).attach(opt)
    assert tr.mode == "replicated"
    flat = lambda: torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])  # noqa: E731
    path, out = [flat()], [tr.checkpoint()]
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees its own batch
    for t in range(1, 5):
        opt.zero_grad()
        model(torch.randn(8, 4, generator=g)).square().mean().backward()  # gradients all-reduced
        opt.step()
        path.append(flat())
        if t % 2 == 0:
            out.append(tr.checkpoint())
    path = torch.stack(path).numpy()
    np.save(result_path.format(rank=rank, mode="ddp"), np.array(out))
    np.save(result_path.format(rank=rank, mode="ddp_path"), path)


def _fsdp_run(rank, result_path):
    """FSDP2 (``fully_shard``, DTensor parameters, uneven shards) on CPU: mode "auto" must pick
    "sharded" and all-reduce; compared with the float64 path of the gathered full weights."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    fully_shard(model, mesh=init_device_mesh("cpu", (2,)))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    tr = ParamTimeTracker(model).attach(opt)
    assert tr.mode == "sharded"
    full = lambda: torch.cat([p.full_tensor().detach().double().reshape(-1) for p in model.parameters()])  # noqa: E731
    path, out = [full()], [tr.checkpoint()]
    g = torch.Generator().manual_seed(200 + rank)
    for t in range(1, 5):
        opt.zero_grad()
        model(torch.randn(8, 5, generator=g)).square().mean().backward()
        opt.step()
        path.append(full())
        if t % 2 == 0:
            out.append(tr.checkpoint())
    np.save(result_path.format(rank=rank, mode="fsdp"), np.array(out))
    np.save(result_path.format(rank=rank, mode="fsdp_path"), torch.stack(path).numpy())


@pytest.mark.slow
def test_two_process_gloo(tmp_path):
    """Sharded: squared distances summed over shards by all-reduce; replicated: counted once.
    Both must equal the single-process value on the full parameter vector. Then the same with
    a real DDP model and a real FSDP2 (fully_shard) model on CPU."""
    from gloo_workers import run_gloo

    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(4, 10)).astype(np.float32).tolist()
    result = str(tmp_path / "{mode}{rank}.npy")
    run_gloo(_body, 2, deltas, result)
    path = np.concatenate([np.zeros((1, 10)), np.cumsum(np.array(deltas, dtype=np.float64), axis=0)])
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])[[0, 2, 4]]
    chord = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(path[[0, 2, 4]], axis=0), axis=1))])
    for mode in ("sharded", "replicated"):
        for rank in range(2):
            got = np.load(result.format(rank=rank, mode=mode))
            np.testing.assert_allclose(got[:, 0], chord, rtol=1e-5, err_msg=f"{mode} rank {rank}")
            np.testing.assert_allclose(got[:, 1], arc, rtol=1e-5, err_msg=f"{mode} rank {rank}")
    # DDP: both ranks agree and match the float64 oracle of their (identical) weight paths
    ddp = [np.load(result.format(rank=r, mode="ddp")) for r in range(2)]
    paths = [np.load(result.format(rank=r, mode="ddp_path")) for r in range(2)]
    np.testing.assert_allclose(paths[0], paths[1], rtol=1e-6)  # replicated parameters
    np.testing.assert_allclose(ddp[0], ddp[1], rtol=1e-6)
    steps = np.linalg.norm(np.diff(paths[0], axis=0), axis=1)
    d_arc = np.concatenate([[0], np.cumsum(steps)])[[0, 2, 4]]
    d_chord = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(paths[0][[0, 2, 4]], axis=0), axis=1))])
    np.testing.assert_allclose(ddp[0][:, 1], d_arc, rtol=1e-5)
    np.testing.assert_allclose(ddp[0][:, 0], d_chord, rtol=1e-5)
    assert d_arc[-1] > 0
    # FSDP2: every rank reports the full-model numbers although it holds only its shard
    fp = np.load(result.format(rank=0, mode="fsdp_path"))
    f_arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(fp, axis=0), axis=1))])[[0, 2, 4]]
    f_chord = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(fp[[0, 2, 4]], axis=0), axis=1))])
    for rank in range(2):
        got = np.load(result.format(rank=rank, mode="fsdp"))
        np.testing.assert_allclose(got[:, 1], f_arc, rtol=1e-5, err_msg=f"fsdp rank {rank}")
        np.testing.assert_allclose(got[:, 0], f_chord, rtol=1e-5, err_msg=f"fsdp rank {rank}")
