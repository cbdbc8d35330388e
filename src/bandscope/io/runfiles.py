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
import stat
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from .. import schema
from ..errors import BandscopeInputError, input_error_from
from ..run import FORMAT, band_resolutions, make_run, validate_run
from .atomic import write_atomic, write_tree_atomic

if TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from typing import Any

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
        raise BandscopeInputError(
            f"{source or name}: columns {looks_like_band} look like band columns but are misnamed; "
            "expected lower-case 'band_<r>' with r = 1, 2, 4, ... (e.g. band_1, band_2, band_4)"
        )
    if "param_time" not in cols:
        raise BandscopeInputError(
            f"{source or name}: no 'param_time' column (parameter time, key search A.7); "
            f"columns are {cols}. Rename your column or compute it with bandscope.parameter_time"
        )
    if not bands:
        raise BandscopeInputError(
            f"{source or name}: no band columns; expected 'band_1', 'band_2', 'band_4', ...; "
            f"columns are {cols}"
        )
    res = sorted(bands)
    expected = band_resolutions(len(res)).tolist()
    if res != expected:
        raise BandscopeInputError(
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
            raise BandscopeInputError(f"{source or name}: column {c!r} is not numeric ({exc})") from None
    bad = df[["param_time", *band_cols]].isna().any(axis=1).to_numpy()
    dropped: list[int] = []
    if bad.any():
        rows = np.flatnonzero(bad).tolist()
        if not dropna:
            raise BandscopeInputError(
                f"{source or name}: NaN in param_time or band columns at rows {rows} (0-based, "
                "header excluded); fix the log or pass dropna=True (CLI: --dropna) to drop them"
            )
        dropped = rows
        df = df.loc[~bad].reset_index(drop=True)
    if not len(df.columns):
        raise BandscopeInputError(f"{source or name}: no columns", path=source or None)
    if len(df) < 2:
        raise BandscopeInputError(f"{source or name}: {len(df)} checkpoint rows; a run needs at least 2")
    step = df["step"].to_numpy() if "step" in cols else None
    meta = {}
    for key in ("arch", "seed"):
        if key in cols:
            vals = df[key].dropna().unique()
            if len(vals) > 1:
                raise BandscopeInputError(f"{source or name}: column {key!r} is not constant: {list(vals)[:5]}")
            if len(vals):
                meta[key] = vals[0]
    seed = -1
    if "seed" in meta:
        try:
            seed_f = float(meta["seed"])
        except (TypeError, ValueError):
            seed_f = math.nan
        if not (math.isfinite(seed_f) and seed_f == int(seed_f)):
            raise BandscopeInputError(f"{source or name}: column 'seed' is {meta['seed']!r}, not an integer "
                                      "random seed", path=source or None)
        seed = int(seed_f)
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
        seed=seed,
        require_advance=False,
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
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"PK\x03\x04", "a zip archive (e.g. a torch .pt file)"),
    (b"PAR1", "Parquet data"),
    (b"\x89HDF\r\n\x1a\n", "HDF5 / netCDF4 data"),
    (b"CDF\x01", "netCDF3 data"),
    (b"CDF\x02", "netCDF3 data"),
    (b"CDF\x05", "netCDF3 data"),
    (b"\x80", "a Python pickle"),
)
_KIND_OF_SUFFIX = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".nc": "netcdf",
                   ".nc4": "netcdf", ".netcdf": "netcdf"}
_ACCEPTS = {"csv": (), "parquet": ("Parquet data",), "netcdf": ("HDF5 / netCDF4 data", "netCDF3 data")}


def _sniff(path: Path) -> str:
    """What the first bytes of ``path`` say it is ('' for text or unknown)."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    return ""


def _check_readable(path: Path, kind: str) -> None:
    """Refuse, naming the file, what cannot be a run file of this kind (before any codec runs)."""
    try:
        st = path.stat()
    except OSError:
        st = None  # (reading it below says why)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise BandscopeInputError(f"{path}: is a directory, not a run file", path=path)
    try:
        size = path.stat().st_size if st is None else st.st_size
        what = _sniff(path)
    except OSError as exc:
        raise BandscopeInputError(f"{path}: cannot read: {exc.strerror or exc}", path=path) from exc
    if size == 0:
        raise BandscopeInputError(f"{path}: empty file (0 bytes); a run file holds at least a header and "
                                  "two checkpoints", path=path)
    if kind == "csv" and what:
        fix = " (decompress it, e.g. gunzip, and name it .csv)" if what.startswith("gzip") else ""
        raise BandscopeInputError(f"{path}: named .csv but holds {what}, not CSV text{fix}", path=path)
    if kind in ("parquet", "netcdf") and what not in _ACCEPTS[kind]:
        found = what or "text or unknown bytes"
        raise BandscopeInputError(f"{path}: named {path.suffix} but holds {found}, not "
                                  f"{'Parquet' if kind == 'parquet' else 'netCDF'} data", path=path)


# pandas < 3 parses floats to within an ulp by default; "round_trip" reads back exactly what was
# written (pandas 3 does by default and deprecates the argument).
_CSV_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **_CSV_FLOATS)
    except pd.errors.EmptyDataError:
        raise BandscopeInputError(f"{path}: no header and no rows (empty CSV)", path=path) from None
    except pd.errors.ParserError as exc:  # e.g. "Expected 3 fields in line 4, saw 4"
        text = str(exc).strip().splitlines()[0].replace("Error tokenizing data. C error: ", "")
        raise BandscopeInputError(f"{path}: malformed CSV: {text}; every line needs one value per "
                                  "header column", path=path) from None
    except UnicodeDecodeError as exc:
        raise BandscopeInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); is it "
                                  "really a CSV file?", path=path) from None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:  # pyarrow's errors are these
        raise input_error_from(exc, path, "not a readable Parquet file (truncated or corrupt?)") from None


def _read_netcdf_direct(path: Path, shared: dict | None = None) -> xr.Dataset | None:
    """A run file read with netCDF4 into an in-memory Dataset, without xarray's backend (a
    third of its time per file); None for anything but a plain run file (numeric variables over
    ``checkpoint`` and ``band``, no groups, no packing, no time units, NaN or no fill values),
    which xarray then reads and decodes. The result is identical to ``xr.open_dataset(path).load()``
    for the files it takes (tested). ``shared``: see :func:`_direct_dataset`."""
    import netCDF4

    with netCDF4.Dataset(path) as f:
        return _direct_dataset(f, shared)


def _direct_dataset(f: Any, shared: dict | None = None) -> xr.Dataset | None:
    """The Dataset of :func:`_read_netcdf_direct` from an open ``netCDF4.Dataset``.

    Parameters
    ----------
    f : netCDF4.Dataset
        The open file (left open).
    shared : dict, optional
        Index coordinates already built for earlier files of the same read (the ``band`` and
        ``checkpoint`` coordinates of a sweep's files are mostly equal): one index is built per
        distinct coordinate and shared, immutable, by the Datasets (each has its own variable).

    Returns
    -------
    xarray.Dataset or None
        In memory; None when the file is not a plain run file (see :func:`_read_netcdf_direct`).
    """
    if f.groups or set(f.dimensions) - {"checkpoint", "band"}:
        return None
    f.set_auto_maskandscale(False)
    variables, coords, indexes = {}, {}, {}
    for name, v in f.variables.items():
        attrs = {k: v.getncattr(k) for k in v.ncattrs()}
        fill = attrs.pop("_FillValue", None)
        if (getattr(v.dtype, "kind", "O") not in "fiu" or {"scale_factor", "add_offset", "coordinates",
                                           "missing_value", "calendar"} & set(attrs)
                or "since" in str(attrs.get("units", ""))
                or (fill is not None and not (v.dtype.kind == "f" and np.isnan(fill)))):
            return None
        dims = v.dimensions
        if dims == (name,):  # a dimension coordinate, with its index
            var, indexes[name] = _index_coordinate(name, _whole_variable(v), attrs,
                                                   shared if fill is None else None)
            if fill is not None:
                var.encoding["_FillValue"] = fill
            coords[name] = var
        else:  # an ndarray of a numeric dtype: nothing for xarray to convert (fastpath)
            variables[name] = xr.Variable(dims, _whole_variable(v), attrs, None if fill is None else
                                          {"_FillValue": fill}, fastpath=True)
    attrs = {k: f.getncattr(k) for k in f.ncattrs()}
    try:  # the variables, indexes and dims are already consistent: no merge, no alignment
        return xr.Dataset._construct_direct({**variables, **coords}, set(coords), attrs=attrs, indexes=indexes)
    except (AttributeError, TypeError):  # pragma: no cover - another xarray: its public constructor
        return xr.Dataset(variables, attrs=attrs, coords=xr.Coordinates(coords, indexes=indexes))


_SCALAR_ATTR = (str, int, float, np.integer, np.floating)


def _index_coordinate(name: str, values: np.ndarray, attrs: dict, shared: dict | None) -> tuple[xr.Variable, Any]:
    """``(variable, index)`` of the dimension coordinate ``name``; the index is taken from
    ``shared`` when an equal coordinate (values, dtype, attrs) was built before, else built
    and kept there. The variable is always a new one (its attrs are the caller's own)."""
    key = None
    if shared is not None and all(isinstance(a, _SCALAR_ATTR) for a in attrs.values()):
        key = (name, values.dtype.str, values.tobytes(),
               tuple(sorted((k, type(a).__name__, a) for k, a in attrs.items())))
        hit = shared.get(key)
        if hit is not None:
            return hit[0].copy(deep=False), hit[1]
    built = xr.Coordinates({name: xr.Variable((name,), values, attrs)})
    var, index = built.variables[name], built.xindexes[name]
    if key is not None and shared is not None:
        shared[key] = (var, index)
    return var.copy(deep=False), index


def _whole_variable(v: Any) -> np.ndarray:
    """All values of a netCDF4 variable (auto mask and scale off), equal to ``v[...]``.

    ``v[...]`` spends most of its time turning the index into start/count/stride (about 0.1 ms
    per variable, seven variables per run file); this asks the netCDF library for the whole
    variable directly (``Variable._get``) and falls back to ``v[...]`` where that is not
    possible (an empty dimension, another netCDF4 version) or gives another shape or dtype.
    """
    shape = tuple(v.shape)
    get = getattr(v, "_get", None)
    if get is not None and shape and all(shape):
        try:
            arr = get(np.zeros(len(shape), np.intp), np.array(shape, np.intp), np.ones(len(shape), np.intp))
        except (TypeError, ValueError, AttributeError):
            arr = None
        if isinstance(arr, np.ndarray) and arr.shape == shape and arr.dtype == v.dtype:
            return arr
    return np.asarray(v[...])


def _open_netcdf(path: Path, shared: dict | None = None) -> xr.Dataset:
    try:
        ds = _read_netcdf_direct(path, shared) if _NETCDF_ENGINE == "netcdf4" else None
        if ds is not None:
            return ds
        with xr.open_dataset(path, engine=_NETCDF_ENGINE) as f:
            return f.load()
    except (OSError, ValueError, TypeError, RuntimeError, KeyError, IndexError) as exc:
        raise input_error_from(exc, path, "not a readable netCDF file (truncated or corrupt?)") from None


def _recorded_name(ds: xr.Dataset) -> str:
    """The name a run file was recorded with ('' when absent or the placeholder ``"run"``)."""
    nm = str(ds.attrs.get("name", "") or "")
    return "" if nm == "run" else nm


def _drop_nonfinite_rows(ds: xr.Dataset, dropna: bool) -> xr.Dataset:
    if not dropna or "checkpoint" not in ds.dims:
        return ds
    bad = ~np.isfinite(ds["param_time"])
    if "band_loss" in ds:
        bad = bad | ~np.isfinite(ds["band_loss"]).all("band")
    if bool(bad.any()):
        ds.attrs["dropped_rows"] = np.flatnonzero(bad.values).tolist()
        ds = ds.isel(checkpoint=np.flatnonzero(~bad.values))
        ds = ds.assign_coords(checkpoint=np.arange(ds.sizes["checkpoint"]))
    return ds


def default_run_name(path: str | os.PathLike[str]) -> str:
    """A run's default name: the file's stem, or the directory's name when the stem is ``run``
    (``runs/cnn-seed45/run.nc`` is ``cnn-seed45``), ``docs/format.md`` "Names".

    >>> default_run_name("runs/cnn-seed45/run.nc"), default_run_name("lm-small.nc")
    ('cnn-seed45', 'lm-small')
    """
    path = Path(path)
    if path.stem == "run" and path.parent.name not in ("", ".", ".."):
        return path.parent.name
    return path.stem


def _netcdf_run(ds: xr.Dataset, path: Path, name: str | None, dropna: bool) -> xr.Dataset:
    if "band_loss" not in ds and not ("param_time" in ds and ("train_loss" in ds or any(
            str(v).startswith("lnp_") for v in ds.data_vars))):
        raise BandscopeInputError(f"{path} is not a bandscope run (no band_loss, and no param_time with "
                                  f"train_loss or lnp_* variables); variables: {sorted(ds.data_vars)}", path=path)
    ds.attrs["source"] = str(ds.attrs.get("source", "") or "") or str(path)
    recorded = _recorded_name(ds)
    if recorded and name and name != recorded:
        ds.attrs["recorded_name"] = recorded
    ds.attrs["name"] = name or recorded or default_run_name(path)
    ds = _drop_nonfinite_rows(ds, dropna)
    try:
        return validate_run(ds, require_advance=False, require_bands=False)
    except BandscopeInputError as exc:
        if str(path) in str(exc):
            raise
        raise BandscopeInputError(f"{path}: {exc}", path=path) from None


def unstack_runs(stacked: xr.Dataset, *, source: str = "", dropna: bool = False) -> list[xr.Dataset]:
    """Split a stacked Dataset (``run`` dim, ``docs/format.md``) back into validated runs.

    Trailing NaN padding of each run is dropped; padding anywhere else is an error naming the
    run and the checkpoints (or, with ``dropna``, those rows are dropped and listed in the run's
    ``attrs['dropped_rows']``). Names come from the ``run`` coordinate; ``arch``/``seed``
    coordinates become attributes.

    >>> from bandscope.keysearch.synthetic import make_run_synthetic
    >>> st = stack_runs([make_run_synthetic(1, n_bands=3, name="a"), make_run_synthetic(2, n_bands=3, name="b")])
    >>> [r.attrs["name"] for r in unstack_runs(st)]
    ['a', 'b']
    """
    where = f"{source}: " if source else ""
    if "run" not in stacked.dims:
        raise BandscopeInputError(f"{where}no 'run' dimension: this is a single run, not a stack")
    if stacked.sizes["run"] == 0:
        raise BandscopeInputError(f"{where}the stack holds no runs (run dimension of length 0)", path=source or None)
    if "band_loss" not in stacked:
        raise BandscopeInputError(f"{where}not a stack of bandscope runs (no band_loss); variables: "
                                  f"{sorted(stacked.data_vars)}", path=source or None)
    names = ([str(v) for v in stacked["run"].values] if "run" in stacked.coords
             else [f"run{i}" for i in range(stacked.sizes["run"])])
    out = []
    for i, nm in enumerate(names):
        one = stacked.isel(run=i)
        attrs = {k: v for k, v in stacked.attrs.items() if k != "bandscope_format"}
        for key in ("arch", "seed"):
            if key in one.coords or key in one.data_vars:
                val = one[key].values.item()
                attrs[key] = val.decode() if isinstance(val, bytes) else val
                one = one.drop_vars(key)
        one = one.drop_vars("run", errors="ignore")
        bl = np.asarray(one["band_loss"].transpose("checkpoint", "band").values, dtype=np.float64)
        pt = np.asarray(one["param_time"].values, dtype=np.float64)
        good = np.isfinite(pt) & np.isfinite(bl).all(axis=1)
        n = int(np.flatnonzero(good)[-1]) + 1 if good.any() else 0
        one = one.isel(checkpoint=slice(0, n))
        one = one.assign_coords(checkpoint=np.arange(n))
        one.attrs = {**attrs, "name": nm, "source": f"{source} (run {nm!r})" if source else f"run {nm!r}",
                     "bandscope_format": FORMAT}
        if n == 0:
            raise BandscopeInputError(f"{where}run {nm!r} has no valid checkpoint (all padding)",
                                      path=source or None)
        one = _drop_nonfinite_rows(one, dropna)
        out.append(validate_run(one, require_advance=False))
    return out


def read_run(path: str | os.PathLike[str], *, name: str | None = None, dropna: bool = False) -> xr.Dataset:
    """Read one run from ``.csv``, ``.parquet`` / ``.pq`` or bandscope netCDF (``.nc``).

    Parameters
    ----------
    path : str or Path
    name : str, optional
        Run name. Default: the name the run was recorded with (a netCDF file's ``name``
        attribute, e.g. ``RunRecorder(name="my-run")``), else the file's stem. An explicit
        ``name`` that differs from the recorded one keeps the latter as ``recorded_name``.
    dropna : bool
        Drop rows with NaN in ``param_time`` or a band (recorded in ``attrs['dropped_rows']``,
        0-based rows of the file) instead of raising.

    Returns
    -------
    xarray.Dataset
        A validated run Dataset (``docs/format.md``). A run whose parameter time has not
        advanced yet (a recording in progress) is returned; :func:`bandscope.analyze` refuses it.

    Raises
    ------
    FileNotFoundError
        No such file.
    bandscope.errors.BandscopeInputError
        (a ``ValueError``) the file is empty, corrupt, in another format than its name says,
        holds stacked runs (use :func:`read_runs`) or breaks a rule of ``docs/format.md``; the
        message names the file and the rows.
    """
    path = Path(path)
    try:
        return _read_run(path, name, dropna)
    except BandscopeInputError as exc:
        if exc.path is None:
            exc.path = str(path)
        raise


def _read_run(path: Path, name: str | None, dropna: bool) -> xr.Dataset:
    if not path.exists():
        raise FileNotFoundError(2, f"no such run file: {path}", str(path))
    if path.suffix.lower() == ".zarr":
        return read_zarr_run(path, name=name, dropna=dropna)
    if path.is_dir():
        raise BandscopeInputError(f"{path}: is a directory, not a run file (give the files, e.g. "
                                  f"'{path}/*.nc')", path=path)
    suffix = path.suffix.lower()
    kind = _KIND_OF_SUFFIX.get(suffix)
    if kind is None:
        raise BandscopeInputError(f"{path}: unknown run file type {suffix!r}; expected .csv, .parquet, .pq or .nc",
                                  path=path)
    _check_readable(path, kind)
    if kind in ("csv", "parquet"):
        df = _read_csv(path) if kind == "csv" else _read_parquet(path)
        return run_from_frame(df, name=name or path.stem, source=str(path), dropna=dropna)
    ds = _open_netcdf(path)
    if "run" in ds.dims:
        raise BandscopeInputError(f"{path} holds {ds.sizes['run']} stacked runs; read it with "
                                  "bandscope.read_runs (the command line does this for you)", path=path)
    return _netcdf_run(ds, path, name, dropna)


def _read_file_runs(path: Path, dropna: bool, shared: dict | None = None) -> list[tuple[xr.Dataset, bool]]:
    """The runs of one file as ``(run, named_by_stem)``: one for a run file, several for a stack
    (``shared``: the index coordinates of the files read before, :func:`_direct_dataset`)."""
    path = Path(path)
    if path.suffix.lower() in (".nc", ".nc4", ".netcdf") and path.exists():
        _check_readable(path, "netcdf")
        ds = _open_netcdf(path, shared)
        if "run" in ds.dims:
            return [(r, False) for r in unstack_runs(ds, source=str(path), dropna=dropna)]
        run = _netcdf_run(ds, path, None, dropna)
        return [(run, not _recorded_name(ds))]
    return [(read_run(path, dropna=dropna), True)]


def read_runs_by_kind(paths: Iterable, *, dropna: bool = False) -> tuple[list[xr.Dataset], list[Path], list[Path]]:
    """The runs of the files that have band losses, and which files have LNP measurements,
    opening each plain netCDF run file once.

    ``bandscope analyze`` sends a file with ``band_loss`` to the key-search analysis and one
    with LNP variables to the spectral-reach analysis (:func:`bandscope.io.lnp_runfiles.run_kinds`);
    this reads the first kind and finds the second in one pass. A plain netCDF run file (the
    files of a sweep) is opened once, for its names and its data together; other files are
    classified by ``run_kinds`` and read by the readers of :func:`read_runs`.

    Parameters
    ----------
    paths : iterable of str or Path
        Run files.
    dropna : bool
        As in :func:`read_runs`.

    Returns
    -------
    runs : list of xarray.Dataset
        ``read_runs`` of the files with band losses (same names, same checks).
    lnp_only, lnp_and_bands : list of Path
        Files with LNP measurements and no band losses, and files with both.

    Raises
    ------
    bandscope.errors.BandscopeInputError
        As :func:`read_runs`.
    """
    from .lnp_runfiles import kinds_of, run_kinds

    band_paths: list[Path] = []
    opened: dict[int, xr.Dataset] = {}
    lnp_only: list[Path] = []
    both: list[Path] = []
    shared: dict = {}  # index coordinates shared by the files' Datasets (_direct_dataset)
    for p in (Path(q) for q in paths):
        ds, kinds = _open_with_kinds(p, kinds_of, shared)
        if kinds is None:
            kinds = run_kinds(p)
        if "bands" in kinds:
            if ds is not None:
                opened[len(band_paths)] = ds
            band_paths.append(p)
        if "lnp" in kinds:
            (both if "bands" in kinds else lnp_only).append(p)
    runs = _read_runs(band_paths, dropna, opened) if band_paths else []
    return runs, lnp_only, both


def _open_with_kinds(path: Path, kinds_of: Callable[[set[str], set[str]], set[str]], shared: dict | None = None
                     ) -> tuple[xr.Dataset | None, set[str] | None]:
    """Open a netCDF run file once: its kinds (``kinds_of`` of its names) and, for a plain run
    file, its Dataset (:func:`_direct_dataset`).

    Parameters
    ----------
    path : pathlib.Path
        A run file.
    kinds_of : callable
        ``(variables, dims) -> set of kinds`` (:func:`bandscope.io.lnp_runfiles.kinds_of`).
    shared : dict, optional
        Index coordinates of the files read before (:func:`_direct_dataset`).

    Returns
    -------
    tuple
        ``(Dataset or None, kinds or None)``; ``(None, None)`` for files this does not take
        (not netCDF by suffix or content, unreadable: the ordinary readers decide and explain).
    """
    if path.suffix.lower() not in (".nc", ".nc4", ".netcdf") or _NETCDF_ENGINE != "netcdf4":
        return None, None
    try:
        _check_readable(path, "netcdf")
        import netCDF4

        with netCDF4.Dataset(path) as f:
            kinds = kinds_of(set(f.variables), set(f.dimensions))
            ds = _direct_dataset(f, shared) if kinds == {"bands"} else None
    except Exception:  # noqa: BLE001 -- the ordinary reader opens it again and names the problem
        return None, None
    return ds, kinds


def read_runs(paths: Iterable, *, dropna: bool = False) -> list[xr.Dataset]:
    """Read several run files; a netCDF file holding stacked runs contributes each of its runs.

    Names: a run's recorded name (netCDF ``name`` attribute, or the ``run`` coordinate of a
    stack), else the file's stem. When stems repeat (e.g. ``cnn-seed45/run.nc`` and
    ``cnn-seed46/run.nc``) the parent directory's name is used instead for those files, and any
    remaining clash gets a ``-2``, ``-3``, ... suffix.

    Raises
    ------
    bandscope.errors.BandscopeInputError
        As :func:`read_run`, or no paths given.
    """
    return _read_runs([Path(p) for p in paths], dropna, {})


def _read_runs(paths: list[Path], dropna: bool, opened: Mapping[int, xr.Dataset]) -> list[xr.Dataset]:
    """:func:`read_runs`, with the Datasets of some files already read (``opened``: index in
    ``paths`` -> the file's Dataset from :func:`_direct_dataset`)."""
    if not paths:
        raise BandscopeInputError("no run files given")
    stems = Counter(p.stem for p in paths)  # (a count per file would be quadratic in a sweep)
    shared: dict = {}  # index coordinates shared by the files' Datasets (_direct_dataset)
    items = []
    for i, p in enumerate(paths):
        if i in opened:
            ds = opened[i]
            runs = ([(_netcdf_run(ds, p, None, dropna), not _recorded_name(ds))] if "run" not in ds.dims
                    else [(r, False) for r in unstack_runs(ds, source=str(p), dropna=dropna)])
        else:
            runs = _read_file_runs(p, dropna, shared)
        for run, by_stem in runs:
            _rename(run, _name_by_parent(p, str(run.attrs["name"]), by_stem, stems))
            items.append(run)
    for run, nm in zip(items, _number_clashes(str(run.attrs["name"]) for run in items)):
        _rename(run, nm)
    return items


def _rename(run: xr.Dataset, name: str) -> None:
    """Set the run's ``name`` attribute where the naming rule changed it (an unchanged name keeps
    its object)."""
    if str(run.attrs["name"]) != name:
        run.attrs["name"] = name


def _name_by_parent(path: Path, name: str, by_stem: bool, stem_counts: Mapping[str, int]) -> str:
    """The second step of the naming rule of :func:`read_runs` (``docs/format.md``, "Names"): a
    run named by its file's stem (``by_stem``) takes the parent directory's name when other files
    of the sweep have the same stem (``stem_counts``: files per stem); else ``name``.

    >>> _name_by_parent(Path("cnn-seed45/run.nc"), "run", True, {"run": 2})
    'cnn-seed45'
    """
    return path.parent.name if by_stem and stem_counts.get(path.stem, 0) > 1 and path.parent.name else name


def _number_clashes(names: Iterable[str]) -> list[str]:
    """The last step of the naming rule of :func:`read_runs`: each repeat of a name, in order,
    gets ``-2``, ``-3``, ...

    >>> _number_clashes(["a", "b", "a", "a"])
    ['a', 'b', 'a-2', 'a-3']
    """
    seen: dict[str, int] = {}
    out = []
    for nm in names:
        seen[nm] = seen.get(nm, 0) + 1
        out.append(nm if seen[nm] == 1 else f"{nm}-{seen[nm]}")
    return out


def write_run(run: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a run to ``.nc`` (netCDF4, lossless, atomic), ``.csv`` or ``.parquet`` (wide form).

    Every format is written to a temporary file beside ``path`` and moved over it, so a reader
    never sees a half-written file (see :func:`write_netcdf_atomic`).
    """
    path = Path(path)
    validate_run(run, require_advance=False, require_bands=path.suffix.lower() not in (".nc", ".nc4"))
    suffix = path.suffix.lower()
    if suffix in (".nc", ".nc4"):
        write_netcdf_atomic(run, path)
    elif suffix == ".csv":
        write_atomic(path, lambda tmp: run_to_frame(run).to_csv(tmp, index=False))
    elif suffix in (".parquet", ".pq"):
        write_atomic(path, lambda tmp: run_to_frame(run).to_parquet(tmp, index=False))
    elif suffix == ".zarr":
        write_zarr_run(run, path)
    else:
        raise BandscopeInputError(f"{path}: unknown run file type {suffix!r}; expected .nc, .csv or .parquet",
                                  path=path)
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


# --------------------------------------------------------------------------- zarr runs
def write_zarr_run(run: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write one run as a Zarr store: a directory ``NAME.zarr`` (layout in ``docs/format.md``).

    The store holds the run Dataset unchanged (variables, coords, ``attrs``) in Zarr format 2
    with consolidated metadata (``.zmetadata``), which zarr-python 2 and 3 both read. The
    store is written beside ``path`` as ``NAME.zarr.<pid>.<random>.tmp`` and renamed over it,
    so a reader never sees a half-written store; an existing store at ``path`` is replaced
    (moved aside to ``....old`` first, so for a moment there is no store at ``path``).

    Examples
    --------
    >>> import tempfile
    >>> from bandscope.keysearch.synthetic import make_run_synthetic
    >>> d = Path(tempfile.mkdtemp())
    >>> run = make_run_synthetic(0)
    >>> back = read_zarr_run(write_zarr_run(run, d / "a.zarr"))
    >>> bool((back.band_loss == run.band_loss).all()), back.attrs["name"]
    (True, 'synthetic-seed0')
    """
    path = Path(path)
    if "run" in run.dims:
        raise BandscopeInputError(f"{path}: write_zarr_run writes one run, got {run.sizes['run']} "
                                  "stacked runs; write a stack with bandscope.keysearch.sweep.write_stack_zarr",
                                  path=path)
    validate_run(run, require_advance=False)
    ds = run.copy()
    ds.attrs = {k: _zarr_attr(v) for k, v in ds.attrs.items()}
    for v in ds.variables.values():
        v.attrs = {k: _zarr_attr(a) for k, a in v.attrs.items()}
        v.encoding = {}
    return write_tree_atomic(path, lambda tmp: ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2))


def _zarr_attr(v: Any) -> Any:
    """Zarr attributes are JSON: numpy scalars and arrays become python numbers and lists."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_zarr_attr(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _zarr_attr(x) for k, x in v.items()}
    return v


def read_zarr_run(path: str | os.PathLike[str], *, name: str | None = None, dropna: bool = False) -> xr.Dataset:
    """Read one run from a Zarr store written by :func:`write_zarr_run` (``docs/format.md``).

    ``name``, ``dropna``, the attributes kept and the checks are those of netCDF in
    :func:`read_run`. A store holding a stack of runs (a ``run`` dim) is refused: open it with
    :func:`bandscope.keysearch.sweep.open_runs`.
    """
    from .zarrstore import check_zarr_store, load_zarr

    path = check_zarr_store(path)  # metadata and every chunk present
    try:
        f = xr.open_zarr(path, consolidated=None)
    except Exception as exc:  # noqa: BLE001 -- zarr's own words, but naming the store
        raise BandscopeInputError(f"{path}: not a readable Zarr store ({type(exc).__name__}: {exc})",
                                  path=path) from exc
    with f:
        ds = load_zarr(f, path).load()
    for v in ds.variables.values():
        v.encoding = {}
    if "run" in ds.dims:
        raise BandscopeInputError(f"{path} holds {ds.sizes['run']} stacked runs; use "
                                  "bandscope.keysearch.sweep.open_runs", path=path)
    return _netcdf_run(ds, path, name, dropna)  # names, source, dropna and checks as for netCDF


# --------------------------------------------------------------------------- results
def write_netcdf_atomic(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` to netCDF atomically: a temporary file unique to this writer
    (``NAME.<pid>.<random>.tmp`` beside ``path``) moved over it with ``os.replace``, so a
    reader never sees a half-written file and a crash leaves the previous version. A failed
    write (e.g. disk full, raised as ``OSError`` with ``errno.ENOSPC`` naming the path) removes
    its temporary file and changes nothing. Attributes that netCDF cannot store (bools, lists
    of strings, dicts) are converted (int, JSON text); bool variables are stored as int8. Every
    netCDF writer of bandscope (runs, results, the torch recorder, the LNP hook) goes through
    here; ownership of a run file between writers is :class:`bandscope.io.lock.RunFileLock`'s
    job."""
    path = Path(path)
    ds = ds.copy()
    ds.attrs = {k: _nc_attr(v) for k, v in ds.attrs.items()}
    for v in ds.variables.values():
        v.attrs = {k: _nc_attr(a) for k, a in v.attrs.items()}
        if v.dtype == bool:
            v.attrs["dtype_note"] = "stored as int8 0/1"
    ds = ds.map(lambda a: a.astype(np.int8) if a.dtype == bool else a, keep_attrs=True)
    return write_atomic(path, lambda tmp: ds.to_netcdf(tmp, engine=_NETCDF_ENGINE), size_hint=int(ds.nbytes))


def _nc_attr(v: Any) -> Any:
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


def write_results(results: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write an analysis results Dataset to netCDF (strings as variable-length strings)."""
    path = Path(path)
    write_netcdf_atomic(results, path)
    return path


def read_results(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a results Dataset written by :func:`write_results` (any bandscope version): names
    renamed since it was written are mapped to the current ones (:func:`bandscope.schema.upgrade`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such results file: {path}")
    with xr.open_dataset(path, engine=_NETCDF_ENGINE) as f:
        ds = f.load()
    if "bandscope_results" not in ds.attrs:
        raise ValueError(f"{path} is not a bandscope results file (no 'bandscope_results' attr)")
    return schema.upgrade(ds)
