"""The torch adapter: everything in bandscope that needs PyTorch.

Install with ``pip install "bandscope[torch]"``. Nothing outside this sub-package imports torch.
Names are resolved lazily from the modules below.
"""
from __future__ import annotations

import importlib
from typing import Any

try:  # fail early, with the fix, when torch is missing
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in the no-torch test
    raise ImportError(
        "bandscope.torch needs PyTorch: pip install 'bandscope[torch]' "
        "(pin torch with -c constraints.txt to get the CPU build)"
    ) from exc

_LAZY = {
    # issue 3: recording a run
    "haar_band_losses": "bandscope.torch.haar",
    "ParamTimeTracker": "bandscope.torch.paramtime",
    "paper_schedule": "bandscope.schedule",
    "geometric_schedule": "bandscope.schedule",
    "BandProbe": "bandscope.torch.probe",
    "ProbeResult": "bandscope.torch.probe",
    "select_panel": "bandscope.torch.probe",
    "RunRecorder": "bandscope.torch.recorder",
    "CNNAutoencoder": "bandscope.torch.reference.models",
    "ViTAutoencoder": "bandscope.torch.reference.models",
    "build_model": "bandscope.torch.reference.models",
    "count_parameters": "bandscope.torch.reference.models",
    "embedded_dataset": "bandscope.torch.reference.data",
    "load_image_folder": "bandscope.torch.reference.data",
    "train": "bandscope.torch.reference.train",
    "TrainConfig": "bandscope.torch.reference.train",
    "load_checkpoint": "bandscope.torch.checkpoints",
    "checkpoint_param_time": "bandscope.torch.checkpoints",
    # issue 4: LNP
    "measure_lnp": "bandscope.torch.lnp",
    "LNPHook": "bandscope.torch.lnp.hook",
    "register_lnp_handler": "bandscope.torch.lnp",
    # one object for a training loop; framework callbacks live in .lightning / .hf (optional extras)
    "Monitor": "bandscope.torch.monitor",
    "open_geometric_schedule": "bandscope.torch.monitor",
    "as_panel": "bandscope.torch.probe",
    # the options, each validated once (docs/torch.md, "Options")
    "LNPOptions": "bandscope.lnp.options",
    "ProbeOptions": "bandscope.torch.options",
    "RunIdentity": "bandscope.torch.options",
    "SinkOptions": "bandscope.torch.options",
    "LiveForecastOptions": "bandscope.torch.options",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bandscope.torch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
