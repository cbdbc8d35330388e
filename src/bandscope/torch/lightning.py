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

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the standalone package
    try:
        import pytorch_lightning as pl
    except ImportError as exc:
        raise ImportError("bandscope.torch.lightning needs Lightning: "
                          "pip install 'bandscope[lightning]' -c constraints.txt") from exc

from .monitor import METRIC_PREFIX, Monitor, progress_postfix
from .options import LiveForecastOptions, callback_forecast_options, callback_monitor_options

if TYPE_CHECKING:
    from ..keysearch.forecasting import ForecastOptions

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
    forecast : bool, LiveForecastOptions or ForecastOptions
        The Monitor's live forecasts (:class:`~bandscope.torch.LiveForecastOptions`; ``True``: the
        defaults; off by default). The legacy keywords ``forecast_min_checkpoints``,
        ``forecast_budget`` and ``forecast_background`` still work among ``monitor_options`` and
        are converted once, here (``callback.forecast_options``).
    **monitor_options
        Any other :class:`~bandscope.torch.Monitor` keyword (``schedule``, ``total_steps``,
        ``name``, ``lnp``, ``lnp_batch``, ``tensorboard``, ...), the typed options included
        (``identity=RunIdentity(...)``, ``probe=ProbeOptions(...)``, ``sinks=SinkOptions(...)`` without
        ``log``, ``lnp_options=LNPOptions(...)``). Without
        ``schedule``/``total_steps`` the geometric schedule spans
        ``trainer.estimated_stepping_batches`` when that is finite.

    Attributes
    ----------
    monitor : Monitor
        The monitor, after ``on_train_start``.
    """

    def __init__(self, panel: object = None, path: str | os.PathLike | None = None, *, progress_bar: bool = True,
                 log: Callable[[dict, int], None] | None = None,
                 forecast: bool | LiveForecastOptions | ForecastOptions = False, **monitor_options: object) -> None:
        super().__init__()
        self.panel, self.path = panel, path
        self.progress_bar = progress_bar
        self.user_log = log
        self.options = monitor_options
        #: the Monitor's live forecasts (None: off), from ``forecast`` and the legacy keywords
        self.forecast_options = callback_forecast_options(forecast, self.options,
                                                          "lightning.BandscopeCallback")
        self.monitor: Monitor | None = None
        self._trainer = None
        self._restored: dict | None = None

    # -- state (Lightning checkpoints) -----------------------------------------------------------
    def state_dict(self) -> dict:
        """The monitor's state (:meth:`Monitor.state_dict`) at the step being checkpointed."""
        if self.monitor is None:
            return {} if self._restored is None else {"monitor": self._restored}
        if self._trainer is not None and not self.monitor.closed:
            self._catch_up(self._trainer)
        return {"monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep the saved monitor state; ``on_train_start`` resumes the run file from it."""
        self._restored = state_dict.get("monitor") or None

    # -- the monitor --------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        if self.monitor is not None and not self.monitor.closed:  # a second fit() with this callback
            self.monitor.close(final_checkpoint=False)
        opts = dict(self.options)
        if self._restored is not None:
            opts["state"] = self._restored  # resuming from a Lightning checkpoint: continue the run file
        if "schedule" not in opts and "total_steps" not in opts:
            total = trainer.estimated_stepping_batches
            if total is not None and total != float("inf") and int(total) > 0:
                opts["total_steps"] = int(total)
        opts = callback_monitor_options(opts, source="bandscope.torch.lightning.BandscopeCallback", log=self._log)
        # the user's Monitor keywords (the callback's public contract), typed options included
        self.monitor = Monitor(pl_module, panel=self.panel, path=self.path, rank=trainer.global_rank,
                               start_step=trainer.global_step, forecast=self.forecast_options,
                               **opts)
        self._restored = None

    def _catch_up(self, trainer, loss=None):
        checkpointed = None
        while self.monitor.global_step < trainer.global_step:  # one call per optimizer step
            last = self.monitor.global_step + 1 == trainer.global_step
            checkpointed = self.monitor.step(loss=loss if last else None) or checkpointed
        return checkpointed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.monitor is None or self.monitor.closed:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        checkpointed = self._catch_up(trainer, loss)
        if checkpointed and self.progress_bar and trainer.is_global_zero:
            for k, v in progress_postfix(checkpointed).items():
                pl_module.log(k, float(v), prog_bar=True, logger=False, on_step=True, on_epoch=False,
                              rank_zero_only=True, batch_size=1)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close(final_checkpoint=False)

    def teardown(self, trainer, pl_module, stage: str) -> None:
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
