"""Per-sample gradients of ``nn.Conv1d`` / ``nn.Conv2d`` calls (ungrouped, zero padding) from unfolded inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from .common import memo_keep, outer_sum_sq, sq, trainable, zeros
from .registry import builtin_rule

__all__: list[str] = []  # registers the convolutions on import


def conv_padding(m: _ConvNd) -> tuple[int, ...]:
    """The explicit per-dim zero padding of a convolution (``"valid"`` / symmetric ``"same"`` resolved)."""
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"per-sample gradients of {type(m).__name__} with padding_mode="
                                  f"{m.padding_mode!r} have no handler; use backend='vmap'")
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0,) * len(m.kernel_size)
        pads = []
        for k, dl in zip(m.kernel_size, m.dilation):
            total = dl * (k - 1)
            if total % 2:
                raise NotImplementedError(f"{type(m).__name__} padding='same' with asymmetric padding has no "
                                          "handler; use backend='vmap'")
            pads.append(total // 2)
        return tuple(pads)
    return tuple(m.padding)


def as2d(t: torch.Tensor, nd: int) -> torch.Tensor:
    """A 1-d signal ``(N, C, L)`` as an image ``(N, C, 1, L)``; a 2-d one as it is."""
    return t.unsqueeze(-2) if nd == 1 else t


def pair(v: tuple[int, ...] | list[int], nd: int) -> tuple[int, ...]:
    """A 1-d conv's per-dim setting for the 2-d unfold (``(1,) + v``); a 2-d one as it is."""
    v = tuple(v)
    return (1,) + v if nd == 1 else v


def _conv_parts(m: _ConvNd, a: torch.Tensor, d: torch.Tensor,
                memo: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    nd = len(m.kernel_size)
    if m.groups != 1:
        raise NotImplementedError(f"per-sample gradients of grouped {type(m).__name__} (groups={m.groups}) "
                                  "have no handler; use backend='vmap'")
    pad = conv_padding(m)
    pad = (0,) + pad if nd == 1 else pad
    u = None if memo is None else memo.get("unfold")
    if u is None and trainable(m, "weight"):
        u = F.unfold(as2d(a, nd), pair(m.kernel_size, nd), dilation=pair(m.dilation, nd), padding=pad,
                     stride=pair(m.stride, nd))  # (N, Cin k^2, L)
        memo_keep(memo, "unfold", u)
    return as2d(d, nd).flatten(2), u


def sq_norms_from(m: _ConvNd, pq: tuple[torch.Tensor, torch.Tensor] | None, dflat: torch.Tensor,
                  d: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
    """Per-sample ||dW||² + ||db||² of a convolution whose weight gradient is Σ_t p_t q_tᵀ, ``pq = (p, q)``.

    ``pq`` is None when the weight is not trainable; ``dflat`` (N, C_out, T) is the flattened output
    gradient, whose sum over positions is the bias gradient; ``q`` is the side whose Gram matrix
    ``memo`` may keep (:func:`.common.outer_sum_sq`).
    """
    out = zeros(d)
    if pq is not None:
        out += outer_sum_sq(*pq, memo)
    if trainable(m, "bias"):
        out += sq(dflat.sum(2))
    return out


def grads_from(m: _ConvNd, pq: tuple[torch.Tensor, torch.Tensor] | None, dflat: torch.Tensor,
               d: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ``weight`` (Σ_t p_t q_tᵀ, ``pq = (p, q)``, reshaped as the weight) and ``bias`` (Σ_t dflat_t).

    The one arithmetic of the convolution and the transposed convolution; they differ only in
    which tensors are ``p`` and ``q`` (``pq`` None: the weight is not trainable).
    """
    g = {}
    if pq is not None:
        g["weight"] = torch.bmm(pq[0], pq[1].transpose(1, 2)).reshape(d.shape[0], *m.weight.shape)
    if trainable(m, "bias"):
        g["bias"] = dflat.sum(2)
    return g


def _conv_sq(m: _ConvNd, args: tuple, kwargs: dict, d: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
    dflat, u = _conv_parts(m, args[0], d, memo)
    return sq_norms_from(m, None if u is None else (dflat, u), dflat, d, memo)


@builtin_rule(nn.Conv1d, nn.Conv2d, sq_norms=_conv_sq, memo=True)
def _conv_grads(m: _ConvNd, args: tuple, kwargs: dict, d: torch.Tensor) -> dict[str, torch.Tensor]:
    dflat, u = _conv_parts(m, args[0], d)
    return grads_from(m, None if u is None else (dflat, u), dflat, d)
