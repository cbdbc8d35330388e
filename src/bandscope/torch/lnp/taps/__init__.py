"""Forward taps for per-sample gradient norms: one entry running check → plan → capture → verify → record.

:class:`LayerTaps` records every call of a layer with a handler (:mod:`bandscope.torch.lnp.handlers`):
its inputs and a private copy of its output, so ``autograd.grad(out, taps, v)`` returns every
layer's output gradient δ in one backward pass without computing weight gradients. Four cases need
more than one layer at a time, and are handled exactly:

* **shared parameters** (tied embedding/head, a layer called twice): the per-sample gradients of
  every use are materialised and summed before the squared norm (the norm of the summed
  gradient, not the sum of norms);
* **free parameters** (used directly in a ``forward``: ``x + self.pos_embed``, ``self.scale * x``,
  ``x * self.gain``): during the measurement the parameter ``p`` of shape ``S`` is replaced by a
  per-sample copy whose gradient rows are the per-sample gradients, of a shape that broadcasts
  the way ``p`` does: ``p.expand(N, *S[1:])`` when ``S[0] == 1``, else ``(N, 1, …, 1, *S)`` with
  the smallest number k of inserted ones for which the forward runs and gives the same output;
* **unbatched layer calls** (a positional ``nn.Embedding`` on ``arange(T)``, broadcast over the
  batch): the call's output is expanded to ``(N, ...)`` the same way;
* **seq-first layers** (``nn.MultiheadAttention(batch_first=False)``, the Linear / LayerNorm /
  Embedding of a ``(T, N, E)`` block): the batch dim of every call is read from the dry runs and
  moved to dim 0 before the handler sees the call.

The protocol, one module per step (as curvlinops' ``io_collector``): :mod:`.cache` checks whether
the model was verified at this input signature and remembers it once it is; :mod:`.plan` reads the
layout from dry runs at two other batch sizes m₁, m₂ (a :class:`.layout.Plan`); :mod:`.capture`
hooks the measured forward and turns output gradients into per-sample norms; :mod:`.verify`
compares, on two or three samples, the per-sample gradients of every parameter with autograd's
gradients of single samples (a mismatch is an error naming the parameters and ``backend="vmap"``);
:mod:`.output_layer` takes the output layer's share of 𝒩 exactly. :meth:`LayerTaps.run` runs check
→ plan → capture; :meth:`LayerTaps.verify_once` runs verify → record after the caller's own checks
of the measured forward.
"""
from __future__ import annotations

import torch
from torch import nn

from ..inputs import batch_size, is_batch, select_output, unsupported_inputs_message
from .cache import cache_owner, checked, record_checked
from .cache import signature as _signature
from .capture import Taps
from .layout import MAX_INSERTED_DIMS, Plan
from .output_layer import output_layer_exact
from .plan import make_plan
from .verify import mixing_message, verify_taps

__all__ = ["LayerTaps", "Plan", "model_output", "checked", "record_checked", "single_tensor_inputs_message",
           "cache_owner", "mixing_message", "MAX_INSERTED_DIMS", "_signature"]


def single_tensor_inputs_message(x: object) -> str:
    """Why inputs other than a tensor or a mapping of tensors are refused, and what to do."""
    return unsupported_inputs_message(x)


def model_output(out: object) -> torch.Tensor:
    """The output tensor of a model call (``.logits`` of a transformers ``ModelOutput``)."""
    return select_output(out)


class LayerTaps(Taps):
    """Record layer calls and free-parameter uses of ``model`` for per-sample gradient norms.

    Use :meth:`run` (check → plan → capture: the measured forward) and then :meth:`verify_once`
    (verify → record); the steps are also methods of their own (:meth:`plan`, :meth:`capture`,
    :meth:`verify`) for tests of one step.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.layout: Plan | None = None  # the Plan of the measured forward, once run
        self.inputs: object = None  # the inputs of the measured forward, once run

    @classmethod
    def run(cls, model: nn.Module, x: object) -> tuple[torch.Tensor, LayerTaps]:
        """The measured forward of ``model`` on ``x`` with every layer tapped: (its output, the taps).

        Check (:func:`.cache.checked`: a plan remembered from an earlier verification at this input
        signature), plan (:func:`.plan.make_plan`, dry runs, when there is none), capture
        (:meth:`.capture.Taps.capture`). A forward that fails once calls are expanded or free
        parameters copied is a ``NotImplementedError`` naming them and ``backend='vmap'``.
        """
        taps = cls(model)
        n = batch_size(x) if is_batch(x) else None
        taps.signature, layout = checked(model, x)
        taps.verified = layout is not None
        try:
            if layout is None:
                layout = taps.plan(model, x, n)
            with taps.capture(n, layout):
                out = model_output(model(x))
        except NotImplementedError:
            raise  # already names the layer or parameter and the fallback
        except RuntimeError as exc:
            if not (layout or taps.free):
                raise
            raise NotImplementedError(
                f"the forward failed once the layer calls {sorted(layout or ())} and free parameters "
                f"{[f[2] for f in taps.free]} were given a per-sample batch dimension (they are used "
                f"other than broadcast over the batch): {exc}; use backend='vmap'") from exc
        taps.layout, taps.inputs = layout, x
        return out, taps

    def verify_once(self) -> None:
        """Verify → record: the one-time check of the captured forward (:func:`.verify.verify_taps`, on the
        samples of its own seed-0 generator, so that the probes of a seeded measurement do not depend on
        whether the model was verified before), remembered for the model and input signature.

        Refuses taps that captured nothing yet (:meth:`run` first); does nothing once verified.
        """
        if self.layout is None:
            raise RuntimeError("LayerTaps.verify_once: nothing was captured; run the measured forward with "
                               "LayerTaps.run(model, x) first")
        if self.verified:
            return
        assert self.signature is not None  # set by run() with the layout
        gen = torch.Generator().manual_seed(0)
        verify_taps(self, self.model, self.inputs, batch_size(self.inputs), self.layout, gen)
        record_checked(self.model, self.signature, self.layout)
        self.verified = True

    def plan(self, model: nn.Module, x: object, n: int | None) -> Plan:
        """The layout of every call and free parameter at batch ``n``, from dry runs (:func:`.plan.make_plan`)."""
        return make_plan(self, model, x, n)

    def verify(self, model: nn.Module, x: object, n: int, expand: Plan, gen: torch.Generator) -> None:
        """The one-time check of the hooks path on 2–3 samples (:func:`.verify.verify_taps`)."""
        verify_taps(self, model, x, n, expand, gen)

    def output_layer_exact(self, out: torch.Tensor, gen: torch.Generator) -> tuple[tuple, torch.Tensor] | None:
        """Exact per-sample ||J_n||_F² of the output layer's parameters (:func:`.output_layer.output_layer_exact`)."""
        return output_layer_exact(self, out, gen)
