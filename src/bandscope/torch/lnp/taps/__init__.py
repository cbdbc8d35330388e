"""Forward taps for per-sample gradient norms: layer calls, free parameters, shared weights.

:class:`LayerTaps` records every call of a layer with a handler (:mod:`.handlers`): its inputs
and a private copy of its output, so ``autograd.grad(out, taps, v)`` returns every layer's output
gradient δ in one backward pass without computing weight gradients. Three cases need more than
one layer at a time, and are handled exactly:

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

The layout is read from dry runs at two other batch sizes m₁, m₂ (:meth:`LayerTaps.plan`): a
call's batch dim is the one dim of its output (and inputs) whose size follows the batch size;
a call with none is unbatched. Expansions and free-parameter copies are then checked to give
the model's own outputs at m₁ and m₂. :meth:`LayerTaps.verify` finally compares, on two or
three samples, the per-sample gradients of every parameter with autograd's gradients of single
samples; a mismatch (a parameter used outside the layer that owns it, a layer mixing samples)
is an error naming the parameters and ``backend="vmap"``.
"""
from __future__ import annotations

import contextlib
import math
import weakref

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..checks import agrees, check_tolerance, dropout_off, first_mixing_module, random_draw, random_message
from ..handlers import lookup_handler, overriding_subclass
from ..inputs import input_signature, is_batch, select_output, take, unsupported_inputs_message

__all__ = ["LayerTaps", "Plan", "model_output", "checked", "record_checked", "single_tensor_inputs_message",
           "cache_owner", "mixing_message"]

#: largest number of size-1 dims inserted after the batch dim of a free parameter's per-sample copy
MAX_INSERTED_DIMS = 6

#: model -> {signature: its Plan} for models whose hooks path was verified (weak keys: a cache
#: that dies with the model, never a result)
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: bytes the handlers may keep per measurement across probes (unfolded inputs, Gram matrices;
#: ``handlers.memo_keep``); beyond it they recompute per probe as without a memo
_MEMO_BYTES = 256 * 2**20


def cache_owner(model: nn.Module) -> nn.Module:
    """The module the one-time checks are remembered for: the user's model inside an :class:`.inputs.Adapted`."""
    from ..inputs import Adapted

    return model.model if isinstance(model, Adapted) else model


def _signature(model: nn.Module, x) -> tuple:
    from ..inputs import Adapted

    sel = ("adapted", repr(model.output)) if isinstance(model, Adapted) else ()
    return sel + (tuple((id(p), tuple(p.shape), p.dtype, p.requires_grad) for p in model.parameters()),
            input_signature(x),
            tuple(m.training for m in model.modules()))


def checked(model: nn.Module, x) -> tuple:
    """(signature of ``model`` on inputs like ``x``, its verified calls to expand or None)."""
    sig = _signature(model, x)
    return sig, _CHECKED.get(cache_owner(model), {}).get(sig)


def record_checked(model: nn.Module, sig: tuple, expand) -> None:
    """Remember that the hooks path of ``model`` was verified for this signature (with its :class:`Plan`)."""
    _CHECKED.setdefault(cache_owner(model), {})[sig] = expand if isinstance(expand, Plan) else frozenset(expand)


class Plan(frozenset):
    """The layout of a model's calls at one input signature, from :meth:`LayerTaps.plan`.

    As a set: the keys ``(layer name, call index)`` of the unbatched calls to expand. ``dims``
    maps the key of each call whose batch is not on dim 0 to ``(input dims, output dims)``, the
    batch dim of each positional input / output (``None``: not batched). ``free`` maps
    ``(id(module), name)`` of each free parameter to the number k of size-1 dims inserted after
    the batch dim of its per-sample copy (``-1``: the leading size-1 dim becomes the batch).
    ``new_dim`` holds the unbatched calls whose expansion inserts a new batch dim even when their
    leading dim has size 1 (a positional lookup on ``arange(1)``: ``(1, D)`` is one position,
    not a broadcast batch).
    """

    dims: dict
    free: dict
    new_dim: frozenset

    def __new__(cls, expand=(), dims=None, free=None, new_dim=()):
        obj = super().__new__(cls, expand)
        obj.dims = dict(dims or {})
        obj.free = dict(free or {})
        obj.new_dim = frozenset(new_dim)
        return obj

    def __reduce__(self):
        return (Plan, (frozenset(self), self.dims, self.free, self.new_dim))


def single_tensor_inputs_message(x) -> str:
    """Why inputs other than a tensor or a mapping of tensors are refused, and what to do."""
    return unsupported_inputs_message(x)


def mixing_message(model: nn.Module, at) -> str:
    """Why a model whose samples interact has no per-sample gradients, naming where they start to."""
    where = f"module {at[0]!r} ({at[1]}) is the first whose output" if at else "the model's output"
    mode = "training" if any(mod.training for mod in model.modules()) else "eval"
    return (f"samples interact in the mode the model is measured in ({mode} mode): {where} for one sample "
            "depends on the other samples of the batch (e.g. a normalisation with batch statistics written by "
            "hand, x - x.mean(0), attention across the batch). Per-sample gradients, and so the network scale "
            "Σ_n ||J_n||², are not defined for it (with either backend); measure it in the mode where it is a "
            "per-sample function (e.g. model.eval()), or use network_scale='batch-hutchinson' with "
            "exact_output_layer=False, which estimates the trace of the batch's kernel without them")


def model_output(out):
    """The output tensor of a model call (``.logits`` of a transformers ``ModelOutput``)."""
    return select_output(out)


def _expand(t, n: int, new_dim: bool = False):
    if not isinstance(t, torch.Tensor):
        return t
    if t.dim() >= 1 and t.shape[0] == 1 and not new_dim:
        return t.expand(n, *t.shape[1:])
    return t.unsqueeze(0).expand(n, *t.shape)


def _detach(t):
    return t.detach() if isinstance(t, torch.Tensor) else t


def _to_front(t, d):
    return t.movedim(d, 0) if isinstance(t, torch.Tensor) and d else t


def _per_sample_copy(p: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The per-sample copy of a free parameter: ``(n, *S[1:])`` for ``k == -1``, else ``(n, 1^k, *S)``."""
    if k < 0:
        return p.expand(n, *p.shape[1:]).clone()
    shape = (1,) * k + tuple(p.shape)
    return p.reshape(1, *shape).expand(n, *shape).clone()


def _copy_ranks(p: torch.Tensor) -> list[int]:
    return ([-1] if p.dim() >= 1 and p.shape[0] == 1 else []) + list(range(MAX_INSERTED_DIMS + 1))


#: ops that index, slice or reshape along a tensor's leading dim: applied to a per-sample copy
#: ``(N, 1^k, *S)`` they act on the batch instead of the parameter's own first dim (``pos[:T]`` is a
#: no-op at a small dry-run batch and cuts the batch at the measured one), so a copy they touch is refused
_INDEXING = frozenset({
    "__getitem__", ".T", ".mT", ".H", ".mH", "narrow", "split", "split_with_sizes", "tensor_split", "chunk",
    "unbind", "select", "index_select", "take", "gather", "masked_select", "view", "view_as", "reshape",
    "reshape_as", "flatten", "unflatten", "transpose", "transpose_", "t", "permute", "movedim", "moveaxis",
    "swapaxes", "swapdims", "roll", "flip", "repeat", "tile", "unsqueeze", "squeeze", "unfold", "diagonal",
    "as_strided", "embedding", "linear", "hsplit", "vsplit", "dsplit"})


class _IndexGuard(TorchFunctionMode):
    """Notes the first indexing / reshaping op (:data:`_INDEXING`) applied directly to a watched tensor."""

    def __init__(self, watched: dict):
        super().__init__()
        self.watched, self.hit = watched, None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a property: .T / .mT / .H / .mH index; .shape, .dtype... do not
            name = "." + getattr(getattr(func, "__self__", None), "__name__", "")
        if self.hit is None and name in _INDEXING:
            for a in args:
                if isinstance(a, torch.Tensor) and id(a) in self.watched:
                    self.hit = (self.watched[id(a)], name)
        return func(*args, **(kwargs or {}))


def _shape(t):
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def _follow_dim(s1, s2, m1: int, m2: int):
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


def _same_output(out, ref) -> bool:
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return False
    tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(ref.dtype, 1e-2)
    scale = float(ref.detach().abs().nan_to_num(0.0, 0.0, 0.0).max()) if ref.numel() else 0.0
    return bool(torch.allclose(out.detach(), ref.detach(), rtol=tol, atol=tol * scale, equal_nan=True))


class _Call:
    __slots__ = ("key", "unit", "args", "kwargs", "versions", "taps", "tuple_out", "expanded", "order",
                 "out_dims", "memo")


class LayerTaps:
    """Record layer calls and free-parameter uses of ``model`` for per-sample gradient norms."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.units: list[tuple[str, nn.Module, object, dict]] = []
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
        self.calls: list[_Call] = []
        self.subs: list[torch.Tensor | None] = []
        self.shape0: dict[tuple[str, int], int] = {}
        self.shared: set[int] = set()
        self.n = 0
        self.signature, self.verified = None, False
        self._inserted: dict[int, str] = {}  # id of a (N, 1^k, *S) copy -> parameter name (dry runs)
        self._refused: dict[str, str] = {}  # parameter name -> the indexing op that refused its copies

    # ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _substituted(self, n: int, ranks: dict):
        """Replace the free parameters listed in ``ranks`` by their per-sample copies at batch ``n``."""
        saved, subs = [], []
        try:
            for mod, k, full, p in self.free:
                r = ranks.get((id(mod), k))
                if r is None:
                    subs.append(None)
                    continue
                saved.append((mod, k, mod._parameters[k]))
                sub = _per_sample_copy(p, n, r)
                mod._parameters[k] = sub
                subs.append(sub if sub.requires_grad else None)
                if r >= 0:
                    self._inserted[id(sub)] = full
            yield subs
        finally:
            for mod, k, p in saved:
                mod._parameters[k] = p
            self._inserted.clear()

    def _check_called(self, called: set) -> None:
        missing = [self.units[i][0] for i in range(len(self.units)) if i not in called]
        if missing:
            raise NotImplementedError(
                f"layers {missing} hold trainable parameters but their forward was never called "
                "(parameters used functionally); register a handler for the module that uses them "
                "(bandscope.torch.register_lnp_handler) or use backend='vmap'")

    @contextlib.contextmanager
    def capture(self, n: int, expand=None):
        """Hook every handled layer and substitute free parameters for a forward pass at batch ``n``.

        ``expand``: the :class:`Plan` of :meth:`plan` (a plain set of call keys to expand is read as
        a plan with every batch on dim 0). A call in it, or of the standard layout (not in
        ``expand.dims``) whose output's first dim is not ``n``, is expanded to ``(n, ...)``.
        """
        self.calls, self.shape0, self.n = [], {}, n
        budget = [_MEMO_BYTES]  # shared by the handler memos of every call of this forward
        expand = frozenset() if expand is None else expand
        dims = getattr(expand, "dims", {})
        new_dim = getattr(expand, "new_dim", frozenset())
        ranks = getattr(expand, "free", None)
        if ranks is None:  # a plan without free-parameter ranks: the leading size-1 dim is the batch
            ranks = {}
            for mod, k, full, p in self.free:
                if p.dim() == 0 or p.shape[0] != 1:
                    raise NotImplementedError(f"free parameter {full!r} (shape {tuple(p.shape)}) needs a layout "
                                              "plan (LayerTaps.plan); use backend='vmap'")
                ranks[(id(mod), k)] = -1
        counts: dict[str, int] = {}

        def make(uidx, name):
            def hook(mod, args, kwargs, out):
                k = counts.get(name, 0)
                counts[name] = k + 1
                key = (name, k)
                outs = out if isinstance(out, tuple) else (out,)
                o0 = next((o for o in outs if isinstance(o, torch.Tensor)), None)
                if o0 is None:
                    raise NotImplementedError(f"layer {name!r} ({type(mod).__name__}) returns no tensor; "
                                              "use backend='vmap'")
                lay = dims.get(key)
                call = _Call()
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
                taps, ret = [], []
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
            with self._substituted(n, ranks) as subs:
                self.subs = subs
                yield self
        finally:
            for h in handles:
                h.remove()
        self._check_called({c.unit for c in self.calls})
        count: dict[int, int] = {}
        for c in self.calls:
            for p in self.units[c.unit][3].values():
                count[id(p)] = count.get(id(p), 0) + 1
        for _, _, _, p in self.free:
            count[id(p)] = count.get(id(p), 0) + 1
        self.shared = {i for i, c in count.items() if c > 1}

    # ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _recording(self, shapes: dict):
        """Record the shapes of every handled layer call's positional inputs and outputs (nothing else)."""
        counts: dict[str, int] = {}

        def make(name):
            def hook(mod, args, kwargs, out):
                k = counts.get(name, 0)
                counts[name] = k + 1
                outs = out if isinstance(out, tuple) else (out,)
                shapes[(name, k)] = (tuple(_shape(a) for a in args), tuple(_shape(o) for o in outs))
            return hook

        handles = [mod.register_forward_hook(make(name), with_kwargs=True) for name, mod, _, _ in self.units]
        try:
            yield shapes
        finally:
            for h in handles:
                h.remove()

    def _layouts(self, s1: dict, s2: dict, m1: int, m2: int):
        """(unbatched calls to expand, {call: (input batch dims, output batch dims)} off dim 0)."""
        index = {name: i for i, (name, _, _, _) in enumerate(self.units)}
        expand, dims = set(), {}
        for key, (a1, o1) in s1.items():
            if key not in s2:  # a call made at one batch size only: the standard rule in capture
                continue
            a2, o2 = s2[key]
            name, mod, h, _ = self.units[index[key[0]]]
            first = next((i for i, s in enumerate(o1) if s is not None), None)
            if first is None:
                continue  # no tensor output: capture names the layer
            od = [_follow_dim(x, y, m1, m2) for x, y in zip(o1, o2)]
            if od[first] == "merged":
                raise NotImplementedError(
                    f"the output of layer {name!r} ({type(mod).__name__}) has shape {o1[first]} at batch size {m1} "
                    f"and {o2[first]} at {m2}: the batch is not a dim of its own (merged with another dim, e.g. "
                    "(N*T, E)); per-sample gradients need it as one: keep the batch as its own dim or use "
                    "backend='vmap'")
            od = tuple(None if d == "merged" else d for d in od)
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

    def _reproduces(self, model, xs: dict, refs: dict, plan=None, ranks=None) -> bool:
        """Do the expansions / per-sample copies give the model's own outputs at both dry-run sizes?"""
        for m, x in xs.items():
            guard = _IndexGuard(self._inserted)
            try:
                if plan is not None:
                    with self.capture(m, plan), guard:
                        out = model_output(model(x))
                else:
                    with self._substituted(m, ranks), guard:
                        out = model_output(model(x))
            except Exception:  # the unmodified forward ran at this size: the substitution broke it
                out = None
            if guard.hit is not None:
                self._refused[guard.hit[0]] = guard.hit[1]
                return False
            if out is None or not _same_output(out, refs[m]):
                return False
        return True

    def plan(self, model: nn.Module, x: torch.Tensor, n: int) -> Plan:
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
            raise TypeError(single_tensor_inputs_message(x))
        m1, m2 = [m for m in (2, 3, 4) if m != n][:2]
        xs = {m: take(x, torch.arange(m) % n) for m in (m1, m2)}
        modes = {mod: mod.training for mod in model.modules()}
        kept = (self.calls, self.subs, self.shape0, self.shared, self.n)
        try:
            model.eval()
            with torch.enable_grad():
                shapes, refs = {m1: {}, m2: {}}, {}
                for m in (m1, m2):
                    with self._recording(shapes[m]):
                        refs[m] = model_output(model(xs[m])).detach()
                index = {name: i for i, (name, _, _, _) in enumerate(self.units)}
                self._check_called({index[key[0]] for key in shapes[m1]})
                expand, dims = self._layouts(shapes[m1], shapes[m2], m1, m2)
                free = {(id(mod), k): _copy_ranks(p)[0] for mod, k, _, p in self.free}
                plan = Plan(expand, dims, free)
                if (expand or free) and not self._reproduces(model, xs, refs, plan):
                    for mod, k, full, p in self.free:
                        ok = [r for r in _copy_ranks(p) if self._reproduces(model, xs, refs, ranks={(id(mod), k): r})]
                        if not ok:
                            op = self._refused.get(full)
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
                    plan = Plan(expand, dims, free)
                    if expand and not self._reproduces(model, xs, refs, plan):
                        # leading size-1 dims of unbatched calls as positions, not a broadcast batch
                        plan = Plan(expand, dims, free, new_dim=expand)
                    if not self._reproduces(model, xs, refs, plan):
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
            self.calls, self.subs, self.shape0, self.shared, self.n = kept
        return plan

    # ---------------------------------------------------------------------------------------
    def _targets(self, skip=()):
        calls = [c for c in self.calls if c.key not in skip]
        targets, where = [], []
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

    def _deltas(self, out, cot, skip=()):
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

    def _call_args(self, c):
        name = self.units[c.unit][0]
        for a, v in zip(c.args, c.versions):
            if isinstance(a, torch.Tensor) and v is not None and a._version != v:
                raise RuntimeError(f"the input of layer {name!r} was modified in place after the layer ran; "
                                   "per-sample norms need backend='vmap'")
        return c.args, c.kwargs

    def _accumulate(self, out, cot, skip=(), force_grads=False):
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

    def per_sample_sq_norms(self, out: torch.Tensor, cotangent: torch.Tensor, skip=()) -> torch.Tensor:
        """Σ over parameters of ||∂(cotangent·f_n)/∂θ||² per sample n (one backward, no weight grads)."""
        total, acc = self._accumulate(out, cotangent, skip)
        for g in acc.values():
            total += torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1, dtype=torch.float64).pow(2)
        return total

    # ---------------------------------------------------------------------------------------
    def verify(self, model: nn.Module, x, n: int, expand: set, gen: torch.Generator) -> None:
        """The one-time check of the hooks path on 2–3 samples, in the mode the model is measured in.

        Run after the measured forward (a training-mode BatchNorm is then frozen with the measured
        batch's statistics), with the modes as measured except ``nn.Dropout`` layers (off: their
        masks are elementwise and kept from the measured forward). In this order it refuses

        1. a forward that draws random numbers outside ``nn.Dropout`` (:func:`.checks.random_draw`)
           whatever its mode; a module that draws only in training mode (functional dropout, drop
           path, SpecAugment) is verified in eval mode, like ``nn.Dropout``, with a warning, and
           measured as it ran;
        2. a model whose output for one sample depends on the others (naming the first module
           where it does, :func:`.checks.first_mixing_module`);
        3. per-sample gradients whose sum over the samples is not autograd's batch gradient (the
           invariant every per-sample decomposition satisfies);
        4. per-sample gradients that differ from autograd on single samples;
        5. per-sample squared norms of the measurement's own route (ghost norms) that differ from
           the squared norms of the per-sample gradients.

        1 and 2 raise :class:`.checks.NotPerSampleError` (no backend can measure the model as it
        is); 3–5 ``NotImplementedError`` naming the parameters.
        """
        from ..checks import NotPerSampleError

        m = 2 if n != 2 else 3
        xs = take(x, torch.arange(m) % n)
        names = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            if p.requires_grad:
                names.setdefault(id(p), name)
        params = {i: p for i, p in ((id(p), p) for p in model.parameters()) if p.requires_grad}
        kept = (self.calls, self.subs, self.shape0, self.shared, self.n)
        box = {}

        def batched():
            with self.capture(m, expand):
                box["out"] = model_output(model(xs))

        quiet: dict = {}  # modules whose training-mode forward draws random numbers -> their modes
        try:
            with dropout_off(model), torch.enable_grad():
                while (where := random_draw(model, batched)) is not None:
                    mod = dict(model.named_modules())[where[0]]
                    if not mod.training or id(mod) in quiet:  # random whatever its mode: no per-sample Jacobian
                        raise NotPerSampleError(random_message(where))
                    quiet[id(mod)] = (where, {m: m.training for m in mod.modules()})
                    mod.eval()  # checked like nn.Dropout: switched off, measured with the draws of its forward
                out = box["out"]
                tol = check_tolerance(out.dtype)
                cot = torch.randn(out.shape, generator=gen).to(out.device, out.dtype)
                _, acc = self._accumulate(out, cot, force_grads=True)
                fast = self.per_sample_sq_norms(out, cot)
                whole = torch.autograd.grad(out, list(params.values()), cot, retain_graph=True, allow_unused=True)
                single = []
                for i in range(m):
                    xi = take(xs, torch.tensor([i]))
                    oi = model_output(model(xi))
                    if not (torch.isfinite(oi).all() and torch.isfinite(out[i]).all()):
                        return  # non-finite model or inputs: the measurement reports NaN with the reason
                    if oi.shape[1:] != out.shape[1:] or not agrees(oi[0].detach(), out[i].detach(), tol):
                        at = first_mixing_module(model, lambda: model(xs), lambda xi=xi: model(xi), i, m, tol)
                        raise NotPerSampleError(mixing_message(model, at))
                    gi = torch.autograd.grad(oi, list(params.values()), cot[i:i + 1], allow_unused=True)
                    single.append(gi)
        finally:
            self.calls, self.subs, self.shape0, self.shared, self.n = kept
            for _, modes in quiet.values():
                for mod, t in modes.items():
                    mod.training = t
        if quiet:
            import warnings

            names = [f"{w[0]!r} ({w[1]})" for w, _ in quiet.values()]
            warnings.warn(
                f"measure_lnp: the training-mode forward of {', '.join(names)} draws random numbers outside "
                "nn.Dropout (functional dropout, drop path, random masking): the layer hooks measure the forward "
                "as it ran (its draws held fixed, like nn.Dropout's masks) and were verified with those modules "
                "in eval mode; a random op that mixes samples there (mixup inside the forward) would not be "
                "seen. Call model.eval() to measure without the random draws", stacklevel=4)
        bad_sum, bad, sq = [], [], torch.zeros(m, dtype=torch.float64)
        for j, (pid, p) in enumerate(params.items()):
            ref = torch.stack([torch.zeros_like(p) if s[j] is None else s[j] for s in single])
            got = acc.get(pid)
            got = torch.zeros_like(ref) if got is None else got.reshape(ref.shape)
            if not (torch.isfinite(ref).all() and torch.isfinite(got).all()):
                return  # non-finite model or inputs: the measurement reports NaN with the reason
            batch = torch.zeros_like(p) if whole[j] is None else whole[j]
            if not agrees(got.sum(0), batch, tol):
                bad_sum.append(names.get(pid, "?"))
            if not agrees(got, ref, tol):
                bad.append(names.get(pid, "?"))
            sq += got.reshape(m, -1).double().pow(2).sum(1).cpu()
        if bad_sum:
            also = (f"; the per-sample gradients of {bad} also differ from autograd on single samples" if bad else "")
            raise NotImplementedError(
                f"invariant failed (sum of per-sample gradients = batch gradient): on the verified samples the "
                f"per-sample gradients of parameters {bad_sum} from the layer hooks do not sum to autograd's "
                f"gradient of the batch{also}: they are not a per-sample decomposition of it (a parameter used "
                "outside the layer that owns it, e.g. a tied weight used as a plain tensor, a layer handler that "
                "is wrong for this call, or the batch not on dim 0); register a handler for the module that uses "
                "them (bandscope.torch.register_lnp_handler) or use backend='vmap'")
        if bad:
            raise NotImplementedError(
                f"per-sample gradients of parameters {bad} cannot be had from the layer hooks (a parameter "
                "used outside the layer that owns it, e.g. a tied weight used as a plain tensor, or the batch "
                "not on dim 0): they would give a wrong network scale; register a handler for the module "
                "that uses them (bandscope.torch.register_lnp_handler) or use backend='vmap'")
        if not agrees(fast.cpu(), sq, tol):
            raise NotImplementedError(
                f"invariant failed (squared norms of the per-sample gradients): the layer handlers' fast squared-norm "
                f"route gives {fast.tolist()} on the verified samples, the norms of their per-sample gradients "
                f"{sq.tolist()}: a handler's sq_norms disagrees with its grads; fix or re-register the handler")

    # ---------------------------------------------------------------------------------------
    def output_layer_exact(self, out: torch.Tensor, gen: torch.Generator):
        """Exact per-sample ||J_n||_F² of the output layer's parameters, when it can be had cheaply.

        Applies when the last Linear / Conv / ConvTranspose call produces a tensor z of the
        output's shape, its parameters are used nowhere else, and the output is an elementwise
        function of it, f = φ(z) (checked with a Gaussian probe: the vjp of w must equal
        w ⊙ φ'(z)). Then, per sample, ||∂f/∂b||² = Σ_o φ'(z_o)² and ||∂f/∂W||² = Σ_o φ'(z_o)² S_o
        with S_o the squared norm of the input patch feeding o (the layer's own op applied to a²
        with unit weights). Returns ``(call key, per-sample norms)`` or ``None``.
        """
        import torch.nn.functional as F

        cands = [c for c in self.calls if not c.tuple_out and not c.expanded and c.out_dims is None
                 and c.taps[0] is not None and c.taps[0].shape == out.shape]
        if not cands:
            return None
        c = max(cands, key=lambda c: c.order)
        name, mod, _, ps = self.units[c.unit]
        lin = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
        if type(mod) not in lin or any(id(p) in self.shared for p in ps.values()):
            return None
        if not isinstance(mod, nn.Linear) and (mod.groups != 1 or mod.padding_mode != "zeros"
                                               or isinstance(mod.padding, str)):
            return None
        z = c.taps[0]
        w = torch.randn(out.shape, generator=gen).to(out.device, out.dtype)
        d1, dw = (torch.autograd.grad(out, z, v, retain_graph=True)[0] for v in (torch.ones_like(out), w))
        scale = float(d1.abs().max())
        if not math.isfinite(scale):  # NaN/inf outputs (NaN inputs, a diverged model): probe instead,
            return None  # which gives P = NaN with the reason, as the exact route does
        if not torch.allclose(dw, w * d1, rtol=1e-4, atol=1e-6 * scale + 1e-30):
            return None  # not elementwise (softmax, mixing, reshapes that permute...)
        a = c.args[0]
        phi2 = d1.pow(2)
        total = torch.zeros(out.shape[0], dtype=torch.float64, device=out.device)
        if "bias" in ps:
            total += phi2.reshape(phi2.shape[0], -1).sum(1, dtype=torch.float64)
        if "weight" in ps:
            a2 = a.pow(2)
            if isinstance(mod, nn.Linear):
                s = a2.sum(-1, keepdim=True)  # (N, ..., 1)
            else:
                k = mod.kernel_size
                cin = a.shape[1]
                kw = dict(stride=mod.stride, padding=mod.padding, dilation=mod.dilation)
                if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                    conv = F.conv1d if len(k) == 1 else F.conv2d
                    s = conv(a2, torch.ones(1, cin, *k, dtype=a2.dtype, device=a2.device), **kw)
                else:
                    conv = F.conv_transpose1d if len(k) == 1 else F.conv_transpose2d
                    s = conv(a2, torch.ones(cin, 1, *k, dtype=a2.dtype, device=a2.device),
                             output_padding=mod.output_padding, **kw)
            total += (phi2 * s).reshape(phi2.shape[0], -1).sum(1, dtype=torch.float64)
        return c.key, total
