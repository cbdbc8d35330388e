"""The torch adapter: everything in bandscope that needs PyTorch.

Install with ``pip install "bandscope[torch]"``. Nothing outside this sub-package imports torch.
Names are resolved lazily from the modules below.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:  # fail early, with the fix, when torch is missing
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in the no-torch test
    raise ImportError(
        "bandscope.torch needs PyTorch: pip install 'bandscope[torch]' "
        "(pin torch with -c constraints.txt to get the CPU build)"
    ) from exc

if TYPE_CHECKING:  # the lazy names below, spelled out for type checkers and IDEs (tests/test_torch_typing.py)
    from ..lnp.options import LNPOptions as LNPOptions
    from ..schedule import geometric_schedule as geometric_schedule
    from ..schedule import paper_schedule as paper_schedule
    from .checkpoints import checkpoint_param_time as checkpoint_param_time
    from .checkpoints import load_checkpoint as load_checkpoint
    from .haar import haar_band_losses as haar_band_losses
    from .lnp import measure_lnp as measure_lnp
    from .lnp import register_lnp_handler as register_lnp_handler
    from .lnp.hook import LNPHook as LNPHook
    from .monitor import Monitor as Monitor
    from .monitor import open_geometric_schedule as open_geometric_schedule
    from .options import LiveForecastOptions as LiveForecastOptions
    from .options import ProbeOptions as ProbeOptions
    from .options import RunIdentity as RunIdentity
    from .options import SinkOptions as SinkOptions
    from .paramtime import ParamTimeTracker as ParamTimeTracker
    from .probe import BandProbe as BandProbe
    from .probe import ProbeResult as ProbeResult
    from .probe import as_panel as as_panel
    from .probe import select_panel as select_panel
    from .recorder import RunRecorder as RunRecorder
    from .reference.data import embedded_dataset as embedded_dataset
    from .reference.data import load_image_folder as load_image_folder
    from .reference.models import CNNAutoencoder as CNNAutoencoder
    from .reference.models import ViTAutoencoder as ViTAutoencoder
    from .reference.models import build_model as build_model
    from .reference.models import count_parameters as count_parameters
    from .reference.train import TrainConfig as TrainConfig
    from .reference.train import train as train

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
