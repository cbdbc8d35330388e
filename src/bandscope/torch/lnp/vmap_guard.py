"""Checks that make ``backend="vmap"`` fail with a clear error instead of returning a wrong number.

The vmap route (:func:`.estimators.vmap_per_sample`) evaluates the model one sample at a time
under ``torch.func`` (``functional_call`` on ``x[n:n+1]``, batched by ``vmap``). That gives the
per-sample Jacobians of the batched model only when

1. the forward is deterministic (no train-mode dropout: its mask would differ per call);
2. the model treats samples independently (row n of ``model(x)`` equals ``model(x[n:n+1])``;
   not so for ``x - x.mean(0)``, attention across the batch, ...);
3. every op's ``torch.func`` batching rule is right (``nn.PReLU``'s is not in torch 2.13 when
   the vmap size equals the number of channels: a silently wrong 𝒩).

:func:`check_vmap_route` tests 1 before the measurement and 2–3 once per model and input
signature (cached like the hooks path's verification): the outputs of two or three samples
against single-sample forwards, and the route's own per-sample values on the measured batch
against autograd on single samples. :func:`vmap_errors` turns an exception raised inside
``torch.func`` into one that names the route and the fixes.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .checks import (
    DROPOUT_TYPES,
    NotPerSampleError,
    agrees,
    check_tolerance,
    first_mixing_module,
    random_draw,
    random_message,
)
from .estimators import rademacher, vmap_per_sample
from .inputs import batch_size, is_batch, take
from .taps import mixing_message, model_output, single_tensor_inputs_message
from .taps.cache import cache_owner
from .taps.cache import signature as _signature

__all__ = ["check_vmap_route", "vmap_errors"]

_RANDOM = DROPOUT_TYPES
#: model -> signatures whose vmap route was checked (weak keys: dies with the model; never a result)
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

def _refuse_random_and_recurrent(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, _RANDOM) and m.training and m.p > 0:
            raise NotImplementedError(
                f"{type(m).__name__} {name!r} is in training mode: its random mask differs between the batched "
                "forward and the single-sample forwards of backend='vmap', so per-sample gradients cannot be had "
                "this way; call model.eval() for the measurement (where the layer hooks cover the model, "
                "they measure the train-mode forward as it ran)")
        if isinstance(m, nn.RNNBase):
            raise NotImplementedError(
                f"{type(m).__name__} {name!r}: torch.func cannot batch its fused kernel in torch {torch.__version__} "
                "(backend='vmap'; float32 nn.LSTM runs through a slow fallback, float64 and GRU / RNN fail) and "
                "the hooks backend has no handler for it; register one (bandscope.torch.register_lnp_handler) or "
                "build the model from cells (e.g. nn.LSTMCell, nn.GRUCell), which backend='vmap' measures")


def _single_sq_norm(model: nn.Module, params: list[torch.Tensor], xi: Any, cot_i: torch.Tensor | None = None) -> float:
    """||J_iᵀ v_i||² (or ||J_i||_F² when ``cot_i`` is None) by plain autograd on one sample."""
    oi = model_output(model(xi))
    if cot_i is not None:
        gs = torch.autograd.grad(oi, params, cot_i, allow_unused=True)
        return sum(float(g.double().pow(2).sum()) for g in gs if g is not None)
    flat = oi.reshape(-1)
    total = 0.0
    for o in range(flat.numel()):
        gs = torch.autograd.grad(flat[o], params, retain_graph=True, allow_unused=True)
        total += sum(float(g.double().pow(2).sum()) for g in gs if g is not None)
    return total


def check_vmap_route(model: nn.Module, x: torch.Tensor, out: torch.Tensor, *, exact: bool,
                     gen: torch.Generator, chunk_size: int | None = None, notes: list[str] | None = None) -> None:
    """Raise ``NotImplementedError`` when ``backend="vmap"`` would not give this model's numbers.

    ``out`` is the batched model output of the measurement (BatchNorm statistics already frozen
    to the batch's, as in the measured forward). ``exact`` selects which route is checked: the
    jacrev route of ``estimator="exact"`` or the vjp route of the Hutchinson estimator.
    """
    _refuse_random_and_recurrent(model)
    if not is_batch(x):
        raise TypeError(single_tensor_inputs_message(x))
    sig = (_signature(model, x), bool(exact))
    if sig in _CHECKED.get(cache_owner(model), set()):
        return
    n = batch_size(x)
    idx = sorted({0, n // 2, n - 1})
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    tol = check_tolerance(out.dtype)
    with torch.enable_grad():
        for i in idx:
            xi = take(x, torch.tensor([i]))
            box: dict[str, torch.Tensor] = {}

            def single(xi: Any = xi, box: dict[str, torch.Tensor] = box) -> torch.Tensor:
                return box.setdefault("o", model_output(model(xi)))

            where = random_draw(model, single)
            if where is not None:
                raise NotPerSampleError(random_message(where))
            oi = box["o"]
            if oi.shape[1:] != out.shape[1:] or not agrees(oi[0].detach(), out[i].detach(), tol):
                m = min(n, 3)
                sub = torch.tensor(sorted({i} | set(range(m))))
                j = int((sub == i).nonzero()[0, 0])
                def batched(sub: torch.Tensor = sub) -> object:
                    return model(take(x, sub))

                def alone(xi: Any = xi) -> object:
                    return model(xi)

                at = first_mixing_module(model, batched, alone, j, len(sub), tol)
                raise NotPerSampleError(mixing_message(model, at))
        cot = None if exact else rademacher(out.shape, out, gen)
        with vmap_errors():
            got = vmap_per_sample(model, x, cot, exact, chunk_size, [] if notes is None else notes)
        bad = []
        for i in idx:
            ref = _single_sq_norm(model, params, take(x, torch.tensor([i])), None if cot is None else cot[i:i + 1])
            if not agrees(got[i].reshape(()), torch.tensor(ref, dtype=torch.float64), tol):
                bad.append((i, float(got[i]), ref))
    if bad:
        i, g, r = bad[0]
        raise NotImplementedError(
            f"backend='vmap' (torch.func) gives per-sample gradient norms that differ from autograd on single "
            f"samples (sample {i}: {g:.6g} vs {r:.6g}): a torch.func batching rule of some layer of this model is "
            "wrong for this batch size (known: nn.PReLU in torch 2.x); backend='hooks' has a handler for "
            "nn.PReLU; for another layer register one (bandscope.torch.register_lnp_handler)")
    _CHECKED.setdefault(cache_owner(model), set()).add(sig)


@contextlib.contextmanager
def vmap_errors() -> Iterator[None]:
    """Re-raise an exception from inside ``torch.func`` as ``NotImplementedError`` naming the route."""
    try:
        yield
    except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
        raise NotImplementedError(
            f"backend='vmap' (torch.func, the model run one sample at a time) failed on this model: "
            f"{type(exc).__name__}: {exc}. Layers torch.func cannot batch (fused recurrent kernels, "
            "in-place ops on inputs) need backend='hooks' with a handler for the layer named above "
            "(bandscope.torch.register_lnp_handler)") from exc
