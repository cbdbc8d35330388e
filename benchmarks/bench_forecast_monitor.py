"""Overhead of the training Monitor with live forecasting on, as a ratio to the same loop without it.

The paper's CNN autoencoder (key search A.2) at 32x32 (1,039,875 parameters), Adam lr 3e-4,
batch 128, one torch thread, trained for ``--steps`` steps on random images in a **fresh
process** per measurement, the variants interleaved round by round (their order rotates from
round to round):

- ``plain``: the loop alone;
- ``monitor``: the same loop with a ``Monitor(model, panel, path, schedule=...)`` (parameter
  time every step, a 256-image band probe and an atomic run-file write at each checkpoint) and
  forecasting on (the default: a background worker within a 2 % CPU budget);
- ``monitor_noforecast``: the same with ``forecast=False`` (what the forecasts add).

The checkpoints (``--schedule``):

- ``reference`` (default): the schedule of the reference CNN runs (``reference_runs/recorded``:
  key search A.5 scaled to 360 epochs of 64 steps, 53 checkpoints in 23,040 steps), its first
  ``--steps`` steps. A.5 is densest at the start, so the overhead of this first stretch bounds
  the whole run's from above (the 23,040-step run itself is too long to benchmark here);
- ``dense``: ``--n-points`` geometric checkpoints (default 53) squeezed into ``--steps``, a
  stress test 20-60 times denser than any recorded run.

Printed per variant, medians over rounds: wall, process CPU and **training-thread CPU** time
(the loop's own thread: the background forecasts run on another thread, so on a machine with a
spare core they do not lengthen training, while the process CPU counts them too), their ratios
to ``plain`` (medians of the per-round ratios), checkpoints, forecasts logged and the forecast
worker's CPU time; and the load average before and after (wall ratios mean little on a loaded
machine; CPU-time ratios much more). Usage::

    python benchmarks/bench_forecast_monitor.py [--quick] [--steps N] [--rounds R]
                                                [--schedule reference|dense] [--n-points P]
    python benchmarks/bench_forecast_monitor.py --profile

``--profile`` times each piece of the Monitor in one fresh process instead (a training step,
``tracker.step()``, the band probe, a checkpoint's record-and-write, ``tracker.checkpoint()``,
one forecast), interleaved, as shares of a training step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_CHILD = r"""
import json, sys, time, tempfile, os
import numpy as np
import torch
variant, steps, schedule, n_points = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(1)
torch.manual_seed(0)
from bandscope.torch.reference.models import build_model
from bandscope.schedule import geometric_schedule, paper_schedule
model = build_model("cnn", 32, seed=0)
opt = torch.optim.Adam(model.parameters(), lr=3e-4)
g = torch.Generator().manual_seed(1)
data = torch.rand(1024, 3, 32, 32, generator=g)
if schedule == "reference":
    sched = np.asarray(paper_schedule(64, 360))
else:
    sched = np.asarray(geometric_schedule(steps, n_points))
sched = [int(s) for s in sched if s <= steps]
mon = None
if variant != "plain":
    from bandscope.torch import Monitor
    panel = (torch.rand(256, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    d = tempfile.mkdtemp()
    mon = Monitor(model, panel, os.path.join(d, "run.nc"), schedule=sched, forecast=(variant == "monitor"))
logged = 0
w0, c0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
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
wall, cpu, thread = time.perf_counter() - w0, time.process_time() - c0, time.thread_time() - t0
print(json.dumps({"wall": wall, "cpu": cpu, "thread": thread, "forecasts_logged": logged, "forecast_cpu": fc_cpu,
                  "checkpoints": len(sched) if mon is not None else 0}))
"""

_PROFILE = r"""
import json, os, sys, tempfile, time
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
from bandscope.torch import Monitor
from bandscope.torch.reference.models import build_model
import bandscope
model = build_model("cnn", 32, seed=0)
opt = torch.optim.Adam(model.parameters(), lr=3e-4)
g = torch.Generator().manual_seed(1)
data = torch.rand(1024, 3, 32, 32, generator=g)
panel = (torch.rand(256, 3, 32, 32, generator=g) * 255).to(torch.uint8)
mon = Monitor(model, panel, os.path.join(tempfile.mkdtemp(), "run.nc"), schedule=[0])
reps = int(sys.argv[1])
def train(n):
    for t in range(n):
        x = data[(t * 128) % 1024:(t * 128) % 1024 + 128]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), x).backward()
        opt.step()
def timed(fn, n):
    c = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - c) / n
train(3)
out = {k: [] for k in ("train_step", "tracker_step", "probe", "record_and_write", "tracker_checkpoint")}
step = [1]
def record():
    r = mon.probe(model)
    step[0] += 1
    mon.recorder.record(step=step[0], band_loss=r.band_loss, param_time=float(step[0]), arc_length=float(step[0]),
                        mse=r.mse)
for _ in range(reps):  # interleaved, so that a change of machine load hits every item alike
    out["train_step"].append(timed(lambda: train(1), 5))
    out["tracker_step"].append(timed(mon.tracker.step, 20))
    out["probe"].append(timed(lambda: mon.probe(model), 1))
    out["record_and_write"].append(timed(record, 1) - out["probe"][-1])
    out["tracker_checkpoint"].append(timed(mon.tracker.checkpoint, 5))
ds = mon.recorder.dataset()
c = time.thread_time()
bandscope.forecast(ds)
fc = time.thread_time() - c
mon.close(final_checkpoint=False)
med = {k: sorted(v)[len(v) // 2] for k, v in out.items()}
med["forecast"] = fc
med["checkpoints_in_forecast"] = int(ds.sizes["checkpoint"])
print(json.dumps(med))
"""

VARIANTS = ("plain", "monitor", "monitor_noforecast")


def profile(reps: int = 5) -> dict:
    """CPU cost of each piece of the Monitor in one fresh process, as a share of a training step.

    Parameters
    ----------
    reps : int
        Interleaved repetitions (medians are printed).

    Returns
    -------
    dict
        Median thread-CPU seconds of a training step, ``tracker.step()``, the band probe, the
        checkpoint's record-and-write, ``tracker.checkpoint()``, and one forecast; plus the
        predicted overhead of a whole reference CNN run (53 checkpoints in 23,040 steps).
    """
    out = subprocess.run([sys.executable, "-c", _PROFILE, str(reps)], check=True, capture_output=True, text=True)
    med = json.loads(out.stdout.strip().splitlines()[-1])
    t = med["train_step"]
    print(f"per-piece CPU (thread time, median of {reps} interleaved repetitions):")
    for k in ("train_step", "tracker_step", "probe", "record_and_write", "tracker_checkpoint", "forecast"):
        print(f"  {k:20s} {med[k] * 1e3:9.2f} ms  {med[k] / t * 100:8.2f} % of a training step")
    per_ckpt = med["probe"] + med["record_and_write"] + med["tracker_checkpoint"]
    n_steps, n_ckpt = 23040, 53
    train_thread = (n_steps * med["tracker_step"] + n_ckpt * per_ckpt) / (n_steps * t)
    fc_share = (n_ckpt - 7) * med["forecast"] / (n_steps * t)
    print(f"predicted for a whole reference CNN run ({n_ckpt} checkpoints in {n_steps} steps): training thread "
          f"+{train_thread * 100:.2f} %, forecasts (one per checkpoint from the 8th, "
          f"{med['checkpoints_in_forecast']}-checkpoint cost) +{fc_share * 100:.2f} %")
    med["predicted_train_thread"] = train_thread
    return med


def _run(variant: str, steps: int, schedule: str, n_points: int) -> dict:
    """One measurement in a fresh process.

    Parameters
    ----------
    variant : str
        One of :data:`VARIANTS`.
    steps : int
        Optimizer steps.
    schedule : str
        ``"reference"`` or ``"dense"`` (module docstring).
    n_points : int
        Checkpoints of the dense schedule.

    Returns
    -------
    dict
        ``wall, cpu, thread`` (s), ``forecasts_logged``, ``forecast_cpu`` (s), ``checkpoints``.
    """
    out = subprocess.run([sys.executable, "-c", _CHILD, variant, str(steps), schedule, str(n_points)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | tuple[str, ...] = ()) -> dict:
    """Measure and print the Monitor's overhead ratios.

    Parameters
    ----------
    argv : sequence of str
        This script's flags (module docstring).

    Returns
    -------
    dict
        Per variant the medians and ratios printed, plus ``steps``, ``rounds``, ``schedule`` and
        the load averages.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="120 steps, 1 round")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--schedule", choices=("reference", "dense"), default="reference")
    ap.add_argument("--n-points", type=int, default=53, help="checkpoints of the dense schedule (default 53)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, plain first")
    ap.add_argument("--profile", action="store_true", help="only the per-piece CPU profile (one process)")
    args = ap.parse_args(argv)
    if args.profile:
        return profile()
    steps, rounds = (120, 1) if args.quick else (args.steps, args.rounds)
    variants = tuple(v for v in args.variants.split(",") if v)
    if variants[0] != "plain" or any(v not in VARIANTS for v in variants):
        raise SystemExit(f"--variants must start with plain and name only {VARIANTS}; got {args.variants!r}")
    load0 = os.getloadavg()
    res = {v: [] for v in variants}
    for k in range(rounds):
        for v in variants[k % len(variants):] + variants[:k % len(variants)]:
            res[v].append(_run(v, steps, args.schedule, args.n_points))
    load1 = os.getloadavg()
    out = {"steps": steps, "rounds": rounds, "schedule": args.schedule, "load_before": load0, "load_after": load1}
    print(f"Monitor overhead, paper CNN 32x32, batch 128, 1 thread, {steps} steps, schedule {args.schedule}, "
          f"{rounds} rounds (fresh process each, interleaved); load average {load0[0]:.1f} before, "
          f"{load1[0]:.1f} after")
    print(f"{'variant':20s} {'ckpts':>5s} {'wall s':>8s} {'cpu s':>8s} {'train s':>8s} {'wall/plain':>10s} "
          f"{'cpu/plain':>10s} {'train/plain':>11s} {'forecasts':>9s} {'forecast cpu s':>14s}")
    for v in variants:
        row = {key: statistics.median(r[key] for r in res[v]) for key in
               ("wall", "cpu", "thread", "forecasts_logged", "forecast_cpu", "checkpoints")}
        for key in ("wall", "cpu", "thread"):
            row[f"{key}_ratio"] = statistics.median(r[key] / p[key] for r, p in zip(res[v], res["plain"]))
            row[f"{key}_ratios"] = [r[key] / p[key] for r, p in zip(res[v], res["plain"])]
        out[v] = row
        print(f"{v:20s} {row['checkpoints']:5.0f} {row['wall']:8.1f} {row['cpu']:8.1f} {row['thread']:8.1f} "
              f"{row['wall_ratio']:10.3f} {row['cpu_ratio']:10.3f} {row['thread_ratio']:11.3f} "
              f"{row['forecasts_logged']:9.0f} {row['forecast_cpu']:14.2f}")
    if "monitor" in out:
        print("per-round ratios monitor/plain: cpu " + ", ".join(f"{r:.3f}" for r in out["monitor"]["cpu_ratios"])
              + "; training thread " + ", ".join(f"{r:.3f}" for r in out["monitor"]["thread_ratios"]))
    if "monitor" in out and "monitor_noforecast" in out:
        share = out["monitor"]["cpu_ratio"] - out["monitor_noforecast"]["cpu_ratio"]
        print(f"forecasting's share of the CPU time (monitor - monitor_noforecast): {share * 100:+.1f} % of plain")
    return out


if __name__ == "__main__":
    t = time.perf_counter()
    main(sys.argv[1:])
    print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
