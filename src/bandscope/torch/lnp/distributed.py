"""Statistics of the global batch when each ``torch.distributed`` rank holds a shard of it.

Convention (what DDP and FSDP2 descend): the global loss is the mean of the ranks' losses,
L = (1/R) Σ_r L_r, so ∂L/∂f = g_r / R on rank r's samples and ∇L = (1/R) Σ_r ∇L_r (the averaged
gradient both all-reduce or reduce-scatter). Then

    ℒ = Σ_r ||g_r||² / R²      𝒩 = Σ_r 𝒩_r      ||∇L||² = ||(1/R) Σ_r ∇L_r||²      M = Σ_r M_r

and, for the Haar bands (g_i the band-i projection of ∂L/∂f, ∇L_i = Jᵀg_i),

    ||g_i||² = Σ_r ||g_{i,r}||² / R²      ∇L_i = (1/R) Σ_r ∇L_{i,r}

from which ∇L_i·∇L and ||∇L_i||² are formed. With equal shards and a mean-reduced loss this is
exactly the single-process measurement on the concatenated batch. Only sums of per-rank numbers
and all-reduces of gradients are needed.

Models: a ``DistributedDataParallel`` model is measured through its ``.module``. A model sharded
with FSDP2 (``torch.distributed.fsdp.fully_shard``) is measured with its parameters all-gathered
(:func:`gathered`): every rank holds one full copy of the parameters (in FSDP's ``param_dtype``)
for the duration of the measurement, and its gradient; the sharded parameters and their ``.grad``
are not touched.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .results import BatchStatistics

__all__ = ["active_world", "gathered", "probe_seed", "unwrap", "reduce_stats"]


def active_world(distributed: bool | None, group: Any = None) -> int:
    """World size to reduce over (1 = no reduction). ``distributed=None``: automatic."""
    if distributed is False:
        return 1
    import torch.distributed as dist

    ok = dist.is_available() and dist.is_initialized()
    if distributed and not ok:
        raise ValueError("distributed=True but torch.distributed is not initialised "
                         "(call torch.distributed.init_process_group first)")
    return dist.get_world_size(group) if ok else 1


def probe_seed(seed: int | torch.Generator | None, world: int, group: Any = None) -> int | torch.Generator | None:
    """The probe seed of this rank: an int ``seed`` mixed with the rank when ``world > 1``.

    Ranks hold different samples; drawing their probes from one seed would correlate the
    Hutchinson errors across ranks and make the summed standard error too small.
    """
    if world <= 1 or seed is None or isinstance(seed, torch.Generator):
        return seed
    import numpy as np
    import torch.distributed as dist

    return int(np.random.SeedSequence([int(seed), int(dist.get_rank(group))]).generate_state(1, np.uint64)[0] >> 2)


def _is_dtensor(p: object) -> bool:
    return type(p).__name__ == "DTensor"


def _fsdp2_module_type() -> type | None:
    """``FSDPModule`` of this torch (``torch.distributed.fsdp`` from 2.6, ``_composable.fsdp`` before)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        try:
            from torch.distributed._composable.fsdp import FSDPModule
        except ImportError:
            return None
    return FSDPModule


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper; refuses FSDP1 (flat parameters)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module
    if any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()):
        raise NotImplementedError(
            "FullyShardedDataParallel (FSDP1, flattened parameters) is not supported by measure_lnp; shard the "
            "model with FSDP2 (torch.distributed.fsdp.fully_shard), which is, or wrap it with "
            "DistributedDataParallel")
    return model


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` ready to measure as a plain module; FSDP2 parameters all-gathered for the duration.

    Without FSDP2 this yields :func:`unwrap` (model). With FSDP2 every ``FSDPModule`` in the
    model is unsharded (``FSDPModule.unshard``: one all-gather per module, in module order, so
    every rank must call this, as it must call ``measure_lnp``), and its FSDP state is put in the
    state FSDP uses to recompute a forward during backward (activation checkpointing): the
    forward hooks then only apply the mixed-precision casts, with no collective, no resharding
    and no gradient reduction, so the measurement's several forward and backward passes see a
    plain module whose parameters are the all-gathered leaves. On exit the states are restored
    and the modules that were sharded before are resharded.

    FSDP2 exposes no public switch for this; the state is FSDP's ``_training_state`` and a test
    on two gloo processes (``tests/test_torch_lnp_distributed.py``) checks it against one process
    on the whole batch for each torch version CI installs.
    """
    model = unwrap(model)
    fsdp_type = _fsdp2_module_type()
    mods: list[Any] = [m for m in model.modules() if fsdp_type is not None and isinstance(m, fsdp_type)]
    if not mods:
        bad = [n for n, p in model.named_parameters() if _is_dtensor(p)]
        if bad:
            raise NotImplementedError(
                f"parameters {bad[:3]} are DTensors not managed by FSDP2 (e.g. tensor parallel); measure_lnp "
                "supports fully_shard (FSDP2) and DistributedDataParallel models")
        yield model
        return
    TrainingState = _training_state_type()
    states = [m._get_fsdp_state() for m in mods]
    was_unsharded = [all(g.is_unsharded for g in st._fsdp_param_groups) for st in states]
    for m in mods:
        m.unshard()
    left = [n for n, p in model.named_parameters() if _is_dtensor(p)]
    saved = [st._training_state for st in states]
    try:
        if left:
            raise NotImplementedError(
                f"parameters {left[:3]} are still DTensors after FSDPModule.unshard() (not managed by fully_shard, "
                "e.g. tensor parallel); measure_lnp supports fully_shard (FSDP2) and DDP models")
        for st in states:
            st._training_state = TrainingState.PRE_BACKWARD
        yield model
    finally:
        for st, s in zip(states, saved):
            st._training_state = s
        for m, before in zip(mods, was_unsharded):
            if not before:
                m.reshard()


def _training_state_type() -> Any:
    """FSDP2's ``TrainingState`` enum (``torch.distributed.fsdp._fully_shard`` from 2.6, ``_composable.fsdp``
    before)."""
    try:
        return importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_common").TrainingState
    except ImportError:  # torch < 2.6
        return importlib.import_module("torch.distributed._composable.fsdp._fsdp_common").TrainingState


def _all_sum(values: list[float], group: Any) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t.tolist()


def _mean_grads(grads: Sequence[torch.Tensor], world: int, group: Any) -> list[torch.Tensor]:
    import torch.distributed as dist

    out = []
    for gr in grads:
        gr = gr.clone()
        dist.all_reduce(gr, op=dist.ReduceOp.SUM, group=group)
        out.append(gr / world)
    return out


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return sum(float(torch.dot(x.reshape(-1), y.reshape(-1))) for x, y in zip(a, b))


def reduce_stats(s: BatchStatistics, world: int, group: Any = None) -> BatchStatistics:
    """Per-rank statistics of one batch → statistics of the global batch (module docstring)."""
    probes = s.network_scale_probes
    n_p = 0 if probes is None else len(probes)
    se2 = s.network_scale_se ** 2
    vals = [s.loss, s.loss_scale, s.network_scale, se2, s.n_units, float(s.n_samples)]
    vals += list(probes or [])
    band_ls = s.band_loss_scale or []
    n_bands = len(band_ls)
    vals += list(band_ls)
    tot = _all_sum(vals, group)
    grads = _mean_grads(s.grad, world, group)
    out = dataclasses.replace(
        s, loss=tot[0] / world, loss_scale=tot[1] / world**2, network_scale=tot[2],
        network_scale_se=math.sqrt(tot[3]) if math.isfinite(tot[3]) else math.nan,
        n_units=tot[4], n_samples=int(tot[5]), grad=grads, grad_norm_sq=_dot(grads, grads),
        network_scale_probes=tot[6:6 + n_p] if n_p else probes, world_size=world,
        network_scale_se_dof=math.nan)  # per-rank terms are not gathered
    if n_bands:
        band_grads = [_mean_grads(bg, world, group) for bg in (s.band_grads or [])]
        out = dataclasses.replace(
            out, band_grads=None, band_loss_scale=[v / world**2 for v in tot[6 + n_p:]],
            band_grad_dot=[_dot(bg, grads) for bg in band_grads],
            band_grad_norm_sq=[_dot(bg, bg) for bg in band_grads])
    return out
