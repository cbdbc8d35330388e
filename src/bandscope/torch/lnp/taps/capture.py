"""Capture one forward: hook every handled layer call and swap in per-sample copies of free parameters.

:class:`Taps` finds the layers with a handler (:mod:`bandscope.torch.lnp.handlers`) and the free
parameters of a model; :meth:`Taps.capture` records, in one forward laid out by a :class:`.layout.Plan`,
every handled call's inputs and a private copy of its output, so that ``autograd.grad(out, taps, v)``
returns every layer's output gradient δ in one backward pass without computing weight gradients;
:meth:`Taps.per_sample_sq_norms` turns those into per-sample squared gradient norms through the
handlers (shared parameters: the per-sample gradients of every use summed before the norm).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Container, Iterator
from typing import Any

import torch
from torch import nn

from ..handlers import LayerHandler, lookup_handler
from .layout import Plan

__all__ = ["Taps", "Call"]

#: bytes the handlers may keep per measurement across probes (unfolded inputs, Gram matrices;
#: ``handlers.memo_keep``); beyond it they recompute per probe as without a memo
_MEMO_BYTES = 256 * 2**20


#: the refusal of a per-sample copy or expansion without a batch size
_NO_BATCH = ("a layer call or free parameter needs a per-sample batch dimension but the inputs are not a batch "
             "(no batch size); pass a tensor or a mapping of tensors with the batch on dim 0")


def _expand(t: Any, n: int | None, new_dim: bool = False) -> Any:
    if not isinstance(t, torch.Tensor):
        return t
    if n is None:
        raise TypeError(_NO_BATCH)
    if t.dim() >= 1 and t.shape[0] == 1 and not new_dim:
        return t.expand(n, *t.shape[1:])
    return t.unsqueeze(0).expand(n, *t.shape)


def _detach(t: Any) -> Any:
    return t.detach() if isinstance(t, torch.Tensor) else t


def _to_front(t: Any, d: int | None) -> Any:
    return t.movedim(d, 0) if isinstance(t, torch.Tensor) and d else t


def _per_sample_copy(p: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The per-sample copy of a free parameter: ``(n, *S[1:])`` for ``k == -1``, else ``(n, 1^k, *S)``."""
    if k < 0:
        return p.expand(n, *p.shape[1:]).clone()
    shape = (1,) * k + tuple(p.shape)
    return p.reshape(1, *shape).expand(n, *shape).clone()


class Call:
    """One recorded layer call: its key ``(layer name, call index)``, unit, detached inputs, output taps."""

    __slots__ = ("key", "unit", "args", "kwargs", "versions", "taps", "tuple_out", "expanded", "order",
                 "out_dims", "memo")
    key: tuple[str, int]
    unit: int
    args: tuple
    kwargs: dict
    versions: list[int | None]
    taps: tuple[torch.Tensor | None, ...]
    tuple_out: bool
    expanded: bool
    order: int
    out_dims: tuple | None
    memo: dict


#: a handled layer: (name, module, its handler, {parameter name: trainable parameter it covers})
Unit = tuple[str, nn.Module, LayerHandler, dict[str, torch.Tensor]]


class Taps:
    """The layers and free parameters of ``model`` to tap, and the calls captured in its last forward.

    ``units``: the handled layers with trainable parameters (a ``params="all"`` handler covers its
    subtree); ``free``: ``(module, name, full name, parameter)`` of every trainable parameter no
    handler covers (used directly in a ``forward``). After :meth:`capture`: ``calls`` (one
    :class:`Call` per layer call), ``subs`` (the per-sample copies of the free parameters) and
    ``shared`` (ids of the parameters used more than once).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.units: list[Unit] = []
        covered: set[int] = set()
        inside: list[str] = []
        for name, mod in model.named_modules():
            if any(name.startswith(p + ".") for p in inside):
                continue
            h = lookup_handler(mod)
            if h is None:
                continue
            if h.params == "all":
                ps = {k: p for k, p in mod.named_parameters() if p.requires_grad}
                inside.append(name)
            else:
                ps = {k: p for k, p in mod.named_parameters(recurse=False) if p.requires_grad}
            if ps:
                self.units.append((name, mod, h, ps))
                covered.update(id(p) for p in ps.values())
        self.free: list[tuple[nn.Module, str, str, torch.Tensor]] = []
        for mname, mod in model.named_modules(remove_duplicate=False):
            for k, p in mod._parameters.items():
                if p is None or not p.requires_grad or id(p) in covered:
                    continue
                full = f"{mname}.{k}" if mname else k
                if any(m is mod and kk == k for m, kk, _, _ in self.free):
                    continue
                self.free.append((mod, k, full, p))
        self.calls: list[Call] = []
        self.subs: list[torch.Tensor | None] = []
        self.shape0: dict[tuple[str, int], int] = {}
        self.shared: set[int] = set()
        self.n: int | None = 0
        self.signature: tuple | None = None
        self.verified = False
        self.inserted: dict[int, str] = {}  # id of a (N, 1^k, *S) copy -> parameter name (watched in dry runs)

    # ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def substituted(self, n: int | None, ranks: dict) -> Iterator[list[torch.Tensor | None]]:
        """Replace the free parameters listed in ``ranks`` by their per-sample copies at batch ``n``."""
        saved: list[tuple[nn.Module, str, nn.Parameter | None]] = []
        subs: list[torch.Tensor | None] = []
        try:
            for mod, k, full, p in self.free:
                r = ranks.get((id(mod), k))
                if r is None:
                    subs.append(None)
                    continue
                if n is None:
                    raise TypeError(_NO_BATCH)
                saved.append((mod, k, mod._parameters[k]))
                sub = _per_sample_copy(p, n, r)
                mod._parameters[k] = sub  # type: ignore[assignment]  # a per-sample copy where a Parameter was
                subs.append(sub if sub.requires_grad else None)
                if r >= 0:
                    self.inserted[id(sub)] = full
            yield subs
        finally:
            for mod, k, orig in saved:
                mod._parameters[k] = orig
            self.inserted.clear()

    def check_called(self, called: set[int]) -> None:
        """Refuse handled layers (unit indices not in ``called``) never called: parameters used functionally."""
        missing = [self.units[i][0] for i in range(len(self.units)) if i not in called]
        if missing:
            raise NotImplementedError(
                f"layers {missing} hold trainable parameters but their forward was never called "
                "(parameters used functionally); register a handler for the module that uses them "
                "(bandscope.torch.register_lnp_handler) or use backend='vmap'")

    @contextlib.contextmanager
    def capture(self, n: int | None, expand: Plan) -> Iterator[Taps]:
        """Hook every handled layer and substitute free parameters for a forward pass at batch ``n``.

        ``expand``: the :class:`.layout.Plan` of the model at these inputs (:func:`.plan.make_plan`, or the
        one remembered with its verification); there is no capture without one. A call in it, or of
        the standard layout (not in ``expand.dims``) whose output's first dim is not ``n``, is
        expanded to ``(n, ...)``.
        """
        if not isinstance(expand, Plan):
            raise TypeError(f"capture needs the layout Plan of the model at these inputs (LayerTaps.plan), got "
                            f"{type(expand).__name__}: the protocol is LayerTaps.run (check, plan, capture)")
        self.calls, self.shape0, self.n = [], {}, n
        budget = [_MEMO_BYTES]  # shared by the handler memos of every call of this forward
        dims, new_dim, ranks = expand.dims, expand.new_dim, expand.free
        counts: dict[str, int] = {}

        def make(uidx: int, name: str) -> Callable:
            def hook(mod: nn.Module, args: tuple, kwargs: dict, out: object) -> object:
                k = counts.get(name, 0)
                counts[name] = k + 1
                key = (name, k)
                outs = out if isinstance(out, tuple) else (out,)
                o0 = next((o for o in outs if isinstance(o, torch.Tensor)), None)
                if o0 is None:
                    raise NotImplementedError(f"layer {name!r} ({type(mod).__name__}) returns no tensor; "
                                              "use backend='vmap'")
                lay = dims.get(key)
                call = Call()
                if lay is None:  # the standard layout: the batch on dim 0 everywhere
                    exp = o0.dim() == 0 or o0.shape[0] != n or key in expand
                    targs = tuple(_detach(a) for a in args)
                    call.out_dims = None
                else:  # the batch elsewhere: moved to dim 0 for the handler
                    exp = False
                    ad = lay[0]
                    targs = tuple(_to_front(_detach(a), ad[i] if i < len(ad) else None) for i, a in enumerate(args))
                    call.out_dims = lay[1]
                call.key, call.unit, call.order, call.expanded = key, uidx, len(self.calls), exp
                call.memo = {"budget": budget}  # the handler's probe-independent intermediates of this call
                call.tuple_out = isinstance(out, tuple)
                call.versions = [a._version if isinstance(a, torch.Tensor) else None for a in targs]
                nd = key in new_dim
                call.args = tuple(_expand(a, n, nd) for a in targs) if exp else targs
                call.kwargs = {kk: _detach(v) for kk, v in kwargs.items()}
                taps: list[torch.Tensor | None] = []
                ret: list[Any] = []
                for o in outs:
                    if not isinstance(o, torch.Tensor):
                        taps.append(None)
                        ret.append(o)
                        continue
                    t = _expand(o, n, nd) if exp else o
                    taps.append(t if t.requires_grad else None)
                    ret.append(t.clone())
                call.taps = tuple(taps)
                self.calls.append(call)
                return tuple(ret) if isinstance(out, tuple) else ret[0]
            return hook

        handles = [mod.register_forward_hook(make(i, name), with_kwargs=True)
                   for i, (name, mod, _, _) in enumerate(self.units)]
        self.subs = []
        try:
            with self.substituted(n, ranks) as subs:
                self.subs = subs
                yield self
        finally:
            for h in handles:
                h.remove()
        self.check_called({c.unit for c in self.calls})
        count: dict[int, int] = {}
        for c in self.calls:
            for p in self.units[c.unit][3].values():
                count[id(p)] = count.get(id(p), 0) + 1
        for _, _, _, p in self.free:
            count[id(p)] = count.get(id(p), 0) + 1
        self.shared = {i for i, c in count.items() if c > 1}

    # ---------------------------------------------------------------------------------------
    def _targets(self, skip: Container[object] = ()
                 ) -> tuple[list[Call], list[torch.Tensor], list[tuple[str, Any, int]]]:
        calls = [c for c in self.calls if c.key not in skip]
        targets: list[torch.Tensor] = []
        where: list[tuple[str, Any, int]] = []
        for c in calls:
            for j, t in enumerate(c.taps):
                if t is not None:
                    targets.append(t)
                    where.append(("call", c, j))
        for i, s in enumerate(self.subs):
            if s is not None:
                targets.append(s)
                where.append(("free", i, 0))
        return calls, targets, where

    def _deltas(self, out: torch.Tensor, cot: torch.Tensor,
                skip: Container[object] = ()) -> tuple[list[Call], dict[int, list], dict[int, torch.Tensor]]:
        calls, targets, where = self._targets(skip)
        if not targets:
            return calls, {}, {}
        ds = torch.autograd.grad(out, targets, cot, retain_graph=True, allow_unused=True)
        per_call: dict[int, list] = {}
        per_free: dict[int, torch.Tensor] = {}
        for (kind, obj, j), d in zip(where, ds):
            if kind == "call":
                per_call.setdefault(id(obj), [None] * len(obj.taps))[j] = d
            elif d is not None:
                per_free[obj] = d
        return calls, per_call, per_free

    def _call_args(self, c: Call) -> tuple[tuple, dict]:
        name = self.units[c.unit][0]
        for a, v in zip(c.args, c.versions):
            if isinstance(a, torch.Tensor) and v is not None and a._version != v:
                raise RuntimeError(f"the input of layer {name!r} was modified in place after the layer ran; "
                                   "per-sample norms need backend='vmap'")
        return c.args, c.kwargs

    def accumulate(self, out: torch.Tensor, cot: torch.Tensor, skip: Container[object] = (),
                   force_grads: bool = False) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(per-sample Σ of squared norms of unshared calls, {param id: per-sample grads})."""
        calls, per_call, per_free = self._deltas(out, cot, skip)
        total = torch.zeros(out.shape[0], dtype=torch.float64, device=out.device)
        acc: dict[int, torch.Tensor] = {}
        for c in calls:
            ds = per_call.get(id(c))
            if ds is None or all(d is None for d in ds):
                continue
            name, mod, h, ps = self.units[c.unit]
            if c.out_dims is None:
                d = tuple(ds) if c.tuple_out else ds[0]
            else:  # the batch elsewhere in the output: moved to dim 0, as the inputs are
                moved = tuple(_to_front(t, od) for t, od in zip(ds, c.out_dims))
                d = moved if c.tuple_out else moved[0]
            args, kwargs = self._call_args(c)
            try:
                if not force_grads and h.sq_norms is not None and not any(id(p) in self.shared for p in ps.values()):
                    sq = h.sq_norms(mod, args, kwargs, d, memo=c.memo) if h.memo else h.sq_norms(mod, args, kwargs, d)
                    total += sq.to(torch.float64)
                    continue
                g = h.grads(mod, args, kwargs, d)
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                raise NotImplementedError(
                    f"the LNP handler of layer {name!r} ({type(mod).__name__}) failed on this call: "
                    f"{type(exc).__name__}: {exc}") from exc
            for k, p in ps.items():
                if k not in g:
                    raise NotImplementedError(f"the handler of layer {name!r} ({type(mod).__name__}) gave no "
                                              f"per-sample gradient for its parameter {k!r}; use backend='vmap'")
                acc[id(p)] = g[k] if id(p) not in acc else acc[id(p)] + g[k]
        for i, d in per_free.items():
            p = self.free[i][3]
            d = d.reshape(d.shape[0], *p.shape)  # (N, 1^k, *S) or (N, *S[1:]) -> (N, *S)
            acc[id(p)] = d if id(p) not in acc else acc[id(p)] + d
        return total, acc

    def per_sample_sq_norms(self, out: torch.Tensor, cotangent: torch.Tensor,
                            skip: Container[object] = ()) -> torch.Tensor:
        """Σ over parameters of ||∂(cotangent·f_n)/∂θ||² per sample n (one backward, no weight grads)."""
        total, acc = self.accumulate(out, cotangent, skip)
        for g in acc.values():
            total += torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1, dtype=torch.float64).pow(2)
        return total
