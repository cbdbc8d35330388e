"""PyTorch Lightning callback: a :class:`~bandscope.torch.Monitor` driven by ``Trainer.fit``.

::

    from bandscope.torch.lightning import BandscopeCallback
    trainer = Trainer(callbacks=[BandscopeCallback(panel=PANEL, path="run.nc")])

Needs ``pip install "bandscope[lightning]"`` (imported only when this module is). The callback
builds the Monitor at ``on_train_start`` (the model is on its device and wrapped by the strategy
then), counts optimizer steps with ``trainer.global_step`` (gradient accumulation and manual
optimisation count correctly), and sends each checkpoint's metrics to every logger of the
trainer (``logger.log_metrics(metrics, step=global_step)``: at the checkpoint's own step, not
thinned by ``log_every_n_steps``) and its short form (``s``, ``mse``, ``P``) to the progress bar.
Under DDP only global rank 0 probes, writes and logs; every rank tracks parameter time on its
full (replicated) parameters.

Resume: the callback's state (:meth:`Monitor.state_dict`) is saved in every Lightning checkpoint
(``state_dict`` / ``load_state_dict``, Lightning's callback state), and ``trainer.fit(...,
ckpt_path="last.ckpt")`` continues the same run file exactly (``docs/torch.md``, "Resume"). The
run file's lock is released on every exit: ``on_train_end``, ``on_exception`` (KeyboardInterrupt
included) and ``teardown``.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the types are lightning's; pytorch_lightning is the same API under its older name
    import lightning.pytorch as pl
else:
    try:
        import lightning.pytorch as pl
    except ImportError:  # pragma: no cover - the standalone package
        try:
            import pytorch_lightning as pl
        except ImportError as exc:
            raise ImportError("bandscope.torch.lightning needs Lightning: "
                              "pip install 'bandscope[lightning]' -c constraints.txt") from exc

from .monitor import METRIC_PREFIX, Monitor, progress_postfix
from .options import FORECAST_KEYWORDS, LiveForecastOptions, MonitorOptions, callback_defaults
from .options import monitor_options as make_monitor_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..keysearch.forecasting import ForecastOptions
    from .options import MonitorKeywords

#: the ``RunIdentity.source`` of the runs this callback records (unless the user gives one)
SOURCE = "bandscope.torch.lightning.BandscopeCallback"

__all__ = ["BandscopeCallback"]


class BandscopeCallback(pl.Callback):
    """Record band losses, parameter time, LNP and forecasts of a LightningModule as it trains.

    Parameters
    ----------
    panel, path
        As for :class:`~bandscope.torch.Monitor`: held-out images (the module's ``forward(images)``
        must return reconstructions of the same shape) and the run file. Both optional: without
        a panel the run file holds parameter time, the training loss (``training_step``'s),
        ``heldout_loss`` (with ``heldout_batch=``) and LNP.
    progress_bar : bool
        Show ``s`` (parameter time), ``mse`` and ``P`` in the progress bar.
    log : callable(metrics, step), optional
        Also receives every checkpoint's metrics (besides the trainer's loggers).
    forecast : bool, LiveForecastOptions or ForecastOptions
        The Monitor's live forecasts (:class:`~bandscope.torch.LiveForecastOptions`; ``True``: the
        defaults; off by default). The legacy keywords ``forecast_min_checkpoints``,
        ``forecast_budget`` and ``forecast_background`` still work among ``monitor_options``.
    **monitor_options : MonitorKeywords
        Any other :class:`~bandscope.torch.Monitor` keyword (``schedule``, ``total_steps``,
        ``name``, ``lnp``, ``lnp_batch``, ``tensorboard``, ...; typed by
        :class:`~bandscope.torch.options.MonitorKeywords`), the typed options included
        (``identity=RunIdentity(...)``, ``probe=ProbeOptions(...)``, ``sinks=SinkOptions(...)`` without
        ``log``, ``lnp_options=LNPOptions(...)``). Without
        ``schedule``/``total_steps`` the geometric schedule spans
        ``trainer.estimated_stepping_batches`` when that is finite.
        All of them are validated once, here, into one
        :class:`~bandscope.torch.options.MonitorOptions` that each Monitor of the callback
        receives.

    Attributes
    ----------
    monitor_options : MonitorOptions
        The Monitor's options (with the callback's ``source`` and ``log``).
    forecast_options : LiveForecastOptions or None
        ``monitor_options.forecast``.
    options : dict
        The Monitor keywords as given, the legacy forecast keywords left out.
    monitor : Monitor
        The monitor, after ``on_train_start``.
    """

    def __init__(self, panel: object = None, path: str | os.PathLike[str] | None = None, *, progress_bar: bool = True,
                 log: Callable[[dict, int], None] | None = None,
                 forecast: bool | LiveForecastOptions | ForecastOptions = False,
                 **monitor_options: Unpack[MonitorKeywords]) -> None:
        super().__init__()
        self.panel, self.path = panel, path
        self.progress_bar = progress_bar
        self.user_log = log
        self.options: dict[str, object] = {k: v for k, v in monitor_options.items() if k not in FORECAST_KEYWORDS}
        #: the Monitor's options, validated once (the user's, with the callback's source and log)
        self.monitor_options: MonitorOptions = callback_defaults(
            make_monitor_options("lightning.BandscopeCallback", monitor_options, forecast=forecast),
            where="lightning.BandscopeCallback", source=SOURCE, log=self._log)
        #: the Monitor's live forecasts (None: off), from ``forecast`` and the legacy keywords
        self.forecast_options = self.monitor_options.forecast
        self.monitor: Monitor | None = None
        self._trainer: pl.Trainer | None = None
        self._restored: dict[str, Any] | None = None

    # -- state (Lightning checkpoints) -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The monitor's state (:meth:`Monitor.state_dict`) at the step being checkpointed."""
        if self.monitor is None:
            return {} if self._restored is None else {"monitor": self._restored}
        if self._trainer is not None and not self.monitor.closed:
            self._catch_up(self._trainer)
        return {"monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved monitor state; ``on_train_start`` resumes the run file from it."""
        self._restored = state_dict.get("monitor") or None

    # -- the monitor --------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the Monitor on the module as placed by the strategy (resuming from a restored state)."""
        self._trainer = trainer
        if self.monitor is not None and not self.monitor.closed:  # a second fit() with this callback
            self.monitor.close(final_checkpoint=False)
        opts = self.monitor_options
        if self._restored is not None:  # resuming from a Lightning checkpoint: continue the run file
            opts = dataclasses.replace(opts, state=self._restored)
        if opts.schedule is None and opts.total_steps is None:
            total = trainer.estimated_stepping_batches
            if total is not None and total != float("inf") and int(total) > 0:
                opts = dataclasses.replace(opts, total_steps=int(total))
        self.monitor = Monitor(pl_module, panel=self.panel, path=self.path, options=opts, rank=trainer.global_rank,
                               start_step=trainer.global_step)
        self._restored = None

    def _catch_up(self, trainer: pl.Trainer, loss: object = None) -> dict[str, float] | None:
        """Step the monitor up to the trainer's optimizer step; the metrics of the last checkpoint it recorded."""
        checkpointed = None
        monitor = self.monitor
        if monitor is None:
            return None
        while monitor.global_step < trainer.global_step:  # one call per optimizer step
            last = monitor.global_step + 1 == trainer.global_step
            checkpointed = monitor.step(loss=loss if last else None) or checkpointed
        return checkpointed

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        """Count the optimizer steps of this batch; show a checkpoint's short metrics in the progress bar."""
        if self.monitor is None or self.monitor.closed:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        checkpointed = self._catch_up(trainer, loss)
        if checkpointed and self.progress_bar and trainer.is_global_zero:
            for k, v in progress_postfix(checkpointed).items():
                pl_module.log(k, float(v), prog_bar=True, logger=False, on_step=True, on_epoch=False,
                              rank_zero_only=True, batch_size=1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The last checkpoint; release the run file."""
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Release the run file (no final checkpoint)."""
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close(final_checkpoint=False)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Release the run file (no final checkpoint)."""
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close(final_checkpoint=False)

    # -- loggers ------------------------------------------------------------------------------
    def _log(self, metrics: dict, step: int) -> None:
        trainer = self._trainer
        for logger in getattr(trainer, "loggers", []) or []:
            logger.log_metrics(metrics, step=step)
        if self.user_log is not None:
            self.user_log(metrics, step)

    @property
    def metric_prefix(self) -> str:
        """Prefix of the logged metric names."""
        return METRIC_PREFIX
