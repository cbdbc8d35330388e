"""Long runs: the cost per checkpoint of every stage of the analysis, from 10^2 to 10^5 checkpoints.

One synthetic run (:func:`bandscope.keysearch.synthetic.make_run_synthetic` with
``n_checkpoints=K``, 6 bands, checkpoints evenly spaced in steps over 50 epochs) per size K,
analysed stage by stage with the public functions that :func:`bandscope.analyze` composes:

``read`` (``io.read_run`` of its netCDF file), ``floors``, ``crossings`` (with the normalised
residuals), ``windows`` (onset/width and the active windows), ``fits`` (every band window and the
full-loss curve, Weibull and exponential, n_eff), ``gamma`` (``fit_run_gamma``), ``report``
(the rest of ``analyze()``: ordering, band sum, the results Dataset; and ``io.write_results``).

Baseline, measured in the same run: the same stages at ``--base`` checkpoints (default 10^3).
Printed per stage: CPU µs per checkpoint and its ratio to the baseline's per-checkpoint cost
(1.0 = linear; a superlinear stage shows a ratio growing with K), and the whole analysis' CPU
seconds (target at 10^5: <= 5 s on one core). CPU time (``time.process_time``) of this
process, best of ``--repeats``; the sizes are interleaved round by round so that a burst of
load from other processes hits all of them.

Run: ``python benchmarks/bench_longrun.py [--sizes 100,1000,10000,100000] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

STAGES = ("read", "floors", "crossings", "windows", "fits", "gamma", "report")


def _stages(path: Path, out: Path) -> dict:
    """CPU seconds of each stage for the run in ``path``."""
    import xarray as xr

    from bandscope import io as bio
    from bandscope.keysearch import analysis, fitting, ordering, trajectory
    from bandscope.transforms import paramtime

    t: dict = {}
    clock = time.process_time
    c = clock()
    run = bio.read_run(path)
    t["read"] = clock() - c
    opts = analysis.AnalysisOptions()
    c = clock()
    runs = analysis.collect_runs(run)
    st = analysis.stack(runs)
    L, s = st["band_loss"], st["param_time"]
    fl = trajectory.floors(L, k=opts.k, saturation_tol_pct=opts.saturation_tol_pct, param_time=s)
    floor = fl["floor_mean_last_k"]
    R, Rtot = trajectory.residuals(L, floor)
    R = R.transpose("run", "checkpoint", "band")
    t["floors"] = clock() - c
    c = clock()
    cross = trajectory.crossings(R, s, opts.alphas).transpose("run", "band", "alpha")
    t["crossings"] = clock() - c
    c = clock()
    onset, width = trajectory.onset_width(cross, windows=opts.windows)
    aw = trajectory.active_windows(s, cross, opts.windows).transpose("run", "window", "band", "checkpoint")
    t["windows"] = clock() - c
    c = clock()
    n_valid = xr.DataArray((np.isfinite(Rtot.values) & np.isfinite(s.values)).sum(axis=1), dims="run",
                           coords={"run": st["run"].values})
    fits, total = fitting.compare_window_sets(
        [(R, s, aw["fit_start"], aw["fit_n"]), (Rtot, s, xr.zeros_like(n_valid), n_valid)],
        deflation=opts.deflation, min_points=opts.min_points, fallback=opts.fallback, n_starts=opts.n_starts)
    t["fits"] = clock() - c
    c = clock()
    paramtime.fit_run_gamma([ds for _, ds in runs], opts.gamma_windows)
    t["gamma"] = clock() - c
    c = clock()
    fitting.band_sum(fits.transpose("run", "window", "band"), R, Rtot, s, aw["fit_start"])
    ordering.band_ordering(onset, width, floor, R.isel(checkpoint=0, drop=True))
    t["report"] = clock() - c
    c = clock()
    res = analysis.analyze(run)  # the whole, for the total and for _assemble's share
    total_cpu = clock() - c
    t["report"] += max(0.0, total_cpu - sum(t[k] for k in STAGES if k not in ("read", "report")) - t["report"])
    c = clock()
    bio.write_results(res, out)
    t["report"] += clock() - c
    t["analyze"] = total_cpu
    t["ok_fits"] = int((res["status"] == "ok").sum())
    return t


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000,100000")
    ap.add_argument("--base", type=int, default=1000, help="baseline size (measured in the same run)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the rows as JSON")
    args = ap.parse_args([] if argv is None else argv)
    warnings.simplefilter("ignore")
    import os

    from bandscope import io as bio
    from bandscope.keysearch.synthetic import make_run_synthetic

    sizes = sorted({int(k) for k in args.sizes.split(",")} | {args.base})
    tmp = Path(tempfile.mkdtemp(prefix="bandscope-longrun-"))
    files = {}
    for k in sizes:
        files[k] = tmp / f"run-{k}.nc"
        bio.write_run(make_run_synthetic(0, n_bands=6, n_checkpoints=k), files[k])
    _stages(files[sizes[0]], tmp / "warm.nc")  # imports, first-call costs
    best: dict = {k: {} for k in sizes}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeats):
        for k in sizes:
            for name, v in _stages(files[k], tmp / f"res-{k}.nc").items():
                best[k][name] = v if name == "ok_fits" else min(best[k].get(name, np.inf), v)
    base = best[args.base]
    print(f"one run, 6 bands; CPU µs per checkpoint (ratio to {args.base:,} checkpoints, same run); "
          f"best of {args.repeats}; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'checkpoints':>11} " + " ".join(f"{s:>15}" for s in STAGES) + f" {'analyze s':>10} {'ok fits':>7}")
    rows = []
    for k in sizes:
        b = best[k]
        cells = []
        row = {"checkpoints": k, "analyze_cpu_s": b["analyze"], "ok_fits": b["ok_fits"]}
        for s in STAGES:
            per = 1e6 * b[s] / k
            ratio = (b[s] / k) / (base[s] / args.base) if base[s] > 0 else float("nan")
            row[f"{s}_us_per_checkpoint"] = per
            row[f"{s}_ratio_to_base"] = ratio
            cells.append(f"{per:8.1f} ({ratio:4.2f})")
        row["analyze_ratio_to_base"] = (b["analyze"] / k) / (base["analyze"] / args.base)
        rows.append(row)
        print(f"{k:>11,} " + " ".join(f"{c:>15}" for c in cells) + f" {b['analyze']:10.3f} {b['ok_fits']:7d}")
    print("(ratio = per-checkpoint cost / the baseline's: <= 1 means linear or better; target: the whole "
          "analysis of 10^5 checkpoints <= 5 s of CPU)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return {"rows": rows, "load_before": load0}


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
