"""Parametric learning-curve families with a floor, their start values and least-squares fits.

Each family is a pure function ``f(x, *theta)`` of the time since the curve's start
``x = s - s_start`` (parameter time, or any time axis), with a floor ``c`` (the loss as
``x -> inf``; for the ``saturated`` family the level the curve has already reached). The
families are those of learning-curve extrapolation (Domhan et al., IJCAI 2015, with a floor
and an onset) plus the key-search Weibull (key search Eq. 4 with the floor of A.9):

=============  =======================================================  ===
name           model                                                    p
=============  =======================================================  ===
``pow3``       ``c + a (1 + x/b)^(-alpha)``  (power law with floor)      4
``weibull``    ``c + a exp(-((x - d)_+ / w)^beta)``  (floor and onset)   5
``exp``        ``c + a exp(-x / w)``                                     3
``two_phase``  ``c + a1 exp(-x / w1) + a2 exp(-x / w2)``                 5
``saturated``  ``c + a (log(xk + e) - log(x + e))_+``  (flat after xk)   3
=============  =======================================================  ===

``saturated`` falls linearly in log time until a knot ``xk`` (at most the latest checkpoint)
and is flat after it: "the curve is already done". ``e`` is the second checkpoint's ``x``
(a fixed offset so that ``log`` is finite at ``x = 0``). Bounds: c, a, a1, a2 >= 0, time
scales > 0, alpha in [0.01, 8], beta in [0.05, 8] (key search B.1).

:func:`fit_family` fits one family to one curve by ``scipy.optimize.least_squares`` from the
starts of its ``guess`` (several; the best is kept) on data rescaled to unit span and unit
loss; :func:`_fit_family_oracle` is the slow obvious check (a dense grid over the nonlinear
parameters with the linear ones by least squares).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import numpy.typing as npt

__all__ = ["pow3", "weibull_onset", "exp3", "two_phase", "saturated", "FAMILIES", "Family", "fit_family",
           "FamilyFit"]


def pow3(x: npt.ArrayLike, c: float, a: float, b: float, alpha: float) -> np.ndarray:
    """Power law with floor ``c + a (1 + x/b)^(-alpha)`` (Domhan et al. 2015, pow3)."""
    return c + a * (1.0 + np.asarray(x, dtype=np.float64) / b) ** (-alpha)


def weibull_onset(x: npt.ArrayLike, c: float, a: float, w: float, beta: float, d: float) -> np.ndarray:
    """Weibull with floor and onset ``c + a exp(-((x - d)_+ / w)^beta)`` (key search Eq. 4, A.9)."""
    z = np.clip(np.asarray(x, dtype=np.float64) - d, 0.0, None) / w
    with np.errstate(over="ignore"):
        return c + a * np.exp(-np.minimum(z ** beta, 745.0))


def exp3(x: npt.ArrayLike, c: float, a: float, w: float) -> np.ndarray:
    """Exponential decay with floor ``c + a exp(-x / w)`` (the Weibull at beta = 1)."""
    return c + a * np.exp(-np.minimum(np.asarray(x, dtype=np.float64) / w, 745.0))


def two_phase(x: npt.ArrayLike, c: float, a1: float, w1: float, a2: float, w2: float) -> np.ndarray:
    """Two exponential phases with a common floor ``c + a1 exp(-x/w1) + a2 exp(-x/w2)``."""
    x = np.asarray(x, dtype=np.float64)
    return c + a1 * np.exp(-np.minimum(x / w1, 745.0)) + a2 * np.exp(-np.minimum(x / w2, 745.0))


def saturated(x: npt.ArrayLike, c: float, a: float, xk: float, e: float = 1e-2) -> np.ndarray:
    """Already saturated: ``c + a (log(xk + e) - log(x + e))_+``, flat at ``c`` after the knot ``xk``."""
    x = np.asarray(x, dtype=np.float64)
    return c + a * np.clip(np.log(xk + e) - np.log(x + e), 0.0, None)


@dataclass(frozen=True)
class Family:
    """A curve family: its model, parameter names, bounds and start values.

    ``guess(x, y, e)`` returns a list of start vectors for data scaled to ``x`` in [0, 1] and
    ``max |y| = 1``; ``bounds(x, e)`` the ``(lower, upper)`` arrays; ``model(x, theta, e)``
    the curve. The floor is ``theta[0]`` for every family.
    """

    name: str
    params: tuple
    model: Callable
    guess: Callable
    bounds: Callable

    @property
    def p(self) -> int:
        """Number of fitted parameters."""
        return len(self.params)


def _level_guess(y: np.ndarray) -> tuple[float, float]:
    n = y.size
    tail = y[max(n - 3, 0):]
    return float(max(np.median(tail), 0.0)), float(max(y[: max(n // 5, 1)].max() - np.median(tail), 1e-6))


def _g_pow3(x: np.ndarray, y: np.ndarray, e: float) -> list[np.ndarray]:
    c, a = _level_guess(y)
    return [np.array([c * f, a + c * (1 - f), b, al]) for f in (0.9, 0.5) for b, al in ((0.05, 0.5), (0.2, 1.5))]


def _g_weibull(x: np.ndarray, y: np.ndarray, e: float) -> list[np.ndarray]:
    c, a = _level_guess(y)
    return [np.array([c * 0.95, a, w, be, 0.0]) for w in (0.1, 0.4) for be in (0.7, 1.5)]


def _g_exp(x: np.ndarray, y: np.ndarray, e: float) -> list[np.ndarray]:
    c, a = _level_guess(y)
    return [np.array([c * 0.95, a, w]) for w in (0.05, 0.3, 1.0)]


def _g_two(x: np.ndarray, y: np.ndarray, e: float) -> list[np.ndarray]:
    c, a = _level_guess(y)
    return [np.array([c * 0.9, 0.7 * a, 0.03, 0.3 * a, w2]) for w2 in (0.3, 1.0)]


def _g_sat(x: np.ndarray, y: np.ndarray, e: float) -> list[np.ndarray]:
    c, a = _level_guess(y)
    return [np.array([c, a / np.log((k + e) / e), k]) for k in (0.3, 0.7)]


_BIG = np.inf


def _b_pow3(x: np.ndarray, e: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0.0, 0.0, 1e-4, 0.01]), np.array([_BIG, _BIG, 1e3, 8.0])


def _b_weibull(x: np.ndarray, e: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0.0, 0.0, 1e-3, 0.05, 0.0]), np.array([_BIG, _BIG, 1e4, 8.0, 0.5])


def _b_exp(x: np.ndarray, e: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0.0, 0.0, 1e-3]), np.array([_BIG, _BIG, 1e4])


def _b_two(x: np.ndarray, e: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0.0, 0.0, 1e-3, 0.0, 1e-3]), np.array([_BIG, _BIG, 1e4, _BIG, 1e4])


def _b_sat(x: np.ndarray, e: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0.0, 0.0, 0.0]), np.array([_BIG, _BIG, 1.0])


#: The families of the ensemble, by name (a public registry: add your own :class:`Family`).
FAMILIES: dict[str, Family] = {
    "pow3": Family("pow3", ("c", "a", "b", "alpha"), lambda x, t, e: pow3(x, *t), _g_pow3, _b_pow3),
    "weibull": Family("weibull", ("c", "a", "w", "beta", "d"), lambda x, t, e: weibull_onset(x, *t),
                      _g_weibull, _b_weibull),
    "exp": Family("exp", ("c", "a", "w"), lambda x, t, e: exp3(x, *t), _g_exp, _b_exp),
    "two_phase": Family("two_phase", ("c", "a1", "w1", "a2", "w2"), lambda x, t, e: two_phase(x, *t),
                        _g_two, _b_two),
    "saturated": Family("saturated", ("c", "a", "xk"), lambda x, t, e: saturated(x, *t, e=e), _g_sat, _b_sat),
}


@dataclass(frozen=True)
class FamilyFit:
    """One family's least-squares fit: ``theta`` (in the caller's units), ``sse``, ``n``, ``p``."""

    family: str
    theta: np.ndarray
    sse: float
    n: int
    p: int

    @property
    def floor(self) -> float:
        """The fitted floor ``c`` (``theta[0]``)."""
        return float(self.theta[0])


def _scale_theta(fam: Family, th: npt.ArrayLike, span: float, yscale: float) -> np.ndarray:
    """Parameters of the unit-scaled fit in the caller's units (loss and time scales)."""
    out = np.array(th, dtype=np.float64)
    for j, name in enumerate(fam.params):
        if name in ("c", "a", "a1", "a2"):
            out[j] *= yscale
        elif name in ("b", "w", "w1", "w2", "d", "xk"):
            out[j] *= span
    return out


def _prepare(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-d of the same length, got {x.shape} and {y.shape}")
    x = x - x[0]
    span = float(x[-1]) if x.size and x[-1] > 0 else 1.0
    yscale = float(np.abs(y).max()) if y.size and np.abs(y).max() > 0 else 1.0
    xs, ys = x / span, y / yscale
    e = float(xs[1]) if xs.size > 1 and xs[1] > 0 else 1e-2
    return xs, ys, span, yscale, e


def _fit_family_scipy(family: str, x: npt.ArrayLike, y: npt.ArrayLike, *, max_nfev: int = 300) -> FamilyFit:
    """Slow obvious oracle of :func:`fit_family`: ``scipy.optimize.least_squares`` over all
    parameters from several starts of the family's ``guess`` (the best is kept).

    Parameters
    ----------
    family : str or Family
        A name in :data:`FAMILIES` or a :class:`Family`.
    x, y : array (n,)
        Time (non-decreasing; the fit uses ``x - x[0]``) and loss.

    Returns
    -------
    FamilyFit
        Parameters in the caller's units (``theta[0]`` the floor), the SSE, n and p.

    Examples
    --------
    >>> x = np.linspace(0.0, 10.0, 40)
    >>> f = _fit_family_scipy("exp", x, 0.3 + 2.0 * np.exp(-x / 2.0))
    >>> round(f.floor, 4), round(float(f.theta[2]), 3)
    (0.3, 2.0)
    """
    from scipy.optimize import least_squares

    fam = FAMILIES[family] if isinstance(family, str) else family
    xs, ys, span, yscale, e = _prepare(x, y)
    lo, hi = fam.bounds(xs, e)
    best_t, best_sse = None, np.inf
    for t0 in fam.guess(xs, ys, e):
        t0 = np.clip(np.asarray(t0, dtype=np.float64), lo, np.where(np.isfinite(hi), hi, np.inf))
        t0 = np.where(t0 <= lo, lo + 1e-9 + 1e-6 * np.abs(lo), t0)
        with np.errstate(invalid="ignore"):
            t0 = np.where(t0 >= hi, hi - 1e-9 - 1e-6 * np.abs(np.where(np.isfinite(hi), hi, 0.0)), t0)

        def res(t: np.ndarray) -> np.ndarray:
            r = fam.model(xs, t, e) - ys
            return np.where(np.isfinite(r), r, 1e3)

        try:
            r = least_squares(res, t0, bounds=(lo, hi), x_scale="jac", max_nfev=max_nfev)
        except ValueError:
            continue
        sse = float(r.fun @ r.fun)
        if sse < best_sse:
            best_t, best_sse = r.x, sse
    if best_t is None:
        return FamilyFit(fam.name, np.full(fam.p, np.nan), np.inf, int(xs.size), fam.p)
    return FamilyFit(fam.name, _scale_theta(fam, best_t, span, yscale), best_sse * yscale ** 2,
                     int(xs.size), fam.p)


# --------------------------------------------------------------------------- fast kernel
# Each family is linear in its amplitudes (c and the a's) for fixed nonlinear parameters, so the
# fit profiles them out exactly (non-negative least squares by enumerating active sets, m <= 3)
# on a grid of the nonlinear parameters, zooms once onto the best cell, and keeps the best point.
def _basis(name: str, xs: np.ndarray, nl: np.ndarray, e: float) -> np.ndarray:
    """Basis columns (G, n, m) of family ``name`` at nonlinear grid points ``nl`` (G, q)."""
    X = xs[None, :]
    one = np.ones((nl.shape[0], xs.size))
    if name == "pow3":
        b, al = nl[:, :1], nl[:, 1:2]
        cols = [one, (1.0 + X / b) ** (-al)]
    elif name == "weibull":
        w, be, d = nl[:, :1], nl[:, 1:2], nl[:, 2:3]
        z = np.clip(X - d, 0.0, None) / w
        with np.errstate(over="ignore", under="ignore"):
            cols = [one, np.exp(-np.minimum(z ** be, 745.0))]
    elif name == "exp":
        cols = [one, np.exp(-np.minimum(X / nl[:, :1], 745.0))]
    elif name == "two_phase":
        cols = [one, np.exp(-np.minimum(X / nl[:, :1], 745.0)), np.exp(-np.minimum(X / nl[:, 1:2], 745.0))]
    elif name == "saturated":
        cols = [one, np.clip(np.log(nl[:, :1] + e) - np.log(X + e), 0.0, None)]
    else:
        raise KeyError(name)
    return np.stack(cols, axis=2)


def _grid_axes(name: str, e: float) -> list[np.ndarray]:
    """Nonlinear parameter axes (unit-scaled data) searched by the kernel."""
    lg = np.geomspace
    if name == "pow3":
        return [lg(1e-4, 1e3, 36), lg(0.01, 8.0, 30)]
    if name == "weibull":
        return [lg(1e-3, 1e4, 30), lg(0.05, 8.0, 20), np.array([0.0, 0.02, 0.05, 0.1, 0.2])]
    if name == "exp":
        return [lg(1e-3, 1e4, 200)]
    if name == "two_phase":
        return [lg(1e-3, 1e4, 40), lg(1e-3, 1e4, 40)]
    if name == "saturated":
        return [np.linspace(0.0, 1.0, 101)]
    raise KeyError(name)


def _nnls_small(F: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact NNLS ``min ||F θ - y||, θ >= 0`` for a stack of small designs F (G, n, m), m <= 3,
    by enumerating active sets. Returns ``(theta (G, m), sse (G,))``."""
    G, n, m = F.shape
    FtF = np.einsum("gni,gnj->gij", F, F)
    Fty = np.einsum("gni,n->gi", F, y)
    yy = float(y @ y)
    best_sse = np.full(G, yy)  # the empty active set: theta = 0
    best_t = np.zeros((G, m))
    for mask in range(1, 2 ** m):
        idx = [j for j in range(m) if mask >> j & 1]
        A = FtF[:, idx][:, :, idx]
        b = Fty[:, idx]
        det_ok = np.abs(np.linalg.det(A)) > 1e-12 * np.prod(np.diagonal(A, axis1=1, axis2=2), axis=1) + 1e-300
        A = np.where(det_ok[:, None, None], A, np.eye(len(idx))[None])
        t = np.linalg.solve(A, b[:, :, None])[:, :, 0]
        sse = yy - np.einsum("gi,gi->g", t, b)  # at the LS solution: y'y - t'F'y
        feas = det_ok & np.all(t >= 0, axis=1)
        take = feas & (sse < best_sse)
        best_sse = np.where(take, sse, best_sse)
        full = np.zeros((G, m))
        full[:, idx] = t
        best_t = np.where(take[:, None], full, best_t)
    return best_t, np.maximum(best_sse, 0.0)


_N_STAGES = 4  # the grid, then three zooms


def _mesh(axes: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=1)


def fit_family(family: str, x: npt.ArrayLike, y: npt.ArrayLike) -> FamilyFit:
    """Least-squares fit of one curve family to one curve (linear scale, key search §5.2).

    The amplitudes (c, a, ...) are profiled out exactly (bounded linear least squares) on a
    grid of the nonlinear parameters, refined once around the best grid cell; the slow
    oracle is :func:`_fit_family_scipy` (tests compare the two).

    Parameters
    ----------
    family : str
        A name in :data:`FAMILIES`.
    x, y : array (n,)
        Time (non-decreasing; the fit uses ``x - x[0]``) and loss.

    Returns
    -------
    FamilyFit
        Parameters in the caller's units (``theta[0]`` the floor), the SSE, n and p.

    Examples
    --------
    >>> x = np.linspace(0.0, 10.0, 40)
    >>> f = fit_family("exp", x, 0.3 + 2.0 * np.exp(-x / 2.0))
    >>> round(f.floor, 3), round(float(f.theta[2]), 1)
    (0.3, 2.0)
    """
    fam = FAMILIES[family] if isinstance(family, str) else family
    xs, ys, span, yscale, e = _prepare(x, y)
    axes = _grid_axes(fam.name, e)
    best = None
    for _ in range(_N_STAGES):
        nl = _mesh(axes)
        t, sse = _nnls_small(_basis(fam.name, xs, nl, e), ys)
        sse = np.where(np.isfinite(sse), sse, np.inf)
        k = int(np.argmin(sse))
        if best is None or sse[k] < best[2]:
            best = (nl[k], t[k], float(sse[k]))
        # zoom: one grid cell either side of the best point on every axis
        ii = np.unravel_index(k, tuple(a.size for a in axes))
        new = []
        for a, i in zip(axes, ii):
            lo, hi = a[max(i - 1, 0)], a[min(i + 1, a.size - 1)]
            new.append(np.geomspace(lo, hi, 9) if lo > 0 else np.linspace(lo, hi, 9))
        axes = new
    nl, lin, sse = best
    th = _assemble(fam.name, lin, nl)
    return FamilyFit(fam.name, _scale_theta(fam, th, span, yscale), sse * yscale ** 2, int(xs.size), fam.p)


def _assemble(name: str, lin: np.ndarray, nl: np.ndarray) -> np.ndarray:
    """Family parameter vector (in :attr:`Family.params` order) from amplitudes and nonlinear ones."""
    if name == "pow3":
        return np.array([lin[0], lin[1], nl[0], nl[1]])
    if name == "weibull":
        return np.array([lin[0], lin[1], nl[0], nl[1], nl[2]])
    if name == "exp":
        return np.array([lin[0], lin[1], nl[0]])
    if name == "two_phase":
        return np.array([lin[0], lin[1], nl[0], lin[2], nl[1]])
    return np.array([lin[0], lin[1], nl[0]])
