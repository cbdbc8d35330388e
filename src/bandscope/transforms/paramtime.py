"""Parameter time and its power law in raw time (key search §3 and appendix A.7).

- :func:`parameter_time`: chord parameter time between saved checkpoints,
  ``s_0 = 0``, ``s_k = sum_{m<=k} ||theta_m - theta_{m-1}||_2`` over all floating tensors.
- :func:`fit_power_time`: the three-parameter fit ``s(t) ~ a + b t**gamma`` (A.7 reports
  median gamma = 0.368 over the full 50-epoch window, and per epoch windows 0-10, 0-25, 0-50).

No torch import: tensors are converted by duck typing (``.detach().cpu().numpy()``).
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from .. import schema
from ..run import _VAR_ATTRS

#: float64 array (numpy kernels take array-likes and return this)
F64 = npt.NDArray[np.float64]

__all__ = ["parameter_time", "fit_power_time", "power_time", "fit_run_gamma", "RENAMED",
           "upgrade"]

#: Names of :func:`fit_power_time`'s output renamed so that ``window`` means one thing in
#: bandscope (a threshold window of the key-search analysis): old -> new. A Dataset saved
#: with the old names is read back with :func:`upgrade`.
RENAMED = {"window": "epoch_window", "window_lo": "epoch_lo", "window_hi": "epoch_hi"}

#: elements per slice when differencing large tensors (bounds the float64 temporary)
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- parameter time


def _to_numpy(value: Any, where: str) -> np.ndarray:
    """Array from a numpy array, array-like or tensor-like (duck typed, torch not imported)."""
    if hasattr(value, "detach"):
        t = value.detach()
        if hasattr(t, "cpu"):
            t = t.cpu()
        try:
            return np.asarray(t.numpy())
        except (TypeError, RuntimeError):  # e.g. bfloat16 has no numpy dtype
            is_float = getattr(t, "is_floating_point", None)
            if is_float is not None and is_float():
                return np.asarray(t.float().numpy())  # exact widening
            raise TypeError(f"cannot convert {where} ({getattr(t, 'dtype', type(t))}) to numpy") from None
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{where} is not numeric: dtype {arr.dtype}")
    return arr


def _entries(item: Any, k: int, keys: Sequence[str] | None) -> tuple[str, dict[str, np.ndarray], list[str]]:
    """(name -> array) of one checkpoint, the floating ones, and the skipped non-floating names."""
    if isinstance(item, Mapping):
        names = list(item.keys())
        if keys is not None:
            missing = [n for n in keys if n not in item]
            if missing:
                raise KeyError(f"checkpoint {k} has no entry {missing[0]!r} (asked for by keys=)")
            names = list(keys)
        arrays = {str(n): _to_numpy(item[n], f"checkpoint {k} entry {n!r}") for n in names}
        kind = "mapping"
    else:
        if keys is not None:
            raise TypeError(f"keys= selects entries of state dicts; checkpoint {k} is a flat array")
        arrays = {"": _to_numpy(item, f"checkpoint {k}")}
        kind = "array"
    floats = {n: a for n, a in arrays.items() if a.dtype.kind in "fc"}
    skipped = sorted(n for n, a in arrays.items() if a.dtype.kind not in "fc")
    return kind, floats, skipped


def _sq_dist(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b||^2 accumulated in float64, in slices so the temporary stays small."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    total = 0.0
    for i in range(0, fa.size, _CHUNK):
        dtype = np.complex128 if fa.dtype.kind == "c" else np.float64
        d = np.subtract(fa[i : i + _CHUNK], fb[i : i + _CHUNK], dtype=dtype)
        total += float(np.vdot(d, d).real)
    return total


def parameter_time(
    params: Iterable[Any],
    *,
    names: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> xr.DataArray:
    r"""Chord parameter time between saved checkpoints (key search §3, appendix A.7).

    .. math:: s_0 = 0, \qquad s_k = \sum_{m=1}^{k} \lVert \theta_m - \theta_{m-1} \rVert_2

    where the norm runs over every floating tensor of the checkpoint (all parameters and
    floating buffers, no exclusions, no per-layer normalisation). Accumulated in float64.
    Chords between saved checkpoints slightly underestimate the arc length along every
    optimizer step (A.7); the ordering of checkpoints is preserved.

    Parameters
    ----------
    params : iterable of state dicts (Mapping name -> array-like/tensor) or of arrays
        Checkpoints in saved order. May be a generator: it is consumed once and only the
        previous checkpoint is kept (copied, in its own dtype, so a generator that yields the
        same live state dict again after training steps is measured correctly). Tensors are
        converted by duck typing (``.detach().cpu().numpy()``; bfloat16 widened exactly).
        State dicts must have identical keys and shapes; non-floating entries (e.g. BatchNorm
        ``num_batches_tracked``) are skipped and listed in ``attrs['skipped_keys']``.
    names : sequence of str, optional
        Labels of the checkpoints (e.g. file names), stored as coord ``checkpoint_name`` along
        ``checkpoint``; must have one label per checkpoint.
    keys : sequence of str, optional
        Restrict the distance to these state-dict entries (e.g. trainable parameters only).

    Returns
    -------
    xarray.DataArray
        ``param_time`` over ``checkpoint`` = 0..K-1, float64, ``s_0 = 0``, with attrs
        ``units``, ``definition``, ``paper``, ``n_parameters`` (floating values per checkpoint),
        ``n_tensors`` and ``skipped_keys``.

    Examples
    --------
    >>> parameter_time([{"w": [0.0, 0.0]}, {"w": [3.0, 4.0]}, {"w": [3.0, 4.0]}]).values
    array([0., 5., 5.])
    >>> pt = parameter_time([np.zeros(2), np.ones(2)], names=["a.pt", "b.pt"])
    >>> pt["checkpoint_name"].values.tolist(), round(float(pt[-1]), 6)
    (['a.pt', 'b.pt'], 1.414214)
    """
    prev: dict[str, np.ndarray] | None = None
    kind0 = None
    skipped0: list[str] = []
    s = [0.0]
    k = -1
    for k, item in enumerate(params):
        kind, cur, skipped = _entries(item, k, keys)
        if prev is None:
            kind0, skipped0 = kind, skipped
            if not cur:
                raise ValueError(
                    f"checkpoint 0 has no floating tensors (non-floating entries: {skipped}); "
                    "parameter time needs at least one"
                )
        else:
            if kind != kind0:
                raise TypeError(f"checkpoint {k} is a {kind} but checkpoint 0 is a {kind0}")
            if cur.keys() != prev.keys() or skipped != skipped0:
                extra = sorted(set(cur) - set(prev)) + sorted(set(skipped) - set(skipped0))
                missing = sorted(set(prev) - set(cur)) + sorted(set(skipped0) - set(skipped))
                moved = sorted((set(cur) & set(skipped0)) | (set(prev) & set(skipped)))
                if moved:
                    raise ValueError(
                        f"entry {moved[0]!r} changes between floating and non-floating dtype at "
                        f"checkpoint {k}"
                    )
                key = (extra or missing)[0]
                where = "has an extra" if extra else "is missing"
                raise ValueError(
                    f"checkpoint {k} {where} entry {key!r} compared with checkpoint 0 "
                    f"(extra: {extra}, missing: {missing}); state dicts must have identical keys"
                )
            total = 0.0
            for name, a in cur.items():
                b = prev[name]
                if a.shape != b.shape:
                    label = f"entry {name!r}" if kind == "mapping" else "the array"
                    raise ValueError(
                        f"{label} has shape {a.shape} at checkpoint {k} but {b.shape} at "
                        f"checkpoint {k - 1}; shapes must not change"
                    )
                total += _sq_dist(a, b)
            s.append(s[-1] + float(np.sqrt(total)))
        prev = {n: np.array(a, copy=True) for n, a in cur.items()}
    if k < 0:
        raise ValueError("params is empty: need at least one checkpoint")
    n_ckpt = k + 1
    coords: dict[str, tuple[str, Any]] = {"checkpoint": ("checkpoint", np.arange(n_ckpt, dtype=np.int64))}
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != n_ckpt:
            raise ValueError(f"{len(names)} names for {n_ckpt} checkpoints")
        coords["checkpoint_name"] = ("checkpoint", names)
    assert prev is not None  # k >= 0: checkpoint 0 was read
    attrs: dict[str, Any] = dict(_VAR_ATTRS["param_time"])
    attrs.update(
        paper="key search §3 and appendix A.7",
        accumulation="float64",
        n_parameters=int(sum(a.size for a in prev.values())),
        n_tensors=len(prev),
        skipped_keys=", ".join(skipped0),
        skipped_note="non-floating entries (integer/bool buffers such as BatchNorm "
        "num_batches_tracked) are not parameters and are skipped",
    )
    if keys is not None:
        attrs["keys"] = ", ".join(map(str, keys))
    return xr.DataArray(np.asarray(s, dtype=np.float64), dims=("checkpoint",), coords=coords,
                        name="param_time", attrs=attrs)


# --------------------------------------------------------------------------- power law fit

_GAMMA_BOUNDS = (1e-3, 10.0)
_FIT_VARS = ("gamma", "a", "b", "r2", "gamma_stderr", "sse", "n")


def power_time(t: npt.ArrayLike, a: float, b: float, gamma: float) -> npt.NDArray[np.float64]:
    """Model of A.7: ``s(t) = a + b * t**gamma``.

    >>> float(power_time(100.0, 1.0, 2.0, 0.5))
    21.0
    """
    return a + b * np.power(np.asarray(t, dtype=np.float64), gamma)


def _linear_ab(tau_g: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (a, b) of s = a + b*tau_g and the SSE (closed form, centred)."""
    xm, ym = tau_g.mean(), s.mean()
    dx = tau_g - xm
    sxx = float(dx @ dx)
    if sxx <= 0:
        return ym, 0.0, float(((s - ym) ** 2).sum())
    b = float(dx @ (s - ym)) / sxx
    a = ym - b * xm
    r = s - a - b * tau_g
    return a, b, float(r @ r)


def _sse_grid(tau: np.ndarray, s: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """SSE of the closed-form (a, b) fit of ``s = a + b tau**g`` for every g at once (the
    vectorised twin of :func:`_linear_ab`, tested equal to it)."""
    x = np.power(tau[None, :], gammas[:, None])
    dx = x - x.mean(axis=1, keepdims=True)
    ds = s - s.mean()
    sxx = np.einsum("gi,gi->g", dx, dx)
    sxy = dx @ ds
    syy = float(ds @ ds)
    with np.errstate(divide="ignore", invalid="ignore"):
        sse = syy - np.where(sxx > 0, sxy**2 / sxx, 0.0)
    return np.maximum(sse, 0.0)


#: A γ fit on more checkpoints finds its basin (the grid over γ) on this many of them, evenly
#: spaced; the bounded Brent search that gives γ uses every checkpoint.
GAMMA_GRID_POINTS = 2048


def _fit_power(t: np.ndarray, s: np.ndarray, min_points: int = 4) -> dict[str, Any]:
    """Kernel: fit ``s = a + b t**gamma`` to finite points with ``t >= 0``.

    Variable projection: for fixed gamma, (a, b) are linear and solved in closed form, so the
    fit is a 1-D minimisation of SSE(gamma) -- a log-spaced grid over gamma in [1e-3, 10] to
    find the basin, then bounded Brent. Time is scaled by ``t_max`` inside (tau = t / t_max) for
    conditioning. Standard error of gamma from the Jacobian at the optimum,
    ``sigma^2 (J^T J)^-1`` with ``sigma^2 = SSE / (n - 3)``.
    """
    out: dict[str, Any] = {v: np.nan for v in _FIT_VARS}
    out.update(n=0, status="omitted", reason="")
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    ok = np.isfinite(t) & np.isfinite(s) & (t >= 0)
    t, s = t[ok], s[ok]
    n = int(t.size)
    out["n"] = n
    if n < min_points:
        out["reason"] = f"{n} checkpoints with known step and finite s (< {min_points}): fit omitted"
        return out
    if np.unique(t).size < 3:
        out.update(status="failed", reason="fewer than 3 distinct steps: a, b, gamma not identifiable")
        return out
    sst = float(((s - s.mean()) ** 2).sum())
    if sst <= 0:
        out.update(status="failed", reason="s is constant over the window: no power law to fit")
        return out
    t_max = float(t.max())
    tau = t / t_max
    if n > GAMMA_GRID_POINTS:  # tau**g as exp(g log tau): a third of np.power's time
        with np.errstate(divide="ignore"):
            log_tau = np.log(tau)
        power = lambda g: np.exp(g * log_tau)  # noqa: E731
    else:
        power = lambda g: np.power(tau, g)  # noqa: E731
    sse_of = lambda g: _linear_ab(power(g), s)[2]  # noqa: E731
    lo, hi = _GAMMA_BOUNDS
    grid = np.geomspace(lo, hi, 121)
    if n > GAMMA_GRID_POINTS:  # the basin from evenly spaced checkpoints; Brent on all of them
        pick = np.round(np.linspace(0.0, n - 1.0, GAMMA_GRID_POINTS)).astype(np.int64)
        i = int(np.argmin(_sse_grid(tau[pick], s[pick], grid)))
        sse_i = sse_of(grid[i])
    else:
        sse_grid = _sse_grid(tau, s, grid)
        i = int(np.argmin(sse_grid))
        sse_i = sse_grid[i]
    left, right = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    from scipy.optimize import minimize_scalar  # here: the batched analysis path never needs scipy.optimize

    res = minimize_scalar(lambda lg: sse_of(np.exp(lg)), bounds=(np.log(left), np.log(right)),
                          method="bounded", options={"xatol": 1e-12})
    gamma = float(np.exp(res.x))
    a, b_tau, sse = _linear_ab(power(gamma), s)
    if sse_i < sse:  # Brent never does worse than the grid point it started from
        gamma, (a, b_tau, sse) = float(grid[i]), _linear_ab(np.power(tau, grid[i]), s)
    b = b_tau / t_max**gamma
    # standard error of gamma (in tau units gamma is unchanged)
    tg = np.power(tau, gamma)
    with np.errstate(divide="ignore", invalid="ignore"):
        dlog = np.where(tau > 0, tg * np.log(np.where(tau > 0, tau, 1.0)), 0.0)
    jac = np.column_stack([np.ones_like(tau), tg, b_tau * dlog])
    stderr = np.nan
    if n > 3:
        try:
            cov = np.linalg.inv(jac.T @ jac) * (sse / (n - 3))
            stderr = float(np.sqrt(cov[2, 2])) if cov[2, 2] >= 0 else np.nan
        except np.linalg.LinAlgError:
            pass
    out.update(gamma=gamma, a=float(a), b=float(b), r2=1.0 - sse / sst, gamma_stderr=stderr,
               sse=sse, status="ok", reason="")
    at_bound = np.isclose(gamma, lo, rtol=1e-3) or np.isclose(gamma, hi, rtol=1e-3)
    if at_bound:
        out.update(status="failed", reason=f"gamma at the search bound {gamma:.4g} "
                   f"(searched {lo:g}..{hi:g}): s(t) is not power-like here")
    return out


_SQRT_EPS = float(np.sqrt(2.2e-16))
_GOLDEN = 0.5 * (3.0 - np.sqrt(5.0))


def _brent_bounded(f: Callable[[F64, npt.NDArray[np.intp]], F64], a: npt.ArrayLike, b: npt.ArrayLike,
                   xatol: float, maxfun: int = 500) -> F64:
    """scipy's bounded Brent (``minimize_scalar(method="bounded")``) on many 1-D problems at
    once: the same steps, element by element; ``f(x, rows)`` gives the objective of ``rows`` at
    ``x``. Returns the minimiser of each problem."""
    a, b = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
    fulc = a + _GOLDEN * (b - a)
    nfc, xf = fulc.copy(), fulc.copy()
    rat, e = np.zeros_like(a), np.zeros_like(a)
    all_rows = np.arange(a.size)
    fx = f(xf, all_rows)
    ffulc, fnfc = fx.copy(), fx.copy()
    xm = 0.5 * (a + b)
    tol1 = _SQRT_EPS * np.abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    num = 1
    act = all_rows[np.abs(xf - xm) > (tol2 - 0.5 * (b - a))]
    while act.size and num < maxfun:
        A, B, XF, FX, NFC, FULC = a[act], b[act], xf[act], fx[act], nfc[act], fulc[act]
        FNFC, FFULC, E, RAT = fnfc[act], ffulc[act], e[act], rat[act]
        XM, T1, T2 = xm[act], tol1[act], tol2[act]
        try_par = np.abs(E) > T1
        r = (XF - NFC) * (FX - FFULC)
        q = (XF - FULC) * (FX - FNFC)
        p = (XF - FULC) * q - (XF - NFC) * r
        q = 2.0 * (q - r)
        p = np.where(q > 0.0, -p, p)
        q = np.abs(q)
        r_old = E
        E = np.where(try_par, RAT, E)
        with np.errstate(divide="ignore", invalid="ignore"):
            par = try_par & (np.abs(p) < np.abs(0.5 * q * r_old)) & (p > q * (A - XF)) & (p < q * (B - XF))
            rat_p = (p + 0.0) / q
        x_p = XF + rat_p
        near = ((x_p - A) < T2) | ((B - x_p) < T2)
        si = np.sign(XM - XF) + ((XM - XF) == 0)
        rat_p = np.where(near, T1 * si, rat_p)
        golden = ~par
        E = np.where(golden, np.where(XF >= XM, A - XF, B - XF), E)
        RAT = np.where(golden, _GOLDEN * E, rat_p)
        si = np.sign(RAT) + (RAT == 0)
        x = XF + si * np.maximum(np.abs(RAT), T1)
        fu = f(x, act)
        num += 1
        better = fu <= FX
        # better: move the bracket to xf, shift the points
        A_n = np.where(better, np.where(x >= XF, XF, A), np.where(x < XF, x, A))
        B_n = np.where(better, np.where(x >= XF, B, XF), np.where(x < XF, B, x))
        c1 = ~better & ((fu <= FNFC) | (NFC == XF))
        c2 = ~better & ~c1 & ((fu <= FFULC) | (FULC == XF) | (FULC == NFC))
        FULC_n = np.where(better | c1, NFC, np.where(c2, x, FULC))
        FFULC_n = np.where(better | c1, FNFC, np.where(c2, fu, FFULC))
        NFC_n = np.where(better, XF, np.where(c1, x, NFC))
        FNFC_n = np.where(better, FX, np.where(c1, fu, FNFC))
        XF_n = np.where(better, x, XF)
        FX_n = np.where(better, fu, FX)
        a[act], b[act], fulc[act], ffulc[act] = A_n, B_n, FULC_n, FFULC_n
        nfc[act], fnfc[act], xf[act], fx[act] = NFC_n, FNFC_n, XF_n, FX_n
        e[act], rat[act] = E, RAT
        xm[act] = 0.5 * (A_n + B_n)
        tol1[act] = _SQRT_EPS * np.abs(XF_n) + xatol / 3.0
        tol2[act] = 2.0 * tol1[act]
        act = act[np.abs(xf[act] - xm[act]) > (tol2[act] - 0.5 * (b[act] - a[act]))]
    return xf


def _linear_ab_rows(x: F64, s: F64, m: npt.NDArray[np.bool_], n: F64,
                    centred: tuple[F64, F64] | None = None) -> tuple[F64, F64, F64]:
    """:func:`_linear_ab` of many rows at once (``m`` marks each row's points, ``n`` counts
    them): ``(a, b, sse)`` arrays.

    ``centred``: ``(mean of s, s - mean)`` per row, for rows without padding (``m`` all
    True), computed once for the many ``x`` of a search; every value is then the same as
    without it, with four masked copies fewer per call."""
    if centred is None:
        xm = np.where(m, x, 0.0).sum(axis=1) / n
        ym = np.where(m, s, 0.0).sum(axis=1) / n
        dx = np.where(m, x - xm[:, None], 0.0)
        dy = np.where(m, s - ym[:, None], 0.0)
    else:  # where(m, v, 0.0) is v when m is all True
        ym, dy = centred
        xm = x.sum(axis=1) / n
        dx = x - xm[:, None]
    sxx = np.einsum("ij,ij->i", dx, dx)
    ok = sxx > 0
    b = np.where(ok, np.einsum("ij,ij->i", dx, dy) / np.where(ok, sxx, 1.0), 0.0)
    a = ym - b * xm
    r = s - a[:, None] - b[:, None] * x
    if centred is None:
        r = np.where(m, r, 0.0)
    return a, b, np.einsum("ij,ij->i", r, r)


def _fit_power_many(rows: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]], min_points: int = 4) -> list[dict[str, Any]]:
    """:func:`_fit_power` of many ``(t, s)`` pairs: the short ones (at most
    ``GAMMA_GRID_POINTS`` usable points) in one vectorised pass -- the grid for all at once,
    then one batched bounded Brent (:func:`_brent_bounded`) -- the long ones one by one."""
    out: list[Any] = [None] * len(rows)
    todo: list[tuple[int, F64, F64]] = []
    for i, (t, s) in enumerate(rows):
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        ok = np.isfinite(t) & np.isfinite(s) & (t >= 0)
        t, s = t[ok], s[ok]
        n = t.size
        if n < min_points or n > GAMMA_GRID_POINTS or not _three_distinct(t) or not (
                ((s - s.mean()) ** 2).sum() > 0):
            out[i] = _fit_power(t, s, min_points)  # omitted, failed or long: the one-row kernel
        else:
            todo.append((i, t, s))
    # rows of equal length together and unpadded: each row's arithmetic is then the same
    # whatever else is in the batch (a chunk of a sweep gives what the whole stack gives)
    sizes = sorted({t.size for _, t, _ in todo})
    for size in sizes:
        _fit_power_group([row for row in todo if row[1].size == size], out)
    return out


def _three_distinct(t: F64) -> bool:
    """Whether finite ``t`` holds at least 3 distinct values (``np.unique(t).size >= 3``):
    some value lies strictly between the smallest and the largest."""
    return t.size >= 3 and bool(((t > t.min()) & (t < t.max())).any())


def _fit_power_group(todo: Sequence[tuple[int, F64, F64]], out: list[Any]) -> None:
    """The vectorised part of :func:`_fit_power_many` for rows of one length; fills ``out``."""
    R, N = len(todo), max(t.size for _, t, _ in todo)
    n = np.array([t.size for _, t, _ in todo], dtype=np.float64)
    m = np.arange(N)[None, :] < n[:, None]
    T, S = np.zeros((R, N)), np.zeros((R, N))
    for j, (_, t, s) in enumerate(todo):
        T[j, : t.size], S[j, : s.size] = t, s
    t_max = T.max(axis=1)
    tau = T / t_max[:, None]
    ym = S.sum(axis=1) / n
    sst = np.where(m, (S - ym[:, None]) ** 2, 0.0).sum(axis=1)
    lo, hi = _GAMMA_BOUNDS
    grid = np.geomspace(lo, hi, 121)
    with np.errstate(divide="ignore"):
        log_tau = np.where(m & (tau > 0), np.log(np.where(tau > 0, tau, 1.0)), -np.inf)
    # rows of one length have no padding (m is all True): s centred once for the whole search
    centred = (ym, S - ym[:, None]) if m.all() else None
    sse_grid = np.empty((R, grid.size))
    for g, gam in enumerate(grid):
        sse_grid[:, g] = _linear_ab_rows(np.exp(gam * log_tau), S, m, n, centred)[2]
    i = np.argmin(sse_grid, axis=1)
    sse_i = sse_grid[np.arange(R), i]
    left, right = grid[np.maximum(i - 1, 0)], grid[np.minimum(i + 1, grid.size - 1)]

    def sse_of(lg: F64, which: npt.NDArray[np.intp]) -> F64:
        return _linear_ab_rows(np.exp(np.exp(lg)[:, None] * log_tau[which]), S[which], m[which],
                               n[which], None if centred is None else (ym[which], centred[1][which]))[2]

    gamma = np.exp(_brent_bounded(sse_of, np.log(left), np.log(right), 1e-12))
    a, b_tau, sse = _linear_ab_rows(np.exp(gamma[:, None] * log_tau), S, m, n, centred)
    worse = sse_i < sse  # Brent never does worse than the grid point it started from
    if worse.any():
        gamma = np.where(worse, grid[i], gamma)
        a, b_tau, sse = _linear_ab_rows(np.exp(gamma[:, None] * log_tau), S, m, n, centred)
    b = b_tau / t_max**gamma
    tg = np.where(m, np.exp(gamma[:, None] * log_tau), 0.0)
    dlog = np.where(m & (tau > 0), tg * np.where(np.isfinite(log_tau), log_tau, 0.0), 0.0)
    jac = np.stack([m.astype(np.float64), tg, b_tau[:, None] * dlog], axis=-1)  # (R, N, 3)
    jtj = np.einsum("rni,rnj->rij", jac, jac)
    stderr = _gamma_stderr(jtj, sse, n)
    at_bound = np.isclose(gamma, lo, rtol=1e-3) | np.isclose(gamma, hi, rtol=1e-3)
    r2 = 1.0 - sse / sst
    for j, (k, _, _) in enumerate(todo):
        res: dict[str, Any] = {v: np.nan for v in _FIT_VARS}
        res.update(gamma=float(gamma[j]), a=float(a[j]), b=float(b[j]), r2=r2[j],
                   gamma_stderr=stderr[j], sse=float(sse[j]), n=int(n[j]), status="ok", reason="")
        if at_bound[j]:
            res.update(status="failed", reason=f"gamma at the search bound {gamma[j]:.4g} "
                       f"(searched {lo:g}..{hi:g}): s(t) is not power-like here")
        out[k] = res


def _gamma_stderr(jtj: F64, sse: F64, n: F64) -> F64:
    """Standard error of γ per row, ``sqrt(σ² (JᵀJ)⁻¹[2, 2])`` with ``σ² = SSE / (n - 3)``
    (NaN for n <= 3, a singular ``JᵀJ`` or a negative variance): the inverses of all rows in
    one call (each matrix is inverted on its own, as one at a time), row by row only when
    some matrix is singular."""
    stderr = np.full(n.size, np.nan)
    rows = np.flatnonzero(n > 3)
    if not rows.size:
        return stderr
    try:
        inv = np.linalg.inv(jtj[rows])[:, 2, 2]
    except np.linalg.LinAlgError:
        inv = np.full(rows.size, np.nan)
        for i, j in enumerate(rows):
            try:
                inv[i] = np.linalg.inv(jtj[j])[2, 2]
            except np.linalg.LinAlgError:
                pass
    var = inv * (sse[rows] / (n[rows] - 3))
    with np.errstate(invalid="ignore"):
        stderr[rows] = np.where(var >= 0, np.sqrt(np.where(var >= 0, var, 0.0)), np.nan)
    return stderr


def _as_1d_dataarray(v: xr.DataArray | npt.ArrayLike, name: str, dim: str) -> xr.DataArray:
    if isinstance(v, xr.DataArray):
        if dim not in v.dims:
            raise ValueError(f"{name} has dims {v.dims}, expected a {dim!r} dim")
        return v.astype(np.float64)
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D over {dim} (or a DataArray), got shape {arr.shape}")
    return xr.DataArray(arr, dims=(dim,))


def _window_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def fit_power_time(
    step: xr.DataArray | npt.ArrayLike,
    s: xr.DataArray | npt.ArrayLike,
    *,
    epoch_windows: Sequence[tuple[float, float]] | None = None,
    epoch: xr.DataArray | npt.ArrayLike | None = None,
    dim: str = "checkpoint",
    min_points: int = 4,
    windows: Sequence[tuple[float, float]] | None = None,
) -> xr.Dataset:
    """Fit parameter time against raw time, ``s(t) ~ a + b t**gamma`` (key search §3, A.7).

    Three-parameter nonlinear least squares on the linear scale (variable projection: for each
    gamma the best ``a, b`` are solved exactly, then SSE is minimised over gamma in
    ``[1e-3, 10]``), ``R^2 = 1 - SSE/SST``.

    Parameters
    ----------
    step : array_like or DataArray over ``dim``
        Raw time t (optimizer steps); the run Dataset's ``step`` works directly (checkpoint 0
        has t = 0). Entries < 0 (the format's "unknown") and NaN are left out.
    s : array_like or DataArray over ``dim``
        Parameter time, e.g. the run's ``param_time``. NaN (padding) is left out.
    epoch_windows : sequence of (lo, hi) epochs, optional
        Fit each epoch window ``lo <= epoch <= hi`` separately (A.7 uses (0, 10), (0, 25),
        (0, 50)); t is *not* rebased inside a window (``a`` absorbs the offset). Needs ``epoch``.
    epoch : array_like or DataArray over ``dim``, optional
        Epochs completed at each checkpoint (the run's ``epoch``).
    dim : str
        The checkpoint dim. Other dims of DataArray inputs (e.g. ``run``) are looped over.
    min_points : int
        Fits with fewer usable checkpoints are omitted (NaN, status ``"omitted"``).
    windows : deprecated
        The old name of ``epoch_windows`` (renamed so that "window" means a threshold window
        of the key-search analysis everywhere); still accepted with a ``DeprecationWarning``.

    Returns
    -------
    xarray.Dataset
        ``gamma``, ``a``, ``b``, ``r2``, ``gamma_stderr``, ``sse``, ``n`` (points used),
        ``status`` ("ok" / "omitted" / "failed") and ``reason``; scalars per fit, along
        dim ``epoch_window`` (labels ``"0-10"`` ..., coords ``epoch_lo``, ``epoch_hi`` in
        epochs) when ``epoch_windows`` is given, plus any extra dims of the inputs. (Before
        the rename these were ``window``, ``window_lo``, ``window_hi``; see :data:`RENAMED`.)
        Attrs from :mod:`bandscope.schema` (kind ``power_time``, ``docs/paramtime.md``).

    Examples
    --------
    >>> t = np.array([0, 10, 100, 1000, 10000, 100000])
    >>> fit = fit_power_time(t, 0.5 + 2.0 * t**0.37)
    >>> round(float(fit.gamma), 6), round(float(fit.a), 6), round(float(fit.b), 6), str(fit.status.values)
    (0.37, 0.5, 2.0, 'ok')
    """
    if windows is not None:
        if epoch_windows is not None:
            raise TypeError("give epoch_windows= only (windows= is its deprecated old name)")
        import warnings

        warnings.warn("fit_power_time(windows=...) is renamed epoch_windows=...; the output "
                      "dim is now 'epoch_window'", DeprecationWarning, stacklevel=2)
        epoch_windows = windows
    windows = epoch_windows
    if windows is not None and epoch is None:
        raise ValueError("epoch_windows are given in epochs: pass epoch= (e.g. the run's "
                         "'epoch' variable)")
    if windows is not None:
        windows = [(float(lo), float(hi)) for lo, hi in windows]
        for lo, hi in windows:
            if not lo < hi:
                raise ValueError(f"epoch window ({lo:g}, {hi:g}) must have lo < hi (epochs)")
    inputs = [step, s] + ([] if epoch is None else [epoch])
    if not any(isinstance(a, xr.DataArray) for a in inputs):
        # plain 1-D arrays (the common case, e.g. one run's variables): no labels to align
        arrs = [np.asarray(a, dtype=np.float64) for a in inputs]
        for name, a in zip(("step", "s", "epoch"), arrs):
            if a.ndim != 1:
                raise ValueError(f"{name} must be 1-D over {dim} (or a DataArray), got shape {a.shape}")
        sizes = {a.size for a in arrs}
        if len(sizes) != 1:
            raise ValueError(f"step, s (and epoch) have different lengths along {dim!r}: {sorted(sizes)}")
        others, lead_shape, coord_src = [], (), None
        t_all = np.where(arrs[0] >= 0, arrs[0], np.nan)[None, :]  # -1 = unknown step
        s_all = arrs[1][None, :]
        e_all = arrs[2][None, :] if epoch is not None else None
    else:
        st = _as_1d_dataarray(step, "step", dim)
        sv = _as_1d_dataarray(s, "s", dim)
        st = st.where(st >= 0)  # -1 = unknown step
        arrays = [st, sv]
        if epoch is not None:
            arrays.append(_as_1d_dataarray(epoch, "epoch", dim))
        try:
            arrays = list(xr.broadcast(*[a.drop_vars([c for c in a.coords if c not in a.dims])
                                         for a in arrays]))
        except ValueError as exc:
            raise ValueError(f"step, s (and epoch) do not line up along {dim!r}: {exc}") from None
        sizes = {a.sizes[dim] for a in arrays}
        if len(sizes) != 1:
            raise ValueError(f"step, s (and epoch) have different lengths along {dim!r}: {sorted(sizes)}")
        others = [d for d in arrays[1].dims if d != dim]
        arrays = [a.transpose(*others, dim) for a in arrays]
        lead_shape = tuple(arrays[1].sizes[d] for d in others)
        coord_src = arrays[1]
        t_all = arrays[0].values.reshape(-1, arrays[0].sizes[dim])
        s_all = arrays[1].values.reshape(-1, arrays[1].sizes[dim])
        e_all = arrays[2].values.reshape(-1, arrays[2].sizes[dim]) if epoch is not None else None

    pairs = []
    for r in range(t_all.shape[0]):
        if windows is None:
            pairs.append((t_all[r], s_all[r]))
            continue
        assert e_all is not None  # windows come with an epoch (checked above)
        e = e_all[r]
        for lo, hi in windows:
            tol = 1e-9 * max(1.0, abs(hi))
            m = np.isfinite(e) & (e >= lo - tol) & (e <= hi + tol)
            pairs.append((t_all[r][m], s_all[r][m]))
    flat = _fit_power_many(pairs, min_points)
    per = 1 if windows is None else len(windows)
    results = [flat[r * per: (r + 1) * per] for r in range(t_all.shape[0])]
    n_w = 1 if windows is None else len(windows)
    shape = lead_shape + (() if windows is None else (n_w,))
    out_dims = tuple(others) + (() if windows is None else ("epoch_window",))

    def collect(key: str, dtype: npt.DTypeLike) -> np.ndarray:
        vals = np.array([[f[key] for f in fits] for fits in results], dtype=dtype)
        return vals.reshape(shape)

    data_vars = {
        "gamma": collect("gamma", np.float64),
        "a": collect("a", np.float64),
        "b": collect("b", np.float64),
        "r2": collect("r2", np.float64),
        "gamma_stderr": collect("gamma_stderr", np.float64),
        "sse": collect("sse", np.float64),
        "n": collect("n", np.int64),
        "status": collect("status", object).astype(str),
        "reason": collect("reason", object).astype(str),
    }
    coords: dict[Hashable, Any] = ({} if coord_src is None else
                                   {d: coord_src[d] for d in others if d in coord_src.coords})
    if windows is not None:
        coords["epoch_window"] = ("epoch_window", [_window_label(lo, hi) for lo, hi in windows])
        coords["epoch_lo"] = ("epoch_window", [lo for lo, _ in windows], schema.attrs("power_time", "epoch_lo"))
        coords["epoch_hi"] = ("epoch_window", [hi for _, hi in windows], schema.attrs("power_time", "epoch_hi"))
    ds = xr.Dataset({k: xr.Variable(out_dims, v, schema.attrs("power_time", k)) for k, v in data_vars.items()},
                    coords=coords)
    ds.attrs = {
        "model": "s(t) = a + b * t**gamma, t in optimizer steps (not rebased within a window)",
        "method": "variable projection: (a, b) closed form per gamma, SSE minimised over gamma "
        f"in [{_GAMMA_BOUNDS[0]:g}, {_GAMMA_BOUNDS[1]:g}] (log grid + bounded Brent)",
        "paper": "key search §3 and appendix A.7",
        "min_points": int(min_points),
        "epoch_window_rule": "lo <= epoch <= hi (epochs completed), both ends included",
    }
    return ds


def upgrade(fit: xr.Dataset) -> xr.Dataset:
    """A :func:`fit_power_time` Dataset saved before the rename, with the current names.

    >>> old = xr.Dataset({"gamma": ("window", [0.4])}, coords={"window": ["0-10"], "window_lo": ("window", [0.0])})
    >>> sorted(upgrade(old).coords)
    ['epoch_lo', 'epoch_window']
    """
    names = {o: n for o, n in RENAMED.items() if (o in fit.variables or o in fit.dims)
             and n not in fit.variables}
    return fit.rename(names) if names else fit


_GAMMA_NOTE_ERRORS = (ValueError, FloatingPointError, np.linalg.LinAlgError)


def _epoch_mask(e: F64, lo: float, hi: float) -> npt.NDArray[np.bool_]:
    """Checkpoints of the epoch window lo <= epoch <= hi (``fit_power_time``'s rule)."""
    tol = 1e-9 * max(1.0, abs(hi))
    return np.isfinite(e) & (e >= lo - tol) & (e <= hi + tol)


def _gamma_rows(runs: Sequence[xr.Dataset], epoch_windows: Sequence[tuple[float, float]]
                ) -> list[tuple[dict[str, float], F64, F64, str]]:
    """γ of many runs with one batched fit (:func:`_fit_power_many`): per run
    ``(scalars, gamma_w, gamma_w_r2, note)``; see :func:`fit_run_gamma`."""
    nw = len(epoch_windows)
    pairs: list[tuple[F64, F64]] = []
    plan: list[tuple[int, bool] | None] = []
    notes: list[str] = []
    for run in runs:
        v = run.variables  # (no DataArray per variable and run)
        if "step" not in v or (np.asarray(v["step"].values) < 0).all():
            plan.append(None)
            notes.append("no step: gamma not computed")
            continue
        step = np.asarray(v["step"].values, dtype=np.float64)
        t = np.where(step >= 0, step, np.nan)
        s = np.asarray(v["param_time"].values, dtype=np.float64)
        first = len(pairs)
        pairs.append((t, s))
        windowed = bool(nw) and "epoch" in v
        if windowed:
            e = np.asarray(v["epoch"].values, dtype=np.float64)
            pairs.extend((t[m], s[m]) for m in (_epoch_mask(e, lo, hi) for lo, hi in epoch_windows))
        plan.append((first, windowed))
        notes.append("")
    fits = _fit_power_many(pairs)
    out = []
    for p, note in zip(plan, notes):
        scal = {"gamma": np.nan, "gamma_a": np.nan, "gamma_b": np.nan, "gamma_r2": np.nan}
        gw, gwr2 = np.full(nw, np.nan), np.full(nw, np.nan)
        if p is not None:
            first, windowed = p
            fit = fits[first]
            scal = {"gamma": float(fit["gamma"]), "gamma_a": float(fit["a"]),
                    "gamma_b": float(fit["b"]), "gamma_r2": float(fit["r2"])}
            if fit["status"] != "ok":
                note = f"gamma fit {fit['status']}: {fit['reason']}"
            if windowed:
                gw = np.array([fits[first + 1 + j]["gamma"] for j in range(nw)], dtype=np.float64)
                gwr2 = np.array([fits[first + 1 + j]["r2"] for j in range(nw)], dtype=np.float64)
        out.append((scal, gw, gwr2, note))
    return out


def fit_run_gamma(run_or_runs: xr.Dataset | Iterable[xr.Dataset],
                  epoch_windows: Iterable[tuple[float, float]] = ((0, 10), (0, 25), (0, 50))) -> xr.Dataset:
    """γ of a run (or a list of runs): ``s(t) ~ a + b t^γ`` over all checkpoints and per
    epoch window (A.7).

    Uses each run's ``step`` (checkpoints with step < 0 are unknown), ``param_time`` and, for
    the epoch windows, ``epoch``. A fit that cannot be done gives NaN and a note, never an
    exception: γ is a side result and must not stop the band analysis.

    Returns
    -------
    xarray.Dataset
        ``gamma``, ``gamma_a``, ``gamma_b``, ``gamma_r2``; ``gamma_w``, ``gamma_w_r2`` over
        dim ``gamma_window`` (labels ``"0-10"`` ...); ``note`` (why something is NaN, ""
        if nothing is). For a list of runs every variable gets a leading ``run`` dim. Attrs from
        :mod:`bandscope.schema` (kind ``run_gamma``: the results variables of the same names).

    Examples
    --------
    >>> from bandscope.keysearch.synthetic import make_run_synthetic
    >>> g = fit_run_gamma(make_run_synthetic(0))
    >>> round(float(g.gamma), 6), g.gamma_window.values.tolist()
    (0.37, ['0-10', '0-25', '0-50'])
    >>> fit_run_gamma([make_run_synthetic(0), make_run_synthetic(1)]).gamma_w.dims
    ('run', 'gamma_window')
    """
    windows = [(float(lo), float(hi)) for lo, hi in epoch_windows]
    one = isinstance(run_or_runs, xr.Dataset)
    runs = [run_or_runs] if isinstance(run_or_runs, xr.Dataset) else list(run_or_runs)
    parts = _gamma_rows(runs, windows)
    lead = () if one else ("run",)
    pick = (lambda a: a[0]) if one else np.asarray  # noqa: E731
    data: dict[str, tuple[tuple[str, ...], Any]] = {k: (lead, pick(np.array([p[0][k] for p in parts])))
            for k in ("gamma", "gamma_a", "gamma_b", "gamma_r2")}
    data["gamma_w"] = (lead + ("gamma_window",), pick(np.array([p[1] for p in parts])))
    data["gamma_w_r2"] = (lead + ("gamma_window",), pick(np.array([p[2] for p in parts])))
    data["note"] = (lead, pick(np.array([p[3] for p in parts], dtype=str)))
    time = runs[0]["param_time"].attrs.get("units", "") if runs and "param_time" in runs[0] else ""
    return schema.annotate(xr.Dataset(data, coords={"gamma_window": [_window_label(lo, hi) for lo, hi in windows]}),
                           "run_gamma", time=time)
