"""Weibull and exponential residual fits, R², BIC and n_eff (key search §5.2, §6.3, A.11, B.1).

Model shapes are pure functions (:func:`weibull`, :func:`exponential`), start values come
from :func:`guess` / :func:`start_values`, and the fit statistics (:func:`r_squared`,
:func:`bic`, :func:`bic_eff`) are explicit functions of (SSE, n, p) so that an effective
sample size can be passed.

Two fitting paths give the same optimum:

* :func:`fit_lmfit` -- one curve, ``lmfit.minimize`` (MINPACK Levenberg--Marquardt with
  lmfit's bound transform) multistarted from :func:`start_values`. This is the reference
  ("plain lmfit") path and the fallback of the batch path.
* :func:`fit_curves` -- many curves at once (the analysis uses this). Variable projection:
  for fixed (ω, β) the best amplitude is closed-form, ``A* = Σ R f / Σ f²`` with
  ``f = exp(-(s/ω)^β)``, so only (log ω, β) are searched: first a coarse grid evaluated for
  all curves at once in numpy (plus per-curve ω at checkpoint midpoints for large β), then a
  batched Levenberg--Marquardt on the profiled two-parameter problem (Kaufman's Jacobian) from
  the best grid point in each of three β ranges, iterated until no step lowers the SSE. Curves
  whose batch solve does not converge within ``max_iter`` are re-fitted with :func:`fit_lmfit`
  and the better SSE is kept.
  ``tests/test_fitting.py`` checks that the batch SSE never exceeds the lmfit multistart
  SSE by more than 1e-9 relative, and ``benchmarks/bench_analysis.py`` measures it.

Bounds (B.1): ``A > 0``, ``ω > 0``, ``β ∈ [0.05, 8]``. The exponential is the Weibull with
``β = 1`` (p = 2). All sums of squares are on the linear scale (§5.2).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Hashable, Mapping, Sequence
    from typing import Any, Literal

    import numpy.typing as npt
    import xarray as xr

    #: a float or an array of floats (the model functions and BIC broadcast)
    _Num = float | np.ndarray
    #: the two models of key search 5.2
    Model = Literal["weibull", "exponential"]

BETA_MIN = 0.05
BETA_MAX = 8.0
#: Number of free parameters of each model (A.11).
N_PARAMS = {"weibull": 3, "exponential": 2}

__all__ = [
    "weibull", "exponential", "guess", "start_values", "bic", "bic_eff", "r_squared",
    "FitResult", "fit_lmfit", "fit_curves", "lmfit_model", "compare_curves", "BETA_MIN", "BETA_MAX",
    "n_eff_acf", "compare_windows", "compare_window_sets", "band_sum",
]


# --------------------------------------------------------------------------- model shapes
def weibull(s: _Num, A: _Num, omega: _Num, beta: _Num) -> np.ndarray:
    """Weibull residual ``R(s) = A · exp(-(s/ω)^β)`` (key search Eq. 4, s already rebased).

    Examples
    --------
    >>> float(weibull(0.0, 2.0, 1.0, 1.5))
    2.0
    >>> round(float(weibull(1.0, 2.0, 1.0, 1.5)), 6)  # 2/e
    0.735759
    """
    s = np.asarray(s, dtype=np.float64)
    return A * np.exp(-np.power(np.clip(s, 0.0, None) / omega, beta))


def exponential(s: _Num, A: _Num, omega: _Num) -> np.ndarray:
    """Exponential residual ``R(s) = A · exp(-s/ω)``: the Weibull with β = 1.

    Examples
    --------
    >>> round(float(exponential(2.0, 1.0, 2.0)), 6)
    0.367879
    """
    return weibull(s, A, omega, 1.0)


# --------------------------------------------------------------------------- statistics
def bic(sse: _Num, n: _Num, p: _Num) -> np.ndarray:
    """Reduced BIC ``n log(SSE/n) + p log n`` (key search A.11).

    The dropped terms ``n log 2π + n`` cancel in ΔBIC for equal n. ``SSE <= 0`` (an exact
    fit, only reachable with noise-free data) gives NaN: the Gaussian likelihood behind BIC is
    undefined there, and ±inf would make ΔBIC meaningless.

    Examples
    --------
    >>> round(float(bic(2.0, 10, 3)), 6)  # 10 log 0.2 + 3 log 10
    -9.186624
    """
    sse = np.asarray(sse, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sse > 0, n * np.log(sse / n) + p * np.log(n), np.nan)


def bic_eff(sse: _Num, n: _Num, p: _Num, deflation: _Num = 10.0) -> np.ndarray:
    """BIC with an effective sample size ``n_eff = n / deflation`` (key search B.2).

    ``n_eff log(SSE/n) + p log n_eff``: the per-point error variance SSE/n is kept, only the
    count of independent observations is deflated (adjacent checkpoints are correlated).

    Where ``n_eff <= 1`` the result is NaN: the penalty ``p log n_eff`` is then zero or
    negative, so the extra parameter is rewarded instead of penalised and the nested Weibull
    (SSE never above the exponential's) would "win" whatever the data -- e.g. every fit with
    n < 10 at the paper's deflation of 10. ``deflation`` must be finite and >= 1 (n_eff <= n).
    ``SSE <= 0`` gives NaN as in :func:`bic`.

    Examples
    --------
    >>> round(float(bic_eff(2.0, 20, 3, deflation=10.0)), 6)  # 2 log 0.1 + 3 log 2
    -2.525729
    >>> float(bic_eff(2.0, 8, 3, deflation=10.0))  # n_eff = 0.8: undefined
    nan
    """
    sse = np.asarray(sse, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    d = np.asarray(deflation, dtype=np.float64)
    if not (np.all(np.isfinite(d)) and np.all(d >= 1)):
        raise ValueError(f"deflation must be finite and >= 1 (n_eff = n / deflation <= n), got {deflation!r}")
    n_eff = n / d
    with np.errstate(divide="ignore", invalid="ignore"):
        out = n_eff * np.log(sse / n) + p * np.log(n_eff)
    return np.where((n_eff > 1) & (sse > 0), out, np.nan)


def _bic_log(log_sse: _Num, n: _Num, p: _Num, n_eff: _Num) -> np.ndarray:
    """``n_eff (log SSE - log n) + p log n_eff`` from log SSE (scale-free: log SSE of losses
    ~1e-200 is finite where SSE itself underflows). NaN where SSE = 0 (log = -inf), n_eff is
    NaN or n_eff <= 1 (non-positive penalty, see :func:`bic_eff`)."""
    log_sse = np.asarray(log_sse, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    n_eff = np.asarray(n_eff, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = n_eff * (log_sse - np.log(n)) + p * np.log(n_eff)
    return np.where(np.isfinite(log_sse) & (n_eff > 1), out, np.nan)


#: Rows with more valid points than this get their autocorrelation by FFT (:func:`_acf`).
_ACF_DIRECT_MAX = 256


def _acf(e: npt.ArrayLike, valid: np.ndarray | None = None, max_lag: int | None = None) -> np.ndarray:
    """Sample autocorrelation ρ_k, k = 0..N-1, of each row of ``e`` (C, N) over its valid
    points (``valid`` left-aligned: the first n of a row), as ``statsmodels.tsa.stattools.acf``
    (demeaned, ``adjusted=False``: both c_k and c_0 divided by n). NaN beyond n - 1 and for
    rows with n < 2 or zero variance."""
    e = np.atleast_2d(np.asarray(e, dtype=np.float64))
    C, N = e.shape
    valid = np.isfinite(e) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(e))
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, e, 0.0).sum(axis=1) / np.maximum(n, 1)
    d = np.where(valid, e - mean[:, None], 0.0)
    L = N if max_lag is None else min(N, int(max_lag) + 1)
    c = np.zeros((C, L))
    # rows of few points: the lag products one by one (exact sums); long rows: by FFT
    # (Wiener-Khinchin, O(N log N) instead of O(N * lags); equal to rounding, tested)
    long = n > _ACF_DIRECT_MAX
    short = np.flatnonzero(~long)
    if short.size:
        Ls = min(L, int(n[short].max()) if short.size else 0)
        ds = d[short]
        for k in range(Ls):
            c[short, k] = np.einsum("ij,ij->i", ds[:, : N - k], ds[:, k:])
    if long.any():
        from scipy import fft as sfft

        rows = np.flatnonzero(long)
        width = int(np.flatnonzero(valid[rows].any(axis=0))[-1]) + 1
        nfft = sfft.next_fast_len(2 * width - 1, real=True)
        spec = sfft.rfft(d[rows, :width], n=nfft, axis=1)
        c[rows] = sfft.irfft(spec.real ** 2 + spec.imag ** 2, n=nfft, axis=1)[:, :L]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = c / c[:, :1]
    lag = np.arange(L)[None, :]
    return np.where((lag < n[:, None]) & (n[:, None] >= 2) & (c[:, :1] > 0), rho, np.nan)


def n_eff_acf(residuals: npt.ArrayLike, valid: np.ndarray | None = None,
              p: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Effective sample size from the autocorrelation of fit residuals, per row (key search B.2).

    ``n_eff = n / τ`` with the integrated autocorrelation time ``τ = 1 + 2 Σ_{k=1..K} ρ_k``,
    ρ_k the sample autocorrelation of the residuals (``statsmodels.tsa.stattools.acf``
    convention: demeaned, biased). *Truncation rule*: K is the last lag before the first
    ρ_k ≤ 0 (the initial positive sequence), and at most ``n // 2``; negative lags are never
    summed, so τ ≥ 1 and n_eff ≤ n. Where n_eff < p + 1 (the fit would not have one
    independent point more than parameters) or the residuals are constant, n_eff is NaN and
    the reason says why.

    Compare the paper's fixed ``n / 10`` (:func:`bic_eff`): this estimate uses the data, e.g.
    AR(1) residuals with coefficient φ give τ ≈ (1 + φ)/(1 - φ) and white noise τ ≈ 1.

    Parameters
    ----------
    residuals : array (C, N) or (N,)
        Residuals in checkpoint order; entries outside ``valid`` (or NaN) are ignored; the
        valid entries of a row must be contiguous from its start.
    valid : bool array like ``residuals``, optional
    p : int
        Parameters of the model (3 for the Weibull).

    Returns
    -------
    n_eff : array (C,)
    reason : object array (C,)
        Empty where n_eff is defined.

    Examples
    --------
    >>> e = np.array([1.0, -1.0] * 10)  # alternating: rho_1 < 0, nothing summed
    >>> n_eff_acf(e)[0].tolist()
    [20.0]
    >>> ne, why = n_eff_acf(np.arange(20.0))  # a trend: strongly correlated residuals
    >>> bool(np.isnan(ne[0])), why[0].split(":")[0]
    (True, 'residual autocorrelation leaves n_eff = 2.87 < p + 1 = 4 (tau = 6.98 over 20 points)')
    """
    e = np.atleast_2d(np.asarray(residuals, dtype=np.float64))
    valid = np.isfinite(e) if valid is None else (np.atleast_2d(np.asarray(valid, dtype=bool))
                                                  & np.isfinite(e))
    n = valid.sum(axis=1)
    C = e.shape[0]
    max_lag = int(n.max()) // 2 if C else 0
    rho = _acf(e, valid, max_lag=max_lag)  # (C, max_lag + 1)
    lag = np.arange(rho.shape[1])[None, :]
    inside = (lag >= 1) & (lag <= (n // 2)[:, None])
    pos = np.where(inside, rho > 0, False)
    # initial positive sequence: lags 1..K with every rho_1..rho_K > 0
    run = np.cumprod(np.where(lag >= 1, pos, True), axis=1).astype(bool) & (lag >= 1)
    tau = 1.0 + 2.0 * np.where(run, rho, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ne = n / tau
    reason = np.full(C, "", dtype=object)
    flat = ~np.isfinite(rho[:, 0]) if rho.shape[1] else np.ones(C, dtype=bool)
    for c in np.flatnonzero(flat):
        reason[c] = f"n_eff_acf undefined: {n[c]} residuals with no variance"
    low = ~flat & (ne < p + 1)
    for c in np.flatnonzero(low):
        reason[c] = (f"residual autocorrelation leaves n_eff = {ne[c]:.3g} < p + 1 = {p + 1} "
                     f"(tau = {tau[c]:.3g} over {n[c]} points): n_eff_acf undefined")
    return np.where(flat | low, np.nan, ne), reason


def r_squared(y: npt.ArrayLike, yhat: npt.ArrayLike, axis: int = -1,
              where: npt.ArrayLike | None = None) -> np.ndarray:
    """Coefficient of determination on the linear scale, ``1 - SSE / Σ (y - ȳ)²`` (§5.2).

    Scale-free: y and yhat are divided by max |y| before squaring, so multiplying both by any
    positive factor within float range leaves R² unchanged (no underflow to 0/0).

    Examples
    --------
    >>> float(r_squared([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]))
    1.0
    >>> round(float(r_squared([1e-200, 2e-200, 3e-200], [1e-200, 2e-200, 2e-200])), 12)
    0.5
    """
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    w = np.ones_like(y, dtype=bool) if where is None else np.asarray(where, dtype=bool)
    w = np.broadcast_to(w, np.broadcast_shapes(w.shape, y.shape, yhat.shape))
    n = w.sum(axis=axis, keepdims=True)
    # scale-free: divide by max |y| first, so the squares neither underflow (losses ~1e-200)
    # nor overflow (~1e200); R^2 is a ratio and does not change
    with np.errstate(invalid="ignore"):
        scale = np.max(np.where(w, np.abs(y), 0.0), axis=axis, keepdims=True)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    y, yhat = y / scale, yhat / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(w, y, 0.0).sum(axis=axis, keepdims=True) / n
        sst = np.where(w, (y - mean) ** 2, 0.0).sum(axis=axis)
        sse = np.where(w, (y - yhat) ** 2, 0.0).sum(axis=axis)
        return 1.0 - sse / sst


# --------------------------------------------------------------------------- start values
def guess(s: npt.ArrayLike, R: npt.ArrayLike) -> dict[str, float]:
    """Start values ``{"A", "omega", "beta"}`` from a linearised Weibull fit.

    ``A₀ = R(s₀)`` (or max R if that is not positive); then for points with ``s > 0`` and
    ``0 < R/A₀ < 1``: ``log(-log(R/A₀)) = β log s - β log ω`` by least squares. Falls back to
    β = 1 and ω = the s where R first drops below A₀/e (or half the span) when fewer than two
    points are usable.

    Examples
    --------
    >>> s = np.linspace(0, 5, 20)
    >>> g = guess(s, weibull(s, 2.0, 1.5, 1.3))
    >>> round(g["A"], 3), round(g["omega"], 3), round(g["beta"], 3)
    (2.0, 1.5, 1.3)
    """
    s = np.asarray(s, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if s.size == 0:
        raise ValueError("guess() needs at least one point")
    A0 = R[0] if R[0] > 0 else np.max(R)
    if not A0 > 0:
        A0 = max(float(np.max(np.abs(R))), 1e-300)
    span = float(s.max() - s.min()) or 1.0
    ratio = R / A0
    use = (s > 0) & (ratio > 0) & (ratio < 1)
    beta, omega = 1.0, None
    if use.sum() >= 2:
        xs = np.log(s[use])
        ys = np.log(-np.log(ratio[use]))
        slope, intercept = np.polyfit(xs, ys, 1)
        if np.isfinite(slope) and slope > 0:
            beta = float(np.clip(slope, BETA_MIN, BETA_MAX))
            omega = float(np.exp(-intercept / slope))
    if omega is None or not np.isfinite(omega) or omega <= 0:
        below = np.flatnonzero(ratio < np.exp(-1.0))
        omega = float(s[below[0]]) if below.size and s[below[0]] > 0 else 0.5 * span
        beta = 1.0
    omega = float(np.clip(omega, 1e-6 * span, 1e6 * span))
    return {"A": float(A0), "omega": omega, "beta": beta}


#: A fitted amplitude below this fraction of max |R| counts as "at its bound 0" (failed fit).
_A_TINY = 1e-8

_START_BETAS = (None, 1.0, 0.5, 2.0, 4.0, 0.25, 1.5, 3.0)


def start_values(s: npt.ArrayLike, R: npt.ArrayLike, n_starts: int = 5,
                 model: Model = "weibull") -> list[dict[str, float]]:
    """``n_starts`` start dicts for a multistart fit: :func:`guess` first, then the guess's
    (A, ω) with β = 1, 0.5, 2, 4, 0.25, 1.5, 3 (and ω scaled by 1/2, 2 beyond that).

    For ``model="exponential"`` the starts are (A, ω), (A, ω/3), (A, 3ω), ...
    """
    g = guess(s, R)
    if model == "exponential":
        factors = [1.0, 1 / 3, 3.0, 0.1, 10.0, 1 / 30, 30.0]
        return [{"A": g["A"], "omega": g["omega"] * f} for f in factors[: max(int(n_starts), 1)]]
    out = []
    for i in range(max(int(n_starts), 1)):
        b = _START_BETAS[i % len(_START_BETAS)]
        scale = (1.0, 0.5, 2.0)[(i // len(_START_BETAS)) % 3]
        out.append({"A": g["A"], "omega": g["omega"] * scale,
                    "beta": g["beta"] if b is None else b})
    return out


# --------------------------------------------------------------------------- lmfit path
@dataclass
class FitResult:
    """One curve's fit: parameters, linear-scale SSE and R², n points, status and reason."""

    A: float = np.nan
    omega: float = np.nan
    beta: float = np.nan
    sse: float = np.nan
    r2: float = np.nan
    n: int = 0
    status: str = "failed"
    reason: str = ""
    nfev: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lmfit_model(model: Model = "weibull") -> Any:
    """An ``lmfit.Model`` of :func:`weibull` / :func:`exponential` with the B.1 bounds as
    parameter hints and a ``guess(data, s)`` method built on :func:`guess`.

    For interactive single fits; :func:`fit_lmfit` (multistart) and :func:`fit_curves`
    (batched) are what the analysis uses.

    Examples
    --------
    >>> s = np.linspace(0, 4, 15)
    >>> m = lmfit_model("weibull")
    >>> y = weibull(s, 1.0, 1.2, 1.7)
    >>> out = m.fit(y, m.guess(y, s=s), s=s)
    >>> round(out.params["beta"].value, 4)
    1.7
    """
    import lmfit

    if model not in N_PARAMS:
        raise ValueError(f"model must be 'weibull' or 'exponential', got {model!r}")
    func = weibull if model == "weibull" else exponential
    m = lmfit.Model(func, independent_vars=["s"], name=model)
    m.set_param_hint("A", min=0.0)
    m.set_param_hint("omega", min=1e-300)
    if model == "weibull":
        m.set_param_hint("beta", min=BETA_MIN, max=BETA_MAX)

    def _guess(data: npt.ArrayLike, s: npt.ArrayLike, **kws: Any) -> Any:
        g = guess(s, data)
        if model == "exponential":
            g.pop("beta")
        return m.make_params(**g)

    m.guess = _guess
    return m


def _lmfit_params(start: Mapping[str, float], model: Model, s_span: float) -> Any:
    import lmfit

    p = lmfit.Parameters()
    p.add("A", value=max(start["A"], 1e-300), min=0.0)
    p.add("omega", value=start["omega"], min=1e-12 * s_span)
    if model == "weibull":
        p.add("beta", value=float(np.clip(start["beta"], BETA_MIN, BETA_MAX)),
              min=BETA_MIN, max=BETA_MAX)
    return p


def _lmfit_residual(params: Any, s: np.ndarray, R: np.ndarray, model: Model) -> np.ndarray:
    v = params.valuesdict()
    beta = v["beta"] if model == "weibull" else 1.0
    return weibull(s, v["A"], v["omega"], beta) - R


def fit_lmfit(s: npt.ArrayLike, R: npt.ArrayLike, *, model: Model = "weibull", n_starts: int = 5,
              starts: Sequence[Mapping[str, float]] | None = None, min_points: int | None = None) -> FitResult:
    """Fit one curve with ``lmfit.minimize`` (least squares, bounds of B.1), multistart.

    Parameters
    ----------
    s : array (n,)
        Parameter time, already rebased so that the first fitted point is at 0.
    R : array (n,)
        Residuals at those points (no interpolated values).
    model : {"weibull", "exponential"}
    n_starts : int
        Number of starts from :func:`start_values` (ignored if ``starts`` is given).
    min_points : int, optional
        Fewer points gives status ``"omitted"``; default: the number of parameters + 1.

    Returns
    -------
    FitResult
        The start with the smallest SSE. Never raises on a numerical failure: status
        ``"failed"`` with the reason instead.

    Examples
    --------
    >>> s = np.linspace(0, 4, 15)
    >>> r = fit_lmfit(s, weibull(s, 1.0, 1.2, 1.7))
    >>> r.status, round(r.beta, 4)
    ('ok', 1.7)
    """
    import lmfit

    if model not in N_PARAMS:
        raise ValueError(f"model must be 'weibull' or 'exponential', got {model!r}")
    s = np.asarray(s, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    n = int(s.size)
    p = N_PARAMS[model]
    need = p + 1 if min_points is None else int(min_points)
    if n < need:
        return FitResult(n=n, status="omitted", reason=f"{n} points < min_points={need}")
    if not (np.isfinite(s).all() and np.isfinite(R).all()):
        return FitResult(n=n, status="failed", reason="non-finite s or R in the fit window")
    if starts is None:
        starts = start_values(s, R, n_starts, model=model)
    span = float(s.max() - s.min()) or 1.0
    best = None
    errors = []
    nfev = 0
    for st in starts:
        try:
            out = lmfit.minimize(_lmfit_residual, _lmfit_params(st, model, span),
                                 args=(s, R, model), method="leastsq")
        except Exception as exc:  # a start that blows up must not kill a batch
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        nfev += int(out.nfev)
        v = out.params.valuesdict()
        beta = v["beta"] if model == "weibull" else 1.0
        sse = float(np.sum((R - weibull(s, v["A"], v["omega"], beta)) ** 2))
        if np.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, v["A"], v["omega"], beta)
    if best is None:
        return FitResult(n=n, status="failed", nfev=nfev,
                         reason="every start failed: " + "; ".join(errors[:2]))
    sse, A, omega, beta = best
    r2 = float(r_squared(R, weibull(s, A, omega, beta)))
    status, reason = "ok", ""
    if not A > _A_TINY * np.max(np.abs(R)):
        status, reason = "failed", "amplitude A at its bound 0: no positive decaying component"
    return FitResult(A=float(A), omega=float(omega), beta=float(beta), sse=sse, r2=r2, n=n,
                     status=status, reason=reason, nfev=nfev)


# --------------------------------------------------------------------------- batch path
_LAM_STOP = 1e10  # damping at which a curve counts as converged (no step lowers its SSE)
_REL_STOP = 1e-15  # an accepted step lowering SSE by less than this (relative) also ends it
_U_BOUND = 30.0  # |log ω| bound in scaled units (ω between e^-30 and e^30 times the span)
_GRID_U = np.linspace(np.log(1e-3), np.log(1e3), 22)
_GRID_BETA = np.geomspace(BETA_MIN, BETA_MAX, 16)
_BETA_BRACKETS = ((BETA_MIN, 0.75), (0.75, 1.6), (1.6, BETA_MAX))


def _profile(lx: np.ndarray, posf: np.ndarray, y: np.ndarray, w: np.ndarray, u: np.ndarray,
             beta: np.ndarray) -> tuple[np.ndarray, ...]:
    """Profiled problem at (u, β) per curve: ``(z, f·w, A, r, SSE, Σ f²w)`` with ``z = (s/ω)^β``
    (0 where ``posf`` is 0), ``f = exp(-z)``, the optimal ``A ≥ 0`` and the weighted residual
    ``r = w (y - A f)``.

    ``posf`` is the float mask of positive points (1.0 / 0.0); ``y`` must be 0 where ``w`` is.
    ``f`` is returned times ``w`` (zero in the padding), so no caller multiplies by ``w`` again;
    every value where ``w = 1`` is the plain formula's to the last bit (``x · 1.0 = x``), and
    the padding holds zeros, which add nothing to the row sums.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        z = lx - u[:, None]
        z *= beta[:, None]
        np.exp(z, out=z)
        if np.any(-u * beta > 700.0):  # exp may overflow where s = 0 (lx = 0): inf · 0 is NaN
            z = np.where(posf > 0, z, 0.0)
        else:
            z *= posf  # where(pos, z, 0.0): z is finite where posf is 0 (lx = 0, |u β| <= 700)
        fw = np.negative(z)
        np.exp(fw, out=fw)
    fw *= w
    sff = np.einsum("ij,ij->i", fw, fw)
    sfy = np.einsum("ij,ij->i", fw, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        A = np.where(sff > 0, np.maximum(sfy / sff, 0.0), 0.0)
    r = A[:, None] * fw
    np.subtract(y, r, out=r)
    return z, fw, A, r, np.einsum("ij,ij->i", r, r), sff


def _grid_starts(lx: np.ndarray, pos: np.ndarray, y: np.ndarray, w: np.ndarray,
                 fixed_beta: float | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Best grid point per curve in each β bracket: list of (u, β) start arrays.

    The grid is 22 log ω × 16 β shared by all curves, plus, for the three largest β (nearly
    step-shaped curves, whose SSE is flat in ω between checkpoints), ω at the geometric
    midpoint of every pair of adjacent checkpoints of each curve.

    Each grid point costs two products, one ``exp`` and two row sums over the block, in one
    reused buffer (``-(s/span)^β`` is computed once per β); the profiled SSE of all grid points
    of a β is then computed at once from their row sums. (The padding is zeroed by ``w`` after
    ``exp`` rather than given ``-inf`` before it: ``exp`` of a result that underflows is many
    times slower than of one that does not.)
    """
    C, N = y.shape
    syy = np.einsum("ij,ij->i", w * y, y)
    betas = np.array([1.0]) if fixed_beta else _GRID_BETA
    # per-curve midpoint candidates (scaled log s), NaN where a pair is not two positive points
    with np.errstate(invalid="ignore"):
        mid = np.where(pos[:, 1:] & pos[:, :-1], 0.5 * (lx[:, 1:] + lx[:, :-1]), np.nan)
    n_mid = 0 if fixed_beta else mid.shape[1]
    G = _GRID_U.size
    sse = np.full((C, betas.size, G + n_mid), np.inf)
    notpos = ~pos
    nP, f = np.empty((C, N)), np.empty((C, N))
    mid_ok: np.ndarray = np.isfinite(mid).any(axis=0)  # a midpoint column some curve has

    # the row sums of every grid point of one β, then the profiled SSE of them all at once
    SFF, SFY = np.zeros((G + n_mid, C)), np.zeros((G + n_mid, C))

    def sums(f: np.ndarray, k: int) -> None:  # f·w (zero in the padding)
        np.einsum("ij,ij->i", f, f, out=SFF[k])
        np.einsum("ij,ij->i", f, y, out=SFY[k])

    for bi, b in enumerate(betas):
        with np.errstate(under="ignore", over="ignore"):
            np.multiply(b, lx, out=nP)
            np.exp(nP, out=nP)
            np.negative(nP, out=nP)  # -(s/span)^β
        np.copyto(nP, -0.0, where=notpos)  # -P where P is 0 (s = 0, or padding)
        for ui, u in enumerate(_GRID_U):
            with np.errstate(under="ignore", over="ignore", invalid="ignore"):
                np.multiply(nP, np.exp(-b * u), out=f)
                np.exp(f, out=f)
            f *= w
            sums(f, ui)
        K = G + (n_mid if n_mid and bi >= betas.size - 3 else 0)
        for m in range(K - G):
            um = mid[:, m]
            if not mid_ok[m]:
                continue
            with np.errstate(under="ignore", over="ignore", invalid="ignore"):
                np.multiply(nP, np.exp(-b * np.where(np.isfinite(um), um, 0.0))[:, None], out=f)
                np.exp(f, out=f)
            f *= w
            sums(f, G + m)
        sff, sfy = SFF[:K], SFY[:K]
        with np.errstate(all="ignore"):
            A = np.where(sff > 0, np.maximum(sfy / np.where(sff > 0, sff, 1.0), 0.0), 0.0)
            val = syy - 2 * A * sfy + A * A * sff
        sse[:, bi, :G] = val[:G].T
        if K > G:
            sse[:, bi, G:] = np.where(np.isfinite(mid).T, val[G:], np.inf).T
    ucand = np.concatenate([np.broadcast_to(_GRID_U, (C, G)), np.nan_to_num(mid[:, :n_mid])], axis=1)
    starts = []
    brackets = [(1.0, 1.0)] if fixed_beta else _BETA_BRACKETS
    for lo, hi in brackets:
        sel = (betas >= lo) & (betas <= hi)
        sub = sse[:, sel, :].reshape(C, -1)
        idx = np.argmin(sub, axis=1)
        bi, ui = np.unravel_index(idx, (sel.sum(), G + n_mid))
        starts.append((ucand[np.arange(C), ui].copy(), betas[sel][bi].copy()))
    return starts


def _lm_profiled(lx: np.ndarray, pos: np.ndarray, y: np.ndarray, w: np.ndarray, u: np.ndarray, beta: np.ndarray,
                 fixed_beta: float | None, max_iter: int = 200,
                 xtol: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched Levenberg--Marquardt on the profiled (u = log ω, β) problem.

    Kaufman's variable-projection Jacobian ``J = (I - P_f) ∂(A f)/∂θ``; box β ∈ [0.05, 8]
    handled by projection with an active set (a β at its bound whose step points outward is
    frozen for that step); ``|u| ≤ 30``. A curve stops when no damped step lowers its SSE
    (λ > 1e10, a local minimum to machine precision) -- ``converged`` -- or at ``max_iter``.
    With ``xtol`` a curve also counts as converged once a proposed step moves neither u nor β
    by more than ``xtol`` (the polish of a solution found on a thinned curve).

    The arrays of the curves still iterating are kept compact (copied only when a curve
    stops), the profile at an accepted trial point is copied into the current one row by row,
    and the Jacobian is built in place in a few reused arrays (``f`` carries ``w``, see
    :func:`_profile`).
    """
    u = u.astype(np.float64).copy()
    beta = beta.astype(np.float64).copy()
    C = y.shape[0]
    lam = np.full(C, 1e-3)
    converged = np.zeros(C, dtype=bool)
    a = np.arange(C)
    LX, POSF, Y, W = lx, pos.astype(np.float64), y, w
    live = np.ones(C, dtype=bool)  # rows of the compact arrays still iterating
    prof = _profile(LX, POSF, Y, W, u, beta)
    sse = prof[4].copy()
    for _ in range(max_iter):
        if a.size == 0:
            break
        ua, ba, la = u[a], beta[a], lam[a]
        z, fw, A, r, sse_a, sff = prof
        safe = np.where(sff > 0, sff, 1.0)
        Afz = A[:, None] * fw
        Afz *= z  # A f z (zero where z or w is)
        J_u = Afz * ba[:, None]  # ∂(A f)/∂u
        tmp = fw * (np.einsum("ij,ij->i", fw, J_u) / safe)[:, None]
        J_u -= tmp  # (I - P_f) ∂(A f)/∂u
        huu = np.einsum("ij,ij->i", J_u, J_u)
        gu = np.einsum("ij,ij->i", J_u, r)
        if fixed_beta:
            du = gu / (huu * (1 + la) + 1e-300)
            db = np.zeros_like(du)
        else:
            J_b = LX - ua[:, None]  # (log s - u) where s > 0; A f z is zero elsewhere
            J_b *= Afz
            np.negative(J_b, out=J_b)  # ∂(A f)/∂β
            np.multiply(fw, (np.einsum("ij,ij->i", fw, J_b) / safe)[:, None], out=tmp)
            J_b -= tmp
            hbb = np.einsum("ij,ij->i", J_b, J_b)
            hub = np.einsum("ij,ij->i", J_u, J_b)
            gb = np.einsum("ij,ij->i", J_b, r)
            a11 = huu * (1 + la) + 1e-300
            a22 = hbb * (1 + la) + 1e-300
            det = a11 * a22 - hub * hub
            with np.errstate(divide="ignore", invalid="ignore"):
                du = (a22 * gu - hub * gb) / det
                db = (a11 * gb - hub * gu) / det
            out = ((ba <= BETA_MIN) & (db < 0)) | ((ba >= BETA_MAX) & (db > 0))
            du = np.where(out, gu / a11, du)
            db = np.where(out, 0.0, db)
        with np.errstate(invalid="ignore"):
            un = np.clip(ua + du, -_U_BOUND, _U_BOUND)
            bn = ba if fixed_beta else np.clip(ba + db, BETA_MIN, BETA_MAX)
        trial = _profile(LX, POSF, Y, W, un, bn)
        sse_n = trial[4]
        with np.errstate(invalid="ignore"):
            ok = live & np.isfinite(sse_n) & (sse_n < sse_a)
            small = ok & ((sse_a - sse_n) <= _REL_STOP * sse_a)
        u[a] = np.where(ok, un, ua)
        beta[a] = np.where(ok, bn, ba)
        sse[a] = np.where(ok, sse_n, sse_a)
        lam[a] = np.where(ok, np.maximum(la * 0.3, 1e-12), np.where(live, la * 10.0, la))
        done = (lam[a] > _LAM_STOP) | small | ~np.isfinite(du) | ~np.isfinite(db)
        if xtol is not None:
            done |= (np.abs(un - ua) <= xtol) & (np.abs(bn - ba) <= xtol)
        done &= live
        converged[a[done]] = True
        live &= ~done
        if ok.all():
            prof = trial
        elif ok.any():
            for tv, c in zip(trial, prof):
                np.copyto(c, tv, where=ok if c.ndim == 1 else ok[:, None])
        if 8 * np.count_nonzero(live) <= 7 * live.size:
            # drop the finished rows once they are an eighth of the arrays (rows that stopped
            # are carried until then, their trial values ignored: each row's arithmetic is its own)
            a = a[live]
            LX, POSF, Y, W = LX[live], POSF[live], Y[live], W[live]
            prof = tuple(c[live] for c in prof)
            live = np.ones(a.size, dtype=bool)
    return u, beta, sse, converged


def _thin(lx: np.ndarray, pos: np.ndarray, y: np.ndarray, w: np.ndarray,
          m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``m`` points of each curve (rows of the scaled arrays), evenly spaced in checkpoint index
    over its valid points, first and last included; a curve with at most ``m`` valid points is
    kept whole. Returns the same four arrays with ``m`` columns (padding: ``w = 0``)."""
    C = y.shape[0]
    idx = np.zeros((C, m), dtype=np.int64)
    keep = np.zeros((C, m), dtype=bool)
    for c in range(C):
        where = np.flatnonzero(w[c] > 0)
        k = where.size
        if k <= m:
            idx[c, :k], keep[c, :k] = where, True
        else:
            idx[c] = where[np.round(np.linspace(0.0, k - 1.0, m)).astype(np.int64)]
            keep[c] = True
    rows = np.arange(C)[:, None]
    return (np.where(keep, lx[rows, idx], 0.0), keep & pos[rows, idx],
            np.where(keep, y[rows, idx], 0.0), keep.astype(np.float64))


def _multistart(lx: np.ndarray, pos: np.ndarray, y: np.ndarray, w: np.ndarray, fixed: float | None, max_iter: int,
                starts: list[tuple[np.ndarray, np.ndarray]] | None = None,
                xtol: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched LM from ``starts`` (default the grid starts of :func:`_grid_starts`) for all
    curves at once; per curve the start with the lowest SSE: ``(u, beta, converged)``."""
    if starts is None:
        starts = _grid_starts(lx, pos, y, w, fixed)
    S, C = len(starts), y.shape[0]
    # all starts of all curves in one batched LM call (rows = start-major copies of the curves)
    tile = (lambda a: a) if S == 1 else (lambda a: np.tile(a, (S, 1)))  # noqa: E731
    u, b, sse_s, conv = _lm_profiled(
        tile(lx), tile(pos), tile(y), tile(w),
        np.concatenate([u0 for u0, _ in starts]), np.concatenate([b0 for _, b0 in starts]),
        fixed, max_iter=max_iter, xtol=xtol)
    pick = np.argmin(sse_s.reshape(S, -1), axis=0)
    rows = pick * C + np.arange(C)
    return u[rows], b[rows], conv[rows]


#: Curves with more points than this are thinned for the start search (:func:`fit_curves`).
THIN_POINTS = 512
_FIT_BLOCK = 4096  # curves per batch of the solver
_POLISH_XTOL = 1e-10  # |step| in (log ω, β) below which the full-data polish has converged
_SIMD_COLS = 8  # solver blocks are padded to a multiple of this many columns (see fit_curves)
_MIN_BLOCK = 512  # a width class smaller than this joins the next wider one (per-call overhead)


def _simd_width(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`_SIMD_COLS` (at least one multiple).

    Parameters
    ----------
    n : int
        Columns a block needs.

    Returns
    -------
    int
        The padded number of columns.

    Examples
    --------
    >>> _simd_width(5), _simd_width(16), _simd_width(0)
    (8, 16, 8)
    """
    return max(1, -(-int(n) // _SIMD_COLS)) * _SIMD_COLS


def _width_blocks(rows: np.ndarray, extent: np.ndarray) -> list[np.ndarray]:
    """Split curve indices into solver blocks of one padded width.

    Parameters
    ----------
    rows : numpy.ndarray of int
        Indices of the curves to split (into ``extent``).
    extent : numpy.ndarray of int
        Per curve, one past its last valid column (the width its block needs).

    Returns
    -------
    list of numpy.ndarray
        Blocks of indices sorted by extent: the curves of one block need the same width once
        rounded up to a multiple of :data:`_SIMD_COLS` (:func:`_simd_width`), so a block holds
        no padding beyond that rounding; a width class of fewer than :data:`_MIN_BLOCK` curves
        joins the next wider one (the last one the previous), so a small batch stays one block;
        a class of more than :data:`_FIT_BLOCK` curves is split into equal blocks of at most
        that many. Every curve's arithmetic is its own: the block only decides how much padding
        it is computed with.

    Examples
    --------
    >>> [b.tolist() for b in _width_blocks(np.arange(4), np.array([40, 6, 7, 41]))]
    [[1, 2, 0, 3]]
    """
    if rows.size == 0:
        return []
    order = rows[np.argsort(extent[rows], kind="stable")]
    width = np.maximum(1, -(-extent[order] // _SIMD_COLS)) * _SIMD_COLS
    classes = np.split(order, np.flatnonzero(np.diff(width)) + 1)
    merged: list[np.ndarray] = []
    pending = order[:0]
    for cls in classes:  # narrow classes too small to pay for a block join the next wider one
        pending = np.concatenate([pending, cls])
        if pending.size >= _MIN_BLOCK:
            merged.append(pending)
            pending = order[:0]
    if pending.size:
        if merged:
            merged[-1] = np.concatenate([merged[-1], pending])
        else:
            merged.append(pending)
    return [part for group in merged for part in np.array_split(group, -(-group.size // _FIT_BLOCK))]


def fit_curves(x: npt.ArrayLike, y: npt.ArrayLike, valid: np.ndarray | None = None, *, model: Model = "weibull",
               min_points: int | None = None, fallback: bool = True, n_starts: int = 5,
               max_iter: int = 200) -> dict[str, np.ndarray]:
    """Fit many curves at once (variable projection + batched LM; lmfit fallback).

    Parameters
    ----------
    x : array (C, N)
        Rebased parameter time per curve (the first fitted point at 0); padding anywhere
        ``valid`` is False.
    y : array (C, N)
        Residuals per curve.
    valid : bool array (C, N), optional
        Which points belong to each curve (default: finite x and y).
    model : {"weibull", "exponential"}
    min_points : int, optional
        Curves with fewer valid points get status ``"omitted"`` (default p + 1).
    fallback : bool
        Re-fit curves whose batch solve did not converge with :func:`fit_lmfit`
        (``n_starts`` starts) and keep the lower SSE.

    Returns
    -------
    dict of arrays (C,)
        ``A, omega, beta, sse, r2, n`` (float/int), ``status``, ``reason`` (object),
        ``converged`` (bool: batch solver reached a point no LM step improves), ``log_sse``
        (log SSE, finite where ``sse`` itself under- or overflows) and ``resid`` (C, N: the
        residuals divided by the curve's max |y|, NaN outside the curve).

    Long curves (more than :data:`THIN_POINTS` valid points): the grid search and the
    multistart solve run on ``THIN_POINTS`` points of the curve, evenly spaced in index (first
    and last included), and the best solution is then polished by the same solver on every
    point, so the result is the full-data optimum at a cost linear in the curve's length
    (``tests/test_longrun.py`` compares it with the plain path). Curves are solved in batches
    of at most 4,096; each curve's arithmetic does not depend on the others.

    Scale-free: every curve is divided by its max |y| before fitting and the statistics
    (R², log SSE, the residuals) are computed in those units, so multiplying y by any positive
    factor within float range changes A and SSE by that factor (SSE by its square) and
    nothing else.

    Examples
    --------
    >>> s = np.linspace(0, 3, 12)
    >>> out = fit_curves(np.stack([s, s]), np.stack([weibull(s, 1, 1, 2), weibull(s, 2, 1, 0.7)]))
    >>> np.round(out["beta"], 6).tolist(), out["status"].tolist()
    ([2.0, 0.7], ['ok', 'ok'])
    """
    if model not in N_PARAMS:
        raise ValueError(f"model must be 'weibull' or 'exponential', got {model!r}")
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape} but y has shape {y.shape}")
    ok_pts = np.isfinite(x) & np.isfinite(y)
    valid = ok_pts if valid is None else (np.asarray(valid, dtype=bool) & ok_pts)
    C = x.shape[0]
    p = N_PARAMS[model]
    need = p + 1 if min_points is None else int(min_points)
    n = valid.sum(axis=1)
    out = {
        "A": np.full(C, np.nan), "omega": np.full(C, np.nan), "beta": np.full(C, np.nan),
        "sse": np.full(C, np.nan), "r2": np.full(C, np.nan), "n": n.astype(np.int64),
        "status": np.full(C, "omitted", dtype=object), "reason": np.full(C, "", dtype=object),
        "converged": np.zeros(C, dtype=bool), "log_sse": np.full(C, np.nan),
        "resid": np.full(x.shape, np.nan),
    }
    for c in np.flatnonzero(n < need):
        out["reason"][c] = f"{n[c]} checkpoints in the window < min_points={need}"
    neg = valid & (x < 0)
    if neg.any():
        bad = np.flatnonzero(neg.any(axis=1))
        raise ValueError(f"rebased s must be >= 0; curves {bad.tolist()} have negative s")
    fit = np.flatnonzero(n >= need)
    if fit.size == 0:
        return out
    xv = np.where(valid[fit], x[fit], 0.0)
    yv = np.where(valid[fit], y[fit], 0.0)
    w = valid[fit].astype(np.float64)
    xscale = xv.max(axis=1)
    xscale = np.where(xscale > 0, xscale, 1.0)
    yscale = np.abs(yv).max(axis=1)
    yscale = np.where(yscale > 0, yscale, 1.0)
    xs = xv / xscale[:, None]
    ys = yv / yscale[:, None]
    pos = (xs > 0) & (w > 0)
    with np.errstate(divide="ignore"):
        lx = np.where(pos, np.log(np.where(pos, xs, 1.0)), 0.0)
    fixed = model == "exponential"
    cols = _simd_width(lx.shape[1])
    lxp, posp, ysp, wp = (np.pad(a, ((0, 0), (0, cols - a.shape[1]))) for a in (lx, pos, ys, w))
    best_u, best_b, best_conv = np.zeros(fit.size), np.zeros(fit.size), np.zeros(fit.size, bool)
    long = n[fit] > THIN_POINTS
    # blocks of at most _FIT_BLOCK curves of similar width (the solver's temporaries stay
    # bounded and little of each block is padding); each curve's arithmetic is its own,
    # whichever block it is in
    extent = np.where(w.any(axis=1), w.shape[1] - np.argmax(w[:, ::-1] > 0, axis=1), 0)
    groups = _width_blocks(np.flatnonzero(~long), extent) + [
        g[i: i + _FIT_BLOCK] for g in (np.flatnonzero(long),) for i in range(0, g.size, _FIT_BLOCK)]
    for group in groups:
        if not group.size:
            continue
        # drop the longer curves' padding, keeping a multiple of _SIMD_COLS columns: numpy's row
        # sums then add every value in the same order whatever the block's width, so a curve's
        # fit is bit for bit the same in any block (a sweep's chunks equal the whole stack)
        width = _simd_width(int(extent[group].max()))
        g_in = (lxp[group, :width], posp[group, :width], ysp[group, :width], wp[group, :width])
        if not long[group[0]]:
            best_u[group], best_b[group], best_conv[group] = _multistart(*g_in, fixed, max_iter)
            continue
        # long curves: starts searched and solved on THIN_POINTS of each curve, then the
        # solution polished on every point (the reported fit is the full-data optimum), in
        # buckets of curves within a factor 2 in length (padding costs at most as much as data)
        u0, b0, _ = _multistart(*_thin(*g_in, THIN_POINTS), fixed, max_iter)
        order = np.argsort(n[fit][group], kind="stable")
        while order.size:
            nb = n[fit][group][order]
            take = order[nb <= 2 * nb[0]]
            order = order[nb > 2 * nb[0]]
            rows = group[take]
            wd = int(np.flatnonzero(w[rows].any(axis=0))[-1]) + 1
            best_u[rows], best_b[rows], best_conv[rows] = _multistart(
                lx[rows, :wd], pos[rows, :wd], ys[rows, :wd], w[rows, :wd], fixed, max_iter,
                starts=[(u0[take], b0[take])], xtol=_POLISH_XTOL)
    _, _, A_s, _, _, _ = _profile(lx, pos.astype(np.float64), ys, w, best_u, best_b)
    omega = np.exp(best_u) * xscale
    beta = best_b.copy()
    # statistics in scaled units (y / max|y|): SSE of losses ~1e-200 would underflow to 0
    yhat_s = weibull(xv, A_s[:, None], omega[:, None], beta[:, None])
    sse_s = np.einsum("ij,ij->i", w * (ys - yhat_s), ys - yhat_s)
    r2 = r_squared(ys, yhat_s, axis=1, where=valid[fit])
    out["converged"][fit] = best_conv
    out["status"][fit] = "ok"
    for j in np.flatnonzero(~best_conv) if fallback else ():
        c = fit[j]
        m = valid[c]
        ref = fit_lmfit(x[c, m], y[c, m] / yscale[j], model=model, n_starts=n_starts,
                        min_points=need)
        if ref.status == "ok" and ref.sse < sse_s[j]:
            A_s[j], omega[j], beta[j] = ref.A, ref.omega, ref.beta
            sse_s[j], r2[j] = ref.sse, ref.r2
            yhat_s[j] = weibull(xv[j], ref.A, ref.omega, ref.beta)
        out["reason"][c] = "batch solver did not converge; lmfit multistart fallback used"
    out["A"][fit], out["omega"][fit], out["beta"][fit] = A_s * yscale, omega, beta
    out["r2"][fit] = r2
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        out["sse"][fit] = sse_s * yscale**2
        out["log_sse"][fit] = np.log(sse_s) + 2.0 * np.log(yscale)
    out["resid"][fit] = np.where(valid[fit], ys - yhat_s, np.nan)
    bad = ~(np.isfinite(sse_s) & (A_s > _A_TINY))
    for j in np.flatnonzero(bad):
        out["status"][fit[j]] = "failed"
        out["reason"][fit[j]] = ("amplitude A at its bound 0: no positive decaying component "
                                 "in the window" if np.isfinite(sse_s[j]) else "non-finite SSE")
    return out


def compare_curves(x: npt.ArrayLike, y: npt.ArrayLike, valid: np.ndarray | None = None, *, deflation: float = 10.0,
                   min_points: int | None = None, fallback: bool = True, n_starts: int = 5) -> dict[str, np.ndarray]:
    """Weibull and exponential fits of the same curves plus BIC, ΔBIC and ΔBIC(n_eff).

    ``delta_bic = bic(sse_weibull, n, 3) - bic(sse_exp, n, 2)`` (A.11; negative favours
    Weibull); ``delta_bic_neff`` the same with :func:`bic_eff` and ``deflation``;
    ``delta_bic_acf`` the same with n_eff = ``n_eff_acf`` (:func:`n_eff_acf` of the Weibull
    fit's residuals, used for both models so both are penalised alike). BICs are computed
    from log SSE, so they are defined at any loss scale.
    ``status``/``reason`` are the Weibull fit's (a failed exponential is noted in reason).

    Returns
    -------
    dict of arrays (C,)
        Weibull ``A, omega, beta, r2, sse_weibull``; exponential ``exp_A, exp_omega, exp_r2,
        sse_exp``; ``bic_weibull, bic_exp, delta_bic, delta_bic_neff, n_eff_acf, delta_bic_acf,
        n, status, reason``.
    """
    need = 5 if min_points is None else int(min_points)
    wb = fit_curves(x, y, valid, model="weibull", min_points=need, fallback=fallback,
                    n_starts=n_starts)
    ex = fit_curves(x, y, valid, model="exponential", min_points=need, fallback=fallback,
                    n_starts=n_starts)
    n = wb["n"]
    okw = wb["status"] == "ok"
    oke = ex["status"] == "ok"
    both = okw & oke
    d = float(deflation)
    if not (np.isfinite(d) and d >= 1):
        raise ValueError(f"deflation must be finite and >= 1 (n_eff = n / deflation <= n), got {deflation!r}")
    n_eff = n / d
    ne_acf, acf_reason = n_eff_acf(wb["resid"], p=N_PARAMS["weibull"])
    lw, le = wb["log_sse"], ex["log_sse"]
    bw = np.where(okw, _bic_log(lw, n, 3, n), np.nan)
    be = np.where(oke, _bic_log(le, n, 2, n), np.nan)
    bwe = np.where(okw, _bic_log(lw, n, 3, n_eff), np.nan)
    bee = np.where(oke, _bic_log(le, n, 2, n_eff), np.nan)
    bwa = np.where(okw, _bic_log(lw, n, 3, ne_acf), np.nan)
    bea = np.where(oke, _bic_log(le, n, 2, ne_acf), np.nan)
    reason = wb["reason"].copy()

    def note(c: int | np.integer, text: str) -> None:
        reason[c] = (reason[c] + "; " if reason[c] else "") + text

    for c in np.flatnonzero(okw & ~oke):
        reason[c] = f"exponential fit {ex['status'][c]}: {ex['reason'][c]}"
    for c in np.flatnonzero(both & (n_eff <= 1)):
        note(c, f"delta_bic_neff undefined: n_eff = {n[c]}/{d:g} <= 1 (non-positive penalty)")
    exact = both & ~(np.isfinite(lw) & np.isfinite(le))
    for c in np.flatnonzero(exact):
        note(c, "exact fit (SSE = 0): BIC undefined")
    for c in np.flatnonzero(both & ~exact & (acf_reason != "")):
        note(c, acf_reason[c])
    return {
        "A": wb["A"], "omega": wb["omega"], "beta": wb["beta"], "r2": wb["r2"],
        "sse_weibull": wb["sse"],
        "exp_A": ex["A"], "exp_omega": ex["omega"], "exp_r2": ex["r2"], "sse_exp": ex["sse"],
        "bic_weibull": bw, "bic_exp": be,
        "delta_bic": np.where(both, bw - be, np.nan),
        "delta_bic_neff": np.where(both, bwe - bee, np.nan),
        "n_eff_acf": np.where(okw, ne_acf, np.nan),
        "delta_bic_acf": np.where(both, bwa - bea, np.nan),
        "n": n, "status": wb["status"], "reason": reason,
        "converged": wb["converged"] & ex["converged"],
    }


# --------------------------------------------------------------------------- labelled wrappers
#: outputs of :func:`compare_curves` that :func:`compare_windows` returns, and their dtype
_COMPARE_OUT = {
    "A": float, "omega": float, "beta": float, "r2": float, "sse_weibull": float,
    "exp_A": float, "exp_omega": float, "exp_r2": float, "sse_exp": float,
    "bic_weibull": float, "bic_exp": float, "delta_bic": float, "delta_bic_neff": float,
    "n_eff_acf": float, "delta_bic_acf": float, "n": np.int64, "status": str, "reason": str,
}


def compare_windows(residual: xr.DataArray, param_time: xr.DataArray, fit_start: xr.DataArray | int,
                    fit_n: xr.DataArray | int, *, dim: str = "checkpoint", deflation: float = 10.0,
                    min_points: int = 5, fallback: bool = True, n_starts: int = 5) -> xr.Dataset:
    """Weibull vs exponential fits of labelled residual curves in given checkpoint windows.

    The labelled wrapper of :func:`compare_curves` (key search §5.2, §6.3, A.11, B.1, B.2):
    curve ``c`` is ``residual`` at checkpoints ``fit_start[c] .. fit_start[c] + fit_n[c] - 1``
    with parameter time rebased to 0 at its first checkpoint (B.1). All curves are fitted in
    one batch.

    Parameters
    ----------
    residual : xarray.DataArray
        Residuals with dim ``dim`` (e.g. ``(run, checkpoint, band)``, or R_tot ``(run,
        checkpoint)``).
    param_time : xarray.DataArray
        Parameter time over ``dim`` (broadcast against ``residual``).
    fit_start, fit_n : xarray.DataArray or int
        First checkpoint index and number of checkpoints of each window (e.g. from
        :func:`bandscope.keysearch.trajectory.active_windows`, dims ``(run, window, band)``); -1 / 0
        for an empty window.
    deflation, min_points, fallback, n_starts
        As in :func:`compare_curves`.

    Returns
    -------
    xarray.Dataset
        Every output of :func:`compare_curves` (``A``, ``omega``, ``beta``, ``r2``,
        ``sse_weibull``, ``exp_*``, ``bic_*``, ``delta_bic``, ``delta_bic_neff``,
        ``n_eff_acf``, ``delta_bic_acf``, ``n``, ``status``, ``reason``) over the dims of
        ``fit_start`` and ``residual`` (without ``dim``).

    Examples
    --------
    >>> import xarray as xr
    >>> s = xr.DataArray(np.linspace(0, 4, 20), dims="checkpoint")
    >>> R = xr.DataArray(weibull(s.values, 1.0, 1.5, 2.0), dims="checkpoint")
    >>> out = compare_windows(R, s, xr.DataArray([0, 0], dims="curve"), xr.DataArray([20, 12], dims="curve"))
    >>> np.round(out.beta.values, 6).tolist(), out.status.values.tolist()
    ([2.0, 2.0], ['ok', 'ok'])
    """
    return compare_window_sets([(residual, param_time, fit_start, fit_n)], dim=dim,
                               deflation=deflation, min_points=min_points, fallback=fallback,
                               n_starts=n_starts)[0]


def compare_window_sets(sets: Sequence[tuple[xr.DataArray, xr.DataArray, xr.DataArray | int, xr.DataArray | int]], *,
                        dim: str = "checkpoint", deflation: float = 10.0, min_points: int = 5, fallback: bool = True,
                        n_starts: int = 5) -> list[xr.Dataset]:
    """:func:`compare_windows` of several sets of curves in one batch (one grid search and one
    batched Levenberg--Marquardt for all of them, which is what makes the analysis fast).

    Parameters
    ----------
    sets : sequence of (residual, param_time, fit_start, fit_n)
        Each as the arguments of :func:`compare_windows` (e.g. the band windows and the
        full-loss curves of the same runs).

    Returns
    -------
    list of xarray.Dataset
        One per set, equal to ``compare_windows(*set)``.
    """
    import xarray as xr

    packed = []
    for residual, param_time, fit_start, fit_n in sets:
        fit_start = fit_start if isinstance(fit_start, xr.DataArray) else xr.DataArray(fit_start)
        fit_n = fit_n if isinstance(fit_n, xr.DataArray) else xr.DataArray(fit_n)
        template = residual.isel({dim: 0}, drop=True)
        fit_start, fit_n, template = xr.broadcast(fit_start, fit_n, template)
        out_dims, shape, K = fit_start.dims, fit_start.shape, residual.sizes[dim]

        def curves(da: xr.DataArray, out_dims: tuple[Hashable, ...] = out_dims, shape: tuple[int, ...] = shape,
                   K: int = K) -> np.ndarray:  # (C, K) view, broadcast, no copy
            own = [d for d in out_dims if d in da.dims]
            a = da.transpose(*own, dim).values
            a = a.reshape([da.sizes[d] if d in da.dims else 1 for d in out_dims] + [K])
            return np.broadcast_to(a, (*shape, K)).reshape(-1, K)

        start = np.asarray(fit_start.values, dtype=np.int64).reshape(-1)
        nfit = np.asarray(fit_n.values, dtype=np.int64).reshape(-1)
        N = max(int(nfit.max()) if nfit.size else 0, 1)
        j = np.arange(N)
        inwin = j[None, :] < nfit[:, None]
        idx = np.where(inwin, np.maximum(start, 0)[:, None] + j[None, :], 0)
        rows = np.arange(start.size)[:, None]
        s_pk = curves(param_time)[rows, idx]
        x = np.where(inwin, s_pk - s_pk[:, :1], np.nan)
        y = np.where(inwin, curves(residual)[rows, idx], np.nan)
        coords = {d: template.coords[d] for d in out_dims if d in template.coords}
        packed.append((x, y, inwin, out_dims, shape, coords))
    Np = max(p[0].shape[1] for p in packed)
    pad = lambda a, fill: np.pad(a, ((0, 0), (0, Np - a.shape[1])), constant_values=fill)  # noqa: E731
    res = compare_curves(np.concatenate([pad(p[0], np.nan) for p in packed]),
                         np.concatenate([pad(p[1], np.nan) for p in packed]),
                         np.concatenate([pad(p[2], False) for p in packed]),
                         deflation=deflation, min_points=min_points, fallback=fallback,
                         n_starts=n_starts)
    out, at = [], 0
    for _, _, inwin, out_dims, shape, coords in packed:
        C = inwin.shape[0]
        out.append(xr.Dataset({key: (out_dims, np.asarray(res[key][at: at + C]).astype(t)
                                     .reshape(shape)) for key, t in _COMPARE_OUT.items()},
                              coords=coords))
        at += C
    return out


def band_sum(fits: xr.Dataset, residual: xr.DataArray, total_residual: xr.DataArray, param_time: xr.DataArray,
             fit_start: xr.DataArray, *, missing: Literal["nan", "observed"] = "nan",
             dim: str = "checkpoint") -> xr.Dataset:
    """Band-fit reconstruction of the total residual, R̂_Σ = Σ_i R̂_i, and its R² (§6.3).

    ``R̂_i(s) = A_i exp(-((s - s_start,i)/ω_i)^β_i)`` for s after band i's window starts and
    ``A_i`` (its value at the window start) before it, on every checkpoint of the run.

    Parameters
    ----------
    fits : xarray.Dataset
        ``A``, ``omega``, ``beta``, ``status`` with dims (..., band), e.g. from
        :func:`compare_windows` (``(run, window, band)``).
    residual : xarray.DataArray
        R_i over (..., ``dim``, band) (NaN in padding).
    total_residual : xarray.DataArray
        R_tot over (..., ``dim``).
    param_time : xarray.DataArray
        s over (..., ``dim``).
    fit_start : xarray.DataArray
        Window start index per fit (-1 if none).
    missing : {"nan", "observed"}
        A band whose fit is not ``"ok"``: ``"nan"`` makes R̂_Σ and R² NaN (a partial sum is
        not the reconstruction); ``"observed"`` puts the band's observed R_i in the sum.

    Returns
    -------
    xarray.Dataset
        ``band_sum_fit`` (..., ``dim``), ``band_sum_r2`` and ``band_sum_n_fitted`` (...).
    """
    import xarray as xr

    if missing not in ("nan", "observed"):
        raise ValueError(f"band_sum_missing must be 'nan' or 'observed', got {missing!r}")
    lead = [d for d in fits["A"].dims if d != "band"]
    shape = tuple(fits.sizes[d] for d in lead)

    def arr(da: xr.DataArray, dims: Sequence[Hashable]
            ) -> np.ndarray:  # numpy view of ``da`` laid out as ``dims``, broadcast over fits' dims
        a = da.transpose(*[d for d in dims if d in da.dims]).values
        a = a.reshape([da.sizes[d] if d in da.dims else 1 for d in dims])
        return np.broadcast_to(a, [max(fits.sizes.get(d, 1), da.sizes.get(d, 1)) for d in dims])

    K = param_time.sizes[dim]
    s = np.ascontiguousarray(arr(param_time, (*lead, dim)))
    par = {k: fits[k].transpose(*lead, "band").values for k in ("A", "omega", "beta")}
    ok = (fits["status"].transpose(*lead, "band").values == "ok")
    start = np.maximum(arr(fit_start, (*lead, "band")), 0)
    s_start = np.take_along_axis(s, start.reshape(*shape, -1), axis=-1)
    valid = np.isfinite(s)  # padding: NaN parameter time
    with np.errstate(invalid="ignore"):
        xx = np.clip(s[..., None, :] - s_start[..., None], 0.0, None)
        Rhat = weibull(xx, par["A"][..., None], par["omega"][..., None], par["beta"][..., None])
    if missing == "observed":
        Robs = arr(residual, (*lead, "band", dim))
        Rhat = np.where(ok[..., None], Rhat, Robs)
        all_ok = np.ones(ok.shape[:-1], dtype=bool)
    else:
        all_ok = ok.all(axis=-1)
    total = np.where(all_ok[..., None], Rhat.sum(axis=-2), np.nan)
    total[~valid] = np.nan
    Rt = arr(total_residual, (*lead, dim))
    r2 = np.where(all_ok, r_squared(Rt, np.nan_to_num(total), axis=-1, where=valid), np.nan)
    coords = {d: fits.coords[d] for d in lead if d in fits.coords}
    coords[dim] = param_time.coords[dim] if dim in param_time.coords else np.arange(K)
    return xr.Dataset({
        "band_sum_fit": ((*lead, dim), total),
        "band_sum_r2": (tuple(lead), r2),
        "band_sum_n_fitted": (tuple(lead), ok.sum(axis=-1).astype(np.int64)),
    }, coords=coords)
