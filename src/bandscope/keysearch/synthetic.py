"""Synthetic runs with a known truth, for tests, benchmarks and the stand-in reference runs.

These are *not* training runs. Each band's loss is generated as

    L_i(s) = floor_i + A_i * exp(-(max(s - s0_i, 0) / omega_i) ** beta_i) + noise

in a parameter time s(t) = b * t**gamma, on the paper's 53-point checkpoint schedule
(key search A.5), with coarse-to-fine ordering built in (later onset s0_i, wider omega_i,
higher floor_i, smaller A_i for finer bands). The true parameters are kept in ``attrs`` so
tests can check what the analysis recovers.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..run import band_resolutions, make_run
from ..schedule import PAPER_EPOCHS


def make_run_synthetic(
    seed: int = 0,
    *,
    n_bands: int = 7,
    arch: str = "synthetic",
    steps_per_epoch: int = 1427,
    noise: float = 0.01,
    gamma: float = 0.37,
    name: str | None = None,
    n_checkpoints: int | None = None,
) -> xr.Dataset:
    """One synthetic run with known per-band Weibull truth.

    Parameters
    ----------
    seed : int
        Seeds the per-run jitter of the true parameters and the noise.
    noise : float
        Relative (multiplicative, log-normal) noise on each band's residual and floor.
    n_checkpoints : int, optional
        Instead of the paper's 53-point schedule, ``n_checkpoints`` checkpoints evenly spaced in
        steps over the same 50 epochs (a long run logged every few steps, as language-model runs
        are; at least 10). ``steps_per_epoch`` is raised if needed so that the steps are distinct.

    Returns
    -------
    xarray.Dataset
        A run Dataset (``docs/format.md``) with ``attrs`` ``true_A``, ``true_omega``,
        ``true_beta``, ``true_onset``, ``true_floor`` (lists over bands) and
        ``synthetic = 1``.

    Examples
    --------
    >>> ds = make_run_synthetic(1)
    >>> ds.sizes['checkpoint'], ds.sizes['band']
    (53, 7)
    """
    rng = np.random.default_rng(seed)
    j = np.arange(n_bands, dtype=np.float64)
    jit = lambda scale: np.exp(rng.normal(0.0, scale, n_bands))  # noqa: E731
    if n_checkpoints is None:
        epochs = PAPER_EPOCHS
        step = np.round(epochs * steps_per_epoch).astype(np.int64)
    else:
        n = int(n_checkpoints)
        if n < 10:
            raise ValueError(f"n_checkpoints must be >= 10, got {n_checkpoints!r}")
        total = max(50 * int(steps_per_epoch), n - 1)
        step = np.round(np.linspace(0.0, total, n)).astype(np.int64)
        epochs = (step * (50.0 / total)).astype(np.float64)
    b = 0.9 * jit(0.05)[0]
    s = b * step.astype(np.float64) ** gamma
    s_max = s[-1]
    # coarse-to-fine structure, fractions of the final parameter time
    A = 0.02 * 0.62**j * jit(0.08)
    floor = 4e-4 * 1.6**j * jit(0.05)
    onset = s_max * (0.002 + 0.012 * j) * jit(0.1)
    omega = s_max * (0.035 + 0.025 * j) * jit(0.1)
    beta = np.clip(1.15 + 0.05 * rng.normal(size=n_bands), 0.5, 3.0)
    beta[0] = 0.9
    x = np.clip(s[:, None] - onset[None, :], 0.0, None)
    resid = A * np.exp(-((x / omega) ** beta))
    eps = rng.normal(0.0, noise, size=resid.shape)
    band_loss = floor * np.exp(0.05 * eps) + resid * np.exp(eps)
    return make_run(
        band_loss,
        s,
        step,
        bands=band_resolutions(n_bands),
        epoch=epochs,
        mse=band_loss.sum(axis=1),
        name=name or f"{arch}-seed{seed}",
        arch=arch,
        seed=seed,
        source="bandscope.keysearch.synthetic.make_run_synthetic (not a training run)",
        extra_attrs={
            "synthetic": 1,
            "true_A": A.tolist(),
            "true_omega": omega.tolist(),
            "true_beta": beta.tolist(),
            "true_onset": onset.tolist(),
            "true_floor": floor.tolist(),
            "noise": noise,
        },
    )


def make_runs_synthetic(n_runs: int = 12, *, n_bands: int = 7, noise: float = 0.01) -> list[xr.Dataset]:
    """``n_runs`` synthetic runs labelled ``synthetic-cnn`` / ``synthetic-vit`` alternately
    by halves, seeds 45, 46, ... (the labels only group them; the generator is the same)."""
    half = (n_runs + 1) // 2  # the first ceil(n/2) runs are "cnn", the rest "vit"
    runs = []
    for i in range(n_runs):
        vit = i >= half
        arch = "synthetic-vit" if vit else "synthetic-cnn"
        seed = 45 + (i - half if vit else i)
        runs.append(
            make_run_synthetic(seed + (1000 if vit else 0), n_bands=n_bands, arch=arch,
                               noise=noise, name=f"{arch}-seed{seed}")
        )
        runs[-1].attrs["seed"] = seed
    return runs
