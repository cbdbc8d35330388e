"""The background forecast worker: off the caller's thread, one at a time, within its CPU budget."""
from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from bandscope.torch.forecast_worker import ForecastWorker


def _spin(seconds):
    t = time.thread_time()
    while time.thread_time() - t < seconds:
        pass


def test_submit_returns_at_once_and_runs_on_another_thread():
    release = threading.Event()
    seen = []

    def fn(data):
        seen.append(threading.current_thread().name)
        release.wait(10)
        return {"x": data}

    w = ForecastWorker(fn, budget=1.0)
    t0 = time.perf_counter()
    assert w.submit(1, step=5)
    assert time.perf_counter() - t0 < 1.0  # the caller is not blocked by the forecast
    assert w.busy() and not w.submit(2, step=6) and w.skipped_busy == 1  # one at a time
    release.set()
    w.wait(10)
    assert w.poll() == (5, {"x": 1}) and w.poll() is None
    assert seen and seen[0].startswith("bandscope-forecast")
    w.close()


def test_budget_skips_forecasts_once_spent():
    w = ForecastWorker(lambda d: (_spin(0.02), {"x": 1.0})[1], budget=0.05, synchronous=True)
    assert w.submit(0, step=0)  # nothing spent yet
    assert w.cpu_seconds >= 0.015
    assert not w.submit(0, step=1) and w.skipped_budget == 1  # 0.02 s > 5 % of ~0 s of other work
    _spin(w.cpu_seconds / 0.05 * 1.3)  # the "training" does enough work: the budget allows one more
    assert w.submit(0, step=2)


def test_failure_warns_once_and_stops():
    def broken(d):
        raise FloatingPointError("no fit")

    w = ForecastWorker(broken, budget=1.0, synchronous=True)
    assert w.submit(0, step=0)
    with pytest.warns(RuntimeWarning, match="no fit"):
        assert w.poll() is None
    assert not w.submit(0, step=1)
    assert w.poll() is None  # said once


def test_finish_waits_and_returns_the_last_result():
    w = ForecastWorker(lambda d: (time.sleep(0.2), {"x": d})[1], budget=1.0)
    w.submit(7, step=3)
    assert w.finish(timeout=10) == (3, {"x": 7})
    assert not w.submit(8, step=4)  # closed


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        ForecastWorker(lambda d: {}, budget=0.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_worker_thread_runs_at_lower_priority_and_the_caller_does_not():
    main_tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, main_tid)
    seen = {}

    def fn(data):
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return {"x": data}

    w = ForecastWorker(fn, budget=1.0, nice=5)
    assert w.submit(1, step=0)
    w.wait(10)
    w.close()
    assert seen["nice"] == min(before + 5, 19) == w.thread_nice  # only the worker's thread moved
    assert os.getpriority(os.PRIO_PROCESS, main_tid) == before
    s = ForecastWorker(fn, budget=1.0, synchronous=True, nice=5)  # the caller's thread is never niced
    assert s.submit(2, step=0) and seen["nice"] == before and s.thread_nice is None


def test_bad_nice_is_refused():
    with pytest.raises(ValueError, match="nice"):
        ForecastWorker(lambda d: {}, nice=-1)
