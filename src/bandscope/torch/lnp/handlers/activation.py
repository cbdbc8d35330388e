"""Per-sample gradients of activations with parameters: ``nn.PReLU`` (one slope, or one per channel)."""
from __future__ import annotations

import torch
from torch import nn

from .registry import builtin_rule

__all__: list[str] = []  # registers nn.PReLU on import


@builtin_rule(nn.PReLU, sq_from_grads=True)
def _prelu_grads(m: nn.PReLU, args: tuple, kwargs: dict, d: torch.Tensor) -> dict[str, torch.Tensor]:
    """PReLU f = max(0, x) + w·min(0, x): ∂f/∂w = min(0, x), summed per sample over the elements
    sharing a slope (all of them for one slope, else those of channel c = dim 1)."""
    g = d * torch.clamp(args[0], max=0)
    n = g.shape[0]
    if m.weight.numel() == 1:
        return {"weight": g.reshape(n, -1).sum(1).reshape(n, 1)}
    return {"weight": g.reshape(n, g.shape[1], -1).sum(2)}
