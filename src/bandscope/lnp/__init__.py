"""The LNP decomposition of spectral reach: the components from gradient statistics
(:mod:`.statistics`), per-run summaries over log windows (:mod:`.windows`), the across-size
comparison (:mod:`.reach`) and their options (:mod:`.options`).

``bandscope.lnp.<name>`` is the public name of each function of :mod:`bandscope.lnp.statistics`,
resolved lazily (so that :mod:`.options` is light to import).
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "lnp_components",
    "spectral_position",
    "normalise_scales",
    "kernel_lnp",
    "inverse_participation_ratio",
    "log_windows",
    "window_mean",
    "top_fraction",
    "probe_ratio",
    "random_feature_lnp",
    "hutchinson_standard_error",
    "position_standard_error",
    "band_spectral_position",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("bandscope.lnp.statistics"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
