"""Spectral-reach scaling runs: GPT-style LMs of three sizes, LNP on log-spaced windows, and the
§5.1 linear-probe comparison (spectral reach, B.2.1/B.2.2 scaled to a 2-core CPU).

    python tools/lm_scaling.py --size m --seed 0 --out reference_runs/lm-scaling/m-seed0

Phases, each resumable from ``OUT/state/`` (git-ignored; a killed run continues where it stopped,
with the same numbers up to float rounding of the CPU):
1. ``train``: AdamW (β = 0.9, 0.95, weight decay 0.01), linear warm-up over 100 steps, then a
   constant rate; batch 32 of 64-byte windows of the corpus, the data order fixed by
   ``--data-seed`` and the same for every size and seed (as in the paper). At every step of the
   log-spaced LNP windows (``bandscope.lnp.log_windows``) ``measure_lnp`` is called before the
   optimizer step with batch A = the training batch and batch B = 32 sequences drawn from a
   fixed held-out pool of 160 (B.2.1); the held-out loss on the whole pool is logged at the first
   step of every window and at the end.
2. ``probe-trained`` / ``probe-random``: the backbone (trained, or freshly initialised with the
   same seed) is frozen, a new output head is trained alone (same optimizer, data and schedule,
   ``--probe-steps`` steps) and LNP is measured on log windows.

Single pass (``--corpus DIR``, built by ``tools/lm_corpus.py``): the training split is cut into
non-overlapping windows of ``context + 1`` bytes, their order is a permutation fixed by
``--data-seed`` (the same for every size and seed), and step k trains on windows
``32k … 32k + 31`` of it, so no byte is seen twice; the run refuses to start if
``steps × 32`` windows plus the ``--eval-seqs`` unseen ones do not fit. The held-out pool (160
sequences) comes from the held-out split (whole files, see ``tools/lm_corpus.py``). With
``--eval-seqs N`` the loss on N held-out windows and on the N training-split windows that come
last in the permutation (never trained on) is logged at the first step of every window
(``heldout.csv`` columns ``heldout_eval_loss``, ``train_unseen_loss``). ``--probe-steps 0``
skips the probe phases.

Outputs in OUT: ``config.json``, ``command.txt``, ``lnp.nc`` (train phase; ``lnp_*`` variables
on dim ``lnp_step``), ``probe_trained.nc``, ``probe_random.nc``, ``heldout.csv``,
``train_loss.csv`` and ``train.log``.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bandscope.lnp import log_windows
from bandscope.torch import measure_lnp
from bandscope.torch.reference.lm import LM_SIZES, TinyGPT

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "reference_runs" / "lm-scaling" / "corpus" / "python-3.11.7-stdlib.txt.gz"
CORPUS_SHA256 = "e870eaa7c6b022d4a28d4e6d540cf002b77a0e1cfc9051c046f231f650fe9508"
LR = {"xs": 4e-3, "s": 3e-3, "m": 2e-3, "l": 1.5e-3}  # larger models take smaller rates, as in B.2
BATCH, POOL, HELDOUT_FRACTION, WARMUP = 32, 160, 0.05, 100


def load_corpus(path: Path = CORPUS) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        raise SystemExit(f"{path}: sha256 {digest} is not the corpus these runs were recorded on")
    return np.frombuffer(data, dtype=np.uint8)


def batch_at(tokens: np.ndarray, step: int, context: int, data_seed: int):
    """Batch of training step ``step``: the same for every run (data order fixed by ``data_seed``)."""
    rng = np.random.default_rng([data_seed, step])
    starts = rng.integers(0, tokens.size - context - 1, BATCH)
    win = np.stack([tokens[s : s + context + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(win[:, :-1]), torch.from_numpy(win[:, 1:])


class SinglePass:
    """Non-overlapping ``context + 1``-byte windows of ``tokens`` in a fixed random order: batch k is
    windows ``BATCH·k … BATCH·k + BATCH − 1`` of the order, the last ``n_eval`` never trained on."""

    def __init__(self, tokens: np.ndarray, context: int, data_seed: int, steps: int, n_eval: int):
        self.tokens, self.span = tokens, context + 1
        n_win = tokens.size // self.span
        if steps * BATCH + n_eval > n_win:
            raise SystemExit(f"single pass: {steps} steps x {BATCH} + {n_eval} evaluation windows need "
                             f"{steps * BATCH + n_eval} windows of {self.span} bytes, the training split has {n_win}; "
                             "use fewer --steps or a larger corpus")
        self.order = np.random.default_rng([data_seed, 1]).permutation(n_win)
        self.n_eval = n_eval

    def _windows(self, idx: np.ndarray):
        win = np.stack([self.tokens[i * self.span: (i + 1) * self.span] for i in idx]).astype(np.int64)
        return torch.from_numpy(win[:, :-1]), torch.from_numpy(win[:, 1:])

    def batch(self, step: int):
        return self._windows(self.order[step * BATCH: (step + 1) * BATCH])

    def unseen(self):
        return self._windows(self.order[self.order.size - self.n_eval:])


def load_corpus_dir(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """``train.bin`` and ``heldout.bin`` of a ``tools/lm_corpus.py`` folder, checked against its summary."""
    summary = json.loads((path / "summary.json").read_text())
    out = []
    for split in ("train", "heldout"):
        data = (path / f"{split}.bin").read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != summary["sha256"][f"{split}.bin"]:
            raise SystemExit(f"{path / (split + '.bin')}: sha256 {digest} differs from summary.json; rebuild the corpus")
        out.append(np.frombuffer(data, dtype=np.uint8))
    return out[0], out[1], summary


def mean_loss(model, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> float:
    """Mean next-byte loss over all sequences of ``x`` (evaluated in chunks, no gradient)."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            total += float(lm_loss(model(x[i:i + chunk]), y[i:i + chunk])) * x[i:i + chunk].shape[0]
    return total / x.shape[0]


def heldout_pool(tokens: np.ndarray, context: int, n: int = POOL):
    """``n`` (default POOL) held-out sequences, evenly spaced over the held-out tail."""
    starts = np.linspace(0, tokens.size - context - 1, n).astype(np.int64)
    win = np.stack([tokens[s : s + context + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(win[:, :-1]), torch.from_numpy(win[:, 1:])


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-byte cross-entropy over every token (nats per byte)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def lr_at(step: int, lr: float) -> float:
    return lr * min(1.0, (step + 1) / WARMUP)


def run_phase(phase, model, params, tokens, pool, args, total, windows, out: Path, log, data=None, evals=None):
    """Train ``params`` of ``model`` for ``total`` steps with LNP on ``windows``; resumable."""
    state_file = out / "state" / f"{phase}.pt"
    opt = torch.optim.AdamW(params, lr=LR[args.size], betas=(0.9, 0.95), weight_decay=0.01)
    sched = log_windows(windows[0], windows[1], total)
    lnp_steps = set(sched.lnp_step.values.tolist())
    eval_steps = set(sched.window_start.values.tolist()) | {total}
    rows, heldout, losses, start = [], [], [], 0
    if state_file.exists():
        st = torch.load(state_file, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        rows, heldout, losses, start = st["rows"], st["heldout"], st["losses"], st["step"]
        log(f"{phase}: resumed at step {start}")
    pool_x, pool_y = pool
    pick = np.random.default_rng([args.seed, 7]).permutation(POOL)
    t0 = time.time()
    for step in range(start, total + 1):
        if step in eval_steps and not any(h["step"] == step for h in heldout):
            model.eval()
            with torch.no_grad():
                hl = float(lm_loss(model(pool_x), pool_y))
            row = {"phase": phase, "step": step, "heldout_loss": hl}
            if evals is not None:
                row["heldout_eval_loss"] = mean_loss(model, *evals["heldout"])
                row["train_unseen_loss"] = mean_loss(model, *evals["train_unseen"])
            model.train()
            heldout.append(row)
            extra = "".join(f", {k} {v:.4f}" for k, v in row.items() if k.endswith("_loss") and k != "heldout_loss")
            log(f"{phase} step {step}: held-out loss {hl:.4f}{extra} ({time.time() - t0:.0f} s)")
        if step == total:
            break
        x, y = data.batch(step) if data is not None else batch_at(tokens, step, model.cfg.context, args.data_seed)
        if step in lnp_steps:
            b = np.roll(pick, -step % POOL)[:BATCH]
            ds = measure_lnp(model, lm_loss, (x, y), (pool_x[b], pool_y[b]), estimator="hutchinson",
                             n_probes=2, n_units="targets", n_units_b="targets", seed=args.seed * 1_000_003 + step)
            scalars = {k: float(v) for k, v in ds.data_vars.items() if v.ndim == 0 and v.dtype.kind == "f"}
            rows.append({"lnp_step": step, **scalars})
        for g in opt.param_groups:
            g["lr"] = lr_at(step, LR[args.size])
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if (step + 1) % args.save_every == 0 or step + 1 == total:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = state_file.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rows": rows,
                        "heldout": heldout, "losses": losses, "step": step + 1}, tmp)
            tmp.replace(state_file)
    lnp = pd.DataFrame(rows).set_index("lnp_step").to_xarray()
    lnp = lnp.rename({k: f"lnp_{k}" for k in lnp.data_vars})
    lnp = lnp.assign_coords(lnp_window=("lnp_step", sched.lnp_window.sel(lnp_step=lnp.lnp_step).values))
    lnp.attrs.update(phase=phase, size=args.size, seed=args.seed, total_steps=total,
                     n_windows=windows[0], steps_per_window=windows[1],
                     note="batch A = training batch, batch B = 32 held-out sequences; hutchinson, 2 probes")
    return lnp, heldout, losses


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(LM_SIZES), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--probe-steps", type=int, default=600)
    p.add_argument("--windows", type=int, default=16, help="LNP windows (train phase)")
    p.add_argument("--window-steps", type=int, default=4, help="steps per LNP window")
    p.add_argument("--probe-windows", type=int, default=12)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--corpus", help="single pass over a tools/lm_corpus.py folder (default: the stdlib corpus, "
                                    "random windows)")
    p.add_argument("--eval-seqs", type=int, default=0,
                   help="with --corpus: held-out and unseen training windows evaluated at every window start")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = (out / "train.log").open("a")

    def log(msg):
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    (out / "command.txt").write_text("python tools/lm_scaling.py " + shlex.join(sys.argv[1:] if argv is None else argv)
                                     + "\n")
    cfg = LM_SIZES[args.size]
    data = evals = None
    if args.corpus:
        train_tokens, held_tokens, corpus_summary = load_corpus_dir(Path(args.corpus))
        n_held = held_tokens.size
        data = SinglePass(train_tokens, cfg.context, args.data_seed, args.steps, args.eval_seqs)
        if args.eval_seqs:
            evals = {"heldout": heldout_pool(held_tokens[held_tokens.size // 2:], cfg.context, args.eval_seqs),
                     "train_unseen": data.unseen()}
        corpus_info = {"corpus": args.corpus, "corpus_sha256": corpus_summary["sha256"], "single_pass": True,
                       "eval_seqs": args.eval_seqs}
    else:
        tokens = load_corpus()
        n_held = int(tokens.size * HELDOUT_FRACTION)
        train_tokens, held_tokens = tokens[:-n_held], tokens[-n_held:]
        corpus_info = {"corpus": CORPUS.name, "corpus_sha256": CORPUS_SHA256}
    # the pool for batch B: from the first half of the held-out split when evaluation windows take the second
    pool = heldout_pool(held_tokens[: held_tokens.size // 2] if evals else held_tokens, cfg.context)
    torch.manual_seed(args.seed)
    model = TinyGPT(cfg)
    n_params = sum(q.numel() for q in model.parameters())
    (out / "config.json").write_text(json.dumps({
        "model": dataclasses.asdict(cfg), "n_params": n_params, "size": args.size, "seed": args.seed,
        "lr": LR[args.size], "batch": BATCH, "warmup": WARMUP, "steps": args.steps, "probe_steps": args.probe_steps,
        "windows": [args.windows, args.window_steps], "probe_windows": [args.probe_windows, args.window_steps],
        "data_seed": args.data_seed, **corpus_info,
        "train_bytes": int(train_tokens.size), "heldout_bytes": int(n_held), "heldout_pool": POOL,
        "epochs": args.steps * BATCH * (cfg.context + (1 if data else 0)) / train_tokens.size,
    }, indent=1))
    log(f"size {args.size} ({n_params} parameters), seed {args.seed}")
    heldout_all = []
    if not (out / "lnp.nc").exists():
        lnp, heldout, losses = run_phase("train", model, list(model.parameters()), train_tokens, pool, args,
                                         args.steps, (args.windows, args.window_steps), out, log, data, evals)
        lnp.to_netcdf(out / "lnp.nc")
        pd.DataFrame({"step": np.arange(len(losses)), "train_loss": losses}).to_csv(out / "train_loss.csv",
                                                                                  index=False)
        pd.DataFrame(heldout).to_csv(out / "heldout.csv", index=False)
        torch.save(model.state_dict(), out / "state" / "final.pt")
    heldout_all.append(pd.read_csv(out / "heldout.csv"))
    trained = torch.load(out / "state" / "final.pt", weights_only=True)
    for phase in ("probe-trained", "probe-random") if args.probe_steps > 0 else ():
        target = out / f"{phase.replace('-', '_')}.nc"
        if target.exists():
            continue
        torch.manual_seed(args.seed)
        backbone = TinyGPT(cfg)  # random backbone: the same initialisation as the trained run
        if phase == "probe-trained":
            backbone.load_state_dict(trained)
        gen = torch.Generator().manual_seed(args.seed + 1)
        with torch.no_grad():  # a fresh head for both backbones
            backbone.head.weight.copy_(torch.randn(backbone.head.weight.shape, generator=gen) * 0.02)
            backbone.head.bias.zero_()
        for name, q in backbone.named_parameters():
            q.requires_grad_(name.startswith("head."))
        lnp, heldout, _ = run_phase(phase, backbone, list(backbone.head.parameters()), train_tokens, pool, args,
                                    args.probe_steps, (args.probe_windows, args.window_steps), out, log, data)
        lnp.to_netcdf(target)
        pd.DataFrame(heldout).to_csv(out / f"heldout_{phase.replace('-', '_')}.csv", index=False)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
