"""Benchmark: ``analyze()`` against a naive plain-lmfit analysis of the same curves.

Workload: ``make_runs_synthetic(12)`` = 12 runs × 7 bands × 3 windows (0.95/0.01, 0.90/0.10,
0.80/0.20), Weibull and exponential fits per window, full-loss fits, band ordering.

Baseline (measured in the same process): for every curve with an active window of at least
``min_points`` checkpoints (windows taken from the analysis, so both fit identical data), a
5-start ``lmfit.minimize`` Weibull fit from :func:`bandscope.keysearch.fitting.start_values` plus a
1-start ``lmfit.minimize`` exponential fit; the same for R_tot of each run; and a loop of
``scipy.stats.spearmanr`` calls for the ordering.

Prints the time ratio and the maximum relative SSE excess of ``analyze()``'s fits over the
baseline's ((SSE_fast - SSE_lmfit) / SSE_lmfit; ≤ 0 means as good or better). Timings are
wall-clock on a shared machine: treat them as noisy.

With ``--compare-src DIR`` (e.g. a checkout of ``main``'s ``src``), the same timing of
``analyze()`` on the same 12 runs is also made with the package in ``DIR``, in a subprocess
started from this run, alternating with this tree's timing; the two best-of times and their
ratio are printed (the "12-run path no slower than before" check).

``--runs N`` (``main(n_runs=N)``, default 12) and ``--repeats R`` (default 3) shrink the
workload of the main measurement (a smoke run: ``--runs 2 --repeats 1``); the figures above
are for the defaults.

Run: ``python benchmarks/bench_analysis.py [--compare-src DIR] [--runs 12] [--repeats 3]``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import lmfit
import numpy as np
from scipy import stats

from bandscope.keysearch.analysis import analyze
from bandscope.keysearch.fitting import start_values, weibull
from bandscope.keysearch.synthetic import make_runs_synthetic
from bandscope.transforms.paramtime import fit_run_gamma


def _resid(params, s, R, exp):
    v = params.valuesdict()
    return weibull(s, v["A"], v["omega"], 1.0 if exp else v["beta"]) - R


def _lmfit_fit(s, R, exp, n_starts):
    best = np.inf
    span = float(s.max() - s.min()) or 1.0
    for st in start_values(s, R, n_starts, model="exponential" if exp else "weibull"):
        p = lmfit.Parameters()
        p.add("A", value=max(st["A"], 1e-300), min=0.0)
        p.add("omega", value=st["omega"], min=1e-12 * span)
        if not exp:
            p.add("beta", value=float(np.clip(st["beta"], 0.05, 8.0)), min=0.05, max=8.0)
        out = lmfit.minimize(_resid, p, args=(s, R, exp), method="leastsq")
        best = min(best, float(np.sum(out.residual ** 2)))
    return best


def baseline(res, min_points=5):
    """Naive analysis of the curves ``res`` describes; returns dict name → SSE arrays."""
    sse_w = np.full(res["A"].shape, np.nan)
    sse_e = np.full(res["A"].shape, np.nan)
    for i in range(res.sizes["run"]):
        s_all = res.param_time[i].values
        for w in range(res.sizes["window"]):
            for b in range(res.sizes["band"]):
                n = int(res.fit_n[i, w, b])
                if n < min_points:
                    continue
                a = int(res.fit_start[i, w, b])
                s = s_all[a: a + n] - s_all[a]
                R = res.residual[i, a: a + n, b].values
                sse_w[i, w, b] = _lmfit_fit(s, R, False, 5)
                sse_e[i, w, b] = _lmfit_fit(s, R, True, 1)
    tot_w = np.full(res.sizes["run"], np.nan)
    tot_e = np.full(res.sizes["run"], np.nan)
    for i in range(res.sizes["run"]):
        ok = np.isfinite(res.total_residual[i].values)
        s = res.param_time[i].values[ok]
        R = res.total_residual[i].values[ok]
        tot_w[i] = _lmfit_fit(s - s[0], R, False, 5)
        tot_e[i] = _lmfit_fit(s - s[0], R, True, 1)
    band = res.band.values
    for i in range(res.sizes["run"]):
        for w in range(res.sizes["window"]):
            for m in ("onset", "width"):
                v = res[m][i, w].values
                ok = np.isfinite(v)
                stats.spearmanr(band[ok], v[ok])
        for v in (res.floor[i].values, res.initial_residual[i].values):
            stats.spearmanr(band, v)
    return {"sse_weibull": sse_w, "sse_exp": sse_e, "total_sse_weibull": tot_w,
            "total_sse_exp": tot_e}


_TIMER = """
import sys, time, warnings, json
warnings.simplefilter("ignore")
from bandscope.keysearch.analysis import analyze
from bandscope.keysearch.synthetic import make_runs_synthetic
runs = make_runs_synthetic(12)
analyze(runs[:1])
t, c = [], []
for _ in range(int(sys.argv[1])):
    t0, c0 = time.perf_counter(), time.process_time()
    analyze(runs)
    t.append(time.perf_counter() - t0); c.append(time.process_time() - c0)
print(json.dumps([t, c]))
"""


def time_tree(src, repeats):
    """Wall-clock and CPU times of ``analyze(make_runs_synthetic(12))`` with the package in
    ``src``: ``[wall_times, cpu_times]``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, "-c", _TIMER, str(repeats)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(other_src, rounds=3, repeats=5):
    """Best-of times of this tree and ``other_src``, alternating rounds (same machine load)."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    mine, theirs = ([], []), ([], [])
    for _ in range(rounds):
        for store, src in ((theirs, other_src), (mine, here)):
            wall, cpu = time_tree(src, repeats)
            store[0].extend(wall)
            store[1].extend(cpu)
    for i, what in enumerate(("wall-clock", "CPU time")):
        a, b = min(mine[i]), min(theirs[i])
        print(f"analyze() on 12 runs, {what}, best of {len(mine[i])}: this tree {a:.4f} s, "
              f"{other_src} {b:.4f} s, ratio this/other {a / b:.3f}")
    return {"this_wall": min(mine[0]), "other_wall": min(theirs[0]),
            "this_cpu": min(mine[1]), "other_cpu": min(theirs[1])}


def main(repeats=3, n_runs=12):
    warnings.simplefilter("ignore", UserWarning)
    runs = make_runs_synthetic(n_runs)
    analyze(runs[:1])  # warm imports
    t_fast = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = analyze(runs)
        t_fast.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    fit_run_gamma(runs, ((0, 10), (0, 25), (0, 50)))
    t_gamma = time.perf_counter() - t0
    c0 = time.process_time()
    analyze(runs)
    cpu_fast = time.process_time() - c0
    t0 = time.perf_counter()
    base = baseline(res)
    t_base = time.perf_counter() - t0
    fast = min(t_fast)
    n_fits = int(np.isfinite(base["sse_weibull"]).sum())
    excess = {}
    for key, ref in base.items():
        got = res[key].values
        ok = np.isfinite(ref) & np.isfinite(got)
        excess[key] = float(np.max((got[ok] - ref[ok]) / ref[ok]))
    out = {
        "analyze_s": fast,
        "analyze_s_all": t_fast,
        "analyze_cpu_s": cpu_fast,
        "gamma_part_s": t_gamma,
        "baseline_s": t_base,
        "speedup": t_base / fast,
        "band_fits": n_fits,
        "max_rel_sse_excess": excess,
        "max_rel_sse_excess_overall": max(excess.values()),
    }
    print(f"workload: {n_runs} runs x 7 bands x 3 windows; {n_fits} band windows fitted "
          f"(Weibull + exponential) + {n_runs} full-loss fits + ordering")
    print(f"analyze():       {fast:.3f} s (best of {repeats}: "
          + ", ".join(f"{t:.3f}" for t in t_fast) + ")")
    print(f"  of which gamma (paramtime.fit_power_time, 24 calls): {t_gamma:.3f} s; "
          f"analyze() CPU time {cpu_fast:.3f} s")
    print(f"plain lmfit:     {t_base:.3f} s (5-start Weibull + 1-start exponential per curve)")
    print(f"ratio baseline/analyze: {t_base / fast:.1f}x")
    for key, v in excess.items():
        print(f"max relative SSE excess over lmfit, {key:18s}: {v:+.3e}")
    print("(wall-clock on a shared 2-core machine: noisy)")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare-src", metavar="DIR",
                    help="also time analyze() with the package in DIR (e.g. main's src)")
    ap.add_argument("--runs", type=int, default=12, help="synthetic runs analysed (default 12)")
    ap.add_argument("--repeats", type=int, default=3, help="timings of analyze(), best of (default 3)")
    a = ap.parse_args()
    main(a.repeats, a.runs)
    if a.compare_src:
        compare(a.compare_src)
