"""The LNP decomposition of spectral reach: the components from gradient statistics
(:mod:`.statistics`), per-run summaries over log windows (:mod:`.windows`), the across-size
comparison (:mod:`.reach`) and their options (:mod:`.options`).

``bandscope.lnp.<name>`` is the public name of each function of :mod:`bandscope.lnp.statistics`,
resolved lazily (so that :mod:`.options` is light to import).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the lazy names below, spelled out for type checkers and IDEs (tests/test_typing.py)
    from .statistics import band_spectral_position as band_spectral_position
    from .statistics import hutchinson_standard_error as hutchinson_standard_error
    from .statistics import inverse_participation_ratio as inverse_participation_ratio
    from .statistics import kernel_lnp as kernel_lnp
    from .statistics import lnp_components as lnp_components
    from .statistics import log_windows as log_windows
    from .statistics import normalise_scales as normalise_scales
    from .statistics import position_standard_error as position_standard_error
    from .statistics import probe_ratio as probe_ratio
    from .statistics import random_feature_lnp as random_feature_lnp
    from .statistics import spectral_position as spectral_position
    from .statistics import top_fraction as top_fraction
    from .statistics import window_mean as window_mean

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
