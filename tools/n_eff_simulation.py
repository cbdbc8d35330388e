"""Can the autocorrelation time of Weibull-fit residuals be estimated at the window lengths that occur?

    python tools/n_eff_simulation.py [--reps 300] [--seed 0]

Known-truth simulation for ``bandscope.fitting.n_eff_acf`` (docs/analysis.md, "A data-driven
n_eff"). Each synthetic curve is a Weibull residual ``A exp(-(s/ω)^β)`` sampled at n evenly spaced
points of its active window (from q = 0.95 to q = 0.01 of A, key search §5.1), plus AR(1) noise
``e_k = φ e_{k-1} + ε_k`` of stationary standard deviation ``--noise`` × A. The true integrated
autocorrelation time is τ = (1 + φ)/(1 − φ). The Weibull is fitted with ``fitting.fit_curves``
(the fitter ``analyze()`` uses) and τ is estimated from the fit's residuals by

* ``acf``: bandscope's estimator, τ = n / ``n_eff_acf`` (initial positive sequence of the ACF);
* ``ar1``: the lag-1 autocorrelation r₁ as an AR(1) coefficient, τ = (1 + r₁)/(1 − r₁), r₁ ≥ 0;
* ``ar1_bc``: the same after the first-order small-sample bias correction of the AR(1)
  coefficient with an estimated mean, r₁ + (1 + 3 r₁)/n (Marriott & Pope 1954; Kendall 1954),
  clipped to [0, 0.98];
* ``batch``: batch means with b = ⌊√n⌋ batches of m = ⌊n/b⌋ points, τ = m · var(batch means) /
  var(residuals).

Printed per n and true τ: the median and the 10–90 % range of each estimate over ``--reps``
curves (β drawn from {0.8, 1.5}), and, per n, the probability that a curve with τ = 9 gets a
larger estimate than one with τ = 3 (0.5 = the estimator cannot tell them apart, 1 = always).
Window lengths: 10, 18, 26, 41 (the range and medians of ``reference_runs/recorded``'s windows)
and 53 (its full-loss curves).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from bandscope.keysearch.fitting import fit_curves, n_eff_acf

TAUS = (1.0, 3.0, 5.0, 9.0, 19.0)
NS = (10, 18, 26, 41, 53)
BETAS = (0.8, 1.5)


def ar1_noise(rng, phi: float, n: int, reps: int) -> np.ndarray:
    """AR(1) series of unit stationary variance, started in the stationary distribution."""
    e = np.empty((reps, n))
    e[:, 0] = rng.standard_normal(reps)
    innov = np.sqrt(1.0 - phi**2)
    for k in range(1, n):
        e[:, k] = phi * e[:, k - 1] + innov * rng.standard_normal(reps)
    return e


def curves(rng, n: int, tau: float, reps: int, noise: float):
    """(s, y): Weibull residuals over their 0.95 → 0.01 window plus AR(1) noise with time τ."""
    phi = (tau - 1.0) / (tau + 1.0)
    beta = rng.choice(BETAS, reps)
    # q(s) = exp(-(s/ω)^β) with ω = 1: q = 0.95 at s0 = (-log .95)^(1/β), q = 0.01 at s1 = (log 100)^(1/β)
    s0, s1 = (-np.log(0.95)) ** (1 / beta), np.log(100.0) ** (1 / beta)
    s = s0[:, None] + (s1 - s0)[:, None] * np.linspace(0.0, 1.0, n)[None, :]
    y = np.exp(-(s ** beta[:, None])) + noise * ar1_noise(rng, phi, n, reps)
    return s - s[:, :1], y


def estimates(resid: np.ndarray) -> dict[str, np.ndarray]:
    """τ estimates from residual rows (C, n) by each estimator of the module docstring."""
    n = resid.shape[1]
    ne, _ = n_eff_acf(resid)
    d = resid - resid.mean(axis=1, keepdims=True)
    c0 = (d * d).sum(axis=1)
    r1 = np.clip((d[:, 1:] * d[:, :-1]).sum(axis=1) / c0, 0.0, 0.98)
    r1c = np.clip(r1 + (1 + 3 * r1) / n, 0.0, 0.98)
    b = int(np.floor(np.sqrt(n)))
    m = n // b
    bm = d[:, : b * m].reshape(-1, b, m).mean(axis=2)
    return {
        "acf": n / ne,  # NaN where n_eff_acf < 4 (τ > n/4)
        "ar1": (1 + r1) / (1 - r1),
        "ar1_bc": (1 + r1c) / (1 - r1c),
        "batch": m * bm.var(axis=1, ddof=1) / (c0 / (n - 1)),
    }


def p_greater(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b) + P(a = b)/2 over independent draws (the AUC); NaN draws count as +inf (τ too
    large for the estimator to return a finite n_eff)."""
    a, b = np.where(np.isnan(a), np.inf, a), np.where(np.isnan(b), np.inf, b)
    gt = (a[:, None] > b[None, :]).mean()
    eq = (a[:, None] == b[None, :]).mean()
    return float(gt + eq / 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.02, help="AR(1) standard deviation as a fraction of A")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    names = ("acf", "ar1", "ar1_bc", "batch")
    print(f"true τ against estimated τ: median [10 %, 90 %] over {args.reps} curves, noise sd {args.noise:g} A; "
          "'undef' = n_eff_acf undefined (τ estimate > n/4)")
    print(f"{'n':>3} {'τ':>4} | " + " | ".join(f"{k:^22}" for k in names) + " | fit ok")
    auc = {}
    for n in NS:
        est = {}
        for tau in TAUS:
            s, y = curves(rng, n, tau, args.reps, args.noise)
            fit = fit_curves(s, y)
            ok = fit["status"] == "ok"
            est[tau] = {k: v[ok] for k, v in estimates(fit["resid"][:, :n]).items()}
            cells = []
            for k in names:
                v = est[tau][k]
                fin = v[np.isfinite(v)]
                q = np.percentile(fin, [50, 10, 90]) if fin.size else [np.nan] * 3
                und = np.isnan(v).mean()
                cells.append(f"{q[0]:5.2f} [{q[1]:4.2f},{q[2]:5.2f}]" + (f" u{und:3.0%}" if und else "     "))
            print(f"{n:>3} {tau:>4.0f} | " + " | ".join(f"{c:>22}" for c in cells) + f" | {ok.mean():.0%}")
        auc[n] = {k: p_greater(est[9.0][k], est[3.0][k]) for k in names}
    print("\nP(estimate for τ = 9 > estimate for τ = 3), 0.5 = cannot tell them apart:")
    print(f"{'n':>3} | " + " | ".join(f"{k:>6}" for k in names))
    for n in NS:
        print(f"{n:>3} | " + " | ".join(f"{auc[n][k]:6.2f}" for k in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
