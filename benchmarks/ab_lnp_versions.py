"""A/B of two source trees of bandscope on the LNP benchmark, interleaved in fresh processes.

Run: ``python benchmarks/ab_lnp_versions.py OLD_SRC NEW_SRC [--cases cnn32 gpt] [--reps 3] [--draws 6]
[--old-backend hooks] [--new-backend auto]``.

Each repetition runs ``bench_lnp.py --worker CASE`` once with ``PYTHONPATH=OLD_SRC`` and once with
``PYTHONPATH=NEW_SRC`` (alternating which goes first), each a fresh process timing Adam steps and
measurements alternately. Printed: per case and tree, the median over repetitions of the
measurement's median wall and CPU time as a multiple of the same process's Adam step, and the
ratio new/old of those multiples (1.0 = unchanged cost).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(src, case, backend, draws):
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, os.path.join(HERE, "bench_lnp.py"), "--worker", case, "--backend", backend,
           "--draws", str(draws)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    step, step_cpu = statistics.median(r["step_s"]), statistics.median(r["step_cpu_s"])
    return statistics.median(r["lnp_s"]) / step, statistics.median(r["lnp_cpu_s"]) / step_cpu, r["load"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--cases", nargs="+", default=["cnn32", "gpt"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--old-backend", default="hooks")
    ap.add_argument("--new-backend", default="auto")
    args = ap.parse_args(argv)
    for case in args.cases:
        res = {"old": [], "new": []}
        for rep in range(args.reps):
            order = ("old", "new") if rep % 2 == 0 else ("new", "old")
            for which in order:
                src = args.old if which == "old" else args.new
                backend = args.old_backend if which == "old" else args.new_backend
                res[which].append(_run(src, case, backend, args.draws))
                print(f"  {case} rep {rep} {which}: {res[which][-1][0]:.2f} steps (cpu {res[which][-1][1]:.2f}), "
                      f"load {res[which][-1][2][0]:.1f}->{res[which][-1][2][1]:.1f}", flush=True)
        med = {k: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs)) for k, vs in res.items()}
        print(f"{case}: old {med['old'][0]:.2f} steps (cpu {med['old'][1]:.2f}), new {med['new'][0]:.2f} steps "
              f"(cpu {med['new'][1]:.2f}); new/old wall {med['new'][0] / med['old'][0]:.3f}, "
              f"cpu {med['new'][1] / med['old'][1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
