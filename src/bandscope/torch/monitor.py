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

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsFloat

import numpy as np
import torch

from ..errors import BandscopeInputError
from ..lnp.options import ESTIMATOR_RENAMED, LNPOptions, legacy_estimator
from ..schedule import geometric_schedule
from .device import unwrap
from .options import (
    LiveForecastOptions,
    MonitorKeywords,
    MonitorOptions,
    ProbeOptions,
    ProgressBar,
    RunIdentity,
    ScalarWriter,
    SinkOptions,
    monitor_options,
)
from .paramtime import ParamTimeTracker
from .probe import BandProbe
from .recorder import RunRecorder

if TYPE_CHECKING:
    import xarray as xr

    from ..keysearch.forecasting import ForecastOptions
    from .forecast_worker import ForecastWorker
    from .lnp.hook import LNPHook

__all__ = ["Monitor", "open_geometric_schedule", "METRIC_PREFIX", "forecast_metrics", "progress_postfix",
           "remaining_in_steps_and_time", "COMPACT_METRICS", "STATE_FORMAT"]

#: version of :meth:`Monitor.state_dict`'s layout
STATE_FORMAT = 1

#: metrics logged by default (``metrics="compact"``); ``metrics="all"`` logs every metric
#: (``docs/torch.md``, "Metrics"). ``band_<r>`` are the band losses.
COMPACT_METRICS = ("param_time", "mse", "band_", "lnp_spectral_position", "heldout_loss")

#: prefix of every metric name the monitor sends to loggers (``bandscope/param_time``, ...)
METRIC_PREFIX = "bandscope/"

#: scalar LNP statistics sent to loggers (``bandscope/lnp_spectral_position``, ...)
_LNP_LOGGED = ("spectral_position", "spectral_position_cross", "loss_scale", "network_scale", "grad_norm_sq", "loss")


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


#: keywords of ``lnp_options`` (a dict) that go to the :class:`~bandscope.torch.LNPHook` itself; every
#: other key is a field of :class:`~bandscope.lnp.options.LNPOptions` (or the deprecated ``network_scale``)
_HOOK_KEYS = ("total_steps", "n_windows", "steps_per_window", "first_step", "schedule", "eval_batch", "seed", "path",
              "recorder", "options")


@dataclass(frozen=True)
class _HookSettings:
    """The :class:`~bandscope.torch.LNPHook` a monitor builds from ``lnp=loss_fn``: its schedule, batch B,
    seed, own file and measurement options (defaults: the hook's)."""

    total_steps: int | None = None
    n_windows: int = 20
    steps_per_window: int = 10
    first_step: int = 0
    schedule: Iterable[int] | None = None
    eval_batch: object = None
    has_eval_batch: bool = False
    seed: int = 0
    path: str | Path | None = None
    recorder: RunRecorder | None = None
    options: LNPOptions = field(default_factory=LNPOptions)


def _hook_settings(lnp_options: LNPOptions | Mapping | None) -> _HookSettings:
    """``Monitor(lnp_options=)``: an :class:`LNPOptions`, or the legacy dict of hook keywords and LNP options,
    read key by key (an unknown key is refused, ``network_scale`` warns)."""
    if lnp_options is None:
        return _HookSettings()
    if isinstance(lnp_options, LNPOptions):
        return _HookSettings(options=lnp_options)
    if not isinstance(lnp_options, Mapping):
        raise BandscopeInputError(f"Monitor: lnp_options = {lnp_options!r} is neither an LNPOptions nor a dict of "
                                  "LNPHook keywords; pass bandscope.lnp.options.LNPOptions(...)")
    d = dict(lnp_options)
    fields = {f.name for f in dataclasses.fields(LNPOptions)}
    unknown = sorted(set(d) - fields - set(_HOOK_KEYS) - {"network_scale"})
    if unknown:
        raise BandscopeInputError(f"Monitor: lnp_options has unknown key(s) {unknown}; known: LNPHook's "
                                  f"{sorted(_HOOK_KEYS)} and LNPOptions' {sorted(fields)}")
    given = {k: v for k, v in d.items() if k in fields}
    if "network_scale" in d:
        given["estimator"] = legacy_estimator(d["network_scale"], given.get("estimator", LNPOptions.estimator),
                                              "Monitor(lnp_options=)")
        warnings.warn(ESTIMATOR_RENAMED.format(d["network_scale"]), DeprecationWarning, stacklevel=3)
    options = LNPOptions.from_keywords(d.get("options"), "Monitor(lnp_options=)", given)
    base = _HookSettings()
    return _HookSettings(total_steps=d.get("total_steps"), n_windows=d.get("n_windows", base.n_windows),
                         steps_per_window=d.get("steps_per_window", base.steps_per_window),
                         first_step=d.get("first_step", base.first_step), schedule=d.get("schedule"),
                         eval_batch=d.get("eval_batch"), has_eval_batch="eval_batch" in d,
                         seed=d.get("seed", base.seed), path=d.get("path"), recorder=d.get("recorder"),
                         options=options)


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
        (a language model) the run file holds parameter time, arc length, the training loss,
        the held-out loss and LNP (``docs/format.md``, "Runs without a panel").
    path : str or Path, optional
        Run file (``.nc``), rewritten atomically at each checkpoint (``docs/format.md``). A path
        that already holds a run is refused unless ``resume=True`` or ``overwrite=True``.
    options : bandscope.torch.options.MonitorOptions, optional
        Every option below but ``rank`` and ``start_step`` in one validated object (what the
        Lightning and HuggingFace callbacks hand their Monitor); a keyword away from its default
        beside it is refused. Without it the keywords build one (:func:`~bandscope.torch.options.monitor_options`),
        kept as ``monitor.options`` either way.
    resume : bool
        Continue the run in ``path``: give the :meth:`state_dict` saved with the training
        checkpoint as ``state=`` (or call :meth:`load_state_dict` before the first :meth:`step`).
        Checkpoints of the file after the restored step are replaced, with a warning naming them.
        Without a file at ``path`` a new run starts.
    overwrite : bool
        Replace the run in ``path`` (the old file is replaced at the first checkpoint).
    state : dict, optional
        A :meth:`state_dict` to resume from (implies ``resume=True``).
    heldout_batch : (inputs, targets) or dict of model keywords, optional
        A fixed held-out batch; its loss is recorded at every checkpoint as ``heldout_loss`` (eval
        mode, no gradient) with ``heldout_loss_fn(outputs, targets)`` (default: the ``lnp`` loss
        function; a dict batch may instead use the ``loss`` its model output carries). When
        ``lnp`` is a loss function the batch is also LNP's held-out batch B (cross terms).
    heldout_loss_fn : callable(outputs, targets), optional
        Loss of the held-out batch.
    metrics : {"compact", "all"}
        What goes to the loggers: ``"compact"`` (default) is :data:`COMPACT_METRICS` (band
        losses, ``mse``, parameter time, P, the held-out loss); ``"all"`` adds the arc length, the
        training loss and every LNP scalar. Forecasts are logged only with ``forecast=True``.
    tensorboard_images : int
        With ``tensorboard``, also log the first ``n`` panel reconstructions as images.
    schedule : iterable of int or callable(step) -> bool, optional
        Optimizer-step counts at which to checkpoint. Default: ``geometric_schedule(total_steps,
        n_points)`` when ``total_steps`` is given, else :func:`open_geometric_schedule` (16 per
        decade). Step 0 (the weights at construction) is always recorded.
    total_steps, n_points : int, optional
        Run length and number of points of the default geometric schedule.
    steps_per_epoch : int, optional
        Also record ``epoch = step / steps_per_epoch``.
    identity : bandscope.torch.RunIdentity, optional
        The run attributes (:class:`~bandscope.torch.RunRecorder`): ``name`` defaults to the
        file's stem, or its directory's name when the stem is ``run``. ``n_parameters`` (the
        trainable parameter count), ``created`` and ``versions`` are added. Kept as
        ``monitor.identity``.
    probe : bandscope.torch.ProbeOptions, optional
        The band probe's options (``monitor.probe_options``).
    sinks : bandscope.torch.SinkOptions, optional
        Where the metrics go: TensorBoard, a progress bar, a ``log`` callable, which metrics
        (``monitor.sinks``).
    name, arch, seed, source, extra_attrs
        The fields of ``identity`` as keywords (give either these or ``identity``).
    lnp : LNPHook or callable loss_fn(outputs, targets), optional
        Measure LNP: an :class:`~bandscope.torch.LNPHook` as configured, or a loss function (then
        a hook with ``total_steps`` and ``lnp_options`` is built, on the module inside a DDP
        wrapper). Measurements at step ``k`` are taken right after the ``k``-th update (at θ_k,
        the hook's convention) on ``lnp_batch``. Under ``torch.distributed`` (DDP, FSDP2) every
        rank measures its own ``lnp_batch`` as its shard of the global batch and the statistics
        are those of the global batch (:func:`~bandscope.torch.measure_lnp`); rank 0 logs them.
    lnp_batch : (inputs, targets) or callable(step) -> (inputs, targets), optional
        Batch A of the LNP measurements (required with ``lnp``); a fixed training batch.
    lnp_options : LNPOptions or dict, optional
        For the :class:`~bandscope.torch.LNPHook` built from a loss function: its measurement
        options (:class:`~bandscope.lnp.options.LNPOptions`), or a dict of the hook's keywords
        (``eval_batch``, ``n_windows``, ``schedule``, ``seed``, ``options``, ...) and
        ``LNPOptions`` fields (``estimator``, ``n_probes``, ...; the key ``network_scale`` is a
        deprecated spelling of ``estimator``). An unknown key is refused.
    tensorboard, progress, log, metrics, tensorboard_images
        The fields of ``sinks`` as keywords (give either these or ``sinks``):

    tensorboard : str, Path or SummaryWriter, optional
        Log every checkpoint's metrics with ``add_scalar`` (a directory makes a
        ``torch.utils.tensorboard.SummaryWriter``; needs the ``tensorboard`` package).
    progress : tqdm bar, optional
        Show ``s`` (parameter time), ``mse`` and the LNP position in its postfix at checkpoints.
    log : callable(metrics: dict, step: int), optional
        Receives every checkpoint's metrics (names start with ``bandscope/``).
    forecast : bool, bandscope.torch.LiveForecastOptions or ForecastOptions
        At checkpoints, forecast each band with :func:`bandscope.forecast` (when installed) once
        ``min_checkpoints`` are recorded, on a background thread
        (:class:`~bandscope.torch.forecast_worker.ForecastWorker`), and log each finished
        forecast at the next checkpoint with the step it was made at (``forecast_step``), with
        ``s_remaining`` also in optimizer steps and seconds (:func:`remaining_in_steps_and_time`).
        Off by default. ``True`` uses the defaults (or the legacy keywords below); a
        :class:`~bandscope.torch.LiveForecastOptions` sets when, where, within which CPU budget
        and with which :func:`bandscope.forecast` options; a core
        :class:`~bandscope.keysearch.forecasting.ForecastOptions` is shorthand for
        ``LiveForecastOptions(options=...)``. Kept as ``monitor.forecast_options`` (None when off).
    forecast_min_checkpoints, forecast_budget, forecast_background
        Legacy keywords of ``LiveForecastOptions``' ``min_checkpoints``, ``budget`` (largest ratio
        of the forecasts' CPU time to the training process's other CPU time, default 0.02; a
        checkpoint over budget, or one while a forecast is still running, is not forecast) and
        ``not synchronous`` (False: forecast on the training thread at the checkpoint itself).
    probe_batch_size, probe_autocast, band_dtype, probe_output
        The fields ``batch_size``, ``autocast``, ``dtype`` and ``output`` of ``probe`` as keywords
        (:class:`~bandscope.torch.BandProbe`'s; give either these or ``probe``).
    rank : int, optional
        Process rank (default ``torch.distributed.get_rank()`` when initialised, else 0). Only
        rank 0 probes, writes and logs; every rank tracks parameter time (the tracker needs every
        rank in sharded mode). With sharded (FSDP / DTensor) parameters every rank runs the probe,
        since the forward pass is collective.
    tracker_mode, process_group, trainable_only
        :class:`~bandscope.torch.ParamTimeTracker` options.

    Notes
    -----
    Call :meth:`step` once after every ``optimizer.step()`` (``step(loss=loss)`` records the
    training loss at checkpoints, read without a host sync in between). The weights at
    construction are checkpoint 0 (``param_time = arc_length = 0``); both the arc and the chords
    start there. The run file's lock is released on every exit: :meth:`close`, the end of a
    ``with`` block, and a constructor that raises.

    Resume: save ``monitor.state_dict()`` with the model and optimizer, and after restoring them
    build ``Monitor(..., resume=True, state=saved)``; the run file then continues as if the job
    had never stopped (``docs/torch.md``, "Resume").

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

    def __init__(self, model: torch.nn.Module, panel: object = None, path: str | os.PathLike[str] | None = None, *,
                 options: MonitorOptions | None = None,
                 schedule: Iterable[int] | Callable[[int], bool] | None = None,
                 total_steps: int | None = None, n_points: int = 53, steps_per_epoch: float | None = None,
                 identity: RunIdentity | None = None, probe: ProbeOptions | None = None,
                 sinks: SinkOptions | None = None,
                 name: str | None = None, arch: str = "", seed: int = -1, source: str = "bandscope.torch.Monitor",
                 extra_attrs: Mapping[str, object] | None = None,
                 lnp: LNPHook | Callable[[Any, Any], Any] | None = None, lnp_batch: object = None,
                 lnp_options: LNPOptions | Mapping[str, object] | None = None,
                 tensorboard: ScalarWriter | str | os.PathLike[str] | None = None, progress: ProgressBar | None = None,
                 log: Callable[[dict, int], None] | None = None,
                 forecast: bool | LiveForecastOptions | ForecastOptions | None = False,
                 forecast_min_checkpoints: int = 8, forecast_budget: float = 0.02, forecast_background: bool = True,
                 probe_batch_size: int = 256, probe_autocast: torch.dtype | None = None,
                 probe_output: Callable[[Any], torch.Tensor] | None = None, band_dtype: torch.dtype | None = None,
                 rank: int | None = None, tracker_mode: str = "auto", process_group: object = None,
                 trainable_only: bool = True, start_step: int = 0, resume: bool = False, overwrite: bool = False,
                 state: dict[str, Any] | None = None, heldout_batch: object = None,
                 heldout_loss_fn: Callable[[Any, Any], Any] | None = None,
                 metrics: str = "compact", tensorboard_images: int = 0) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"Monitor needs the nn.Module being trained, got {type(model).__name__}")
        # the one place where the keywords become the typed options (docs/torch.md, "Options"), each by name
        opts = monitor_options("Monitor", MonitorKeywords(
            schedule=schedule, total_steps=total_steps, n_points=n_points, steps_per_epoch=steps_per_epoch,
            identity=identity, probe=probe, sinks=sinks, name=name, arch=arch, seed=seed, source=source,
            extra_attrs=extra_attrs, lnp=lnp, lnp_batch=lnp_batch, lnp_options=lnp_options, tensorboard=tensorboard,
            progress=progress, metrics=metrics, tensorboard_images=tensorboard_images,
            forecast_min_checkpoints=forecast_min_checkpoints, forecast_budget=forecast_budget,
            forecast_background=forecast_background, probe_batch_size=probe_batch_size, probe_autocast=probe_autocast,
            probe_output=probe_output, band_dtype=band_dtype, tracker_mode=tracker_mode, process_group=process_group,
            trainable_only=trainable_only, resume=resume, overwrite=overwrite, state=state,
            heldout_batch=heldout_batch, heldout_loss_fn=heldout_loss_fn), options=options, forecast=forecast, log=log)
        hook_settings = _hook_settings(opts.lnp_options)
        self.recorder: RunRecorder | None = None
        self.tensorboard: ScalarWriter | None = None
        self._tb_owned = False
        self._forecaster: ForecastWorker | None = None  # made at the first forecast
        self.closed = False
        try:
            self._init(model, panel, path, opts, hook_settings, rank=rank, start_step=start_step)
            if opts.state is not None:
                self.load_state_dict(opts.state)
            elif not self._awaiting_state:
                self._measure_lnp()
                self.checkpoint()  # step 0: the weights as they are now
        except BaseException:
            self._release()  # a constructor that raises must not keep the run file locked
            raise

    def _init(self, model: torch.nn.Module, panel: object, path: str | os.PathLike[str] | None, opts: MonitorOptions,
              hook_settings: _HookSettings, *, rank: int | None, start_step: int) -> None:
        #: every option, validated (``docs/torch.md``, "Options")
        self.options = opts
        #: the options by concern
        self.identity, self.probe_options, self.sinks = opts.identity, opts.probe, opts.sinks
        identity, sinks = opts.identity, opts.sinks
        resume = bool(opts.resume) or opts.state is not None
        overwrite = bool(opts.overwrite)
        self.model = model
        self.rank = _dist_rank() if rank is None else int(rank)
        self.is_writer = self.rank == 0
        self.global_step = int(start_step)
        self.steps_per_epoch = opts.steps_per_epoch
        self.metrics_mode = sinks.metrics
        self.tracker = ParamTimeTracker(model, mode=opts.tracker_mode, process_group=opts.process_group,
                                        trainable_only=opts.trainable_only)
        self.tensorboard_images = sinks.tensorboard_images
        probe = opts.probe
        self.probe: BandProbe | None = None if panel is None else BandProbe(panel, batch_size=probe.batch_size,
                                                          autocast=probe.autocast, dtype=probe.dtype,
                                                          output=probe.output,
                                                          keep_recon=sinks.tensorboard_images > 0)
        self._probe_here = self.probe is not None and (self.is_writer or self.tracker.mode == "sharded")
        self.path = None if path is None else Path(path)
        if resume and overwrite:
            raise BandscopeInputError(f"Monitor({self.path}): resume=True and overwrite=True contradict each "
                                      "other; pick one")
        existing = self.path is not None and self.path.exists()
        if existing and not (resume or overwrite):
            raise BandscopeInputError(
                f"{self.path} already holds a run; a new Monitor would replace it. Pass resume=True (with the "
                "state_dict saved in your training checkpoint) to continue it, overwrite=True to replace it, "
                "or record to another path", path=self.path)
        self._awaiting_state = resume and existing
        self.n_parameters = sum(int(p.numel()) for p in unwrap(model).parameters()
                                if p.requires_grad or not opts.trainable_only)
        attrs = {"n_parameters": self.n_parameters, **dict(identity.extra_attrs)}
        if self.path is not None and self.is_writer:
            self.recorder = RunRecorder(self.path, name=identity.name, arch=identity.arch, seed=identity.seed,
                                        source=identity.source, extra_attrs=attrs, resume=resume)
        self._set_schedule(opts.schedule, opts.total_steps, opts.n_points)
        lnp, heldout_batch = opts.lnp, opts.heldout_batch
        self.heldout_batch = heldout_batch
        self.heldout_loss_fn = opts.heldout_loss_fn
        if self.heldout_loss_fn is None and callable(lnp) and not hasattr(lnp, "wants"):
            self.heldout_loss_fn = lnp  # a loss function given as lnp=
        if heldout_batch is not None and self.heldout_loss_fn is None and not isinstance(heldout_batch, dict):
            raise BandscopeInputError("Monitor(heldout_batch=(inputs, targets)) needs heldout_loss_fn=loss_fn(outputs, "
                                      "targets) (or lnp=loss_fn, which is used for it)")
        if (heldout_batch is not None and callable(lnp) and not hasattr(lnp, "wants")
                and not isinstance(heldout_batch, dict) and not hook_settings.has_eval_batch):
            # LNP cross terms on it
            hook_settings = dataclasses.replace(hook_settings, eval_batch=heldout_batch, has_eval_batch=True)
        self.lnp = self._make_lnp(lnp, opts.lnp_batch, hook_settings, opts.total_steps)
        self.lnp_batch = opts.lnp_batch
        self._lnp_arc: dict[int, float] = {}  # arc length at each LNP measurement (lnp_arc_length)
        if self.recorder is not None and self.lnp is not None:
            self.recorder.add_extra(self._lnp_arc_dataset)
        self.tensorboard = self._make_tensorboard(sinks.tensorboard) if self.is_writer else None
        self._tb_layout_done = False
        self.progress = sinks.progress
        self.log = sinks.log
        #: the live forecasts' options (None: no forecasts)
        self.forecast_options = opts.forecast
        self.forecast = opts.forecast is not None
        self.forecast_min_checkpoints = (LiveForecastOptions.min_checkpoints if opts.forecast is None
                                         else opts.forecast.min_checkpoints)
        self._forecaster = None  # a ForecastWorker, made at the first forecast
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []  # every checkpoint's metrics (also on ranks that do not write)
        self._walls: list[tuple[int, float, float]] = []  # (step, param_time, wall clock) per checkpoint
        self._last_checkpoint_step: int | None = None
        self._loss: object = None
        self._unwritten = False  # LNP measured since the file was last written

    # -- construction helpers ------------------------------------------------------------------
    def _set_schedule(self, schedule: Iterable[int] | Callable[[int], bool] | None, total_steps: int | None,
                      n_points: int) -> None:
        self._schedule_fn: Callable[[int], bool] | None = None
        self._schedule_set: set[int] = set()
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

    def _make_lnp(self, lnp: LNPHook | Callable[[Any, Any], Any] | None, lnp_batch: object, settings: _HookSettings,
                  total_steps: int | None) -> LNPHook | None:
        if lnp is None:
            return None
        from .lnp.hook import LNPHook

        if lnp_batch is None:
            raise BandscopeInputError("lnp= needs lnp_batch=(inputs, targets) (or a callable step -> batch): "
                             "the training batch A of each LNP measurement")
        if isinstance(lnp, LNPHook):
            hook = lnp
        elif callable(lnp):
            if settings.total_steps is not None:
                total_steps = settings.total_steps
            if total_steps is None and settings.schedule is None:
                raise BandscopeInputError("lnp=loss_fn needs total_steps= (for the log-window schedule) or "
                                 "lnp_options={'schedule': [steps...]}")
            hook = LNPHook(unwrap(self.model), lnp, total_steps=total_steps,  # no DDP gradient sync
                           n_windows=settings.n_windows, steps_per_window=settings.steps_per_window,
                           first_step=settings.first_step, schedule=settings.schedule,
                           eval_batch=settings.eval_batch, options=settings.options, seed=settings.seed,
                           recorder=settings.recorder, path=settings.path)
        else:
            raise TypeError(f"lnp must be an LNPHook or a loss function, got {type(lnp).__name__}")
        if self.recorder is not None and hook.recorder is None:
            hook.recorder = self.recorder  # LNP variables are merged into every rewrite of the run
        return hook

    def _make_tensorboard(self, tb: ScalarWriter | str | bytes | os.PathLike[str] | None) -> ScalarWriter | None:
        if tb is None or not isinstance(tb, (str, bytes, os.PathLike)):
            return tb  # a SummaryWriter (anything with add_scalar: SinkOptions checked it), or None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError("tensorboard= needs the tensorboard package: "
                              "pip install 'bandscope[tensorboard]' -c constraints.txt") from exc
        self._tb_owned = True
        return SummaryWriter(log_dir=os.fsdecode(tb))

    # -- the loop -----------------------------------------------------------------------------
    def wants(self, step: int) -> bool:
        """Whether optimizer step count ``step`` is a checkpoint."""
        if self._schedule_fn is not None:
            return bool(self._schedule_fn(int(step)))
        return int(step) in self._schedule_set

    def step(self, loss: object = None) -> dict[str, float] | None:
        """Count one optimizer update (call right after ``optimizer.step()``).

        Adds the step to the arc length on the parameters' device (no host sync); at a scheduled
        step also measures LNP and records a checkpoint, returning its metrics (else None).
        ``loss`` (a tensor or number: the training loss of this update) is kept by reference and
        read only if this step is a checkpoint (``train_loss``).
        """
        if self.closed:
            raise RuntimeError("Monitor.step() after close(); create a new Monitor for a new run")
        if self._awaiting_state:
            raise RuntimeError(f"Monitor(resume=True) on {self.path}: call load_state_dict(saved_state) before the "
                               "first step() (or pass state= to the constructor), so the run continues exactly")
        self.tracker.step()
        self.global_step += 1
        self._loss = loss.detach() if isinstance(loss, torch.Tensor) else loss
        self._measure_lnp()
        if self.wants(self.global_step):
            return self.checkpoint()
        return None

    def _measure_lnp(self) -> None:
        # one rank, or every rank under torch.distributed: each measures its shard of the global batch
        if self.lnp is not None and (self.is_writer or _dist_world() > 1) and self.lnp.wants(self.global_step):
            if self.lnp.last_step is not None and self.global_step <= self.lnp.last_step:
                return  # measured before the job was resumed
            b = self.lnp_batch(self.global_step) if callable(self.lnp_batch) else self.lnp_batch
            ds = self.lnp(self.global_step, b)
            if ds is not None:
                self._lnp_arc[self.global_step] = self.tracker.arc_length
                self._unwritten = True
                self.metrics.update({f"{METRIC_PREFIX}lnp_{k}": float(ds[k]) for k in _LNP_LOGGED
                                     if k in ds and ds[k].ndim == 0})

    def _lnp_arc_dataset(self) -> xr.Dataset | None:
        if not self._lnp_arc or self.lnp is None or not self.lnp.has_data:
            return None
        import xarray as xr

        steps = self.lnp.dataset()["lnp_step"].values.astype(np.int64)
        arc = np.array([self._lnp_arc.get(int(s), np.nan) for s in steps], dtype=np.float64)
        from bandscope import schema

        return xr.Dataset({"lnp_arc_length": ("lnp_step", arc, schema.attrs("run", "lnp_arc_length"))},
                          coords={"lnp_step": ("lnp_step", steps, schema.attrs("run", "lnp_step"))})

    @torch.no_grad()
    def _heldout_loss(self) -> float:
        m = unwrap(self.model)
        b = self.heldout_batch
        was = m.training
        m.eval()
        try:
            if isinstance(b, dict):
                out = m(**b)
                if self.heldout_loss_fn is not None:
                    loss = self.heldout_loss_fn(out, b)
                else:
                    loss = out["loss"] if isinstance(out, dict) else getattr(out, "loss", None)
                    if loss is None:
                        raise BandscopeInputError("Monitor(heldout_batch=dict): the model output has no 'loss' "
                                                  "(include the labels in the batch, or give heldout_loss_fn=)")
            else:
                if not isinstance(b, (tuple, list)) or len(b) != 2 or self.heldout_loss_fn is None:
                    raise BandscopeInputError(f"Monitor(heldout_batch={type(b).__name__}): pass (inputs, targets) "
                                              "with heldout_loss_fn=, or a dict of model keywords")
                x, y = b
                loss = self.heldout_loss_fn(m(x), y)
        finally:
            m.train(was)
        return float(loss)

    def _train_loss(self) -> float:
        v = self._loss
        if v is None:
            return math.nan
        if isinstance(v, dict):
            v = v.get("loss")
        if not isinstance(v, SupportsFloat):
            return math.nan
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan

    @torch.no_grad()
    def checkpoint(self) -> dict[str, float]:
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
        train_loss = self._train_loss()
        if math.isfinite(train_loss):
            m[f"{METRIC_PREFIX}train_loss"] = train_loss
        heldout = None
        if self.heldout_batch is not None and (self.is_writer or self.tracker.mode == "sharded"):
            heldout = self._heldout_loss()
            m[f"{METRIC_PREFIX}heldout_loss"] = heldout
        recon = None
        if self._probe_here and self.probe is not None:
            r = self.probe(self.model)
            recon = r.recon
            m[f"{METRIC_PREFIX}mse"] = r.mse
            for i, v in enumerate(r.band_loss):
                m[f"{METRIC_PREFIX}band_{2 ** i}"] = float(v)
            if self.recorder is not None:
                self.recorder.record(step=step, band_loss=r.band_loss, param_time=pt, arc_length=arc,
                                     mse=r.mse, epoch=epoch, train_loss=train_loss, heldout_loss=heldout)
        elif self.recorder is not None:
            self.recorder.record(step=step, param_time=pt, arc_length=arc, epoch=epoch, train_loss=train_loss,
                                 heldout_loss=heldout)
        self._unwritten = False
        self._walls.append((step, pt, time.monotonic()))
        if self.recorder is not None and self.probe is not None:
            m.update(self._forecast())
        self._last_checkpoint_step = step
        self.metrics = m
        self.history.append({"step": step, **m})
        if self.is_writer:
            self._emit(self._logged(m), step, recon)
        return m

    def _logged(self, m: dict[str, float]) -> dict[str, float]:
        """The metrics that go to the loggers (``metrics="compact"`` keeps :data:`COMPACT_METRICS`)."""
        if self.metrics_mode == "all":
            return dict(m)
        keep = tuple(METRIC_PREFIX + k for k in COMPACT_METRICS)
        return {k: v for k, v in m.items() if k.startswith(keep) or k.startswith(METRIC_PREFIX + "forecast_")}

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed job needs to continue this run exactly: the step, the schedule
        position (last checkpoint), the parameter-time tracker (arc length, chord sum and chord
        start), the recorder's position, the LNP hook's position and the run name. Save it with
        the model and optimizer state; pass it to :meth:`load_state_dict` (or ``state=``).

        Also writes the run file if LNP was measured since the last checkpoint, so the file is
        never behind the state. Plain Python values and tensors: ``torch.save`` /
        ``torch.load(weights_only=True)`` round-trip it.
        """
        if self.recorder is not None and self._unwritten and len(self.recorder):
            self.recorder.write()
            self._unwritten = False
        return {"format": STATE_FORMAT, "global_step": int(self.global_step),
                "last_checkpoint_step": -1 if self._last_checkpoint_step is None else int(self._last_checkpoint_step),
                "tracker": self.tracker.state_dict(),
                "lnp": None if self.lnp is None else self.lnp.state_dict(),
                "lnp_arc": {int(k): float(v) for k, v in self._lnp_arc.items()},
                "recorder_rows": 0 if self.recorder is None else len(self.recorder),
                "name": None if self.recorder is None else self.recorder.name,
                "path": None if self.path is None else str(self.path)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the model and optimizer already restored to the same
        step). The run file's checkpoints and LNP measurements after the restored step (a job
        killed after a run-file write and before its next training checkpoint) are dropped and
        rewritten as training redoes them, with a ``UserWarning`` naming the steps."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise BandscopeInputError(f"Monitor.load_state_dict: not a Monitor state (format "
                                      f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
                                      f"expected {STATE_FORMAT}); pass what Monitor.state_dict() returned")
        if self.tracker.steps and not self._awaiting_state:
            raise RuntimeError("Monitor.load_state_dict after step(): restore the state right after construction")
        # Without a run file to resume, the constructor recorded "step 0" from the weights it was
        # given, which are the restored ones: that row (and its LNP) is not step 0 and must go.
        recorded_here = not self._awaiting_state and int(state["global_step"]) > 0
        self.tracker.load_state_dict(state["tracker"])
        self.global_step = int(state["global_step"])
        last = int(state["last_checkpoint_step"])
        self._last_checkpoint_step = None if last < 0 else last
        self._lnp_arc = {int(k): float(v) for k, v in dict(state.get("lnp_arc") or {}).items()
                         if int(k) <= self.global_step}
        dropped: list[int] = []
        dropped_lnp: list[int] = []
        if self.recorder is not None:
            if state.get("name"):
                self.recorder.name = str(state["name"])
            if recorded_here and len(self.recorder):
                self.recorder.rows = []
                warnings.warn(f"{self.path}: resuming at step {int(state['global_step'])} without its run file (it did "
                              "not exist): the checkpoints before this step are lost; the file restarts here",
                              UserWarning, stacklevel=2)
            dropped = self.recorder.truncate(self.global_step)
            if len(self.recorder) != int(state.get("recorder_rows", len(self.recorder))):
                warnings.warn(f"{self.path}: the run file holds {len(self.recorder)} checkpoints up to step "
                              f"{self.global_step}, the saved state {state.get('recorder_rows')}; was the file "
                              "replaced since the training checkpoint?", UserWarning, stacklevel=2)
        if self.lnp is not None and state.get("lnp") is not None:
            prev = None if self.recorder is None else self.recorder.previous
            if prev is not None:
                prev = prev.drop_vars("lnp_arc_length", errors="ignore")  # the monitor's own, from the state
            dropped_lnp = self.lnp.load_state_dict(state["lnp"], previous=prev)
        if dropped or dropped_lnp:
            what = []
            if dropped:
                what.append(f"checkpoints at steps {dropped}")
            if dropped_lnp:
                what.append(f"LNP measurements at steps {dropped_lnp}")
            warnings.warn(f"{self.path}: resuming at step {self.global_step}, but the run file was ahead of the "
                          f"training checkpoint; its {' and '.join(what)} are replaced as training redoes them",
                          UserWarning, stacklevel=2)
        if self.recorder is not None and len(self.recorder):
            self.recorder.write()
        self._awaiting_state = False
        self._unwritten = False

    # -- sinks --------------------------------------------------------------------------------
    def _forecast(self) -> dict[str, float]:
        """Hand the run so far to the background forecast worker; return the metrics of the
        latest forecast that has finished (tagged ``forecast_step``), or {}."""
        o = self.forecast_options
        if o is None or self.recorder is None or len(self.recorder) < o.min_checkpoints:
            return {}
        if self._forecaster is None:
            from .forecast_worker import ForecastWorker

            self._forecaster = ForecastWorker(_forecast_job(o), budget=o.budget, synchronous=o.synchronous,
                                              nice=o.nice)
        if self._forecaster.ready():  # build the run Dataset only when it will be forecast
            self._forecaster.submit(self.recorder.dataset(), self.global_step)
        done = self._forecaster.poll()
        if done is None or not done.metrics:  # nothing finished, or no forecast function
            return {}
        out = {**done.metrics, f"{METRIC_PREFIX}forecast_step": float(done.step)}
        out.update(remaining_in_steps_and_time(out, self._walls))
        return out

    @property
    def _forecast_failed(self) -> bool:
        return self._forecaster is not None and self._forecaster.failed is not None

    def _emit(self, m: dict[str, float], step: int, recon: np.ndarray | None = None) -> None:
        if self.tensorboard is not None:
            if not self._tb_layout_done:
                self._tb_layout_done = True
                layout = tensorboard_layout(m)
                add = getattr(self.tensorboard, "add_custom_scalars", None)
                if layout and callable(add):
                    add(layout)
            for k, v in m.items():
                self.tensorboard.add_scalar(k, v, step)
            if recon is not None and self.tensorboard_images > 0 and hasattr(self.tensorboard, "add_images"):
                imgs = np.clip(np.asarray(recon[:self.tensorboard_images], dtype=np.float32), 0.0, 1.0)
                self.tensorboard.add_images(f"{METRIC_PREFIX}reconstruction", imgs, step, dataformats="NCHW")
            flush = getattr(self.tensorboard, "flush", None)
            if callable(flush):
                flush()
        if self.progress is not None:
            self.progress.set_postfix(progress_postfix(m), refresh=False)
        if self.log is not None:
            self.log(dict(m), step)

    # -- the end ------------------------------------------------------------------------------
    def close(self, *, final_checkpoint: bool = True) -> xr.Dataset | None:
        """Record the current step if it is not a checkpoint yet (``final_checkpoint``), write
        the LNP statistics, flush TensorBoard, release the run file's lock. Returns the run
        Dataset (rank 0 with a path) or None. The lock is released even if the last checkpoint
        or write raises."""
        if self.closed:
            return self.dataset()
        try:
            if final_checkpoint and not self._awaiting_state:
                self.checkpoint()
            if self.lnp is not None and self.is_writer and self.lnp.has_data:
                if self.recorder is not None:
                    if len(self.recorder):
                        self.recorder.write()
                elif self.lnp.path is not None:
                    self.lnp.write()
            if self._forecaster is not None:  # log the forecast still running, then stop the worker
                done = self._forecaster.finish(timeout=60.0)
                if done is not None and done.metrics and self.is_writer:
                    m = {**done.metrics, f"{METRIC_PREFIX}forecast_step": float(done.step)}
                    m.update(remaining_in_steps_and_time(m, self._walls))
                    self.metrics.update(m)
                    self._emit(m, self.global_step)
        finally:
            self._release()
        return self.dataset()

    def _release(self) -> None:
        """Flush and close what this monitor owns (TensorBoard writer, the run file's lock)."""
        self.closed = True
        tb = self.tensorboard
        if self._forecaster is not None:
            self._forecaster.close()  # on a failed close, do not wait for a forecast in flight
        try:
            if tb is not None:
                flush = getattr(tb, "flush", None)
                if callable(flush):
                    flush()
                close = getattr(tb, "close", None)
                if self._tb_owned and callable(close):
                    close()
        finally:
            if self.recorder is not None:
                self.recorder.close()  # give up ownership of the run file (its lock), the file stays

    def dataset(self) -> xr.Dataset | None:
        """The run recorded so far (rank 0 with a ``path``; with the LNP statistics, as in the
        file), else None."""
        if self.recorder is None or not len(self.recorder):
            return None
        return self.recorder._with_extras(self.recorder.dataset())

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(final_checkpoint=exc[0] is None)

    @property
    def inner_model(self) -> torch.nn.Module:
        """The model without DDP / compile wrappers (what the probe runs)."""
        return unwrap(self.model)


def _forecast_job(o: LiveForecastOptions) -> Callable[[xr.Dataset], dict[str, float]]:
    """The worker's job: ``run Dataset -> logged forecast metrics`` by :func:`bandscope.forecast`.

    ``bandscope.forecast`` is looked up when the job runs, so its first import (the forecasting
    module with scipy: about 0.7 s of CPU) happens on the worker's thread, not the training's;
    without it (``bandscope.forecast is None``) no metrics are logged."""

    def run(ds: xr.Dataset) -> dict[str, float]:
        import bandscope

        fc = getattr(bandscope, "forecast", None)
        if fc is None:
            return {}
        if o.options is None and o.calibration is None:
            return forecast_metrics(fc(ds))  # bandscope.forecast's own defaults
        return forecast_metrics(fc(ds, options=o.options, calibration=o.calibration))

    return run


def progress_postfix(metrics: Mapping[str, float]) -> dict[str, str]:
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


def forecast_metrics(ds: xr.Dataset) -> dict[str, float]:
    """Flatten a forecast Dataset (:func:`bandscope.forecast`) into logger scalars: 0-d variables
    as ``bandscope/forecast_<var>``, 1-d variables as ``bandscope/forecast_<var>/<label>`` (band
    resolution or the coordinate's value). Only :data:`FORECAST_LOGGED` (floor, s_reach,
    s_remaining with their intervals, per band and ``total_``) when present; non-finite and
    non-numeric values are left out."""
    out = {}
    if len(ds.dims) > 1 and "run" in ds.dims and ds.sizes["run"] == 1:
        ds = ds.isel(run=0)
    names: list[Hashable] = [v for v in FORECAST_LOGGED if v in ds.data_vars] or list(ds.data_vars)
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


def tensorboard_layout(metrics: Mapping[str, float]) -> dict[str, dict[str, list[Any]]]:
    """A TensorBoard custom-scalars layout (``SummaryWriter.add_custom_scalars``) that draws every
    band on one chart (``bandscope/band_.*``), and parameter time, losses and P on others.

    >>> sorted(tensorboard_layout({"bandscope/band_1": 0.1, "bandscope/param_time": 1.0})["bandscope"])
    ['band losses', 'losses', 'parameter time']
    """
    p = METRIC_PREFIX
    charts = {
        "band losses": ["Multiline", [rf"{p}band_\d+"]],
        "losses": ["Multiline", [rf"{p}(mse|train_loss|heldout_loss)$"]],
        "parameter time": ["Multiline", [rf"{p}(param_time|arc_length)$"]],
    }
    if any(k.startswith(f"{p}lnp_") for k in metrics):
        charts["LNP position P"] = ["Multiline", [rf"{p}lnp_spectral_position.*"]]
    return {"bandscope": charts}


def remaining_in_steps_and_time(forecast: Mapping[str, float], checkpoints: Iterable[tuple[float, float, float]],
                                recent: int = 4) -> dict[str, float]:
    """``s_remaining`` of a forecast also in optimizer steps and seconds of wall time.

    Each ``bandscope/forecast_*s_remaining*`` value (parameter time still to travel) is divided by
    the recent rate of parameter time, over the last ``recent`` checkpoints:
    ``steps = s_remaining / (Δs / Δstep)`` and ``seconds = s_remaining / (Δs / Δwall)``, logged as
    ``<name>_steps`` and ``<name>_seconds``. A linear extrapolation of the recent rate: parameter
    time usually slows down (s ~ t^γ, γ < 1), so these are lower bounds when γ < 1.

    Parameters
    ----------
    forecast : dict
        Logged forecast metrics (:func:`forecast_metrics`).
    checkpoints : sequence of (step, param_time, wall_seconds)
        The run's checkpoints, oldest first.

    Examples
    --------
    >>> remaining_in_steps_and_time({"bandscope/forecast_total_s_remaining": 2.0},
    ...                             [(0, 0.0, 0.0), (10, 1.0, 5.0), (20, 2.0, 10.0)])
    {'bandscope/forecast_total_s_remaining_steps': 20.0, 'bandscope/forecast_total_s_remaining_seconds': 10.0}
    """
    pts = list(checkpoints)[-(int(recent) + 1):]
    if len(pts) < 2:
        return {}
    (s0, p0, w0), (s1, p1, w1) = pts[0], pts[-1]
    ds = float(p1) - float(p0)
    if not ds > 0:
        return {}
    per_step = ds / (s1 - s0) if s1 > s0 else math.nan
    per_sec = ds / (w1 - w0) if w1 > w0 else math.nan
    out = {}
    for k, v in forecast.items():
        if "s_remaining" not in k or not k.startswith(f"{METRIC_PREFIX}forecast_"):
            continue
        head, sep, label = k.partition("/" if k.count("/") > 1 else "\0")
        if k.count("/") > 1:  # bandscope/forecast_s_remaining/<band>: the unit goes before the label
            head, _, label = k.rpartition("/")
            sep = "/"
        for suffix, rate in (("_steps", per_step), ("_seconds", per_sec)):
            if math.isfinite(rate) and rate > 0 and math.isfinite(v):
                out[head + suffix + sep + label] = float(v) / rate
    return out
