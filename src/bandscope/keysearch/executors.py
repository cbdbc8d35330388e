"""Where the tasks of a sweep run: a pool of local worker processes, a local ``dask.distributed``
cluster, or an existing scheduler's workers on many machines (``docs/sweeps.md``).
"""
from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import Executor
    from typing import Any

__all__ = ["local_cluster", "scheduler_client"]


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


def _warm_for_fork() -> None:
    """:func:`_warm`, and what the analysis imports only when it first runs, in this process
    before it forks its workers: the netCDF reader and one synthetic run analysed (xarray looks
    for dask at the first Variable it builds, about half a second when dask is installed), so a
    forked worker starts its first task at full speed. Not for a worker that is already running
    tasks: imports on two of its threads at once can deadlock."""
    _warm()
    from .analysis import analyze
    from .synthetic import make_run_synthetic

    with contextlib.suppress(ImportError):  # the netCDF reader's library
        import netCDF4  # noqa: F401
    analyze(make_run_synthetic(0))


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
    on it, closed on exit; yields the client once every worker has imported the analysis.

    The workers are started without distributed's default ``MALLOC_TRIM_THRESHOLD_=65536``:
    setting that variable turns off glibc's adaptive mmap threshold, so every numpy temporary
    above 128 kB becomes a fresh ``mmap`` and the analysis runs about 3x slower.
    """
    import dask
    from dask.distributed import Client, LocalCluster

    with dask.config.set(_WORKER_CONFIG):
        with LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            # warmed before any other task: a worker unpickles the next task on its event loop while
            # its task thread runs, and two threads importing xarray at once can deadlock Python's
            # module locks (seen as "module 'xarray' has no attribute 'DataTree'")
            client.run(_warm)
            yield client


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
