"""The torch adapter's command-line commands, registered into ``bandscope`` by entry point.

``pyproject.toml`` declares ``[project.entry-points."bandscope.commands"] torch =
"bandscope.torch.cli:register"``; the core command line (:mod:`bandscope.cli`) calls
:func:`register` and never imports this package itself. Importing this module also registers
the torch checkpoint readers (``.pt``, ``.pth``, ``.bin``; ``torch.load(..., weights_only=True)``)
with :func:`bandscope.cli.record.register_checkpoint_loader`, so ``bandscope param-time`` reads
them.

Commands: ``train`` (record a run of the paper's autoencoder) and the ``--arch``, ``--size``,
``--vit-patch`` options of ``param-time`` (restrict parameter time to a model's trainable
parameters).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

from ..io.checkpoints import register_checkpoint_loader
from .checkpoints import CHECKPOINT_EXTENSIONS, load_checkpoint

__all__ = ["register"]


def _load_numpy_ready(path: str | os.PathLike[str]) -> dict[str, Any]:
    return load_checkpoint(path)


for _suffix in CHECKPOINT_EXTENSIONS:
    if _suffix != ".safetensors":  # the core reads safetensors itself (bfloat16 included)
        register_checkpoint_loader(_suffix, _load_numpy_ready)


def _cmd_train(args: argparse.Namespace) -> int:
    from .reference.train import TrainConfig, train

    cfg = TrainConfig(
        arch=args.arch, seed=args.seed, image_size=args.size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, data=args.data, n_train=args.n_train,
        n_test=args.n_test, data_seed=args.data_seed, schedule=args.schedule,
        n_points=args.n_points, panel_size=args.panel_size, vit_patch=args.vit_patch,
        latent_dim=args.latent_dim, warmup_steps=args.warmup_steps, grad_clip=args.grad_clip,
        threads=args.threads, save_weights=args.save_weights, save_recon=args.save_recon,
        device=args.device, precision=args.precision,
    )
    command = "bandscope " + " ".join(shlex.quote(a) for a in (args._argv or []))
    ds = train(cfg, args.out, progress=not args.no_progress, max_steps=args.max_steps,
               resume=not args.no_resume, command=command)
    print(f"recorded {ds.sizes['checkpoint']} checkpoints to {args.out}/run.nc "
          f"(final panel mse {float(ds['mse'][-1]):.6g}, param_time {float(ds['param_time'][-1]):.4g}, "
          f"arc_length {float(ds['arc_length'][-1]):.4g})")
    return 0


def _param_time_with_arch(core_func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if args.arch:
            from .reference.models import build_model

            model = build_model(args.arch, args.size, **({"patch": args.vit_patch} if args.arch == "vit" else {}))
            args.trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        return core_func(args)

    return run


def register(subparsers: Any) -> None:
    """Add ``train`` to the ``bandscope`` CLI and ``--arch`` to its ``param-time``."""
    argv = sys.argv[1:]

    p = subparsers.add_parser("train", help="train the paper's CNN/ViT autoencoder and record the run",
                              description="Train an A.2 autoencoder (plain Adam lr 3e-4, batch 128, "
                              "float32) and record band losses and parameter time at the A.5 checkpoint "
                              "schedule into OUT/run.nc (readable by `bandscope analyze` at any moment). "
                              "Re-running the same command resumes an interrupted run. OUT/run.nc is owned "
                              "by the running job (lock OUT/run.nc.lock): a second job on the same OUT is "
                              "refused, naming the first one's pid and host.")
    p.add_argument("--arch", choices=["cnn", "vit"], default="cnn")
    p.add_argument("--seed", type=int, default=45)
    p.add_argument("--size", type=int, default=64, help="image side (32 or 64; any multiple of 16)")
    p.add_argument("--epochs", type=float, default=50, help="epochs; the A.5 schedule is scaled by epochs/50")
    p.add_argument("--out", required=True, help="output directory (run.nc, config.json, state/)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--data", default="skimage",
                   help="'skimage' (embedded natural-image patches), 'lfw' (skimage's LFW faces) or a "
                   "folder of images (A.1: centre crop 128, bilinear resize; last --n-test images are the test split)")
    p.add_argument("--n-train", type=int, default=8192)
    p.add_argument("--n-test", type=int, default=2048)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--schedule", choices=["paper", "geometric"], default="paper")
    p.add_argument("--n-points", type=int, default=53, help="points of the geometric schedule")
    p.add_argument("--panel-size", type=int, default=256)
    p.add_argument("--vit-patch", type=int, default=4)
    p.add_argument("--latent-dim", type=int, default=128, help="latent width (A.2: 128)")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="linear learning-rate warm-up over this many steps (default 0: plain Adam, as in the paper)")
    p.add_argument("--grad-clip", type=float, default=None, metavar="MAX_NORM",
                   help="clip the gradient's global L2 norm to MAX_NORM before each Adam step "
                   "(default: no clipping, as in the paper)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--save-weights", action="store_true", help="safetensors state dict at every checkpoint")
    p.add_argument("--save-recon", action="store_true", help="float16 panel reconstructions (.npz) at every checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if OUT has a state")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda|cuda:N|mps|auto",
                   help="where to train (default cpu; auto = cuda, else mps, else cpu)")
    p.add_argument("--precision", choices=["32", "bf16"], default="32",
                   help="32 = float32 (the paper); bf16 = bfloat16 autocast, weights and Adam float32")
    p.set_defaults(func=_cmd_train, _argv=argv)

    pt = subparsers.choices.get("param-time")
    if pt is not None:
        pt.add_argument("--arch", choices=["cnn", "vit"], help="restrict to this model's trainable parameters "
                        "(torch extra)")
        pt.add_argument("--size", type=int, default=64, help="image side of the --arch model")
        pt.add_argument("--vit-patch", type=int, default=4, help="patch size of the --arch vit model")
        pt.set_defaults(func=_param_time_with_arch(pt.get_default("func")))
