"""Overhead of the training Monitor with live forecasting on, as a ratio to the same loop without it.

The paper's CNN autoencoder (key search A.2) at 32x32 (1,039,875 parameters), Adam lr 3e-4,
batch 128, one torch thread, trained for ``--steps`` steps on random images in a **fresh
process** per measurement, three variants interleaved round by round:

- ``plain``: the loop alone;
- ``monitor``: the same loop with ``Monitor(model, panel, path, total_steps=steps, n_points=N)``
  (a geometric schedule of ``--n-points`` checkpoints, default 53 as in A.5, squeezed into
  ``--steps``; parameter time, a 256-image band probe at each, the run file written
  atomically) and forecasting on (the default: a background worker within a 2 % CPU budget);
- ``monitor_noforecast``: the same with ``forecast=False`` (what the forecasts add).

Printed: per variant the median over rounds of wall and process-CPU time, the ratios to
``plain`` (median of the per-round ratios), the number of forecasts logged, and the
forecast worker's CPU time. Usage: ``python benchmarks/bench_forecast_monitor.py [--quick]
[--steps N] [--rounds R]``. The 53 checkpoints in ``--steps`` are far denser than in a real
run (53 in 23,040 steps for the reference CNN runs), so the probe's share here is an upper
bound of a real run's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

_CHILD = r"""
import json, sys, time, tempfile, os
import torch
variant, steps, n_points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
torch.manual_seed(0)
from bandscope.torch.reference.models import build_model
model = build_model("cnn", 32, seed=0)
opt = torch.optim.Adam(model.parameters(), lr=3e-4)
g = torch.Generator().manual_seed(1)
data = torch.rand(1024, 3, 32, 32, generator=g)
mon = None
if variant != "plain":
    from bandscope.torch import Monitor
    panel = (torch.rand(256, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    d = tempfile.mkdtemp()
    mon = Monitor(model, panel, os.path.join(d, "run.nc"), total_steps=steps, n_points=n_points,
                  forecast=(variant == "monitor"))
logged = 0
w0, c0 = time.perf_counter(), time.process_time()
for t in range(steps):
    i = (t * 128) % 1024
    x = data[i:i + 128]
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), x).backward()
    opt.step()
    if mon is not None:
        m = mon.step()
        if m and any(k.startswith("bandscope/forecast_floor") for k in m):
            logged += 1
fc_cpu = 0.0
if mon is not None:
    fw = mon._forecaster
    fc_cpu = fw.cpu_seconds if fw is not None else 0.0
    mon.close(final_checkpoint=False)
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
print(json.dumps({"wall": wall, "cpu": cpu, "forecasts_logged": logged, "forecast_cpu": fc_cpu}))
"""

VARIANTS = ("plain", "monitor", "monitor_noforecast")


def _run(variant: str, steps: int, n_points: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, variant, str(steps), str(n_points)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=()) -> dict:
    """Measure and print; ``argv`` are this script's flags."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="120 steps, 1 round")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-points", type=int, default=53, help="checkpoints of the schedule (default 53, A.5)")
    args = ap.parse_args(argv)
    steps, rounds = (120, 1) if args.quick else (args.steps, args.rounds)
    res = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v in VARIANTS:
            res[v].append(_run(v, steps, args.n_points))
    out = {"steps": steps, "rounds": rounds}
    print(f"Monitor overhead, paper CNN 32x32, batch 128, 1 thread, {steps} steps, {args.n_points} checkpoints, "
          f"{rounds} rounds (fresh process each)")
    print(f"{'variant':20s} {'wall s':>8s} {'cpu s':>8s} {'wall/plain':>10s} {'cpu/plain':>10s} "
          f"{'forecasts':>9s} {'forecast cpu s':>14s}")
    for v in VARIANTS:
        wr = statistics.median(r["wall"] / p["wall"] for r, p in zip(res[v], res["plain"]))
        cr = statistics.median(r["cpu"] / p["cpu"] for r, p in zip(res[v], res["plain"]))
        row = {"wall": statistics.median(r["wall"] for r in res[v]),
               "cpu": statistics.median(r["cpu"] for r in res[v]), "wall_ratio": wr, "cpu_ratio": cr,
               "forecasts_logged": statistics.median(r["forecasts_logged"] for r in res[v]),
               "forecast_cpu": statistics.median(r["forecast_cpu"] for r in res[v])}
        out[v] = row
        print(f"{v:20s} {row['wall']:8.1f} {row['cpu']:8.1f} {wr:10.3f} {cr:10.3f} "
              f"{row['forecasts_logged']:9.0f} {row['forecast_cpu']:14.2f}")
    share = out["monitor"]["cpu_ratio"] - out["monitor_noforecast"]["cpu_ratio"]
    print(f"forecasting's share of the CPU time (monitor - monitor_noforecast): {share * 100:+.1f} % of plain")
    return out


if __name__ == "__main__":
    t = time.perf_counter()
    main(sys.argv[1:])
    print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
