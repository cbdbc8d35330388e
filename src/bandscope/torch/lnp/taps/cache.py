"""Which models' hooks path was verified, per input signature, with its plan (a cache that dies with the model)."""
from __future__ import annotations

import weakref

from torch import nn

from ..inputs import Adapted, input_signature
from .layout import Plan

__all__ = ["cache_owner", "signature", "checked", "record_checked"]

#: model -> {signature: its Plan} for models whose hooks path was verified (weak keys: a cache
#: that dies with the model, never a result)
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_owner(model: nn.Module) -> nn.Module:
    """The module the one-time checks are remembered for: the user's model inside an :class:`.inputs.Adapted`."""
    return model.model if isinstance(model, Adapted) else model


def signature(model: nn.Module, x: object) -> tuple:
    """What a verification holds for: the parameters (identity, shape, dtype, trainable), the inputs' signature,
    every module's mode, and the output selection of an :class:`.inputs.Adapted` model."""
    sel = ("adapted", repr(model.output)) if isinstance(model, Adapted) else ()
    return sel + (tuple((id(p), tuple(p.shape), p.dtype, p.requires_grad) for p in model.parameters()),
                  input_signature(x),
                  tuple(m.training for m in model.modules()))


def checked(model: nn.Module, x: object) -> tuple[tuple, Plan | None]:
    """(signature of ``model`` on inputs like ``x``, its verified :class:`Plan` or None)."""
    sig = signature(model, x)
    return sig, _CHECKED.get(cache_owner(model), {}).get(sig)


def record_checked(model: nn.Module, sig: tuple, plan: Plan) -> None:
    """Remember that the hooks path of ``model`` was verified for this signature (with its :class:`Plan`)."""
    if not isinstance(plan, Plan):
        raise TypeError(f"record_checked takes the Plan the hooks path was verified with, got {type(plan).__name__}")
    _CHECKED.setdefault(cache_owner(model), {})[sig] = plan
