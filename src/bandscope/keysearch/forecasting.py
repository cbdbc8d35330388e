"""Live forecasting of band floors and crossing times from a run in progress.

:func:`forecast` (exposed as ``bandscope.forecast``; this module is ``bandscope.keysearch.forecasting``
so that the name ``bandscope.forecast`` stays the function) fits, per band and for the full
loss, the Weibull-with-floor model in parameter time (key search Eq. 4 with the floor of A.9
and an onset as fitted parameters)

    L(s) = L∞ + A · exp(-(max(s - s_on, 0)/ω)^β),   s ≥ s_start,  s_on ≥ s_start,

by least squares on the linear scale (§5.2) to every saved checkpoint from the curve's peak
``s_start`` (the first checkpoint for a curve that falls from the start) up to the latest one,
and reports

* the floor ``L∞`` (fitted, *not* the mean of the last checkpoints of A.9),
* ``s_reach``: the parameter time at which the fitted residual ``L - L∞`` falls to ``level``
  (default 1 %) of its value at ``s_start``: ``s_reach = s_on + ω (ln 1/level)^(1/β)``,
* ``s_remaining = max(s_reach - s_now, 0)``, ``s_now`` the latest checkpoint's parameter time,

each with a profile-likelihood interval widened for unequal and correlated noise
(``docs/forecast.md`` has the derivation and the measured coverage).

Method (numpy kernel :func:`_forecast_curves`, vectorised over curves):

1. Reparameterise the shape by ``v = log((s_reach - s_start)/span)``, β and the onset
   ``δ = s_on - s_start``: ``f = exp(-Λ ((x - δ)₊ / (e^v span - δ))^β)``, Λ = ln(1/level),
   x = s - s_start. For fixed (v, β, δ) the model ``L∞ + A f`` is linear; the bounded least
   squares (L∞ ≥ 0, A ≥ 0) is solved in closed form (a 2-variable box QP).
2. Evaluate the profiled SSE on a (v, β, δ) grid (40 × 20 × 6: v over 1e-2 … 1e4 fitted spans,
   β over the bounds [0.05, 8] of B.1, δ from 0 to the first checkpoint 10 % of the way down),
   then zoom onto the bounding box of the confidence region (24 × 24 × 6) until the region
   spans at least 6 grid cells in v and β (at most 5 zooms). The estimate is the best point.
3. Interval: the profile-likelihood interval of a function g of the parameters is the range of
   g over the region ``{θ: SSE(θ) ≤ T_g}``,
   ``T_g = SSE_min (1 + κ_g df F_{df, n-5}(confidence) / (n - 5))``, n fitted checkpoints,
   5 parameters. df = 1 for the floor; df = 3 for s_reach (the projection of the joint region
   of the three shape parameters (v, β, δ), because the 1-df interval of the extrapolated
   crossing under-covers: 0.77-0.82 measured at 95 %). κ_g ≥ 1 is the ratio of the
   Newey--West sandwich variance of g to its model-based variance at the optimum
   (:func:`_robust_factor`): the noise of a loss curve shrinks along the run and adjacent
   checkpoints are correlated (B.2), and the plain F threshold assumes neither.
   s_reach's interval is the range of v over the grid points inside its region; the floor's is
   the union over the grid points of the exact range of L∞ inside the (L∞, A) ellipse there,
   restricted to L∞ ≥ 0, A ≥ 0. A region reaching the grid's upper end of v gives
   ``s_reach_high = inf`` (the data do not bound the crossing yet).

Curves get NaN and a ``status``/``reason`` instead of a plausible number when (checked in this
order): fewer than ``min_points`` checkpoints (``"too_few_checkpoints"``); the curve rose
significantly (> 3 noise sd) above its first loss and either fewer than ``min_points``
checkpoints follow its peak or its latest checkpoints (median of 3) have fallen back from the
peak by at most half of the rise (``"rising"``); no significant decline since the peak (``"not_started"``: the fall
from the peak to the latest checkpoints (median of 3) is under 5 noise sd -- the noise sd from
the median absolute second difference -- and the Weibull-with-floor fit is no better than a
constant by an F-test at ``1 - 1e-3``; or fewer than ``min_points`` checkpoints after a peak
that is not a significant rise); the fit failed (``"failed"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from scipy import stats

from .. import schema
from .fitting import BETA_MAX, BETA_MIN

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence
    from typing import Any, Literal

    import numpy.typing as npt
    import pandas as pd

    from .conformal import Calibration

__all__ = ["forecast", "ForecastOptions", "STATUSES", "prefix_length"]

#: Status values of a forecast (``status`` variables).
STATUSES = ("ok", "too_few_checkpoints", "rising", "not_started", "failed")

_V_RANGE = (np.log(1e-2), np.log(1e4))  # log((s_reach - s_start) / span) searched
_GRID1 = (40, 20, 6)  # (v, beta, onset) points of the first grid
_GRIDZ = (24, 24, 6)  # points of each zoom
_N_ZOOM = 5  # at most this many zooms
_MIN_CELLS = 6
_N_PAR = 5  # L_inf, A, s_reach, beta, onset
_KAPPA_MAX = 20.0
_DF_REACH = 3  # s_reach: projection of the joint region of (s_reach, beta, onset)
_DECLINE_P = 1e-3  # F-test level for "has the curve started to decline"
_RISE_Z = 3.0  # a rise counts when it exceeds this many noise sds
_FALL_Z = 5.0  # a fall from the peak counts as a decline when it exceeds this many noise sds
_BACK_DOWN = 0.5  # a curve that rose is forecast once it has fallen back by more than this share of its rise


@dataclass(frozen=True)
class ForecastOptions:
    """Options of :func:`forecast`, validated once (shared by the function, CLI and callbacks).

    Attributes
    ----------
    level : float
        Residual fraction q in (0, 1): ``s_reach`` is where the fitted residual reaches q times
        its value at the curve's start of decline (default 0.01, the 0.01-crossing of §5.1).
    confidence : float
        Interval level in (0, 1) (default 0.95).
    min_points : int
        Fewest checkpoints from the curve's peak to forecast from (>= 6: 5 parameters + 1).
    autocorr : bool
        Include the lag-1 (Newey--West) term in the sandwich widening of the intervals, for
        correlated adjacent checkpoints (default True).
    """

    level: float = 0.01
    confidence: float = 0.95
    min_points: int = 6
    autocorr: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.level, (int, float)) and 0 < float(self.level) < 1):
            raise ValueError(f"level must be a residual fraction in (0, 1), e.g. 0.01; got {self.level!r}")
        if not (isinstance(self.confidence, (int, float)) and 0 < float(self.confidence) < 1):
            raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {self.confidence!r}")
        if int(self.min_points) != self.min_points or int(self.min_points) < 6:
            raise ValueError(f"min_points must be an integer >= 6 (5 parameters + 1); got {self.min_points!r}")


def prefix_length(n_checkpoints: int, fraction: float) -> int:
    """Checkpoints in the first ``fraction`` of a run: ``max(1, floor(fraction · K + 1/2))``.

    Examples
    --------
    >>> prefix_length(53, 0.2), prefix_length(53, 1.0), prefix_length(3, 0.01)
    (11, 53, 1)
    """
    f = float(fraction)
    if not (np.isfinite(f) and 0 < f <= 1):
        raise ValueError(f"prefix fraction must be in (0, 1], e.g. 0.4; got {fraction!r}")
    return max(1, min(int(n_checkpoints), int(np.floor(f * n_checkpoints + 0.5))))


# --------------------------------------------------------------------------- kernel pieces
def _noise_sd(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Robust checkpoint-to-checkpoint noise sd per curve from second differences (MAD)."""
    d = y[:, 2:] - 2 * y[:, 1:-1] + y[:, :-2]
    ok = w[:, 2:] * w[:, 1:-1] * w[:, :-2] > 0
    out = np.zeros(y.shape[0])
    for c in range(y.shape[0]):
        if ok[c].any():
            out[c] = 1.4826 * np.median(np.abs(d[c, ok[c]])) / np.sqrt(6.0)
    return out


def _qp(S1: np.ndarray, Sf: np.ndarray, Sff: np.ndarray, Sy: np.ndarray, Sfy: np.ndarray,
        Syy: np.ndarray) -> tuple[np.ndarray, ...]:
    """Bounded linear least squares min over c ≥ 0, A ≥ 0 of Σ w (y - c - A f)².

    All inputs broadcast; returns ``(c, A, sse, cu, Au, sse_u, det)`` (constrained optimum and
    the unconstrained one, which centres the SSE ellipse).
    """
    det = S1 * Sff - Sf * Sf
    tiny = 1e-12 * np.maximum(S1 * Sff, 1e-300)
    good = det > tiny
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.where(good, det, 1.0)
        Au = np.where(good, (S1 * Sfy - Sf * Sy) / sd, 0.0)
        cu = np.where(good, (Sy - Au * Sf) / np.where(S1 > 0, S1, 1.0), Sy / np.where(S1 > 0, S1, 1.0))

    def sse(c: np.ndarray | float, A: np.ndarray | float) -> np.ndarray:
        return Syy - 2 * c * Sy - 2 * A * Sfy + c * c * S1 + 2 * c * A * Sf + A * A * Sff

    sse_u = sse(cu, Au)
    best_c = np.where((cu >= 0) & (Au >= 0) & good, cu, np.nan)
    best_A = np.where((cu >= 0) & (Au >= 0) & good, Au, np.nan)
    best = np.where(np.isfinite(best_c), sse_u, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        cands = [
            (np.zeros_like(Sy), np.maximum(Sfy / np.where(Sff > 0, Sff, 1.0), 0.0)),  # c = 0 face
            (np.maximum(Sy / np.where(S1 > 0, S1, 1.0), 0.0), np.zeros_like(Sy)),  # A = 0 face
        ]
    for c, A in cands:
        e = sse(c, A)
        take = e < best
        best = np.where(take, e, best)
        best_c = np.where(take, c, best_c)
        best_A = np.where(take, A, best_A)
    return best_c, best_A, np.maximum(best, 0.0), cu, Au, np.maximum(sse_u, 0.0), det


def _floor_range(T: np.ndarray, S1: np.ndarray, Sf: np.ndarray, Sff: np.ndarray, Sy: np.ndarray, Syy: np.ndarray,
                 cu: np.ndarray, Au: np.ndarray, sse_u: np.ndarray, det: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Range of c over ``{(c, A): SSE(c, A) ≤ T, c ≥ 0, A ≥ 0}`` at each grid point.

    The SSE is the quadratic ``sse_u + (θ - θu)ᵀ M (θ - θu)``, M = [[S1, Sf], [Sf, Sff]]. Its
    extreme c are ``cu ± sqrt(r Sff / det)`` (r = T - sse_u) at A = ``Au ∓ Sf sqrt(r/(Sff det))``;
    where that A is negative the extreme lies on the face A = 0, where
    ``S1 c² - 2 Sy c + Syy ≤ T``. Returns ``(lo, hi)``, NaN where the set is empty.
    """
    r = np.maximum(T - sse_u, 0.0)
    good = det > 1e-12 * np.maximum(S1 * Sff, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        sdet = np.where(good, det, 1.0)
        half = np.sqrt(r * Sff / sdet)
        dA = Sf * np.sqrt(r / (np.where(Sff > 0, Sff, 1.0) * sdet))
        # the face A = 0
        disc = Sy * Sy - S1 * (Syy - T)
        has_face = disc >= 0
        sq = np.sqrt(np.maximum(disc, 0.0))
        S1s = np.where(S1 > 0, S1, 1.0)
        f_lo, f_hi = (Sy - sq) / S1s, (Sy + sq) / S1s
    hi = np.where(good & (Au - dA >= 0), cu + half, np.where(has_face, f_hi, np.nan))
    lo = np.where(good & (Au + dA >= 0), cu - half, np.where(has_face, f_lo, np.nan))
    # a degenerate grid point (f constant): only the face A = 0 is identified
    hi = np.where(good, hi, np.where(has_face, f_hi, np.nan))
    lo = np.where(good, lo, np.where(has_face, f_lo, np.nan))
    lo = np.maximum(lo, 0.0)
    empty = ~(hi >= 0)
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def _shape(xs: np.ndarray, pos: np.ndarray, v: np.ndarray, b: np.ndarray, d: np.ndarray, lam: float) -> np.ndarray:
    """f = exp(-Λ ((x - δ)₊ / (e^v - δ))^β) on per-curve axes: (C, Gv, Gb, Gd, n).

    ``xs`` (C, n) is s - s_start in units of the fitted span; v, b, d are (C, G·) axes
    (log crossing distance, β, onset δ). Points with e^v ≤ δ get NaN (no such model).
    """
    X = xs[:, None, None, :]
    D = d[:, None, :, None]
    dist = np.exp(v)[:, :, None, None] - D  # (C, Gv, Gd, 1)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        lt = np.log(np.clip(X - D, 0.0, None)) - np.log(np.where(dist > 0, dist, np.nan))
        # (C, Gv, Gd, n) -> (C, Gv, Gb, Gd, n)
        z = np.exp(np.minimum(b[:, None, :, None, None] * lt[:, :, None, :, :] + np.log(lam), 6.7))
        f = np.exp(-z)
    return np.where(pos[:, None, None, None, :], f, 1.0)


def _grid_eval(xs: np.ndarray, pos: np.ndarray, w: np.ndarray, y: np.ndarray, v: np.ndarray, b: np.ndarray,
               d: np.ndarray, lam: float) -> dict[str, np.ndarray]:
    """Profiled (bounded linear) fit at every (v, β, δ) of per-curve axes; arrays (C, Gv, Gb, Gd)."""
    f = _shape(xs, pos, v, b, d, lam)
    C, n = xs.shape
    shp = f.shape[:-1]
    F2 = f.reshape(C, -1, n)
    S1 = np.broadcast_to(w.sum(axis=1)[:, None, None, None], shp)
    Sy = np.broadcast_to((w * y).sum(axis=1)[:, None, None, None], shp)
    Syy = np.broadcast_to((w * y * y).sum(axis=1)[:, None, None, None], shp)
    rhs = np.stack([w, w * y], axis=2)  # (C, n, 2)
    Sf, Sfy = np.moveaxis(np.matmul(F2, rhs), 2, 0)
    Sff = np.matmul(F2 * F2, w[:, :, None])[..., 0]
    Sf, Sfy, Sff = Sf.reshape(shp), Sfy.reshape(shp), Sff.reshape(shp)
    c, A, sse, cu, Au, sse_u, det = _qp(S1, Sf, Sff, Sy, Sfy, Syy)
    bad = ~np.isfinite(Sf)
    sse = np.where(bad, np.inf, sse)
    return dict(S1=S1, Sf=Sf, Sff=Sff, Sy=Sy, Syy=Syy, c=c, A=A, sse=sse, cu=cu, Au=Au,
                sse_u=sse_u, det=det)


def _threshold(sse_min: np.ndarray, n: np.ndarray, confidence: float, df: int = 1,
               kappa: np.ndarray | float = 1.0) -> np.ndarray:
    """``T = SSE_min (1 + κ df F_{df, n-5}(confidence) / (n-5))``: the F form of the
    profile-likelihood region for ``df`` parameters (Gaussian errors, unknown variance, 5
    parameters), widened by the sandwich/model variance ratio κ (:func:`_robust_factor`)."""
    dof = np.maximum(n - _N_PAR, 1)
    fq = df * stats.f.ppf(confidence, df, dof)
    return sse_min * (1.0 + kappa * fq / dof)


def _robust_factor(xs: np.ndarray, pos: np.ndarray, w: np.ndarray, resid: np.ndarray, c: np.ndarray, A: np.ndarray,
                   v: np.ndarray, b: np.ndarray, d: np.ndarray, lam: float,
                   autocorr: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sandwich / model variance ratios κ of the floor and of log s_reach at the best fit.

    With J the Jacobian of the model in θ = (L∞, A, v, log β) at the optimum (onset fixed),
    M = Jᵀ W J, the model-based variance of a parameter is ``σ̂² (M⁻¹)_gg`` (σ̂² = SSE/(n-5))
    and the heteroscedasticity- and autocorrelation-consistent one ``(M⁻¹ B M⁻¹)_gg`` with the
    Newey--West ``B = Σ_k ẽ_k² J_k J_kᵀ + ½ Σ_k ẽ_k ẽ_{k+1} (J_k J_{k+1}ᵀ + J_{k+1} J_kᵀ)`` (the
    lag-1 term only with ``autocorr``), ẽ_k = √w_k e_k / (1 - h_k) (HC3 leverage correction).
    The profile-likelihood threshold of g is then widened by κ_g = their ratio, clipped to
    [1, 20] (never narrowed: the sandwich is noisy with few checkpoints). Returns
    ``(kappa_floor, kappa_reach)``, each (C,).
    """
    C = xs.shape[0]
    h = 1e-5
    lb = np.log(b)

    def fshape(vv: np.ndarray, lbb: np.ndarray) -> np.ndarray:
        return _shape(xs, pos, vv[:, None], np.exp(lbb)[:, None], d[:, None], lam)[:, 0, 0, 0, :]

    f0 = fshape(v, lb)
    dfv = (fshape(v + h, lb) - fshape(v - h, lb)) / (2 * h)
    dfb = (fshape(v, lb + h) - fshape(v, lb - h)) / (2 * h)
    J = np.stack([np.ones_like(f0), f0, A[:, None] * dfv, A[:, None] * dfb], axis=2)  # (C, n, 4)
    kf = np.ones(C)
    kr = np.ones(C)
    for j in range(C):
        k = np.flatnonzero(w[j] > 0)
        sw = np.sqrt(w[j, k])
        Jj = J[j, k] * sw[:, None]
        e = resid[j, k] * sw
        n, p = Jj.shape
        if n <= _N_PAR or not np.all(np.isfinite(Jj)):
            continue
        Mi = np.linalg.pinv(Jj.T @ Jj)
        hat = np.einsum("ij,jk,ik->i", Jj, Mi, Jj)
        et = e / np.maximum(1.0 - hat, 0.1)
        Z = Jj * et[:, None]
        B = Z.T @ Z
        if autocorr and n > 2:
            L1 = Z[1:].T @ Z[:-1]
            B = B + 0.5 * (L1 + L1.T)
        s2 = float(e @ e) / (n - _N_PAR)
        V_rob = Mi @ B @ Mi
        for g, out in ((0, kf), (2, kr)):
            naive = s2 * Mi[g, g]
            if naive > 0 and np.isfinite(V_rob[g, g]):
                out[j] = V_rob[g, g] / naive
    return np.clip(kf, 1.0, _KAPPA_MAX), np.clip(kr, 1.0, _KAPPA_MAX)


def _polish(xs: np.ndarray, pos: np.ndarray, w: np.ndarray, ys: np.ndarray, c: np.ndarray, A: np.ndarray,
            v: np.ndarray, b: np.ndarray, d: np.ndarray, lam: float) -> tuple[np.ndarray, ...]:
    """Continuous least squares (scipy ``least_squares``, bounds as the grid) from the best grid
    point of each curve; returns the polished ``(c, A, v, β, δ, sse)`` (unchanged where the
    polish does not lower the SSE)."""
    from scipy.optimize import least_squares

    c, A, v, b, d = (np.array(a, dtype=np.float64) for a in (c, A, v, b, d))
    sse = np.full(c.shape, np.inf)
    for j in range(c.size):
        k = np.flatnonzero(w[j] > 0)
        x, y, pj = xs[j, k], ys[j, k], pos[j, k]

        def res(p: np.ndarray, x: np.ndarray = x, y: np.ndarray = y, pj: np.ndarray = pj) -> np.ndarray:
            cc, aa, vv, lbb, dd = p
            dist = np.exp(vv) - dd
            if not dist > 0:
                return np.full(y.size, 1e3)
            z = lam * (np.clip(x - dd, 0.0, None) / dist) ** np.exp(lbb)
            return cc + aa * np.where(pj, np.exp(-np.minimum(z, 745.0)), 1.0) - y

        p0 = np.array([c[j], A[j], v[j], np.log(b[j]), d[j]])
        lo = np.array([0.0, 0.0, _V_RANGE[0], np.log(BETA_MIN), 0.0])
        hi = np.array([np.inf, np.inf, _V_RANGE[1], np.log(BETA_MAX), max(np.exp(v[j]) * 0.999, 1e-12)])
        p0 = np.clip(p0, lo, np.where(np.isfinite(hi), hi, p0 + 1))
        hi[4] = max(hi[4], p0[4] + 1e-12)
        e0 = res(p0)
        try:
            r = least_squares(res, p0, bounds=(lo, hi), x_scale="jac", max_nfev=200)
        except ValueError:
            sse[j] = float(e0 @ e0)
            continue
        s1 = float(r.fun @ r.fun)
        if s1 < float(e0 @ e0):
            c[j], A[j], v[j], b[j], d[j] = r.x[0], r.x[1], r.x[2], np.exp(r.x[3]), r.x[4]
            sse[j] = s1
        else:
            sse[j] = float(e0 @ e0)
    return c, A, v, b, d, sse


def _forecast_curves(s: npt.ArrayLike, y: npt.ArrayLike, valid: np.ndarray | None = None, *, level: float = 0.01,
                     confidence: float = 0.95, min_points: int = 6, autocorr: bool = True) -> dict[str, np.ndarray]:
    """Forecast many curves at once (the numpy kernel of :func:`forecast`).

    Parameters
    ----------
    s : array (n,) or (C, n)
        Parameter time of the checkpoints, non-decreasing.
    y : array (C, n)
        Losses per curve (≥ 0 for the bound L∞ ≥ 0 to be meaningful).
    valid : bool array (C, n), optional
        Which checkpoints exist (default: finite y and s); must be a prefix.

    Returns
    -------
    dict of arrays (C,)
        ``floor, floor_low, floor_high, s_reach, s_reach_low, s_reach_high, A, omega, beta,
        onset, s_start, start_index, n_fit, sse, kappa_floor, kappa_reach, rose`` and
        ``status``, ``reason`` (object).

    Examples
    --------
    >>> s = np.linspace(0.0, 10.0, 30)
    >>> y = 0.5 + 2.0 * np.exp(-(s / 3.0) ** 1.5)
    >>> out = _forecast_curves(s, y[None])
    >>> out["status"][0], round(float(out["floor"][0]), 4)
    ('ok', 0.5)
    >>> round(float(out["s_reach"][0]), 3)  # 3 (ln 100)^(1/1.5) = 8.3039
    8.304
    """
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    C, n_all = y.shape
    s = np.asarray(s, dtype=np.float64)
    s = np.broadcast_to(s if s.ndim == 2 else s[None, :], (C, n_all))
    ok_pts = np.isfinite(s) & np.isfinite(y)
    valid = ok_pts if valid is None else (np.asarray(valid, dtype=bool) & ok_pts)
    lam = np.log(1.0 / level)
    nan = np.full(C, np.nan)
    out = {k: nan.copy() for k in ("floor", "floor_low", "floor_high", "s_reach", "s_reach_low",
                                   "s_reach_high", "A", "omega", "beta", "onset", "s_start", "sse",
                                   "kappa_floor", "kappa_reach", "s_now")}
    out["start_index"] = np.full(C, -1, dtype=np.int64)
    out["n_fit"] = np.zeros(C, dtype=np.int64)
    out["rose"] = np.zeros(C, dtype=bool)
    out["status"] = np.full(C, "ok", dtype=object)
    out["reason"] = np.full(C, "", dtype=object)
    n = valid.sum(axis=1)
    yfill = np.where(valid, y, -np.inf)
    peak = np.argmax(yfill, axis=1) if n_all else np.zeros(C, dtype=np.int64)
    sd = _noise_sd(np.where(valid, y, 0.0), valid.astype(float))
    fit = np.zeros(C, dtype=bool)
    for c in range(C):
        if n[c] > 0:
            out["s_now"][c] = s[c, n[c] - 1]
        k = int(peak[c])
        rise = y[c, k] - y[c, 0] if n[c] else 0.0
        out["rose"][c] = bool(k > 0 and rise > _RISE_Z * sd[c] and rise > 0)
        if n[c] < min_points:
            out["status"][c] = "too_few_checkpoints"
            out["reason"][c] = f"{n[c]} checkpoints < min_points={min_points}"
        elif n[c] - k < min_points:
            if out["rose"][c]:
                out["status"][c] = "rising"
                out["reason"][c] = (f"rising: rose {rise:.3g} above its first loss to its highest "
                                    f"at checkpoint {k} of {n[c]}, fewer than min_points="
                                    f"{min_points} checkpoints of decline after it")
            else:
                out["status"][c] = "not_started"
                out["reason"][c] = (f"no decline yet: its highest loss is at checkpoint {k} of "
                                    f"{n[c]}, fewer than min_points={min_points} after it")
        elif out["rose"][c] and (y[c, k] - np.median(y[c, n[c] - 3: n[c]])) <= _BACK_DOWN * rise:
            out["status"][c] = "rising"
            out["reason"][c] = (f"rose before falling and has not come back down yet: peak "
                                f"at checkpoint {k} of {n[c]} (up {rise:.3g}), the latest "
                                f"checkpoints (median of 3) have fallen back by at most {_BACK_DOWN:g} "
                                "of the rise")
        elif not np.all(np.diff(s[c, : n[c]]) >= 0):
            raise ValueError(f"param_time must be non-decreasing; curve {c} is not")
        else:
            fit[c] = True
    idx = np.flatnonzero(fit)
    if idx.size == 0:
        return out
    cols = np.arange(n_all)
    w = (valid[idx] & (cols[None, :] >= peak[idx, None])).astype(np.float64)
    nf = w.sum(axis=1)
    s0 = s[idx, peak[idx]]
    x = np.where(w > 0, s[idx] - s0[:, None], 0.0)
    span = x.max(axis=1)
    bad_span = ~(span > 0)
    span = np.where(bad_span, 1.0, span)
    ysc = np.where(w > 0, y[idx], 0.0)
    yscale = np.abs(ysc).max(axis=1)
    yscale = np.where(yscale > 0, yscale, 1.0)
    ys = ysc / yscale[:, None]
    xs = x / span[:, None]
    pos = (xs > 0) & (w > 0)
    Ci = idx.size
    r_ = np.arange(Ci)
    # onset δ searched in [0, x at the first checkpoint 10 % of the way down so far]
    fall = ys.max(axis=1) - np.where(w > 0, ys, np.inf).min(axis=1)
    down = (w > 0) & (ys <= (ys[r_, peak[idx]] - 0.1 * fall)[:, None])
    k1 = np.where(down.any(axis=1), np.argmax(down, axis=1), n_all - 1)
    d_max = np.clip(xs[r_, k1], 0.0, 0.5)
    axes = (np.broadcast_to(np.linspace(*_V_RANGE, _GRID1[0]), (Ci, _GRID1[0])).copy(),
            np.broadcast_to(np.linspace(np.log(BETA_MIN), np.log(BETA_MAX), _GRID1[1]),
                            (Ci, _GRID1[1])).copy(),
            np.linspace(0.0, 1.0, _GRID1[2])[None, :] * d_max[:, None])
    for stage in range(_N_ZOOM + 1):
        v, lb, dd = axes
        g = _grid_eval(xs, pos, w, ys, v, np.exp(lb), dd, lam)
        sse = g["sse"]
        flat = sse.reshape(Ci, -1)
        best = np.argmin(flat, axis=1)
        bi, bj, bk = np.unravel_index(best, sse.shape[1:])
        sse_min = flat[r_, best]
        vb, bb, db = v[r_, bi], np.exp(lb[r_, bj]), dd[r_, bk]
        cb, Ab = g["c"][r_, bi, bj, bk], g["A"][r_, bi, bj, bk]
        fb = _shape(xs, pos, vb[:, None], bb[:, None], db[:, None], lam)[:, 0, 0, 0, :]
        resid = ys - cb[:, None] - Ab[:, None] * fb
        kf, kr = _robust_factor(xs, pos, w, resid, cb, Ab, vb, bb, db, lam, autocorr)
        T = _threshold(sse_min, nf, confidence, kappa=kf)
        T_r = _threshold(sse_min, nf, confidence, df=_DF_REACH, kappa=kr)
        inside = sse <= T[:, None, None, None]
        # stop when the region is resolved: it spans >= _MIN_CELLS grid cells in v and in β
        span_v = inside.any(axis=(2, 3)).sum(axis=1)
        span_b = inside.any(axis=(1, 3)).sum(axis=1)
        if stage == _N_ZOOM or np.all((span_v >= _MIN_CELLS) & (span_b >= _MIN_CELLS)):
            break
        # zoom: bounding box of a generous region (2x the margin), one cell beyond, within bounds
        wide = sse <= (sse_min + 2.0 * (np.maximum(T, T_r) - sse_min) + 1e-300)[:, None, None, None]
        new = [np.empty((Ci, _GRIDZ[0])), np.empty((Ci, _GRIDZ[1])), np.empty((Ci, _GRIDZ[2]))]
        for j in range(Ci):
            for ax in range(3):
                other = tuple(a_ for a_ in (0, 1, 2) if a_ != ax)
                hit = np.flatnonzero(wide[j].any(axis=other))
                arr = axes[ax][j]
                lo_, hi_ = arr[max(hit[0] - 1, 0)], arr[min(hit[-1] + 1, arr.size - 1)]
                new[ax][j] = np.linspace(lo_, hi_, new[ax].shape[1])
        axes = tuple(new)
    # polish the best grid point (continuous least squares) for the estimates; the regions
    # stay those of the grid, whose SSE_min sets the thresholds (the same discretisation)
    cb, Ab, vb, bb, db, sse_pol = _polish(xs, pos, w, ys, cb, Ab, vb, bb, db, lam)
    # interval for s_reach: range of v over the region; floor: union of per-point ranges
    inside_r = sse <= T_r[:, None, None, None]
    vv = np.broadcast_to(v[:, :, None, None], inside.shape)
    v_lo = np.where(inside_r, vv, np.inf).min(axis=(1, 2, 3))
    v_hi = np.where(inside_r, vv, -np.inf).max(axis=(1, 2, 3))
    open_hi = v_hi >= _V_RANGE[1] - 1e-9
    v_lo, v_hi = np.minimum(v_lo, vb), np.maximum(v_hi, vb)
    flo, fhi = _floor_range(T[:, None, None, None], g["S1"], g["Sf"], g["Sff"], g["Sy"],
                            g["Syy"], g["cu"], g["Au"], g["sse_u"], g["det"])
    f_lo = np.nanmin(np.where(inside, flo, np.nan).reshape(Ci, -1), axis=1, initial=np.inf)
    f_hi = np.nanmax(np.where(inside, fhi, np.nan).reshape(Ci, -1), axis=1, initial=-np.inf)
    f_lo = np.minimum(f_lo, cb)
    f_hi = np.maximum(f_hi, cb)

    # has the curve started to decline? Its fall from the peak to the latest level (median of
    # the last 3) exceeds 5 noise sd, or the fit beats a constant by an F-test
    sse0 = ((ys - (w * ys).sum(1, keepdims=True) / nf[:, None]) ** 2 * w).sum(axis=1)
    dof = np.maximum(nf - _N_PAR, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        Fst = ((sse0 - sse_min) / (_N_PAR - 1)) / (np.maximum(sse_min, 0.0) / dof) / np.maximum(kf, kr)
    Fcrit = stats.f.ppf(1 - _DECLINE_P, _N_PAR - 1, dof)
    last3 = np.array([np.median(y[c, max(n[c] - 3, 0): n[c]]) for c in idx])
    fall = y[idx, peak[idx]] - last3
    started = (Ab > 0) & (fall > 0) & ((sse0 > 0) & ~(Fst <= Fcrit) | (fall > _FALL_Z * sd[idx]))

    d_best = np.exp(vb) * span
    for j, c in enumerate(idx):
        sc = s0[j]
        out["start_index"][c] = peak[c]
        out["n_fit"][c] = int(nf[j])
        out["s_start"][c] = sc
        out["kappa_floor"][c] = kf[j]
        out["kappa_reach"][c] = kr[j]
        out["sse"][c] = min(sse_pol[j], sse_min[j]) * yscale[j] ** 2
        if bad_span[j]:
            out["status"][c], out["reason"][c] = "failed", "parameter time does not advance after the peak"
            continue
        if not started[j]:
            out["status"][c] = "not_started"
            out["reason"][c] = (f"no significant decline since its peak at checkpoint {peak[c]}: "
                                f"the fall to the latest checkpoints is under {_FALL_Z:g} noise "
                                "sd and the Weibull-with-floor fit is no better than a constant "
                                f"(F-test, p > {_DECLINE_P:g})")
            continue
        out["floor"][c] = cb[j] * yscale[j]
        out["floor_low"][c] = f_lo[j] * yscale[j]
        out["floor_high"][c] = f_hi[j] * yscale[j]
        out["A"][c] = Ab[j] * yscale[j]
        out["beta"][c] = bb[j]
        out["omega"][c] = (d_best[j] - db[j] * span[j]) / lam ** (1.0 / bb[j])
        out["onset"][c] = sc + db[j] * span[j]
        out["s_reach"][c] = sc + d_best[j]
        out["s_reach_low"][c] = sc + np.exp(v_lo[j]) * span[j]
        out["s_reach_high"][c] = np.inf if open_hi[j] else sc + np.exp(v_hi[j]) * span[j]
        notes = []
        if out["rose"][c]:
            notes.append(f"rose before falling: fitted from its peak at checkpoint {peak[c]}")
        if open_hi[j]:
            notes.append("s_reach_high unbounded: the data do not yet bound the crossing")
        out["reason"][c] = "; ".join(notes)
    return out


# --------------------------------------------------------------------------- wrapper
#: the variables of a forecast, in their order (``bandscope.schema`` kinds ``forecast``, ``forecast_series``)
_VAR_NAMES = tuple(v.name for v in schema.KINDS["forecast"].variables.values() if v.dims == ("band",))


def forecast(run: xr.Dataset | xr.DataArray | pd.Series | npt.ArrayLike, *, level: float = 0.01,
             confidence: float = 0.95, min_points: int = 6, autocorr: bool = True, prefix: float | None = None,
             options: ForecastOptions | None = None,
             calibration: Calibration | str | os.PathLike[str] | Literal[False] | None = None,
             param_time: npt.ArrayLike | None = None) -> xr.Dataset:
    """Forecast each band's and the full loss's floor and 1 %-crossing from a run in progress.

    Fits ``L(s) = L∞ + A exp(-((s - s_start)/ω)^β)`` (the Weibull of key search Eq. 4 with the
    floor of A.9 as a fitted parameter, s in parameter time) to every checkpoint from the
    curve's peak on, with profile-likelihood intervals; see the module docstring and
    ``docs/forecast.md`` for the method and its measured coverage.

    Parameters
    ----------
    run : xarray.Dataset
        A run (``bandscope.read_run``): ``band_loss(checkpoint, band)`` and
        ``param_time(checkpoint)``; trailing NaN checkpoints (a run in progress written with
        padding) are ignored. The full loss is Σ_i band_loss (= ``mse``).
    level : float
        Residual fraction q of ``s_reach`` (default 0.01).
    confidence : float
        Interval level (default 0.95).
    min_points : int
        Fewest checkpoints from the curve's peak (default 6).
    autocorr : bool
        Include the lag-1 Newey--West term when widening intervals (default True).
    prefix : float, optional
        Use only the first ``prefix_length(K, prefix)`` checkpoints (forecast a finished run as
        if it were at that point).
    options : ForecastOptions, optional
        Replaces ``level, confidence, min_points, autocorr``.
    calibration : Calibration or path, optional
        The conformal calibration of the floor forecast (default: the one shipped with the
        package, made from the shipped runs; ``bandscope forecast --calibrate`` makes your own);
        ``False``: no calibration, the floor and its interval are the single Weibull model's.
    param_time : array, optional
        For a plain series ``run``: its time axis (default: the series' index for pandas, its
        coordinate for a 1-d DataArray, else 0, 1, 2, ...).

    Returns
    -------
    xarray.Dataset
        Dim ``band``; per band ``floor, floor_low, floor_high, s_reach, s_reach_low,
        s_reach_high, s_remaining, s_remaining_low, s_remaining_high, A, omega, beta, s_start,
        onset, start_index, n_fit, rose, kappa_floor, kappa_reach, status, reason``; the same for the full loss prefixed
        ``total_`` (no band dim); ``s_now`` (parameter time of the latest checkpoint used) and
        ``n_checkpoints``. attrs: ``level``, ``confidence``, ``interval``, ``model``, ``name``.

    Examples
    --------
    >>> from bandscope.keysearch.synthetic import make_run_synthetic
    >>> fc = forecast(make_run_synthetic(0, noise=0.0), prefix=0.6)
    >>> fc.sizes["band"], str(fc.status.sel(band=1).item())
    (7, 'ok')
    >>> truth = make_run_synthetic(0).attrs["true_floor"][0]
    >>> bool(abs(float(fc.floor.sel(band=1)) / truth - 1) < 0.02)
    True
    """
    opts = options if options is not None else ForecastOptions(
        level=level, confidence=confidence, min_points=min_points, autocorr=autocorr)
    cal = None
    if calibration is not False:
        from .conformal import load_calibration

        cal = load_calibration(calibration)
    if not isinstance(run, xr.Dataset):
        return _forecast_series(run, param_time, opts, prefix, cal)
    if "run" in run.dims:
        raise ValueError("forecast() takes one run; select it first, e.g. runs.isel(run=0)")
    for var in ("band_loss", "param_time"):
        if var not in run:
            raise ValueError(f"run has no {var!r} variable (docs/format.md); variables are "
                             f"{list(run.data_vars)}")
    L = np.asarray(run["band_loss"].transpose("checkpoint", "band").values, dtype=np.float64)
    s = np.asarray(run["param_time"].values, dtype=np.float64)
    K = _valid_prefix(s, np.isfinite(s) & np.isfinite(L).all(axis=1), prefix, (
        "NaN at checkpoints {} before the last valid checkpoint; only trailing padding is allowed (docs/format.md)",
        "param_time decreases at checkpoint {} ({} -> {}); it must be non-decreasing"))
    L, s = L[:K], s[:K]
    Y = np.concatenate([L.T, L.sum(axis=1)[None, :]], axis=0) if K else np.zeros((L.shape[1] + 1, 0))
    res = _forecast_curves(s, Y, level=opts.level, confidence=opts.confidence,
                           min_points=opts.min_points, autocorr=opts.autocorr)
    res = _calibrated(s, Y, res, cal, opts.confidence)
    s_now = float(s[-1]) if K else np.nan
    for key in ("", "_low", "_high"):
        with np.errstate(invalid="ignore"):
            res["s_remaining" + key] = np.where(np.isfinite(res["s_reach" + key]) | np.isinf(res["s_reach" + key]),
                                                np.maximum(res["s_reach" + key] - s_now, 0.0), np.nan)
    bands = run["band"].values
    lunits = run["band_loss"].attrs.get("units", "")
    sunits = run["param_time"].attrs.get("units", "")
    unit_of = {"loss": lunits, "time": sunits}
    data, totals = {}, {}
    for key in _VAR_NAMES:
        arr = res[key]
        if key in ("status", "reason", "family"):
            arr = arr.astype(str)
        data[key] = xr.Variable(("band",), arr[:-1], schema.attrs("forecast", key, **unit_of))
        totals["total_" + key] = xr.Variable((), arr[-1], schema.attrs("forecast", "total_" + key, **unit_of))
    data.update(totals)
    data["s_now"] = xr.Variable((), s_now, schema.attrs("forecast", "s_now", **unit_of))
    data["n_checkpoints"] = xr.Variable((), K, schema.attrs("forecast", "n_checkpoints"))
    from .. import __version__

    ds = xr.Dataset(data, coords={"band": ("band", bands, schema.attrs("forecast", "band"))})
    ds.attrs.update({
        "bandscope_forecast": "forecast/1",
        "bandscope_version": __version__,
        "name": str(run.attrs.get("name", "run")),
        "level": float(opts.level),
        "confidence": float(opts.confidence),
        "min_points": int(opts.min_points),
        "autocorr": int(bool(opts.autocorr)),
        "prefix": float(prefix) if prefix is not None else 1.0,
        "model": "floor: ensemble of curve families (pow3, weibull, exp, two_phase, saturated) weighted "
        "by BIC with n_eff, its floor shrunk toward the latest value, conformal interval calibrated on "
        "real runs" + ("" if cal is not None else " (calibration off: floor = the Weibull's)") +
        "; s_reach: L(s) = L_inf + A exp(-(max(s - onset, 0)/omega)^beta) for s >= s_start (the "
        "curve's peak), onset >= s_start; least squares on the linear scale with L_inf >= 0, "
        "A >= 0, beta in [0.05, 8]",
        "calibration": "none" if cal is None else f"{cal.source or 'calibration'} ({len(cal.runs)} runs)",
        "interval": f"floor: {opts.confidence:g} split-conformal interval on normalised scores per stage group "
        "(docs/forecast.md); s_reach: {opts.confidence:g} profile-likelihood interval: range over the region "
        "SSE <= SSE_min (1 + kappa df F_{df,n-5}(confidence)/(n-5)), df = 1 (floor) or 3 "
        "(s_reach), kappa = Newey-West sandwich / model variance ratio in [1, 20] "
        "(docs/forecast.md)",
    })
    return ds


# --------------------------------------------------------------------------- calibrated floors
def _curve_features(s: np.ndarray, Y: np.ndarray, res: Mapping[str, np.ndarray]) -> list[dict[str, Any] | None]:
    """Ensemble features (:func:`bandscope.keysearch.ensemble.ensemble_features`) of every curve
    whose Weibull status is ``ok``, fitted from its start of decline; None for the others."""
    from .ensemble import ensemble_features

    C, n = Y.shape
    if n == 0:
        return [None] * C
    sd = _noise_sd(Y, np.ones_like(Y))
    feats = []
    for c in range(C):
        if res["status"][c] != "ok":
            feats.append(None)
            continue
        st = int(res["start_index"][c])
        x = np.asarray(s[st:n], dtype=np.float64) - float(s[st])
        f = ensemble_features(x, Y[c, st:n], sd[c])
        f["n_seen"] = n  # checkpoints of the prefix (the calibration's early group)
        feats.append(f)
    return feats


def _apply_calibration(res: dict[str, np.ndarray], feats: Sequence[Mapping[str, Any] | None],
                       calibration: Calibration, confidence: float) -> dict[str, np.ndarray]:
    """Replace the floor and its interval by the calibrated ensemble forecast (in place); the
    Weibull model's own numbers are kept as ``weibull_floor*``."""
    C = len(feats)
    for key in ("floor", "floor_low", "floor_high"):
        res["weibull_" + key] = np.array(res[key], dtype=np.float64)
    for key in ("floor_ensemble", "floor_spread", "stage"):
        res[key] = np.full(C, np.nan)
    res["family"] = np.full(C, "", dtype=object)
    res["stage_group"] = np.full(C, -1, dtype=np.int64)
    for c, f in enumerate(feats):
        if f is None:
            continue
        p, lo, hi, g, m = calibration.interval(f["last"], f["floor_ens"], f["spread"], f["drop_half"],
                                               f["noise"], f["range_seen"], confidence, n_seen=f["n_seen"])
        res["floor"][c], res["floor_low"][c], res["floor_high"][c] = p, max(lo, 0.0), hi
        res["floor_ensemble"][c] = f["floor_ens"]
        res["floor_spread"][c] = f["spread"]
        res["family"][c] = f["best"]
        res["stage"][c], st_g = stage_of_curve(f)
        res["stage_group"][c] = g
        notes = []
        if f["best"] in ("pow3", "two_phase") and 2 <= st_g:
            notes.append(f"still falling ({f['best']} fits best, stage {res['stage'][c]:.2g}): the floor may keep "
                         "drifting down; read the interval, not the point")
        if np.isfinite(hi) and np.isfinite(lo) and hi - max(lo, 0.0) > 0.25 * f["range_seen"]:
            notes.append("wide floor interval (over a quarter of the range seen): not settled yet")
        if m != len(calibration.scores[g]) and np.isfinite(hi) and np.isfinite(lo):
            notes.append(f"{len(calibration.scores[g])} calibration scores in its group are too few for "
                         f"confidence {confidence:g}: the interval uses all {m} scores of the calibration")
        if notes:
            res["reason"][c] = "; ".join(x for x in (res["reason"][c], *notes) if x)
        if not np.isfinite(hi) or not np.isfinite(lo):
            res["reason"][c] = "; ".join(x for x in (res["reason"][c], (
                f"floor interval unbounded: {m} calibration scores are too few for "
                f"confidence {confidence:g}")) if x)
    return res


def stage_of_curve(f: Mapping[str, Any]) -> tuple[float, int]:
    """``(stage, group)`` of a curve's features (:func:`bandscope.keysearch.conformal.stage_of`)."""
    from .conformal import stage_of

    st, g = stage_of(f["drop_half"], f["range_seen"])
    return float(st), int(g)


def _calibrated(s: np.ndarray, Y: np.ndarray, res: dict[str, np.ndarray], cal: Calibration | None,
                confidence: float) -> dict[str, np.ndarray]:
    """The calibrated floors of :func:`_apply_calibration`, or the Weibull's own (``cal`` None)
    with the ensemble variables left NaN."""
    C = Y.shape[0]
    if cal is None:
        for key in ("floor", "floor_low", "floor_high"):
            res["weibull_" + key] = np.array(res[key], dtype=np.float64)
        for key in ("floor_ensemble", "floor_spread", "stage"):
            res[key] = np.full(C, np.nan)
        res["family"] = np.full(C, "", dtype=object)
        res["stage_group"] = np.full(C, -1, dtype=np.int64)
        return res
    return _apply_calibration(res, _curve_features(s, Y, res), cal, confidence)


def _series_axis(y: Any, param_time: npt.ArrayLike | None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(s, y, name)`` of a plain series: numpy, list, pandas Series or a 1-d DataArray."""
    name = "series"
    if isinstance(y, xr.DataArray):
        if y.ndim != 1:
            raise ValueError(f"a plain series must be 1-d, got a DataArray with dims {y.dims}")
        name = str(y.name) if y.name is not None else name
        s = y[y.dims[0]].values if (param_time is None and y.dims[0] in y.coords) else param_time
        y = y.values
    elif hasattr(y, "index") and hasattr(y, "to_numpy"):  # pandas Series
        name = str(y.name) if getattr(y, "name", None) is not None else name
        s = np.asarray(y.index, dtype=np.float64) if param_time is None else param_time
        y = y.to_numpy()
    else:
        s = param_time
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise TypeError(f"forecast() takes one run Dataset (bandscope.read_run) or a 1-d series (numpy, "
                        f"pandas, DataArray), got an array of shape {y.shape}")
    s = np.arange(y.size, dtype=np.float64) if s is None else np.asarray(s, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"param_time has shape {s.shape}, the series {y.shape}; give one time per value")
    return s, y, name


def _valid_prefix(s: np.ndarray, good: np.ndarray, prefix: float | None, messages: tuple[str, str]) -> int:
    """Length of the forecast prefix: the valid points (NaN only as trailing padding), cut to
    ``prefix`` when given, on a non-decreasing time axis ``s``; ``messages`` words the two errors."""
    nan_msg, order_msg = messages
    K = int(good.sum())
    if not good[:K].all():
        raise ValueError(nan_msg.format(np.flatnonzero(~good[:K]).tolist()))
    if prefix is not None:
        K = prefix_length(K, prefix)
    if K and np.any(np.diff(s[:K]) < 0):
        i = int(np.flatnonzero(np.diff(s[:K]) < 0)[0])
        raise ValueError(order_msg.format(i + 1, s[i], s[i + 1]))
    return K


def _forecast_series(y: Any, param_time: npt.ArrayLike | None, opts: ForecastOptions, prefix: float | None,
                     cal: Calibration | None) -> xr.Dataset:
    """:func:`forecast` of one plain scalar curve (a held-out loss, an LM's loss): 0-d variables
    named as the per-band ones, ``s_now`` and ``n_checkpoints``."""
    s, y, name = _series_axis(y, param_time)
    K = _valid_prefix(s, np.isfinite(s) & np.isfinite(y), prefix, (
        "NaN at points {} before the last valid one; only trailing NaN is allowed",
        "the time axis decreases at point {} ({} -> {}); it must be non-decreasing"))
    s, y = s[:K], y[:K]
    res = _forecast_curves(s, y[None, :], level=opts.level, confidence=opts.confidence,
                           min_points=opts.min_points, autocorr=opts.autocorr)
    res = _calibrated(s, y[None, :], res, cal, opts.confidence)
    s_now = float(s[-1]) if K else np.nan
    for key in ("", "_low", "_high"):
        with np.errstate(invalid="ignore"):
            res["s_remaining" + key] = np.maximum(res["s_reach" + key] - s_now, 0.0)
    data = {}
    for key in _VAR_NAMES:
        v = res[key][0]
        if key in ("status", "reason", "family"):
            v = str(v)
        data[key] = xr.Variable((), v, schema.attrs("forecast_series", key))
    data["s_now"] = xr.Variable((), s_now, schema.attrs("forecast_series", "s_now"))
    data["n_checkpoints"] = xr.Variable((), K, schema.attrs("forecast_series", "n_checkpoints"))
    from .. import __version__

    return xr.Dataset(data, attrs={
        "bandscope_forecast": "forecast/1", "bandscope_version": __version__, "name": name,
        "level": float(opts.level), "confidence": float(opts.confidence), "min_points": int(opts.min_points),
        "autocorr": int(bool(opts.autocorr)), "prefix": float(prefix) if prefix is not None else 1.0,
        "calibration": "none" if cal is None else f"{cal.source or 'calibration'} ({len(cal.runs)} runs)",
        "series": "a plain scalar curve: variables have no band dim and no total_ twin"})
