"""Parameter time and its power law in raw time (key search §3 and appendix A.7).

- :func:`parameter_time`: chord parameter time between saved checkpoints,
  ``s_0 = 0``, ``s_k = sum_{m<=k} ||theta_m - theta_{m-1}||_2`` over all floating tensors.
- :func:`fit_power_time`: the three-parameter fit ``s(t) ~ a + b t**gamma`` (A.7 reports
  median gamma = 0.368 over the full 50-epoch window, and per epoch windows 0-10, 0-25, 0-50).

No torch import: tensors are converted by duck typing (``.detach().cpu().numpy()``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import xarray as xr
from scipy.optimize import minimize_scalar

from ..run import _VAR_ATTRS

__all__ = ["parameter_time", "fit_power_time", "power_time", "fit_run_gamma", "RENAMED",
           "upgrade"]

#: Names of :func:`fit_power_time`'s output renamed so that ``window`` means one thing in
#: bandscope (a threshold window of the key-search analysis): old -> new. A Dataset saved
#: with the old names is read back with :func:`upgrade`.
RENAMED = {"window": "epoch_window", "window_lo": "epoch_lo", "window_hi": "epoch_hi"}

#: elements per slice when differencing large tensors (bounds the float64 temporary)
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- parameter time


def _to_numpy(value, where: str) -> np.ndarray:
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


def _entries(item, k: int, keys: Sequence[str] | None):
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
    params: Iterable,
    *,
    names: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> xr.DataArray:
    """Chord parameter time between saved checkpoints (key search §3, appendix A.7).

    .. math:: s_0 = 0, \\qquad s_k = \\sum_{m=1}^{k} \\lVert \\theta_m - \\theta_{m-1} \\rVert_2

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
    coords = {"checkpoint": ("checkpoint", np.arange(n_ckpt, dtype=np.int64))}
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != n_ckpt:
            raise ValueError(f"{len(names)} names for {n_ckpt} checkpoints")
        coords["checkpoint_name"] = ("checkpoint", names)
    attrs = dict(_VAR_ATTRS["param_time"])
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


def power_time(t, a: float, b: float, gamma: float):
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


def _fit_power(t: np.ndarray, s: np.ndarray, min_points: int = 4) -> dict:
    """Kernel: fit ``s = a + b t**gamma`` to finite points with ``t >= 0``.

    Variable projection: for fixed gamma, (a, b) are linear and solved in closed form, so the
    fit is a 1-D minimisation of SSE(gamma) -- a log-spaced grid over gamma in [1e-3, 10] to
    find the basin, then bounded Brent. Time is scaled by ``t_max`` inside (tau = t / t_max) for
    conditioning. Standard error of gamma from the Jacobian at the optimum,
    ``sigma^2 (J^T J)^-1`` with ``sigma^2 = SSE / (n - 3)``.
    """
    out = {v: np.nan for v in _FIT_VARS}
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
    sse_of = lambda g: _linear_ab(np.power(tau, g), s)[2]  # noqa: E731
    lo, hi = _GAMMA_BOUNDS
    grid = np.geomspace(lo, hi, 121)
    sse_grid = _sse_grid(tau, s, grid)
    i = int(np.argmin(sse_grid))
    left, right = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(lambda lg: sse_of(np.exp(lg)), bounds=(np.log(left), np.log(right)),
                          method="bounded", options={"xatol": 1e-12})
    gamma = float(np.exp(res.x))
    a, b_tau, sse = _linear_ab(np.power(tau, gamma), s)
    if sse_grid[i] < sse:  # Brent never does worse than the grid point it started from
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


def _as_1d_dataarray(v, name: str, dim: str) -> xr.DataArray:
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
    step,
    s,
    *,
    epoch_windows: Sequence[tuple[float, float]] | None = None,
    epoch=None,
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

    def fits_for(row: int) -> list[dict]:
        t, s_ = t_all[row], s_all[row]
        if windows is None:
            return [_fit_power(t, s_, min_points)]
        e = e_all[row]
        res = []
        for lo, hi in windows:
            tol = 1e-9 * max(1.0, abs(hi))
            m = np.isfinite(e) & (e >= lo - tol) & (e <= hi + tol)
            res.append(_fit_power(t[m], s_[m], min_points))
        return res

    results = [fits_for(r) for r in range(t_all.shape[0])]
    n_w = 1 if windows is None else len(windows)
    shape = lead_shape + (() if windows is None else (n_w,))
    out_dims = tuple(others) + (() if windows is None else ("epoch_window",))

    def collect(key, dtype):
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
    var_attrs = {
        "gamma": {"long_name": "exponent gamma of s(t) = a + b t**gamma", "units": "1"},
        "a": {"long_name": "offset a of s(t) = a + b t**gamma", "units": "parameter-space L2 distance"},
        "b": {"long_name": "scale b of s(t) = a + b t**gamma",
              "units": "parameter-space L2 distance / step**gamma"},
        "r2": {"long_name": "R^2 = 1 - SSE/SST of the fit on the linear scale", "units": "1"},
        "gamma_stderr": {"long_name": "asymptotic standard error of gamma (Jacobian, SSE/(n-3))",
                         "units": "1"},
        "sse": {"long_name": "sum of squared residuals", "units": "(parameter-space L2 distance)**2"},
        "n": {"long_name": "checkpoints used in the fit"},
        "status": {"long_name": "ok / omitted (too few points) / failed"},
        "reason": {"long_name": "why a fit is omitted or failed"},
    }
    coords = {d: coord_src[d] for d in others if d in coord_src.coords}
    if windows is not None:
        coords["epoch_window"] = ("epoch_window", [_window_label(lo, hi) for lo, hi in windows])
        coords["epoch_lo"] = ("epoch_window", [lo for lo, _ in windows], {"units": "epochs"})
        coords["epoch_hi"] = ("epoch_window", [hi for _, hi in windows], {"units": "epochs"})
    ds = xr.Dataset({k: xr.Variable(out_dims, v, var_attrs[k]) for k, v in data_vars.items()},
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


def _run_gamma(run, epoch_windows):
    """(scalars, gamma_w, gamma_w_r2, note) of one run; see :func:`fit_run_gamma`."""
    nw = len(epoch_windows)
    scal = {"gamma": np.nan, "gamma_a": np.nan, "gamma_b": np.nan, "gamma_r2": np.nan}
    gw, gwr2 = np.full(nw, np.nan), np.full(nw, np.nan)
    note = ""
    if "step" not in run or (np.asarray(run["step"].values) < 0).all():
        return scal, gw, gwr2, "no step: gamma not computed"
    step, s = run["step"].values, run["param_time"].values
    try:
        fit = fit_power_time(step, s)
        scal = {"gamma": float(fit["gamma"]), "gamma_a": float(fit["a"]),
                "gamma_b": float(fit["b"]), "gamma_r2": float(fit["r2"])}
        if str(fit["status"].values) != "ok":
            note = f"gamma fit {fit['status'].values}: {fit['reason'].values}"
    except _GAMMA_NOTE_ERRORS as exc:
        note = f"fit_power_time failed: {type(exc).__name__}: {exc}"
    if nw and "epoch" in run:
        try:
            fit = fit_power_time(step, s, epoch_windows=epoch_windows, epoch=run["epoch"].values)
            gw = np.asarray(fit["gamma"].values, dtype=np.float64).reshape(nw)
            gwr2 = np.asarray(fit["r2"].values, dtype=np.float64).reshape(nw)
        except _GAMMA_NOTE_ERRORS as exc:
            note += f"; windowed fit_power_time failed: {type(exc).__name__}: {exc}"
    return scal, gw, gwr2, note


def fit_run_gamma(run_or_runs, epoch_windows=((0, 10), (0, 25), (0, 50))) -> xr.Dataset:
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
        if nothing is). For a list of runs every variable gets a leading ``run`` dim.

    Examples
    --------
    >>> from bandscope.keysearch.synthetic import make_run_synthetic
    >>> g = fit_run_gamma(make_run_synthetic(0))
    >>> round(float(g.gamma), 6), g.gamma_window.values.tolist()
    (0.37, ['0-10', '0-25', '0-50'])
    >>> fit_run_gamma([make_run_synthetic(0), make_run_synthetic(1)]).gamma_w.dims
    ('run', 'gamma_window')
    """
    epoch_windows = [(float(lo), float(hi)) for lo, hi in epoch_windows]
    one = isinstance(run_or_runs, xr.Dataset)
    parts = [_run_gamma(r, epoch_windows) for r in ([run_or_runs] if one else run_or_runs)]
    lead = () if one else ("run",)
    pick = (lambda a: a[0]) if one else np.asarray  # noqa: E731
    data = {k: (lead, pick(np.array([p[0][k] for p in parts])))
            for k in ("gamma", "gamma_a", "gamma_b", "gamma_r2")}
    data["gamma_w"] = (lead + ("gamma_window",), pick(np.array([p[1] for p in parts])))
    data["gamma_w_r2"] = (lead + ("gamma_window",), pick(np.array([p[2] for p in parts])))
    data["note"] = (lead, pick(np.array([p[3] for p in parts], dtype=str)))
    return xr.Dataset(data, coords={"gamma_window": [_window_label(lo, hi)
                                                     for lo, hi in epoch_windows]})
