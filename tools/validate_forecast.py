"""Validate ``bandscope.forecast``'s floors against what runs actually did, leave-one-run-out.

One command (from the repository root)::

    python tools/validate_forecast.py [--cache RECORDS.json] [--out SUMMARY.json] [--write-calibration]
                                      [--heldout]

The truth of a curve is the mean of its last 10 % of checkpoints (what the run actually did;
never a fit), used for *saturated* curves (drift over the last 5 checkpoints < 2 % of the
range: ``bandscope.keysearch.calibrate.late_truth``). Each run is forecast from its first
20 %, 30 %, ..., 80 % of checkpoints. Run sets:

The calibration corpus (:data:`CORPUS`, 32 image runs), each set reported separately,
leave one run out (each run's intervals and shrinkage weights come from a calibration on the
other 31 runs), bands and the full loss:

* ``recorded``: ``reference_runs/recorded`` (6 CNN / ViT runs);
* ``pilots``: ``reference_runs/pilots`` (14 runs; the 3 diverged ViT runs are left out: a
  loss spike is a second onset, not one trajectory);
* ``forecast-cnn-1k``: ``reference_runs/forecast-cnn-1k`` (12 CNN runs of about 1,000 steps;
  recorded to test the previous method, calibration data since).

Held out by construction (calibrated on all 32 corpus runs, the shipped calibration):

* ``lm``: the 8 small-GPT runs of ``reference_runs/lm-scaling-long`` (training loss per step,
  the mean of the 50 steps before each of 53 geometric checkpoints in 9,000 steps; time = step):
  plain scalar series, and ``lm_self``: the same curves calibrated leave one run out over the
  *other LM runs* (what ``bandscope forecast --calibrate`` does for a user's own curves; all 8
  curves, saturated or not, truth = the mean of the last 10 % of checkpoints: with 3 saturated
  curves a saturated-only LM corpus is too small for a 95 % interval);
* synthetic shapes that are not the model's own, with AR(1) noise: ``two_phase`` (a fall, a
  shoulder, a second fall ending before the run does), ``power_drift`` (a power law still
  drifting), ``noisy_plateau`` (done early, noise 5 % of the fall), and ``weibull``
  (``make_run_synthetic``, the model's own shape);
* ``heldout`` (with ``--heldout``): ``reference_runs/forecast-test`` (:data:`HELDOUT`; runs whose
  ``train.log`` has no ``exit 0`` line are skipped), never part of the corpus and never cached.

Printed per set and prefix: saturated curves, forecasts ``ok`` (the rest abstain with a status
and a reason), floor coverage, median |error| of the forecast and of the naive last value (% of
the curve's range), the single-Weibull model's coverage for comparison, and the coverage per
calibration group (the trust signal). ``--write-calibration`` writes the shipped calibration
(``src/bandscope/keysearch/forecast_calibration.json``) from all 32 corpus runs.
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np

from bandscope.io import read_run
from bandscope.keysearch.calibrate import CALIBRATION_PREFIXES, calibrate, leave_one_run_out, prefix_records
from bandscope.keysearch.conformal import EARLY_CHECKPOINTS, N_GROUPS, STAGE_EDGES
from bandscope.schedule import geometric_schedule

ROOT = Path(__file__).resolve().parents[1]
REPORT_PREFIXES = (0.2, 0.4, 0.6, 0.8)


#: the calibration corpus: run set -> glob of its run files under reference_runs/
CORPUS = {
    "recorded": "recorded/*/run.nc",
    "pilots": "pilots/*/*/run.nc",
    "forecast-cnn-1k": "forecast-cnn-1k/*/run.nc",
}
#: the test set (``--heldout``): never part of the calibration, read only after the freeze
HELDOUT = "forecast-test/*/run.nc"


def _finished(f: str) -> bool:
    """A run counts once its ``train.log`` has an ``exit 0`` line (a run still being recorded
    is left out, and so are the diverged ViT pilots, which never exited cleanly)."""
    log = Path(f).parent / "train.log"
    return log.is_file() and any(line.startswith("exit 0") for line in log.read_text().splitlines())


def _run_files(pattern: str) -> list[str]:
    """Finished run files matching ``pattern`` under ``reference_runs/``; the diverged ViT
    pilots are left out by name too (a loss spike is a second onset, not one trajectory)."""
    return [f for f in sorted(glob.glob(str(ROOT / "reference_runs" / pattern)))
            if "diverged" not in f and _finished(f)]


def _read(files: list[str]) -> list:
    return [read_run(f, name=str(Path(f).parent.relative_to(ROOT / "reference_runs"))) for f in files]


def _lm_series():
    out, names = [], []
    for d in sorted(glob.glob(str(ROOT / "reference_runs" / "lm-scaling-long" / "*-seed*"))):
        f = Path(d) / "train_loss.csv"
        if not f.is_file():
            continue
        a = np.genfromtxt(f, delimiter=",", names=True)
        step, loss = a["step"], a["train_loss"]
        sched = geometric_schedule(int(step[-1]), 53)
        y = np.array([loss[max(0, int(t) - 49): int(t) + 1].mean() for t in sched])
        out.append((sched.astype(float), y))
        names.append(f"lm/{Path(d).name}")
    return out, names


def _ar1(rng, n, rho=0.5):
    e = rng.normal(size=n)
    for i in range(1, n):
        e[i] = rho * e[i - 1] + np.sqrt(1 - rho ** 2) * e[i]
    return e


def synthetic_shape(shape, seed, n=53):
    """``(s, y)`` of one synthetic curve of ``shape`` (module docstring) on the reference
    schedule (53 geometric checkpoints of 23,040 steps, s = step^0.37)."""
    rng = np.random.default_rng(seed)
    s = geometric_schedule(23040, n).astype(float) ** 0.37
    S = s[-1]
    c = rng.uniform(0.05, 0.3)
    if shape == "two_phase":
        a1, a2 = rng.uniform(0.5, 1.0), rng.uniform(0.1, 0.3)
        s2, w2 = rng.uniform(0.45, 0.65) * S, rng.uniform(0.03, 0.06) * S
        clean = c + a1 * np.exp(-s / (rng.uniform(0.03, 0.08) * S)) + a2 / (1 + np.exp((s - s2) / w2))
        sigma = 0.004 * (a1 + a2)
    elif shape == "power_drift":
        a, b, al = rng.uniform(0.5, 1.0), rng.uniform(0.005, 0.02) * S, rng.uniform(0.3, 0.8)
        clean = c + a * (1 + s / b) ** (-al)
        sigma = 0.004 * a
    elif shape == "noisy_plateau":
        a = rng.uniform(0.5, 1.0)
        clean = c + a * np.exp(-s / (rng.uniform(0.02, 0.06) * S))
        sigma = 0.05 * a * 0.1
    else:
        raise ValueError(shape)
    return s, clean + sigma * _ar1(rng, s.size)


def _weibull_runs(n_seeds):
    from bandscope.keysearch.synthetic import make_run_synthetic

    return [make_run_synthetic(seed, noise=0.01, name=f"weibull/seed{seed}") for seed in range(n_seeds)]


def _summary(recs, set_name):
    rows = []
    for p in REPORT_PREFIXES:
        rr = [r for r in recs if abs(r["prefix"] - p) < 1e-9]
        if not rr:
            continue
        ok = [r for r in rr if "low" in r]
        cov = np.array([r["low"] <= r["truth"] <= r["high"] for r in ok], dtype=float)
        err = np.array([abs(r["point"] - r["truth"]) / r["range"] * 100 for r in ok])
        naive = np.array([abs(r["last"] - r["truth"]) / r["range"] * 100 for r in ok])
        wcov = np.array([r["weibull_floor_low"] <= r["truth"] <= r["weibull_floor_high"] for r in ok], dtype=float)
        width = np.array([(r["high"] - r["low"]) / r["range"] * 100 for r in ok])
        groups = {}
        for g in range(N_GROUPS):
            cg = [r["low"] <= r["truth"] <= r["high"] for r in ok if r["group"] == g]
            groups[g] = (len(cg), float(np.mean(cg)) if cg else float("nan"))
        statuses = {}
        for r in rr:
            if r["status"] != "ok":
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        se = float(np.sqrt(cov.mean() * (1 - cov.mean()) / cov.size)) if cov.size else float("nan")
        rows.append({"set": set_name, "prefix": p, "n": len(rr), "ok": len(ok),
                     "abstain_frac": 1 - len(ok) / len(rr), "coverage": float(cov.mean()) if cov.size else np.nan,
                     "coverage_se": se, "err_med": float(np.median(err)) if err.size else np.nan,
                     "naive_med": float(np.median(naive)) if naive.size else np.nan,
                     "width_med": float(np.median(width)) if width.size else np.nan,
                     "weibull_coverage": float(wcov.mean()) if wcov.size else np.nan,
                     "groups": groups, "statuses": statuses})
    return rows


def _print(rows, title):
    print(f"\n{title}")
    print("| prefix | forecast / saturated | floor coverage | median err % range (forecast / last value) "
          "| median width % range | single-Weibull coverage | coverage by group 0 / 1 / 2 / 3 / 4 / early (n) "
          "| abstained |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        g = " / ".join(f"{c:.2f} ({n})" if n else "- (0)" for n, c in r["groups"].values())
        bad = ", ".join(f"{k} {v}" for k, v in r["statuses"].items()) or "-"
        print(f"| {r['prefix']:.0%} | {r['ok']} / {r['n']} | {r['coverage']:.2f} ± {r['coverage_se']:.2f} | "
              f"{r['err_med']:.2f} / {r['naive_med']:.2f} | {r['width_med']:.1f} | {r['weibull_coverage']:.2f} | "
              f"{g} | {bad} |")


def _group_table(loro_by_set: dict) -> None:
    """Print the trust-signal table: per stage group, pooled over the 40-80 % prefixes, each
    set's number of forecasts, floor coverage, median width and median error (forecast / last
    value), both as % of the curve's range.

    Parameters
    ----------
    loro_by_set : dict
        Set name -> records with ``point, low, high, group`` (:func:`leave_one_run_out`).
    """
    print("\nstage groups, prefixes 40-80 % pooled: n, coverage, median width % range, "
          "median err % range (forecast / last value)")
    print("| stage group | stage | " + " | ".join(loro_by_set) + " |")
    print("|---|---|" + "---|" * len(loro_by_set))
    edges = (0.0,) + tuple(STAGE_EDGES) + (np.inf,)
    for g in range(N_GROUPS):
        cells = []
        for recs in loro_by_set.values():
            rr = [r for r in recs if "low" in r and r["group"] == g and 0.4 - 1e-9 <= r["prefix"] <= 0.8 + 1e-9]
            if not rr:
                cells.append("0")
                continue
            cov = np.mean([r["low"] <= r["truth"] <= r["high"] for r in rr])
            width = np.median([(r["high"] - r["low"]) / r["range"] * 100 for r in rr])
            err = np.median([abs(r["point"] - r["truth"]) / r["range"] * 100 for r in rr])
            naive = np.median([abs(r["last"] - r["truth"]) / r["range"] * 100 for r in rr])
            cells.append(f"{len(rr)}, {cov:.2f}, {width:.1f}, {err:.2f} / {naive:.2f}")
        label = (f"| {g} | {edges[g]:g}-{edges[g + 1]:g} | " if g < len(edges) - 1 else
                 f"| early | < {EARLY_CHECKPOINTS} checkpoints | ")
        print(label + " | ".join(cells) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="also write the summary rows as JSON")
    ap.add_argument("--write-calibration", action="store_true",
                    help="write the shipped calibration from all the corpus' runs")
    ap.add_argument("--synthetic-seeds", type=int, default=20)
    ap.add_argument("--cache", default=None, help="reuse/store the prefix records (a .json file)")
    ap.add_argument("--heldout", action="store_true",
                    help=f"also validate on reference_runs/{HELDOUT.split('/')[0]} (finished runs only), "
                         "with the calibration fitted on the whole corpus")
    args = ap.parse_args(argv)
    cache = Path(args.cache) if args.cache else None
    recs = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}

    def step(key, make):  # compute one run set's records unless cached; cache as we go
        if key not in recs:
            recs[key] = make()
            if cache is not None:
                cache.write_text(json.dumps(recs))

    for kind, pattern in CORPUS.items():
        step(kind, lambda pattern=pattern: prefix_records(_read(_run_files(pattern)), CALIBRATION_PREFIXES))
    lm, names = _lm_series()
    step("lm", lambda: prefix_records(lm, REPORT_PREFIXES, names=names))
    step("lm_all", lambda: prefix_records(lm, REPORT_PREFIXES, names=names, saturated_only=False))
    step("lm_cal", lambda: prefix_records(lm, CALIBRATION_PREFIXES, names=names, saturated_only=False))
    for shape in ("two_phase", "power_drift", "noisy_plateau"):
        curves = [synthetic_shape(shape, seed) for seed in range(args.synthetic_seeds)]
        step(shape, lambda shape=shape, curves=curves: prefix_records(
            curves, REPORT_PREFIXES, names=[f"{shape}/{i}" for i in range(len(curves))], saturated_only=False))
    step("weibull", lambda: prefix_records(_weibull_runs(max(args.synthetic_seeds // 4, 2)), REPORT_PREFIXES))
    corpus = [r for kind in CORPUS for r in recs[kind]]
    n_runs = {kind: len({r["run"] for r in recs[kind]}) for kind in CORPUS}
    corpus_txt = " + ".join(f"reference_runs/{kind} ({n_runs[kind]})" for kind in CORPUS)
    cal = calibrate(corpus, source=f"tools/validate_forecast.py --write-calibration: {corpus_txt}, "
                                   "prefixes 20-80 %")
    print(f"calibration: {len(cal.runs)} runs ({corpus_txt}), k per group {cal.k}, scores per group "
          f"{[len(s) for s in cal.scores]}; stage edges {list(STAGE_EDGES)}, early group: fewer than "
          f"{EARLY_CHECKPOINTS} checkpoints")
    all_rows = []
    loro_by_set = {}
    n_all = sum(n_runs.values())
    for kind in CORPUS:
        loro = leave_one_run_out(recs[kind], 0.95, calibration_records=corpus)
        loro_by_set[kind] = loro
        rows = _summary(loro, kind)
        all_rows += rows
        _print(rows, f"{kind}: leave-one-run-out over the {n_all} corpus runs; truth = mean of the last 10 % "
                     "of checkpoints of each saturated curve (bands and total)")
    for kind, title in (("lm", "lm (training loss, step time; saturated curves)"),
                        ("lm_all", "lm (all curves, saturated or not)"),
                        ("two_phase", "synthetic two_phase"), ("power_drift", "synthetic power_drift"),
                        ("noisy_plateau", "synthetic noisy_plateau"),
                        ("weibull", "synthetic weibull (the model's own shape; saturated bands)")):
        held = leave_one_run_out(recs[kind], 0.95, calibration_records=corpus)
        rows = _summary(held, kind)
        all_rows += rows
        _print(rows, f"{title}: calibration on all {n_all} corpus runs (held out by construction)")
    lm_self = [r for r in leave_one_run_out(recs["lm_cal"], 0.95, calibration_records=recs["lm_cal"])
               if any(abs(r["prefix"] - p) < 1e-9 for p in REPORT_PREFIXES)]
    for kind, recs_k in (("lm_self", lm_self), ("lm_self_saturated", [r for r in lm_self if r["saturated"]])):
        rows = _summary(recs_k, kind)
        all_rows += rows
        _print(rows, f"{kind}: LM curves calibrated leave one run out over the other LM runs "
                     f"({'saturated curves' if 'saturated' in kind else 'all curves'}; truth = mean of the last 10 %)")
    _group_table(loro_by_set)
    if args.heldout:  # never cached: the test set is evaluated once, with the calibration fitted above
        test_name = HELDOUT.split("/")[0]
        files = _run_files(HELDOUT)
        unfinished = len(glob.glob(str(ROOT / "reference_runs" / HELDOUT))) - len(files)
        held = leave_one_run_out(prefix_records(_read(files), CALIBRATION_PREFIXES), 0.95,
                                 calibration_records=corpus) if files else []
        runs = sorted({r["run"] for r in held})
        rows = _summary(held, "heldout")
        all_rows += rows
        _print(rows, f"heldout: reference_runs/{test_name} ({len(runs)} finished runs, {unfinished} unfinished "
                     f"left out), calibration on all {n_all} corpus runs (the shipped one)")
        print(f"runs: {', '.join(runs)}")
        _group_table({test_name: held})
    if args.out:
        Path(args.out).write_text(json.dumps(all_rows, indent=1, default=str))
    if args.write_calibration:
        path = ROOT / "src" / "bandscope" / "keysearch" / "forecast_calibration.json"
        path.write_text(json.dumps(cal.to_dict(), indent=1))
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
