"""Figures of docs/lnp.md. Run: ``.venv/bin/python docs/figures/make_lnp_figures.py``.

- ``lnp_random_features.png``: the random-feature check (spectral reach §3.2 / A.4): P at
  initialisation against Σλ²/(Σλ)² of the kernel over spectral exponents α.
- ``lnp_reference_runs.png``: P over training and per Haar band from ``reference_runs/lnp``
  (only if those files exist).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from bandscope.lnp import random_feature_lnp, window_mean  # noqa: E402

HERE = Path(__file__).parent
RUNS = HERE.parent.parent / "reference_runs" / "lnp"


def random_features(alphas=np.linspace(0.25, 3.0, 12), seeds=range(5)):
    rows = []
    for a in alphas:
        d = [random_feature_lnp(a, n_samples=300, dim=150, width=1000, n_teachers=200, seed=s) for s in seeds]
        keys = ("spectral_position", "spectral_position_ratio_of_means", "ipr")
        rows.append([np.mean([x[k] for x in d]) for k in keys])
    rows = np.array(rows)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    ax[0].plot(alphas, rows[:, 2], "k-", label=r"$\sum\lambda^2/(\sum\lambda)^2$ of K")
    ax[0].plot(alphas, rows[:, 1], "o", label=r"$E[g^\top K g]/(E\|g\|^2\,\mathrm{Tr}K)$")
    ax[0].plot(alphas, rows[:, 0], "s", mfc="none", label="mean P")
    ax[0].set(xlabel=r"data spectral exponent $\alpha$", ylabel="spectral position at init", yscale="log")
    ax[0].legend(fontsize=8)
    ax[1].plot(rows[:, 2], rows[:, 0], "s", mfc="none", label="mean P")
    ax[1].plot(rows[:, 2], rows[:, 1], "o", label="ratio of means")
    lim = [rows.min() * 0.8, rows.max() * 1.2]
    ax[1].plot(lim, lim, "k:", lw=1)
    ax[1].set(xlabel=r"$\sum\lambda^2/(\sum\lambda)^2$", ylabel="measured", xscale="log", yscale="log")
    ax[1].legend(fontsize=8)
    fig.suptitle("Random-feature check (N=300, d=150, W=1000; 5 feature draws x 200 teachers)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "lnp_random_features.png", dpi=120)
    return rows


def reference_runs():
    ae, clf = RUNS / "cnn_ae_lnp.nc", RUNS / "lfw_classifier_lnp.nc"
    if not (ae.exists() and clf.exists()):
        return None
    a, c = xr.open_dataset(ae), xr.open_dataset(clf)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for ds, name, axx in ((a, "CNN autoencoder (MSE)", ax[0]), (c, "LFW classifier (CE)", ax[1])):
        steps = window_mean(ds.lnp_step.astype(float), ds.lnp_window)
        for v, lab in (("lnp_spectral_position", "P (batch A)"),
                       ("lnp_spectral_position_cross", "P_AB (A step, B held out)")):
            axx.plot(steps + 1, window_mean(ds[v], ds.lnp_window), "o-", ms=3, label=lab)
        axx.set(xscale="log", yscale="log", title=name + " (window means)", xlabel="step + 1")
        axx.legend(fontsize=8)
    pb = window_mean(a.lnp_band_spectral_position, a.lnp_window)
    steps = window_mean(a.lnp_step.astype(float), a.lnp_window)
    for b in pb.lnp_band.values:
        ax[2].plot(steps + 1, pb.sel(lnp_band=b), "o-", ms=3, label=f"band {b}")
    ax[2].set(xscale="log", yscale="log", title="autoencoder: P_i per Haar band", xlabel="step + 1")
    ax[2].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(HERE / "lnp_reference_runs.png", dpi=120)
    return True


if __name__ == "__main__":
    print(random_features())
    print("reference runs figure:", reference_runs())
