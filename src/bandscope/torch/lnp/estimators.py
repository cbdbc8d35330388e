"""Estimators of the network scale 𝒩 = Tr K = Σ_n ||J_n||_F², one function each, in a table.

Each estimator takes a :class:`Context` (the measured forward, the taps, the probe generator)
and returns :class:`NetworkScale`. A new estimator (e.g. Hutch++) is one function added to
:data:`ESTIMATOR_TABLE`; the arithmetic on its result is in :mod:`bandscope.lnp`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from bandscope.lnp import hutchinson_standard_error

if TYPE_CHECKING:
    from .taps import LayerTaps

__all__ = ["Context", "NetworkScale", "ESTIMATOR_TABLE", "rademacher", "vmap_per_sample", "default_probes",
           "welch_dof", "MIN_SE_DOF"]


@dataclasses.dataclass
class Context:
    """What an estimator reads: the measured forward (``out`` of ``model`` on ``x``), the layer taps
    (None on the vmap backend), the probe generator and the options that shape the estimate."""

    model: nn.Module
    out: torch.Tensor
    taps: LayerTaps | None
    x: Any
    n_probes: int
    gen: torch.Generator
    backend: str
    chunk_size: int | None
    params: list[torch.Tensor]
    exact_output_layer: bool
    notes: list[str] = dataclasses.field(default_factory=list)

    def layer_taps(self) -> LayerTaps:
        """The taps of the hooks backend (an estimator on that backend needs them)."""
        if self.taps is None:
            raise RuntimeError(f"the {self.backend!r} backend measured without layer taps; this estimator needs them")
        return self.taps


@dataclasses.dataclass
class NetworkScale:
    """An estimate of 𝒩, its standard error, the per-probe values (Hutchinson) and the exact layer."""

    estimate: float
    se: float
    probes: list[float] | None
    exact_layer: str = ""
    #: Welch–Satterthwaite degrees of freedom of ``se`` (NaN when not estimated from per-sample terms)
    se_dof: float = float("nan")


#: default probes: enough that the per-sample Hutchinson SE rests on N·(n_probes − 1) ≥ this many
#: degrees of freedom (``benchmarks/calib_lnp_se.py``; at N ≥ 32 this is the old default of 2)
MIN_SE_DOF = 32


def default_probes(n_samples: int) -> int:
    """Default Rademacher probes per batch of ``n_samples``: max(2, 1 + ceil(32 / N)).

    At N = 4 the per-sample Hutchinson SE from 2 probes has about 4 degrees of freedom, and
    |z| > 5 happened in 1–2.5 % of calls (docs/lnp.md, "Standard error at small batches"); with
    N·(n_probes − 1) ≥ 32 it is close to normal. N ≥ 32 keeps 2 probes (the measured cost).
    """
    return max(2, 1 + -(-MIN_SE_DOF // max(1, int(n_samples))))


def welch_dof(per_sample: Any) -> float:
    """Welch–Satterthwaite degrees of freedom of Σ_n s_n² / k from per-sample terms (k probes × N)."""
    s = np.asarray(per_sample, dtype=np.float64)
    k = s.shape[0]
    if k < 2:
        return float("nan")
    v = s.var(axis=0, ddof=1)
    den = float((v ** 2).sum() / (k - 1))
    return float(v.sum() ** 2 / den) if den > 0 else float("inf")


def rademacher(shape: Sequence[int], like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """±1 entries of ``shape`` (drawn on the CPU from ``gen``), in the dtype and device of ``like``."""
    return torch.randint(0, 2, shape, generator=gen, device="cpu").to(like.device, like.dtype) * 2 - 1


def vmap_per_sample(model: nn.Module, x: Any, cot: torch.Tensor | None, exact: bool, chunk_size: int | None,
                    notes: list[str] | None = None) -> torch.Tensor:
    """Per-sample ||J_nᵀ v_n||² (or ||J_n||_F² if exact) with torch.func on the whole model; any layer.

    ``x``: a tensor or a mapping of tensors (:mod:`.inputs`; its batched tensors are mapped over
    together, its other values shared). An exception raised inside the model names the module
    whose forward was running (:func:`.checks.module_trace`). With a ``notes`` list, a model
    torch.func cannot batch (``.item()``, data-dependent control flow) is measured by
    :func:`loop_per_sample` instead, and the reason is appended to ``notes``.
    """
    from torch.func import functional_call, jacrev, vjp, vmap

    from .checks import module_trace, renamed
    from .inputs import split_batched
    from .taps import model_output

    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    batched, rebuild = split_batched(x)

    def f1(p: dict[str, torch.Tensor], xn: Any) -> torch.Tensor:
        one = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), xn)
        return model_output(functional_call(model, ({**p, **frozen}, buffers), (rebuild(one),))).squeeze(0)

    with module_trace(model) as where:
        try:
            if exact:
                def one_exact(xn: Any) -> torch.Tensor:
                    jac = jacrev(f1)(params, xn)
                    return sum(j.to(torch.float64).pow(2).sum() for j in jac.values())
                return vmap(one_exact, chunk_size=chunk_size)(batched)

            def one(xn: Any, vn: torch.Tensor) -> torch.Tensor:
                pull = vjp(lambda p: f1(p, xn), params)[1]
                (g,) = pull(vn)
                return sum(t.to(torch.float64).pow(2).sum() for t in g.values())
            assert cot is not None, "a cotangent per sample unless exact"
            return vmap(one, chunk_size=chunk_size)(batched, cot)
        except (RuntimeError, ValueError, AttributeError, TypeError, IndexError) as exc:
            if notes is not None and "vmap:" in str(exc) and "data-dependent" in str(exc):
                at = f"module {where[-1][0]!r} ({where[-1][1]})" if where else "the model"
                note = (f"per-sample autograd loop: torch.func cannot batch {at} (.item() or data-dependent "
                        "control flow, e.g. a check of the attention mask)")
                if note not in notes:
                    notes.append(note)
                return loop_per_sample(model, x, cot, exact)
            raise renamed(exc, where) from exc


def loop_per_sample(model: nn.Module, x: Any, cot: torch.Tensor | None, exact: bool) -> torch.Tensor:
    """:func:`vmap_per_sample` one sample at a time with plain autograd (for models torch.func cannot batch).

    N backward passes per probe (N·O for ``exact``): slow, and exact by construction.
    """
    from .inputs import batch_size, take
    from .taps import model_output

    n = batch_size(x)
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros(n, dtype=torch.float64)
    with torch.enable_grad():
        for i in range(n):
            oi = model_output(model(take(x, torch.tensor([i]))))
            if exact:
                flat = oi.reshape(-1)
                acc = 0.0
                for o in range(flat.numel()):
                    gs = torch.autograd.grad(flat[o], params, retain_graph=True, allow_unused=True)
                    acc += sum(float(g.double().pow(2).sum()) for g in gs if g is not None)
            else:
                assert cot is not None, "a cotangent per sample unless exact"
                gs = torch.autograd.grad(oi, params, cot[i:i + 1], allow_unused=True)
                acc = sum(float(g.double().pow(2).sum()) for g in gs if g is not None)
            total[i] = acc
    return total


def hooks_exact_per_sample(taps: LayerTaps, out: torch.Tensor) -> torch.Tensor:
    """Per-sample ||J_n||_F²: one backward per output coordinate, all samples at once."""
    n = out.shape[0]
    flat = out.reshape(n, -1)
    total = torch.zeros(n, dtype=torch.float64, device=out.device)
    for o in range(flat.shape[1]):
        e = torch.zeros_like(flat)
        e[:, o] = 1
        total += taps.per_sample_sq_norms(out, e.view_as(out))
    return total


def exact(ctx: Context) -> NetworkScale:
    """Σ_n ||J_n||_F² exactly (one backward per output coordinate, or jacrev under vmap)."""
    if ctx.backend == "vmap":
        ns = vmap_per_sample(ctx.model, ctx.x, None, True, ctx.chunk_size, ctx.notes)
        return NetworkScale(float(ns.sum()), 0.0, None)
    return NetworkScale(float(hooks_exact_per_sample(ctx.layer_taps(), ctx.out).sum()), 0.0, None)


def _output_layer(ctx: Context) -> tuple[tuple[Any, ...], set[int], float, str]:
    """(skipped call keys, skipped parameter ids, exact share, layer name) of the exact output layer."""
    if not (ctx.exact_output_layer and ctx.backend == "hooks"):
        return (), set(), 0.0, ""
    found = ctx.layer_taps().output_layer_exact(ctx.out, ctx.gen)
    if found is None:
        return (), set(), 0.0, ""
    key, part = found
    mod = dict(ctx.model.named_modules())[key[0]]
    pids = {id(p) for p in mod.parameters(recurse=False) if p.requires_grad}
    return (key,), pids, float(part.sum()), key[0]


def hutchinson(ctx: Context) -> NetworkScale:
    """Per-sample Hutchinson: 𝒩 ≈ Σ_n ||J_nᵀu_n||², u_n Rademacher, averaged over probes."""
    skip, _, const, layer = _output_layer(ctx)
    vals, per_sample = [], []
    for _ in range(ctx.n_probes):
        u = rademacher(ctx.out.shape, ctx.out, ctx.gen)
        if ctx.backend == "vmap":
            s = vmap_per_sample(ctx.model, ctx.x, u, False, ctx.chunk_size, ctx.notes)
        else:
            s = ctx.layer_taps().per_sample_sq_norms(ctx.out, u, skip=skip)
        per_sample.append(s.detach().cpu().numpy())
        vals.append(const + float(s.sum()))
    stacked = np.stack(per_sample)
    return NetworkScale(float(np.mean(vals)), hutchinson_standard_error(vals, stacked), vals, layer,
                        welch_dof(stacked))


def batch_hutchinson(ctx: Context) -> NetworkScale:
    """Whole-batch Hutchinson: 𝒩 ≈ ||Jᵀu||², one plain backward of Σ u·f per probe."""
    _, skip_params, const, layer = _output_layer(ctx)
    ps = [p for p in ctx.params if id(p) not in skip_params]
    vals = []
    for _ in range(ctx.n_probes):
        u = rademacher(ctx.out.shape, ctx.out, ctx.gen)
        gp = torch.autograd.grad(ctx.out, ps, u, retain_graph=True, allow_unused=True) if ps else ()
        vals.append(const + sum(float(torch.dot(g.reshape(-1), g.reshape(-1))) for g in gp if g is not None))
    return NetworkScale(float(np.mean(vals)), hutchinson_standard_error(vals), vals, layer,
                        float(len(vals) - 1) if len(vals) > 1 else float("nan"))


#: name -> estimator(Context) -> NetworkScale
ESTIMATOR_TABLE: dict[str, Callable[[Context], NetworkScale]] = {
    "hutchinson": hutchinson,
    "batch-hutchinson": batch_hutchinson,
    "exact": exact,
}
