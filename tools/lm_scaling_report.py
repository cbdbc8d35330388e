"""Summarise the spectral-reach scaling runs (``tools/lm_scaling.py``): tables and a figure.

    python tools/lm_scaling_report.py [reference_runs/lm-scaling] [--figure docs/figures/lm_scaling.png]

Prints, per model size (mean ± spread over seeds): parameters, final held-out loss, the window
means of P (batch A = training batch) and P_AB (B = held-out) in the first and last windows, their
minimum, their mean over the last three windows (``*_last3``) and their log-log slope against the
step from step 1,000 on (``*_late_slope``: about 0 once P has flattened out), the normalised scales 𝒩̃ and ℒ̃ at the first and last window, and the §5.1 probe
ratio ⟨P_trained backbone⟩_τ / ⟨P_random backbone⟩_τ (Eq. 12, top 10 % of each window, 10 τ bins).
Only finished runs (with ``probe_random.nc``) are used.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bandscope.lnp import probe_ratio, window_mean

ROOT = Path(__file__).resolve().parents[1] / "reference_runs" / "lm-scaling"


def load(root: Path) -> list[dict]:
    runs = []
    for d in sorted(root.glob("*-seed*")):
        if not (d / "probe_random.nc").exists():
            continue
        cfg = json.loads((d / "config.json").read_text())
        runs.append({
            "dir": d, "size": cfg["size"], "seed": cfg["seed"], "n_params": cfg["n_params"],
            "lnp": xr.load_dataset(d / "lnp.nc"), "heldout": pd.read_csv(d / "heldout.csv"),
            "probe_trained": xr.load_dataset(d / "probe_trained.nc"),
            "probe_random": xr.load_dataset(d / "probe_random.nc"),
        })
    return runs


def windowed(ds: xr.Dataset, var: str) -> xr.DataArray:
    out = window_mean(ds[var], ds["lnp_window"])
    steps = window_mean(ds["lnp_step"].astype(float), ds["lnp_window"])
    return out.assign_coords(step=("lnp_window", steps.values))


def late_slope(p: xr.DataArray, start: float = 1000.0) -> float:
    """d log P / d log step, least squares over the windows from step ``start`` on: about 0 when P
    has flattened out, negative while it still falls (spectral reach §4, Figure 1)."""
    step = p["step"].values
    keep = (step >= start) & np.isfinite(p.values) & (p.values > 0)
    if keep.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(step[keep]), np.log(p.values[keep]), 1)[0])


def summary(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for r in runs:
        p = windowed(r["lnp"], "lnp_spectral_position")
        pab = windowed(r["lnp"], "lnp_spectral_position_cross")
        n = windowed(r["lnp"], "lnp_network_scale_norm")
        ls = windowed(r["lnp"], "lnp_loss_scale_norm")
        ratio = probe_ratio(r["probe_trained"]["lnp_spectral_position"], r["probe_random"]["lnp_spectral_position"],
                            bins=10, window_pretrained=r["probe_trained"]["lnp_window"],
                            window_random=r["probe_random"]["lnp_window"])
        h = r["heldout"]
        rows.append({
            "size": r["size"], "seed": r["seed"], "params": r["n_params"],
            "heldout_loss_final": float(h["heldout_loss"].iloc[-1]),
            "P_first": float(p[0]), "P_last": float(p[-1]), "P_min": float(p.min()),
            "P_last3": float(p[-3:].mean()), "P_late_slope": late_slope(p),
            "P_AB_first": float(pab[0]), "P_AB_last": float(pab[-1]), "P_AB_last3": float(pab[-3:].mean()),
            "P_AB_late_slope": late_slope(pab),
            "N_norm_first": float(n[0]), "N_norm_last": float(n[-1]),
            "L_norm_first": float(ls[0]), "L_norm_last": float(ls[-1]),
            "probe_ratio_median": float(np.nanmedian(ratio.values)),
            "probe_ratio_bins_below_1": f"{int((ratio.values < 1).sum())}/{int(np.isfinite(ratio.values).sum())}",
        })
    return pd.DataFrame(rows).sort_values(["params", "seed"]).reset_index(drop=True)


def figure(runs: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 7.5), layout="constrained")
    ax = fig.subplots(2, 3)
    sizes = sorted({r["size"] for r in runs}, key=lambda s: next(r["n_params"] for r in runs if r["size"] == s))
    colours = dict(zip(sizes, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]))
    for r in runs:
        c, lab = colours[r["size"]], f"{r['size']} ({r['n_params'] / 1e3:.0f}k), seed {r['seed']}"
        ls = "-" if r["seed"] == min(q["seed"] for q in runs) else "--"
        h = r["heldout"]
        ax[0, 0].plot(h["step"] + 1, h["heldout_loss"], ls, color=c, label=lab)
        for a, var in ((ax[0, 1], "lnp_spectral_position"), (ax[0, 2], "lnp_spectral_position_cross"),
                       (ax[1, 0], "lnp_network_scale_norm"), (ax[1, 1], "lnp_loss_scale_norm")):
            w = windowed(r["lnp"], var)
            a.plot(w["step"] + 1, w.values, ls, marker="o", ms=2.5, color=c, label=lab)
        for probe, mk in (("probe_trained", "-"), ("probe_random", ":")):
            w = windowed(r[probe], "lnp_spectral_position")
            if r["seed"] == min(q["seed"] for q in runs):
                ax[1, 2].plot(w["step"] + 1, w.values, mk, marker="o", ms=2.5, color=c,
                              label=f"{r['size']}: {probe.split('_')[1]} backbone")
    n_tilde, l_tilde = r"$\tilde{\mathcal{N}}$", r"$\tilde{\mathcal{L}}$"
    titles = [("held-out loss (nats/byte)", "held-out loss"), ("P (batch A = training batch)", "P"),
              ("P_AB (A train, B held out)", "P_AB"),
              (rf"network scale {n_tilde} = $\mathcal{{N}}/M$", n_tilde),
              (rf"loss scale {l_tilde} = $M\mathcal{{L}}$", l_tilde),
              ("linear probe P (seed 0): trained vs random", "P")]
    for a, (title, ylabel) in zip(ax.flat, titles):
        a.set(xscale="log", yscale="log", title=title, xlabel="training step + 1", ylabel=ylabel)
    ax[0, 0].legend(fontsize=7)
    ax[1, 2].legend(fontsize=7)
    fig.suptitle("Spectral reach on GPT-style byte LMs (Python stdlib corpus): window means per run")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default=str(ROOT))
    ap.add_argument("--figure", help="write the figure here (PNG)")
    args = ap.parse_args(argv)
    runs = load(Path(args.root))
    if not runs:
        print(f"no finished runs under {args.root}", file=sys.stderr)
        return 2
    df = summary(runs)
    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(df.to_string(index=False))
        num = df.drop(columns=["seed", "probe_ratio_bins_below_1"]).groupby("size", sort=False)
        print("\nmean over seeds:")
        print(num.mean().sort_values("params").to_string())
    if args.figure:
        figure(runs, Path(args.figure))
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
