"""HuggingFace ``transformers.Trainer`` callback: a :class:`~bandscope.torch.Monitor` driven by
``Trainer.train``.

::

    from bandscope.torch.hf import BandscopeCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[BandscopeCallback(panel=PANEL, path="run.nc")])

Needs ``pip install "bandscope[hf]"`` (imported only when this module is). The Monitor is built at
``on_train_begin`` (step 0 = the weights before the first update) and stepped in ``on_step_end``,
once per optimizer step (``state.global_step``; gradient accumulation counts correctly).

Where the metrics go: the Trainer logs every ``logging_steps`` as configured (the callback never
forces a log line); at each log event the callback adds the metrics of the latest checkpoint not
yet logged to the ``logs`` dict in ``on_log``, with ``bandscope/checkpoint_step``, the step they
were measured at. The callback moves itself to the front of the Trainer's callback list when
training starts, so every ``report_to`` backend (TensorBoard, Weights & Biases, MLflow, ...) and
the console progress line, which read the same ``logs`` dict after it, receive them; they also
land in ``trainer.state.log_history``. Every checkpoint is in the run file whatever the logging
frequency. Under DDP only the world process zero probes, writes and adds metrics; every rank
tracks parameter time on its full (replicated) parameters.

The training loss of each update (``train_loss`` in the run file) is read from the ``loss`` of the
model's output in training mode (a forward hook; the mean over the update's micro-batches): NaN
when the model's output carries no loss (a custom ``compute_loss``).

Resume: at every Trainer checkpoint the callback saves :meth:`Monitor.state_dict` as
``bandscope_state.pt`` in the checkpoint folder, and ``trainer.train(resume_from_checkpoint=...)``
restores it, so the run file continues exactly (``docs/torch.md``, "Resume"). The run file's lock
is released when ``train()`` returns or raises (the callback wraps the Trainer's ``train`` when it
is passed to the Trainer's constructor: HF has no failure event), and by :meth:`BandscopeCallback.close`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import CallbackHandler
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("bandscope.torch.hf needs transformers: pip install 'bandscope[hf]' -c constraints.txt") from exc

from ..errors import BandscopeInputError
from .monitor import Monitor
from .options import FORECAST_KEYWORDS, LiveForecastOptions, MonitorOptions, callback_defaults
from .options import monitor_options as make_monitor_options

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

    from ..keysearch.forecasting import ForecastOptions
    from .options import MonitorKeywords

__all__ = ["BandscopeCallback", "STATE_FILE"]

#: the monitor state's file name in each Trainer checkpoint folder
STATE_FILE = "bandscope_state.pt"


#: the ``RunIdentity.source`` of the runs this callback records (unless the user gives one)
SOURCE = "bandscope.torch.hf.BandscopeCallback"


def _frame_local(name: str, code_name: str, max_depth: int = 12) -> Any:
    """Local ``name`` of the nearest calling frame running a function called ``code_name``."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            return None
        if frame.f_code.co_name == code_name and name in frame.f_locals:
            return frame.f_locals[name]
        frame = frame.f_back
    return None


def _calling_handler(max_depth: int = 6) -> CallbackHandler | None:
    """The ``CallbackHandler`` dispatching the current event (found on the call stack), or None."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            return None
        obj = frame.f_locals.get("self")
        if isinstance(obj, CallbackHandler):
            return obj
        frame = frame.f_back
    return None


def _checkpoint_folder(args: TrainingArguments, state: TrainerState) -> str:
    """The folder the Trainer saves its checkpoint of ``state.global_step`` in."""
    return os.path.join(args.output_dir or os.curdir, f"checkpoint-{int(state.global_step)}")


class BandscopeCallback(TrainerCallback):
    """Record band losses, parameter time, LNP and forecasts of a ``transformers`` model as it trains.

    Parameters
    ----------
    panel, path
        As for :class:`~bandscope.torch.Monitor`: held-out images (the model's ``forward`` on a
        batch of images must return a tensor of reconstructions of the same shape, or an output
        whose first element is one) and the run file. Both optional: without a panel (a
        language model) the run file holds parameter time, the training loss, ``heldout_loss``
        (with ``heldout_batch=``, e.g. a dict of ``input_ids`` and ``labels``) and LNP.
    log : callable(metrics, step), optional
        Also receives every checkpoint's metrics (besides the ``logs`` of the Trainer).
    forecast : bool, LiveForecastOptions or ForecastOptions
        The Monitor's live forecasts (:class:`~bandscope.torch.LiveForecastOptions`; ``True``: the
        defaults; off by default). The legacy keywords ``forecast_min_checkpoints``,
        ``forecast_budget`` and ``forecast_background`` still work among ``monitor_options``.
    **monitor_options : MonitorKeywords
        Any other :class:`~bandscope.torch.Monitor` keyword (``schedule``, ``total_steps``,
        ``name``, ``lnp``, ``lnp_batch``, ...; typed by :class:`~bandscope.torch.options.MonitorKeywords`),
        the typed options included (``identity=RunIdentity(...)``, ``probe=ProbeOptions(...)``,
        ``sinks=SinkOptions(...)`` without ``log``, ``lnp_options=LNPOptions(...)``). Without
        ``schedule``/``total_steps`` the geometric schedule spans ``state.max_steps``.
        All of them are validated once, here, into one
        :class:`~bandscope.torch.options.MonitorOptions` that each Monitor of the callback
        receives.

    Attributes
    ----------
    monitor_options : MonitorOptions
        The Monitor's options (with the callback's ``source``, ``log`` and ``probe_output``).
    forecast_options : LiveForecastOptions or None
        ``monitor_options.forecast``.
    options : dict
        The Monitor keywords as given, the legacy forecast keywords left out.
    monitor : Monitor
        The monitor, after ``on_train_begin``.
    """

    def __init__(self, panel: object = None, path: str | os.PathLike[str] | None = None, *,
                 log: Callable[[dict, int], None] | None = None,
                 forecast: bool | LiveForecastOptions | ForecastOptions = False,
                 **monitor_options: Unpack[MonitorKeywords]) -> None:
        self.panel, self.path = panel, path
        self.user_log = log
        self.options: dict[str, object] = {k: v for k, v in monitor_options.items() if k not in FORECAST_KEYWORDS}
        #: the Monitor's options, validated once (the user's, with the callback's source, log and probe output)
        self.monitor_options: MonitorOptions = callback_defaults(
            make_monitor_options("hf.BandscopeCallback", monitor_options, forecast=forecast),
            where="hf.BandscopeCallback", source=SOURCE, log=self._log, probe_output=first_tensor)
        #: the Monitor's live forecasts (None: off), from ``forecast`` and the legacy keywords
        self.forecast_options = self.monitor_options.forecast
        self.monitor: Monitor | None = None
        self._pending: dict[str, float] = {}
        self._loss_sum: torch.Tensor | None = None
        self._loss_n = 0
        self._in_monitor = False
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    # -- the lock on every exit ------------------------------------------------------------------
    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: object) -> TrainerControl:
        """Guard the Trainer being built: its ``train`` releases the run file when it raises."""
        trainer = _frame_local("self", "__init__")
        if trainer is not None and callable(getattr(trainer, "train", None)):
            self._guard(trainer)
        return control

    def _guard(self, trainer: Any) -> None:
        """Make ``trainer.train`` release the run file when it raises (HF has no failure event)."""
        if getattr(trainer, "_bandscope_guard", None) is self:
            return
        train = trainer.train
        cb = self

        @functools.wraps(train)
        def train_releasing_the_run_file(*args: Any, **kwargs: Any) -> Any:
            try:
                return train(*args, **kwargs)
            except BaseException:
                cb.close()
                raise

        trainer.train = train_releasing_the_run_file
        trainer._bandscope_guard = self

    def close(self) -> None:
        """Close the monitor (releases the run file's lock; no final checkpoint). Safe to call twice."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close(final_checkpoint=False)

    # -- training ------------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: torch.nn.Module | None = None, **kwargs: object) -> None:
        """Build the Monitor on the model (resuming from the checkpoint's saved state)."""
        handler = _calling_handler()
        if handler is not None and handler.callbacks and handler.callbacks[0] is not self:
            handler.callbacks.remove(self)  # first in line: report_to backends see our additions to logs
            handler.callbacks.insert(0, self)
        self.close()  # a monitor left by an earlier train() with this callback
        opts = self.monitor_options
        if opts.schedule is None and opts.total_steps is None and state.max_steps and state.max_steps > 0:
            opts = dataclasses.replace(opts, total_steps=int(state.max_steps))
        if int(state.global_step) > 0 and opts.state is None:
            opts = dataclasses.replace(opts, state=self._saved_state(args, state))
        self._pending = {}
        self._loss_sum, self._loss_n = None, 0
        if model is None:
            raise TypeError("hf.BandscopeCallback: the Trainer gave on_train_begin no model to monitor")
        self._hook = model.register_forward_hook(self._capture_loss)
        try:
            self.monitor = Monitor(model, panel=self.panel, path=self.path, options=opts,
                                   rank=0 if state.is_world_process_zero else max(1, int(args.process_index)),
                                   start_step=int(state.global_step))
        except BaseException:
            self.close()
            raise

    def _saved_state(self, args: TrainingArguments, state: TrainerState) -> dict[str, Any]:
        """The monitor state saved in the checkpoint folder the Trainer resumes from."""
        import torch

        folder = _frame_local("resume_from_checkpoint", "_inner_training_loop")
        if not folder:
            folder = _checkpoint_folder(args, state)
        path = os.path.join(str(folder), STATE_FILE)
        if not os.path.isfile(path):
            raise BandscopeInputError(
                f"resuming at step {int(state.global_step)} but {path} does not exist: the checkpoint was saved "
                "without the bandscope callback, so the run file cannot continue exactly. Start a new run "
                "(another path=, or overwrite=True)", path=path)
        return torch.load(path, map_location="cpu", weights_only=True)

    def _capture_loss(self, module: torch.nn.Module, inputs: object, output: object) -> None:
        if self._in_monitor or not module.training:
            return
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if loss is None or not hasattr(loss, "detach"):
            return
        loss = loss.detach().float()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_n += 1

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: object) -> TrainerControl:
        """Count the optimizer steps up to ``state.global_step`` (the last with the update's training loss)."""
        if self.monitor is None or self.monitor.closed:
            return control
        loss = None if self._loss_sum is None else self._loss_sum / self._loss_n
        self._loss_sum, self._loss_n = None, 0
        self._in_monitor = True
        try:
            while self.monitor.global_step < state.global_step:  # one call per optimizer step
                last = self.monitor.global_step + 1 == state.global_step
                self.monitor.step(loss=loss if last else None)
        finally:
            self._in_monitor = False
        return control

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: object) -> TrainerControl:
        """Save the monitor's state in the checkpoint folder the Trainer just wrote."""
        if self.monitor is None:
            return control
        import torch

        saved = self.monitor.state_dict()
        if state.is_world_process_zero:
            folder = _checkpoint_folder(args, state)
            if os.path.isdir(folder):
                tmp = os.path.join(folder, STATE_FILE + ".tmp")
                torch.save(saved, tmp)
                os.replace(tmp, os.path.join(folder, STATE_FILE))
        return control

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: object) -> TrainerControl:
        """Add the latest checkpoint's metrics not yet logged to the Trainer's ``logs``."""
        if self._pending and logs is not None and "eval_loss" not in logs:
            logs.update(self._pending)
            last = state.log_history[-1] if state.log_history else None
            if last is not None and last.get("step") == state.global_step:
                last.update(self._pending)  # the Trainer copied logs before this event
            self._pending = {}
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: object) -> TrainerControl:
        """The last checkpoint; release the run file."""
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close()
        self.close()
        return control

    def _log(self, metrics: dict, step: int) -> None:
        self._pending = {**metrics, "bandscope/checkpoint_step": int(step)}
        if self.user_log is not None:
            self.user_log(metrics, step)


def first_tensor(out: Any) -> torch.Tensor:
    """The reconstruction in a model's output: the output itself if it is a tensor, else the first
    tensor with at least one dim of a ``ModelOutput`` / dict / tuple (HF models return those; a
    0-d loss is skipped)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    for v in values:  # the first tensor with a batch dim: a 0-d loss is never the reconstruction
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return v
    raise BandscopeInputError("the model's output holds no tensor with a batch dim to probe; pass "
                              "probe_output=lambda out: out[...] naming the reconstruction")
