"""A small GPT-style language model for the spectral-reach scaling runs (``tools/lm_scaling.py``).

Pre-norm transformer decoder (Radford et al. 2019, nanoGPT layout): token embedding plus a learned
positional embedding, ``n_layers`` blocks of causal multi-head self-attention
(``F.scaled_dot_product_attention`` over ``nn.Linear`` projections) and a GELU MLP, a final
LayerNorm and an untied output head. Every parameter lives in an ``nn.Linear``, ``nn.Embedding``
or ``nn.LayerNorm``, so :func:`bandscope.torch.measure_lnp` takes its fast per-sample path; the
positional embedding is looked up with batched indices (one row of positions per sample) and the
head is not tied to the token embedding (a tied weight would need the per-sample norm of the
summed gradient).

Sizes follow the shape of the spectral-reach paper's smallest next-pixel Llama models (B.2.2,
Table 2: 3 layers, width 32-96, FF 256, 2 heads), scaled to a 2-core CPU.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LMConfig", "TinyGPT", "LM_SIZES"]


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Shape of a :class:`TinyGPT`: vocabulary, context length, width, depth, heads, MLP width."""

    vocab_size: int = 256
    context: int = 128
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int = 256

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"LMConfig.{f.name} must be a positive int, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")


#: The model sizes of the scaling runs (names used on the command line and in run folders).
LM_SIZES: dict[str, LMConfig] = {
    "xs": LMConfig(context=64, d_model=32, n_layers=2, n_heads=2, d_ff=128),
    "s": LMConfig(context=64, d_model=64, n_layers=2, n_heads=2, d_ff=256),
    "m": LMConfig(context=64, d_model=96, n_layers=3, n_heads=3, d_ff=384),
    "l": LMConfig(context=64, d_model=128, n_layers=4, n_heads=4, d_ff=512),
}


class _Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.out = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """GPT-style decoder: tokens ``(N, T)`` int64 -> logits ``(N, T, vocab_size)``.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> m = TinyGPT(LMConfig(vocab_size=16, context=8, d_model=8, n_layers=1, n_heads=2, d_ff=16))
    >>> m(torch.randint(0, 16, (3, 8))).shape
    torch.Size([3, 8, 16])
    """

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-layer representations ``(N, T, d_model)`` (after the last LayerNorm)."""
        n, t = idx.shape
        if t > self.cfg.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.cfg.context}")
        pos = torch.arange(t, device=idx.device).expand(n, t)  # batched: one row per sample
        x = self.tok(idx) + self.pos(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits (N, T, vocab_size) of the token ids ``idx`` (N, T)."""
        return self.head(self.features(idx))
