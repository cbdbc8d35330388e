"""Plan a model's layout from dry runs at two other batch sizes: batch dims, expansions, free-parameter copies.

A call's batch dim is the one dim of its output (and inputs) whose size follows the batch size
between the dry runs at m₁ and m₂; a call with none is unbatched and gets expanded to the measured
batch. Each free parameter gets the first per-sample copy (the leading size-1 dim as the batch,
then ``(N, 1^k, *S)`` for k = 0, 1, …) with which the forward gives the model's own outputs at m₁
and m₂; an indexing op applied to such a copy (:data:`INDEXING`) refuses it. The result is a
:class:`.layout.Plan`, read by :meth:`.capture.Taps.capture`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..handlers import overriding_subclass
from ..inputs import batch_size, is_batch, select_output, take, unsupported_inputs_message
from .capture import Taps
from .layout import MAX_INSERTED_DIMS, Plan

__all__ = ["make_plan", "INDEXING"]


def _copy_ranks(p: torch.Tensor) -> list[int]:
    """The per-sample copy ranks to try for a free parameter, in order (-1: its leading size-1 dim as the batch)."""
    return ([-1] if p.dim() >= 1 and p.shape[0] == 1 else []) + list(range(MAX_INSERTED_DIMS + 1))


#: ops that index, slice or reshape along a tensor's leading dim: applied to a per-sample copy
#: ``(N, 1^k, *S)`` they act on the batch instead of the parameter's own first dim (``pos[:T]`` is a
#: no-op at a small dry-run batch and cuts the batch at the measured one), so a copy they touch is refused
INDEXING = frozenset({
    "__getitem__", ".T", ".mT", ".H", ".mH", "narrow", "split", "split_with_sizes", "tensor_split", "chunk",
    "unbind", "select", "index_select", "take", "gather", "masked_select", "view", "view_as", "reshape",
    "reshape_as", "flatten", "unflatten", "transpose", "transpose_", "t", "permute", "movedim", "moveaxis",
    "swapaxes", "swapdims", "roll", "flip", "repeat", "tile", "unsqueeze", "squeeze", "unfold", "diagonal",
    "as_strided", "embedding", "linear", "hsplit", "vsplit", "dsplit"})


class _IndexGuard(TorchFunctionMode):
    """Notes the first indexing / reshaping op (:data:`INDEXING`) applied directly to a watched tensor."""

    def __init__(self, watched: dict) -> None:
        super().__init__()
        self.watched = watched
        self.hit: tuple[str, str] | None = None

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (),
                           kwargs: dict | None = None) -> object:
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a property: .T / .mT / .H / .mH index; .shape, .dtype... do not
            name = "." + getattr(getattr(func, "__self__", None), "__name__", "")
        if self.hit is None and name in INDEXING:
            for a in args:
                if isinstance(a, torch.Tensor) and id(a) in self.watched:
                    self.hit = (self.watched[id(a)], name)
        return func(*args, **(kwargs or {}))


def _shape(t: object) -> tuple | None:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def _follow_dim(s1: tuple | None, s2: tuple | None, m1: int, m2: int) -> int | str | None:
    """The dim of a pair of shapes (at batch sizes m1, m2) that follows the batch size.

    ``None`` if no dim changes (unbatched), ``"merged"`` if the shapes change otherwise (the batch
    merged with another dim, a different rank...).
    """
    if s1 is None or s2 is None:
        return None
    if len(s1) != len(s2):
        return "merged"
    diff = [i for i, (a, b) in enumerate(zip(s1, s2)) if a != b]
    if not diff:
        return None
    if len(diff) == 1 and s1[diff[0]] == m1 and s2[diff[0]] == m2:
        return diff[0]
    return "merged"


def _same_output(out: object, ref: torch.Tensor) -> bool:
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return False
    tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(ref.dtype, 1e-2)
    scale = float(ref.detach().abs().nan_to_num(0.0, 0.0, 0.0).max()) if ref.numel() else 0.0
    return bool(torch.allclose(out.detach(), ref.detach(), rtol=tol, atol=tol * scale, equal_nan=True))


@contextlib.contextmanager
def _recording(taps: Taps, shapes: dict) -> Iterator[dict]:
    """Record the shapes of every handled layer call's positional inputs and outputs (nothing else)."""
    counts: dict[str, int] = {}

    def make(name: str) -> Callable:
        def hook(mod: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            k = counts.get(name, 0)
            counts[name] = k + 1
            outs = out if isinstance(out, tuple) else (out,)
            shapes[(name, k)] = (tuple(_shape(a) for a in args), tuple(_shape(o) for o in outs))
        return hook

    handles = [mod.register_forward_hook(make(name), with_kwargs=True) for name, mod, _, _ in taps.units]
    try:
        yield shapes
    finally:
        for h in handles:
            h.remove()


def _layouts(taps: Taps, s1: dict, s2: dict, m1: int, m2: int) -> tuple[set, dict]:
    """(unbatched calls to expand, {call: (input batch dims, output batch dims)} off dim 0)."""
    index = {name: i for i, (name, _, _, _) in enumerate(taps.units)}
    expand, dims = set(), {}
    for key, (a1, o1) in s1.items():
        if key not in s2:  # a call made at one batch size only: the standard rule in capture
            continue
        a2, o2 = s2[key]
        name, mod, h, _ = taps.units[index[key[0]]]
        first = next((i for i, s in enumerate(o1) if s is not None), None)
        if first is None:
            continue  # no tensor output: capture names the layer
        follow = [_follow_dim(x, y, m1, m2) for x, y in zip(o1, o2)]
        if follow[first] == "merged":
            raise NotImplementedError(
                f"the output of layer {name!r} ({type(mod).__name__}) has shape {o1[first]} at batch size {m1} "
                f"and {o2[first]} at {m2}: the batch is not a dim of its own (merged with another dim, e.g. "
                "(N*T, E)); per-sample gradients need it as one: keep the batch as its own dim or use "
                "backend='vmap'")
        od = tuple(None if d == "merged" else d for d in follow)
        if od[first] is None:
            expand.add(key)
            continue
        ad = tuple(None if d == "merged" else d for d in (_follow_dim(x, y, m1, m2) for x, y in zip(a1, a2)))
        decl = h.batch_dim_of(mod)
        want = od[first] if decl is None else decl
        main = next((d for d, s in zip(ad, a1) if s is not None), None)  # the first tensor input
        bad = [] if main in (None, want) else [main]
        if bad:
            what = "as its output does" if decl is None else "the batch_dim of its LNP handler"
            raise NotImplementedError(
                f"layer {name!r} ({type(mod).__name__}) takes its batch on dim {want} ({what}), but its input "
                f"follows the batch size of the model's inputs on dim {bad[0]}. measure_lnp takes the batch "
                "on dim 0 of the model's inputs and outputs: give a seq-first model batch-first inputs and "
                "outputs (e.g. wrap it: x.transpose(0, 1) in, out.transpose(0, 1) out), register the layer "
                "with its batch_dim (bandscope.torch.register_lnp_handler), or use backend='vmap'")
        if all(d in (None, 0) for d in ad + od):
            continue  # the standard layout
        dims[key] = (ad, od)
    return expand, dims


def _reproduces(taps: Taps, model: nn.Module, xs: dict, refs: dict, refused: dict[str, str],
                layout: Plan | None = None, ranks: dict | None = None) -> bool:
    """Do the expansions / per-sample copies give the model's own outputs at both dry-run sizes?

    ``refused`` collects {parameter name: the indexing op applied to its per-sample copy}."""
    for m, x in xs.items():
        guard = _IndexGuard(taps.inserted)
        try:
            if layout is not None:
                with taps.capture(m, layout), guard:
                    out = select_output(model(x))
            else:
                with taps.substituted(m, ranks or {}), guard:
                    out = select_output(model(x))
        except Exception:  # the unmodified forward ran at this size: the substitution broke it
            out = None
        if guard.hit is not None:
            refused[guard.hit[0]] = guard.hit[1]
            return False
        if out is None or not _same_output(out, refs[m]):
            return False
    return True


def make_plan(taps: Taps, model: nn.Module, x: object, n: int | None) -> Plan:
    """Dry runs at two other batch sizes: the layout of every call and free parameter at batch ``n``.

    Records the input / output shapes of every handled call at batch sizes m₁, m₂ ∉ {n}
    (eval mode, gradients on so that the forward takes the path of the measurement): a call's
    batch dim is the dim whose size follows the batch size; a call without one is unbatched
    and gets expanded. Each free parameter gets the first per-sample copy (the leading
    size-1 dim as the batch, then ``(N, 1^k, *S)`` for k = 0, 1, …) with which the forward
    gives the model's own outputs at m₁ and m₂. Raises ``NotImplementedError`` naming the
    layer or parameter when there is none.
    """
    if not is_batch(x):
        raise TypeError(unsupported_inputs_message(x))
    size = batch_size(x) if n is None else n
    m1, m2 = [m for m in (2, 3, 4) if m != size][:2]
    xs = {m: take(x, torch.arange(m) % size) for m in (m1, m2)}
    modes = {mod: mod.training for mod in model.modules()}
    refused: dict[str, str] = {}
    kept = (taps.calls, taps.subs, taps.shape0, taps.shared, taps.n)
    try:
        model.eval()
        with torch.enable_grad():
            shapes: dict[int, dict[Any, Any]] = {m1: {}, m2: {}}
            refs: dict[int, torch.Tensor] = {}
            for m in (m1, m2):
                with _recording(taps, shapes[m]):
                    refs[m] = select_output(model(xs[m])).detach()
            index = {name: i for i, (name, _, _, _) in enumerate(taps.units)}
            taps.check_called({index[key[0]] for key in shapes[m1]})
            expand, dims = _layouts(taps, shapes[m1], shapes[m2], m1, m2)
            free = {(id(mod), k): _copy_ranks(p)[0] for mod, k, _, p in taps.free}
            layout = Plan(expand, dims, free)
            if (expand or free) and not _reproduces(taps, model, xs, refs, refused, layout):
                for mod, k, full, p in taps.free:
                    ok = [r for r in _copy_ranks(p)
                          if _reproduces(taps, model, xs, refs, refused, ranks={(id(mod), k): r})]
                    if not ok:
                        op = refused.get(full)
                        why = (f"it is indexed, sliced or reshaped ({op}) before use, which on the copy would "
                               "act on the batch dim" if op else "it is used other than broadcast over the "
                               "batch (in a matmul, a reduction, an op on its own shape...)")
                        raise NotImplementedError(
                            f"free parameter {full!r} (shape {tuple(p.shape)}, in {type(mod).__name__}"
                            f"{overriding_subclass(mod)}) is used directly in a forward, and no per-sample copy "
                            "of shape (N, 1, ..., 1, *shape) with "
                            f"up to {MAX_INSERTED_DIMS} inserted ones (nor the leading size-1 dim as the batch) "
                            f"broadcasts the way it does: {why}. Give it a leading dim of size 1 (e.g. shape "
                            "(1, T, D), sliced as p[:, :T]), register a handler for "
                            f"{type(mod).__name__} (bandscope.torch.register_lnp_handler, e.g. with "
                            "bandscope.torch.lnp.vmap_handler and params='all') or use backend='vmap'")
                    free[(id(mod), k)] = ok[0]
                layout = Plan(expand, dims, free)
                if expand and not _reproduces(taps, model, xs, refs, refused, layout):
                    # leading size-1 dims of unbatched calls as positions, not a broadcast batch
                    layout = Plan(expand, dims, free, new_dim=expand)
                if not _reproduces(taps, model, xs, refs, refused, layout):
                    calls = sorted(expand)
                    raise NotImplementedError(
                        f"the layer calls {calls} run on inputs without a batch dim (e.g. a positional "
                        "embedding on arange(T)) and, given a leading per-sample batch dim (N, ...), no longer "
                        "broadcast as they did (e.g. a seq-first model inserting the batch dim after them): "
                        "look them up on batched indices, register a handler for the module that uses them "
                        "(bandscope.torch.register_lnp_handler) or use backend='vmap'")
    finally:
        for mod, t in modes.items():
            mod.training = t
        taps.calls, taps.subs, taps.shape0, taps.shared, taps.n = kept
    return layout

