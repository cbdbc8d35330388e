"""The LNP decomposition of spectral reach from gradient statistics (:mod:`.statistics`).

``bandscope.lnp.<name>`` is the public name of each function of :mod:`bandscope.lnp.statistics`.
"""
from .statistics import *  # noqa: F403
from .statistics import __all__  # noqa: F401
