"""The run Dataset: construction and validation of the format in ``docs/format.md``.

Every producer of runs (the CSV/Parquet/netCDF readers, the torch recorder, the synthetic
generator) builds its Dataset with :func:`make_run`, and every consumer checks it with
:func:`validate_run`, so the contract lives in one place.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

FORMAT = "run/1"

_VAR_ATTRS = {
    "band_loss": {
        "units": "squared pixel value",
        "long_name": "Haar band loss L_i",
        "definition": "sum of squared orthogonal Haar coefficients of band i of the panel "
        "error / number of pixel values (key search A.6); sums to the pixel MSE",
    },
    "param_time": {
        "units": "parameter-space L2 distance",
        "long_name": "parameter time s_k (chord)",
        "definition": "s_k = sum_{m<=k} ||theta_m - theta_{m-1}||_2 between saved checkpoints "
        "(key search A.7)",
    },
    "step": {"units": "optimizer steps", "long_name": "raw training time t"},
    "epoch": {"units": "epochs", "long_name": "epochs completed"},
    "arc_length": {
        "units": "parameter-space L2 distance",
        "long_name": "parameter time (exact arc length)",
        "definition": "sum over every optimizer step of ||theta_t - theta_{t-1}||_2",
    },
    "mse": {"units": "squared pixel value", "long_name": "pixel MSE of the panel as logged"},
}


def band_resolutions(n_bands: int) -> np.ndarray:
    """Band coordinate for ``n_bands`` dyadic bands: 1, 2, 4, ..., 2**(n_bands-1)."""
    return 2 ** np.arange(int(n_bands), dtype=np.int64)


def make_run(
    band_loss,
    param_time,
    step=None,
    *,
    bands: Sequence[int] | None = None,
    epoch=None,
    arc_length=None,
    mse=None,
    name: str = "run",
    arch: str = "",
    seed: int = -1,
    source: str = "",
    extra_attrs: Mapping | None = None,
) -> xr.Dataset:
    """Build a validated run Dataset (``docs/format.md``).

    Parameters
    ----------
    band_loss : array (checkpoint, band)
        Band losses L_i at each saved checkpoint.
    param_time : array (checkpoint,)
        Parameter time s_k, non-decreasing.
    step : array (checkpoint,), optional
        Optimizer steps; ``-1`` entries mean unknown.
    bands : sequence of int, optional
        Band resolutions; default 1, 2, 4, ...

    Examples
    --------
    >>> ds = make_run([[2.0, 1.0], [1.0, 0.5]], [0.0, 1.5], [0, 10])
    >>> ds.band_loss.dims
    ('checkpoint', 'band')
    >>> [int(b) for b in ds.band]
    [1, 2]
    """
    bl = np.asarray(band_loss, dtype=np.float64)
    if bl.ndim != 2:
        raise ValueError(f"band_loss must be 2-D (checkpoint, band), got shape {bl.shape}")
    k, nb = bl.shape
    pt = np.asarray(param_time, dtype=np.float64).reshape(-1)
    if pt.shape != (k,):
        raise ValueError(f"param_time has {pt.size} values, band_loss has {k} checkpoints")
    band_coord = band_resolutions(nb) if bands is None else np.asarray(bands, dtype=np.int64)
    if band_coord.shape != (nb,):
        raise ValueError(f"{band_coord.size} band labels for {nb} band columns")
    st = np.full(k, -1, dtype=np.int64) if step is None else np.asarray(step).astype(np.int64)
    if st.shape != (k,):
        raise ValueError(f"step has {st.size} values, expected {k}")
    data_vars = {
        "band_loss": (("checkpoint", "band"), bl, dict(_VAR_ATTRS["band_loss"])),
        "param_time": (("checkpoint",), pt, dict(_VAR_ATTRS["param_time"])),
        "step": (("checkpoint",), st, dict(_VAR_ATTRS["step"])),
    }
    for key, val in (("epoch", epoch), ("arc_length", arc_length), ("mse", mse)):
        if val is not None:
            arr = np.asarray(val, dtype=np.float64).reshape(-1)
            if arr.shape != (k,):
                raise ValueError(f"{key} has {arr.size} values, expected {k}")
            data_vars[key] = (("checkpoint",), arr, dict(_VAR_ATTRS[key]))
    attrs = {
        "name": str(name),
        "arch": str(arch),
        "seed": int(seed),
        "source": str(source),
        "bandscope_format": FORMAT,
    }
    if extra_attrs:
        attrs.update(extra_attrs)
    ds = xr.Dataset(
        data_vars,
        coords={
            "checkpoint": ("checkpoint", np.arange(k, dtype=np.int64)),
            "band": ("band", band_coord, {"units": "pixels per side", "long_name": "band resolution r"}),
        },
        attrs=attrs,
    )
    validate_run(ds)
    return ds


def validate_run(ds: xr.Dataset, *, mse_rtol: float = 1e-3) -> xr.Dataset:
    """Check a single run Dataset against the format; raise ``ValueError`` naming the problem.

    Checks: required variables and dims, dyadic band coordinate, finite non-negative band
    losses, non-decreasing finite ``param_time``, and (if ``mse`` is present) that the band
    losses sum to it within ``mse_rtol`` (float16 panels round at ~1e-3).
    """
    for var in ("band_loss", "param_time"):
        if var not in ds:
            raise ValueError(f"run is missing variable {var!r}; has {sorted(ds.data_vars)}")
    if ds["band_loss"].dims != ("checkpoint", "band"):
        raise ValueError(f"band_loss dims must be ('checkpoint', 'band'), got {ds['band_loss'].dims}")
    bands = np.asarray(ds["band"].values)
    expected = band_resolutions(bands.size)
    if not np.array_equal(bands, expected):
        raise ValueError(f"band coordinate must be {expected.tolist()}, got {bands.tolist()}")
    bl = ds["band_loss"].values
    pt = ds["param_time"].values
    bad = ~np.isfinite(bl).all(axis=1) | ~np.isfinite(pt)
    if bad.any():
        raise ValueError(
            f"NaN or inf in band_loss/param_time at checkpoints {np.flatnonzero(bad).tolist()}"
        )
    if (bl < 0).any():
        raise ValueError(f"negative band loss at checkpoints {np.flatnonzero((bl < 0).any(axis=1)).tolist()}")
    dec = np.flatnonzero(np.diff(pt) < 0)
    if dec.size:
        i = int(dec[0])
        raise ValueError(
            f"param_time decreases from {pt[i]!r} (checkpoint {i}) to {pt[i + 1]!r} "
            f"(checkpoint {i + 1}); parameter time is cumulative and must be non-decreasing"
        )
    if pt.size >= 2 and not pt[-1] > pt[0]:
        raise ValueError(
            f"param_time does not advance (it is {pt[0]!r} at every checkpoint); parameter time "
            "is the distance the weights travelled and the analysis is in its units"
        )
    if "mse" in ds:
        mse = ds["mse"].values
        total = bl.sum(axis=1)
        ok = np.isclose(total, mse, rtol=mse_rtol, atol=1e-12) | ~np.isfinite(mse)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise ValueError(
                f"band losses sum to {total[i]!r} at checkpoint {i} but mse column is {mse[i]!r}: "
                "the bands are not a complete orthogonal split of this MSE"
            )
    return ds
