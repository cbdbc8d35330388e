"""Null distribution of the median Spearman ρ across runs, against the single-run chance level.

    python tools/median_rho_null.py [--draws 400000] [--seed 0]

The ordering verdict (``bandscope.report.verdict.ordering_verdict``, docs/report.md) compares the
*median over runs* of the within-run ρ(band resolution, descriptor) with the one-sided 5 %
critical value of a *single* run's ρ under a random band order (exact over all n! orders). This
script shows how that threshold relates to the null distribution of the median itself: each run's
ρ is drawn from the exact single-run null (all n! orders equally likely, runs independent), the
median over R runs is taken (numpy's: the mean of the two middle values for even R), and the
printout gives, for the recorded runs' shape (6 bands, 6 runs) and the paper's (7 bands, 12 runs),
the single-run critical value, the 5 % critical value of the median (Monte Carlo, ``--draws``
medians) and P(median ≥ single-run critical value) under the null, and the null tail probability
of the observed medians given by ``--observed``.
"""
from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np


def spearman_null(n: int) -> np.ndarray:
    """ρ of every one of the n! orders of n bands against their resolution (no ties)."""
    d = np.arange(n)
    perms = np.array(list(itertools.permutations(d)))
    return 1 - 6 * ((perms - d) ** 2).sum(axis=1) / (n * (n * n - 1))


def critical(values: np.ndarray, alpha: float = 0.05) -> float:
    """Smallest c with P(value ≥ c) ≤ alpha."""
    u = np.unique(values)
    tail = np.array([(values >= c - 1e-12).mean() for c in u])
    return float(u[np.argmax(tail <= alpha)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--observed", type=float, nargs="*", default=[0.686, 0.886],
                    help="median ρ values whose null tail probability to print (6 bands, 6 runs)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for n, runs in ((6, 6), (7, 12)):
        rho = spearman_null(n)
        c1 = critical(rho)
        med = np.median(rng.choice(rho, (args.draws, runs)), axis=1)
        print(f"{n} bands, {runs} runs: single-run critical ρ {c1:.3f} (P = {(rho >= c1 - 1e-12).mean():.4f}); "
              f"5 % critical value of the median {critical(med):.3f}; "
              f"P(median ≥ {c1:.3f}) = {(med >= c1 - 1e-12).mean():.2g}")
        if n == 6:
            for obs in args.observed:
                print(f"   P(median ≥ {obs:.3f}) = {(med >= obs - 1e-12).mean():.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
