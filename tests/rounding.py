"""Rounding perturbations: float inputs moved by a few ulps, to measure and test conditioning.

Two machines (another OpenBLAS kernel, numpy with or without AVX-512) round the last bits of a
computation differently. A result that changes beyond its tolerance when its inputs move by a
few units in the last place (ulps) is one whose tolerance was tuned on one machine. This module
gives the tests and ``tools/certify_digits.py`` one way to make such moves:

- :func:`perturb` moves every nonzero finite element of a float array by an independent whole
  number of ulps drawn uniformly from ``[-ulps, ulps]`` (``x + k * np.spacing(x)``); exact zeros,
  NaN and infinities stay (rounding never moves them), as do integer, boolean and string arrays;
- :func:`perturb_dataset` does the same to every float data variable of an xarray Dataset (a run);
- :func:`env_ulps` reads ``BANDSCOPE_PERTURB_ULPS`` (0 or unset: no perturbation), which the
  rounding lane of ``.ci/run`` (``make test-rounding``) sets; the ``rounding`` fixture of
  ``tests/conftest.py`` is a :class:`Rounding` with those ulps, seeded from the test's node id
  (and ``BANDSCOPE_PERTURB_SEED``, default 0), that the numeric tests apply to their inputs.
"""
from __future__ import annotations

import os
import zlib

import numpy as np

ENV = "BANDSCOPE_PERTURB_ULPS"
SEED_ENV = "BANDSCOPE_PERTURB_SEED"


def env_ulps() -> int:
    """Ulps from ``BANDSCOPE_PERTURB_ULPS`` (0 when unset or empty); refuses anything else."""
    raw = os.environ.get(ENV, "").strip()
    if raw == "":
        return 0
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"{ENV}={raw!r}: expected a whole number of ulps >= 0 (e.g. {ENV}=4)")
    return n


def env_seed() -> int:
    """Draw number from ``BANDSCOPE_PERTURB_SEED`` (0 when unset): another seed, other ulps."""
    raw = os.environ.get(SEED_ENV, "").strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV}={raw!r}: expected a whole number (e.g. {SEED_ENV}=1)") from None


def rng_for(key: str, seed: int = 0) -> np.random.Generator:
    """A generator seeded from a text key (a test's node id) and a draw number, stable across runs."""
    return np.random.default_rng([zlib.crc32(key.encode()), seed])


def perturb(x, ulps: int, rng: np.random.Generator):
    """``x`` with each nonzero finite float moved by a uniform whole number of ulps in [-ulps, ulps].

    Non-float input (ints, bools, strings) and ``ulps == 0`` return ``x`` unchanged; a Python
    float returns a Python float.

    >>> x = np.array([1.0, 0.0, np.nan, -3.0])
    >>> y = perturb(x, 4, np.random.default_rng(0))
    >>> bool(np.all(np.abs(y - x)[[0, 3]] <= 4 * np.abs(np.spacing(x[[0, 3]])))), y[1], bool(np.isnan(y[2]))
    (True, np.float64(0.0), True)
    """
    if ulps == 0:
        return x
    scalar = isinstance(x, float)
    a = np.asarray(x)
    if a.dtype.kind != "f":
        return x
    k = rng.integers(-ulps, ulps + 1, size=a.shape).astype(a.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        moved = a + k * np.spacing(a)
    # zeros, NaN and infinities stay; so does a float that would round past the largest finite one
    out = np.where(np.isfinite(a) & (a != 0) & np.isfinite(moved), moved, a).astype(a.dtype)
    return float(out) if scalar else out


def perturb_dataset(ds, ulps: int, rng: np.random.Generator):
    """A copy of an xarray Dataset with every float data variable perturbed (coordinates kept)."""
    if ulps == 0:
        return ds
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if var.dtype.kind == "f":
            out[name] = var.copy(data=perturb(var.values, ulps, rng))
    return out


class Rounding:
    """Apply one perturbation to a test's inputs: ``rounding(x)`` for arrays, floats and Datasets.

    ``Rounding(0, ...)`` (outside the rounding lane) returns every input as it is.
    """

    def __init__(self, ulps: int, rng: np.random.Generator):
        self.ulps = int(ulps)
        self.rng = rng

    def __bool__(self) -> bool:
        return self.ulps > 0

    def __call__(self, x):
        if self.ulps == 0:
            return x
        if hasattr(x, "data_vars"):  # xarray Dataset
            return perturb_dataset(x, self.ulps, self.rng)
        if hasattr(x, "dims") and hasattr(x, "copy"):  # xarray DataArray: labels kept
            return x.copy(data=perturb(x.values, self.ulps, self.rng))
        return perturb(x, self.ulps, self.rng)

    def __repr__(self) -> str:
        return f"Rounding(ulps={self.ulps})"
