"""LNP demonstration on real data: spectral position over training, and per Haar band.

1. The key-search CNN autoencoder (A.2) at 32x32 on the embedded scikit-image patches
   (``bandscope.torch.embedded_dataset``), plain Adam lr 3e-4, batch 32, pixel MSE; LNPHook with
   the default estimator (per-sample Hutchinson, exact output layer), held-out batch B, bands.
2. A small CNN classifier on scikit-image's LFW subset (100 faces vs 100 non-faces, 25x25 grey,
   160 train / 40 test), Adam lr 1e-3, batch 32, cross-entropy, exact network scale (O = 2).

Writes ``cnn_ae_lnp.nc``, ``lfw_classifier_lnp.nc`` and ``summary.json`` into ``reference_runs/lnp/``
(the shipped LNP demonstration data; see its README).
Run: ``.venv/bin/python tools/run_lnp_demo.py [--steps N]`` (CPU, a few minutes).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bandscope.lnp import window_mean
from bandscope.torch import LNPHook, build_model, embedded_dataset
from bandscope.torch.reference.data import to_float

HERE = Path(__file__).resolve().parents[1] / "reference_runs" / "lnp"


def autoencoder(steps: int, seed: int = 45) -> dict:
    data = embedded_dataset(32, n_train=4096, n_test=256)
    train, test = to_float(data.train), to_float(data.test)
    model = build_model("cnn", 32, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    g = torch.Generator().manual_seed(seed)
    val_gen = torch.Generator().manual_seed(seed + 1)

    def eval_batch(step):
        idx = torch.randint(0, test.shape[0], (32,), generator=val_gen)
        return test[idx], test[idx]

    hook = LNPHook(model, nn.MSELoss(), total_steps=steps, n_windows=12, steps_per_window=5,
                   eval_batch=eval_batch, bands=True, n_probes=1, seed=seed, path=HERE / "cnn_ae_lnp.nc")
    t0, losses = time.perf_counter(), []
    for t in range(steps):
        idx = torch.randint(0, train.shape[0], (32,), generator=g)
        x = train[idx]
        hook(t, (x, x))
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), x)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    hook.write()
    ds = hook.dataset()
    wm = lambda v: window_mean(ds[v], ds.lnp_window).values.round(5).tolist()
    return {
        "steps": steps, "seconds": round(time.perf_counter() - t0, 1),
        "train_loss_first_last": [losses[0], float(np.mean(losses[-20:]))],
        "window_start_steps": [int(ds.lnp_step.values[ds.lnp_window.values == w][0])
                               for w in np.unique(ds.lnp_window.values)],
        "P_window_mean": wm("lnp_spectral_position"),
        "P_cross_window_mean": wm("lnp_spectral_position_cross"),
        "loss_scale_norm_window_mean": wm("lnp_loss_scale_norm"),
        "network_scale_norm_window_mean": wm("lnp_network_scale_norm"),
        "band": ds.lnp_band.values.tolist(),
        "P_band_first_window": window_mean(ds.lnp_band_spectral_position, ds.lnp_window).isel(lnp_window=0).values.round(5).tolist(),
        "P_band_last_window": window_mean(ds.lnp_band_spectral_position, ds.lnp_window).isel(lnp_window=-1).values.round(5).tolist(),
        "band_share_of_decrease_first_window": (window_mean(ds.lnp_band_grad_dot, ds.lnp_window).isel(lnp_window=0)
                                                / window_mean(ds.lnp_grad_norm_sq, ds.lnp_window).isel(lnp_window=0)).values.round(4).tolist(),
        "band_share_of_decrease_last_window": (window_mean(ds.lnp_band_grad_dot, ds.lnp_window).isel(lnp_window=-1)
                                               / window_mean(ds.lnp_grad_norm_sq, ds.lnp_window).isel(lnp_window=-1)).values.round(4).tolist(),
    }


def classifier(steps: int, seed: int = 0) -> dict:
    from skimage.data import lfw_subset

    imgs = torch.tensor(lfw_subset(), dtype=torch.float32).unsqueeze(1)  # (200, 1, 25, 25), in [0, 1]
    labels = torch.cat([torch.zeros(100), torch.ones(100)]).long()  # faces, then non-faces
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:160], perm[160:]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed + 1)
    hook = LNPHook(model, nn.CrossEntropyLoss(), total_steps=steps, n_windows=12, steps_per_window=5,
                   eval_batch=(imgs[te], labels[te]), estimator="exact", seed=seed,
                   path=HERE / "lfw_classifier_lnp.nc")
    for t in range(steps):
        idx = tr[torch.randint(0, 160, (32,), generator=g)]
        hook(t, (imgs[idx], labels[idx]))
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(imgs[idx]), labels[idx]).backward()
        opt.step()
    hook.write()
    with torch.no_grad():
        acc_tr = float((model(imgs[tr]).argmax(1) == labels[tr]).float().mean())
        acc_te = float((model(imgs[te]).argmax(1) == labels[te]).float().mean())
    ds = hook.dataset()
    wm = lambda v: window_mean(ds[v], ds.lnp_window).values.round(5).tolist()
    return {"steps": steps, "train_acc": acc_tr, "test_acc": acc_te,
            "window_start_steps": [int(ds.lnp_step.values[ds.lnp_window.values == w][0])
                                   for w in np.unique(ds.lnp_window.values)],
            "P_window_mean": wm("lnp_spectral_position"),
            "P_cross_window_mean": wm("lnp_spectral_position_cross"),
            "loss_window_mean": wm("lnp_loss")}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--clf-steps", type=int, default=1500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {"cnn_autoencoder": autoencoder(args.steps), "lfw_classifier": classifier(args.clf_steps)}
    (HERE / "summary.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
