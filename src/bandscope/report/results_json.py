"""The results of an analysis as one JSON document (``docs/format.md``, "JSON results"): every
per-run, per-band and per-fit variable under the names of the schema, plus the paper's tables.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import schema
from ..io.atomic import write_text_atomic
from .arrays import json_lists, values

__all__ = ["results_to_dict", "write_json"]


def _num(x: Any) -> Any:
    """JSON-safe scalar: NaN/inf -> None, numpy -> python."""
    if isinstance(x, (np.generic,)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, bytes):
        return x.decode()
    return x


#: JSON key -> results variable, from the one schema (:mod:`bandscope.schema`): per band and
#: threshold window (``fits``), the full-loss fit (``total``) and per band.
_FIT_KEYS = schema.json_keys("fit")
_TOTAL_KEYS = schema.json_keys("total")
_BAND_KEYS = schema.json_keys("band")


def _lists(results: xr.Dataset, var: str, dims: tuple[str, ...]) -> Any:
    """``results[var]`` transposed to ``dims`` as nested python lists of JSON-safe scalars: one
    conversion per variable instead of one ``sel`` per cell (:mod:`.arrays`)."""
    return json_lists(values(results, var, dims))


def results_to_dict(results: xr.Dataset, *, tables: Any = True) -> dict:
    """Results Dataset -> the JSON structure of ``docs/cli.md`` (NaN -> None).

    ``tables``: True (compute the paper's tables for ``summary``), False (leave them out), or
    a :class:`~bandscope.report.tables.ReportTables` already computed for ``results`` (reused).
    Each variable is converted once (:func:`_lists`), then the runs are assembled from lists.
    """
    out: dict = {"runs": {}, "summary": {}}
    windows = [str(w) for w in results["window"].values]
    metrics = [str(m) for m in results["metric"].values]
    bands = [str(int(b)) for b in results["band"].values]
    rbw = ("run", "band", "window")
    fit = {key: _lists(results, var, rbw) for key, var in _FIT_KEYS.items() if var in results}
    band = {key: _lists(results, var, ("run", "band")) for key, var in _BAND_KEYS.items() if var in results}
    total = {key: _lists(results, var, ("run",)) for key, var in _TOTAL_KEYS.items() if var in results}
    onset = _lists(results, "onset", rbw)
    width = _lists(results, "width", rbw)
    bsum = _lists(results, "band_sum_r2", ("run", "window"))
    rho = _lists(results, "rho", ("run", "window", "metric"))
    gamma, gamma_r2 = _lists(results, "gamma", ("run",)), _lists(results, "gamma_r2", ("run",))
    arch = _lists(results, "arch", ("run",)) if "arch" in results.coords else None
    seed = _lists(results, "seed", ("run",)) if "seed" in results.coords else None
    for i, run in enumerate(results["run"].values):
        r: dict[str, Any] = {"arch": arch[i] if arch else None, "seed": seed[i] if seed else None, "bands": {}}
        for j, b_key in enumerate(bands):
            b = {key: v[i][j] for key, v in band.items()}
            b["onset"] = onset[i][j][0]
            b["width"] = width[i][j][0]
            if "saturated" in b and b["saturated"] is not None:
                b["saturated"] = bool(b["saturated"])
            b["fits"] = {w: {key: v[i][j][k] for key, v in fit.items()} for k, w in enumerate(windows)}
            r["bands"][b_key] = b
        r["total"] = {key: v[i] for key, v in total.items()}
        r["total"]["band_sum_r2"] = bsum[i][0]
        r["total"]["band_sum_r2_by_window"] = {w: bsum[i][k] for k, w in enumerate(windows)}
        r["ordering"] = {m: rho[i][0][q] for q, m in enumerate(metrics)}
        r["ordering_by_window"] = {w: {m: rho[i][k][q] for q, m in enumerate(metrics)}
                                   for k, w in enumerate(windows)}
        r["gamma"] = {"gamma": gamma[i], "r2": gamma_r2[i]} if gamma[i] is not None else None
        out["runs"][str(run)] = r
    if tables is not False:
        from .tables import ReportTables

        rt = tables if isinstance(tables, ReportTables) else ReportTables(results)
        for key, df in rt.all().items():
            out["summary"][key] = json.loads(df.reset_index().to_json(orient="records"))
    out["summary"]["attrs"] = {
        k: [_num(x) for x in np.asarray(v).tolist()] if isinstance(v, (list, tuple, np.ndarray)) else _num(v)
        for k, v in results.attrs.items()
    }
    return out


def write_json(results: xr.Dataset, path: str | Path, *, tables: Any = True) -> Path:
    """Write :func:`results_to_dict` as JSON (NaN as ``null``); ``tables`` as there."""
    path = Path(path)
    data = results_to_dict(results, tables=tables)
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False, default=_num))
    return path
