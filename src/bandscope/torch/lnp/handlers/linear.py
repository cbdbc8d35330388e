"""Per-sample gradients of ``nn.Linear`` calls, over any number of leading (token) dims."""
from __future__ import annotations

import torch
from torch import nn

from .common import outer_sum_sq, sq, trainable, zeros
from .registry import builtin_rule

__all__: list[str] = []  # registers nn.Linear on import; the rules stay private to the handlers package


def tokens(a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ``a`` and output gradient ``d`` as ``(N, tokens, features)``."""
    n = a.shape[0]
    return a.reshape(n, -1, a.shape[-1]), d.reshape(n, -1, d.shape[-1])


def _linear_sq(m: nn.Module, args: tuple, kwargs: dict, d: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
    a = args[0]
    out = zeros(d)
    if a.dim() == 2:
        if trainable(m, "weight"):
            out += sq(d) * sq(a)
        if trainable(m, "bias"):
            out += sq(d)
        return out
    a3, d3 = tokens(a, d)
    if trainable(m, "weight"):
        out += outer_sum_sq(d3.transpose(1, 2), a3.transpose(1, 2), memo)
    if trainable(m, "bias"):
        out += sq(d3.sum(1))
    return out


@builtin_rule(nn.Linear, sq_norms=_linear_sq, batch_dim="any", memo=True)
def _linear_grads(m: nn.Module, args: tuple, kwargs: dict, d: torch.Tensor,
                  transposed: bool = False) -> dict[str, torch.Tensor]:
    a3, d3 = tokens(args[0], d)
    g = {}
    if trainable(m, "weight"):
        g["weight"] = torch.bmm(a3.transpose(1, 2), d3) if transposed else torch.bmm(d3.transpose(1, 2), a3)
    if trainable(m, "bias"):
        g["bias"] = d3.sum(1)
    return g
