"""Benchmark: the output corridor (JSON results and HTML report) against the analysis it reports.

Workload: ``make_runs_synthetic(12)`` (12 runs × 7 bands × 3 windows), analysed once; then
``results_to_dict`` + ``json.dumps`` (the ``--json`` output) and ``to_html`` (the ``--html``
output, paper view, figures included: ``bandscope reproduce --html``), each timed (CPU time,
after one untimed call of each on two runs) as a ratio to ``analyze()`` measured in the same
process; each ratio is taken within one repeat, and the medians and ranges of the ratios
are printed with the machine's load average. Targets: JSON ≤ 0.3 × the analysis, HTML ≤ 10 ×.

With ``--compare-src DIR`` (e.g. ``main``'s ``src``: the code before) the same three timings are
made with the package in ``DIR``, in subprocesses alternating with this tree's, so "before" and
"after" come from one run on the same machine load; the ratios are printed side by side, and the
HTML time of this tree over the other's, per round (the two subprocesses of a round run one after
the other, so the machine's load changes least between them).

``--runs N`` (default 12) analyses and reports ``make_runs_synthetic(N)`` instead (a smoke run:
``--runs 2 --rounds 1 --repeats 1``); the targets are for the default.

Run: ``python benchmarks/bench_report.py [--compare-src DIR] [--rounds N] [--repeats N] [--runs 12]``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_TIMER = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
from bandscope import analyze, report
from bandscope.keysearch.synthetic import make_runs_synthetic
try:
    from bandscope.report.results_json import results_to_dict
except ImportError:
    from bandscope.io import results_to_dict
runs = make_runs_synthetic(int(sys.argv[2]))
warm = analyze(runs[:2])                   # first calls (imports, caches) are not timed
json.dumps(results_to_dict(warm), default=str)
try:
    report.to_html(warm, view="paper")
except TypeError:
    report.to_html(warm)
out = {"analyze": [], "json": [], "html": []}
for _ in range(int(sys.argv[1])):
    t0 = time.process_time(); res = analyze(runs); out["analyze"].append(time.process_time() - t0)
    t0 = time.process_time(); json.dumps(results_to_dict(res), default=str)
    out["json"].append(time.process_time() - t0)
    t0 = time.process_time()
    try:
        report.to_html(res, view="paper")
    except TypeError:
        report.to_html(res)
    out["html"].append(time.process_time() - t0)
print(json.dumps(out))
"""


def time_tree(src: str, repeats: int, n_runs: int = 12) -> dict:
    """CPU times (s) of analyze, JSON and HTML of ``n_runs`` synthetic runs with the package in ``src``,
    ``repeats`` of each."""
    env = dict(os.environ, PYTHONPATH=str(src), MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-c", _TIMER, str(repeats), str(n_runs)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(xs: list) -> float:
    return float(statistics.median(xs))


def main(argv: list | None = None) -> dict:
    """Time the trees in alternating subprocesses and print, per tree, the median CPU times and
    the median (and range) of the ratios JSON / analysis and HTML / analysis, each ratio taken
    within one repeat (the analysis timed just before the output it is compared with)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare-src", help="another tree's src (the code before), timed alternately")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--runs", type=int, default=12, help="synthetic runs analysed and reported (default 12)")
    a = ap.parse_args(argv)
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    trees = {"this tree": here}
    if a.compare_src:
        trees = {f"before ({a.compare_src})": a.compare_src, "this tree": here}
    times: dict = {k: {"analyze": [], "json": [], "html": []} for k in trees}
    loads = [os.getloadavg()[0]]
    paired: list[float] = []   # per round: this tree's HTML time / the other tree's, both medians
    for _ in range(a.rounds):
        html = {}
        for name, src in trees.items():
            t = time_tree(src, a.repeats, a.runs)
            for key, vals in t.items():
                times[name][key].extend(vals)
            html[name] = _median(t["html"])
            loads.append(os.getloadavg()[0])
        if len(trees) == 2:
            before, after = (html[k] for k in trees)
            paired.append(after / before)
    print(f"CPU time, medians of {a.rounds * a.repeats} repeats; ratios per repeat to analyze() of the same tree, "
          "median [min, max] (targets: JSON <= 0.3, HTML <= 10)")
    print(f"1-minute load average during the run: {min(loads):.1f} to {max(loads):.1f} "
          f"({os.cpu_count()} CPUs)")
    print(f"{'tree':40s} {'analyze s':>10s} {'JSON s':>8s} {'JSON/analysis':>22s} {'HTML s':>8s} "
          f"{'HTML/analysis':>22s}")
    for name, t in times.items():
        rj = [j / n for j, n in zip(t["json"], t["analyze"])]
        rh = [h / n for h, n in zip(t["html"], t["analyze"])]
        t["json_ratio"], t["html_ratio"] = rj, rh
        print(f"{name:40s} {_median(t['analyze']):10.3f} {_median(t['json']):8.3f} "
              f"{_median(rj):8.2f} [{min(rj):.2f}, {max(rj):.2f}] {_median(t['html']):8.3f} "
              f"{_median(rh):8.1f} [{min(rh):.1f}, {max(rh):.1f}]")
    if paired:
        print(f"HTML time, this tree / before, per round (adjacent subprocesses): median {_median(paired):.2f} "
              f"[{min(paired):.2f}, {max(paired):.2f}] over {len(paired)} rounds")
    times["html_after_over_before"] = paired
    times["load_average"] = loads
    return times


if __name__ == "__main__":
    main()
