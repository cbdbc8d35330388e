"""Statistics of the global batch when each ``torch.distributed`` rank holds a shard of it.

Convention (what DDP descends): the global loss is the mean of the ranks' losses,
L = (1/R) Σ_r L_r, so ∂L/∂f = g_r / R on rank r's samples and ∇L = (1/R) Σ_r ∇L_r (DDP's
averaged gradient). Then

    ℒ = Σ_r ||g_r||² / R²      𝒩 = Σ_r 𝒩_r      ||∇L||² = ||(1/R) Σ_r ∇L_r||²      M = Σ_r M_r

With equal shards and a mean-reduced loss this is exactly the single-process measurement on the
concatenated batch. Only sums of per-rank numbers and one all-reduce of the gradient are needed.
"""
from __future__ import annotations

import math

import torch

__all__ = ["active_world", "unwrap", "reduce_stats"]


def active_world(distributed, group=None) -> int:
    """World size to reduce over (1 = no reduction). ``distributed=None``: automatic."""
    if distributed is False:
        return 1
    import torch.distributed as dist

    ok = dist.is_available() and dist.is_initialized()
    if distributed and not ok:
        raise ValueError("distributed=True but torch.distributed is not initialised "
                         "(call torch.distributed.init_process_group first)")
    return dist.get_world_size(group) if ok else 1


def unwrap(model):
    """The module inside a DistributedDataParallel wrapper (measured directly; we reduce ourselves)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        raise NotImplementedError("parameters sharded with FSDP2 (DTensor) are not supported by measure_lnp yet; "
                                  "measure an unsharded copy of the model on one rank, or use DDP")
    return model


def _all_sum(values: list[float], group) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t.tolist()


def reduce_stats(s: dict, world: int, group=None) -> dict:
    """Per-rank statistics of one batch → statistics of the global batch (module docstring)."""
    import torch.distributed as dist

    if "band_grad_dot" in s:
        raise NotImplementedError("bands=True under torch.distributed is not supported yet; measure bands "
                                  "on one rank")
    probes = s["network_scale_probes"]
    n_p = 0 if probes is None else len(probes)
    se2 = s["network_scale_se"] ** 2
    vals = [s["loss"], s["loss_scale"], s["network_scale"], se2, s["n_units"], float(s["n_samples"])]
    vals += list(probes or [])
    tot = _all_sum(vals, group)
    grads = []
    for gr in s["grad"]:
        gr = gr.clone()
        dist.all_reduce(gr, op=dist.ReduceOp.SUM, group=group)
        grads.append(gr / world)
    out = dict(s)
    out.update(loss=tot[0] / world, loss_scale=tot[1] / world**2, network_scale=tot[2],
               network_scale_se=math.sqrt(tot[3]) if math.isfinite(tot[3]) else math.nan,
               n_units=tot[4], n_samples=int(tot[5]), grad=grads,
               grad_norm_sq=sum(float(torch.dot(g.reshape(-1), g.reshape(-1))) for g in grads),
               network_scale_probes=tot[6:6 + n_p] if n_p else probes, world_size=world)
    return out
