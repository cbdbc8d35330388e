"""Benchmark: cost and noise of one LNP measurement on the paper's CNN autoencoder (32x32).

Run: ``.venv/bin/python benchmarks/bench_lnp.py [--quick]``. Prints, per batch size and
estimator, the time of one ``measure_lnp`` call (self LNP on one batch: loss scale, gradient
norm and network scale) as a multiple of one plain Adam training step measured in the same run,
the relative standard deviation of the network scale over repeated probe draws, and the
variance x time product relative to the perspic-style Opacus baseline (per-sample gradient
norms by Opacus, one Rademacher vector shared by all samples of the batch, one forward and
backward per probe; only the network-scale part is timed for the baseline, which favours it).
Timings are minima over repetitions on one torch thread of a shared CPU and are noisy.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn


def _model(size=32, seed=0):
    try:
        from bandscope.torch.models import build_model

        return build_model("cnn", size, seed=seed)
    except ImportError:  # local copy of key search A.2 CNN
        torch.manual_seed(seed)
        ch = (3, 32, 64, 128, 256)
        side = size // 16
        enc = []
        for a, b in zip(ch[:-1], ch[1:]):
            enc += [nn.Conv2d(a, b, 3, 2, 1), nn.ReLU()]
        dec = []
        for i, (a, b) in enumerate(zip(ch[::-1][:-1], ch[::-1][1:])):
            dec += [nn.ConvTranspose2d(a, b, 3, 2, 1, 1), nn.Sigmoid() if i == 3 else nn.ReLU()]
        return nn.Sequential(*enc, nn.Flatten(), nn.Linear(256 * side * side, 128),
                             nn.Linear(128, 256 * side * side), nn.Unflatten(1, (256, side, side)), *dec)


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


def main(quick: bool = False) -> dict:
    from bandscope.torch import measure_lnp

    torch.set_num_threads(1)  # the machine is shared; one thread gives steadier ratios
    reps = 3 if quick else 5
    n_draws = 6 if quick else 12
    results = {}
    for batch in (32, 128):
        model = _model()
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        step = _adam_step_time(model, x, reps)
        results[(batch, "adam_step_s")] = step
        print(f"\nbatch {batch}: plain Adam step {step * 1e3:.0f} ms (baseline = 1.00 step)")
        rows = []
        configs = [("hutchinson", 1, True), ("hutchinson", 2, True), ("hutchinson", 1, False),
                   ("hutchinson", 4, False), ("batch-hutchinson", 1, True), ("batch-hutchinson", 1, False),
                   ("batch-hutchinson", 8, False)]
        for est, k, eol in configs:
            def fn(s=0, est=est, k=k, eol=eol):
                return measure_lnp(model, nn.MSELoss(), (x, x), network_scale=est, n_probes=k, seed=s,
                                   exact_output_layer=eol)
            t = _time(fn, reps)
            vals = np.array([float(fn(s).network_scale) for s in range(n_draws)])
            rel = vals.std(ddof=1) / vals.mean()
            default = (est, k, eol) == ("hutchinson", 2, True)
            rows.append((f"{est} x{k}" + (" (exact output layer)" if eol else "") + (" DEFAULT" if default else ""),
                         t, rel))
        # per-sample Hutchinson with torch.func.vmap (the 484 ms reference)
        def fn(s=0):
            return measure_lnp(model, nn.MSELoss(), (x, x), network_scale="hutchinson", backend="vmap", seed=s)
        if batch == 32 or not quick:
            t = _time(fn, 1)
            vals = np.array([float(fn(s).network_scale) for s in range(max(3, n_draws // 2))])
            rows.append(("hutchinson x1 (vmap backend)", t, vals.std(ddof=1) / vals.mean()))
        try:
            from opacus import GradSampleModule

            gsm = GradSampleModule(_model(), loss_reduction="sum")
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


def transformers_bench(quick: bool = False) -> dict:
    """Tiny GPT-style LM (4 layers, width 128, 128 tokens, batch 32) and bandscope's ViT (32x32, batch 32).

    Time of one default measurement (per-sample Hutchinson x2, hooks backend) and of the vmap
    backend, in Adam steps of the same run; relative std of the network scale over probe draws.
    """
    import torch.nn.functional as F

    from bandscope.torch import measure_lnp
    from bandscope.torch.lm import LMConfig, TinyGPT
    from bandscope.torch.models import build_model

    torch.set_num_threads(1)
    reps, n_draws = (2, 4) if quick else (3, 8)
    g = torch.Generator().manual_seed(0)
    cfg = LMConfig(vocab_size=256, context=128, d_model=128, n_layers=4, n_heads=4, d_ff=512)

    def lm_loss(out, y):
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    torch.manual_seed(0)
    cases = {
        "gpt (4x128, T=128, batch 32)": (TinyGPT(cfg), lm_loss,
                                         torch.randint(0, 256, (32, 128), generator=g),
                                         torch.randint(0, 256, (32, 128), generator=g)),
        "vit (32x32, batch 32)": (build_model("vit", 32), F.mse_loss,
                                  torch.rand(32, 3, 32, 32, generator=g), None),
    }
    results = {}
    for name, (model, loss, x, y) in cases.items():
        y = x if y is None else y
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        state = {k: v.clone() for k, v in model.state_dict().items()}

        def step():
            opt.zero_grad(set_to_none=True)
            loss(model(x), y).backward()
            opt.step()

        st = _time(step, reps)
        model.load_state_dict(state)
        opt.zero_grad(set_to_none=True)
        print(f"\n{name}: Adam step {st * 1e3:.0f} ms")
        for label, kw, draws in (("default (hutchinson x2, hooks)", {}, n_draws),
                                 ("hutchinson x2, vmap backend", {"backend": "vmap"}, 2)):
            def fn(s=0, kw=kw):
                return measure_lnp(model, loss, (x, y), seed=s, **kw)
            t = _time(fn, 1 if kw else reps)
            vals = np.array([float(fn(s).network_scale) for s in range(draws)])
            rel = vals.std(ddof=1) / vals.mean()
            print(f"  {label:34s} {t / st:6.2f} steps {t * 1e3:8.0f} ms  rel.std N {rel * 100:5.1f}% "
                  f"({draws} draws)")
            results[(name, label)] = {"steps": t / st, "time_s": t, "rel_std": rel}
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["cnn", "transformers"], default=None)
    args = ap.parse_args()
    if args.only != "transformers":
        main(args.quick)
    if args.only != "cnn":
        transformers_bench(args.quick)
