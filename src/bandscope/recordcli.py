"""Command-line recording commands: ``bandscope train``, ``bandscope bands``, ``bandscope param-time``.

Registered into the ``bandscope`` CLI by :func:`register`. torch is imported only inside the
commands that need it: ``train``, and ``param-time`` on ``.pt``/``.pth`` files (always with
``torch.load(..., weights_only=True)``: a checkpoint from elsewhere never runs code).
``bands`` on ``.npz`` files and ``param-time`` on ``.safetensors`` files are pure numpy.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import numpy as np

__all__ = ["register", "bands_table", "param_time_table", "natural_key"]

CHECKPOINT_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin")


def natural_key(name: str) -> list:
    """Sort key that orders ``step_2`` before ``step_10`` (digit runs compare as integers).

    Examples
    --------
    >>> sorted(["c10.pt", "c2.pt", "c1.pt"], key=natural_key)
    ['c1.pt', 'c2.pt', 'c10.pt']
    """
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def _list_files(path, extensions) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions]
        if not files:
            raise ValueError(f"no files with extensions {extensions} in {path}")
        return sorted(files, key=lambda p: natural_key(p.name))
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    return [path]


def _npz_images(path, prefer: str) -> np.ndarray:
    """The image array of an ``.npz``: key ``prefer``, else its only array. (N, C, S, S)."""
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        if prefer in keys:
            arr = z[prefer]
        elif len([k for k in keys if z[k].ndim >= 3]) == 1:
            arr = next(z[k] for k in keys if z[k].ndim >= 3)
        else:
            raise ValueError(f"{path}: expected an array {prefer!r} or a single image array; found keys {keys}")
    if arr.ndim != 4:
        raise ValueError(f"{path}: images must be (N, C, S, S), got shape {arr.shape}")
    return arr


def bands_table(panel, recon):
    """Band losses of saved panel reconstructions, one row per reconstruction file.

    Parameters
    ----------
    panel : path to ``.npz``
        The panel images (N, C, S, S) in [0, 1] (key ``images`` or the only array).
    recon : path to ``.npz`` or a directory of them
        Reconstructions (key ``recon`` or the only array), e.g. the float16 archives the paper
        stores; a directory is read in natural sort order of file names.

    Returns
    -------
    pandas.DataFrame
        ``name``, ``band_1``, ``band_2``, ..., ``mse`` (panel means, key search A.6, computed with
        :func:`bandscope.bands.band_losses` in float64).
    """
    import pandas as pd

    from .bands import band_losses

    x = _npz_images(panel, "images")
    rows = []
    for f in _list_files(recon, (".npz",)):
        r = _npz_images(f, "recon")
        if r.shape != x.shape:
            raise ValueError(f"{f}: reconstructions have shape {r.shape}, the panel {x.shape}")
        bl = band_losses(x, r, dtype=np.float64).values
        row = {"name": f.name}
        row.update({f"band_{int(b)}": float(v) for b, v in zip(2 ** np.arange(bl.size), bl)})
        row["mse"] = float(np.mean((x.astype(np.float64) - r.astype(np.float64)) ** 2))
        rows.append(row)
    return pd.DataFrame(rows)


def _load_state_dict_numpy(path: Path) -> dict:
    """State dict as numpy arrays (floating tensors only, float64 kept lazily as-is)."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file

            return load_file(str(path))
        except (TypeError, ValueError):  # e.g. bfloat16, which numpy lacks: go through torch
            pass
    from .torch.checkpoints import load_checkpoint  # torch files: weights_only=True

    sd = load_checkpoint(path)
    import torch

    return {k: (v.to(torch.float64) if v.is_floating_point() else v).numpy() for k, v in sd.items()}


def param_time_table(ckpt_dir, *, trainable=None):
    """Chord parameter time over a directory of checkpoints (key search A.7).

    ``s_0 = 0``, ``s_k = s_{k-1} + ||theta_k - theta_{k-1}||_2`` over all floating tensors of
    the state dicts (or only the names in ``trainable``), in float64, files in natural sort
    order. ``.safetensors`` are read with numpy; torch files with ``weights_only=True`` (a
    pickle that would run code is refused).

    Returns
    -------
    pandas.DataFrame
        ``name`` (file name) and ``param_time``.
    """
    import pandas as pd

    from .paramtime import parameter_time

    files = _list_files(ckpt_dir, CHECKPOINT_EXTENSIONS)
    names = [f.name for f in files]
    keys = None if trainable is None else sorted(trainable)
    pt = parameter_time((_load_state_dict_numpy(f) for f in files), names=names, keys=keys)
    return pd.DataFrame({"name": names, "param_time": pt.values})


def _cmd_train(args) -> int:
    from .torch.train import TrainConfig, train

    cfg = TrainConfig(
        arch=args.arch, seed=args.seed, image_size=args.size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, data=args.data, n_train=args.n_train,
        n_test=args.n_test, data_seed=args.data_seed, schedule=args.schedule,
        n_points=args.n_points, panel_size=args.panel_size, vit_patch=args.vit_patch,
        latent_dim=args.latent_dim, warmup_steps=args.warmup_steps, grad_clip=args.grad_clip,
        threads=args.threads, save_weights=args.save_weights, save_recon=args.save_recon,
    )
    command = "bandscope " + " ".join(shlex.quote(a) for a in (args._argv or []))
    ds = train(cfg, args.out, progress=not args.no_progress, max_steps=args.max_steps,
               resume=not args.no_resume, command=command)
    print(f"recorded {ds.sizes['checkpoint']} checkpoints to {args.out}/run.nc "
          f"(final panel mse {float(ds['mse'][-1]):.6g}, param_time {float(ds['param_time'][-1]):.4g}, "
          f"arc_length {float(ds['arc_length'][-1]):.4g})")
    return 0


def _write_table(df, out) -> None:
    if out:
        df.to_csv(out, index=False)
        print(f"wrote {len(df)} rows to {out}", file=sys.stderr)
    else:
        df.to_csv(sys.stdout, index=False)


def _cmd_bands(args) -> int:
    _write_table(bands_table(args.panel, args.recon), args.out)
    return 0


def _cmd_param_time(args) -> int:
    trainable = None
    if args.arch:
        from .torch.models import build_model

        model = build_model(args.arch, args.size, **({"patch": args.vit_patch} if args.arch == "vit" else {}))
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    _write_table(param_time_table(args.ckpt_dir, trainable=trainable), args.out)
    return 0


def register(subparsers) -> None:
    """Add ``train``, ``bands`` and ``param-time`` to the ``bandscope`` CLI's subparsers."""
    argv = sys.argv[1:]

    p = subparsers.add_parser("train", help="train the paper's CNN/ViT autoencoder and record the run",
                              description="Train an A.2 autoencoder (plain Adam lr 3e-4, batch 128, "
                              "float32) and record band losses and parameter time at the A.5 checkpoint "
                              "schedule into OUT/run.nc (readable by `bandscope analyze` at any moment). "
                              "Re-running the same command resumes an interrupted run.")
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
    p.set_defaults(func=_cmd_train, _argv=argv)

    p = subparsers.add_parser("bands", help="band losses of saved panel reconstructions (.npz)",
                              description="One row per reconstruction file: name, band_1, band_2, ..., mse. "
                              "PANEL.npz and RECON.npz hold one array (N, C, S, S) each (key 'images' / "
                              "'recon' or the only array); RECON may be a directory of .npz files "
                              "(natural sort order).")
    p.add_argument("panel")
    p.add_argument("recon")
    p.add_argument("--out", help="CSV file (default: stdout)")
    p.set_defaults(func=_cmd_bands)

    p = subparsers.add_parser("param-time", help="chord parameter time from a directory of checkpoints",
                              description="One row per checkpoint (natural sort order of file names): "
                              "name, param_time (starting at 0). Checkpoints are state dicts in "
                              ".safetensors or torch files (.pt/.pth/.bin, loaded with weights_only=True). "
                              "All floating tensors count, unless --arch restricts to the model's "
                              "trainable parameters.")
    p.add_argument("ckpt_dir")
    p.add_argument("--out", help="CSV file (default: stdout)")
    p.add_argument("--arch", choices=["cnn", "vit"], help="restrict to this model's trainable parameters")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--vit-patch", type=int, default=4)
    p.set_defaults(func=_cmd_param_time)
