"""Band-loss probe: band losses of a fixed evaluation panel at a checkpoint (key search A.6, A.8).

The probe runs the model on the panel without gradient, computes the Haar band losses in torch
on the model's device with :func:`bandscope.torch.haar.haar_band_losses` (the torch twin of
:func:`bandscope.bands.band_losses`) and restores the model's train/eval mode afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import to_float
from .haar import haar_band_losses

__all__ = ["select_panel", "BandProbe", "ProbeResult"]


def select_panel(n_test: int, seed: int, size: int = 256) -> np.ndarray:
    """Indices of the evaluation panel (key search A.8): ``size`` of ``n_test`` test images,
    without replacement, RNG seed ``seed + 3``.

    The generator is ``numpy.random.default_rng(seed + 3).choice(n_test, size, replace=False)``
    (the paper does not name its RNG; this is ours, fixed and documented).

    Examples
    --------
    >>> idx = select_panel(20000, 45)
    >>> idx.shape, len(set(idx.tolist())) == 256, bool((select_panel(20000, 45) == idx).all())
    ((256,), True, True)
    """
    n_test, size = int(n_test), int(size)
    if not 0 < size <= n_test:
        raise ValueError(f"panel size must be in 1..n_test={n_test}, got {size}")
    return np.random.default_rng(int(seed) + 3).choice(n_test, size=size, replace=False)


@dataclass
class ProbeResult:
    """Band losses (band 1 first), pixel MSE and optionally the reconstructions (float16)."""

    band_loss: np.ndarray
    mse: float
    recon: np.ndarray | None = None


class BandProbe:
    """Band losses of a fixed panel, computed in torch without gradient.

    Parameters
    ----------
    panel : Tensor (P, C, S, S)
        The panel images (uint8, or float in [0, 1]); ``S`` a power of two.
    batch_size : int
        Panel images per forward pass.
    device : optional
        Where to run; default the model's device.
    keep_recon : bool
        Also return the reconstructions as float16 numpy (as the paper stores them).
    dtype : torch.dtype
        Precision of the band-loss arithmetic (default float64; the forward pass stays in the
        model's dtype).

    Examples
    --------
    >>> model = torch.nn.Identity()
    >>> p = BandProbe(torch.rand(4, 3, 8, 8))
    >>> r = p(model)
    >>> r.band_loss.tolist(), r.mse
    ([0.0, 0.0, 0.0, 0.0], 0.0)
    """

    def __init__(self, panel: torch.Tensor, *, batch_size: int = 256, device=None,
                 keep_recon: bool = False, dtype: torch.dtype = torch.float64):
        if panel.dim() != 4:
            raise ValueError(f"panel must be (P, C, S, S), got shape {tuple(panel.shape)}")
        self.panel = panel
        self.batch_size = int(batch_size)
        self.device = device
        self.keep_recon = keep_recon
        self.dtype = dtype

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> ProbeResult:
        """Band losses of ``model``'s panel reconstructions; the model's mode is restored."""
        was_training = model.training
        dev = self.device
        if dev is None:
            p = next(model.parameters(), None)
            dev = p.device if p is not None else torch.device("cpu")
        model.eval()
        try:
            sums = None
            recons = []
            n = self.panel.shape[0]
            for i in range(0, n, self.batch_size):
                x = to_float(self.panel[i:i + self.batch_size].to(dev))
                out = model(x)
                if out.shape != x.shape:
                    raise ValueError(f"model output shape {tuple(out.shape)} != input shape {tuple(x.shape)}")
                per = haar_band_losses(x, out, per_image=True, dtype=self.dtype)
                s = per.sum(dim=0)
                sums = s if sums is None else sums + s
                if self.keep_recon:
                    recons.append(out.to(torch.float16).cpu().numpy())
        finally:
            model.train(was_training)
        bl = (sums / n).cpu().numpy().astype(np.float64)
        return ProbeResult(bl, float(bl.sum()), np.concatenate(recons) if self.keep_recon else None)
