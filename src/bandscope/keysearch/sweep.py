"""Sweeps: thousands of runs analysed in parallel (``docs/sweeps.md``).

A sweep is the stack of runs of ``docs/format.md`` (a leading ``run`` dim, shorter runs padded at
the end with NaN) that is too large, or too slow, to read and analyse in one piece. Its files
are found, named and opened lazily by :mod:`bandscope.io.sweepfiles` (:func:`open_runs`, named
here too); the tasks run where :mod:`bandscope.keysearch.executors` says.

* :func:`analyze_sweep` maps :func:`bandscope.analyze` over the run-chunks of a lazy stack with
  :func:`xarray.map_blocks` and returns the results Dataset of ``docs/format.md``, still lazy.
  Every per-run result of :func:`bandscope.analyze` depends only on that run (its floors,
  crossings, windows and fits are computed from its own checkpoints), so the chunked results
  equal those of one call on the whole stack; cross-run summaries (the ordering medians of
  :func:`bandscope.report.tables.all_tables`) are computed afterwards from the per-run results.
* :func:`compute_sweep` computes it on the threaded scheduler, or on ``workers`` processes of a
  local ``dask.distributed`` cluster, optionally with a progress bar on stderr.
* :func:`analyze_files` reads and analyses chunks of files on worker processes (or any
  executor), with no metadata scan and no graph, and gathers their results.

Memory is bounded by the chunk: a worker holds the runs of the chunk it analyses, plus the
per-run results gathered so far (about 20 kB per run of 53 checkpoints and 7 bands).
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .. import schema
from ..io.runfiles import _number_clashes
from ..io.sweepfiles import (
    _NETCDF,
    DEFAULT_CHUNK_RUNS,
    _read_lock,
    find_run_files,
    open_runs,
    run_names,
    write_stack_zarr,
)
from .executors import _active_client, _process_pool, _warm_for_fork, local_cluster, scheduler_client

if TYPE_CHECKING:
    from concurrent.futures import Executor
    from typing import Any

    from .options import AnalysisOptions

__all__ = ["find_run_files", "run_names", "open_runs", "analyze_sweep", "compute_sweep",
           "local_cluster", "scheduler_client", "write_stack_zarr", "DEFAULT_CHUNK_RUNS",
           "analyze_files", "RunFiles"]

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
    from ..io.runfiles import _name_by_parent, _read_file_runs, _rename

    lock = _read_lock()
    runs, names = [], []
    shared: dict = {}  # index coordinates shared by the chunk's runs
    for p in map(Path, paths):
        # netCDF files are read under the netCDF-C / HDF5 lock, so tasks on threads work too
        with lock if p.suffix.lower() in _NETCDF else contextlib.nullcontext():
            read = list(_read_file_runs(p, dropna, shared))
        for run, by_stem in read:
            _rename(run, _name_by_parent(p, str(run.attrs["name"]), by_stem, stem_counts))
            runs.append(run)
            names.append(str(run.attrs["name"]))
    res = _analyze(runs, options, overrides)
    return res, names


def _pad_checkpoints(res: xr.Dataset, n_checkpoints: int) -> xr.Dataset:
    """``res`` with its ``checkpoint`` dim padded at the end to ``n_checkpoints`` (NaN; -1 for
    integers), as :func:`bandscope.analyze` pads the shorter runs of a stack."""
    k = res.sizes.get("checkpoint", n_checkpoints)
    if k == n_checkpoints:
        return res
    fill = {name: (-1 if np.issubdtype(v.dtype, np.integer) else np.nan)
            for name, v in res.data_vars.items() if "checkpoint" in v.dims}
    return res.reindex(checkpoint=np.arange(n_checkpoints, dtype=res["checkpoint"].dtype), fill_value=fill)


def analyze_files(paths_or_glob: str | Path | Iterable[str | Path] | RunFiles,
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
    paths_or_glob : str, Path, iterable of them, or RunFiles
        Run files or glob patterns (:func:`find_run_files`); a :class:`RunFiles` holds files
        already found, taken as they are.
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
    import gc
    from collections import Counter
    from concurrent.futures import as_completed

    if int(workers) < 1:
        raise ValueError(f"workers must be a positive number of processes, got {workers}")
    if isinstance(paths_or_glob, RunFiles):
        paths = list(paths_or_glob.paths)
    else:
        paths = [str(p) for p in find_run_files(paths_or_glob)]
    if chunk_runs is not None and int(chunk_runs) < 1:
        raise ValueError(f"chunk_runs must be a positive number of runs, got {chunk_runs}")
    chunks = _file_chunks(len(paths), int(workers), None if chunk_runs is None else int(chunk_runs))
    stems = dict(Counter(Path(p).stem for p in paths))
    done: dict[int, tuple[xr.Dataset, list[str]]] = {}
    overrides = dict(overrides)
    own = executor is None
    if own:
        _warm_for_fork()  # imported here, the analysis is inherited by the forked workers
    pool = _process_pool(workers) if executor is None else executor
    try:
        # every task is submitted (so every worker forked, at the first submit) before this
        # process opens a file: a worker forked while this process is inside the HDF5 library
        # would inherit its locks held (and hang). The objects this process holds are frozen
        # for the fork (gc.freeze, Python's advice for fork without exec): the workers' garbage
        # collections then never walk (and copy page by page) what they inherit; this process
        # is unfrozen at once.
        if own:
            gc.freeze()
        try:
            futures = {pool.submit(_chunk_results, paths[a:b], stems, dropna, options, overrides): a
                       for a, b in chunks}  # largest first
        finally:
            if own:
                gc.unfreeze()
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
    names = _number_clashes(n for _, ns in parts for n in ns)
    notes = sorted({n for r, _ in parts for n in str(r.attrs.get("gamma_note", "")).split("; ") if n})
    res = schema.annotate_coords(res.assign_coords(run=("run", names)))
    res.attrs["gamma_note"] = "; ".join(notes)
    return res
