"""One object that records a run from any training loop: :class:`Monitor`.

::

    monitor = Monitor(model, panel=test_images[:256], path="run.nc")   # records step 0 now
    for x, y in loader:
        ...; optimizer.step()
        monitor.step()                                                 # one call per update
    monitor.close()                                                    # last checkpoint, flush

The monitor owns the pieces of :mod:`bandscope.torch` and wires them the one correct way:

- a :class:`~bandscope.torch.ParamTimeTracker` (exact arc length every step, chord parameter time
  at checkpoints; key search A.7), created at construction, so the initial weights are both its
  start and checkpoint 0;
- a :class:`~bandscope.torch.BandProbe` on the panel (band losses of a fixed held-out panel, A.6,
  A.8), computed in float64 (float32 on devices without float64, ``mps``);
- a :class:`~bandscope.torch.RunRecorder` writing ``path`` atomically at every checkpoint (rank 0
  only under ``torch.distributed``);
- optionally an :class:`~bandscope.torch.LNPHook` (spectral reach B.1) whose statistics are
  merged into the run file;
- sinks where researchers watch training: a TensorBoard ``SummaryWriter``, a tqdm bar's postfix,
  any ``log(metrics, step)`` callable (the Lightning and HuggingFace callbacks use this), and a
  live forecast of each band (:func:`bandscope.forecast`) when that function is available.

Per step the monitor does ``tracker.step()`` (three fused ``_foreach`` kernels, no host sync) and
a set lookup; the host reads values only at checkpoints.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..schedule import geometric_schedule
from .device import unwrap
from .paramtime import ParamTimeTracker
from .probe import BandProbe
from .recorder import RunRecorder

__all__ = ["Monitor", "open_geometric_schedule", "METRIC_PREFIX", "forecast_metrics", "progress_postfix"]

#: prefix of every metric name the monitor sends to loggers (``bandscope/param_time``, ...)
METRIC_PREFIX = "bandscope/"

#: scalar LNP statistics sent to loggers (``bandscope/lnp_spectral_position``, ...)
_LNP_LOGGED = ("spectral_position", "loss_scale", "network_scale", "grad_norm_sq", "loss")


def open_geometric_schedule(points_per_decade: int = 16, max_step: int = 10**12) -> np.ndarray:
    """Step 0 and ``round(10**(k / points_per_decade))`` for k = 0, 1, ... (duplicates merged):
    a log-spaced checkpoint schedule that needs no run length (1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
    12, 13, 15, 18, 21, 24, 27, 32, ... at 16 per decade).

    Examples
    --------
    >>> open_geometric_schedule(4, 1000).tolist()
    [0, 1, 2, 3, 6, 10, 18, 32, 56, 100, 178, 316, 562, 1000]
    """
    n = int(points_per_decade)
    if n < 1:
        raise ValueError(f"points_per_decade must be >= 1, got {points_per_decade!r}")
    k = np.arange(0, int(math.ceil(math.log10(max(int(max_step), 1)) * n)) + 1)
    return np.unique(np.concatenate([[0], np.round(10.0 ** (k / n)).astype(np.int64)]))


def _dist_world() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1


def _dist_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return 0


class Monitor:
    """Record band losses, parameter time and (optionally) LNP of a model while it trains.

    Parameters
    ----------
    model : nn.Module
        The model being trained, on its final device (a ``DistributedDataParallel`` wrapper is
        fine: the probe runs the inner module). Moving it later (``model.to``, ``.double()``) is
        followed by the tracker.
    panel : Tensor or numpy array (P, C, S, S), optional
        Held-out images (uint8 or float in [0, 1], ``S`` a power of two) whose band losses are
        recorded, e.g. ``test_images[select_panel(len(test_images), seed)]``. Without a panel
        only parameter time (and LNP) are measured and logged, and no run file is written.
    path : str or Path, optional
        Run file (``.nc``), rewritten atomically at each checkpoint (``docs/format.md``).
    schedule : iterable of int or callable(step) -> bool, optional
        Optimizer-step counts at which to checkpoint. Default: ``geometric_schedule(total_steps,
        n_points)`` when ``total_steps`` is given, else :func:`open_geometric_schedule` (16 per
        decade). Step 0 (the weights at construction) is always recorded.
    total_steps, n_points : int, optional
        Run length and number of points of the default geometric schedule.
    steps_per_epoch : int, optional
        Also record ``epoch = step / steps_per_epoch``.
    name, arch, seed, source, extra_attrs
        Run attributes (:class:`~bandscope.torch.RunRecorder`).
    lnp : LNPHook or callable loss_fn(outputs, targets), optional
        Measure LNP: an :class:`~bandscope.torch.LNPHook` as configured, or a loss function (then
        a hook with ``total_steps`` and ``lnp_options`` is built, on the module inside a DDP
        wrapper). Measurements at step ``k`` are taken right after the ``k``-th update (at θ_k,
        the hook's convention) on ``lnp_batch``. Under ``torch.distributed`` (DDP, FSDP2) every
        rank measures its own ``lnp_batch`` as its shard of the global batch and the statistics
        are those of the global batch (:func:`~bandscope.torch.measure_lnp`); rank 0 logs them.
    lnp_batch : (inputs, targets) or callable(step) -> (inputs, targets), optional
        Batch A of the LNP measurements (required with ``lnp``); a fixed training batch.
    lnp_options : dict, optional
        Keywords for the :class:`~bandscope.torch.LNPHook` built from a loss function
        (``eval_batch``, ``n_windows``, ``network_scale``, ...).
    tensorboard : str, Path or SummaryWriter, optional
        Log every checkpoint's metrics with ``add_scalar`` (a directory makes a
        ``torch.utils.tensorboard.SummaryWriter``; needs the ``tensorboard`` package).
    progress : tqdm bar, optional
        Show ``s`` (parameter time), ``mse`` and the LNP position in its postfix at checkpoints.
    log : callable(metrics: dict, step: int), optional
        Receives every checkpoint's metrics (names start with ``bandscope/``).
    forecast : bool
        At checkpoints, forecast each band with :func:`bandscope.forecast` (when installed) once
        ``forecast_min_checkpoints`` are recorded, and log the result.
    probe_batch_size, probe_autocast, band_dtype, probe_output
        :class:`~bandscope.torch.BandProbe`'s ``batch_size``, ``autocast``, ``dtype`` and ``output``.
    rank : int, optional
        Process rank (default ``torch.distributed.get_rank()`` when initialised, else 0). Only
        rank 0 probes, writes and logs; every rank tracks parameter time (the tracker needs every
        rank in sharded mode). With sharded (FSDP / DTensor) parameters every rank runs the probe,
        since the forward pass is collective.
    tracker_mode, process_group, trainable_only
        :class:`~bandscope.torch.ParamTimeTracker` options.

    Notes
    -----
    Call :meth:`step` once after every ``optimizer.step()``. The weights at construction are
    checkpoint 0 (``param_time = arc_length = 0``); both the arc and the chords start there.

    Examples
    --------
    >>> import tempfile, os
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 48), torch.nn.Unflatten(1, (3, 4, 4)))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> panel = np.random.default_rng(0).random((8, 3, 4, 4), dtype=np.float32)
    >>> run = os.path.join(tempfile.mkdtemp(), "run.nc")
    >>> monitor = Monitor(model, panel=panel, path=run, schedule=[5, 10])
    >>> for _ in range(10):
    ...     x = torch.rand(16, 3, 4, 4); opt.zero_grad()
    ...     torch.nn.functional.mse_loss(model(x), x).backward(); opt.step()
    ...     _ = monitor.step()
    >>> ds = monitor.close()
    >>> ds.step.values.tolist(), bool((ds.param_time.diff("checkpoint") > 0).all())
    ([0, 5, 10], True)
    """

    def __init__(self, model: torch.nn.Module, panel=None, path=None, *,
                 schedule: Iterable[int] | Callable[[int], bool] | None = None,
                 total_steps: int | None = None, n_points: int = 53, steps_per_epoch: float | None = None,
                 name: str = "run", arch: str = "", seed: int = -1, source: str = "bandscope.torch.Monitor",
                 extra_attrs: dict | None = None,
                 lnp=None, lnp_batch=None, lnp_options: dict | None = None,
                 tensorboard=None, progress=None, log: Callable[[dict, int], None] | None = None,
                 forecast: bool = True, forecast_min_checkpoints: int = 8,
                 probe_batch_size: int = 256, probe_autocast: torch.dtype | None = None, probe_output=None,
                 band_dtype: torch.dtype | None = None, rank: int | None = None,
                 tracker_mode: str = "auto", process_group=None, trainable_only: bool = True,
                 start_step: int = 0):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"Monitor needs the nn.Module being trained, got {type(model).__name__}")
        self.model = model
        self.rank = _dist_rank() if rank is None else int(rank)
        self.is_writer = self.rank == 0
        self.global_step = int(start_step)
        self.steps_per_epoch = steps_per_epoch
        self.tracker = ParamTimeTracker(model, mode=tracker_mode, process_group=process_group,
                                        trainable_only=trainable_only)
        self.probe = None if panel is None else BandProbe(panel, batch_size=probe_batch_size,
                                                          autocast=probe_autocast, dtype=band_dtype,
                                                          output=probe_output)
        self._probe_here = self.probe is not None and (self.is_writer or self.tracker.mode == "sharded")
        if path is not None and panel is None:
            raise ValueError(f"a run file ({path}) holds band losses: give Monitor(..., panel=IMAGES) "
                             "(e.g. test_images[select_panel(len(test_images), seed)]), or drop path=")
        self.path = None if path is None else Path(path)
        attrs = dict(extra_attrs or {})
        self.recorder = None
        if self.path is not None and self.is_writer:
            self.recorder = RunRecorder(self.path, name=name, arch=arch, seed=seed, source=source,
                                        extra_attrs=attrs)
        self._set_schedule(schedule, total_steps, n_points)
        self.lnp = self._make_lnp(lnp, lnp_batch, lnp_options, total_steps)
        self.lnp_batch = lnp_batch
        self._tb_owned = False
        self.tensorboard = self._make_tensorboard(tensorboard) if self.is_writer else None
        self.progress = progress
        self.log = log
        self.forecast = bool(forecast)
        self.forecast_min_checkpoints = int(forecast_min_checkpoints)
        self._forecast_failed = False
        self.metrics: dict[str, float] = {}
        self.history: list[dict] = []  # every checkpoint's metrics (also on ranks that do not write)
        self._last_checkpoint_step: int | None = None
        self.closed = False
        self._measure_lnp()
        self.checkpoint()  # step 0: the weights as they are now

    # -- construction helpers ------------------------------------------------------------------
    def _set_schedule(self, schedule, total_steps, n_points) -> None:
        self._schedule_fn = None
        if callable(schedule):
            self._schedule_fn = schedule
            self.schedule = None
            return
        if schedule is None:
            sched = (geometric_schedule(int(total_steps), n_points) if total_steps is not None
                     else open_geometric_schedule())
        else:
            sched = np.unique(np.asarray(list(schedule), dtype=np.int64))
            if sched.size and sched[0] < 0:
                raise ValueError(f"checkpoint steps must be >= 0, got {int(sched[0])}")
        self.schedule = sched
        self._schedule_set = set(int(s) for s in sched)

    def _make_lnp(self, lnp, lnp_batch, options, total_steps):
        if lnp is None:
            return None
        from .lnp.hook import LNPHook

        if lnp_batch is None:
            raise ValueError("lnp= needs lnp_batch=(inputs, targets) (or a callable step -> batch): "
                             "the training batch A of each LNP measurement")
        if isinstance(lnp, LNPHook):
            hook = lnp
        elif callable(lnp):
            opts = dict(options or {})
            if total_steps is None and "schedule" not in opts:
                raise ValueError("lnp=loss_fn needs total_steps= (for the log-window schedule) or "
                                 "lnp_options={'schedule': [steps...]}")
            hook = LNPHook(unwrap(self.model), lnp, total_steps=total_steps, **opts)  # no DDP gradient sync
        else:
            raise TypeError(f"lnp must be an LNPHook or a loss function, got {type(lnp).__name__}")
        if self.recorder is not None and hook.recorder is None:
            hook.recorder = self.recorder  # LNP variables are merged into every rewrite of the run
        return hook

    def _make_tensorboard(self, tb):
        if tb is None:
            return None
        if hasattr(tb, "add_scalar"):
            return tb
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError("tensorboard= needs the tensorboard package: "
                              "pip install 'bandscope[tensorboard]' -c constraints.txt") from exc
        self._tb_owned = True
        return SummaryWriter(log_dir=str(tb))

    # -- the loop -----------------------------------------------------------------------------
    def wants(self, step: int) -> bool:
        """Whether optimizer step count ``step`` is a checkpoint."""
        if self._schedule_fn is not None:
            return bool(self._schedule_fn(int(step)))
        return int(step) in self._schedule_set

    def step(self) -> dict | None:
        """Count one optimizer update (call right after ``optimizer.step()``).

        Adds the step to the arc length on the parameters' device (no host sync); at a scheduled
        step also measures LNP and records a checkpoint, returning its metrics (else None).
        """
        if self.closed:
            raise RuntimeError("Monitor.step() after close(); create a new Monitor for a new run")
        self.tracker.step()
        self.global_step += 1
        self._measure_lnp()
        if self.wants(self.global_step):
            return self.checkpoint()
        return None

    def _measure_lnp(self) -> None:
        # one rank, or every rank under torch.distributed: each measures its shard of the global batch
        if self.lnp is not None and (self.is_writer or _dist_world() > 1) and self.lnp.wants(self.global_step):
            b = self.lnp_batch(self.global_step) if callable(self.lnp_batch) else self.lnp_batch
            ds = self.lnp(self.global_step, b)
            if ds is not None:
                self.metrics.update({f"{METRIC_PREFIX}lnp_{k}": float(ds[k]) for k in _LNP_LOGGED
                                     if k in ds and ds[k].ndim == 0})

    @torch.no_grad()
    def checkpoint(self) -> dict:
        """Record a checkpoint at the current step now (scheduled steps do this by themselves).

        Every rank updates parameter time (a collective in sharded mode); rank 0 probes the
        panel, writes the run file and sends the metrics to the sinks. Returns the metrics.
        """
        step = self.global_step
        if self._last_checkpoint_step is not None and step <= self._last_checkpoint_step:
            return self.metrics
        pt, arc = self.tracker.checkpoint()
        m = {f"{METRIC_PREFIX}param_time": pt, f"{METRIC_PREFIX}arc_length": arc}
        m.update({k: v for k, v in self.metrics.items() if k.startswith(f"{METRIC_PREFIX}lnp_")})
        epoch = None if self.steps_per_epoch is None else step / float(self.steps_per_epoch)
        if self._probe_here:
            r = self.probe(self.model)
            m[f"{METRIC_PREFIX}mse"] = r.mse
            for i, v in enumerate(r.band_loss):
                m[f"{METRIC_PREFIX}band_{2 ** i}"] = float(v)
            if self.recorder is not None:
                self.recorder.record(step=step, band_loss=r.band_loss, param_time=pt, arc_length=arc,
                                     mse=r.mse, epoch=epoch)
                m.update(self._forecast())
        self._last_checkpoint_step = step
        self.metrics = m
        self.history.append({"step": step, **m})
        if self.is_writer:
            self._emit(m, step)
        return m

    # -- sinks --------------------------------------------------------------------------------
    def _forecast(self) -> dict:
        if not self.forecast or self._forecast_failed or len(self.recorder) < self.forecast_min_checkpoints:
            return {}
        import bandscope

        fc = getattr(bandscope, "forecast", None)
        if fc is None:
            return {}
        try:
            ds = fc(self.recorder.dataset())
        except Exception as exc:  # a forecast must never stop training: say it once, then stop trying
            self._forecast_failed = True
            warnings.warn(f"bandscope.forecast failed at step {self.global_step} ({type(exc).__name__}: {exc}); "
                          "no more forecasts are logged for this run", RuntimeWarning, stacklevel=3)
            return {}
        return forecast_metrics(ds)

    def _emit(self, m: dict, step: int) -> None:
        if self.tensorboard is not None:
            for k, v in m.items():
                self.tensorboard.add_scalar(k, v, step)
            flush = getattr(self.tensorboard, "flush", None)
            if callable(flush):
                flush()
        if self.progress is not None:
            self.progress.set_postfix(progress_postfix(m), refresh=False)
        if self.log is not None:
            self.log(dict(m), step)

    # -- the end ------------------------------------------------------------------------------
    def close(self, *, final_checkpoint: bool = True):
        """Record the current step if it is not a checkpoint yet (``final_checkpoint``), write
        the LNP statistics, flush TensorBoard, release the run file's lock. Returns the run
        Dataset (rank 0 with a path) or None."""
        if self.closed:
            return self.dataset()
        if final_checkpoint:
            self.checkpoint()
        if self.lnp is not None and self.is_writer and self.lnp.records:
            if self.recorder is not None:
                self.recorder.write()
            elif self.lnp.path is not None:
                self.lnp.write()
        if self.tensorboard is not None:
            self.tensorboard.flush()
            if self._tb_owned:
                self.tensorboard.close()
        if self.recorder is not None:
            self.recorder.close()  # give up ownership of the run file (its lock), the file stays
        self.closed = True
        return self.dataset()

    def dataset(self):
        """The run recorded so far (rank 0 with a ``path``; with the LNP statistics, as in the
        file), else None."""
        if self.recorder is None or not len(self.recorder):
            return None
        ds = self.recorder.dataset()
        if self.lnp is not None and self.lnp.records:
            import xarray as xr

            extra = self.lnp.dataset()
            ds = xr.merge([ds, extra], combine_attrs="drop").assign_attrs({**extra.attrs, **ds.attrs})
        return ds

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close(final_checkpoint=exc[0] is None)

    @property
    def inner_model(self) -> torch.nn.Module:
        """The model without DDP / compile wrappers (what the probe runs)."""
        return unwrap(self.model)


def progress_postfix(metrics: dict) -> dict:
    """The short progress-bar line of a checkpoint's metrics: ``s``, ``mse``, ``P`` (LNP position).

    Examples
    --------
    >>> progress_postfix({"bandscope/param_time": 1.23456, "bandscope/mse": 0.0123})
    {'s': '1.235', 'mse': '0.01230'}
    """
    out = {}
    for key, short, fmt in (("param_time", "s", "{:.4g}"), ("mse", "mse", "{:.5f}"),
                            ("lnp_spectral_position", "P", "{:.3f}")):
        v = metrics.get(METRIC_PREFIX + key)
        if v is not None:
            out[short] = fmt.format(v)
    return out


#: forecast variables sent to loggers (when the forecast has them; else every numeric variable)
FORECAST_LOGGED = tuple(f"{pre}{v}{suf}" for pre in ("", "total_") for v in ("floor", "s_reach", "s_remaining")
                        for suf in ("", "_low", "_high"))


def forecast_metrics(ds) -> dict:
    """Flatten a forecast Dataset (:func:`bandscope.forecast`) into logger scalars: 0-d variables
    as ``bandscope/forecast_<var>``, 1-d variables as ``bandscope/forecast_<var>/<label>`` (band
    resolution or the coordinate's value). Only :data:`FORECAST_LOGGED` (floor, s_reach,
    s_remaining with their intervals, per band and ``total_``) when present; non-finite and
    non-numeric values are left out."""
    out = {}
    if len(ds.dims) > 1 and "run" in ds.dims and ds.sizes["run"] == 1:
        ds = ds.isel(run=0)
    names = [v for v in FORECAST_LOGGED if v in ds.data_vars] or list(ds.data_vars)
    for v in names:
        da = ds[v]
        if da.dtype.kind not in "fiu":
            continue
        if da.ndim == 0:
            val = float(da)
            if math.isfinite(val):
                out[f"{METRIC_PREFIX}forecast_{v}"] = val
        elif da.ndim == 1:
            dim = da.dims[0]
            labels = da[dim].values if dim in da.coords else np.arange(da.sizes[dim])
            for lab, val in zip(labels, da.values):
                val = float(val)
                if math.isfinite(val):
                    lab = lab.item() if hasattr(lab, "item") else lab
                    out[f"{METRIC_PREFIX}forecast_{v}/{lab}"] = val
    return out
