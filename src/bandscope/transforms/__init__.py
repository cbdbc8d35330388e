"""Transforms of raw training signals: Haar band losses (:mod:`.bands`) and parameter time (:mod:`.paramtime`).

The bottom layer of the core: numpy kernels and their xarray wrappers, no analysis.
"""
