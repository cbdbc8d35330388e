"""A/B timing of measure_lnp's default estimator, two source trees, one fresh process per measurement.

Driver:  python benchmarks/ab_lnp.py drive --trees A=/tmp/ab/old/src B=/tmp/ab/new/src --rounds 8 --reps 7
Worker:  python benchmarks/ab_lnp.py work --batch 128 (run with PYTHONPATH=<tree>)

A tree is the ``src`` folder of a commit: ``mkdir -p /tmp/ab/old && git archive <commit> src | tar -x -C /tmp/ab/old``.

Each worker: one torch thread, the CNN autoencoder (build_model("cnn", 32, seed=0)), x = rand(batch, 3, 32, 32);
Adam step timed (1 warm-up, `reps` timed); then measure_lnp default: first call timed separately (cold:
layout dry run and verification in the new code), then `reps` timed calls; Adam steps timed again after.
Prints one JSON line. The driver interleaves A B A B ... (order alternates per round) for batch 32 and 128.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def work(batch: int, reps: int) -> dict:
    import torch
    from torch import nn

    from bandscope.torch import measure_lnp
    from bandscope.torch.reference.models import build_model

    torch.set_num_threads(1)
    load0 = os.getloadavg()
    model = build_model("cnn", 32, seed=0)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), x).backward()
        opt.step()

    cpu, faults = {"step": [], "lnp": []}, {"step": [], "lnp": []}

    def timed(fn, kind="lnp"):
        f0, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        cpu[kind].append(time.process_time() - c0)
        faults[kind].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        return t

    def meas(s=0):
        return measure_lnp(model, nn.MSELoss(), (x, x), seed=s)

    steps, lnp = [], []
    step()  # warm-up
    model.load_state_dict(state)
    first = timed(meas)
    first_cpu, first_faults = cpu["lnp"].pop(), faults["lnp"].pop()
    for r in range(reps):  # step, measurement, step, measurement ...: both see the same machine state
        steps.append(timed(step, "step"))
        model.load_state_dict(state)
        lnp.append(timed(lambda r=r: meas(r + 1)))
    ns = float(meas(99).network_scale)
    return {"batch": batch, "first_s": first, "step_s": steps, "lnp_s": lnp, "load0": load0,
            "load1": os.getloadavg(), "N_seed99": ns,
            "first_cpu_s": first_cpu, "first_faults": first_faults, "cpu": cpu, "faults": faults}


def drive(trees: dict, rounds: int, batches, reps: int, out: str) -> None:
    names = list(trees)
    rows = []
    with open(out, "a") as fh:
        for r in range(rounds):
            for b in batches:
                order = names if (r % 2 == 0) else names[::-1]
                for name in order:
                    env = dict(os.environ, PYTHONPATH=trees[name], OMP_NUM_THREADS="1")
                    p = subprocess.run([sys.executable, __file__, "work", "--batch", str(b), "--reps", str(reps)],
                                       env=env, capture_output=True, text=True)
                    if p.returncode:
                        print(p.stderr, file=sys.stderr)
                        raise SystemExit(p.returncode)
                    row = json.loads(p.stdout.strip().splitlines()[-1])
                    row.update(tree=name, round=r)
                    rows.append(row)
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    st = statistics.median(row["step_s"])
                    print(f"round {r} batch {b} {name}: step med {st*1e3:.1f} ms, lnp med "
                          f"{statistics.median(row['lnp_s'])*1e3:.1f} min {min(row['lnp_s'])*1e3:.1f} ms "
                          f"first {row['first_s']*1e3:.0f} ms; ratio med {statistics.median(row['lnp_s'])/st:.2f}; "
                          f"load {row['load0'][0]:.2f}->{row['load1'][0]:.2f}", flush=True)
    summarize(out)


def summarize(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    keys = sorted({(r["batch"], r["tree"]) for r in rows})
    print(f"\n{'batch':>5} {'tree':>4} {'n':>3} {'lnp med ms':>10} {'lnp min ms':>10} {'step med ms':>11} "
          f"{'ratio med':>9} {'ratio min':>9} {'first med ms':>12} {'load range':>12}")
    for b, t in keys:
        rs = [r for r in rows if r["batch"] == b and r["tree"] == t]
        # per process: median of its calls; across processes: median and min of those
        lmed = [statistics.median(r["lnp_s"]) for r in rs]
        lmin = [min(r["lnp_s"]) for r in rs]
        smed = [statistics.median(r["step_s"]) for r in rs]
        ratio = [a / s for a, s in zip(lmed, smed)]
        ratio_min = [min(r["lnp_s"]) / min(r["step_s"]) for r in rs]
        loads = [r["load0"][0] for r in rs] + [r["load1"][0] for r in rs]
        print(f"{b:5d} {t:>4} {len(rs):3d} {statistics.median(lmed)*1e3:10.1f} {min(lmin)*1e3:10.1f} "
              f"{statistics.median(smed)*1e3:11.1f} {statistics.median(ratio):9.2f} {min(ratio_min):9.2f} "
              f"{statistics.median([r['first_s'] for r in rs])*1e3:12.0f} {min(loads):5.2f}-{max(loads):5.2f}")
        if "cpu" in rs[0]:
            lc = [statistics.median(r["cpu"]["lnp"]) for r in rs]
            sc = [statistics.median(r["cpu"]["step"]) for r in rs]
            lf = [statistics.median(r["faults"]["lnp"]) for r in rs]
            sf = [statistics.median(r["faults"]["step"]) for r in rs]
            print(f"{'':10} CPU time: lnp med {statistics.median(lc)*1e3:.1f} min {min(lc)*1e3:.1f} ms, step med "
                  f"{statistics.median(sc)*1e3:.1f} ms, "
                  f"ratio med {statistics.median([a / b for a, b in zip(lc, sc)]):.2f}; "
                  f"minor page faults per call: lnp {statistics.median(lf):.0f}, step {statistics.median(sf):.0f}, "
                  f"first call {statistics.median([r['first_faults'] for r in rs]):.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["work", "drive", "summary"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--trees", nargs="+", default=[])
    ap.add_argument("--out", default="ab_lnp.jsonl")
    a = ap.parse_args()
    if a.mode == "work":
        print(json.dumps(work(a.batch, a.reps)))
    elif a.mode == "drive":
        drive(dict(t.split("=", 1) for t in a.trees), a.rounds, a.batches, a.reps, a.out)
    else:
        summarize(a.out)
