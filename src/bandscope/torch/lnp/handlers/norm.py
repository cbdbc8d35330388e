"""Per-sample gradients of normalisation layers ``out = weight * xhat + bias``: Layer-, RMS-, Group-, BatchNorm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .common import param, trainable
from .registry import builtin_rule

__all__: list[str] = []  # registers the normalisation layers on import

#: torch's own RMSNorm where this torch has one
_RMS_NORM = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()


def _affine_grads(m: nn.Module, xhat: torch.Tensor, d: torch.Tensor,
                  channel_dims: tuple[int, ...]) -> dict[str, torch.Tensor]:
    red = tuple(i for i in range(1, d.dim()) if i not in channel_dims)
    g = {}
    if trainable(m, "weight"):
        g["weight"] = ((d * xhat).sum(red) if red else d * xhat).reshape(d.shape[0], *param(m, "weight").shape)
    if trainable(m, "bias"):
        g["bias"] = (d.sum(red) if red else d).reshape(d.shape[0], *param(m, "bias").shape)
    return g


def _xhat_unit_affine(m: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """The layer's own output with weight 1 and bias 0 (exactly what multiplies the weight)."""
    from torch.func import functional_call

    unit: dict[str, torch.Tensor] = {}
    for k in ("weight", "bias"):
        p = getattr(m, k, None)
        if isinstance(p, torch.Tensor):
            unit[k] = (torch.ones_like(p) if k == "weight" else torch.zeros_like(p)).detach()
    with torch.no_grad():
        return functional_call(m, unit, args, kwargs)


@builtin_rule(nn.LayerNorm, *_RMS_NORM, sq_from_grads=True, batch_dim="any")
def _trailing_affine_grads(m: nn.Module, args: tuple, kwargs: dict, d: torch.Tensor) -> dict[str, torch.Tensor]:
    """LayerNorm / RMSNorm: parameters of the shape of the trailing output dims."""
    w = getattr(m, "weight", None)
    k = (w if isinstance(w, torch.Tensor) else param(m, "bias")).dim()
    xhat = _xhat_unit_affine(m, args, kwargs)
    return _affine_grads(m, xhat, d, tuple(range(d.dim() - k, d.dim())))


@builtin_rule(nn.GroupNorm, sq_from_grads=True)
def _group_norm_grads(m: nn.GroupNorm, args: tuple, kwargs: dict, d: torch.Tensor) -> dict[str, torch.Tensor]:
    xhat = F.group_norm(args[0], m.num_groups, None, None, m.eps)
    return _affine_grads(m, xhat, d, (1,))


@builtin_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, sq_from_grads=True)
def _batch_norm_grads(m: _NormBase, args: tuple, kwargs: dict, d: torch.Tensor) -> dict[str, torch.Tensor]:
    if m.training or m.running_mean is None:
        raise RuntimeError(f"{type(m).__name__} must be in frozen-statistics mode during measurement")
    a = args[0]
    shape = [1, -1] + [1] * (a.dim() - 2)
    xhat = (a - param(m, "running_mean").view(shape)) / torch.sqrt(param(m, "running_var").view(shape) + m.eps)
    return _affine_grads(m, xhat, d, (1,))
