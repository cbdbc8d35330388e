"""Per-sample gradients of ``nn.ConvTranspose1d`` / ``nn.ConvTranspose2d`` calls from the unfolded output gradient."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvTransposeNd

from .common import trainable
from .conv import as2d, grads_from, pair, sq_norms_from
from .registry import builtin_rule

__all__: list[str] = []  # registers the transposed convolutions on import


def _convt_parts(m: _ConvTransposeNd, a: torch.Tensor,
                 d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    nd = len(m.kernel_size)
    if m.groups != 1:
        raise NotImplementedError(f"per-sample gradients of grouped {type(m).__name__} have no handler; "
                                  "use backend='vmap'")
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise NotImplementedError(f"{type(m).__name__} padding_mode={m.padding_mode!r} has no handler; "
                                  "use backend='vmap'")
    a2, d2 = as2d(a, nd), as2d(d, nd)
    u = None
    if trainable(m, "weight"):
        # dW[ci, co, k] = sum_pos a[ci, pos] d[co, pos*s - p + k*dil]: unfold the output gradient
        u = F.unfold(d2, pair(m.kernel_size, nd), dilation=pair(m.dilation, nd),
                     padding=(0,) + tuple(m.padding) if nd == 1 else tuple(m.padding),
                     stride=pair(m.stride, nd))  # (N, Cout k^2, L)
        if u.shape[-1] != a2.flatten(2).shape[-1]:
            raise NotImplementedError(f"{type(m).__name__}: unfolded output gradient has {u.shape[-1]} positions, "
                                      f"the input {a2.flatten(2).shape[-1]}; use backend='vmap'")
    return a2.flatten(2), d2.flatten(2), u


def _convt_sq(m: _ConvTransposeNd, args: tuple, kwargs: dict, d: torch.Tensor,
              memo: dict | None = None) -> torch.Tensor:
    af, dflat, u = _convt_parts(m, args[0], d)
    # ||Σ_t a_t u_tᵀ|| = ||Σ_t u_t a_tᵀ||: the input a is the fixed side whose Gram matrix the memo keeps
    return sq_norms_from(m, None if u is None else (u, af), dflat, d, memo)


@builtin_rule(nn.ConvTranspose1d, nn.ConvTranspose2d, sq_norms=_convt_sq, memo=True)
def _convt_grads(m: _ConvTransposeNd, args: tuple, kwargs: dict, d: torch.Tensor) -> dict[str, torch.Tensor]:
    af, dflat, u = _convt_parts(m, args[0], d)
    return grads_from(m, None if u is None else (af, u), dflat, d)
