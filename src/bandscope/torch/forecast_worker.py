"""A background worker that forecasts a run in progress off the training thread, within a CPU budget.

The :class:`~bandscope.torch.monitor.Monitor` hands it the run recorded so far at each
checkpoint (:meth:`ForecastWorker.submit`); the worker forecasts on its own thread, at most one
forecast at a time (a checkpoint that arrives while one is running is skipped: the next one
forecasts from more data anyway), and only while the forecasts' CPU time stays within
``budget`` (default 2 %) of the rest of the process's CPU time since the worker started (the
training's; CPU time, not wall time, so the budget holds on a loaded machine too). Finished forecasts are
collected with :meth:`ForecastWorker.poll` and logged by the Monitor at its next checkpoint,
tagged with the step they were made at (``bandscope/forecast_step``). On Linux the worker's
thread runs at a lower scheduling priority (``nice``, default +10: only that thread, not the
process), so on a machine without a spare core the training thread wins the CPU.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

__all__ = ["ForecastWorker", "FinishedForecast"]


class FinishedForecast(NamedTuple):
    """A forecast the worker finished: the step whose run it forecast and its metrics (``fn``'s result)."""

    step: int
    metrics: dict[str, float]


class ForecastWorker:
    """Run ``fn(dataset) -> dict`` on one background thread within a CPU-time budget.

    Parameters
    ----------
    fn : callable
        ``fn(run_dataset) -> dict`` of metrics (the Monitor passes ``bandscope.forecast`` and
        flattens the result with :func:`~bandscope.torch.monitor.forecast_metrics`).
    budget : float
        Largest ratio of the forecasts' thread CPU time to the rest of the process's CPU time
        (since the worker started); a submission over budget is skipped (default 0.02).
    synchronous : bool
        Run ``fn`` on the caller's thread at once (tests, debugging); the budget still applies.
    nice : int
        Added to the worker thread's nice value when it starts its first forecast (Linux only,
        where nice is per thread; default 10, 0 = unchanged, capped at 19). Never applied to
        the caller's thread (``synchronous``).

    Examples
    --------
    >>> w = ForecastWorker(lambda ds: {"x": float(ds)}, budget=1.0)
    >>> w.submit(3, step=10)
    True
    >>> w.wait()
    >>> w.poll()
    FinishedForecast(step=10, metrics={'x': 3.0})
    >>> w.close()
    """

    def __init__(self, fn: Callable[[Any], Mapping[str, float]], *, budget: float = 0.02, synchronous: bool = False,
                 nice: int = 10) -> None:
        if not (0 < float(budget) <= 1):
            raise ValueError(f"budget must be a fraction of the training's CPU time in (0, 1], e.g. 0.02; "
                             f"got {budget!r}")
        if int(nice) < 0:
            raise ValueError(f"nice must be >= 0 (a lower priority for the worker thread, or 0); got {nice!r}")
        self.nice = int(nice)
        self._niced = False
        self.thread_nice: int | None = None  # the worker thread's nice value once lowered (Linux)
        self.fn = fn
        self.budget = float(budget)
        self.synchronous = bool(synchronous)
        self._pool: ThreadPoolExecutor | None = None if synchronous else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="bandscope-forecast")
        self._future: Future[None] | None = None
        self._result: FinishedForecast | None = None
        self._lock = threading.Lock()
        self._c0 = time.process_time()
        self.cpu_seconds = 0.0  # thread CPU time spent forecasting
        self.submitted = 0
        self.skipped_busy = 0
        self.skipped_budget = 0
        self.failed: BaseException | None = None
        self._warned = False

    def _lower_priority(self) -> None:
        """Raise the calling (worker) thread's nice value by :attr:`nice`, once (Linux only).

        On Linux ``setpriority(PRIO_PROCESS, tid)`` changes one thread; elsewhere the same call
        would change a process, so nothing is done there."""
        if self._niced or self.synchronous or self.nice == 0 or not sys.platform.startswith("linux"):
            return
        self._niced = True
        try:
            tid = threading.get_native_id()
            target = min(os.getpriority(os.PRIO_PROCESS, tid) + self.nice, 19)
            os.setpriority(os.PRIO_PROCESS, tid, target)
            self.thread_nice = os.getpriority(os.PRIO_PROCESS, tid)
        except (AttributeError, OSError):  # a sandbox may forbid it: a priority is not worth a failure
            pass

    def _job(self, data: object, step: int) -> None:
        self._lower_priority()
        c0 = time.thread_time()
        try:
            out = self.fn(data)
        except Exception as exc:  # a forecast must never stop training
            with self._lock:
                self.failed = exc
            return None
        finally:
            with self._lock:
                self.cpu_seconds += time.thread_time() - c0
        with self._lock:
            self._result = FinishedForecast(int(step), dict(out))
        return None

    def busy(self) -> bool:
        """Whether a forecast is running."""
        return self._future is not None and not self._future.done()

    def over_budget(self) -> bool:
        """Whether the forecasts so far took more than ``budget`` times the rest of the
        process's CPU time since the worker started."""
        rest = time.process_time() - self._c0 - self.cpu_seconds
        return self.cpu_seconds > self.budget * max(rest, 0.0)

    def ready(self) -> bool:
        """Whether :meth:`submit` would start a forecast now (cheap: check before building data)."""
        if self.failed is not None or (self._pool is None and not self.synchronous):
            return False
        return not self.busy() and not self.over_budget()

    def submit(self, data: object, step: int) -> bool:
        """Forecast ``data`` (the run so far, a Dataset no one else mutates) made at ``step``
        in the background, unless a forecast is running, one failed, or the budget is spent.
        Returns whether it was started."""
        if self.failed is not None or (self._pool is None and not self.synchronous):
            return False
        if self.busy():
            self.skipped_busy += 1
            return False
        if self.over_budget():
            self.skipped_budget += 1
            return False
        self.submitted += 1
        if self._pool is None:  # synchronous
            self._job(data, step)
        else:
            self._future = self._pool.submit(self._job, data, step)
        return True

    def poll(self) -> FinishedForecast | None:
        """The latest finished forecast (``(step, metrics)``) once (then None until the next),
        warning once if a forecast failed."""
        if self.failed is not None and not self._warned:
            self._warned = True
            warnings.warn(f"bandscope.forecast failed in the background ({type(self.failed).__name__}: "
                          f"{self.failed}); no more forecasts are logged for this run", RuntimeWarning,
                          stacklevel=3)
        with self._lock:
            out, self._result = self._result, None
        return out

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running forecast (if any) has finished."""
        if self._future is not None:
            try:
                self._future.result(timeout=timeout)
            except Exception:  # noqa: BLE001 - timeouts leave it running; errors are in .failed
                pass

    def finish(self, timeout: float | None = None) -> FinishedForecast | None:
        """Wait up to ``timeout`` s for the running forecast, stop the worker and return the
        last finished forecast not yet polled (or None)."""
        self.wait(timeout)
        out = self.poll()
        self.close()
        return out

    def close(self, wait: bool = False) -> None:
        """Stop the worker (``wait``: let a running forecast finish first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None
