"""The run files of a sweep: finding and naming them, scanning their metadata, and opening them
as one lazy stack (``docs/sweeps.md``).

A sweep is the stack of runs of ``docs/format.md`` (a leading ``run`` dim, shorter runs padded at
the end with NaN) that is too large, or too slow, to read in one piece.
:func:`open_runs` reads only the metadata of each run file (checkpoint count, bands, ``arch``,
``seed``) and returns the stack as a dask-backed Dataset chunked along ``run``: each chunk of
``chunk_runs`` runs is read by :func:`bandscope.read_run` when, and only when, it is computed.
:func:`write_stack_zarr` writes a stack as one Zarr store, which :func:`open_runs` opens again.
The analysis of a sweep is :mod:`bandscope.keysearch.sweep`.
"""
from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ..errors import BandscopeInputError, input_error_from
from .atomic import write_tree_atomic
from .runfiles import _name_by_parent, _number_clashes, _zarr_attr, read_run
from .zarrstore import check_zarr_store

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["find_run_files", "run_names", "open_runs", "write_stack_zarr", "DEFAULT_CHUNK_RUNS"]

#: Runs per chunk: 32 runs of 53 checkpoints x 7 bands are ~0.1 MB of input, ~0.6 MB of results,
#: ~20 MB of temporaries and about a second of analysis (~0.1 s per call plus 15-30 ms per run).
DEFAULT_CHUNK_RUNS = 32

_OPTIONAL = ("epoch", "arc_length", "mse")
_NETCDF = (".nc", ".nc4", ".netcdf")


def _read_lock() -> Any:
    """The lock around reading run files in one process: the netCDF-C and HDF5 libraries are not
    thread-safe (two threads opening files at once fail with "NetCDF: Can't open HDF5
    attribute", or crash), so threads read one file at a time and analyse in parallel. It is
    xarray's own pair of locks for those libraries, taken in xarray's order, so bandscope's reads
    and xarray's exclude each other; they pickle to a distributed worker as that worker's own."""
    from xarray.backends.locks import HDF5_LOCK, NETCDFC_LOCK, combine_locks

    return combine_locks([NETCDFC_LOCK, HDF5_LOCK])


# --------------------------------------------------------------------------- files
def find_run_files(paths_or_glob: str | Path | Iterable[str | Path]) -> list[Path]:
    """Run files named by paths and/or glob patterns, in the order given.

    Each item is a path (kept as it is if it exists) or a glob pattern (``*``, ``?``, ``[``;
    ``**`` recurses), expanded by Python and sorted lexicographically, as a shell does. A Zarr
    run store is a directory ``NAME.zarr`` and matches like a file.

    Raises
    ------
    FileNotFoundError
        When a pattern matches nothing or a path does not exist (naming it).

    Examples
    --------
    >>> find_run_files("/nonexistent/*.nc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no run files match '/nonexistent/*.nc'; check the pattern ...
    """
    items = [paths_or_glob] if isinstance(paths_or_glob, (str, Path)) else list(paths_or_glob)
    if not items:
        raise FileNotFoundError("no run files given")
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.exists():
            out.append(p)
        elif glob.has_magic(str(item)):
            hits = sorted(glob.glob(str(item), recursive=True))
            if not hits:
                raise FileNotFoundError(
                    f"no run files match {str(item)!r}; check the pattern (and quote it on the "
                    "command line so that bandscope, not the shell, expands it)")
            out.extend(Path(h) for h in hits)
        else:
            raise FileNotFoundError(f"no such run file: {p}")
    return out


def run_names(paths: Iterable, recorded: Iterable[str] | None = None) -> list[str]:
    """Run names for ``paths`` by the rule of :func:`bandscope.read_runs` (``docs/format.md``,
    "Names"): the name a netCDF or Zarr run was recorded with (``recorded``, "" where none),
    else the file's stem; where stems repeat, files named by their stem take their parent
    directory's name; then ``-2``, ``-3``, ... for any clash left.

    Examples
    --------
    >>> run_names(["a/run.nc", "b/run.nc", "c/x.parquet", "d/x.parquet"], ["", "", "", ""])
    ['a', 'b', 'c', 'd']
    >>> run_names(["a/run.nc", "b/run.nc"], ["cnn", "cnn"])
    ['cnn', 'cnn-2']
    """
    paths = [Path(p) for p in paths]
    recorded = [""] * len(paths) if recorded is None else [str(r) for r in recorded]
    stems = Counter(p.stem for p in paths)
    names = []
    for p, rec in zip(paths, recorded):
        # read_runs names a netCDF file by its stem only when it has no recorded name; other
        # formats (read through read_run) always count as named by the stem
        by_stem = not rec or p.suffix.lower() not in _NETCDF
        names.append(_name_by_parent(p, rec or p.stem, by_stem, stems))
    return _number_clashes(names)


def _recorded(attrs: Mapping) -> str:
    """The recorded run name in file attributes ("" when absent or the placeholder "run")."""
    nm = str(attrs.get("name", "") or "")
    return "" if nm == "run" else nm


# --------------------------------------------------------------------------- metadata scans
# Each scanner reads a file's metadata only and returns
# {"n": checkpoints, "bands": resolutions, "vars": optional variables, "recorded": name, "arch", "seed"}.
def _scan_netcdf(path: Path) -> dict:
    import netCDF4

    with netCDF4.Dataset(path) as f:
        if "run" in f.dimensions:
            raise ValueError(f"{path} holds {f.dimensions['run'].size} stacked runs; give it to "
                             "analyze_sweep on its own: xarray.open_dataset(path, chunks={'run': 32})")
        if "band_loss" not in f.variables or "checkpoint" not in f.dimensions:
            raise ValueError(f"{path} is not a bandscope run (no band_loss over checkpoint); "
                             f"variables: {sorted(f.variables)}")
        attrs = {k: f.getncattr(k) for k in f.ncattrs()}
        return {"n": f.dimensions["checkpoint"].size,
                "bands": tuple(int(b) for b in np.asarray(f.variables["band"][:])),
                "vars": {v for v in _OPTIONAL if v in f.variables}, "recorded": _recorded(attrs),
                "arch": str(attrs.get("arch", "")), "seed": int(attrs.get("seed", -1))}


def _scan_zarr(path: Path) -> dict:
    check_zarr_store(path)  # metadata and every chunk present: a missing chunk would read as fill values
    with xr.open_zarr(path, chunks=None, consolidated=None) as f:
        if "run" in f.dims:
            raise ValueError(f"{path} holds {f.sizes['run']} stacked runs; open it on its own: "
                             "open_runs(path)")
        if "band_loss" not in f or "checkpoint" not in f.dims:
            raise ValueError(f"{path} is not a bandscope run (no band_loss over checkpoint); "
                             f"variables: {sorted(f.data_vars)}")
        return {"n": f.sizes["checkpoint"], "bands": tuple(int(b) for b in f["band"].values),
                "vars": {v for v in _OPTIONAL if v in f}, "recorded": _recorded(f.attrs),
                "arch": str(f.attrs.get("arch", "")), "seed": int(f.attrs.get("seed", -1))}


def _wide_meta(path: Path, columns: list[str], n: int, read_columns: Callable[[Sequence[str]], Any]) -> dict:
    bands = tuple(sorted(int(c[5:]) for c in columns if c.startswith("band_") and c[5:].isdigit()))
    meta = {"n": n, "bands": bands, "vars": {v for v in _OPTIONAL if v in columns},
            "recorded": "", "arch": "", "seed": -1}
    want = [c for c in ("arch", "seed") if c in columns]
    if want:
        df = read_columns(want)
        for key in want:
            vals = df[key].dropna().unique()
            if len(vals):
                meta[key] = str(vals[0]) if key == "arch" else int(vals[0])
    return meta


def _scan_parquet(path: Path) -> dict:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    cols = [str(c) for c in pf.schema_arrow.names]
    return _wide_meta(path, cols, pf.metadata.num_rows, lambda want: pf.read(columns=want).to_pandas())


def _scan_csv(path: Path) -> dict:
    import pandas as pd

    cols = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    with open(path, "rb") as f:
        n = sum(1 for line in f if line.strip()) - 1
    return _wide_meta(path, cols, n, lambda want: pd.read_csv(path, usecols=want))


#: Run-file scanners by suffix (``read_run`` reads the same suffixes).
SCANNERS = {".nc": _scan_netcdf, ".nc4": _scan_netcdf, ".netcdf": _scan_netcdf,
            ".parquet": _scan_parquet, ".pq": _scan_parquet, ".csv": _scan_csv, ".zarr": _scan_zarr}


def _scan(path: Path) -> dict:
    scanner = SCANNERS.get(path.suffix.lower())
    if scanner is None:
        raise ValueError(f"{path}: unknown run file type {path.suffix!r}; expected one of "
                         f"{sorted(SCANNERS)}")
    try:
        return scanner(path)
    except (BandscopeInputError, OSError):
        raise
    except (ValueError, TypeError, OverflowError, KeyError) as exc:  # a bad seed column, a broken header, ...
        raise input_error_from(exc, path, "cannot scan this run file") from exc


# --------------------------------------------------------------------------- lazy stack
def _read_block(paths: Sequence[str | os.PathLike[str]], names: Sequence[str], n_checkpoints: int,
                bands: Sequence[int] | np.ndarray, variables: Iterable[str], dropna: bool) -> dict[str, np.ndarray]:
    """Read runs into padded arrays (the per-chunk task of :func:`open_runs`)."""
    n, nb = len(paths), len(bands)
    out = {"band_loss": np.full((n, n_checkpoints, nb), np.nan),
           "param_time": np.full((n, n_checkpoints), np.nan),
           "step": np.full((n, n_checkpoints), -1, dtype=np.int64)}
    for v in variables:
        out[v] = np.full((n, n_checkpoints), np.nan)
    lock = _read_lock()
    for i, (p, nm) in enumerate(zip(paths, names)):
        with lock:
            run = read_run(p, name=nm, dropna=dropna)
        if tuple(int(b) for b in run["band"].values) != tuple(bands):
            raise ValueError(f"{p} has bands {run['band'].values.tolist()} but the sweep has "
                             f"{list(bands)}; all runs of a sweep need the same bands")
        k = run.sizes["checkpoint"]
        if k > n_checkpoints:
            raise ValueError(f"{p} has {k} checkpoints but had {n_checkpoints} when the sweep was "
                             "opened; the file changed, open the sweep again")
        out["band_loss"][i, :k] = run["band_loss"].transpose("checkpoint", "band").values
        out["param_time"][i, :k] = run["param_time"].values
        if "step" in run:
            out["step"][i, :k] = run["step"].values
        for v in variables:
            if v in run:
                out[v][i, :k] = run[v].values
    return out


def open_runs(paths_or_glob: str | Path | Iterable[str | Path], *,
              chunk_runs: int = DEFAULT_CHUNK_RUNS, dropna: bool = False) -> xr.Dataset:
    """Open many run files as one lazy stack along ``run``, chunked by ``chunk_runs`` runs.

    Parameters
    ----------
    paths_or_glob : str, Path or iterable of them
        Run files (``.nc``, ``.parquet``/``.pq``, ``.csv``, ``NAME.zarr`` stores) or glob
        patterns, see :func:`find_run_files`. A single Zarr store holding a stack of runs (a
        ``run`` dim, as :func:`write_stack_zarr` writes it) is opened as it is.
    chunk_runs : int
        Runs per dask chunk: the unit of reading, analysis and memory.
    dropna : bool
        Passed to :func:`bandscope.read_run` (drop wide-log rows with NaN).

    Returns
    -------
    xarray.Dataset
        The stack of ``docs/format.md`` (``band_loss`` (run, checkpoint, band), ``param_time``,
        ``step`` (-1 where padded) and the optional ``epoch``, ``arc_length``, ``mse`` present in
        any file, NaN where a file lacks them), dask-backed, one chunk per ``chunk_runs`` runs and
        one along ``checkpoint`` and ``band``. Coords ``run`` (names by the rule of
        :func:`bandscope.read_runs`), ``arch``, ``seed`` are read from metadata. Opening reads
        every file's metadata and the first file whole; no data chunk is read until computed.

    Raises
    ------
    FileNotFoundError
        No file matches.
    ValueError
        Files with different band sets (naming one file of each), unknown file types.

    Examples
    --------
    >>> import tempfile
    >>> from bandscope import write_run
    >>> from bandscope.keysearch.synthetic import make_runs_synthetic
    >>> d = Path(tempfile.mkdtemp())
    >>> for r in make_runs_synthetic(5):
    ...     _ = write_run(r, d / f"{r.attrs['name']}.nc")
    >>> stack = open_runs(str(d / "*.nc"), chunk_runs=2)
    >>> stack.band_loss.chunks[0], stack.sizes["checkpoint"]
    ((2, 2, 1), 53)
    """
    import dask
    import dask.array as da

    chunk_runs = int(chunk_runs)
    if chunk_runs < 1:
        raise ValueError(f"chunk_runs must be a positive number of runs, got {chunk_runs}")
    paths = find_run_files(paths_or_glob)
    if len(paths) == 1 and paths[0].suffix.lower() == ".zarr" and _is_stacked_zarr(paths[0]):
        return _open_stacked_zarr(paths[0], chunk_runs)
    metas = [_scan(p) for p in paths]
    bands = metas[0]["bands"]
    for p, m in zip(paths, metas):
        if m["bands"] != bands:
            raise ValueError(f"mixed band sets: {p} has bands {list(m['bands'])} but {paths[0]} has "
                             f"{list(bands)}; a sweep needs runs with the same bands (the same "
                             "image size); open each band set separately")
    n_checkpoints = max(m["n"] for m in metas)
    variables = tuple(v for v in _OPTIONAL if any(v in m["vars"] for m in metas))
    names = run_names(paths, [m["recorded"] for m in metas])
    first = read_run(paths[0], name=names[0], dropna=dropna)
    attrs = {v: dict(first[v].attrs) for v in ("band_loss", "param_time", "step", *variables) if v in first}
    data: dict[str, list] = {v: [] for v in ("band_loss", "param_time", "step", *variables)}
    for start in range(0, len(paths), chunk_runs):
        sl = slice(start, start + chunk_runs)
        n = len(paths[sl])
        block = dask.delayed(_read_block, pure=True)(
            [str(p) for p in paths[sl]], names[sl], n_checkpoints, bands, variables, dropna)
        for v in data:
            shape = (n, n_checkpoints, len(bands)) if v == "band_loss" else (n, n_checkpoints)
            dtype = np.int64 if v == "step" else np.float64
            data[v].append(da.from_delayed(block[v], shape=shape, dtype=dtype))
    dims = {"band_loss": ("run", "checkpoint", "band")}
    data_vars = {v: (dims.get(v, ("run", "checkpoint")), da.concatenate(parts, axis=0), attrs.get(v, {}))
                 for v, parts in data.items()}
    return xr.Dataset(
        data_vars,
        coords={
            "run": ("run", names),
            "checkpoint": ("checkpoint", np.arange(n_checkpoints, dtype=np.int64)),
            "band": ("band", np.asarray(bands, dtype=np.int64), dict(first["band"].attrs)),
            "arch": ("run", [m["arch"] for m in metas]),
            "seed": ("run", np.array([m["seed"] for m in metas], dtype=np.int64)),
        },
        attrs={"bandscope_format": "runs/1", "chunk_runs": chunk_runs},
    )


def _is_stacked_zarr(path: Path) -> bool:
    check_zarr_store(path)
    with xr.open_zarr(path, chunks=None, consolidated=None) as f:
        return "run" in f.dims


def _open_stacked_zarr(path: Path, chunk_runs: int) -> xr.Dataset:
    ds = xr.open_zarr(path, chunks=None, consolidated=None)
    for v in ds.variables.values():
        v.encoding = {}
    coords = {c: ds[c].load() for c in ("arch", "seed") if c in ds.coords}
    ds = ds.assign_coords(coords)
    return ds.chunk({"run": chunk_runs, "checkpoint": -1, "band": -1})


def write_stack_zarr(stack: xr.Dataset, path: str | os.PathLike[str], *, chunk_runs: int | None = None) -> Path:
    """Write a stack of runs (lazy or not) to one Zarr store, chunk by chunk.

    The store (Zarr format 2, consolidated metadata, layout in ``docs/format.md``) holds the
    stack as :func:`open_runs` returns it, stored in chunks of ``chunk_runs`` runs (default: the
    stack's own chunks, else :data:`DEFAULT_CHUNK_RUNS`). A lazy stack is streamed: memory stays
    bounded by the chunk. :func:`open_runs` on the store is the fastest way back to the sweep.
    """
    path = Path(path)
    if "run" not in stack.dims:
        raise ValueError(f"write_stack_zarr writes a stack with a 'run' dim; got dims {dict(stack.sizes)}; "
                         "write a single run with bandscope.write_run(run, 'NAME.zarr')")
    if chunk_runs is None:
        chunks = stack["band_loss"].chunks
        chunk_runs = chunks[0][0] if chunks else DEFAULT_CHUNK_RUNS
    ds = stack.chunk({"run": int(chunk_runs), "checkpoint": -1, "band": -1})
    ds.attrs = {k: _zarr_attr(v) for k, v in ds.attrs.items()}
    for v in ds.variables.values():
        v.attrs = {k: _zarr_attr(a) for k, a in v.attrs.items()}
        v.encoding = {}
    return write_tree_atomic(path, lambda tmp: ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2))
