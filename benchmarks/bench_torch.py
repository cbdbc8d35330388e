"""Overhead of recording a run, as ratios to a plain training step measured in the same run.

Baseline: one Adam step (forward, MSE, backward, step) of the paper's CNN autoencoder
(key search A.2, 64x64, 1,829,379 parameters) at batch 128, float32, one CPU thread.
Measured:

- ``tracker_step``: ``ParamTimeTracker.step()`` (exact arc length, fused ``_foreach``) alone;
- ``tracked_train_step``: a training step with the tracker attached, interleaved with plain
  steps (round by round, median of the per-round ratios);
- ``probe``: one ``BandProbe`` call (256-image panel, no grad, torch Haar bands), and the same
  amortised over the A.5 schedule (53 probes in 50 epochs of 1,427 steps, CelebA at batch 128).

Times are process CPU time (``time.process_time``), which is less sensitive than wall time to
other jobs on a shared machine; wall-clock ratios are printed too. Usage:
``python benchmarks/bench_torch.py [--quick]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _time(fn, n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call of ``fn`` over ``n`` calls."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n


def main(argv=()) -> dict:
    """Measure and print; ``argv`` are this script's flags (the command line when run as a
    script; none when called from ``benchmarks/run.py``)."""
    from bandscope.torch.paramtime import ParamTimeTracker
    from bandscope.torch.probe import BandProbe
    from bandscope.torch.reference.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)
    rounds, k = (3, 3) if args.quick else (7, 5)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("cnn", args.size, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    x = torch.rand(128, 3, args.size, args.size)

    def plain():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), x).backward()
        opt.step()

    tracker = ParamTimeTracker(model)
    tracker.checkpoint()

    def tracked():
        plain()
        tracker.step()

    for _ in range(2):
        tracked()  # warm-up (allocator, Adam state)
    ratios_cpu, ratios_wall, base_cpu, base_wall = [], [], [], []
    for _ in range(rounds):
        pc, pw = _time(plain, k)
        tc, tw = _time(tracked, k)
        ratios_cpu.append(tc / pc)
        ratios_wall.append(tw / pw)
        base_cpu.append(pc)
        base_wall.append(pw)
    step_cpu, step_wall = statistics.median(base_cpu), statistics.median(base_wall)
    tr_cpu, tr_wall = _time(tracker.step, 20 * k)
    probe = BandProbe(torch.rand(256, 3, args.size, args.size))
    probe(model)
    pr_cpu, pr_wall = _time(lambda: probe(model), 3 if args.quick else 5)
    amort = 53 / (50 * 1427)
    res = {
        "step_seconds_cpu": step_cpu,
        "step_seconds_wall": step_wall,
        "tracker_step_ratio_cpu": tr_cpu / step_cpu,
        "tracker_step_ratio_wall": tr_wall / step_wall,
        "tracked_train_step_ratio_cpu": statistics.median(ratios_cpu),
        "tracked_train_step_ratio_wall": statistics.median(ratios_wall),
        "probe_ratio_cpu": pr_cpu / step_cpu,
        "probe_ratio_wall": pr_wall / step_wall,
        "probe_amortised_A5_ratio_cpu": pr_cpu * amort / step_cpu,
    }
    print(f"baseline: CNN {args.size}x{args.size} Adam step at batch 128, 1 thread: "
          f"{step_cpu * 1e3:.1f} ms CPU ({step_wall * 1e3:.1f} ms wall)")
    print(f"tracker.step() alone            : {100 * res['tracker_step_ratio_cpu']:.2f} % of a step (CPU), "
          f"{100 * res['tracker_step_ratio_wall']:.2f} % (wall)   target < 3 %")
    print(f"training step with tracker      : {res['tracked_train_step_ratio_cpu']:.4f} x plain (CPU), "
          f"{res['tracked_train_step_ratio_wall']:.4f} x (wall), median of {rounds} interleaved rounds")
    print(f"band probe (256-image panel)    : {res['probe_ratio_cpu']:.2f} x a step (CPU); amortised over "
          f"the A.5 schedule (53 probes / 71,350 steps): {100 * res['probe_amortised_A5_ratio_cpu']:.3f} %")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
