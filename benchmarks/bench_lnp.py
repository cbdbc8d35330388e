"""Benchmark: cost and noise of one LNP measurement, each case timed in a fresh process.

Run: ``python benchmarks/bench_lnp.py [--quick] [--cases cnn32 cnn128 gpt vit | --only cnn|transformers]
[--draws N] [--estimators]``.

``--draws N`` (``main(draws=N)``) sets the rounds of every row (default: 12 for the hooks rows, 3
for the vmap rows; with ``--quick`` 5 and 2); ``--cases cnn32 --draws 1`` is a smoke run, its
relative std of 𝒩 from two draws.

Default run (``main``): for each case below, one fresh Python process per backend (what a user's
first session sees: the allocator has not been warmed by other measurements). In it, on one
torch thread:

1. one Adam training step (forward, backward, ``opt.step()``) as warm-up, then the first
   ``measure_lnp`` call, reported on its own (it also pays the once-per-model layout dry run and
   per-sample verification of the hooks path);
2. ``draws`` rounds of [one Adam step, timed; parameters restored] then [one ``measure_lnp`` call
   with probe seed s, timed]: the step and the measurement alternate, so both see the same
   machine state. Reported: median and min of the measurement time over rounds, as a multiple of
   the median Adam step of the same process (and the same ratio in CPU time, less sensitive to
   other jobs on a shared machine);
3. the relative standard deviation of 𝒩 over the ``draws + 1`` probe draws (same model, same
   batch, probe seed varied).

Cases: the paper's CNN autoencoder (``build_model("cnn", 32)``, batch 32 and 128, MSE), a tiny
GPT-style LM (``bandscope.torch.reference.lm.TinyGPT``: 4 layers, width 128, 4 heads, MLP 512, vocabulary
256, 128 tokens, batch 32, ``F.cross_entropy`` over tokens) and bandscope's ViT autoencoder
(``build_model("vit", 32)``, batch 32, ``F.mse_loss``), all at initialisation on random inputs.
Rows: the default estimator (per-sample Hutchinson, 2 probes, hooks backend, exact output layer)
and the ``backend="vmap"`` baseline (torch.func; same estimator otherwise).

Targets (the default row): median ≤ 3 training steps per measurement and ≤ 5 % relative std of
𝒩; each row says PASS or FAIL. The ``uptime`` load average at the start and end of every process is
printed beside its figures: 2 cores shared with other jobs make wall times noisy, the CPU-time
ratio much less so.

``--estimators`` adds the older in-process comparison of every estimator on the CNN against the
perspic-style Opacus baseline (minimum of repeated timings in one process, after the others).
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
import torch
from torch import nn

#: targets of the default estimator (per row): training steps per measurement, relative std of 𝒩
TARGET_STEPS = 3.0
TARGET_REL_STD = 0.05

CASES = {
    "cnn32": "CNN autoencoder 32x32, batch 32",
    "cnn128": "CNN autoencoder 32x32, batch 128",
    "gpt": "TinyGPT 4x128, T=128, batch 32",
    "vit": "ViT autoencoder 32x32, batch 32",
}


def _case(name: str):
    """(model, loss_fn, inputs, targets) of one benchmark case, deterministic."""
    import torch.nn.functional as F

    from bandscope.torch.reference.models import build_model

    g = torch.Generator().manual_seed(0)
    if name in ("cnn32", "cnn128"):
        b = 32 if name == "cnn32" else 128
        x = torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(b))
        return build_model("cnn", 32, seed=0), nn.MSELoss(), x, x
    if name == "gpt":
        from bandscope.torch.reference.lm import LMConfig, TinyGPT

        cfg = LMConfig(vocab_size=256, context=128, d_model=128, n_layers=4, n_heads=4, d_ff=512)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = TinyGPT(cfg)

        def lm_loss(out, y):
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

        return (model, lm_loss, torch.randint(0, 256, (32, 128), generator=g),
                torch.randint(0, 256, (32, 128), generator=g))
    if name == "vit":
        x = torch.rand(32, 3, 32, 32, generator=g)
        return build_model("vit", 32, seed=0), F.mse_loss, x, x
    raise ValueError(f"unknown case {name!r}; choose from {sorted(CASES)}")


def worker(case: str, backend: str, draws: int) -> dict:
    """Run in a fresh process: time Adam steps and measurements alternately (module docstring)."""
    from bandscope.torch import measure_lnp

    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    model, loss_fn, x, y = _case(case)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def restore():
        model.load_state_dict(state)
        opt.zero_grad(set_to_none=True)

    def meas(seed):
        return float(measure_lnp(model, loss_fn, (x, y), seed=seed, backend=backend).network_scale)

    def timed(fn):
        c0, t0 = time.process_time(), time.perf_counter()
        val = fn()
        return time.perf_counter() - t0, time.process_time() - c0, val

    step()
    restore()
    first, first_cpu, n0 = timed(lambda: meas(0))
    wall, cpu, swall, scpu, ns = [], [], [], [], [n0]
    for s in range(1, draws + 1):
        t, c, _ = timed(step)
        restore()
        swall.append(t)
        scpu.append(c)
        t, c, n = timed(lambda s=s: meas(s))
        wall.append(t)
        cpu.append(c)
        ns.append(n)
    return {"case": case, "backend": backend, "first_s": first, "first_cpu_s": first_cpu, "lnp_s": wall,
            "lnp_cpu_s": cpu, "step_s": swall, "step_cpu_s": scpu, "network_scale": ns,
            "load": [load0, os.getloadavg()[0]], "torch": torch.__version__}


def _fresh(case: str, backend: str, draws: int) -> dict:
    """``worker`` in a new Python process (same interpreter and sys.path); its JSON result."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", case, "--backend", backend,
           "--draws", str(draws)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"benchmark worker {case}/{backend} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def summarize(r: dict) -> dict:
    """Ratios against the Adam step of the same process, relative std of 𝒩, pass/fail."""
    step = statistics.median(r["step_s"])
    step_cpu = statistics.median(r["step_cpu_s"])
    ns = np.asarray(r["network_scale"])
    out = {
        "step_ms": step * 1e3,
        "ms_median": statistics.median(r["lnp_s"]) * 1e3,
        "steps_median": statistics.median(r["lnp_s"]) / step,
        "steps_min": min(r["lnp_s"]) / step,
        "steps_cpu_median": statistics.median(r["lnp_cpu_s"]) / step_cpu,
        "first_steps": r["first_s"] / step,
        "rel_std": float(ns.std(ddof=1) / ns.mean()),
        "draws": len(ns),
        "load": r["load"],
    }
    if r["backend"] in ("auto", "hooks"):
        out["pass"] = out["steps_median"] <= TARGET_STEPS and out["rel_std"] <= TARGET_REL_STD
    return out


def main(quick: bool = False, cases=None, draws: int | None = None) -> dict:
    """The default-estimator table: every case in fresh processes, with targets and pass/fail;
    ``draws`` rounds per row (default: by backend and ``quick``, see the module docstring). Returns
    :func:`summarize`'s row per ``"CASE/BACKEND"`` (e.g. ``"cnn32/hooks"``)."""
    cases = list(cases or CASES)
    if draws is None:
        draws = {"hooks": 5 if quick else 12, "vmap": 2 if quick else 3}
    else:
        draws = {"hooks": int(draws), "vmap": int(draws)}
    print(f"LNP default estimator (hutchinson x2, hooks, exact output layer) vs backend='vmap'; one fresh "
          f"process per row, one torch thread. Targets: median <= {TARGET_STEPS:g} Adam steps, rel. std "
          f"of N <= {TARGET_REL_STD:.0%}.\n")
    head = (f"{'case':34s} {'backend':7s} {'step ms':>7s} {'steps med':>9s} {'min':>5s} {'cpu med':>7s} "
            f"{'first':>6s} {'rel.std N':>9s} {'draws':>5s} {'load':>10s}  target")
    print(head)
    results = {}
    for case in cases:
        for backend in ("hooks", "vmap"):
            s = summarize(_fresh(case, backend, draws[backend]))
            results[f"{case}/{backend}"] = s  # string keys: benchmarks/run.py --json writes them
            verdict = ("PASS" if s["pass"] else "FAIL") if "pass" in s else "(baseline)"
            print(f"{CASES[case]:34s} {backend:7s} {s['step_ms']:7.0f} {s['steps_median']:9.2f} "
                  f"{s['steps_min']:5.2f} {s['steps_cpu_median']:7.2f} {s['first_steps']:6.2f} "
                  f"{s['rel_std'] * 100:8.1f}% {s['draws']:5d} {s['load'][0]:4.1f}->{s['load'][1]:4.1f}  {verdict}",
                  flush=True)
    print("\nsteps med / min: wall time of one measurement over the median Adam step of the same process "
          "(median / min over rounds); cpu med: the same in CPU time; first: the first call (layout dry "
          "run and verification included); load: 1-minute load average at the start and end of the process.")
    return results


# --------------------------------------------------------------------------------------------
# every estimator on the CNN, in one process, against the Opacus baseline
# --------------------------------------------------------------------------------------------
def _time(fn, reps):
    """Minimum over repetitions (after a warm-up): the least disturbed run on a shared CPU."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def _adam_step_time(model, x, reps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), x).backward()
        opt.step()

    t = _time(step, reps)
    model.load_state_dict(state)
    opt.zero_grad(set_to_none=True)
    return t


def _opacus_network_scale(gsm, x, n_probes, gen):
    """perspic-style: one Rademacher vector shared by the batch, Opacus per-sample grads."""
    total = 0.0
    for _ in range(n_probes):
        out = gsm(x)
        v = (torch.randint(0, 2, out.shape[1:], generator=gen) * 2 - 1).to(out.dtype)
        (out * v).sum().backward()
        norms = sum(p.grad_sample.flatten(1).pow(2).sum(1) for p in gsm.parameters() if p.requires_grad)
        total += float(norms.sum())
        gsm.zero_grad(set_to_none=True)
        for p in gsm.parameters():
            p.grad_sample = None
    return total / n_probes


def estimator_table(quick: bool = False) -> dict:
    """Every estimator on the CNN autoencoder (batch 32 and 128) in one process, vs Opacus.

    Time of one ``measure_lnp`` call in Adam steps of the same run (minimum of repetitions), the
    relative std of 𝒩 over probe draws and the variance x time product relative to the
    perspic-style Opacus baseline (only its network-scale part is timed, which favours it).
    """
    from bandscope.torch import measure_lnp
    from bandscope.torch.reference.models import build_model

    torch.set_num_threads(1)
    reps = 3 if quick else 5
    n_draws = 6 if quick else 12
    results = {}
    for batch in (32, 128):
        model = build_model("cnn", 32, seed=0)
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        step = _adam_step_time(model, x, reps)
        results[(batch, "adam_step_s")] = step
        print(f"\nbatch {batch}: plain Adam step {step * 1e3:.0f} ms (baseline = 1.00 step), "
              f"load {os.getloadavg()[0]:.1f}")
        rows = []
        configs = [("hutchinson", 1, True), ("hutchinson", 2, True), ("hutchinson", 1, False),
                   ("hutchinson", 4, False), ("batch-hutchinson", 1, True), ("batch-hutchinson", 1, False),
                   ("batch-hutchinson", 8, False)]
        for est, k, eol in configs:
            def fn(s=0, est=est, k=k, eol=eol):
                return measure_lnp(model, nn.MSELoss(), (x, x), estimator=est, n_probes=k, seed=s,
                                   exact_output_layer=eol)
            t = _time(fn, reps)
            vals = np.array([float(fn(s).network_scale) for s in range(n_draws)])
            rel = vals.std(ddof=1) / vals.mean()
            default = (est, k, eol) == ("hutchinson", 2, True)
            rows.append((f"{est} x{k}" + (" (exact output layer)" if eol else "") + (" DEFAULT" if default else ""),
                         t, rel))

        def fn(s=0):
            return measure_lnp(model, nn.MSELoss(), (x, x), estimator="hutchinson", backend="vmap", seed=s)
        if batch == 32 or not quick:
            t = _time(fn, 1)
            vals = np.array([float(fn(s).network_scale) for s in range(max(3, n_draws // 2))])
            rows.append(("hutchinson x2 (vmap backend)", t, vals.std(ddof=1) / vals.mean()))
        try:
            from opacus import GradSampleModule

            gsm = GradSampleModule(build_model("cnn", 32, seed=0), loss_reduction="sum")
            for k in (1, 8) if batch == 32 else (1,):
                gen = torch.Generator().manual_seed(0)
                t = _time(lambda: _opacus_network_scale(gsm, x, k, gen), 1 if k > 1 else reps)
                vals = np.array([_opacus_network_scale(gsm, x, k, gen) for _ in range(n_draws if k == 1 else 3)])
                rows.append((f"opacus perspic-style x{k} (N only)", t, vals.std(ddof=1) / vals.mean()))
        except ImportError:
            print("opacus not installed: no baseline")
        base = [r for r in rows if r[0].startswith("opacus") and r[0].endswith("x1 (N only)")]
        base_cost = base[0][1] * base[0][2] ** 2 if base else None
        print(f"{'estimator':48s} {'time/step':>9s} {'ms':>8s} {'rel.std N':>9s} {'opacus var*time / ours':>22s}")
        for name, t, rel in rows:
            gain = base_cost / (t * rel**2) if base_cost else float("nan")
            print(f"{name:48s} {t / step:9.2f} {t * 1e3:8.0f} {rel * 100:8.1f}% {gain:22.1f}")
            results[(batch, name)] = {"time_s": t, "steps": t / step, "rel_std": rel, "gain_vs_opacus": gain}
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer draws (a smoke run)")
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None, help="subset of the cases")
    ap.add_argument("--only", choices=["cnn", "transformers"], default=None,
                    help="the CNN cases (cnn32 cnn128) or the transformer cases (gpt vit)")
    ap.add_argument("--estimators", action="store_true", help="also the in-process CNN estimator table")
    ap.add_argument("--worker", choices=sorted(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="hooks", choices=["auto", "hooks", "vmap"], help=argparse.SUPPRESS)
    ap.add_argument("--draws", type=int, default=None,
                    help="rounds per row (default 12 hooks / 3 vmap; --quick: 5 / 2)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.backend, 12 if args.draws is None else args.draws)))
    else:
        only = {"cnn": ["cnn32", "cnn128"], "transformers": ["gpt", "vit"]}.get(args.only)
        main(args.quick, args.cases or only, args.draws)
        if args.estimators:
            estimator_table(args.quick)
