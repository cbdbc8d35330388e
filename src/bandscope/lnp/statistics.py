"""LNP decomposition from gradient statistics (spectral reach, section 3 and appendices A-C).

The linear loss decrease of a gradient step factorises as (``docs/lnp.md``, ``LNP.md``)

    ||grad L||^2 = L_scale * N_scale * P
    L_scale = ||dL/df||^2            loss scale  (script L)
    N_scale = Tr K = sum_n ||J_n||_F^2  network scale (script N, trace of the eNTK)
    P = ||grad L||^2 / (L_scale * N_scale)   spectral position, 0 <= P <= 1

and, with a step on batch A and the loss read on batch B,

    P_AB = grad L_B . grad L_A / sqrt(L_A L_B N_A N_B),   -1 <= P_AB <= 1.

Batch-size normalisation (appendix A.2): with M loss-reduction units, ``L~ = M * L`` and
``N~ = N / M``; their product and P do not change.

This module is pure numpy/xarray: it works on statistics already measured (for instance by
:func:`bandscope.torch.measure_lnp`). Numpy kernels are named ``_name(..., axis)``; the public
functions take and return xarray objects.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .. import schema

if TYPE_CHECKING:
    from typing import Any, Literal

    import numpy.typing as npt

    #: a statistic: a DataArray (labelled), or a number or array (plain)
    _Stat = xr.DataArray | npt.ArrayLike
    #: window labels: a DataArray or array along the step dim, a log_windows Dataset, or None (the coord)
    _Window = xr.DataArray | xr.Dataset | npt.ArrayLike | None

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

# --------------------------------------------------------------------------------------------
# numpy kernels
# --------------------------------------------------------------------------------------------
def _spectral_position(dot: npt.ArrayLike, la: npt.ArrayLike, na: npt.ArrayLike, lb: npt.ArrayLike | None = None,
                       nb: npt.ArrayLike | None = None) -> np.ndarray:
    """P = dot / (la na) (self) or dot / sqrt(la lb na nb) (cross); elementwise."""
    dot = np.asarray(dot, dtype=np.float64)
    la = np.asarray(la, dtype=np.float64)
    na = np.asarray(na, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if lb is None:
            return dot / (la * na)
        lb = np.asarray(lb, dtype=np.float64)
        nb = np.asarray(nb, dtype=np.float64)
        return dot / (np.sqrt(la * lb) * np.sqrt(na * nb))


def _invalid_reason(named: Sequence[tuple[str, np.ndarray]], *, dot: npt.ArrayLike | None = None,
                    nonneg_dot: bool = False) -> np.ndarray:
    """Per-element reason ('' when valid) why P is meaningless for these statistics."""
    arrays = [np.asarray(a, dtype=np.float64) for _, a in named]
    shape = np.broadcast_shapes(*(a.shape for a in arrays), *(() if dot is None else (np.shape(dot),)))
    reason = np.full(shape, "", dtype=object)

    def mark(mask: np.ndarray, text: str) -> None:
        mask = np.broadcast_to(mask, shape)
        empty = (reason == "") & mask
        reason[empty] = text

    if dot is not None:
        d = np.asarray(dot, dtype=np.float64)
        mark(~np.isfinite(d), "gradient product is NaN or inf")
        if nonneg_dot:
            mark(d < 0, "grad_norm_sq < 0 (a squared norm cannot be negative)")
    for (name, _), a in zip(named, arrays):
        mark(~np.isfinite(a), f"{name} is NaN or inf")
        mark(a == 0, f"{name} == 0 (P is 0/0: zero output gradient or constant network)")
        mark(a < 0, f"{name} < 0 (a squared norm cannot be negative)")
    return reason.astype(str)


def _normalise_scales(loss_scale: npt.ArrayLike, network_scale: npt.ArrayLike,
                      n_units: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(M * L, N / M): batch-size normalised loss and network scales (appendix A.2)."""
    m = np.asarray(n_units, dtype=np.float64)
    return np.asarray(loss_scale, dtype=np.float64) * m, np.asarray(network_scale, dtype=np.float64) / m


def _inverse_participation_ratio(eigenvalues: npt.ArrayLike, axis: int = -1) -> np.ndarray:
    """sum(lam^2) / sum(lam)^2 along ``axis``."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return np.sum(lam**2, axis=axis) / np.sum(lam, axis=axis) ** 2


def _top_fraction_mask(values: npt.ArrayLike, labels: npt.ArrayLike, fraction: float) -> npt.NDArray[np.bool_]:
    """Boolean mask keeping, inside each label group, the ceil(fraction * n) largest values."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels)
    keep = np.zeros(values.shape, dtype=bool)
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        v = values[idx]
        finite = idx[np.isfinite(v)]
        if finite.size == 0:
            continue
        k = int(np.ceil(fraction * finite.size))
        order = np.argsort(values[finite], kind="stable")[::-1][:k]
        keep[finite[order]] = True
    return keep


# --------------------------------------------------------------------------------------------
# public, labelled API
# --------------------------------------------------------------------------------------------
def _as_da(x: _Stat, name: str) -> xr.DataArray:
    if isinstance(x, xr.DataArray):
        return x.rename(name)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        return xr.DataArray(arr, name=name)
    if arr.ndim == 1:
        return xr.DataArray(arr, dims=("lnp_step",), name=name)
    return xr.DataArray(arr, dims=tuple(f"dim_{i}" for i in range(arr.ndim)), name=name)


def _check_units(n_units: _Stat | None, name: str) -> _Stat | None:
    if n_units is None:
        return None
    m = np.asarray(n_units.values if isinstance(n_units, xr.DataArray) else n_units, dtype=float)
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise ValueError(f"{name} must be a positive count of loss-reduction units, got {n_units!r}")
    return n_units


def spectral_position(grad_dot: _Stat, loss_scale: _Stat, network_scale: _Stat, loss_scale_b: _Stat | None = None,
                      network_scale_b: _Stat | None = None) -> xr.DataArray | np.ndarray:
    """Spectral position from the three LNP statistics (no validity checks; see lnp_components).

    Self: ``P = ||grad L||^2 / (loss_scale * network_scale)`` (spectral reach Eq. 49);
    cross (``loss_scale_b`` and ``network_scale_b`` given):
    ``P_AB = grad L_B . grad L_A / sqrt(loss_scale loss_scale_b network_scale network_scale_b)``.
    Accepts numpy arrays, scalars or DataArrays (broadcast by name).

    Examples
    --------
    >>> float(spectral_position(2.0, 4.0, 1.0))
    0.5
    >>> float(spectral_position(-1.0, 1.0, 1.0, 4.0, 1.0))
    -0.5
    """
    args = [grad_dot, loss_scale, network_scale]
    if (loss_scale_b is None) != (network_scale_b is None):
        raise ValueError("give both loss_scale_b and network_scale_b for the cross position, or neither")
    if loss_scale_b is not None:
        args += [loss_scale_b, network_scale_b]
    if any(isinstance(a, xr.DataArray) for a in args):
        return xr.apply_ufunc(_spectral_position, *args, dask="parallelized", output_dtypes=[float])
    return _spectral_position(*args)


def normalise_scales(loss_scale: npt.ArrayLike, network_scale: npt.ArrayLike,
                     n_units: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Batch-size normalised scales ``(M * loss_scale, network_scale / M)`` (appendix A.2).

    M is the number of loss-reduction units of the loss as reduced (N samples for a per-sample
    mean, N*T tokens, N*O elements for an element-wise mean MSE; 1 for a sum). The product
    and P are unchanged.

    Examples
    --------
    >>> [float(v) for v in normalise_scales(0.25, 8.0, 4)]
    [1.0, 2.0]
    """
    _check_units(n_units, "n_units")
    return _normalise_scales(loss_scale, network_scale, n_units)


def lnp_components(
    loss_scale: _Stat,
    network_scale: _Stat,
    grad_norm_sq: _Stat | None = None,
    *,
    n_units: _Stat | None = None,
    grad_dot: _Stat | None = None,
    loss_scale_b: _Stat | None = None,
    network_scale_b: _Stat | None = None,
    n_units_b: _Stat | None = None,
    invalid: Literal["nan", "raise"] = "nan",
) -> xr.Dataset:
    """LNP components ℒ, 𝒩, P (self and/or cross), raw and batch-size normalised.

    Parameters
    ----------
    loss_scale, network_scale : array-like or DataArray
        ℒ_A = ||dL_A/df||^2 and 𝒩_A = Tr K_AA of the update batch A (raw, for the loss with
        its own reduction).
    grad_norm_sq : array-like, optional
        ||grad L_A||^2; gives the self position ``spectral_position``.
    n_units, n_units_b : int or array-like, optional
        Loss-reduction unit counts M_A, M_B; give ``*_norm`` variables ℒ~ = M ℒ, 𝒩~ = 𝒩/M.
    grad_dot, loss_scale_b, network_scale_b : array-like, optional
        grad L_B . grad L_A and the scales of the evaluation batch B; give
        ``spectral_position_cross`` = grad_dot / sqrt(ℒ_A ℒ_B 𝒩_A 𝒩_B) (LNP.md).
    invalid : {"nan", "raise"}
        Where a position is meaningless (a scale that is zero, negative, NaN or inf, a negative
        squared norm), either set it to NaN and say why in ``reason`` /
        ``reason_cross`` (default) or raise ``ValueError`` with the first offending value.

    Returns
    -------
    xarray.Dataset
        The inputs, ``spectral_position`` and/or ``spectral_position_cross``, the normalised
        scales when unit counts were given, and string ``reason`` variables ('' = valid).

    Examples
    --------
    >>> ds = lnp_components([0.5, 0.0], [4.0, 4.0], [1.0, 0.0], n_units=2)
    >>> ds.spectral_position.values.tolist()
    [0.5, nan]
    >>> ds.reason.values.tolist()[1]
    'loss_scale == 0 (P is 0/0: zero output gradient or constant network)'
    >>> ds.loss_scale_norm.values.tolist()
    [1.0, 0.0]
    """
    if invalid not in ("nan", "raise"):
        raise ValueError(f"invalid must be 'nan' or 'raise', got {invalid!r}")
    if grad_norm_sq is None and grad_dot is None:
        raise ValueError("give grad_norm_sq (self position) and/or grad_dot (cross position)")
    cross = grad_dot is not None
    if cross and (loss_scale_b is None or network_scale_b is None):
        raise ValueError("the cross position needs loss_scale_b and network_scale_b as well as grad_dot")
    _check_units(n_units, "n_units")
    _check_units(n_units_b, "n_units_b")

    named = {"loss_scale": loss_scale, "network_scale": network_scale}
    if grad_norm_sq is not None:
        named["grad_norm_sq"] = grad_norm_sq
    if cross:
        named.update(grad_dot=grad_dot, loss_scale_b=loss_scale_b, network_scale_b=network_scale_b)
    das = xr.broadcast(*[_as_da(v, k) for k, v in named.items()])
    ds = xr.Dataset({k: d for k, d in zip(named, das)})
    out = {}
    if grad_norm_sq is not None:
        reason = _invalid_reason(
            [("loss_scale", ds.loss_scale.values), ("network_scale", ds.network_scale.values)],
            dot=ds.grad_norm_sq.values,
            nonneg_dot=True,
        )
        p = _spectral_position(ds.grad_norm_sq.values, ds.loss_scale.values, ds.network_scale.values)
        out["spectral_position"] = (p, reason, "reason")
    if cross:
        reason = _invalid_reason(
            [
                ("loss_scale", ds.loss_scale.values),
                ("network_scale", ds.network_scale.values),
                ("loss_scale_b", ds.loss_scale_b.values),
                ("network_scale_b", ds.network_scale_b.values),
            ],
            dot=ds.grad_dot.values,
        )
        p = _spectral_position(
            ds.grad_dot.values,
            ds.loss_scale.values,
            ds.network_scale.values,
            ds.loss_scale_b.values,
            ds.network_scale_b.values,
        )
        out["spectral_position_cross"] = (p, reason, "reason_cross")
    for var, (p, reason, _) in out.items():
        with np.errstate(invalid="ignore"):
            over = (reason == "") & (np.abs(p) > 1 + 1e-9)
        if over.any():
            warnings.warn(
                f"{int(over.sum())} value(s) of {var} lie outside the Cauchy-Schwarz bound "
                f"(|P| <= 1; largest {float(np.nanmax(np.abs(p[over]))):.4g}): the statistics are "
                "inconsistent, e.g. a Hutchinson estimate of the network scale below its true value",
                stacklevel=2,
            )
    dims = ds.loss_scale.dims
    for var, (p, reason, rname) in out.items():
        bad = reason != ""
        if bad.any() and invalid == "raise":
            i = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), bad.shape)
            vals = {k: float(ds[k].values[i]) for k in named}
            raise ValueError(f"{var} is meaningless at index {tuple(int(j) for j in i)}: "
                             f"{reason[i]}; statistics there: {vals}")
        p = np.where(bad, np.nan, p)
        ds[var] = (dims, p, schema.attrs("lnp", var))
        ds[rname] = (dims, reason, schema.attrs("lnp", rname))
    for k in named:
        ds[k].attrs.update(schema.attrs("lnp", k))
    for suffix, m, ls, ns in (("", n_units, "loss_scale", "network_scale"),
                              ("_b", n_units_b, "loss_scale_b", "network_scale_b")):
        if m is None or ls not in ds:
            continue
        lt, nt = _normalise_scales(ds[ls].values, ds[ns].values,
                                   m.values if isinstance(m, xr.DataArray) else m)
        ds[f"{ls}_norm"] = (dims, np.broadcast_to(lt, ds[ls].shape).copy(), schema.attrs("lnp", f"{ls}_norm"))
        ds[f"{ns}_norm"] = (dims, np.broadcast_to(nt, ds[ns].shape).copy(), schema.attrs("lnp", f"{ns}_norm"))
        ds.attrs[f"n_units{suffix}"] = np.asarray(m.values if isinstance(m, xr.DataArray) else m).tolist()
    return ds


def hutchinson_standard_error(probes: npt.ArrayLike, per_sample: npt.ArrayLike | None = None) -> float:
    """Standard error of a Hutchinson trace estimate averaged over probes (LNP.md, estimating 𝒩).

    ``probes``: the estimate of each probe (length n_probes). ``per_sample`` (n_probes, N),
    optional: the per-sample terms ||J_nᵀu_n||² of each probe; samples draw independent probes,
    so Var = Σ_n var_n / n_probes (a tighter estimate than the spread of the probe totals).
    Fewer than two probes give NaN.

    Examples
    --------
    >>> round(hutchinson_standard_error([1.0, 3.0]), 6)
    1.0
    >>> hutchinson_standard_error([2.0])
    nan
    """
    vals = np.asarray(probes, dtype=np.float64)
    k = vals.size
    if k < 2:
        return float("nan")
    if per_sample is not None:
        s = np.asarray(per_sample, dtype=np.float64)
        return float(np.sqrt(s.var(axis=0, ddof=1).sum() / k))
    return float(vals.std(ddof=1) / np.sqrt(k))


def position_standard_error(position: npt.ArrayLike, network_scale: npt.ArrayLike,
                            network_scale_se: npt.ArrayLike) -> float | np.ndarray:
    """First-order standard error of P = ||∇L||²/(ℒ𝒩) from the error of 𝒩: |P| · se(𝒩)/𝒩.

    Examples
    --------
    >>> round(position_standard_error(0.2, 10.0, 1.0), 12)
    0.02
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(np.asarray(network_scale) > 0, np.asarray(network_scale_se) / np.asarray(network_scale),
                       np.nan)
    out = np.abs(np.asarray(position, dtype=np.float64)) * rel
    return float(out) if np.ndim(out) == 0 else out


def band_spectral_position(band_grad_norm_sq: npt.ArrayLike, band_loss_scale: npt.ArrayLike,
                           network_scale: float | np.ndarray) -> np.ndarray:
    """Per-band spectral position P_i = ||Jᵀg_i||² / (||g_i||² 𝒩) (LNP.md, band-resolved; NaN if g_i = 0).

    Examples
    --------
    >>> band_spectral_position([2.0, 0.0], [1.0, 0.0], 4.0).tolist()
    [0.5, nan]
    """
    bsq = np.asarray(band_grad_norm_sq, dtype=np.float64)
    bls = np.asarray(band_loss_scale, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bls > 0, bsq / (bls * network_scale), np.nan)


def kernel_lnp(kernel: npt.ArrayLike, g: npt.ArrayLike, kernel_ab: npt.ArrayLike | None = None,
               g_b: npt.ArrayLike | None = None, kernel_bb: npt.ArrayLike | None = None) -> dict[str, Any]:
    """LNP components straight from the eNTK (the definition; an oracle for small models).

    Self: ℒ = ||g||^2, 𝒩 = Tr K, ||grad L||^2 = g^T K g, and P also as the eigen-sum
    Σ_k (λ_k/Σλ)(v_k·g)^2/||g||^2 (LNP.md). Cross (``kernel_ab`` = J_B J_A^T, ``g_b`` and
    ``kernel_bb`` given): ``grad_dot = g_B^T K_BA g_A`` and ``P_AB``.

    Examples
    --------
    >>> out = kernel_lnp(np.diag([3.0, 1.0]), np.array([1.0, 0.0]))
    >>> out["spectral_position"], out["spectral_position_eig"]
    (0.75, 0.75)
    """
    k = np.asarray(kernel, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64).reshape(-1)
    if k.shape != (g.size, g.size):
        raise ValueError(f"kernel shape {k.shape} does not match g of size {g.size}")
    lam, vec = np.linalg.eigh(k)
    proj = vec.T @ g
    ls, ns, gsq = float(g @ g), float(np.trace(k)), float(g @ k @ g)
    out = {
        "loss_scale": ls,
        "network_scale": ns,
        "grad_norm_sq": gsq,
        "spectral_position": gsq / (ls * ns),
        "spectral_position_eig": float(np.sum(lam / lam.sum() * proj**2 / ls)),
        "eigenvalues": lam[::-1],
    }
    if kernel_ab is not None:
        gb = np.asarray(g_b, dtype=np.float64).reshape(-1)
        kab = np.asarray(kernel_ab, dtype=np.float64)
        lb, nb = float(gb @ gb), float(np.trace(np.asarray(kernel_bb, dtype=np.float64)))
        dot = float(gb @ kab @ g)
        out.update(loss_scale_b=lb, network_scale_b=nb, grad_dot=dot,
                   spectral_position_cross=dot / np.sqrt(ls * lb * ns * nb))
    return out


def inverse_participation_ratio(eigenvalues: _Stat, dim: str | None = None) -> xr.DataArray | np.ndarray | float:
    """Σλ² / (Σλ)²: P at initialisation for a teacher in the kernel's RKHS (spectral reach A.4).

    Examples
    --------
    >>> inverse_participation_ratio([1.0, 1.0, 1.0, 1.0])
    0.25
    """
    if isinstance(eigenvalues, xr.DataArray):
        d = dim or eigenvalues.dims[-1]
        return xr.apply_ufunc(_inverse_participation_ratio, eigenvalues, input_core_dims=[[d]],
                              kwargs={"axis": -1}, dask="parallelized", output_dtypes=[float])
    return float(_inverse_participation_ratio(eigenvalues)) if np.ndim(eigenvalues) == 1 \
        else _inverse_participation_ratio(eigenvalues, axis=-1)


# --------------------------------------------------------------------------------------------
# measurement schedule (appendix B.1 / B.2) and analysis helpers (appendix C)
# --------------------------------------------------------------------------------------------
def log_windows(n_windows: int, steps_per_window: int, total_steps: int, first_step: int = 0) -> xr.Dataset:
    """Logarithmically spaced windows of consecutive measurement steps (appendix B.1/B.2).

    Window starts are ``first_step - 1 + round(geomspace(1, last_start - first_step + 1,
    n_windows))`` with ``last_start = total_steps - steps_per_window``, so the first window
    starts at ``first_step`` and the last one ends at step ``total_steps - 1``. Early windows
    overlap; as in the paper, overlapping windows measure each step once: the step belongs to
    the first window that contains it (``window`` of the returned ``lnp_step``).

    Returns
    -------
    xarray.Dataset
        ``window_start``, ``window_stop`` (exclusive) on dim ``window``; ``lnp_window`` on dim
        ``lnp_step`` whose coordinate lists every step to measure, ascending.

    Examples
    --------
    >>> s = log_windows(4, 3, 100)
    >>> s.window_start.values.tolist()
    [0, 4, 20, 97]
    >>> s.lnp_step.values.tolist()
    [0, 1, 2, 4, 5, 6, 20, 21, 22, 97, 98, 99]
    """
    n_windows, steps_per_window = int(n_windows), int(steps_per_window)
    total_steps, first_step = int(total_steps), int(first_step)
    if n_windows < 1 or steps_per_window < 1:
        raise ValueError(f"need n_windows >= 1 and steps_per_window >= 1, got {n_windows}, {steps_per_window}")
    last_start = total_steps - steps_per_window
    if first_step < 0 or last_start < first_step:
        raise ValueError(
            f"windows of {steps_per_window} steps from step {first_step} do not fit in "
            f"{total_steps} steps (need total_steps >= first_step + steps_per_window)")
    starts = first_step - 1 + np.rint(np.geomspace(1, last_start - first_step + 1, n_windows))
    starts = np.unique(starts.astype(np.int64))
    steps, wins = [], []
    seen = set()
    for w, s in enumerate(starts):
        for t in range(int(s), int(s) + steps_per_window):
            if t not in seen:
                seen.add(t)
                steps.append(t)
                wins.append(w)
    order = np.argsort(steps, kind="stable")
    return xr.Dataset(
        {
            "window_start": ("window", starts, schema.attrs("lnp_schedule", "window_start")),
            "window_stop": ("window", starts + steps_per_window, schema.attrs("lnp_schedule", "window_stop")),
            "lnp_window": ("lnp_step", np.asarray(wins, dtype=np.int64)[order],
                           schema.attrs("lnp_schedule", "lnp_window")),
        },
        coords={"window": np.arange(starts.size), "lnp_step": np.asarray(steps, dtype=np.int64)[order]},
        attrs={"n_windows_requested": n_windows, "steps_per_window": steps_per_window,
               "total_steps": total_steps, "first_step": first_step,
               "definition": "log-spaced windows of consecutive steps, spectral reach appendix B.1"},
    )


def _window_labels(values: xr.DataArray, window: _Window, dim: str) -> xr.DataArray:
    if window is None:
        if "lnp_window" in values.coords:
            return values.coords["lnp_window"]
        raise ValueError("give window labels (e.g. log_windows(...).lnp_window) or a 'lnp_window' coord")
    if isinstance(window, xr.Dataset):
        window = window["lnp_window"]
    if not isinstance(window, xr.DataArray):
        window = xr.DataArray(np.asarray(window), dims=(dim,))
    if window.sizes.get(dim) != values.sizes.get(dim):
        raise ValueError(f"window labels have {window.sizes.get(dim)} entries along {dim!r}, "
                         f"values have {values.sizes.get(dim)}")
    return window.rename("lnp_window")


def window_mean(values: xr.DataArray, window: _Window = None, dim: str = "lnp_step") -> xr.DataArray:
    """Average of ``values`` over each measurement window (NaN ignored); dim becomes ``lnp_window``.

    Examples
    --------
    >>> v = xr.DataArray([1.0, 3.0, 10.0], dims="lnp_step")
    >>> window_mean(v, [0, 0, 1]).values.tolist()
    [2.0, 10.0]
    """
    labels = _window_labels(values, window, dim)
    out = values.assign_coords(lnp_window=(dim, labels.values)).groupby("lnp_window").mean(dim)
    out.attrs = {**values.attrs, "aggregation": "mean over measurement window (appendix C.1)"}
    return out


def top_fraction(values: xr.DataArray, window: _Window = None, fraction: float = 0.1,
                 dim: str = "lnp_step") -> xr.DataArray:
    """Keep, in each window, the top ``fraction`` of values (ceil of the count); others NaN.

    The filter of spectral reach appendix C.1 (top 10 % of P per window, against late
    overfitting in linear probes).

    Examples
    --------
    >>> v = xr.DataArray([0.1, 0.4, 0.2, 0.9, 0.3], dims="lnp_step")
    >>> top_fraction(v, [0, 0, 0, 1, 1], fraction=0.3).values.tolist()
    [nan, 0.4, nan, 0.9, nan]
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if values.ndim != 1:
        raise ValueError(f"top_fraction works on 1-D values along {dim!r}, got dims {values.dims}")
    labels = _window_labels(values, window, dim)
    keep = _top_fraction_mask(values.values, labels.values, fraction)
    out = values.where(xr.DataArray(keep, dims=values.dims))
    out.attrs = {**values.attrs, "filter": f"top {fraction:g} per window (appendix C.1)"}
    return out


def probe_ratio(
    p_pretrained: xr.DataArray,
    p_random: xr.DataArray,
    bins: int | Sequence[float] = 10,
    *,
    dim: str = "lnp_step",
    fraction: float | None = 0.1,
    window_pretrained: _Window = None,
    window_random: _Window = None,
) -> xr.DataArray:
    """Spectral-position ratio ⟨P_pretrained⟩_τ / ⟨P_random⟩_τ over normalised time (Eq. 12/55).

    τ = (step - first) / (last - first) ∈ [0, 1] per run, taken from the ``dim`` coordinate of
    each input. Values are optionally filtered to the top ``fraction`` per measurement window
    first (appendix C.1; pass ``fraction=None`` to skip), then averaged in each τ bin.

    Parameters
    ----------
    bins : int or sequence of float
        Number of equal τ bins or the bin edges.

    Examples
    --------
    >>> a = xr.DataArray([0.2, 0.1], dims="lnp_step", coords={"lnp_step": [0, 10]})
    >>> b = xr.DataArray([0.4, 0.4], dims="lnp_step", coords={"lnp_step": [0, 100]})
    >>> probe_ratio(a, b, bins=2, fraction=None).values.tolist()
    [0.5, 0.25]
    """
    edges = np.linspace(0.0, 1.0, int(bins) + 1) if np.ndim(bins) == 0 else np.asarray(bins, float)
    means = []
    for p, win in ((p_pretrained, window_pretrained), (p_random, window_random)):
        if fraction is not None:
            p = top_fraction(p, win, fraction=fraction, dim=dim)
        t = np.asarray(p[dim].values, dtype=np.float64)
        if t.size < 2 or t.max() == t.min():
            raise ValueError(f"need at least two distinct {dim} values to normalise time, got {t.tolist()}")
        tau = (t - t.min()) / (t.max() - t.min())
        idx = np.clip(np.searchsorted(edges, tau, side="right") - 1, 0, edges.size - 2)
        v = np.asarray(p.values, dtype=np.float64)
        m = np.full(edges.size - 1, np.nan)
        for b in range(edges.size - 1):
            sel = v[(idx == b) & np.isfinite(v)]
            if sel.size:
                m[b] = sel.mean()
        means.append(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = means[0] / means[1]
    centres = 0.5 * (edges[:-1] + edges[1:])
    return xr.DataArray(
        ratio, dims=("time_bin",),
        coords={c: ("time_bin", v, schema.attrs("probe_ratio", c))
                for c, v in (("time_bin", centres), ("time_lo", edges[:-1]), ("time_hi", edges[1:]))},
        name="probe_ratio",
        attrs={**schema.attrs("probe_ratio", "probe_ratio"), "top_fraction": "none" if fraction is None else fraction},
    )


def random_feature_lnp(alpha: float, n_samples: int = 400, dim: int = 200, width: int = 2000,
                       n_teachers: int = 1, seed: int = 0) -> dict[str, Any]:
    """The random-feature check (spectral reach §3.2, appendices A.4, B.2.5) for one feature draw.

    Gaussian inputs with covariance eigenvalues ∝ k^-α (trace 1), frozen variance-preserving
    ReLU features Φ = sqrt(2/W) relu(X Fᵀ) with F ~ N(0, 1), zero readout, teachers
    y = Φ a with a ~ N(0, I) (so y ~ N(0, K), K = ΦΦᵀ, in the student's RKHS), loss
    L = Σ_n (f_n - y_n)² / (2N). P is scale-free in y, so the unit-variance normalisation of
    B.2.5 would not change it; it is left out so that the ratio of means keeps its expectation.

    Returns
    -------
    dict
        ``spectral_position``: P averaged over the teachers; ``spectral_position_ratio_of_means``:
        Σ gᵀKg / Σ ||g||² Tr K over teachers, whose expectation is exactly Σλ²/(Σλ)² (Eq. 46);
        ``ipr``: Σλ²/(Σλ)² of K; ``network_scale`` Tr K; ``eigenvalues``.

    Examples
    --------
    >>> out = random_feature_lnp(1.0, n_samples=50, dim=20, width=100, n_teachers=3)
    >>> 0 < out["spectral_position"] <= 1
    True
    """
    rng = np.random.default_rng(seed)
    k = np.arange(1, dim + 1, dtype=np.float64)
    lam = k ** (-float(alpha))
    lam /= lam.sum()
    x = rng.standard_normal((n_samples, dim)) * np.sqrt(lam)
    f = rng.standard_normal((width, dim))
    phi = np.sqrt(2.0 / width) * np.maximum(x @ f.T, 0.0)
    y = phi @ rng.standard_normal((width, int(n_teachers)))  # not rescaled: see ratio of means
    g = -y / n_samples  # dL/df at f = 0 for L = sum (f - y)^2 / (2N), one column per teacher
    kern = phi @ phi.T
    eig = np.clip(np.linalg.eigvalsh(kern)[::-1], 0, None)
    gkg = np.einsum("nt,nm,mt->t", g, kern, g)
    gg = np.sum(g**2, axis=0)
    tr = float(np.trace(kern))
    p = gkg / (gg * tr)
    return {
        "alpha": float(alpha),
        "spectral_position": float(p.mean()),
        "spectral_position_all": p,
        "spectral_position_ratio_of_means": float(gkg.sum() / (gg.sum() * tr)),
        "ipr": inverse_participation_ratio(eig),
        "network_scale": tr,
        "loss_scale": float(gg.mean()),
        "eigenvalues": eig,
    }
