"""Arithmetic the handler families share: per-sample sums of squares, the ghost-norm identity, the memo budget."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["sq", "trainable", "param", "memo_keep", "outer_sum_sq", "zeros", "sq_of"]


def sq(t: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of squares over all but the first dim (one pass, no squared temporary)."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1).pow(2)


def trainable(module: nn.Module, name: str) -> bool:
    """Whether ``module.<name>`` is a tensor that needs a gradient (a covered parameter)."""
    p = getattr(module, name, None)
    return isinstance(p, torch.Tensor) and p.requires_grad


def param(module: nn.Module, name: str) -> torch.Tensor:
    """``module.<name>`` (a parameter or buffer a rule reads), refused with the layer's type if not a tensor."""
    t = getattr(module, name, None)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.{name} is {type(t).__name__}, not a tensor")
    return t


def memo_keep(memo: dict | None, key: str, t: torch.Tensor) -> None:
    """Keep ``t`` in a layer call's memo if the measurement's shared byte budget has room for it.

    The budget (``memo["budget"]``, a one-element list of bytes left, shared by every call of one
    measurement) bounds the extra memory held across probes: without it a deep conv net would keep
    every layer's unfolded input (k² times its activations) alive at once.
    """
    if memo is None:
        return
    left = memo.get("budget")
    size = t.numel() * t.element_size()
    if left is not None and left[0] >= size:
        left[0] -= size
        memo[key] = t


def outer_sum_sq(p: torch.Tensor, q: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
    """Per-sample ||Σ_t p_t q_tᵀ||_F² for p (N, A, T), q (N, B, T).

    Either materialise the (A, B) matrix (cost N·A·B·T) or use the ghost-norm identity
    Σ_{t,t'} (p_t·p_t')(q_t·q_t') (cost N·T²·(A+B)), whichever is cheaper. With ``memo`` (q the
    same tensor on every call, e.g. a layer input across probes) q's Gram matrix is computed once.
    """
    a, b, t = p.shape[1], q.shape[1], p.shape[2]
    if t * t * (a + b) < a * b * t:
        gq = None if memo is None else memo.get("gram")
        if gq is None:
            gq = torch.bmm(q.transpose(1, 2), q)
            memo_keep(memo, "gram", gq)
        return (torch.bmm(p.transpose(1, 2), p) * gq).flatten(1).sum(1)
    return sq(torch.bmm(p, q.transpose(1, 2)))


def zeros(d: torch.Tensor) -> torch.Tensor:
    """Per-sample zeros ``(N,)`` in the dtype and device of the output gradient ``d``."""
    return torch.zeros(d.shape[0], dtype=d.dtype, device=d.device)


def sq_of(grads_fn: Callable) -> Callable:
    """The fast squared-norm rule of a ``grads`` rule: Σ over its per-sample gradients of their squared norms."""
    def sq_norms(m: nn.Module, args: tuple, kwargs: dict, d: torch.Tensor) -> torch.Tensor:
        out = zeros(d)
        for t in grads_fn(m, args, kwargs, d).values():
            out += sq(t)
        return out
    return sq_norms
