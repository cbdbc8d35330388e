"""Evidence-weighted ensemble of curve families: floors, weights and the spread between families.

For one curve (from its start of decline to the latest checkpoint) every family of
:data:`bandscope.keysearch.curve_families.FAMILIES` is fitted by least squares and weighted by
its BIC (key search A.11) with an effective sample size for correlated checkpoints (B.2):

    BIC_f = n_eff log(SSE_f / n) + p_f log n_eff,   w_f ∝ exp(-(BIC_f - min BIC) / 2),

n_eff = n (1 - r1) / (1 + r1) from the lag-1 autocorrelation r1 of the best family's
residuals (clipped to [3, n]). The ensemble floor is ``Σ w_f c_f``; the *family spread* is
``sqrt(Σ w_f (c_f - floor)²)`` plus the range of the floors of families with ``w_f ≥ 0.05``
over 4 (so a second plausible family that disagrees widens the interval even at a small
weight). :func:`ensemble_curve` is the kernel for one curve; :func:`ensemble_features` adds
the observables the calibrated interval of :mod:`bandscope.keysearch.conformal` uses.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .curve_families import FAMILIES, fit_family

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import numpy.typing as npt

__all__ = ["ensemble_curve", "bic_weights", "ensemble_features", "FEATURES"]

_MIN_W_RANGE = 0.05


def bic_weights(sse: npt.ArrayLike, n: int, p: npt.ArrayLike, n_eff: float) -> np.ndarray:
    """Normalised evidence weights ``exp(-ΔBIC/2)`` of families with SSEs ``sse`` and parameter
    counts ``p`` fitted to the same n points, with ``BIC = n_eff log(SSE/n) + p log n_eff``
    (key search A.11 with the effective n of B.2). Families with a non-finite SSE get weight 0.

    Examples
    --------
    >>> w = bic_weights([1.0, 1.0], 20, [3, 5], 20)
    >>> round(float(w[0]), 4)  # equal fit: 2 extra parameters cost ΔBIC = 2 log 20, weight ratio 1/20
    0.9524
    """
    sse = np.asarray(sse, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(sse) & (sse >= 0)
    if not ok.any():
        return np.zeros_like(sse)
    floor_sse = max(float(sse[ok].max()) * 1e-12, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = n_eff * np.log(np.maximum(sse, floor_sse) / n) + p * np.log(n_eff)
    b = np.where(ok, b, np.inf)
    w = np.exp(-(b - b.min()) / 2.0)
    return w / w.sum()


def _n_eff(resid: npt.ArrayLike) -> float:
    e = np.asarray(resid, dtype=np.float64)
    n = e.size
    if n < 4 or not np.any(e):
        return float(n)
    e = e - e.mean()
    r1 = float(np.clip((e[1:] @ e[:-1]) / (e @ e), -0.9, 0.95))
    return float(np.clip(n * (1 - r1) / (1 + r1), 3.0, n))


def ensemble_curve(x: np.ndarray, y: np.ndarray, families: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit every family to one curve and weigh them by evidence.

    Parameters
    ----------
    x, y : array (n,)
        Time since the start of the fit and loss (n >= 6).
    families : sequence of str, optional
        Names in :data:`FAMILIES` (default all).

    Returns
    -------
    dict
        ``floors`` (per family), ``weights``, ``sse``, ``names``, ``n_eff``, ``floor`` (the
        weighted mean), ``spread`` (weighted sd + range of the plausible floors / 4), ``best``.

    Examples
    --------
    >>> x = np.linspace(0.0, 10.0, 40)
    >>> r = ensemble_curve(x, 0.3 + 2.0 * np.exp(-x / 2.0) + 1e-4 * np.sin(7 * x))
    >>> round(r["floor"], 2)
    0.3
    """
    names = list(families or FAMILIES)
    fits = [fit_family(nm, x, y) for nm in names]
    sse = np.array([f.sse for f in fits])
    p = np.array([f.p for f in fits])
    floors = np.array([f.floor for f in fits])
    n = len(y)
    ib = int(np.nanargmin(np.where(np.isfinite(sse), sse, np.inf)))
    best = fits[ib]
    fam = FAMILIES[best.family]
    xs = np.asarray(x, dtype=np.float64) - float(x[0])
    span = float(xs[-1]) if xs[-1] > 0 else 1.0
    e = float(xs[1] / span) if xs.size > 1 and xs[1] > 0 else 1e-2
    th = np.array(best.theta, dtype=np.float64)
    # residuals of the best family (its parameters back in unit time for the model function)
    yscale = float(np.abs(y).max()) or 1.0
    th_u = th.copy()
    for j, name in enumerate(fam.params):
        if name in ("c", "a", "a1", "a2"):
            th_u[j] /= yscale
        elif name in ("b", "w", "w1", "w2", "d", "xk"):
            th_u[j] /= span
    resid = fam.model(xs / span, th_u, e) * yscale - np.asarray(y, dtype=np.float64)
    n_eff = _n_eff(resid)
    w = bic_weights(sse, n, p, n_eff)
    good = w > 0
    floor = float(np.sum(w[good] * floors[good]))
    sd = float(np.sqrt(np.sum(w[good] * (floors[good] - floor) ** 2)))
    plaus = w >= _MIN_W_RANGE
    rng = float(floors[plaus].max() - floors[plaus].min()) if plaus.any() else 0.0
    return {"names": names, "floors": floors, "weights": w, "sse": sse, "n_eff": n_eff,
            "floor": floor, "spread": sd + rng / 4.0, "best": best.family}


#: observables of a curve prefix used by the calibrated interval (``docs/forecast.md``)
FEATURES = ("last", "floor_ens", "spread", "drop_half", "noise", "range_seen")


def ensemble_features(x: np.ndarray, y: np.ndarray, noise_sd: float = 0.0,
                      families: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`ensemble_curve` plus the observables of the calibrated forecast.

    ``last``: the latest value; ``drop_half``: the fall over the second half of the fitted
    checkpoints, ``max(y[n//2] - last, 0)``; ``noise``: the robust checkpoint noise sd;
    ``range_seen``: max - min of y so far.
    """
    y = np.asarray(y, dtype=np.float64)
    r = ensemble_curve(x, y, families)
    n = y.size
    r.update({"last": float(y[-1]), "floor_ens": r["floor"],
              "drop_half": float(max(y[n // 2] - y[-1], 0.0)), "noise": float(noise_sd),
              "range_seen": float(y.max() - y.min())})
    return r
