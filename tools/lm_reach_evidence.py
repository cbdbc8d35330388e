"""The evidence behind docs/lnp.md's spectral-reach claims, read from the run folders of ``tools/lm_scaling.py``.

    python tools/lm_reach_evidence.py [reference_runs/lm-scaling] [--figure FILE.png]

``bandscope analyze reference_runs/lm-scaling*/runs/*.nc`` gives the per-run window statistics and
the size-ordering test (docs/lnp.md); this script adds what docs/lnp.md quotes beyond them: the
loss gap, the aggregate cosine factor ĉ, the probe ratio of P_AB and the probes' 𝒩̃ range, and
works on run folders without converted run files (the single-pass set).

Prints, per model size (mean ± spread over seeds): parameters, final held-out loss, the window
means of P (batch A = training batch) and P_AB (B = held-out) in the first and last windows, their
minimum, their mean over the last three windows (``*_last3``) and their log-log slope against the
step from step 1,000 on (``*_late_slope``: about 0 once P has flattened out), the normalised scales 𝒩̃ and ℒ̃ at the first and last window, and the §5.1 probe
ratio ⟨P_trained backbone⟩_τ / ⟨P_random backbone⟩_τ (Eq. 12, top 10 % of each window, 10 τ bins)
of the self P and of P_AB (median over bins, last populated bin), and the probes' 𝒩̃ range
((max − min)/mean of its window means, %: 0 for a truly frozen kernel).
Runs recorded without probes (``--probe-steps 0``) have no probe ratio (NaN).

Then the decomposition of the held-out cross position (LNP.md, two batches) into its factors,

    P_AB = ∇L_A·∇L_B / √(ℒ_Aℒ_B𝒩_A𝒩_B) = cos(∇L_A, ∇L_B) · √(P_A P_B),

with P_A = ‖∇L_A‖²/(ℒ_A𝒩_A) (self, training batch) and P_B the same on the held-out batch: per
run, the means over the last three windows of P_AB, P_A, P_B and of the per-step cosine, the
factor ĉ = mean P_AB / √(mean P_A · mean P_B) (so that mean P_AB = ĉ √(mean P_A mean P_B)
exactly), and the loss gap between the held-out and the training batch of the same steps
(``lnp_loss_b − lnp_loss``, nats/byte), with the final held-out loss. Below it, for each
quantity, Spearman's ρ between model size (parameters) and the per-run value, and its exact
permutation p-value over runs: every assignment of the per-run values to the runs' sizes
(n! orders, ties in size kept), one-sided in the direction of the paper's Figure 1 (larger
models lower: ρ < 0) and two-sided.
Only finished runs (``lnp.nc`` written; with probes also ``probe_random.nc``) are used.
"""
from __future__ import annotations

import argparse
import itertools
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
        if not (d / "lnp.nc").exists() or not (d / "config.json").exists():
            continue
        cfg = json.loads((d / "config.json").read_text())
        probes = cfg.get("probe_steps", 1) > 0
        if probes and not (d / "probe_random.nc").exists():
            continue
        runs.append({
            "dir": d, "size": cfg["size"], "seed": cfg["seed"], "n_params": cfg["n_params"],
            "lnp": xr.load_dataset(d / "lnp.nc"), "heldout": pd.read_csv(d / "heldout.csv"),
            "train_loss": pd.read_csv(d / "train_loss.csv"),
            "probe_trained": xr.load_dataset(d / "probe_trained.nc") if probes else None,
            "probe_random": xr.load_dataset(d / "probe_random.nc") if probes else None,
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


def _last_finite(v: np.ndarray) -> float:
    f = v[np.isfinite(v)]
    return float(f[-1]) if f.size else np.nan


def summary(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for r in runs:
        p = windowed(r["lnp"], "lnp_spectral_position")
        pab = windowed(r["lnp"], "lnp_spectral_position_cross")
        n = windowed(r["lnp"], "lnp_network_scale_norm")
        ls = windowed(r["lnp"], "lnp_loss_scale_norm")
        ratio, ratio_ab, n_range = xr.DataArray(np.full(10, np.nan)), xr.DataArray(np.full(10, np.nan)), {}
        if r["probe_trained"] is not None:
            pt, pr = r["probe_trained"], r["probe_random"]
            ratio, ratio_ab = (probe_ratio(pt[v], pr[v], bins=10, window_pretrained=pt["lnp_window"],
                                           window_random=pr["lnp_window"])
                               for v in ("lnp_spectral_position", "lnp_spectral_position_cross"))
            for name, ds in (("trained", pt), ("random", pr)):
                w = windowed(ds, "lnp_network_scale_norm").values
                n_range[name] = 100 * (w.max() - w.min()) / w.mean()
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
            "probe_ratio_median": float(np.nanmedian(ratio.values)) if np.isfinite(ratio.values).any() else np.nan,
            "probe_ratio_bins_below_1": f"{int((ratio.values < 1).sum())}/{int(np.isfinite(ratio.values).sum())}",
            "probe_ratio_last_bin": _last_finite(ratio.values),
            "probe_ratio_AB_median": float(np.nanmedian(ratio_ab.values)) if np.isfinite(ratio_ab.values).any()
            else np.nan,
            "probe_ratio_AB_last_bin": _last_finite(ratio_ab.values),
            "probe_N_norm_range_pct_trained": n_range.get("trained", np.nan),
            "probe_N_norm_range_pct_random": n_range.get("random", np.nan),
        })
    return pd.DataFrame(rows).sort_values(["params", "seed"]).reset_index(drop=True)


def decomposition(runs: list[dict], last: int = 3) -> pd.DataFrame:
    """Per run: P_AB = cos(∇L_A, ∇L_B) · √(P_A P_B) over the last ``last`` windows, and the loss gap.

    Columns: ``P_AB``, ``P_A``, ``P_B`` (means over the measurement steps of the last windows),
    ``c_hat`` = P_AB / √(P_A P_B) of those means, ``cos_mean`` (mean of the per-step cosine
    ∇L_A·∇L_B / (‖∇L_A‖‖∇L_B‖)), ``gap`` = mean of ``lnp_loss_b − lnp_loss`` over the same steps
    (held-out minus training batch, nats/byte), ``heldout_final``, ``gap_final`` = final held-out
    loss (pool) minus the mean training loss of the last 5 % of steps, and, for single-pass runs with
    evaluation windows, ``gap_eval_final`` = held-out minus unseen-training loss at the end.
    """
    rows = []
    for r in runs:
        ds = r["lnp"]
        keep = ds["lnp_window"] >= int(ds["lnp_window"].max()) - last + 1
        d = ds.where(keep, drop=True)
        pa, pb = float(d["lnp_spectral_position"].mean()), float(d["lnp_spectral_position_b"].mean())
        pab = float(d["lnp_spectral_position_cross"].mean())
        cos = d["lnp_grad_dot"] / np.sqrt(d["lnp_grad_norm_sq"] * d["lnp_grad_norm_sq_b"])
        h = r["heldout"]
        row = {"size": r["size"], "seed": r["seed"], "params": r["n_params"],
               "steps": f"{int(d['lnp_step'].min())}-{int(d['lnp_step'].max())}",
               "P_AB": pab, "P_A": pa, "P_B": pb, "c_hat": pab / np.sqrt(pa * pb),
               "cos_mean": float(cos.mean()), "gap": float((d["lnp_loss_b"] - d["lnp_loss"]).mean()),
               "heldout_final": float(h["heldout_loss"].iloc[-1])}
        tl = r["train_loss"]["train_loss"].to_numpy()
        row["gap_final"] = row["heldout_final"] - float(tl[-max(1, tl.size // 20):].mean())
        if "train_unseen_loss" in h:
            row["gap_eval_final"] = float(h["heldout_eval_loss"].iloc[-1] - h["train_unseen_loss"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["params", "seed"]).reset_index(drop=True)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def size_permutation_test(size: np.ndarray, value: np.ndarray) -> dict:
    """Spearman ρ(size, value) and its exact permutation p-values over runs.

    The null: the per-run values are exchangeable across runs, so every one of the n! orders of
    ``value`` against the fixed ``size`` labels is equally likely (ties in size stay ties).
    ``p_lower`` = P(ρ_perm ≤ ρ_obs) (the paper's direction: larger models lower), ``p_two`` =
    P(|ρ_perm| ≥ |ρ_obs|); a tolerance of 1e-12 counts equal ρ as at least as extreme.
    """
    size, value = np.asarray(size, float), np.asarray(value, float)
    rho = _spearman(size, value)
    rx = pd.Series(size).rank().to_numpy()
    ry = pd.Series(value).rank().to_numpy()[np.array(list(itertools.permutations(range(value.size))))]
    rx, ry = rx - rx.mean(), ry - ry.mean(axis=1, keepdims=True)
    perms = (ry @ rx) / np.sqrt((ry * ry).sum(axis=1) * (rx @ rx))  # Spearman ρ of every order
    return {"rho": rho, "p_lower": float((perms <= rho + 1e-12).mean()),
            "p_two": float((np.abs(perms) >= abs(rho) - 1e-12).mean()), "n_runs": int(value.size)}


def size_tests(dec: pd.DataFrame, columns=("P_AB", "P_A", "P_B", "c_hat", "cos_mean", "gap", "gap_final",
                                          "gap_eval_final", "heldout_final")) -> pd.DataFrame:
    """:func:`size_permutation_test` of each column of :func:`decomposition` against parameters."""
    return pd.DataFrame({c: size_permutation_test(dec["params"].to_numpy(), dec[c].to_numpy())
                         for c in columns if c in dec}).T


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
        dec = decomposition(runs)
        print("\nheld-out cross position, last 3 windows: P_AB = c_hat * sqrt(P_A * P_B)"
              " (P_A: training batch, P_B: held-out batch; gap = held-out minus training batch loss, nats/byte)")
        print(dec.to_string(index=False))
        print("\nmean over seeds:")
        print(dec.drop(columns=["seed", "steps"]).groupby("size", sort=False).mean().sort_values("params").to_string())
        if len(dec) <= 10:
            print("\nSpearman rho(parameters, value) over runs, exact permutation p (one-sided: larger lower; two-sided):")
            print(size_tests(dec).to_string())
            for g in ("gap_final", "gap"):
                t = size_permutation_test(dec[g].to_numpy(), dec["c_hat"].to_numpy())
                print(f"rho({g}, c_hat) over runs {t['rho']:+.3f}, exact two-sided p {t['p_two']:.4f}")
    if args.figure:
        figure(runs, Path(args.figure))
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
