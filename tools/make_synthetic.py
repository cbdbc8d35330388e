"""Write the synthetic stand-in runs used by `bandscope reproduce` until recorded runs exist.

These are NOT training runs: band losses are drawn from per-band Weibull residuals plus floors
and log-normal noise (bandscope.keysearch.synthetic.make_run_synthetic), on the paper's 53-checkpoint
schedule, 7 bands (64x64), 12 runs labelled synthetic-cnn / synthetic-vit with seeds 45-50.
The true parameters are in the JSON file beside each CSV.

    python tools/make_synthetic.py      # writes reference_runs/synthetic/
"""
import json
from pathlib import Path

from bandscope.io import write_run
from bandscope.keysearch.synthetic import make_runs_synthetic

here = Path(__file__).resolve().parents[1] / "reference_runs" / "synthetic"
for run in make_runs_synthetic(12):
    name = run.attrs["name"]
    write_run(run, here / f"{name}.csv")
    truth = {k: run.attrs[k] for k in ("true_A", "true_omega", "true_beta", "true_onset", "true_floor", "noise")}
    (here / f"{name}.truth.json").write_text(json.dumps(truth, indent=1))
    print("wrote", name)
