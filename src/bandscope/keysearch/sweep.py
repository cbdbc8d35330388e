"""Sweeps: thousands of runs opened lazily and analysed in parallel on dask (``docs/sweeps.md``).

A sweep is the stack of runs of ``docs/format.md`` (a leading ``run`` dim, shorter runs padded at
the end with NaN) that is too large, or too slow, to read and analyse in one piece.

* :func:`open_runs` reads only the metadata of each run file (checkpoint count, bands, ``arch``,
  ``seed``) and returns the stack as a dask-backed Dataset chunked along ``run``: each chunk of
  ``chunk_runs`` runs is read by :func:`bandscope.read_run` when, and only when, it is computed.
* :func:`analyze_sweep` maps :func:`bandscope.analyze` over the run-chunks with
  :func:`xarray.map_blocks` and returns the results Dataset of ``docs/format.md``, still lazy.
  Every per-run result of :func:`bandscope.analyze` depends only on that run (its floors,
  crossings, windows and fits are computed from its own checkpoints), so the chunked results
  equal those of one call on the whole stack; cross-run summaries (the ordering medians of
  :func:`bandscope.report.tables.all_tables`) are computed afterwards from the per-run results.
* :func:`compute_sweep` computes it on the threaded scheduler, or on ``workers`` processes of a
  local ``dask.distributed`` cluster, optionally with a progress bar on stderr.

Memory is bounded by the chunk: a worker holds the runs of the chunk it analyses, plus the
per-run results gathered so far (about 20 kB per run of 53 checkpoints and 7 bands).
"""
from __future__ import annotations

import contextlib
import glob
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .. import io as _io
from .. import schema
from ..errors import BandscopeInputError, input_error_from
from ..io.atomic import write_tree_atomic
from ..io.runfiles import _zarr_attr
from ..io.zarrstore import check_zarr_store

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterator, Sequence
    from concurrent.futures import Executor
    from typing import Any

    from .options import AnalysisOptions

__all__ = ["find_run_files", "run_names", "open_runs", "analyze_sweep", "compute_sweep",
           "local_cluster", "scheduler_client", "write_stack_zarr", "DEFAULT_CHUNK_RUNS",
           "analyze_files", "RunFiles"]

#: Runs per chunk: 32 runs of 53 checkpoints x 7 bands are ~0.1 MB of input, ~0.6 MB of results,
#: ~20 MB of temporaries and about a second of analysis (~0.1 s per call plus 15-30 ms per run).
DEFAULT_CHUNK_RUNS = 32

_OPTIONAL = ("epoch", "arc_length", "mse")
_NETCDF = (".nc", ".nc4", ".netcdf")


def _read_lock() -> Any:
    """One lock per process around reading run files: the netCDF-C / HDF5 libraries are not
    thread-safe (two threads opening files at once fail with "NetCDF: Can't open HDF5
    attribute"), so the threaded scheduler reads one file at a time and analyses in parallel.
    A ``SerializableLock`` pickles to a distributed worker as that worker's own lock."""
    from dask.utils import SerializableLock

    return SerializableLock("bandscope-read-run")


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
    stems = [p.stem for p in paths]
    names = []
    for p, rec in zip(paths, recorded):
        # read_runs names a netCDF file by its stem only when it has no recorded name; other
        # formats (read through read_run) always count as named by the stem
        by_stem = not rec or p.suffix.lower() not in _NETCDF
        names.append(p.parent.name if by_stem and stems.count(p.stem) > 1 and p.parent.name
                     else rec or p.stem)
    seen: dict[str, int] = {}
    out = []
    for nm in names:
        seen[nm] = seen.get(nm, 0) + 1
        out.append(nm if seen[nm] == 1 else f"{nm}-{seen[nm]}")
    return out


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
            run = _io.read_run(p, name=nm, dropna=dropna)
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
    first = _io.read_run(paths[0], name=names[0], dropna=dropna)
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


# --------------------------------------------------------------------------- analysis
def _proxy_run(stack: xr.Dataset, n_checkpoints: int) -> xr.Dataset:
    """A small run with the stack's bands and units: analysed once to learn the results'
    variables, dims, dtypes and attrs (the template of :func:`xarray.map_blocks`)."""
    from ..run import make_run

    s = np.linspace(0.0, 1.0, n_checkpoints)
    j = np.arange(stack.sizes["band"])
    loss = 1e-3 * (1 + j) + np.exp(-((s[:, None] / (0.1 * (1 + j))) ** 1.2))
    run = make_run(loss, s, np.arange(n_checkpoints) * 10, bands=stack["band"].values,
                   epoch=np.linspace(0.0, 50.0, n_checkpoints), name="proxy")
    for v in ("band_loss", "param_time"):
        run[v].attrs = dict(stack[v].attrs)
    return run


def _analyze(runs: xr.Dataset | list[xr.Dataset], options: AnalysisOptions | None,
             overrides: Mapping[str, Any]) -> xr.Dataset:
    from .analysis import analyze

    return analyze(runs, **overrides) if options is None else analyze(runs, options, **overrides)


def _option(options: AnalysisOptions | None, overrides: Mapping[str, Any], name: str, default: Any) -> Any:
    """An analysis option from the keyword overrides, else the options object, else default."""
    if name in overrides:
        return overrides[name]
    return default if options is None else getattr(options, name, default)


def _analyze_block(block: xr.Dataset, options: AnalysisOptions | None, overrides: Mapping[str, Any],
                   checkpoints: np.ndarray,
                   names: list) -> xr.Dataset:
    """bandscope.analyze on one chunk of runs, padded to the sweep's checkpoints."""
    res = _analyze(block, options, overrides)
    fill = {k: (-1 if np.issubdtype(v.dtype, np.integer) else np.nan)
            for k, v in res.data_vars.items() if "checkpoint" in v.dims}
    res = res.reindex(checkpoint=checkpoints, fill_value=fill)
    return res[names]


def analyze_sweep(stack: xr.Dataset, options: AnalysisOptions | None = None, *, chunk_runs: int | None = None,
                  **overrides: Any) -> xr.Dataset:
    """The key-search analysis of a stack of runs, lazily, one dask task per chunk of runs.

    Parameters
    ----------
    stack : xarray.Dataset
        A stack with a ``run`` dim (:func:`open_runs`, :func:`bandscope.stack_runs`), dask-backed
        or in memory.
    options, **overrides
        Passed to :func:`bandscope.analyze` unchanged (the analysis options object and/or
        keywords ``windows``, ``floor``, ``k``, ...).
    chunk_runs : int, optional
        Re-chunk ``run`` to this many runs per task (default: the stack's chunks, or
        :data:`DEFAULT_CHUNK_RUNS` for a stack in memory).

    Returns
    -------
    xarray.Dataset
        The results Dataset of :func:`bandscope.analyze` (``docs/format.md``), dask-backed and
        not yet computed; ``.compute()`` or :func:`compute_sweep` runs it. Per-run values equal
        those of ``bandscope.analyze(stack)`` (the chunk's runs do not influence each other);
        the dataset attribute ``gamma_note`` is not gathered from the chunks (it is ``""``; a
        run without a γ has NaN ``gamma``).

    Examples
    --------
    >>> from bandscope import stack_runs
    >>> from bandscope.keysearch.synthetic import make_runs_synthetic
    >>> lazy = analyze_sweep(stack_runs(make_runs_synthetic(4)), chunk_runs=2)
    >>> lazy.beta.chunks[0]
    (2, 2)
    >>> res = lazy.compute()
    >>> str(res.status.sel(window="0.95/0.01", band=64).values[0])
    'ok'
    """
    if "run" not in stack.dims:
        raise ValueError(f"analyze_sweep takes a stack with a 'run' dim; got dims {dict(stack.sizes)}; "
                         "for one run call bandscope.analyze")
    if "band_loss" not in stack or "param_time" not in stack:
        raise ValueError(f"not a stack of runs: needs band_loss and param_time, has {sorted(stack.data_vars)}")
    if chunk_runs is None:
        chunks = stack["band_loss"].chunks
        chunk_runs = max(chunks[0]) if chunks else DEFAULT_CHUNK_RUNS
    stack = stack.chunk({"run": int(chunk_runs), "checkpoint": -1, "band": -1})
    n_checkpoints = stack.sizes["checkpoint"]
    k = int(_option(options, overrides, "k", 5))
    min_points = int(_option(options, overrides, "min_points", 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proxy = _analyze(_proxy_run(stack, max(53, k + 1, min_points)), options, overrides)
    checkpoints = stack["checkpoint"].values
    run_chunks = stack.chunks["run"]
    tvars = {}
    import dask.array as da

    for name, var in proxy.data_vars.items():
        shape = tuple(stack.sizes["run"] if d == "run" else n_checkpoints if d == "checkpoint"
                      else var.sizes[d] for d in var.dims)
        chunks = tuple(run_chunks if d == "run" else (n,) for d, n in zip(var.dims, shape))
        dtype = object if var.dtype.kind in "UO" else var.dtype
        tvars[name] = xr.Variable(var.dims, da.empty(shape, chunks=chunks, dtype=dtype), dict(var.attrs))
    coords = {c: proxy.coords[c].variable for c in proxy.coords if "run" not in proxy[c].dims
              and c != "checkpoint"}
    coords.update(run=stack["run"].variable, checkpoint=stack["checkpoint"].variable)
    for c in ("arch", "seed"):
        coords[c] = (stack[c].variable if c in stack.coords
                     else xr.Variable("run", np.full(stack.sizes["run"], "" if c == "arch" else -1)))
    attrs = dict(proxy.attrs)
    attrs["gamma_note"] = ""
    template = schema.annotate_coords(xr.Dataset(tvars, coords=coords, attrs=attrs))
    return xr.map_blocks(_analyze_block, stack,
                         kwargs={"options": options, "overrides": dict(overrides),
                                 "checkpoints": checkpoints, "names": list(tvars)},
                         template=template)


def compute_sweep(results: xr.Dataset, *, workers: int | None = None, progress: bool = False) -> xr.Dataset:
    """Compute a lazy sweep on the threaded scheduler or on a local distributed cluster.

    Parameters
    ----------
    results : xarray.Dataset
        From :func:`analyze_sweep` (any dask-backed Dataset works).
    workers : int, optional
        Compute inside :func:`local_cluster` (``LocalCluster(n_workers=workers,
        threads_per_worker=1, processes=True)``), closed after. Without it, dask's current
        scheduler: a ``distributed.Client`` if one is active (e.g. inside ``local_cluster``),
        else the threaded scheduler unless ``dask.config`` says otherwise.
    progress : bool
        A progress bar on stderr (dask's ``ProgressBar``; distributed's ``progress`` on a client).

    Returns
    -------
    xarray.Dataset
        In memory; string variables (``status``, ``reason``, ...) as fixed-width unicode.
    """
    if workers is not None:
        with local_cluster(workers):
            return compute_sweep(results, progress=progress)
    client = _active_client()
    if client is not None and progress:
        from dask.distributed import progress as dprogress

        results = results.persist()
        with contextlib.redirect_stdout(sys.stderr):
            dprogress(results)
        print(file=sys.stderr)
        out = results.compute()
    elif progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            out = results.compute()
    else:
        out = results.compute()
    return _tidy(out)


def _active_client() -> Any:
    try:
        from dask.distributed import get_client
    except ImportError:  # pragma: no cover - distributed ships with the dask extra
        return None
    try:
        return get_client()
    except ValueError:
        return None


def _warm() -> None:
    """Import the analysis in a fresh worker (seconds: scipy, lmfit, statsmodels)."""
    import bandscope.io  # noqa: F401
    import bandscope.keysearch.analysis  # noqa: F401


#: dask config of the local clusters: no ``MALLOC_TRIM_THRESHOLD_`` (below); no statistical
#: profiler (a thread sampling the task's stack every 10 ms, for the dashboard, which is off);
#: the event loops' watchdog tick, the system monitor and the nannies' memory check once a
#: second or two instead of every 20, 500 and 100 ms (these wake-ups cost the process that runs
#: the scheduler and the nannies 60-70 % of its CPU while the workers compute)
_WORKER_CONFIG: dict[str, object] = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                     "distributed.worker.profile.enabled": False,
                                     "distributed.admin.tick.interval": "1000ms",
                                     "distributed.admin.system-monitor.interval": "2000ms",
                                     "distributed.worker.memory.monitor-interval": "1000ms"}


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """``LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)`` and a ``Client``
    on it, closed on exit; yields the client. Workers start importing the analysis at once,
    so opening the run files inside the block overlaps with their start-up.

    The workers are started without distributed's default ``MALLOC_TRIM_THRESHOLD_=65536``:
    setting that variable turns off glibc's adaptive mmap threshold, so every numpy temporary
    above 128 kB becomes a fresh ``mmap`` and the analysis runs about 3x slower.
    """
    import dask
    from dask.distributed import Client, LocalCluster

    with dask.config.set(_WORKER_CONFIG):
        with LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            warming = [client.submit(_warm, pure=False, workers=[w], allow_other_workers=False)
                       for w in client.scheduler_info()["workers"]]
            yield client
            del warming


@contextlib.contextmanager
def scheduler_client(address: str, *, timeout: float = 30.0) -> Iterator[Any]:
    """A ``distributed.Client`` connected to an existing scheduler at ``address`` (e.g.
    ``"tcp://10.0.0.5:8786"``), closed on exit; the scheduler and its workers keep running.

    This is the way to a cluster of many machines: start ``dask scheduler`` on one machine and
    ``dask worker tcp://HOST:8786`` on each of the others (every worker needs bandscope
    installed and the run files at the same paths, e.g. a shared filesystem), then give the
    address here or to ``bandscope analyze --scheduler``. The run files are scanned in this
    process; each chunk is read and analysed by a worker.

    Raises
    ------
    bandscope.errors.BandscopeInputError
        When no scheduler answers at ``address`` within ``timeout`` seconds (naming it).
    """
    from dask.distributed import Client

    from ..errors import BandscopeInputError

    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise BandscopeInputError(
            f"no dask scheduler answers at {address!r} ({type(exc).__name__}: {exc}); start one "
            "with 'dask scheduler' and give its address, e.g. tcp://HOST:8786") from None
    try:
        client.run(_warm)
        yield client
    finally:
        client.close()


def _tidy(res: xr.Dataset) -> xr.Dataset:
    """Object string arrays (from the dask template) back to fixed-width unicode."""
    for name, var in res.variables.items():
        if var.dtype == object:
            res[name] = var.astype(str)
    return res



# --------------------------------------------------------------------------- one queue, local workers
_MAX_FILE_CHUNK = 1024  # files per task of analyze_files at most (bounded temporaries per worker)
_MIN_FILE_CHUNK = 128  # files per task at least (below, the analysis' per-call cost shows)


def _file_chunks(n: int, workers: int, chunk_runs: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of the tasks of :func:`analyze_files` over ``n`` files.

    With ``chunk_runs``, chunks of that many files. By default the chunks come in rounds of
    ``workers`` equal chunks (to one file), each round half of the files still left (at least
    :data:`_MIN_FILE_CHUNK` and at most :data:`_MAX_FILE_CHUNK` files per chunk); a remainder
    smaller than a round at the minimum joins the last round. The first tasks are large (the
    analysis costs less per run in larger batches), the workers of one round finish together
    when they run at the same speed, and the small last rounds even them out when they do not.

    >>> [b - a for a, b in _file_chunks(2000, 2, None)]
    [500, 500, 250, 250, 250, 250]
    >>> _file_chunks(5, 2, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    out, start = [], 0
    while start < n:
        left = n - start
        if chunk_runs is not None:
            out.append((start, start + min(left, chunk_runs)))
            start = out[-1][1]
            continue
        least = _MIN_FILE_CHUNK * workers
        take = min(left, _MAX_FILE_CHUNK * workers, max(least, -(-left // 2)))
        if left - take < least:
            take = left
        parts = min(workers, take)
        for j in range(parts):  # `parts` chunks of equal size, to one file
            size = take // parts + (j < take % parts)
            out.append((start, start + size))
            start += size
    return out


class RunFiles:
    """Run files for :func:`analyze_files`, as the command line passes them on: not a list of
    runs (the command's per-run reports -- ``--dropna`` rows, forecasts -- need the runs in
    memory and say so).

    Parameters
    ----------
    paths : list of str
        The files, in order.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        """The number of files."""
        return len(self.paths)


def _chunk_results(paths: list[str], stem_counts: Mapping[str, int], dropna: bool,
                   options: AnalysisOptions | None, overrides: Mapping[str, Any]) -> tuple[xr.Dataset, list[str]]:
    """Read and analyse one chunk of run files (a task of :func:`analyze_files`).

    Parameters
    ----------
    paths : list of str
        The chunk's files.
    stem_counts : mapping of str to int
        How many files of the whole sweep have each stem (the naming rule of
        :func:`bandscope.read_runs` needs the whole sweep).
    dropna, options, overrides
        As in :func:`analyze_files`.

    Returns
    -------
    tuple
        The results Dataset of the chunk's runs (in memory) and the runs' names before clashes
        across the sweep are numbered (``-2``, ``-3``, ...).
    """
    from xarray.backends.locks import HDF5_LOCK, NETCDFC_LOCK

    from ..io.runfiles import _read_file_runs

    runs, names = [], []
    shared: dict = {}  # index coordinates shared by the chunk's runs
    for p in map(Path, paths):
        # the netCDF-C and HDF5 libraries are not thread-safe: a netCDF file is read under
        # xarray's locks for them (in the order xarray takes them), so tasks on threads work too
        with contextlib.ExitStack() as held:
            if p.suffix.lower() in _NETCDF:
                held.enter_context(NETCDFC_LOCK)
                held.enter_context(HDF5_LOCK)
            read = list(_read_file_runs(p, dropna, shared))
        for run, by_stem in read:
            if by_stem and stem_counts.get(p.stem, 0) > 1 and p.parent.name:
                run.attrs["name"] = p.parent.name
            runs.append(run)
            names.append(str(run.attrs["name"]))
    res = _analyze(runs, options, overrides)
    return res, names


def _process_pool(workers: int) -> Executor:
    """``workers`` processes of :class:`concurrent.futures.ProcessPoolExecutor`, forked on Linux
    (they inherit the imported analysis: nothing to import per worker), the platform's default
    start method elsewhere.

    Parameters
    ----------
    workers : int
        Worker processes.

    Returns
    -------
    concurrent.futures.ProcessPoolExecutor
        Not started yet: its processes are created at the first ``submit``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    fork = sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()
    return ProcessPoolExecutor(int(workers), mp_context=multiprocessing.get_context("fork") if fork else None)


def _pad_checkpoints(res: xr.Dataset, n_checkpoints: int) -> xr.Dataset:
    """``res`` with its ``checkpoint`` dim padded at the end to ``n_checkpoints`` (NaN; -1 for
    integers), as :func:`bandscope.analyze` pads the shorter runs of a stack."""
    k = res.sizes.get("checkpoint", n_checkpoints)
    if k == n_checkpoints:
        return res
    fill = {name: (-1 if np.issubdtype(v.dtype, np.integer) else np.nan)
            for name, v in res.data_vars.items() if "checkpoint" in v.dims}
    return res.reindex(checkpoint=np.arange(n_checkpoints, dtype=res["checkpoint"].dtype), fill_value=fill)


def analyze_files(paths_or_glob: str | Path | Iterable[str | Path],
                  options: AnalysisOptions | None = None, *, workers: int = 2, chunk_runs: int | None = None,
                  dropna: bool = False, progress: bool = False, executor: Executor | None = None,
                  **overrides: Any) -> xr.Dataset:
    """``bandscope.analyze(bandscope.read_runs(files))`` on ``workers`` local processes (or on any
    ``executor``), one task per chunk of files.

    Every chunk is a task: its file paths go out, the chunk's results Dataset comes back, and
    this process gathers them. No metadata scan, no dask graph: each chunk is read once, by the
    process that analyses it. By default the tasks run on a
    :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` processes forked from this
    one on Linux after the analysis is imported here (they start in milliseconds with nothing
    to import; the platform's default start method elsewhere), created before any file is
    opened here and shut down at the end.

    Parameters
    ----------
    paths_or_glob : str, Path or iterable of them
        Run files or glob patterns (:func:`find_run_files`).
    options, **overrides
        As for :func:`bandscope.analyze`.
    workers : int
        Worker processes of the default pool; with ``executor``, the number of tasks per round
        of chunks (say how many tasks the executor runs at once).
    chunk_runs : int, optional
        Files per task (default: rounds of ``workers`` equal chunks, each round half of the
        files left, 128 to 1,024 files per chunk, see :func:`_file_chunks`: the analysis costs
        less per run in larger batches, and smaller last rounds let the workers finish together).
    dropna : bool
        As for :func:`bandscope.read_runs` (the dropped rows are not gathered).
    progress : bool
        Count the finished chunks on stderr.
    executor : concurrent.futures.Executor, optional
        Run the tasks there instead, and leave it running: e.g.
        ``distributed.Client(address).get_executor(pure=False)`` for the workers of a
        ``dask.distributed`` cluster (each needs bandscope and the files at the same paths).

    Returns
    -------
    xarray.Dataset
        Equal to ``bandscope.analyze(bandscope.read_runs(files), options, **overrides)``: every
        per-run value (each run is analysed on its own checkpoints, and the fitter's arithmetic
        per curve does not depend on the other curves of its batch), the names (the rule of
        ``read_runs`` over the whole sweep), the coordinates and the attributes (``gamma_note``
        the union of the chunks' notes).

    Raises
    ------
    ValueError
        When ``workers`` or ``chunk_runs`` is not a positive number.

    Examples
    --------
    >>> import tempfile
    >>> from bandscope import analyze, read_runs, write_run
    >>> from bandscope.keysearch.synthetic import make_runs_synthetic
    >>> d = Path(tempfile.mkdtemp())
    >>> files = [write_run(r, d / f"{r.attrs['name']}.nc") for r in make_runs_synthetic(3)]
    >>> res = analyze_files(files, workers=2, chunk_runs=2)  # doctest: +SKIP
    >>> bool((res.beta == analyze(read_runs(files)).beta).all())  # doctest: +SKIP
    True
    """
    from collections import Counter
    from concurrent.futures import as_completed

    if int(workers) < 1:
        raise ValueError(f"workers must be a positive number of processes, got {workers}")
    paths = [str(p) for p in find_run_files(paths_or_glob)]
    if chunk_runs is not None and int(chunk_runs) < 1:
        raise ValueError(f"chunk_runs must be a positive number of runs, got {chunk_runs}")
    chunks = _file_chunks(len(paths), int(workers), None if chunk_runs is None else int(chunk_runs))
    stems = dict(Counter(Path(p).stem for p in paths))
    done: dict[int, tuple[xr.Dataset, list[str]]] = {}
    overrides = dict(overrides)
    own = executor is None
    if own:
        _warm()  # imported here, the analysis is inherited by the forked workers
    pool = _process_pool(workers) if executor is None else executor
    try:
        # every task is submitted (so every worker forked, at the first submit) before this
        # process opens a file: a worker forked while this process is inside the HDF5 library
        # would inherit its locks held (and hang)
        futures = {pool.submit(_chunk_results, paths[a:b], stems, dropna, options, overrides): a
                   for a, b in chunks}  # largest first
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            if progress:
                print(f"\rbandscope: {len(done)}/{len(chunks)} chunks", end="", file=sys.stderr, flush=True)
    finally:
        if progress:
            print(file=sys.stderr)
        if own:
            pool.shutdown(cancel_futures=True)
    return _gather_chunks([done[i] for i in sorted(done)])


def _concat_runs(results: list[xr.Dataset]) -> xr.Dataset:
    """Results Datasets of the same layout (variables, dims, coordinates but ``run``) joined along
    ``run``: what ``xr.concat(results, "run", data_vars="minimal", coords="minimal",
    compat="override", join="override", combine_attrs="override")`` gives (tested), without its
    per-variable alignment and checks: the variables along ``run`` joined by numpy (strings at
    the widest width), the others and every attribute taken from the first.

    Parameters
    ----------
    results : list of xarray.Dataset
        In order; the same variables and, but for ``run``, the same sizes.

    Returns
    -------
    xarray.Dataset
        The joined results (the ``run`` coordinate as the parts' names, in order).
    """
    first = results[0]
    if len(results) == 1:
        return first
    data_vars: dict[Any, xr.Variable] = {}
    coords: dict[Any, xr.Variable] = {}
    for name, var in first.variables.items():
        if "run" in var.dims:
            data = np.concatenate([r.variables[name].values for r in results], axis=var.dims.index("run"))
            var = xr.Variable(var.dims, data, dict(var.attrs))
        (coords if name in first.coords else data_vars)[name] = var
    return xr.Dataset(data_vars, coords=coords, attrs=dict(first.attrs))


def _gather_chunks(parts: list[tuple[xr.Dataset, list[str]]]) -> xr.Dataset:
    """One results Dataset from the chunks' (in order): checkpoints padded to the longest run,
    runs concatenated, names numbered across the sweep as :func:`bandscope.read_runs` does,
    ``gamma_note`` the union of the chunks' notes.

    Parameters
    ----------
    parts : list of (xarray.Dataset, list of str)
        Each chunk's results and its runs' names (from :func:`_chunk_results`).

    Returns
    -------
    xarray.Dataset
        The results of the whole sweep.
    """
    k = max(res.sizes.get("checkpoint", 0) for res, _ in parts)
    res = _concat_runs([_pad_checkpoints(r, k) for r, _ in parts])
    seen: dict[str, int] = {}
    names = []
    for nm in (n for _, ns in parts for n in ns):
        seen[nm] = seen.get(nm, 0) + 1
        names.append(nm if seen[nm] == 1 else f"{nm}-{seen[nm]}")
    notes = sorted({n for r, _ in parts for n in str(r.attrs.get("gamma_note", "")).split("; ") if n})
    res = schema.annotate_coords(res.assign_coords(run=("run", names)))
    res.attrs["gamma_note"] = "; ".join(notes)
    return res
