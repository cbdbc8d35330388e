"""Measure LNP alongside any training loop on the log-window schedule (spectral reach B.1, B.2).

::

    hook = LNPHook(model, loss_fn, total_steps=T, eval_batch=val_batch, path="lnp.nc")
    for step, (x, y) in enumerate(loader):
        hook(step, (x, y))          # before optimizer.step(): measures at θ_t if step is scheduled
        loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
    hook.write()

Each scheduled step calls :func:`bandscope.torch.measure_lnp` with the training batch as batch A
and ``eval_batch`` as batch B; the model, its gradients, modes and the RNG state are left as
found, so training is unaffected. Statistics are collected on dim ``lnp_step`` (coordinate: the
optimizer step) with names prefixed ``lnp_`` and band-resolved values on dim ``lnp_band``, so
they never clash with a run Dataset's ``checkpoint``/``band`` (``docs/format.md``).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsFloat

import numpy as np
import xarray as xr
from torch import nn

from bandscope import schema
from bandscope.errors import BandscopeInputError
from bandscope.io import write_netcdf_atomic
from bandscope.lnp import log_windows
from bandscope.lnp.options import ESTIMATOR_RENAMED, LNPOptions, legacy_estimator

from . import DEFAULT_ESTIMATOR, _measure

if TYPE_CHECKING:
    from bandscope.torch.recorder import RunRecorder

__all__ = ["LNPHook", "LNPOptions"]


class LNPHook:
    """Measure LNP statistics on logarithmically spaced windows of consecutive training steps.

    Parameters
    ----------
    model, loss_fn
        As for :func:`bandscope.torch.measure_lnp`.
    total_steps : int
        Length of training in optimizer steps (the schedule spans ``[first_step, total_steps)``).
    n_windows, steps_per_window, first_step : int
        The schedule, :func:`bandscope.lnp.log_windows` (appendix B.1: windows of consecutive
        steps at log-spaced starts; overlapping windows measure each step once). The paper's
        own counts were lost from its text; the defaults here are a choice.
    schedule : iterable of int, optional
        Explicit measurement steps instead of log windows.
    eval_batch : (inputs, targets) or callable(step) -> (inputs, targets), optional
        Batch B (held-out); with it the cross terms ``grad_dot`` and ``P_AB`` are recorded.
    options : bandscope.lnp.options.LNPOptions, optional
        The options of every measurement (:func:`measure_lnp`), validated once; kept as
        ``hook.options``. Under ``torch.distributed`` every rank calls the hook with its own
        shard of the batch and records the statistics of the global batch.
    estimator, n_probes, bands, n_units, n_units_b, backend, distributed, process_group
        The fields of ``options`` as keywords (for existing calls); give either these or
        ``options``.
    network_scale : str, optional
        Deprecated spelling of ``estimator`` (``DeprecationWarning``).
    seed : int
        Probe seed; the measurement at step t uses ``seed + t`` (reproducible, independent draws).
    recorder : bandscope.torch.RunRecorder, optional
        Merge the LNP statistics into this recorder's run file on :meth:`write`.
    path : str or Path, optional
        Own netCDF file (used when no recorder is given).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(3, 2); x, y = torch.randn(8, 3), torch.randn(8, 2)
    >>> hook = LNPHook(net, nn.MSELoss(), total_steps=50, n_windows=3, steps_per_window=2,
    ...                options=LNPOptions(estimator="exact"))
    >>> for t in range(50):
    ...     _ = hook(t, (x, y))
    >>> hook.dataset().lnp_step.values.tolist()
    [0, 1, 6, 7, 48, 49]
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, *, total_steps: int | None = None,
                 n_windows: int = 20, steps_per_window: int = 10, first_step: int = 0,
                 schedule: Iterable[int] | None = None, eval_batch: object = None,
                 options: LNPOptions | None = None, estimator: str = DEFAULT_ESTIMATOR, n_probes: int | None = None,
                 bands: bool = False, n_units: object = None, n_units_b: object = None, backend: str = "auto",
                 seed: int = 0, recorder: RunRecorder | None = None, path: str | Path | None = None,
                 distributed: bool | None = None, process_group: object = None,
                 network_scale: str | None = None) -> None:
        if network_scale is not None:
            estimator = legacy_estimator(network_scale, estimator, "LNPHook")
            warnings.warn(ESTIMATOR_RENAMED.format(network_scale), DeprecationWarning, stacklevel=2)
        #: the options of every measurement (validated once, here)
        self.options = LNPOptions.from_keywords(options, "LNPHook", {
            "estimator": estimator, "n_probes": n_probes, "bands": bands, "n_units": n_units, "n_units_b": n_units_b,
            "backend": backend, "distributed": distributed, "process_group": process_group})
        self.model, self.loss_fn = model, loss_fn
        if schedule is None:
            if total_steps is None:
                raise ValueError("give total_steps (for the log-window schedule) or an explicit schedule")
            sched = log_windows(n_windows, steps_per_window, total_steps, first_step)
            self.steps = sched.lnp_step.values.astype(np.int64)
            self.windows = sched.lnp_window.values.astype(np.int64)
        else:
            self.steps = np.unique(np.asarray(list(schedule), dtype=np.int64))
            self.windows = np.arange(self.steps.size, dtype=np.int64)
        self._window_of = dict(zip(self.steps.tolist(), self.windows.tolist()))
        self.eval_batch = eval_batch
        self.seed = int(seed)
        self.path = None if path is None else Path(path)
        self.records: list[tuple[int, xr.Dataset]] = []
        self.previous: xr.Dataset | None = None  # measurements of the job this one resumes
        self._last_step: int | None = None
        self._recorder = None
        self.recorder = recorder

    @property
    def recorder(self) -> Any:
        """The :class:`~bandscope.torch.RunRecorder` whose run file holds the LNP statistics."""
        return self._recorder

    @recorder.setter
    def recorder(self, rec: Any) -> None:
        if rec is not None and rec is not self._recorder:
            # every later rewrite of the run file (each checkpoint) keeps the LNP variables
            rec.add_extra(lambda: self.dataset() if self.has_data else None)
        self._recorder = rec

    @property
    def has_data(self) -> bool:
        """Whether any measurement exists (this job's or, after a resume, the earlier job's)."""
        return bool(self.records) or (self.previous is not None and self.previous.sizes.get("lnp_step", 0) > 0)

    @property
    def last_step(self) -> int | None:
        """The step of the last measurement (this job's or the resumed one's), None before any."""
        return self._last_step

    def wants(self, step: int) -> bool:
        """Whether ``step`` is a measurement step (``step`` an integer; ``2.7`` is refused, not
        truncated)."""
        return _step(step) in self._window_of

    def state_dict(self) -> dict:
        """The hook's position: the last measured step and the probe seed. The measurements
        themselves live in the run file (or the hook's own file); :meth:`load_state_dict` takes
        them back as ``previous``."""
        return {"last_step": -1 if self._last_step is None else int(self._last_step), "seed": self.seed}

    def load_state_dict(self, state: dict, previous: xr.Dataset | None = None) -> list[int]:
        """Resume from :meth:`state_dict`: measurements after ``state["last_step"]`` in ``previous``
        (the ``lnp_*`` variables of the file the earlier job wrote) are dropped and their steps
        returned; the rest are kept ahead of this job's measurements in :meth:`dataset`."""
        last = int(state["last_step"])
        self.seed = int(state.get("seed", self.seed))
        self._last_step = None if last < 0 else last
        self.records = []
        dropped: list[int] = []
        if previous is not None and "lnp_step" in previous.dims:
            keep = [v for v in previous.data_vars if "lnp_step" in previous[v].dims]
            prev = previous[keep]
            steps = prev["lnp_step"].values.astype(np.int64)
            dropped = steps[steps > last].tolist()
            prev = prev.isel(lnp_step=np.flatnonzero(steps <= last))
            self.previous = prev if prev.sizes["lnp_step"] else None
        else:
            self.previous = None
        return dropped

    def __call__(self, step: int, batch: object) -> xr.Dataset | None:
        """Measure at ``step`` with the training ``batch`` as batch A if scheduled; else None."""
        step = _step(step)
        if not self.wants(step):
            return None
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"step {step} is not after the last measured step {self._last_step}")
        b = self.eval_batch(step) if callable(self.eval_batch) else self.eval_batch
        ds = _measure(self.model, self.loss_fn, batch, b, self.options, self.seed + step)
        self.records.append((step, ds))
        self._last_step = step
        return ds

    def dataset(self) -> xr.Dataset:
        """All measurements so far: ``lnp_*`` variables on dim ``lnp_step`` (+ ``lnp_band``)."""
        if not self.records:
            if self.previous is not None:
                return self.previous
            raise ValueError("no LNP measurement recorded yet")
        ds = self._own_dataset()
        if self.previous is None:
            return ds
        prev = self.previous[[v for v in ds.data_vars if v in self.previous.data_vars]]
        out = xr.concat([prev, ds], dim="lnp_step", data_vars="all", coords="minimal", compat="override",
                        combine_attrs="override", join="outer")
        for v in out.data_vars:
            out[v].attrs = dict(ds[v].attrs)
        return out.assign_attrs(ds.attrs)

    def _own_dataset(self) -> xr.Dataset:
        steps = [s for s, _ in self.records]
        parts = []
        for _, d in self.records:
            # text variables are dropped, except the reasons why P is NaN (kept as fixed-width text)
            d = d.drop_vars([v for v in d.data_vars if d[v].dtype.kind in "OUS" and not str(v).startswith("reason")])
            d = d.assign({str(v): d[v].astype(str) for v in d.data_vars if str(v).startswith("reason")})
            if "band" in d.dims:
                d = d.rename({"band": "lnp_band"})
            parts.append(d.rename({v: f"lnp_{v}" for v in d.data_vars}))
        ds = xr.concat(parts, dim="lnp_step", data_vars="all", coords="minimal", compat="override",
                       combine_attrs="drop")
        ds = ds.assign_coords(lnp_step=("lnp_step", np.asarray(steps, dtype=np.int64),
                                        schema.attrs("lnp_run", "lnp_step")))
        ds = ds.assign_coords(lnp_window=("lnp_step", np.asarray([self._window_of[s] for s in steps]),
                                          schema.attrs("lnp_run", "lnp_window")))
        first = self.records[0][1].attrs
        keep = ("estimator", "backend", "n_probes", "n_units_how", "n_units_b_how", "exact_output_layer",
                "batchnorm", "definition", "n_units_reason", "n_units_b_reason", "world_size")
        ds.attrs = {f"lnp_{k}": first[k] for k in keep if k in first}
        ds.attrs["lnp_schedule"] = "log windows (spectral reach appendix B.1)"
        lnp_run = schema.kind("lnp_run")
        for v in ds.data_vars:
            src = str(v)[4:]
            own = dict(self.records[0][1][src].attrs) if src in self.records[0][1] else {}
            # the schema's attrs (kind lnp_run), with the measurement's own dynamic ones (a reason);
            # a variable the schema does not define keeps its own (schema.mismatches reports it)
            ds[v].attrs = ({**own, **schema.attrs("lnp_run", str(v))} if str(v) in lnp_run.variables else own)
        return ds

    def write(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write atomically: merged into the recorder's run file, else to ``path``."""
        if self.recorder is not None and path is None:
            if not self.recorder.rows:  # nothing recorded yet: the run file cannot exist
                return Path(self.recorder.path)
            return self.recorder.write()  # the recorder merges self.dataset() (add_extra)
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path: give LNPHook(path=...) or write(path)")
        return write_netcdf_atomic(self.dataset(), target)


def _step(step: SupportsFloat | str) -> int:
    """An optimizer step as int: integer-valued numbers pass, ``2.7`` is refused (not truncated)."""
    try:
        f = float(step)
    except (TypeError, ValueError):
        raise BandscopeInputError(f"LNPHook step must be an integer optimizer step, got {step!r}") from None
    if not f.is_integer():
        raise BandscopeInputError(f"LNPHook step {step!r} is not an integer: steps count optimizer updates "
                                  "(pass the step counter, not an epoch fraction)")
    return int(f)
