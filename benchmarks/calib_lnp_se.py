"""Calibration of the reported standard error of 𝒩 (per-sample Hutchinson) at small and large batches.

Run: ``python benchmarks/calib_lnp_se.py [--seeds 200] [--batches 4 32] [--n-probes K]``.

For each model below and batch size N, the exact 𝒩 = Σ_n ||J_n||_F² is measured once
(``estimator="exact"``, checked against the explicit eNTK in the tests), then
``measure_lnp(estimator="hutchinson", seed=s)`` for ``--seeds`` probe seeds on the same batch.
Printed per case: the mean of z = (𝒩̂ − 𝒩)/SE, the fraction of calls with |z| > 3 and |z| > 5, the
relative bias of 𝒩̂, the probes used and the reported degrees of freedom of the SE. The
documented promise (docs/lnp.md, "Standard error at small batches"): |z| > 5 in at most 1 % of
calls at N = 4 with the default ``n_probes``. ``--n-probes K`` fixes K probes (the behaviour
before the default depended on N was K = 2). Each case's batch and model are seeded; the probe
seeds are 0 … seeds−1.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bandscope.torch import measure_lnp


def _mlp(n, g):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    return model, (torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)), \
        nn.CrossEntropyLoss()


def _cnn(n, g):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 1, 3, padding=1)).double()
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    return model, (x, torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)), F.mse_loss


class _LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 11)

    def forward(self, idx):
        h = self.emb(idx)
        h = h + torch.tanh(self.fc(self.norm(h))).cumsum(1) / (1 + torch.arange(idx.shape[1]))[:, None]
        return self.head(h)


def _lm(n, g):
    torch.manual_seed(0)
    model = _LM().double()
    x = torch.randint(0, 11, (n, 6), generator=g)
    return model, (x, torch.randint(0, 11, (n, 6), generator=g)), \
        lambda out, y: F.cross_entropy(out.reshape(-1, 11), y.reshape(-1))


CASES = {"mlp-ce": _mlp, "cnn-mse": _cnn, "lm-ce": _lm}


def run(seeds: int, batches, n_probes):
    rows = []
    for name, make in CASES.items():
        for n in batches:
            model, batch, loss = make(n, torch.Generator().manual_seed(1))
            exact = float(measure_lnp(model, loss, batch, estimator="exact").network_scale)
            z, est, dof, probes = [], [], [], None
            t0 = time.perf_counter()
            for s in range(seeds):
                kw = {} if n_probes is None else {"n_probes": n_probes}
                ds = measure_lnp(model, loss, batch, seed=s, **kw)
                est.append(float(ds.network_scale))
                z.append((est[-1] - exact) / float(ds.network_scale_se))
                dof.append(float(ds.attrs.get("network_scale_se_dof", np.nan)))
                probes = ds.attrs["n_probes"]
            z = np.asarray(z)
            rows.append((name, n, probes, float(np.nanmean(z)), float(np.mean(np.abs(z) > 3)),
                         float(np.mean(np.abs(z) > 5)), float(np.mean(est) / exact - 1), float(np.nanmedian(dof)),
                         time.perf_counter() - t0))
            print(f"{name:8s} N={n:3d} probes={probes:2d}  mean z={rows[-1][3]:+.3f}  P(|z|>3)={rows[-1][4]:.3f}  "
                  f"P(|z|>5)={rows[-1][5]:.3f}  bias={rows[-1][6]:+.4f}  dof={rows[-1][7]:.0f}  "
                  f"({rows[-1][8]:.1f} s)", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--n-probes", type=int, default=None, help="fixed probes (default: measure_lnp's default)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    run(args.seeds, args.batches, args.n_probes)


if __name__ == "__main__":
    main()
