"""Overhead of the training Monitor with live forecasting on, as ratios to the same loop without it.

The paper's CNN autoencoder (key search A.2) at 32x32 (1,039,875 parameters), Adam lr 3e-4,
batch 128, one torch thread, random images, the checkpoints of the reference CNN runs
(``reference_runs/recorded``: key search A.5 scaled to 360 epochs of 64 steps, 53 checkpoints in
23,040 steps; ``--schedule dense``: ``--n-points`` geometric checkpoints in ``--steps``, a stress
test). Two measurements in one command:

1. **Fresh-process A/B.** ``--pairs`` pairs of fresh processes, each pair one ``plain`` loop and
   one ``monitor`` loop (the same loop with ``Monitor(model, panel, path, schedule=...,
   forecast=LiveForecastOptions(min_checkpoints=...))``: parameter time every step, a 256-image
   band probe and an atomic run-file write at each checkpoint, forecasts on the background
   worker within its 2 % CPU budget), the order alternating from pair to pair. Per pair the
   ratios monitor / plain of wall time, process CPU time and training-thread CPU time; printed:
   their median with a bootstrap 95 % interval (resampling pairs). ``--min-checkpoints``
   (default 4, the Monitor's default is 8) makes the first forecast start inside the short
   window, so the worker runs while the loop is timed.
2. **In-process attribution**, in the same ``monitor`` processes: a benchmark-only wrapper
   (:class:`_TimedMonitor` in the child script) sums ``time.perf_counter`` and
   ``time.thread_time`` around each ``Monitor.step()`` call on the training thread, split into
   checkpoint and plain steps, and the worker thread's CPU time (``time.thread_time`` inside the
   worker: ``ForecastWorker.cpu_seconds``). Overhead = monitor time on the training thread /
   (loop time - monitor time), for wall and CPU, and the worker's CPU as a fraction of the
   same. From the measured cost of a plain step's call and of a checkpoint's call it predicts
   the overhead of the first 300 steps of the A.5 schedule (its dense start) and of a whole
   reference run. The attribution is checked against the A/B: its predicted ratio should lie in
   the A/B's interval; ``loop - monitor`` over the plain loop's time (the "rest" ratio) shows
   effects outside the monitor's calls (the worker holding the GIL, caches, the allocator).

The Monitor itself carries no instrumentation (the wrapper lives only in this script); it adds
four clock reads per step (a few microseconds against a ~110 ms step). Printed with the load
average before and after: wall ratios need a quiet machine, CPU ratios much less so. Usage::

    python benchmarks/bench_forecast_monitor.py [--pairs 10] [--steps 120] [--min-checkpoints 4]
                                                [--schedule reference|dense] [--n-points P]
                                                [--variants plain,monitor[,monitor_noforecast]] [--json OUT]
                                                [--compare-src OTHER_SRC]
    python benchmarks/bench_forecast_monitor.py --profile [--reps 5]

``--compare-src OTHER_SRC`` adds a third process to each round, the Monitor of another source tree
(e.g. ``git worktree`` of the commit before a change, its ``src``), and prints this tree's Monitor
over that one, pair by pair: a before/after measured interleaved.

``--profile`` times each piece of the Monitor in one fresh process instead (a training step,
``tracker.step()``, the band probe, a checkpoint's record-and-write, ``tracker.checkpoint()``,
one forecast), interleaved, as shares of a training step; ``--reps`` interleaved repetitions (default 5).

A smoke run: ``--pairs 1 --steps 3 --schedule dense --n-points 2`` (the figures need the defaults), and
``--profile --reps 1``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

#: The setup every child process shares: the paper's CNN at 32x32, its optimizer, the data, the
#: panel and one training step (the same in the timed loops and the profile).
_PREAMBLE = r"""
import json, os, resource, sys, tempfile, time
import numpy as np
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
from bandscope.torch.reference.models import build_model
model = build_model("cnn", 32, seed=0)
opt = torch.optim.Adam(model.parameters(), lr=3e-4)
g = torch.Generator().manual_seed(1)
data = torch.rand(1024, 3, 32, 32, generator=g)
panel = (torch.rand(256, 3, 32, 32, generator=g) * 255).to(torch.uint8)

def train_step(t):
    i = (t * 128) % 1024
    x = data[i:i + 128]
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), x).backward()
    opt.step()


@torch.no_grad()
def panel_forward():
    # one pass of the panel through the model, as the Monitor's checkpoint 0 does: both variants run it
    # before timing, so that glibc's malloc starts the loop with the same (dynamic) mmap threshold
    model.eval()
    model(panel.float() / 255)
    model.train()


panel_forward()
"""

_CHILD = _PREAMBLE + r"""
variant, steps, schedule, n_points, min_ckpt = (sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]),
                                                int(sys.argv[5]))
from bandscope.schedule import geometric_schedule, paper_schedule
sched = np.asarray(paper_schedule(64, 360) if schedule == "reference" else geometric_schedule(steps, n_points))
sched = [int(s) for s in sched if s <= steps]


class _TimedMonitor:
    # benchmark-only: the training thread's time inside Monitor.step(), summed
    def __init__(self, mon):
        self.mon = mon
        self.wall = {"step": 0.0, "checkpoint": 0.0}
        self.cpu = {"step": 0.0, "checkpoint": 0.0}
        self.calls = {"step": 0, "checkpoint": 0}
        self.each = {"wall": [], "cpu": []}  # every checkpoint's call
        self.logged = 0

    def step(self, loss=None):
        w, c = time.perf_counter(), time.thread_time()
        m = self.mon.step(loss)
        dc, dw = time.thread_time() - c, time.perf_counter() - w
        kind = "step" if m is None else "checkpoint"
        self.wall[kind] += dw
        self.cpu[kind] += dc
        self.calls[kind] += 1
        if m is not None:
            self.each["wall"].append(dw)
            self.each["cpu"].append(dc)
        if m and any(k.startswith("bandscope/forecast_floor") for k in m):
            self.logged += 1
        return m


mon = None
if variant != "plain":
    from bandscope.torch import LiveForecastOptions, Monitor
    fc = LiveForecastOptions(min_checkpoints=min_ckpt) if variant.startswith("monitor") and \
        "noforecast" not in variant else False
    mon = _TimedMonitor(Monitor(model, panel, os.path.join(tempfile.mkdtemp(), "run.nc"), schedule=sched,
                                forecast=fc))
r0 = resource.getrusage(resource.RUSAGE_SELF)
w0, c0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
for t in range(steps):
    train_step(t)
    if mon is not None:
        mon.step()
wall, cpu, thread = time.perf_counter() - w0, time.process_time() - c0, time.thread_time() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
out = {"wall": wall, "cpu": cpu, "thread": thread, "sys": r1.ru_stime - r0.ru_stime,
       "minflt": r1.ru_minflt - r0.ru_minflt, "checkpoints": 0}
if mon is not None:
    fw = mon.mon._forecaster
    out.update({"mon_wall": mon.wall, "mon_cpu": mon.cpu, "mon_calls": mon.calls, "mon_each": mon.each,
                "checkpoints": mon.calls["checkpoint"], "forecasts_logged": mon.logged,
                "forecast_cpu": fw.cpu_seconds if fw is not None else 0.0,
                "forecasts_started": fw.submitted if fw is not None else 0})
    mon.mon.close(final_checkpoint=False)
print(json.dumps(out))
"""

_PROFILE = _PREAMBLE + r"""
from bandscope.torch import Monitor
import bandscope
mon = Monitor(model, panel, os.path.join(tempfile.mkdtemp(), "run.nc"), schedule=[0])
reps = int(sys.argv[1])
def timed(fn, n):
    c = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - c) / n
for t in range(3):
    train_step(t)
out = {k: [] for k in ("train_step", "tracker_step", "probe", "record_and_write", "tracker_checkpoint")}
step = [1]
def record():
    r = mon.probe(model)
    step[0] += 1
    mon.recorder.record(step=step[0], band_loss=r.band_loss, param_time=float(step[0]), arc_length=float(step[0]),
                        mse=r.mse)
n_train = [3]
def one_train_step():
    train_step(n_train[0])
    n_train[0] += 1
for _ in range(reps):  # interleaved, so that a change of machine load hits every item alike
    out["train_step"].append(timed(one_train_step, 5))
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

#: the reference CNN run: A.5 scaled to 360 epochs of 64 steps (53 checkpoints, step 0 included)
RUN_STEPS, DENSE_START = 23040, 300


def _reference_checkpoints(upto: int) -> int:
    """Checkpoints of the reference schedule in steps 1..``upto`` (step 0 is the constructor's)."""
    from bandscope.schedule import paper_schedule

    s = np.asarray(paper_schedule(64, 360))
    return int(((s > 0) & (s <= upto)).sum())


def median_ci(values, n_boot: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Median of ``values`` and its bootstrap 95 % percentile interval (resampling the values).

    Parameters
    ----------
    values : sequence of float
        One value per pair (or process).
    n_boot : int
        Bootstrap resamples.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    (median, low, high)

    Examples
    --------
    >>> median_ci([1.0, 1.0, 1.0])
    (1.0, 1.0, 1.0)
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return (float("nan"),) * 3
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    meds = np.median(v[idx], axis=1)
    return float(np.median(v)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


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
    n_steps, n_ckpt = RUN_STEPS, _reference_checkpoints(RUN_STEPS)
    train_thread = (n_steps * med["tracker_step"] + n_ckpt * per_ckpt) / (n_steps * t)
    fc_share = (n_ckpt - 7) * med["forecast"] / (n_steps * t)
    print(f"predicted for a whole reference CNN run ({n_ckpt} checkpoints after step 0 in {n_steps} steps): training "
          f"thread +{train_thread * 100:.2f} %, forecasts (one per checkpoint from the 8th, "
          f"{med['checkpoints_in_forecast']}-checkpoint cost) +{fc_share * 100:.2f} %")
    med["predicted_train_thread"] = train_thread
    return med


def _run(variant: str, steps: int, schedule: str, n_points: int, min_checkpoints: int,
         compare_src: str | None = None) -> dict:
    """One measurement in a fresh process (``variant`` one of :data:`VARIANTS`; ``monitor@compare``
    is ``monitor`` with ``compare_src`` first on ``PYTHONPATH``).

    Returns
    -------
    dict
        ``wall, cpu, thread`` (s), ``sys`` (s) and ``minflt`` (minor page faults) of the loop;
        for a monitor also ``mon_wall``, ``mon_cpu`` (s on the training thread inside
        ``Monitor.step()``, by ``step`` / ``checkpoint`` call), ``mon_calls``, ``checkpoints``,
        ``forecasts_logged``, ``forecasts_started`` and ``forecast_cpu`` (the worker's CPU s).
    """
    env = None
    if variant.endswith("@compare"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(compare_src), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _CHILD, variant, str(steps), schedule, str(n_points),
                          str(min_checkpoints)], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def attribution(r: dict) -> dict:
    """The in-process attribution of one monitor process (module docstring, 2).

    Parameters
    ----------
    r : dict
        What :func:`_run` returned for a monitor variant.

    Returns
    -------
    dict
        ``wall``, ``cpu``: monitor time on the training thread / (loop time - monitor time);
        ``worker``: the worker's CPU / the loop's own training-thread CPU; ``step_wall``,
        ``checkpoint_wall``, ``step_cpu``, ``checkpoint_cpu``: mean seconds per plain step's and
        per checkpoint's ``Monitor.step()``; ``train_wall``, ``train_cpu``: mean seconds per
        training step without the monitor.
    """
    steps = r["mon_calls"]["step"] + r["mon_calls"]["checkpoint"]
    out = {}
    for clock, total in (("wall", r["wall"]), ("cpu", r["thread"])):
        mon = r[f"mon_{clock}"]["step"] + r[f"mon_{clock}"]["checkpoint"]
        own = total - mon
        out[clock] = mon / own
        out[f"train_{clock}"] = own / steps
        out[f"step_{clock}"] = r[f"mon_{clock}"]["step"] / max(r["mon_calls"]["step"], 1)
        out[f"checkpoint_{clock}"] = r[f"mon_{clock}"]["checkpoint"] / max(r["mon_calls"]["checkpoint"], 1)
    out["worker"] = r["forecast_cpu"] / (r["thread"] - r["mon_cpu"]["step"] - r["mon_cpu"]["checkpoint"])
    return out


def predicted(r: dict, a: dict, clock: str, steps: int) -> float:
    """Training-thread overhead of the first ``steps`` steps of the reference schedule predicted
    from one monitor process ``r`` and its attribution ``a``: its checkpoints' measured calls
    (one-time costs included), the median of them for each further checkpoint, and the mean
    plain step's call, over the loop's own time per training step."""
    k = _reference_checkpoints(steps)
    each = r["mon_each"][clock]
    ckpt = sum(each[:k]) + max(k - len(each), 0) * (statistics.median(each) if each else 0.0)
    return (ckpt + (steps - k) * a[f"step_{clock}"]) / (steps * a[f"train_{clock}"])


def _fmt(m: tuple[float, float, float], pct: bool = False) -> str:
    if pct:
        return f"{m[0] * 100:+6.2f} % [{m[1] * 100:+6.2f}, {m[2] * 100:+6.2f}]"
    return f"{m[0]:6.3f} [{m[1]:6.3f}, {m[2]:6.3f}]"


def _report_attribution(v: str, res: dict, out: dict) -> dict:
    """Print and store (in ``out["attribution"][v]``) the attribution of variant ``v``; return whether its
    predicted ratios lie inside the A/B intervals."""
    p = res["plain"]
    att = [attribution(r) for r in res[v]]
    s: dict = {"per_process": att}
    for key in ("wall", "cpu", "worker"):
        s[key] = median_ci([a[key] for a in att])
    for key in ("step_wall", "checkpoint_wall", "train_wall", "step_cpu", "checkpoint_cpu", "train_cpu"):
        s[key] = statistics.median(a[key] for a in att)
    # what the attribution predicts for the A/B ratios, and the time outside the monitor's calls
    s["predicted_wall_ratio"] = median_ci([1 + a["wall"] for a in att])
    s["predicted_cpu_ratio"] = median_ci([1 + a["cpu"] + a["worker"] for a in att])
    s["predicted_thread_ratio"] = median_ci([1 + a["cpu"] for a in att])
    s["rest_wall_ratio"] = median_ci([(r["wall"] - sum(r["mon_wall"].values())) / q["wall"]
                                      for r, q in zip(res[v], p)])
    s["rest_thread_ratio"] = median_ci([(r["thread"] - sum(r["mon_cpu"].values())) / q["thread"]
                                        for r, q in zip(res[v], p)])
    for clock in ("wall", "cpu"):
        s[f"dense_start_{clock}"] = statistics.median(predicted(r, a, clock, DENSE_START)
                                                      for r, a in zip(res[v], att))
        s[f"whole_run_{clock}"] = statistics.median(predicted(r, a, clock, RUN_STEPS) for r, a in zip(res[v], att))
        s[f"checkpoint_median_{clock}"] = statistics.median(statistics.median(r["mon_each"][clock])
                                                            for r in res[v])
    out["attribution"][v] = s
    print(f"\nattribution, {v} (training thread inside Monitor.step(), per process; median [bootstrap 95 %]):")
    print(f"  overhead on the training thread, wall: {_fmt(s['wall'], True)}; CPU: {_fmt(s['cpu'], True)}")
    print(f"  forecast worker CPU / the loop's CPU:  {_fmt(s['worker'], True)}")
    print(f"  per call: plain step {s['step_wall'] * 1e3:.2f} ms wall / {s['step_cpu'] * 1e3:.2f} ms CPU, "
          f"checkpoint mean {s['checkpoint_wall'] * 1e3:.1f} / {s['checkpoint_cpu'] * 1e3:.1f} ms, median "
          f"{s['checkpoint_median_wall'] * 1e3:.1f} / {s['checkpoint_median_cpu'] * 1e3:.1f} ms; training step "
          f"{s['train_wall'] * 1e3:.1f} / {s['train_cpu'] * 1e3:.1f} ms")
    print(f"  predicted on the training thread: first {DENSE_START} steps of A.5 "
          f"({_reference_checkpoints(DENSE_START)} checkpoints) {s['dense_start_wall'] * 100:+.2f} % wall / "
          f"{s['dense_start_cpu'] * 100:+.2f} % CPU; whole run ({_reference_checkpoints(RUN_STEPS)} checkpoints "
          f"in {RUN_STEPS} steps) {s['whole_run_wall'] * 100:+.2f} % / {s['whole_run_cpu'] * 100:+.2f} %")
    ab = out["ab"][v]
    agrees: dict = {}
    for key, pred in (("wall", "predicted_wall_ratio"), ("cpu", "predicted_cpu_ratio"),
                      ("thread", "predicted_thread_ratio")):
        lo, hi = ab[key][1], ab[key][2]
        agrees[key] = bool(lo <= s[pred][0] <= hi)
        print(f"  {key:6s} ratio: attribution predicts {s[pred][0]:.3f}, A/B measured {_fmt(ab[key])}: "
              f"{'inside' if agrees[key] else 'OUTSIDE'} the A/B interval")
    print(f"  loop time outside the monitor's calls / the plain loop's: wall {_fmt(s['rest_wall_ratio'])}, "
          f"training thread CPU {_fmt(s['rest_thread_ratio'])}")
    return agrees


def _report_compare(res: dict, compare_src: str) -> dict:
    """Print and return this tree's Monitor against the one of ``compare_src`` (pair by pair)."""
    cmp: dict = {}
    print(f"\nthis tree's Monitor / the Monitor of {compare_src} (per pair, median [bootstrap 95 %]):")
    for key in ("wall", "cpu", "thread"):
        cmp[key] = median_ci([r[key] / q[key] for r, q in zip(res["monitor"], res["monitor@compare"])])
    for clock in ("wall", "cpu"):
        cmp[f"attribution_{clock}"] = median_ci([
            attribution(r)[clock] - attribution(q)[clock] for r, q in zip(res["monitor"], res["monitor@compare"])])
    print(f"  A/B: wall {_fmt(cmp['wall'])}, process CPU {_fmt(cmp['cpu'])}, training thread {_fmt(cmp['thread'])}")
    print(f"  attribution, training-thread overhead this tree minus the other: wall "
          f"{_fmt(cmp['attribution_wall'], True)}, CPU {_fmt(cmp['attribution_cpu'], True)}")
    return cmp


def main(argv: list[str] | tuple[str, ...] = ()) -> dict:
    """Measure and print the Monitor's overhead: fresh-process A/B ratios and the attribution.

    Parameters
    ----------
    argv : sequence of str
        This script's flags (module docstring).

    Returns
    -------
    dict
        ``ab``: per variant the per-pair ratios and their medians with bootstrap 95 % intervals;
        ``attribution``: per monitor process and summarised; ``agrees``; the settings and the
        load averages.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 steps, 2 pairs")
    ap.add_argument("--pairs", "--rounds", type=int, default=10, dest="pairs")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--min-checkpoints", type=int, default=4, help="LiveForecastOptions.min_checkpoints (default 4)")
    ap.add_argument("--schedule", choices=("reference", "dense"), default="reference")
    ap.add_argument("--n-points", type=int, default=53, help="checkpoints of the dense schedule (default 53)")
    ap.add_argument("--variants", default="plain,monitor", help="comma-separated, plain first (default plain,monitor)")
    ap.add_argument("--profile", action="store_true", help="only the per-piece CPU profile (one process)")
    ap.add_argument("--reps", type=int, default=5, help="--profile: interleaved repetitions (default 5)")
    ap.add_argument("--compare-src", help="also time variant monitor@compare: the Monitor of this source tree "
                    "(e.g. a checkout's src/ before a change), and print monitor / monitor@compare")
    ap.add_argument("--json", help="also write what is printed (and every process's numbers) to this JSON file")
    args = ap.parse_args(argv)
    if args.profile:
        return profile(args.reps)
    steps, pairs = (40, 2) if args.quick else (args.steps, args.pairs)
    variants = tuple(v for v in args.variants.split(",") if v)
    if args.compare_src:
        variants += ("monitor@compare",)
    if len(variants) < 2 or variants[0] != "plain" or any(v not in VARIANTS + ("monitor@compare",) for v in variants):
        raise SystemExit(f"--variants must start with plain and name only {VARIANTS}; got {args.variants!r}")
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    res: dict[str, list[dict]] = {v: [] for v in variants}
    for k in range(pairs):  # the order rotates from pair to pair (alternates for two variants)
        for v in variants[k % len(variants):] + variants[:k % len(variants)]:
            res[v].append(_run(v, steps, args.schedule, args.n_points, args.min_checkpoints, args.compare_src))
    load1 = os.getloadavg()
    out: dict = {"steps": steps, "pairs": pairs, "schedule": args.schedule, "min_checkpoints": args.min_checkpoints,
                 "load_before": load0, "load_after": load1, "seconds": time.perf_counter() - t_start, "ab": {},
                 "attribution": {}}
    print(f"Monitor overhead, paper CNN 32x32, batch 128, 1 thread, first {steps} steps of the {args.schedule} "
          f"schedule, {pairs} pairs of fresh processes (order alternating); load average {load0[0]:.1f} before, "
          f"{load1[0]:.1f} after; {out['seconds']:.0f} s")
    p = res["plain"]
    print(f"plain loop: median wall {statistics.median(r['wall'] for r in p):.1f} s, process CPU "
          f"{statistics.median(r['cpu'] for r in p):.1f} s, minor page faults "
          f"{statistics.median(r['minflt'] for r in p):.0f}")
    print("\nA/B, median of the per-pair ratios variant / plain [bootstrap 95 % interval]:")
    print(f"{'variant':20s} {'ckpts':>5s} {'wall':>26s} {'process CPU':>26s} {'training thread CPU':>26s} "
          f"{'forecasts':>9s} {'page faults':>11s}")
    for v in variants[1:]:
        row: dict = {"checkpoints": statistics.median(r["checkpoints"] for r in res[v]),
                     "forecasts_started": sum(r.get("forecasts_started", 0) for r in res[v]),
                     "forecasts_logged": sum(r.get("forecasts_logged", 0) for r in res[v]),
                     "minflt": statistics.median(r["minflt"] for r in res[v])}
        for key in ("wall", "cpu", "thread"):
            ratios = [r[key] / q[key] for r, q in zip(res[v], p)]
            row[f"{key}_ratios"] = ratios
            row[key] = median_ci(ratios)
        out["ab"][v] = row
        print(f"{v:20s} {row['checkpoints']:5.0f} {_fmt(row['wall']):>26s} {_fmt(row['cpu']):>26s} "
              f"{_fmt(row['thread']):>26s} {row['forecasts_started']:9d} {row['minflt']:11.0f}")
        print("  per-pair process CPU ratios: " + ", ".join(f"{x:.3f}" for x in row["cpu_ratios"]))
    agrees = {v: _report_attribution(v, res, out) for v in variants[1:]}
    out["agrees"] = agrees
    if "monitor@compare" in res and "monitor" in res:
        out["compare"] = _report_compare(res, args.compare_src)
    out["raw"] = res
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=float)
    return out


if __name__ == "__main__":
    t = time.perf_counter()
    main(sys.argv[1:])
    print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
