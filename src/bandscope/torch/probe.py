"""Band-loss probe: band losses of a fixed evaluation panel at a checkpoint (key search A.6, A.8).

The probe runs the model on the panel without gradient, computes the Haar band losses in torch
on the model's device with :func:`bandscope.torch.haar.haar_band_losses` (the torch twin of
:func:`bandscope.transforms.bands.band_losses`) and restores the model's train/eval mode afterwards.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import BandscopeInputError
from .device import model_device, model_dtype, unwrap, wide_dtype
from .haar import haar_band_losses
from .reference.data import to_float

__all__ = ["select_panel", "as_panel", "BandProbe", "ProbeResult", "PANEL_SIZE"]


#: key search A.8: the panel has 256 images (fewer when the test set is smaller)
PANEL_SIZE = 256


def select_panel(n_test: int, seed: int, size: int | None = None) -> np.ndarray:
    """Indices of the evaluation panel (key search A.8): ``size`` of ``n_test`` test images,
    without replacement, RNG seed ``seed + 3``.

    The generator is ``numpy.random.default_rng(seed + 3).choice(n_test, size, replace=False)``
    (the paper does not name its RNG; this is ours, fixed and documented). ``size=None`` means
    ``min(256, n_test)`` (A.8's 256, or every test image of a smaller test set). An explicit
    ``size`` larger than ``n_test`` is clipped to ``n_test`` with a ``UserWarning``.

    Examples
    --------
    >>> idx = select_panel(20000, 45)
    >>> idx.shape, len(set(idx.tolist())) == 256, bool((select_panel(20000, 45) == idx).all())
    ((256,), True, True)
    >>> select_panel(161, 45).shape  # a small test set: all of it, in a seeded order
    (161,)
    """
    n_test = int(n_test)
    if n_test < 1:
        raise ValueError(f"n_test must be >= 1 (the number of test images), got {n_test}")
    if size is None:
        size = min(PANEL_SIZE, n_test)
    size = int(size)
    if size < 1:
        raise ValueError(f"panel size must be >= 1, got {size}")
    if size > n_test:
        warnings.warn(f"panel size {size} asked for, but the test set has only {n_test} images: "
                      f"using all {n_test} (pass size<={n_test} to silence this)", UserWarning, stacklevel=2)
        size = n_test
    return np.random.default_rng(int(seed) + 3).choice(n_test, size=size, replace=False)


def as_panel(panel: Any) -> torch.Tensor:
    """A panel as a (P, C, S, S) tensor: torch tensors pass through, numpy arrays (and anything
    ``numpy.asarray`` takes) are wrapped without a copy where possible.

    Examples
    --------
    >>> as_panel(np.zeros((2, 3, 4, 4), dtype=np.uint8)).dtype
    torch.uint8
    """
    if not isinstance(panel, torch.Tensor):
        arr = np.asarray(panel)
        if not (arr.dtype.kind == "f" or arr.dtype == np.uint8):
            raise TypeError(f"panel must hold uint8 or floating images, got dtype {arr.dtype}")
        panel = torch.from_numpy(np.ascontiguousarray(arr))
    if panel.dim() != 4:
        raise ValueError(f"panel must be (P, C, S, S) images, got shape {tuple(panel.shape)}; "
                         "add a channel axis for grey images (panel[:, None])")
    if panel.shape[0] == 0:
        raise ValueError(f"the panel holds no images (shape {tuple(panel.shape)}); "
                         "pass at least one image (select_panel picks them from a test set)")
    if panel.is_floating_point():
        bad = ~torch.isfinite(panel).flatten(1).all(dim=1)
        if bool(bad.any()):
            idx = torch.nonzero(bad).flatten()[:10].tolist()
            raise BandscopeInputError(f"the panel holds NaN or inf in images {idx}: band losses would be NaN at "
                                      "every checkpoint (this is the data, not a diverged model); drop or fix "
                                      "those images")
        top = float(panel.max()) if panel.numel() else 0.0
        if top > 1.5:
            warnings.warn(f"the float panel has values up to {top:g}: it looks like [0, 255] pixels, while the "
                          "probe expects floats in [0, 1] (band losses would be in 255^2 units and the model "
                          "probed on inputs it never saw); pass the uint8 images or panel / 255",
                          UserWarning, stacklevel=3)
    return panel


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
    panel : Tensor or numpy array (P, C, S, S)
        The panel images (uint8, or float in [0, 1]); ``S`` a power of two.
    batch_size : int
        Panel images per forward pass.
    device : optional
        Where to run; default the model's device.
    keep_recon : bool
        Also return the reconstructions as float16 numpy (as the paper stores them).
    dtype : torch.dtype, optional
        Precision of the band-loss arithmetic: default float32 with the sums of squares
        accumulated in float64 (float32 on devices without float64, ``mps``), float64 for a
        float64 model; see :attr:`band_dtype`. The forward pass runs in the model's dtype (the
        panel is cast to it: float64, bfloat16, ... models work); the losses compare the model's
        output, upcast, with the float32 panel.
    output : callable, optional
        Maps the model's output to the reconstruction (e.g. the first element of a
        ``ModelOutput``); default the output itself.
    autocast : torch.dtype, optional
        Run the forward pass under ``torch.autocast(device_type, dtype=autocast)`` (e.g.
        ``torch.bfloat16`` to evaluate as mixed-precision training does). Default: no autocast
        of its own (an enclosing autocast context still applies).

    Examples
    --------
    >>> model = torch.nn.Identity()
    >>> p = BandProbe(torch.rand(4, 3, 8, 8))
    >>> r = p(model)
    >>> r.band_loss.tolist(), r.mse
    ([0.0, 0.0, 0.0, 0.0], 0.0)
    """

    def __init__(self, panel: Any, *, batch_size: int = 256, device: torch.device | str | None = None,
                 keep_recon: bool = False, dtype: torch.dtype | None = None,
                 autocast: torch.dtype | None = None, output: Callable[[Any], Any] | None = None) -> None:
        self.panel = as_panel(panel)
        self.output = output
        self.batch_size = int(batch_size)
        self.device = device
        self.keep_recon = keep_recon
        self.dtype = dtype
        self.autocast = autocast
        self.band_dtype: torch.dtype | None = dtype  # set at the first call when None

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> ProbeResult:
        """Band losses of ``model``'s panel reconstructions; the model's mode is restored."""
        model = unwrap(model)  # DDP's forward may sync buffers across ranks; the inner module does not
        was_training = model.training
        dev = torch.device(self.device) if self.device is not None else model_device(model)
        in_dtype = model_dtype(model)
        # band arithmetic in float32 with float64 sums (probe ~ its forward pass; band losses to
        # ~1e-7 relative) for float32 and narrower models; float64 models keep float64
        acc_dtype = wide_dtype(dev)
        if self.dtype is not None:
            band_dtype = self.dtype
        else:
            band_dtype = torch.float64 if in_dtype == torch.float64 and acc_dtype == torch.float64 else torch.float32
        self.band_dtype = band_dtype
        import contextlib

        ctx: contextlib.AbstractContextManager[Any] = (
            torch.autocast(dev.type, dtype=self.autocast) if self.autocast is not None else contextlib.nullcontext())
        model.eval()
        try:
            sums: torch.Tensor | None = None
            recons = []
            n = self.panel.shape[0]
            for i in range(0, n, self.batch_size):
                x = to_float(self.panel[i:i + self.batch_size].to(dev))
                with ctx:
                    out = model(x if in_dtype == x.dtype else x.to(in_dtype))
                if self.output is not None:
                    out = self.output(out)
                if not isinstance(out, torch.Tensor):
                    raise BandscopeInputError(
                        f"the model returned a {type(out).__name__}"
                        + (f" of {len(out)} items" if isinstance(out, (tuple, list, dict)) else "")
                        + ", not the reconstruction tensor the band probe compares with the panel; say which "
                        "output is the reconstruction: Monitor(..., probe_output=lambda out: out[0]) "
                        "(BandProbe(output=...)); the HuggingFace callback uses the first tensor by default")
                if out.shape != x.shape:
                    raise ValueError(f"model output shape {tuple(out.shape)} != input shape {tuple(x.shape)}")
                per = haar_band_losses(x, out.to(band_dtype), per_image=True, dtype=band_dtype,
                                       accumulate=acc_dtype)
                s = per.sum(dim=0)
                sums = s if sums is None else sums + s
                if self.keep_recon:
                    recons.append(out.to(torch.float16).cpu().numpy())
        finally:
            model.train(was_training)
        if sums is None:
            raise ValueError("the panel is empty: no image to probe")
        bl = (sums / n).cpu().numpy().astype(np.float64)
        return ProbeResult(bl, float(bl.sum()), np.concatenate(recons) if self.keep_recon else None)
