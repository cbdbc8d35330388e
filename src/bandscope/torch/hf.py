"""HuggingFace ``transformers.Trainer`` callback: a :class:`~bandscope.torch.Monitor` driven by
``Trainer.train``.

::

    from bandscope.torch.hf import BandscopeCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[BandscopeCallback(panel=PANEL, path="run.nc")])

Needs ``pip install "bandscope[hf]"`` (imported only when this module is). The Monitor is built at
``on_train_begin`` (step 0 = the weights before the first update) and stepped in ``on_step_end``,
once per optimizer step (``state.global_step``; gradient accumulation counts correctly).

Where the metrics go: at a checkpoint the callback asks the Trainer to log that step
(``control.should_log = True``) and adds its metrics to the ``logs`` dict in ``on_log``. The
callback moves itself to the front of the Trainer's callback list when training starts, so every
``report_to`` backend (TensorBoard, Weights & Biases, MLflow, ...) and the console progress line,
which read the same ``logs`` dict after it, receive them; they also land in
``trainer.state.log_history``. Step 0's metrics are in the run file but reach the backends only
as part of the run file (no Trainer log event exists before the first step). Under DDP only the
world process zero probes, writes and adds metrics; every rank tracks parameter time on its full
(replicated) parameters.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

try:
    from transformers import TrainerCallback
    from transformers.trainer_callback import CallbackHandler
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("bandscope.torch.hf needs transformers: pip install 'bandscope[hf]' -c constraints.txt") from exc

from .monitor import Monitor

__all__ = ["BandscopeCallback"]


def _calling_handler(max_depth: int = 6):
    """The ``CallbackHandler`` dispatching the current event (found on the call stack), or None."""
    frame = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            return None
        obj = frame.f_locals.get("self")
        if isinstance(obj, CallbackHandler):
            return obj
        frame = frame.f_back
    return None


class BandscopeCallback(TrainerCallback):
    """Record band losses, parameter time, LNP and forecasts of a ``transformers`` model as it trains.

    Parameters
    ----------
    panel, path
        As for :class:`~bandscope.torch.Monitor`: held-out images (the model's ``forward`` on a
        batch of images must return a tensor of reconstructions of the same shape, or an output
        whose first element is one) and the run file. Both optional: without a panel only
        parameter time (and LNP) are logged.
    **monitor_options
        Any other :class:`~bandscope.torch.Monitor` keyword (``schedule``, ``total_steps``,
        ``name``, ``lnp``, ``lnp_batch``, ``forecast``, ...). Without ``schedule``/``total_steps``
        the geometric schedule spans ``state.max_steps``.

    Attributes
    ----------
    monitor : Monitor
        The monitor, after ``on_train_begin``.
    """

    def __init__(self, panel=None, path=None, *, log: Callable[[dict, int], None] | None = None,
                 **monitor_options):
        self.panel, self.path = panel, path
        self.user_log = log
        self.options = monitor_options
        self.monitor: Monitor | None = None
        self._pending: dict = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        handler = _calling_handler()
        if handler is not None and handler.callbacks and handler.callbacks[0] is not self:
            handler.callbacks.remove(self)  # first in line: report_to backends see our additions to logs
            handler.callbacks.insert(0, self)
        opts = dict(self.options)
        if "schedule" not in opts and "total_steps" not in opts and state.max_steps and state.max_steps > 0:
            opts["total_steps"] = int(state.max_steps)
        opts.setdefault("source", "bandscope.torch.hf.BandscopeCallback")
        opts.setdefault("probe_output", first_tensor)
        self.monitor = Monitor(model, panel=self.panel, path=self.path,
                               rank=0 if state.is_world_process_zero else max(1, int(args.process_index)),
                               start_step=int(state.global_step), log=self._log, **opts)
        self._pending.clear()  # step 0 has no log event

    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor is None:
            return control
        done = None
        while self.monitor.global_step < state.global_step:  # one call per optimizer step
            done = self.monitor.step() or done
        if done and self.monitor.is_writer:
            control.should_log = True  # the Trainer logs this step; on_log adds our metrics
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._pending and logs is not None and "eval_loss" not in logs:
            logs.update(self._pending)
            last = state.log_history[-1] if state.log_history else None
            if last is not None and last.get("step") == state.global_step:
                last.update(self._pending)  # the Trainer copied logs before this event
            self._pending = {}
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close()
        return control

    def _log(self, metrics: dict, step: int) -> None:
        self._pending = dict(metrics)
        if self.user_log is not None:
            self.user_log(metrics, step)


def first_tensor(out):
    """The reconstruction in a model's output: the output itself if it is a tensor, else the first
    tensor of a ``ModelOutput`` / dict / tuple (HF models return those)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        for v in out.values():
            if isinstance(v, torch.Tensor):
                return v
    return out[0]
