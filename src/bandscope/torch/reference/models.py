"""Autoencoders of the key-search paper (appendix A.2), parameterised by image size.

Both models map images in [0, 1] of shape (N, 3, S, S) to reconstructions of the same shape
through a 128-d latent. ``S`` must be a multiple of 16 (four stride-2 stages).

Parameter counts at S = 64 match the paper exactly: CNN 1,829,379 and ViT 2,779,651. The
paper does not give kernel sizes or the ViT's details; the counts pin them down:

- convolutions 3x3, stride 2, padding 1; transpose convolutions 3x3, stride 2, padding 1,
  output padding 1 (every other choice of kernel size misses the CNN count);
- ViT: patch embedding as a 4x4 stride-4 convolution with bias, learned positional embedding
  per patch (no class token), pre-norm blocks with qkv bias, final LayerNorm, mean pooling over
  tokens, linear to the latent. Without the final LayerNorm the count is 384 short.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["CNNAutoencoder", "ViTAutoencoder", "build_model", "count_parameters"]

_CHANNELS = (3, 32, 64, 128, 256)


def _check_size(image_size: int) -> int:
    size = int(image_size)
    if size < 16 or size % 16:
        raise ValueError(f"image_size must be a positive multiple of 16, got {image_size!r}")
    return size


class _Decoder(nn.Module):
    """Linear 128 -> 256 x (S/16)^2, then four 3x3 stride-2 transpose convs 256->128->64->32->3."""

    def __init__(self, image_size: int, latent_dim: int = 128):
        super().__init__()
        self.side = _check_size(image_size) // 16
        self.fc = nn.Linear(latent_dim, _CHANNELS[-1] * self.side * self.side)
        layers: list[nn.Module] = []
        rev = _CHANNELS[::-1]
        for i, (cin, cout) in enumerate(zip(rev[:-1], rev[1:])):
            layers.append(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1))
            layers.append(nn.Sigmoid() if i == len(rev) - 2 else nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], _CHANNELS[-1], self.side, self.side)
        return self.net(h)


class CNNAutoencoder(nn.Module):
    """Convolutional autoencoder of key search A.2.

    Encoder: four 3x3 stride-2 convs 3->32->64->128->256 with ReLU, flatten 256 x (S/16)^2,
    linear to a 128-d latent. Decoder: :class:`_Decoder` (Sigmoid output).

    Examples
    --------
    >>> count_parameters(CNNAutoencoder(64))
    1829379
    >>> CNNAutoencoder(32)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(self, image_size: int = 64, latent_dim: int = 128):
        super().__init__()
        self.image_size = _check_size(image_size)
        side = self.image_size // 16
        layers: list[nn.Module] = []
        for cin, cout in zip(_CHANNELS[:-1], _CHANNELS[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(_CHANNELS[-1] * side * side, latent_dim))
        self.decoder = _Decoder(self.image_size, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction (N, 3, S, S) of the images ``x`` through the latent bottleneck."""
        return self.decoder(self.encoder(x))


class _Block(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)); x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViTAutoencoder(nn.Module):
    """Vision-transformer autoencoder of key search A.2.

    Patch 4 (4x4 stride-4 conv), dim 192, 4 pre-norm blocks, 6 heads, MLP ratio 4, GELU,
    learned positional embeddings, final LayerNorm, mean pool, linear to 128; the CNN's decoder.

    Examples
    --------
    >>> count_parameters(ViTAutoencoder(64))
    2779651
    """

    def __init__(self, image_size: int = 64, latent_dim: int = 128, patch: int = 4, dim: int = 192,
                 depth: int = 4, heads: int = 6, mlp_ratio: int = 4):
        super().__init__()
        self.image_size = _check_size(image_size)
        if self.image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch}")
        n_tokens = (self.image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.to_latent = nn.Linear(dim, latent_dim)
        self.decoder = _Decoder(self.image_size, latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent (N, latent_dim): patch tokens through the transformer blocks, mean-pooled."""
        t = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        t = self.norm(self.blocks(t))
        return self.to_latent(t.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction (N, 3, S, S) of the images ``x`` through the latent bottleneck."""
        return self.decoder(self.encode(x))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter values of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(arch: str, image_size: int = 64, *, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """Build ``"cnn"`` or ``"vit"`` at ``image_size``; with ``seed``, initialise deterministically.

    The seed is applied inside ``torch.random.fork_rng`` so the global RNG state is untouched.
    ``kwargs`` go to the model class (e.g. ``patch=8`` for the ViT).

    Examples
    --------
    >>> a = build_model("cnn", 32, seed=45); b = build_model("cnn", 32, seed=45)
    >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    True
    """
    arch = str(arch).lower()
    classes = {"cnn": CNNAutoencoder, "vit": ViTAutoencoder}
    if arch not in classes:
        raise ValueError(f"arch must be one of {sorted(classes)}, got {arch!r}")
    if seed is None:
        return classes[arch](image_size, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return classes[arch](image_size, **kwargs)
