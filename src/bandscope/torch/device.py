"""Devices and precisions: which float type holds exact-ish sums on a device, and where a model lives."""
from __future__ import annotations

import torch

__all__ = ["wide_dtype", "model_device", "model_dtype", "resolve_device", "unwrap"]


def wide_dtype(device: torch.device | str) -> torch.dtype:
    """float64 where the device has it, else float32 (Apple ``mps`` has no float64).

    Used for band losses of a panel and for the parameter-time accumulators.

    Examples
    --------
    >>> wide_dtype("cpu"), wide_dtype("mps")
    (torch.float64, torch.float32)
    """
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module) or inner is model:
            return model
        model = inner


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU for a parameterless model."""
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """Floating dtype of the model's first floating parameter (float32 if none)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> cuda if available, else mps if available, else cpu; otherwise as given
    (``"cuda"`` without a GPU raises with the fix)."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but torch.cuda.is_available() is False "
                         f"(torch {torch.__version__}); use --device cpu or --device auto")
    return dev
