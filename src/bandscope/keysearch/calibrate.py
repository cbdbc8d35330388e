"""Calibration corpora for floor forecasts: late-value truths, prefix records, leave-one-run-out.

The truth of a curve is what its run actually did late: the mean of its last 10 % of
checkpoints (at least one), used only when the curve has *saturated* (its drift over the last 5
checkpoints is below 2 % of its range, the ``saturated`` rule of
:func:`bandscope.keysearch.trajectory.floors`). :func:`prefix_records` forecasts each run from
its first 20 %, 30 %, ..., 80 % of checkpoints (a prefix that would reach the last 10 % is
skipped) and returns one
record per (run, curve, prefix) with the prefix's observables and the truth;
:func:`calibrate` fits a :class:`~bandscope.keysearch.conformal.Calibration` on them, and
:func:`leave_one_run_out` gives each record the interval calibrated without its own run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .conformal import Calibration, fit_calibration
from .forecasting import _curve_features, _forecast_curves, prefix_length

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    import numpy.typing as npt
    import xarray as xr

__all__ = ["late_truth", "prefix_records", "calibrate", "leave_one_run_out", "CALIBRATION_PREFIXES",
           "TRUTH_FRACTION", "SATURATION_TOL_PCT"]

#: prefixes (fractions of a run's checkpoints) forecast for calibration and validation
CALIBRATION_PREFIXES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: the truth is the mean of this final fraction of a run's checkpoints
TRUTH_FRACTION = 0.1
#: a curve is saturated when its last-5-checkpoint drift is below this % of its range
SATURATION_TOL_PCT = 2.0


def late_truth(Y: npt.ArrayLike, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, saturated, range)`` of curves Y (C, K): the mean of the last
    ``max(ceil(0.1 K), 1)`` checkpoints, drift over the last 5 < 2 % of max - min, and max - min.

    Examples
    --------
    >>> t, sat, r = late_truth(np.array([[5.0, 3, 2, 1.5, 1.2, 1.1, 1.05, 1.02, 1.01, 1.0, 1.0]]))
    >>> round(float(t[0]), 3), bool(sat[0]), float(r[0])  # last 5 drift 0.05 / 4 = 1.25 % < 2 %
    (1.0, True, 4.0)
    >>> bool(late_truth(np.linspace(5.0, 1.0, 11)[None])[1][0])  # still falling: 1.6 / 4 = 40 %
    False
    """
    Y = np.moveaxis(np.asarray(Y, dtype=np.float64), axis, -1)
    K = Y.shape[-1]
    k = max(int(np.ceil(TRUTH_FRACTION * K)), 1)
    truth = Y[..., K - k:].mean(axis=-1)
    rng = Y.max(axis=-1) - Y.min(axis=-1)
    last = Y[..., max(K - 5, 0):]
    with np.errstate(divide="ignore", invalid="ignore"):
        drift = np.where(rng > 0, (last.max(axis=-1) - last.min(axis=-1)) / rng * 100.0, 0.0)
    return truth, drift < SATURATION_TOL_PCT, rng


def _curves(run: xr.Dataset | tuple[npt.ArrayLike, npt.ArrayLike]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(s, Y (C, K), labels) of a run Dataset (bands then the full loss) or a plain series."""
    import xarray as xr

    if isinstance(run, xr.Dataset):
        L = np.asarray(run["band_loss"].transpose("checkpoint", "band").values, dtype=np.float64)
        s = np.asarray(run["param_time"].values, dtype=np.float64)
        good = np.isfinite(s) & np.isfinite(L).all(axis=1)
        K = int(good.sum())
        L, s = L[:K], s[:K]
        Y = np.concatenate([L.T, L.sum(axis=1)[None, :]], axis=0)
        return s, Y, [str(int(b)) for b in run["band"].values] + ["total"]
    s, y = run
    return np.asarray(s, dtype=np.float64), np.asarray(y, dtype=np.float64)[None, :], ["series"]


def prefix_records(runs: Sequence[xr.Dataset | tuple[npt.ArrayLike, npt.ArrayLike]],
                   prefixes: Sequence[float] = CALIBRATION_PREFIXES, *, names: Sequence[str] | None = None,
                   saturated_only: bool = True) -> list[dict[str, Any]]:
    """One record per (run, curve, prefix): the prefix's observables and the late truth.

    Parameters
    ----------
    runs : sequence
        Run Datasets (``bandscope.read_run``; bands and the full loss are used) or ``(s, y)``
        pairs of plain series.
    prefixes : sequence of float
        Fractions of each run's checkpoints to forecast from; a prefix that would contain the
        truth's checkpoints is skipped.
    names : sequence of str, optional
        Run names (default the Datasets' ``name`` attrs, or ``run{i}``).
    saturated_only : bool
        Keep only saturated curves (the only ones with a truth).

    Returns
    -------
    list of dict
        Keys ``run, curve, prefix, n, K, truth, range, saturated, status`` and, for curves the
        forecast fits (status ``ok``), the ensemble observables ``last, floor_ens, spread,
        drop_half, noise, range_seen, best`` and the Weibull model's ``weibull_floor, _low, _high``.
    """
    recs = []
    for i, run in enumerate(runs):
        name = (names[i] if names is not None else
                str(getattr(run, "attrs", {}).get("name", f"run{i}")) if hasattr(run, "attrs") else f"run{i}")
        s, Y, labels = _curves(run)
        K = Y.shape[1]
        truth, sat, rng = late_truth(Y)
        for p in prefixes:
            n = prefix_length(K, p)
            if n > K - max(int(np.ceil(TRUTH_FRACTION * K)), 1):
                continue  # the prefix would contain the truth's checkpoints
            keep = sat if saturated_only else np.ones_like(sat)
            if not keep.any():
                continue
            out = _forecast_curves(s[:n], Y[keep, :n])
            feats = _curve_features(s[:n], Y[keep, :n], out)
            for j, c in enumerate(np.flatnonzero(keep)):
                r = {"run": name, "curve": labels[c], "prefix": float(p), "n": int(n), "K": int(K),
                     "truth": float(truth[c]), "range": float(rng[c]), "saturated": bool(sat[c]),
                     "status": str(out["status"][j]), "reason": str(out["reason"][j]),
                     "last": float(Y[c, n - 1]), "weibull_floor": float(out["floor"][j]),
                     "weibull_floor_low": float(out["floor_low"][j]),
                     "weibull_floor_high": float(out["floor_high"][j])}
                f = feats[j]
                if f is not None:
                    r.update({k: f[k] for k in ("floor_ens", "spread", "drop_half", "noise", "range_seen")})
                    r["best"] = f["best"]
                    r["family_weight"] = {nm: float(w) for nm, w in zip(f["names"], f["weights"])}
                    r["family_floor"] = {nm: float(v) for nm, v in zip(f["names"], f["floors"])}
                recs.append(r)
    return recs


def calibrate(records: Sequence[Mapping[str, Any]], source: str = "") -> Calibration:
    """A :class:`Calibration` from the ``ok`` records of :func:`prefix_records`."""
    ok = [r for r in records if r["status"] == "ok" and np.isfinite(r["truth"])]
    if not ok:
        from ..errors import BandscopeInputError

        raise BandscopeInputError("no saturated curve with a forecast in the calibration runs: a curve "
                                  "needs its last 5 checkpoints within 2 % of its range (finished runs)")
    return fit_calibration(ok, runs=sorted({r["run"] for r in ok}), source=source)


def leave_one_run_out(records: Sequence[Mapping[str, Any]], confidence: float = 0.95,
                      calibration_records: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each ``ok`` record's point and interval from a calibration without its own run.

    ``calibration_records`` (default ``records``) is the corpus; a record's own run is left
    out of it. Returns copies of the records with ``point, low, high, group`` added.
    """
    corpus = [r for r in (calibration_records if calibration_records is not None else records)
              if r["status"] == "ok"]
    out = []
    cache = {}
    for r in records:
        r = dict(r)
        if r["status"] == "ok":
            if r["run"] not in cache:
                cache[r["run"]] = fit_calibration([x for x in corpus if x["run"] != r["run"]])
            cal = cache[r["run"]]
            p, lo, hi, g, _ = cal.interval(r["last"], r["floor_ens"], r["spread"], r["drop_half"],
                                           r["noise"], r["range_seen"], confidence, n_seen=r["n"])
            r.update(point=p, low=max(lo, 0.0), high=hi, group=g)
        out.append(r)
    return out
