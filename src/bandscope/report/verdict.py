"""Verdict rules: does a key-search prediction hold on a set of runs?

Three levels, decided from medians across runs by sign first and magnitude second, the same
rule for our numbers and for the paper's (so a reader can see where the paper itself is weak):

- ``"holds"``: the effect has the predicted sign **and** a magnitude beyond the thresholds
  below;
- ``"weaker"``: the predicted sign, but below a magnitude threshold (or a robustness check
  the paper makes cannot be made);
- ``"does not hold"``: zero or the opposite sign, or a fit too poor to speak of a shape;
- ``"not tested"``: no finite value to judge (no fitted run, no finite ρ).

Thresholds (module constants, so a test or a reader can change them explicitly):

=====================  =======  ============================================================
constant               value    why
=====================  =======  ============================================================
``R2_HOLDS``           0.98     the paper's worst per-band median it calls a good fit is
                                0.982 (band 1, Table B.2)
``R2_FAILS``           0.90     below this a curve shape is not described by the fit at all
``DBIC_EVIDENCE``      2        |ΔBIC| > 2 is "positive" evidence on Kass & Raftery's (1995)
                                scale; below it the two models are not told apart
``RHO_ALPHA``          0.05     ρ must exceed what a random band order gives with probability
                                0.05 (one-sided, exact permutation null over n bands)
=====================  =======  ============================================================

>>> weibull_verdict(r2=0.99, delta_bic=-21.4, wins=(33, 36), delta_bic_neff=-1.7).level
'holds'
>>> ordering_verdict(0.69, q25=0.6, expected_sign=+1, n_bands=6).level
'weaker'
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .numfmt import fmt_r2

__all__ = ["Verdict", "HOLDS", "WEAKER", "FAILS", "UNTESTED", "LEVELS", "R2_HOLDS", "R2_FAILS",
           "DBIC_EVIDENCE", "RHO_ALPHA", "EXPECTED_SIGN", "weibull_verdict", "r2_verdict",
           "ordering_verdict", "spearman_critical", "parse_wins"]

HOLDS, WEAKER, FAILS, UNTESTED = "holds", "weaker", "does not hold", "not tested"
LEVELS = (HOLDS, WEAKER, FAILS, UNTESTED)
R2_HOLDS = 0.98
R2_FAILS = 0.90
DBIC_EVIDENCE = 2.0
RHO_ALPHA = 0.05

EXPECTED_SIGN = {"onset": +1, "width": +1, "floor": +1, "initial_residual": -1}
"""Prediction 2 (§4.1, §6.2): finer bands start later (onset +), decay over a wider window
(width +), plateau higher (floor +) and start with less loss (initial residual −)."""


@dataclass(frozen=True)
class Verdict:
    """A verdict level and the reason, naming the numbers and thresholds that decided it."""

    level: str
    reason: str

    def __str__(self) -> str:
        return self.level


def _missing(x: Any) -> bool:
    return x is None or not np.isfinite(float(x))


def parse_wins(wins: Any) -> tuple[int, int]:
    """``"5/6"`` or ``(5, 6)`` → ``(5, 6)``.

    >>> parse_wins("33/36")
    (33, 36)
    """
    if isinstance(wins, str):
        k, n = wins.split("/")
        return int(k), int(n)
    k, n = wins
    return int(k), int(n)


def weibull_verdict(r2: Any, delta_bic: Any, wins: Any = None, delta_bic_neff: Any = None, *,
                    neff_expected: bool = False) -> Verdict:
    """Prediction 1 (per band) or 3 (full loss): is the residual a Weibull, and a better one
    than the exponential (β = 1)?

    Parameters
    ----------
    r2 : float or None
        Median R² of the Weibull fit (None: not reported, the criterion is skipped).
    delta_bic : float
        Median ΔBIC = BIC_Weibull − BIC_exp (negative favours the Weibull; key search §5.2).
    wins : "k/n" or (k, n) or None
        Fits with ΔBIC < 0 out of fitted runs (None: not reported, skipped).
    delta_bic_neff : float or None
        Median ΔBIC with n_eff = n/10 (B.2). None: not part of this claim, skipped.
    neff_expected : bool
        True when the claim includes the n_eff check (per-band fits, §6.1): then a NaN
        ``delta_bic_neff`` (undefined for windows of ≤ 10 checkpoints) caps the verdict at
        "weaker", since that part of the claim could not be tested.

    Rules
    -----
    - not tested: ``delta_bic`` NaN.
    - does not hold: median ΔBIC ≥ 0 (the exponential is as good), or the Weibull wins at most
      half the fits, or median R² < ``R2_FAILS``.
    - holds: median ΔBIC ≤ −``DBIC_EVIDENCE``, median R² ≥ ``R2_HOLDS``, and (if given) median
      ΔBIC(n/10) < 0.
    - weaker: otherwise (Weibull preferred, but by less than the evidence threshold, or only
      at nominal n, or with R² in [``R2_FAILS``, ``R2_HOLDS``)).

    Examples
    --------
    >>> weibull_verdict(0.982, 1.14, "4/12").level   # the paper's band 1
    'does not hold'
    >>> weibull_verdict(0.995, -3.58, "10/12", -0.49).level   # the paper's band 4
    'holds'
    >>> weibull_verdict(0.97, -14.0, "5/6", -0.9).reason
    'R² 0.970 < 0.98'
    """
    if _missing(delta_bic):
        return Verdict(UNTESTED, "no fitted run")
    d = float(delta_bic)
    if d >= 0:
        return Verdict(FAILS, f"median ΔBIC {d:+.4g} ≥ 0: exponential as good")
    if wins is not None:
        k, n = parse_wins(wins)
        if 2 * k <= n:
            return Verdict(FAILS, f"Weibull wins only {k}/{n}")
    if r2 is not None and not _missing(r2) and float(r2) < R2_FAILS:
        return Verdict(FAILS, f"R² {fmt_r2(r2)} < {R2_FAILS}")
    weak = []
    if d > -DBIC_EVIDENCE:
        weak.append(f"median ΔBIC {d:+.4g} > -{DBIC_EVIDENCE:g}")
    if r2 is not None and not _missing(r2) and float(r2) < R2_HOLDS:
        weak.append(f"R² {fmt_r2(r2)} < {R2_HOLDS}")
    if delta_bic_neff is not None or neff_expected:
        if _missing(delta_bic_neff):
            if neff_expected:
                weak.append("ΔBIC(n/10) undefined")
        elif float(delta_bic_neff) >= 0:
            weak.append(f"ΔBIC(n/10) {float(delta_bic_neff):+.4g} ≥ 0")
    if weak:
        return Verdict(WEAKER, "; ".join(weak))
    good = [f"median ΔBIC {d:+.4g} ≤ -{DBIC_EVIDENCE:g}"]
    if wins is not None:
        good.append("Weibull wins {}/{}".format(*parse_wins(wins)))
    if r2 is not None and not _missing(r2):
        good.append(f"R² {fmt_r2(r2)} ≥ {R2_HOLDS}")
    if not _missing(delta_bic_neff):
        good.append(f"ΔBIC(n/10) {float(delta_bic_neff):+.4g} < 0")
    return Verdict(HOLDS, "; ".join(good))


def r2_verdict(r2: Any) -> Verdict:
    """A fit-quality claim alone (the band-sum reconstruction of §6.3): holds for median
    R² ≥ ``R2_HOLDS``, weaker in [``R2_FAILS``, ``R2_HOLDS``), does not hold below.

    >>> r2_verdict(0.963).level
    'weaker'
    """
    if _missing(r2):
        return Verdict(UNTESTED, "no finite R²")
    r = float(r2)
    if r >= R2_HOLDS:
        return Verdict(HOLDS, f"R² {fmt_r2(r)} ≥ {R2_HOLDS}")
    if r >= R2_FAILS:
        return Verdict(WEAKER, f"R² {fmt_r2(r)} < {R2_HOLDS}")
    return Verdict(FAILS, f"R² {fmt_r2(r)} < {R2_FAILS}")


@lru_cache(maxsize=32)
def spearman_critical(n_bands: int, alpha: float = RHO_ALPHA) -> float:
    """Smallest attainable ρ with P(ρ ≥ ρ_c) ≤ ``alpha`` when the n bands are in random order.

    Exact (all n! orders) for n ≤ 8; for larger n the t approximation
    ρ_c = t_c / sqrt(n − 2 + t_c²), t_c the one-sided (1 − alpha) quantile with n − 2 degrees of
    freedom. ``inf`` when no ρ is that unlikely (n ≤ 3 at alpha 0.05: even ρ = 1 has
    probability 1/6).

    >>> [round(spearman_critical(n), 4) for n in (4, 5, 6, 7, 8)]
    [1.0, 0.9, 0.8286, 0.7143, 0.6429]
    """
    n = int(n_bands)
    if n < 2:
        return math.inf
    if n <= 8:
        ranks = np.arange(n)
        perms = np.array(list(itertools.permutations(range(n))))
        d2 = ((perms - ranks) ** 2).sum(axis=1)
        rho = 1 - 6 * d2 / (n * (n * n - 1))
        vals = np.unique(np.round(rho, 12))[::-1]
        crit = math.inf
        for v in vals:
            if (rho >= v - 1e-12).mean() <= alpha:
                crit = float(v)
            else:
                break
        return crit
    from scipy import stats  # here: the analysis and --quiet never need scipy.stats (about a second)

    t = stats.t.ppf(1 - alpha, n - 2)
    return float(t / math.sqrt(n - 2 + t * t))


def ordering_verdict(rho: Any, q25: Any = None, q75: Any = None, *, expected_sign: int, n_bands: int) -> Verdict:
    """Prediction 2 for one descriptor: median within-run Spearman ρ(band resolution, descriptor).

    Parameters
    ----------
    rho : float
        Median ρ across runs.
    q25, q75 : float or None
        Quartiles of ρ across runs (None: not reported, skipped).
    expected_sign : +1 or −1
        The predicted direction (:data:`EXPECTED_SIGN`).
    n_bands : int
        Bands entering each ρ (sets the chance level, :func:`spearman_critical`).

    Rules
    -----
    - not tested: ρ NaN.
    - does not hold: ρ = 0 or of the opposite sign.
    - holds: the predicted sign, |ρ| ≥ ``spearman_critical(n_bands)`` (beyond chance for that
      many bands), and at least three quarters of the runs on the predicted side (the quartile
      nearer zero has the predicted sign).
    - weaker: the predicted sign, but not beyond chance or with over a quarter of the runs at
      zero or the other side.

    Examples
    --------
    >>> ordering_verdict(-0.893, q75=-0.875, expected_sign=-1, n_bands=7).level
    'holds'
    >>> ordering_verdict(0.2, expected_sign=-1, n_bands=6).reason
    'median ρ +0.2 has the opposite sign'
    """
    if _missing(rho):
        return Verdict(UNTESTED, "no finite ρ")
    r = float(rho) * expected_sign
    if r <= 0:
        return Verdict(FAILS, f"median ρ {float(rho):+.4g} " + (
            "is zero" if r == 0 else "has the opposite sign"))
    crit = spearman_critical(n_bands)
    weak = []
    if r < crit - 1e-9:
        weak.append(f"|ρ| {r:.4g} < {crit:.3g} (chance level, {n_bands} bands)")
    inner = q25 if expected_sign > 0 else q75
    if inner is not None and not _missing(inner) and float(inner) * expected_sign <= 0:
        weak.append("over a quarter of the runs at zero or the other sign")
    if weak:
        return Verdict(WEAKER, "; ".join(weak))
    return Verdict(HOLDS, f"sign as predicted, |ρ| {r:.4g} ≥ {crit:.3g}")
