"""A handler for any per-sample layer: ``torch.func`` (``vjp`` under ``vmap``) on that one layer."""
from __future__ import annotations

import torch
from torch import nn

from .registry import lookup_handler

__all__ = ["vmap_handler", "vmap_grads"]


def vmap_handler(module: nn.Module, args: tuple, kwargs: dict, grad_output: torch.Tensor | tuple) -> dict:
    """Per-sample gradients of one layer call with ``torch.func`` (``vjp`` under ``vmap``).

    Exact for any layer whose output for sample n depends only on sample n of its batched
    inputs (positional tensors whose first dim is the batch size; every other argument is shared).
    The layer is called on one sample at a time in its own layout: the batch dim of its
    registered ``batch_dim`` (``0`` if unregistered or ``"any"``) is put back with size 1.
    Covers the layer's whole parameter subtree; register it with ``params="all"``.
    """
    h = lookup_handler(module)
    b = 0 if h is None else (h.batch_dim_of(module) or 0)
    return vmap_grads(module, args, kwargs, grad_output, b, {})


def vmap_grads(module: nn.Module, args: tuple, kwargs: dict, grad_output: torch.Tensor | tuple, in_dim: int,
               kw_batched: dict) -> dict:
    """``vmap_handler`` with the per-sample singleton batch at ``in_dim`` of the positional inputs and
    ``kw_batched`` = {keyword: (tensor with the batch on dim 0, per-sample slice -> keyword value)}."""
    from torch.func import functional_call, vjp, vmap

    cots = grad_output if isinstance(grad_output, tuple) else (grad_output,)
    n = next(c.shape[0] for c in cots if c is not None)
    params = {k: p.detach() for k, p in module.named_parameters() if p.requires_grad}
    fixed = {k: p.detach() for k, p in module.named_parameters() if not p.requires_grad}
    fixed.update(dict(module.named_buffers()))
    batched = [isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n for a in args]
    b_args = [a for a, b in zip(args, batched) if b]
    kw_names = list(kw_batched)
    b_kws = [kw_batched[k][0] for k in kw_names]
    cot_mask = [c is not None for c in cots]
    b_cots = [c for c in cots if c is not None]

    def one(*flat: torch.Tensor) -> dict:
        xs = flat[:len(b_args)]
        ks = flat[len(b_args):len(b_args) + len(kw_names)]
        cs = flat[len(b_args) + len(kw_names):]
        it = iter(xs)
        call_args = tuple(next(it).unsqueeze(in_dim) if b else a for a, b in zip(args, batched))
        call_kwargs = {**kwargs, **{k: kw_batched[k][1](v) for k, v in zip(kw_names, ks)}}

        def fwd(p: dict) -> tuple:
            out = functional_call(module, ({**p, **fixed}), call_args, call_kwargs)
            outs = out if isinstance(out, tuple) else (out,)
            # the per-sample output carries a size-1 batch dim somewhere: dropping it is a reshape
            return tuple(o.reshape(c.shape) for o, c in zip((o for o, keep in zip(outs, cot_mask) if keep), cs))

        pull = vjp(fwd, params)[1]
        (g,) = pull(tuple(cs))
        return g

    return vmap(one)(*b_args, *b_kws, *b_cots)
