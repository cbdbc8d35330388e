"""Summarise a directory of recorded runs: progress, parameter time vs arc length, saturation.

Usage: ``python tools/summarize_runs.py [DIR]`` (DIR defaults to
``reference_runs/recorded``). Reads every ``DIR/*/run.nc`` (finished or still running) and
prints one line per run and the per-band floor-window drift from ``bandscope.analyze`` (paper
A.9 floor window: the last 5 checkpoints; a band counts as saturated when it moved < 2 % of its
range there), the steady-fall part of that drift, and the checkpoint-to-checkpoint noise of
each band late in the run.

Noise (`late_noise_pct` of `bandscope.analyze`): the checkpoint-to-checkpoint sd of each band
over the last 12 checkpoints, from second differences in parameter time that cancel any
straight line, in % of the band's range. The range of 5 independent normal draws is 2.33 sd on
average, so a band whose noise exceeds about 0.9 % will usually show a floor-window drift of
2 % or more even if it has stopped falling: more training cannot fix that, only less noise (a
lower learning rate).
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from bandscope.io import read_run
from bandscope.keysearch.analysis import analyze

DEFAULT = Path(__file__).resolve().parents[1] / "reference_runs" / "recorded"


def main(root=DEFAULT) -> dict:
    runs, info = [], {}
    for d in sorted(p for p in Path(root).iterdir() if (p / "run.nc").exists()):
        cfg = json.loads((d / "config.json").read_text())
        ds = read_run(d / "run.nc", name=d.name)
        done = int(ds["step"][-1]) == cfg["total_steps"]
        runs.append(ds)
        info[d.name] = {
            "finished": done, "checkpoints": int(ds.sizes["checkpoint"]), "step": int(ds["step"][-1]),
            "total_steps": cfg["total_steps"], "final_mse": float(ds["mse"][-1]),
            "param_time": float(ds["param_time"][-1]), "arc_length": float(ds["arc_length"][-1]),
        }
    print(f"{'run':<12} {'state':<9} {'ckpts':>5} {'step':>11} {'mse':>9} {'s(chord)':>9} {'arc':>8} {'s/arc':>6}")
    for name, r in info.items():
        print(f"{name:<12} {'done' if r['finished'] else 'running':<9} {r['checkpoints']:>5} "
              f"{r['step']:>5}/{r['total_steps']:<5} {r['final_mse']:>9.6f} {r['param_time']:>9.3f} "
              f"{r['arc_length']:>8.3f} {r['param_time'] / r['arc_length']:>6.3f}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = [analyze(ds) for ds in runs]
    print("\nfloor-window drift (% of band range over the last 5 checkpoints; * = not saturated, >= 2 %)")
    bands = res[0]["band"].values
    print(f"{'run':<12} " + " ".join(f"{'b' + str(int(b)):>7}" for b in bands))
    for name, r in zip(info, res):
        drift = r["floor_window_drift_pct"].values.reshape(-1)
        sat = r["saturated"].values.reshape(-1)
        info[name]["drift_pct"] = drift.tolist()
        print(f"{name:<12} " + " ".join(f"{v:>6.2f}{' ' if s else '*'}" for v, s in zip(drift, sat)))
    for var, key, title in (
            ("floor_window_trend_pct", "trend_pct",
             "of which steady fall (floor_window_trend_pct: least-squares line in parameter time, % of range)"),
            ("late_noise_pct", "noise_pct",
             "late noise (sd of the last 12 checkpoints from second differences, % of range; "
             "above 0.9 a drift < 2 % is unlikely)")):
        print("\n" + title)
        for name, r in zip(info, res):
            vals = r[var].values.reshape(-1)
            info[name][key] = vals.tolist()
            print(f"{name:<12} " + " ".join(f"{v:>6.2f} " for v in vals))
    return info


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
