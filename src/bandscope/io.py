"""Reading and writing runs and results: wide CSV / Parquet logs, netCDF, JSON.

Formats are specified in ``docs/format.md``. Every reader returns a run Dataset built by
:func:`bandscope.run.make_run`, so a log that would give a wrong number (misnamed columns,
decreasing parameter time, NaN rows, an ``mse`` column the bands do not sum to) is refused with
an error that names the problem, or -- for NaN rows, on request -- treated in a documented way
that is recorded in ``attrs``.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .run import band_resolutions, make_run, validate_run

_BAND_RE = re.compile(r"^band_(\d+)$")
_KNOWN = {"step", "param_time", "epoch", "arc_length", "mse", "arch", "seed"}
_NETCDF_ENGINE = "netcdf4"


# --------------------------------------------------------------------------- wide logs
def run_from_frame(
    df: pd.DataFrame,
    *,
    name: str = "run",
    source: str = "",
    dropna: bool = False,
) -> xr.Dataset:
    """Build a run Dataset from a wide DataFrame (one row per checkpoint).

    Columns: ``param_time`` and ``band_1``, ``band_2``, ``band_4``, ... (contiguous dyadic
    resolutions from 1) are required; ``step``, ``epoch``, ``arc_length``, ``mse``, ``arch``,
    ``seed`` are optional. Other columns are ignored with a warning and listed in
    ``attrs['ignored_columns']``.

    Rows with NaN in ``param_time`` or a band column raise ``ValueError`` naming the rows,
    unless ``dropna=True``, which drops them and records their (0-based) row numbers in
    ``attrs['dropped_rows']``.

    Examples
    --------
    >>> df = pd.DataFrame({"step": [0, 10], "param_time": [0.0, 1.0],
    ...                    "band_1": [1.0, 0.5], "band_2": [2.0, 1.0]})
    >>> run_from_frame(df).band_loss.shape
    (2, 2)
    """
    cols = [str(c) for c in df.columns]
    df = df.copy()
    df.columns = cols
    bands = {}
    unknown = []
    for c in cols:
        m = _BAND_RE.match(c)
        if m:
            bands[int(m.group(1))] = c
        elif c not in _KNOWN:
            unknown.append(c)
    looks_like_band = [c for c in unknown if c.lower().startswith(("band", "b_")) or re.fullmatch(r"[Bb]\d+", c)]
    if looks_like_band:
        raise ValueError(
            f"{source or name}: columns {looks_like_band} look like band columns but are misnamed; "
            "expected lower-case 'band_<r>' with r = 1, 2, 4, ... (e.g. band_1, band_2, band_4)"
        )
    if "param_time" not in cols:
        raise ValueError(
            f"{source or name}: no 'param_time' column (parameter time, key search A.7); "
            f"columns are {cols}. Rename your column or compute it with bandscope.parameter_time"
        )
    if not bands:
        raise ValueError(
            f"{source or name}: no band columns; expected 'band_1', 'band_2', 'band_4', ...; "
            f"columns are {cols}"
        )
    res = sorted(bands)
    expected = band_resolutions(len(res)).tolist()
    if res != expected:
        raise ValueError(
            f"{source or name}: band columns {[f'band_{r}' for r in res]} are not the contiguous "
            f"dyadic set {[f'band_{r}' for r in expected]}; a Haar split of a 2^J image has "
            "one band per resolution 1, 2, 4, ..., 2^J"
        )
    if unknown:
        warnings.warn(f"{source or name}: ignoring columns {unknown}", stacklevel=3)
    band_cols = [bands[r] for r in res]
    numeric = ["param_time", *band_cols] + [c for c in ("step", "epoch", "arc_length", "mse") if c in cols]
    for c in numeric:
        try:
            df[c] = pd.to_numeric(df[c])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source or name}: column {c!r} is not numeric ({exc})") from None
    bad = df[["param_time", *band_cols]].isna().any(axis=1).to_numpy()
    dropped: list[int] = []
    if bad.any():
        rows = np.flatnonzero(bad).tolist()
        if not dropna:
            raise ValueError(
                f"{source or name}: NaN in param_time or band columns at rows {rows} (0-based, "
                "header excluded); fix the log or pass dropna=True (CLI: --dropna) to drop them"
            )
        dropped = rows
        df = df.loc[~bad].reset_index(drop=True)
    if len(df) < 2:
        raise ValueError(f"{source or name}: {len(df)} checkpoint rows; a run needs at least 2")
    step = None
    if "step" in cols:
        st = df["step"].to_numpy()
        if np.isnan(st.astype(float)).any():
            raise ValueError(f"{source or name}: NaN in 'step' at rows {np.flatnonzero(np.isnan(st)).tolist()}")
        if (np.diff(st) < 0).any():
            i = int(np.flatnonzero(np.diff(st) < 0)[0])
            raise ValueError(f"{source or name}: step decreases at row {i + 1} ({st[i]} -> {st[i + 1]}); "
                             "rows must be in training order")
        step = st.astype(np.int64)
    meta = {}
    for key in ("arch", "seed"):
        if key in cols:
            vals = df[key].dropna().unique()
            if len(vals) > 1:
                raise ValueError(f"{source or name}: column {key!r} is not constant: {list(vals)[:5]}")
            if len(vals):
                meta[key] = vals[0]
    extra = {}
    if dropped:
        extra["dropped_rows"] = dropped
    if unknown:
        extra["ignored_columns"] = unknown
    opt = {c: df[c].to_numpy(dtype=float) for c in ("epoch", "arc_length", "mse") if c in cols}
    return make_run(
        df[band_cols].to_numpy(dtype=np.float64),
        df["param_time"].to_numpy(dtype=np.float64),
        step,
        bands=res,
        name=name,
        arch=str(meta.get("arch", "")),
        seed=int(meta["seed"]) if "seed" in meta else -1,
        source=source,
        extra_attrs=extra,
        **opt,
    )


def run_to_frame(run: xr.Dataset) -> pd.DataFrame:
    """The wide form of a run (inverse of :func:`run_from_frame`)."""
    validate_run(run)
    out = {"step": run["step"].values} if "step" in run else {}
    out["param_time"] = run["param_time"].values
    for opt in ("epoch", "arc_length", "mse"):
        if opt in run:
            out[opt] = run[opt].values
    for j, r in enumerate(run["band"].values):
        out[f"band_{int(r)}"] = run["band_loss"].values[:, j]
    df = pd.DataFrame(out)
    if run.attrs.get("arch"):
        df["arch"] = run.attrs["arch"]
    if int(run.attrs.get("seed", -1)) >= 0:
        df["seed"] = int(run.attrs["seed"])
    return df


# --------------------------------------------------------------------------- runs
def read_run(path, *, name: str | None = None, dropna: bool = False) -> xr.Dataset:
    """Read one run from ``.csv``, ``.parquet`` / ``.pq`` or bandscope netCDF (``.nc``).

    Parameters
    ----------
    path : str or Path
    name : str, optional
        Run name; default the file's stem (a netCDF file's own ``name`` attribute is kept
        as ``recorded_name``).
    dropna : bool
        Drop wide-log rows with NaN (recorded in ``attrs['dropped_rows']``) instead of raising.

    Returns
    -------
    xarray.Dataset
        A validated run Dataset (``docs/format.md``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = pd.read_csv(path, float_precision="round_trip")  # lossless on every pandas (2.0 is not by default)
        return run_from_frame(df, name=name or path.stem, source=str(path), dropna=dropna)
    if suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
        return run_from_frame(df, name=name or path.stem, source=str(path), dropna=dropna)
    if suffix in (".nc", ".nc4", ".netcdf"):
        with xr.open_dataset(path, engine=_NETCDF_ENGINE) as f:
            ds = f.load()
        if "run" in ds.dims:
            raise ValueError(f"{path} holds {ds.sizes['run']} stacked runs; use bandscope.read_runs")
        if "band_loss" not in ds:
            raise ValueError(f"{path} is not a bandscope run (no band_loss); variables: {sorted(ds.data_vars)}")
        ds.attrs.setdefault("source", str(path))
        if ds.attrs.get("name") and not name:
            ds.attrs["recorded_name"] = ds.attrs["name"]
        ds.attrs["name"] = name or path.stem
        if dropna:
            bad = ~(np.isfinite(ds["band_loss"]).all("band") & np.isfinite(ds["param_time"]))
            if bool(bad.any()):
                ds.attrs["dropped_rows"] = np.flatnonzero(bad.values).tolist()
                ds = ds.isel(checkpoint=np.flatnonzero(~bad.values))
                ds = ds.assign_coords(checkpoint=np.arange(ds.sizes["checkpoint"]))
        return validate_run(ds)
    raise ValueError(f"{path}: unknown run file type {suffix!r}; expected .csv, .parquet, .pq or .nc")


def read_runs(paths: Iterable, *, dropna: bool = False) -> list[xr.Dataset]:
    """Read several run files.

    Names are the file stems. When stems repeat (e.g. ``cnn-seed45/run.nc`` and
    ``cnn-seed46/run.nc``, as ``bandscope train`` writes them), the parent directory's name is
    used instead for those files, and any remaining clash gets a ``-2``, ``-3``, ... suffix.
    """
    paths = [Path(p) for p in paths]
    stems = [p.stem for p in paths]
    names = [p.parent.name if stems.count(p.stem) > 1 and p.parent.name else p.stem for p in paths]
    seen: dict[str, int] = {}
    runs = []
    for p, nm in zip(paths, names):
        seen[nm] = seen.get(nm, 0) + 1
        runs.append(read_run(p, name=nm if seen[nm] == 1 else f"{nm}-{seen[nm]}", dropna=dropna))
    return runs


def write_run(run: xr.Dataset, path) -> Path:
    """Write a run to ``.nc`` (netCDF4, lossless), ``.csv`` or ``.parquet`` (wide form)."""
    path = Path(path)
    validate_run(run)
    suffix = path.suffix.lower()
    if suffix in (".nc", ".nc4"):
        write_netcdf_atomic(run, path)
    elif suffix == ".csv":
        run_to_frame(run).to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        run_to_frame(run).to_parquet(path, index=False)
    else:
        raise ValueError(f"{path}: unknown run file type {suffix!r}; expected .nc, .csv or .parquet")
    return path


def stack_runs(runs: Sequence[xr.Dataset] | Mapping[str, xr.Dataset]) -> xr.Dataset:
    """Stack runs along a ``run`` dim (coords ``run`` = name, ``arch``, ``seed``); shorter runs
    are padded at the end with NaN (see ``docs/format.md``)."""
    if isinstance(runs, Mapping):
        items = list(runs.items())
    else:
        items = [(r.attrs.get("name", f"run{i}"), r) for i, r in enumerate(runs)]
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"run names are not unique: {names}")
    keep = ["band_loss", "param_time", "step", "epoch", "arc_length", "mse"]
    parts = [validate_run(r)[[v for v in keep if v in r]] for _, r in items]
    stacked = xr.concat(parts, dim="run", join="outer", fill_value=np.nan, combine_attrs="drop")
    if "step" in stacked:
        stacked["step"] = stacked["step"].fillna(-1).astype(np.int64)
    return stacked.assign_coords(
        run=("run", names),
        arch=("run", [str(r.attrs.get("arch", "")) for _, r in items]),
        seed=("run", [int(r.attrs.get("seed", -1)) for _, r in items]),
    ).assign_attrs(bandscope_format="runs/1")


# --------------------------------------------------------------------------- results
def write_netcdf_atomic(ds: xr.Dataset, path) -> Path:
    """Write ``ds`` to netCDF atomically: a ``.tmp`` file beside ``path`` moved over it with
    ``os.replace``, so a reader never sees a half-written file and a crash leaves the previous
    version. Attributes that netCDF cannot store (bools, lists of strings, dicts) are converted
    (int, JSON text); bool variables are stored as int8. Every netCDF writer of bandscope
    (runs, results, the torch recorder, the LNP hook) goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs = {k: _nc_attr(v) for k, v in ds.attrs.items()}
    for v in ds.variables.values():
        v.attrs = {k: _nc_attr(a) for k, a in v.attrs.items()}
        if v.dtype == bool:
            v.attrs["dtype_note"] = "stored as int8 0/1"
    ds = ds.map(lambda a: a.astype(np.int8) if a.dtype == bool else a, keep_attrs=True)
    tmp = path.with_name(path.name + ".tmp")
    ds.to_netcdf(tmp, engine=_NETCDF_ENGINE)
    tmp.replace(path)
    return path


def _nc_attr(v):
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, (int, float, np.integer, np.floating)) for x in v):
            return np.asarray(v)
        return json.dumps(v, default=str)
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    if v is None:
        return ""
    return v


def write_results(results: xr.Dataset, path) -> Path:
    """Write an analysis results Dataset to netCDF (strings as variable-length strings)."""
    path = Path(path)
    write_netcdf_atomic(results, path)
    return path


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


_FIT_KEYS = {
    "n": "fit_n", "A": "A", "omega": "omega", "beta": "beta", "r2": "r2",
    "bic_weibull": "bic_weibull", "bic_exp": "bic_exp", "delta_bic": "delta_bic",
    "delta_bic_neff": "delta_bic_neff", "status": "status", "reason": "reason",
    "sse_weibull": "sse_weibull", "sse_exp": "sse_exp", "exp_A": "exp_A",
    "exp_omega": "exp_omega", "exp_r2": "exp_r2",
}
_TOTAL_KEYS = {
    "beta": "total_beta", "omega": "total_omega", "A": "total_A", "r2": "total_r2",
    "delta_bic": "total_delta_bic", "delta_bic_neff": "total_delta_bic_neff",
    "bic_weibull": "total_bic_weibull", "bic_exp": "total_bic_exp", "exp_r2": "total_exp_r2",
    "n": "total_n", "status": "total_status",
}


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
            b = {
                "floor": _sel(results["floor"], run=run, band=band),
                "onset": _sel(results["onset"], run=run, band=band, window=primary),
                "width": _sel(results["width"], run=run, band=band, window=primary),
                "initial_residual": _sel(results["initial_residual"], run=run, band=band),
            }
            for extra in ("floor_final", "floor_convention_diff_pct", "floor_window_drift_pct",
                          "floor_window_trend_pct", "late_noise_pct", "saturated"):
                if extra in results:
                    b[extra] = _sel(results[extra], run=run, band=band)
            if "saturated" in b and b["saturated"] is not None:
                b["saturated"] = bool(b["saturated"])
            b["fits"] = {}
            for w in windows:
                f = {}
                for key, var in _FIT_KEYS.items():
                    if var in results:
                        f[key] = _sel(results[var], run=run, band=band, window=w)
                f["onset"] = _sel(results["onset"], run=run, band=band, window=w)
                f["width"] = _sel(results["width"], run=run, band=band, window=w)
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
        from . import tables as _tables

        for key, df in _tables.all_tables(results).items():
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
    path.write_text(json.dumps(data, indent=1, allow_nan=False, default=_num))
    return path
