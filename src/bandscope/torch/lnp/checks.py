"""One-time checks shared by both backends: random forwards, samples that interact, where a forward failed.

Per-sample gradients are those of a deterministic, per-sample function of the inputs. These
helpers find, by running the model with hooks on every module, the module that breaks that:

* :func:`random_draw`: the innermost module whose forward drew from torch's, numpy's or Python's
  global random number generator (functional dropout, stochastic depth, SpecAugment in numpy);
  ``nn.Dropout`` modules are switched off first (:func:`dropout_off`): their masks are elementwise,
  so the hooks path measures the forward as it ran;
* :func:`first_mixing_module`: the first module (in the order calls finish) whose output for
  one sample differs between a batched call and a single-sample call (a batch-statistics
  normalisation written by hand, attention across the batch);
* :func:`module_trace`: the module whose forward was running when an exception was raised.
"""
from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["check_tolerance", "agrees", "DROPOUT_TYPES", "dropout_off", "random_draw", "first_mixing_module",
           "module_trace", "renamed", "random_message", "NotPerSampleError"]

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def check_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of the one-time checks of a per-sample route against single-sample autograd."""
    return {torch.float64: 1e-7, torch.float32: 2e-3}.get(dtype, 5e-2)


def agrees(got: torch.Tensor, ref: torch.Tensor, tol: float) -> bool:
    """||got - ref|| <= tol ||ref|| (+ a float64 floor), the criterion of those checks."""
    err = float((got.double() - ref.double()).norm())
    scale = float(ref.double().norm())
    return not (err > tol * scale + 1e-12 * (1 + scale)) or math.isclose(err, 0.0)


@contextlib.contextmanager
def dropout_off(model: nn.Module) -> Iterator[None]:
    """The ``nn.Dropout``-family layers of ``model`` in eval mode; every other mode as it is."""
    on = [m for m in model.modules() if isinstance(m, DROPOUT_TYPES) and m.training]
    try:
        for m in on:
            m.training = False
        yield
    finally:
        for m in on:
            m.training = True


def _rng_state() -> tuple[Any, ...]:
    np_state: Any = np.random.get_state()
    return torch.get_rng_state(), np_state[1].copy(), np_state[2], np_state[3], random.getstate()


def _same_rng(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return (torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:4] == b[2:4] and a[4] == b[4])


def random_draw(model: nn.Module, call: Callable[[], object]) -> tuple[str, str] | None:
    """(name, class) of the innermost module whose forward drew from a global RNG during ``call()``.

    ``("", class of model)`` when the draw happened in the model's own forward outside any
    submodule; ``None`` when nothing was drawn. Draws from a private ``np.random.Generator`` or
    ``torch.Generator`` are not seen (they do not change the global states).
    """
    stack: list[tuple[Any, ...]] = []
    found: list[tuple[str, str]] = []

    def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
        stack.append(_rng_state())

    def make_post(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            before = stack.pop() if stack else None
            if not found and before is not None and not _same_rng(before, _rng_state()):
                found.append((name, type(mod).__name__))
        return post

    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(make_post(name)))
    try:
        call()
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def random_message(where: tuple[str, str]) -> str:
    """The refusal of a forward that draws random numbers, naming where it drew (:func:`random_draw`)."""
    name, cls = where
    what = f"module {name!r} ({cls})" if name else f"the model's own forward ({cls})"
    return (f"the forward draws random numbers: {what} drew from torch's, numpy's or Python's global random "
            "number generator (functional dropout such as F.dropout(training=True), stochastic depth / drop path, "
            "random masking such as SpecAugment, noise injection). Each call then computes a different function, "
            "so no per-sample Jacobian can be checked or recomputed (neither backend measures it); call "
            "model.eval() for the measurement, or express the dropout as an nn.Dropout module (whose mask the "
            "hooks backend keeps from the measured forward)")


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    if hasattr(out, "values") and callable(out.values):
        return next((o for o in out.values() if isinstance(o, torch.Tensor)), None)
    return None


def first_mixing_module(model: nn.Module, batched_call: Callable[[], object], single_call: Callable[[], object],
                        i: int, m: int, tol: float) -> tuple[str, str] | None:
    """(name, class) of the first module whose output row ``i`` of a batched call of ``m`` samples
    differs from its output on sample ``i`` alone, or ``None`` (outputs compared where the shapes
    are ``(m, ...)`` and ``(1, ...)``, calls paired by module and call index)."""
    Store = list[tuple[tuple[str, int], str, torch.Tensor]]

    def record(store: Store) -> list[torch.utils.hooks.RemovableHandle]:
        counts: dict[str, int] = {}

        def make(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
            def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
                k = counts.get(name, 0)
                counts[name] = k + 1
                t = _first_tensor(out)
                if t is not None:
                    store.append(((name, k), type(mod).__name__, t.detach()))
            return hook
        return [mod.register_forward_hook(make(name)) for name, mod in model.named_modules() if name]

    outs_b: Store = []
    outs_s: Store = []
    for store, call in ((outs_b, batched_call), (outs_s, single_call)):
        handles = record(store)
        try:
            with torch.no_grad():
                call()
        except Exception:  # noqa: BLE001 - locating only; the caller reports the mismatch itself
            return None
        finally:
            for h in handles:
                h.remove()
    single = {key: t for key, _, t in outs_s}
    for key, cls, tb in outs_b:
        ts = single.get(key)
        if ts is None or tb.dim() == 0 or tb.shape[0] != m or ts.shape != (1, *tb.shape[1:]):
            continue
        if tb.is_floating_point() and not agrees(ts[0], tb[i], tol):
            return key[0], cls
    return None


@contextlib.contextmanager
def module_trace(model: nn.Module) -> Iterator[list[tuple[str, str]]]:
    """Yield the live stack of ``(name, class)`` of the modules whose forward is running: after an
    exception raised in a forward, its last entry is the innermost module that raised."""
    stack: list[tuple[str, str]] = []

    def make_pre(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
            stack.append((name, type(mod).__name__))
        return pre

    def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if stack:
            stack.pop()

    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(make_pre(name)))
        handles.append(mod.register_forward_hook(post))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def renamed(exc: BaseException, where: list[tuple[str, str]]) -> BaseException:
    """``exc`` with the innermost running module of ``where`` (a :func:`module_trace` stack) in its message."""
    if not where:
        return exc
    name, cls = where[-1]
    try:
        return type(exc)(f"in module {name!r} ({cls}): {exc}")
    except Exception:  # noqa: BLE001 - an exception type with another constructor
        return RuntimeError(f"in module {name!r} ({cls}): {type(exc).__name__}: {exc}")


class NotPerSampleError(NotImplementedError):
    """The model as measured is not a deterministic per-sample function: no backend can measure it."""
