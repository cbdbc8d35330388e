"""Validate ``bandscope.forecast`` on synthetic runs (known truth) and the shipped reference runs.

One command (from the repository root)::

    python tools/validate_forecast.py [--seeds 40] [--figure docs/figures/forecast_validation.png]

For every run it forecasts from the first 20 %, 40 %, 60 % and 80 % of the checkpoints and
compares with the truth:

* synthetic runs (``bandscope.keysearch.synthetic.make_run_synthetic``, noise 0.01 and 0.05): the true
  floor and the true 1 %-crossing ``onset + ω (ln 100)^(1/β)`` of each band (the full loss has no
  closed-form truth and is left out);
* reference runs (``reference_runs/recorded/*/run.nc``): the "truth" is the forecast from the
  *full* run (the same model fitted to all 53 checkpoints) -- a consistency check of early
  against late forecasts, not against a ground truth. Pairs whose full-run forecast is not
  ``ok`` or has an unbounded interval are left out and counted.

Printed per prefix: how many forecasts are ``ok`` (the rest NaN with a reason), the median
absolute floor error in % of the band's range (max L - min L over the full run), the median
absolute crossing-time error in % of the true crossing, the coverage of the 95 % intervals
(fraction containing the truth, ± its binomial standard error) and how many s_reach intervals
are unbounded above. Also the CPU time per forecast curve.
"""
from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np

from bandscope import forecast
from bandscope.io import read_run
from bandscope.keysearch.synthetic import make_run_synthetic

PREFIXES = (0.2, 0.4, 0.6, 0.8)
ROOT = Path(__file__).resolve().parents[1]


def _rows_synthetic(seeds, noise):
    """One record per (seed, band, prefix)."""
    recs = []
    times = []
    for seed in seeds:
        run = make_run_synthetic(seed, noise=noise)
        a = run.attrs
        on, om, be = (np.array(a[k]) for k in ("true_onset", "true_omega", "true_beta"))
        reach = on + om * np.log(100.0) ** (1 / be)
        floor = np.array(a["true_floor"])
        L = run.band_loss.values
        rng = L.max(axis=0) - L.min(axis=0)
        for p in PREFIXES:
            t0 = time.process_time()
            fc = forecast(run, prefix=p)
            times.append((time.process_time() - t0) / (fc.sizes["band"] + 1))
            for i in range(fc.sizes["band"]):
                recs.append(_record(fc, i, p, floor[i], reach[i], rng[i], seed))
    return recs, times


def _record(fc, i, p, floor, reach, rng, run_id, total=False):
    g = (lambda v: float(fc["total_" + v])) if total else (lambda v: float(fc[v].values[i]))
    st = str(fc.total_status.values) if total else str(fc.status.values[i])
    return {
        "run": run_id, "band": "total" if total else int(fc.band.values[i]), "prefix": p,
        "status": st, "floor": g("floor"), "floor_low": g("floor_low"), "floor_high": g("floor_high"),
        "s_reach": g("s_reach"), "s_reach_low": g("s_reach_low"), "s_reach_high": g("s_reach_high"),
        "true_floor": floor, "true_reach": reach, "range": rng, "s_now": float(fc.s_now),
    }


def _rows_reference(files):
    recs = []
    skipped = 0
    for f in files:
        run = read_run(f, name=Path(f).parent.name)
        full = forecast(run)
        L = run.band_loss.values
        rng = np.append(L.max(axis=0) - L.min(axis=0), np.ptp(L.sum(axis=1)))
        nb = full.sizes["band"]
        truth_ok = np.append(full.status.values == "ok", str(full.total_status.values) == "ok")
        truth_ok &= np.isfinite(np.append(full.s_reach_high.values, float(full.total_s_reach_high)))
        tf = np.append(full.floor.values, float(full.total_floor))
        tr = np.append(full.s_reach.values, float(full.total_s_reach))
        skipped += int((~truth_ok).sum())
        for p in PREFIXES:
            fc = forecast(run, prefix=p)
            for i in range(nb + 1):
                if truth_ok[i]:
                    recs.append(_record(fc, i, p, tf[i], tr[i], rng[i], run.attrs["name"], total=i == nb))
    return recs, skipped


def _summary(recs):
    """Per prefix: n, ok, floor err (median % of range), reach err (median % of truth), coverages."""
    out = []
    for p in PREFIXES:
        r = [x for x in recs if x["prefix"] == p]
        ok = [x for x in r if x["status"] == "ok"]
        fe = np.array([abs(x["floor"] - x["true_floor"]) / x["range"] * 100 for x in ok])
        re = np.array([abs(x["s_reach"] - x["true_reach"]) / x["true_reach"] * 100 for x in ok])
        cf = np.array([x["floor_low"] <= x["true_floor"] <= x["floor_high"] for x in ok])
        cs = np.array([x["s_reach_low"] <= x["true_reach"] <= x["s_reach_high"] for x in ok])
        unb = np.array([np.isinf(x["s_reach_high"]) for x in ok])
        se = lambda c: np.sqrt(c.mean() * (1 - c.mean()) / c.size) if c.size else np.nan  # noqa: E731
        out.append({
            "prefix": p, "n": len(r), "ok": len(ok),
            "floor_err_med": np.median(fe) if fe.size else np.nan,
            "floor_err_p90": np.percentile(fe, 90) if fe.size else np.nan,
            "reach_err_med": np.median(re) if re.size else np.nan,
            "reach_err_p90": np.percentile(re, 90) if re.size else np.nan,
            "cov_floor": cf.mean() if cf.size else np.nan, "cov_floor_se": se(cf),
            "cov_reach": cs.mean() if cs.size else np.nan, "cov_reach_se": se(cs),
            "unbounded": unb.mean() if unb.size else np.nan,
            "statuses": {s: sum(x["status"] == s for x in r) for s in sorted({x["status"] for x in r})},
        })
    return out


def _print_table(title, summ):
    print(f"\n{title}")
    print("| prefix | ok / n | floor err % range (median, p90) | s_reach err % (median, p90) "
          "| floor coverage | s_reach coverage | s_reach_high = inf | not ok |")
    print("|---|---|---|---|---|---|---|---|")
    for s in summ:
        bad = ", ".join(f"{k} {v}" for k, v in s["statuses"].items() if k != "ok") or "-"
        print(f"| {s['prefix']:.0%} | {s['ok']} / {s['n']} | {s['floor_err_med']:.2f}, "
              f"{s['floor_err_p90']:.2f} | {s['reach_err_med']:.1f}, {s['reach_err_p90']:.1f} | "
              f"{s['cov_floor']:.3f} ± {s['cov_floor_se']:.3f} | {s['cov_reach']:.3f} ± "
              f"{s['cov_reach_se']:.3f} | {s['unbounded']:.2f} | {bad} |")


def _figure(path, summaries, example_file):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 9.5))
    gs = fig.add_gridspec(3, 2, height_ratios=[1, 0.78, 0.32], hspace=0.45, wspace=0.22)
    ax_cf, ax_cs = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    ax_err = fig.add_subplot(gs[1:, 0])
    ax_ex = fig.add_subplot(gs[1, 1])
    ax_sr = fig.add_subplot(gs[2, 1], sharex=ax_ex)
    x = np.array(PREFIXES) * 100
    styles = {"synthetic noise 0.01": ("C0", "o"), "synthetic noise 0.05": ("C1", "s"),
              "reference runs (vs full run)": ("C2", "^")}
    for name, summ in summaries.items():
        col, mk = styles[name]
        for key, a in (("floor", ax_cf), ("reach", ax_cs)):
            y = np.array([s[f"cov_{key}"] for s in summ])
            e = np.array([s[f"cov_{key}_se"] for s in summ])
            a.errorbar(x, y, yerr=e, color=col, marker=mk, capsize=3, label=name)
        ax_err.plot(x, [s["floor_err_med"] for s in summ], color=col, marker=mk,
                    label=f"{name}: floor, % of band range")
        ax_err.plot(x, [s["reach_err_med"] for s in summ], color=col, marker=mk, ls="--",
                    label=f"{name}: s_reach, % of truth")
    for a, what in ((ax_cf, "floor"), (ax_cs, "s_reach (1 % crossing)")):
        a.axhline(0.95, color="k", lw=0.8)
        a.set_ylim(0.5, 1.02)
        a.set_xticks(x)
        a.set_xlabel("prefix of the run used (% of checkpoints)")
        a.set_ylabel("coverage of the 95 % interval")
        a.set_title(f"{what}: intervals containing the truth (± 1 SE)", fontsize=10)
        a.legend(fontsize=7, loc="lower right")
    ax_err.set_yscale("log")
    ax_err.set_xticks(x)
    ax_err.set_xlabel("prefix of the run used (% of checkpoints)")
    ax_err.set_ylabel("median |error| (%)")
    ax_err.set_title("median error of the forecast against the truth", fontsize=10)
    lo, hi = ax_err.get_ylim()
    ax_err.set_ylim(lo / 30, hi)
    ax_err.legend(fontsize=7, loc="lower left")
    if example_file is None:
        fig.savefig(path, dpi=110)
        return
    # an example: one reference run, one band, forecasts from growing prefixes
    run = read_run(example_file, name=Path(example_file).parent.name)
    b = 8
    s = run.param_time.values
    L = run.band_loss.sel(band=b).values
    ax_ex.plot(s, L, "k.", ms=4, label=f"band {b} loss")
    xmax = s[-1] * 1.5
    for j, p in enumerate((*PREFIXES, 1.0)):
        fc = forecast(run, prefix=p).sel(band=b)
        col = plt.cm.viridis(j / 4.5)
        lab = f"first {p:.0%}"
        ax_sr.axvline(float(fc.s_now), color=col, lw=0.8, ls=":")
        if str(fc.status.item()) != "ok":
            ax_sr.text(float(fc.s_now), j, f" {lab}: {fc.status.item()}", va="center", fontsize=7)
            continue
        ss = np.linspace(float(fc.s_start), xmax, 300)
        curve = float(fc.floor) + float(fc.A) * np.exp(
            -(np.clip(ss - float(fc.onset), 0, None) / float(fc.omega)) ** float(fc.beta))
        ax_ex.plot(ss, curve, color=col, lw=1.2, label=f"fit to {lab}")
        ax_ex.plot([s[-1] * (1.08 + 0.05 * j)] * 2, [float(fc.floor_low), float(fc.floor_high)],
                   color=col, lw=4, solid_capstyle="butt")
        hi = float(fc.s_reach_high) if np.isfinite(fc.s_reach_high) else xmax
        ax_sr.plot([float(fc.s_reach_low), hi], [j, j], color=col, lw=4, solid_capstyle="butt")
        ax_sr.plot([float(fc.s_reach)], [j], "k|", ms=10)
        if not np.isfinite(fc.s_reach_high):
            ax_sr.annotate("", xy=(xmax, j), xytext=(xmax * 0.97, j),
                           arrowprops=dict(arrowstyle="->", color=col))
    ax_ex.set_xlim(0, xmax)
    ax_ex.set_ylabel("band loss")
    ax_ex.set_title(f"{run.attrs['name']}, band {b}: fits from growing prefixes; bars at right: "
                    "floor intervals", fontsize=9)
    ax_ex.legend(fontsize=7, ncol=2)
    ax_sr.set_yticks(range(5))
    ax_sr.set_yticklabels([f"{p:.0%}" for p in (*PREFIXES, 1.0)], fontsize=7)
    ax_sr.set_ylim(-0.7, 4.7)
    ax_sr.set_xlabel("parameter time s (dotted: s_now of each prefix)")
    ax_sr.set_title("s_reach intervals (| = estimate)", fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"\nwrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=40, help="synthetic runs per noise level (default 40)")
    ap.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "forecast_validation.png"))
    args = ap.parse_args(argv)
    summaries = {}
    all_times = []
    for noise in (0.01, 0.05):
        recs, times = _rows_synthetic(range(args.seeds), noise)
        all_times += times
        summ = _summary(recs)
        summaries[f"synthetic noise {noise:g}"] = summ
        _print_table(f"Synthetic runs, noise {noise:g}: {args.seeds} seeds x 7 bands; truth = the "
                     "generator's floor and 1 %-crossing", summ)
    files = sorted(glob.glob(str(ROOT / "reference_runs" / "recorded" / "*" / "run.nc")))
    if files:
        recs, skipped = _rows_reference(files)
        summ = _summary(recs)
        summaries["reference runs (vs full run)"] = summ
        _print_table(f"Reference runs: {len(files)} runs x (6 bands + total); truth = the full-run "
                     f"forecast ({skipped} band/run pairs without an ok, bounded full-run forecast "
                     "left out)", summ)
    print(f"\nCPU time per forecast curve (synthetic runs, all prefixes): median "
          f"{np.median(all_times) * 1e3:.1f} ms, max {np.max(all_times) * 1e3:.1f} ms "
          "(a 7-band run + the total: x8)")
    _figure(args.figure, summaries, files[0] if files else None)


if __name__ == "__main__":
    main()
