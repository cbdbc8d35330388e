"""Convert the spectral-reach LM runs (``tools/lm_scaling.py`` folders) into run files (``run/1``).

    python tools/lm_runs_to_runfiles.py reference_runs/lm-scaling reference_runs/lm-scaling-long

Each ``ROOT/SIZE-seedN/`` folder (``config.json``, ``lnp.nc``, ``train_loss.csv``,
``heldout.csv``, ``probe_trained.nc``, ``probe_random.nc``) becomes one netCDF run file
``ROOT/runs/SIZE-seedN.nc`` in the layout of ``docs/format.md`` (runs without a panel):

- over ``lnp_step`` (index coordinate, with ``lnp_window``): every ``lnp_*`` variable of
  ``lnp.nc``, unchanged;
- over ``checkpoint`` (coordinate ``step``): ``train_loss`` at the steps where the held-out loss
  was logged plus 120 log-spaced steps (the per-step value the loop logged; ``train_loss.csv``
  holds every step, too many to ship), and ``heldout_loss`` (NaN at the steps where it was not
  logged; NaN ``train_loss`` at step ``total_steps``, after the last optimizer step);
- the linear probes of spectral reach §5.1 over (``probe_backbone``, ``probe_lnp_step``), with
  ``probe_backbone`` = ``trained`` / ``random`` and the window index ``probe_lnp_window``:
  ``probe_spectral_position``, ``probe_spectral_position_cross``, ``probe_network_scale_norm``,
  ``probe_loss_scale_norm`` (the probe files' ``lnp_*`` variables of the same names);
- attrs ``format = "run/1"``, ``name``, ``n_parameters`` (``config.json``), ``created``,
  ``versions``, ``arch``, ``seed``, ``size``, ``total_steps``, ``source``.

Every variable and coordinate takes its attrs (``units``, ``long_name``, ``definition``) from
``bandscope.schema``, kind ``lm_run`` (``docs/lnp.md``), with the units of the model filled in
(:func:`units`: nats per byte for a byte-level vocabulary, logits, tokens). There is no
``lnp_arc_length``: these runs did not record parameter time. Only finished runs
are converted (an ``lnp.nc``, and ``probe_random.nc`` if the probes were begun). Variables are zlib-compressed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bandscope import schema

N_LOG_STEPS = 120
PROBE_VARS = ("spectral_position", "spectral_position_cross", "network_scale_norm", "loss_scale_norm")

#: the schema kind of the run files written here: every variable's attrs come from it
KIND = "lm_run"


def units(cfg: dict) -> dict[str, str]:
    """The model-dependent units of ``config.json``'s model, for the placeholders of kind ``lm_run``.

    ``loss``: the loss is the mean next-token cross-entropy in nats (``tools/lm_scaling.py``), per byte for a
    byte-level vocabulary (256 tokens), else per token. The other placeholders keep the kind's defaults.
    """
    vocab = int(cfg["model"]["vocab_size"])
    return {"loss": "nats / byte" if vocab == 256 else "nats / token"}


def checkpoint_steps(heldout_steps, total_steps: int, n_log: int = N_LOG_STEPS) -> np.ndarray:
    """The held-out steps and ``n_log`` log-spaced steps in [0, total_steps), sorted, unique."""
    logs = np.rint(np.geomspace(1, total_steps, n_log)).astype(np.int64) - 1
    return np.unique(np.concatenate([np.asarray(heldout_steps, dtype=np.int64), logs]))


def convert(run_dir: Path) -> xr.Dataset:
    """One ``tools/lm_scaling.py`` folder as a run Dataset (see the module docstring)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    lnp = xr.load_dataset(run_dir / "lnp.nc")
    train = pd.read_csv(run_dir / "train_loss.csv")
    held = pd.read_csv(run_dir / "heldout.csv")
    held = held[held["phase"] == "train"]
    steps = checkpoint_steps(held["step"], int(cfg["steps"]))
    train_loss = train.set_index("step")["train_loss"].reindex(steps).to_numpy(dtype=np.float64)
    heldout_loss = held.set_index("step")["heldout_loss"].reindex(steps).to_numpy(dtype=np.float64)

    ctx = units(cfg)
    ds = xr.Dataset(coords={"step": ("checkpoint", steps, _attrs("step", ctx)),
                            "lnp_step": ("lnp_step", lnp["lnp_step"].values.astype(np.int64),
                                         _attrs("lnp_step", ctx)),
                            "lnp_window": ("lnp_step", lnp["lnp_window"].values.astype(np.int64),
                                           _attrs("lnp_window", ctx))})
    ds["train_loss"] = ("checkpoint", train_loss, _attrs("train_loss", ctx))
    ds["heldout_loss"] = ("checkpoint", heldout_loss, _attrs("heldout_loss", ctx))
    for var in lnp.data_vars:
        ds[var] = ("lnp_step", lnp[var].values.astype(np.float64), _attrs(str(var), ctx))

    if (run_dir / "probe_trained.nc").exists():  # runs made with --probe-steps 0 have no probes
        ds = _with_probes(ds, run_dir, ctx)
    ds.attrs = {
        "format": "run/1", "name": run_dir.name, "n_parameters": int(cfg["n_params"]),
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "versions": json.dumps({"converted_by": "tools/lm_runs_to_runfiles.py", "numpy": np.__version__,
                                "xarray": xr.__version__}),
        "arch": "TinyGPT " + json.dumps(cfg["model"], sort_keys=True), "seed": int(cfg["seed"]),
        "size": cfg["size"], "total_steps": int(cfg["steps"]),
        "source": f"{run_dir.parent.name}/{run_dir.name} (tools/lm_scaling.py)",
        "lnp_note": str(lnp.attrs.get("note", "")),
    }
    return ds


def _attrs(name: str, ctx: dict[str, str]) -> dict[str, str]:
    """The attrs of variable ``name`` of kind ``lm_run`` in the units ``ctx`` (a KeyError names an unknown one)."""
    return schema.attrs(KIND, name, **ctx)


def _with_probes(ds: xr.Dataset, run_dir: Path, ctx: dict[str, str]) -> xr.Dataset:
    """``ds`` with the §5.1 linear probes of ``probe_trained.nc`` / ``probe_random.nc``."""
    probes = {k: xr.load_dataset(run_dir / f"probe_{k}.nc") for k in ("trained", "random")}
    pstep = probes["trained"]["lnp_step"].values.astype(np.int64)
    if not np.array_equal(pstep, probes["random"]["lnp_step"].values):
        raise ValueError(f"{run_dir}: the two probes were measured at different steps")
    ds = ds.assign_coords(probe_backbone=("probe_backbone", ["trained", "random"], _attrs("probe_backbone", ctx)),
                          probe_lnp_step=("probe_lnp_step", pstep, _attrs("probe_lnp_step", ctx)),
                          probe_lnp_window=("probe_lnp_step", probes["trained"]["lnp_window"].values.astype(np.int64),
                                            _attrs("probe_lnp_window", ctx)))
    for var in PROBE_VARS:
        data = np.stack([probes[k][f"lnp_{var}"].values for k in ("trained", "random")]).astype(np.float64)
        ds[f"probe_{var}"] = (("probe_backbone", "probe_lnp_step"), data, _attrs(f"probe_{var}", ctx))
    return ds


def write(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to ``path`` (netCDF, every variable zlib level 9)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = {v: {"zlib": True, "complevel": 9} for v in ds.data_vars}
    tmp = path.with_suffix(".tmp.nc")
    ds.to_netcdf(tmp, encoding=enc)
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="folders holding SIZE-seedN/ run folders")
    args = ap.parse_args(argv)
    n = 0
    for root in map(Path, args.roots):
        for d in sorted(root.glob("*-seed*")):
            probes_started = (d / "probe_trained.nc").exists()
            if not (d / "lnp.nc").exists() or (probes_started and not (d / "probe_random.nc").exists()):
                print(f"skipping {d}: unfinished (no lnp.nc, or probes begun and not finished)", file=sys.stderr)
                continue
            out = write(convert(d), root / "runs" / f"{d.name}.nc")
            print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
            n += 1
    return 0 if n else 2


if __name__ == "__main__":
    sys.exit(main())
