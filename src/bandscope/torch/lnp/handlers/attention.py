"""Per-sample gradients of ``nn.MultiheadAttention`` calls, either layout, masks as per-sample inputs."""
from __future__ import annotations

import torch
from torch import nn

from .registry import builtin_rule
from .vmap import vmap_grads

__all__: list[str] = []  # registers nn.MultiheadAttention on import


def _mha_batch_dim(m: nn.MultiheadAttention) -> int:
    return 0 if m.batch_first else 1


@builtin_rule(nn.MultiheadAttention, params="all", batch_dim=_mha_batch_dim)
def _mha_grads(m: nn.MultiheadAttention, args: tuple, kwargs: dict, d: torch.Tensor | tuple) -> dict:
    """nn.MultiheadAttention, either layout; a (N, S) key_padding_mask and a (N·heads, L, S) attn_mask
    are per-sample inputs (batch-first whatever ``batch_first`` is)."""
    n = next(t for t in (d if isinstance(d, tuple) else (d,)) if t is not None).shape[0]
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    kwargs = dict(kwargs)
    if len(args) > 3:  # masks passed positionally: make them keywords
        kwargs.update(zip(names[3:], args[3:]))
        args = args[:3]
    kw_batched = {}
    kpm = kwargs.get("key_padding_mask")
    if isinstance(kpm, torch.Tensor) and kpm.dim() == 2:
        kw_batched["key_padding_mask"] = (kpm, lambda t: t.unsqueeze(0))
    am = kwargs.get("attn_mask")
    if isinstance(am, torch.Tensor) and am.dim() == 3:
        if am.shape[0] != n * m.num_heads:
            raise NotImplementedError(f"nn.MultiheadAttention attn_mask of shape {tuple(am.shape)}: a 3-d mask "
                                      f"must be (batch·heads, L, S) = ({n * m.num_heads}, …); use backend='vmap'")
        kw_batched["attn_mask"] = (am.reshape(n, m.num_heads, *am.shape[1:]), lambda t: t)
    return vmap_grads(m, args, kwargs, d, _mha_batch_dim(m), kw_batched)
