"""Per-sample gradients of ``nn.Embedding`` lookups (padding rows excluded), by scatter or by id coincidence."""
from __future__ import annotations

import torch
from torch import nn

from .common import sq, trainable, zeros
from .registry import builtin_rule

__all__: list[str] = []  # registers nn.Embedding on import

#: largest N·V·D for which the squared norms materialise the per-sample gradients (else the id-coincidence sum)
_MATERIALISE = 50_000_000


def _emb_parts(m: nn.Embedding, a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = a.shape[0]
    ids = a.reshape(n, -1)
    dd = d.reshape(n, ids.shape[1], -1)
    if m.padding_idx is not None:
        dd = dd * ids.ne(m.padding_idx).unsqueeze(-1).to(dd.dtype)
    return ids, dd


def _emb_sq(m: nn.Embedding, args: tuple, kwargs: dict, d: torch.Tensor) -> torch.Tensor:
    if not trainable(m, "weight"):
        return zeros(d)
    ids, dd = _emb_parts(m, args[0], d)
    if ids.shape[0] * m.num_embeddings * dd.shape[-1] <= _MATERIALISE:
        return sq(_emb_grads(m, args, kwargs, d)["weight"])
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).to(dd.dtype)
    return (same * torch.bmm(dd, dd.transpose(1, 2))).flatten(1).sum(1)



@builtin_rule(nn.Embedding, sq_norms=_emb_sq, batch_dim="any")
def _emb_grads(m: nn.Embedding, args: tuple, kwargs: dict, d: torch.Tensor) -> dict[str, torch.Tensor]:
    if not trainable(m, "weight"):
        return {}
    ids, dd = _emb_parts(m, args[0], d)
    n, v, dim = ids.shape[0], m.num_embeddings, dd.shape[-1]
    g = torch.zeros(n * v, dim, dtype=dd.dtype, device=dd.device)
    flat = (ids + v * torch.arange(n, device=ids.device).unsqueeze(1)).reshape(-1)
    g.index_add_(0, flat, dd.reshape(-1, dim))
    return {"weight": g.view(n, v, dim)}
