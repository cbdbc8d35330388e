"""The reference experiment (key search section 5, appendix A): train an autoencoder and record
its run while it trains.

:func:`train` trains the A.2 CNN or ViT autoencoder with plain Adam (lr 3e-4, betas 0.9/0.999,
batch 128, float32, pixel MSE), records band losses of a fixed held-out panel (A.8), chord
parameter time (A.7) and exact arc length at the A.5 checkpoint schedule, and keeps everything
needed to resume exactly.

Output directory ``out``::

    out/run.nc                      the run Dataset, rewritten atomically at every checkpoint
    out/config.json                 the full configuration (checked on resume)
    out/state/latest.pt             model + optimizer + tracker + RNG state at the last checkpoint
    out/state/weights/step_*.safetensors   model state dicts at checkpoints (``save_weights``)
    out/state/panel.npz, out/state/recon/step_*.npz   panel and float16 reconstructions
                                                      (``save_recon``)

Determinism: the model init, data order (one ``randperm`` per epoch from ``(seed, epoch)``)
and panel (A.8, seed + 3) depend only on the seed; with the same thread count on the same
machine a run is bitwise reproducible, and a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from ...schedule import geometric_schedule, paper_schedule
from ..device import resolve_device
from ..paramtime import ParamTimeTracker
from ..probe import BandProbe, select_panel
from ..recorder import RunRecorder
from .data import embedded_dataset, load_image_folder, to_float
from .models import build_model, count_parameters

__all__ = ["TrainConfig", "train", "PRECISIONS"]

#: ``precision`` values: autocast dtype of the forward pass and loss (None = plain float32)
PRECISIONS = {"32": None, "bf16": torch.bfloat16}
#: config fields that may differ when a run is resumed (where it runs, not what it computes)
_RESUMABLE_ACROSS = ("device",)


@dataclass
class TrainConfig:
    """Everything that defines a training run (written to ``config.json``)."""

    arch: str = "cnn"
    seed: int = 45
    image_size: int = 64
    epochs: float = 50
    batch_size: int = 128
    lr: float = 3e-4
    data: str = "skimage"  # "skimage", "lfw" or a folder of images (A.1 preprocessing)
    n_train: int = 8192
    n_test: int = 2048
    data_seed: int = 0
    schedule: str = "paper"  # "paper" (A.5, scaled to `epochs`) or "geometric"
    n_points: int = 53  # geometric schedule only
    panel_size: int = 256
    vit_patch: int = 4
    latent_dim: int = 128  # A.2: 128
    warmup_steps: int = 0  # linear learning-rate warm-up (0 = plain Adam at `lr`, as in A.3)
    grad_clip: float | None = None  # max global L2 norm of the gradient (None = no clipping, A.3)
    threads: int | None = None
    device: str = "cpu"  # "cpu", "cuda", "cuda:N", "mps" or "auto" (cuda, else mps, else cpu)
    precision: str = "32"  # "32" (float32, the paper) or "bf16" (bfloat16 autocast; weights, Adam float32)
    save_weights: bool = False
    save_recon: bool = False

    def model_kwargs(self) -> dict:
        """Keywords of :func:`.models.build_model` for this configuration (latent width, ViT patch)."""
        kw = {"latent_dim": int(self.latent_dim)}
        if self.arch == "vit":
            kw["patch"] = int(self.vit_patch)
        return kw


def _load_data(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, str]:
    if cfg.data in ("skimage", "lfw"):
        d = embedded_dataset(cfg.image_size, cfg.n_train, cfg.n_test, source=cfg.data, data_seed=cfg.data_seed)
        return d.train, d.test, d.description
    images = load_image_folder(cfg.data, cfg.image_size)
    if images.shape[0] <= cfg.n_test:
        raise ValueError(f"{cfg.data}: {images.shape[0]} images, need more than n_test={cfg.n_test}")
    train_x, test_x = images[: -cfg.n_test], images[-cfg.n_test:]  # A.1: last images are the test split
    if cfg.n_train and cfg.n_train < train_x.shape[0]:
        train_x = train_x[: cfg.n_train]
    return train_x, test_x, f"folder {cfg.data}: {train_x.shape[0]} train, last {cfg.n_test} test (A.1)"


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _epoch_perm(seed: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def train(config: TrainConfig | None = None, out: str | os.PathLike[str] | None = None, *, progress: bool = True,
          max_steps: int | None = None, resume: bool = True, command: str = "", **overrides: Any) -> xr.Dataset:
    """Train an A.2 autoencoder and record its run (key search section 5, appendix A).

    Parameters
    ----------
    config : TrainConfig, optional
        Defaults to the paper's settings (CNN, 64x64, 50 epochs, A.5 schedule); ``overrides``
        replace single fields, e.g. ``train(out="runs/a", arch="vit", image_size=32)``.
    out : path
        Output directory (see the module docstring). Required.
    progress : bool
        Show a tqdm progress bar.
    max_steps : int, optional
        Stop (as if interrupted) once this many optimizer steps are done; a later call with the
        same ``out`` resumes from the last checkpoint.
    resume : bool
        Resume from ``out/state/latest.pt`` if present (the config must match).
    command : str
        The command line, stored in ``config.json``.

    Returns
    -------
    xarray.Dataset
        The run recorded so far (``docs/format.md``).
    """
    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    if out is None:
        raise ValueError("train() needs an output directory `out`")
    cfg.arch = cfg.arch.lower()
    out = Path(out)
    state_dir = out / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg_dict = dataclasses.asdict(cfg)
    cfg_path = out / "config.json"
    state_path = state_dir / "latest.pt"
    if resume and state_path.exists() and cfg_path.exists():
        # fields added later (latent_dim, warmup_steps, grad_clip) take their defaults in older configs
        old = {**dataclasses.asdict(TrainConfig()), **json.loads(cfg_path.read_text())["config"]}
        diff = {k: (old.get(k), v) for k, v in cfg_dict.items() if old.get(k) != v and k not in _RESUMABLE_ACROSS}
        if diff:
            raise ValueError(f"{out} holds a run with a different config (old, new): {diff}; "
                             "use another --out or resume with the same settings")
    if str(cfg.precision) not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {cfg.precision!r}")
    cfg.precision = str(cfg.precision)
    device = resolve_device(cfg.device)
    amp_dtype = PRECISIONS[cfg.precision]
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))

    train_x, test_x, data_desc = _load_data(cfg)
    n = train_x.shape[0]
    train_x = train_x.to(device)  # uint8 on the device: batches are gathered there, no copy per step
    spe = n // cfg.batch_size
    if spe < 1:
        raise ValueError(f"{n} training images is less than one batch of {cfg.batch_size}")
    if cfg.schedule == "paper":
        sched = paper_schedule(spe, cfg.epochs)
    elif cfg.schedule == "geometric":
        sched = geometric_schedule(int(round(cfg.epochs * spe)), cfg.n_points)
    else:
        raise ValueError(f"schedule must be 'paper' or 'geometric', got {cfg.schedule!r}")
    if cfg.grad_clip is not None and not (math.isfinite(cfg.grad_clip) and cfg.grad_clip > 0):
        raise ValueError(f"grad_clip must be a positive finite norm or None, got {cfg.grad_clip!r}")
    total = int(sched[-1])
    sched_set = set(int(s) for s in sched)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, cfg.image_size, seed=cfg.seed, **cfg.model_kwargs()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    params = [p for p in model.parameters() if p.requires_grad]
    tracker = ParamTimeTracker(model)
    panel_idx = select_panel(test_x.shape[0], cfg.seed, cfg.panel_size)
    panel = test_x[torch.from_numpy(panel_idx)]
    probe = BandProbe(panel, keep_recon=cfg.save_recon)
    name = f"{cfg.arch}-seed{cfg.seed}"
    attrs = {"config": json.dumps(cfg_dict), "data": data_desc, "steps_per_epoch": spe, "total_steps": total,
             "n_parameters": count_parameters(model), "torch_version": torch.__version__}
    rec = RunRecorder(out / "run.nc", name=name, arch=cfg.arch, seed=cfg.seed,
                      source=f"bandscope.torch.reference.train ({command or 'python API'})", extra_attrs=attrs,
                      resume=resume and state_path.exists())
    if cfg.save_weights:
        (state_dir / "weights").mkdir(exist_ok=True)
    if cfg.save_recon:
        (state_dir / "recon").mkdir(exist_ok=True)
        np.savez_compressed(state_dir / "panel.npz", images=to_float(panel).numpy().astype(np.float32),
                            indices=panel_idx)

    step = 0
    if resume and state_path.exists():
        st = torch.load(state_path, weights_only=True, map_location="cpu")  # RNG state stays a CPU tensor
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        tracker.load_state_dict(st["tracker"])
        torch.set_rng_state(st["torch_rng"])
        step = int(st["step"])
        rec.truncate(step)
    else:
        rec.rows.clear()
    cfg_path.write_text(json.dumps({"config": cfg_dict, "command": command, "data": data_desc,
                                    "steps_per_epoch": spe, "total_steps": total,
                                    "checkpoint_steps": [int(s) for s in sched]}, indent=1) + "\n")

    def checkpoint(step: int) -> None:
        pt, arc = tracker.checkpoint()
        r = probe(model)
        if cfg.save_weights:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                      str(state_dir / "weights" / f"step_{step:08d}.safetensors"))
        if cfg.save_recon:
            assert r.recon is not None  # the probe keeps its reconstructions with save_recon
            np.savez_compressed(state_dir / "recon" / f"step_{step:08d}.npz", recon=r.recon)
        rec.record(step=step, epoch=step / spe, band_loss=r.band_loss, param_time=pt, arc_length=arc, mse=r.mse)
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "tracker": tracker.state_dict(),
                      "torch_rng": torch.get_rng_state(), "step": step}, state_path)

    if step == 0 and not rec.rows:
        checkpoint(0)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, disable=not progress, desc=name, unit="step",
               mininterval=1.0 if os.isatty(2) else 30.0)
    perm: torch.Tensor | None = None
    perm_epoch = -1
    t0 = time.perf_counter()
    model.train()
    try:
        while step < total and (max_steps is None or step < max_steps):
            ep, pos = divmod(step, spe)
            if ep != perm_epoch:  # the order is drawn on the CPU (device-independent), then moved
                perm, perm_epoch = _epoch_perm(cfg.seed, ep, n).to(device), ep
            assert perm is not None  # drawn at the first step of every epoch
            x = to_float(train_x[perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]])
            opt.zero_grad(set_to_none=True)
            if amp_dtype is None:
                loss = F.mse_loss(model(x), x)
            else:  # mixed precision: bfloat16 matmuls/convs, the loss in float32
                with torch.autocast(device.type, dtype=amp_dtype):
                    recon = model(x)
                loss = F.mse_loss(recon.float(), x)
            loss.backward()
            if cfg.grad_clip is not None:  # rescale all gradients so their joint L2 norm <= grad_clip
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
            if step < cfg.warmup_steps:  # linear ramp; from step warmup_steps - 1 on the lr is cfg.lr
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * ((step + 1) / cfg.warmup_steps)
            opt.step()
            tracker.step()
            step += 1
            bar.update(1)
            if step in sched_set:
                checkpoint(step)
                bar.set_postfix(loss=f"{loss.item():.5f}", panel_mse=f"{rec.rows[-1]['mse']:.5f}",
                               s=f"{rec.rows[-1]['param_time']:.4g}")
                if not bar.disable and not os.isatty(2):
                    bar.write(f"[{name}] step {step}/{total} epoch {step / spe:.3f} "
                              f"panel_mse {rec.rows[-1]['mse']:.6f} s {rec.rows[-1]['param_time']:.3f} "
                              f"arc {rec.rows[-1]['arc_length']:.3f} ({time.perf_counter() - t0:.0f} s)")
    finally:
        bar.close()
        rec.close()  # give up ownership of run.nc (docs/format.md, "Rules")
    return rec.dataset()
