"""The results of an analysis as one JSON document (``docs/format.md``, "JSON results"): every
per-run, per-band and per-fit variable under the names of the schema, plus the paper's tables.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import xarray as xr

from .. import schema
from ..io.atomic import write_text_atomic
from .tables import all_tables

__all__ = ["results_to_dict", "write_json"]


def _num(x):
    """JSON-safe scalar: NaN/inf -> None, numpy -> python."""
    if isinstance(x, (np.generic,)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, bytes):
        return x.decode()
    return x


def _sel(da: xr.DataArray, **idx):
    return _num(da.sel(**idx).values[()])


#: JSON key -> results variable, from the one schema (:mod:`bandscope.schema`): per band and
#: threshold window (``fits``), the full-loss fit (``total``) and per band.
_FIT_KEYS = schema.json_keys("fit")
_TOTAL_KEYS = schema.json_keys("total")
_BAND_KEYS = schema.json_keys("band")


def results_to_dict(results: xr.Dataset, *, tables: bool = True) -> dict:
    """Results Dataset -> the JSON structure of ``docs/cli.md`` (NaN -> None)."""
    out: dict = {"runs": {}, "summary": {}}
    windows = [str(w) for w in results["window"].values]
    primary = windows[0]
    for run in results["run"].values:
        r = {"arch": _num(results["arch"].sel(run=run).values[()]) if "arch" in results.coords else None,
             "seed": _num(results["seed"].sel(run=run).values[()]) if "seed" in results.coords else None,
             "bands": {}}
        for band in results["band"].values:
            b = {key: _sel(results[var], run=run, band=band)
                 for key, var in _BAND_KEYS.items() if var in results}
            b["onset"] = _sel(results["onset"], run=run, band=band, window=primary)
            b["width"] = _sel(results["width"], run=run, band=band, window=primary)
            if "saturated" in b and b["saturated"] is not None:
                b["saturated"] = bool(b["saturated"])
            b["fits"] = {}
            for w in windows:
                f = {}
                for key, var in _FIT_KEYS.items():
                    if var in results:
                        f[key] = _sel(results[var], run=run, band=band, window=w)
                b["fits"][w] = f
            r["bands"][str(int(band))] = b
        r["total"] = {k: _sel(results[v], run=run) for k, v in _TOTAL_KEYS.items() if v in results}
        r["total"]["band_sum_r2"] = _sel(results["band_sum_r2"], run=run, window=primary)
        r["total"]["band_sum_r2_by_window"] = {w: _sel(results["band_sum_r2"], run=run, window=w) for w in windows}
        r["ordering"] = {
            str(m): _sel(results["rho"], run=run, window=primary, metric=m) for m in results["metric"].values
        }
        r["ordering_by_window"] = {
            w: {str(m): _sel(results["rho"], run=run, window=w, metric=m) for m in results["metric"].values}
            for w in windows
        }
        r["gamma"] = {"gamma": _sel(results["gamma"], run=run), "r2": _sel(results["gamma_r2"], run=run)}
        if r["gamma"]["gamma"] is None:
            r["gamma"] = None
        out["runs"][str(run)] = r
    if tables:

        for key, df in all_tables(results).items():
            out["summary"][key] = json.loads(df.reset_index().to_json(orient="records"))
    out["summary"]["attrs"] = {
        k: [_num(x) for x in np.asarray(v).tolist()] if isinstance(v, (list, tuple, np.ndarray)) else _num(v)
        for k, v in results.attrs.items()
    }
    return out


def write_json(results: xr.Dataset, path) -> Path:
    """Write :func:`results_to_dict` as JSON (NaN as ``null``)."""
    path = Path(path)
    data = results_to_dict(results)
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False, default=_num))
    return path
