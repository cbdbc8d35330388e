"""Per-sample gradients of one layer call from its inputs and its output gradient: the registry.

A handler turns one call of a layer (its positional inputs ``args``, keyword inputs ``kwargs``
and the gradient ``grad_output`` of a scalar with respect to the layer output, the batched
positional inputs and the output gradient with the batch moved to dim 0) into the per-sample
gradients of the layer's trainable parameters, as in BackPACK's module extensions and Opacus'
grad samplers. The measurement (:mod:`bandscope.torch.lnp.taps`) uses

``grads(module, args, kwargs, grad_output) -> {param name: tensor (N, *param.shape)}``
    always correct; used when a parameter is shared (tied weights, a layer called twice), so
    the per-sample gradients of all uses are summed before the norm;
``sq_norms(module, args, kwargs, grad_output) -> tensor (N,)`` (optional)
    Σ over the covered parameters of the squared per-sample gradient norms, without
    materialising them (ghost norms); used when no parameter of the call is shared.

``batch_dim`` says where the batch is in the layer's own inputs: ``0`` (default), another int or
a callable of the module (``nn.MultiheadAttention``: ``0 if batch_first else 1``), or ``"any"``
for layers that treat all leading dims alike and act on the trailing ones (Linear, Embedding,
LayerNorm, RMSNorm, transformers' Conv1D): the batch may then be on any leading dim (a
seq-first ``(T, N, E)`` layout), read per call from the layout dry runs. The taps move the batch
to dim 0 before calling the handler, so a handler is written for one layout only.

``params="direct"`` covers the module's own trainable parameters; ``params="all"`` covers its
whole subtree (submodules are then not visited), for layers that use their submodules'
parameters functionally (``nn.MultiheadAttention`` uses ``out_proj.weight`` without calling
``out_proj``). :func:`vmap_handler` is a handler for any per-sample layer (``torch.func`` on that
layer only): register it for a layer type without a hand-written rule.

The registry is a module-level table, like BackPACK's ``extensions``: users add their own layer
types with :func:`register_lnp_handler`.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerHandler", "register_lnp_handler", "lookup_handler", "vmap_handler",
           "registered_layer_types", "overriding_subclass"]


@dataclasses.dataclass(frozen=True)
class LayerHandler:
    """Per-sample gradient rule of a layer type (see the module docstring)."""

    grads: Callable
    sq_norms: Callable | None = None
    params: str = "direct"
    batch_dim: int | str | Callable = 0
    #: ``sq_norms`` also takes ``memo=``: a dict private to one recorded layer call, kept across the
    #: probes of one measurement, for probe-independent intermediates (unfolded inputs, Gram matrices
    #: of the inputs) within the byte budget in ``memo["budget"]`` that all calls of the measurement
    #: share (:func:`memo_keep`); set by the built-in Linear / Conv / ConvTranspose handlers
    memo: bool = False

    def batch_dim_of(self, module: nn.Module) -> int | None:
        """The batch dim of ``module``'s inputs (``None``: any leading dim, read from the dry runs)."""
        b = self.batch_dim
        if b == "any":
            return None
        b = b(module) if callable(b) else b
        if not isinstance(b, int) or isinstance(b, bool) or b < 0:
            raise ValueError(f"the LNP handler of {type(module).__name__} gives batch_dim={b!r}; it must be an "
                             "int >= 0, 'any' or a callable (module) -> int >= 0")
        return b


_REGISTRY: dict[type, LayerHandler] = {}
_GENERATION = [0]


def register_lnp_handler(layer_type: type, grads: Callable, *, sq_norms: Callable | None = None,
                         params: str = "direct", batch_dim: int | str | Callable = 0) -> None:
    """Register the per-sample gradient rule of ``layer_type`` for ``measure_lnp(backend="hooks")``.

    Parameters
    ----------
    layer_type : type
        An ``nn.Module`` subclass; subclasses without their own entry use it too if they inherit
        its ``forward`` (a subclass that overrides ``forward`` needs its own entry).
    grads : callable
        ``grads(module, args, kwargs, grad_output)`` → dict mapping parameter names (relative to
        the module, e.g. ``"weight"``, ``"out_proj.bias"``) to per-sample gradients
        ``(N, *param.shape)``. ``args``/``kwargs`` are the layer's inputs, ``grad_output`` the
        gradient w.r.t. its output (a tuple, with ``None`` for unused parts, when the layer
        returns a tuple); batched positional inputs and ``grad_output`` come with the batch on
        dim 0 whatever ``batch_dim`` is. ``vmap_handler`` works for any per-sample layer.
    sq_norms : callable, optional
        Same arguments → per-sample Σ_params ||g_n||², a faster path when no parameter is shared.
    params : {"direct", "all"}
        Parameters the rule covers: the module's own, or its whole subtree.
    batch_dim : int, "any" or callable, default 0
        Where the batch is in the layer's positional inputs: an int, a callable
        ``(module) -> int`` (e.g. ``lambda m: 0 if m.batch_first else 1``), or ``"any"`` for a
        layer that treats all leading dims alike (acts on trailing feature dims only), whose
        batch is then found per call. A call whose inputs carry the batch on another dim is an
        error naming the layer (never a wrong number). Added keyword; the default keeps the
        earlier behaviour.

    Examples
    --------
    >>> class Scale(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.gain = nn.Parameter(torch.ones(3))
    ...     def forward(self, x):
    ...         return x * self.gain
    >>> register_lnp_handler(Scale, lambda m, args, kwargs, d: {"gain": (d * args[0]).flatten(1, -2).sum(1)
    ...                                                         if d.dim() > 2 else d * args[0]})
    >>> lookup_handler(Scale()) is not None
    True
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"layer_type must be an nn.Module subclass, got {layer_type!r}")
    if not callable(grads):
        raise TypeError(f"grads must be callable (module, args, kwargs, grad_output) -> dict, got {grads!r}")
    if sq_norms is not None and not callable(sq_norms):
        raise TypeError(f"sq_norms must be callable or None, got {sq_norms!r}")
    if params not in ("direct", "all"):
        raise ValueError(f"params must be 'direct' or 'all', got {params!r}")
    if not (batch_dim == "any" or callable(batch_dim)
            or (isinstance(batch_dim, int) and not isinstance(batch_dim, bool) and batch_dim >= 0)):
        raise ValueError(f"batch_dim must be an int >= 0, 'any' or a callable (module) -> int, got {batch_dim!r}")
    _REGISTRY[layer_type] = LayerHandler(grads, sq_norms, params, batch_dim)
    _GENERATION[0] += 1


def registry_generation() -> int:
    """A number that changes whenever a handler is registered (a key of cached backend decisions)."""
    return _GENERATION[0]


def registered_layer_types() -> list[type]:
    """The layer types with a handler (built-in and registered)."""
    _register_optional()
    return list(_REGISTRY)


def _registered_base(module: nn.Module):
    _register_optional()
    return next((cls for cls in type(module).__mro__ if cls in _REGISTRY), None)


def lookup_handler(module: nn.Module) -> LayerHandler | None:
    """The handler of ``module``'s type, or of its nearest registered base class if it inherits that
    class's ``forward``; None otherwise.

    A subclass that overrides ``forward`` (a scaled embedding, a channels-first LayerNorm) computes
    something else than its parent, so the parent's rule would give wrong per-sample gradients:
    it gets no handler unless registered itself, and its parameters are then treated as free
    parameters (:mod:`.taps`) or, where that cannot work, measured by ``backend="vmap"``.
    """
    cls = _registered_base(module)
    if cls is None:
        return None
    if cls is not type(module) and getattr(type(module), "forward", None) is not getattr(cls, "forward", None):
        return None
    return _REGISTRY[cls]


def overriding_subclass(module: nn.Module) -> str:
    """``", a subclass of X that overrides forward, so X's handler is not used"`` or ``""``."""
    cls = _registered_base(module)
    if cls is None or cls is type(module) or lookup_handler(module) is not None:
        return ""
    return (f", a subclass of {cls.__module__}.{cls.__qualname__} that overrides forward, so that class's LNP "
            "handler is not used for it")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _sq(t: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of squares over all but the first dim (one pass, no squared temporary)."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1).pow(2)


def _trainable(module: nn.Module, name: str) -> bool:
    p = getattr(module, name, None)
    return isinstance(p, torch.Tensor) and p.requires_grad


def memo_keep(memo: dict | None, key: str, t: torch.Tensor) -> None:
    """Keep ``t`` in a layer call's memo if the measurement's shared byte budget has room for it.

    The budget (``memo["budget"]``, a one-element list of bytes left, shared by every call of one
    measurement) bounds the extra memory held across probes: without it a deep conv net would keep
    every layer's unfolded input (k² times its activations) alive at once.
    """
    if memo is None:
        return
    left = memo.get("budget")
    size = t.numel() * t.element_size()
    if left is not None and left[0] >= size:
        left[0] -= size
        memo[key] = t


def _outer_sum_sq(p: torch.Tensor, q: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
    """Per-sample ||Σ_t p_t q_tᵀ||_F² for p (N, A, T), q (N, B, T).

    Either materialise the (A, B) matrix (cost N·A·B·T) or use the ghost-norm identity
    Σ_{t,t'} (p_t·p_t')(q_t·q_t') (cost N·T²·(A+B)), whichever is cheaper. With ``memo`` (q the
    same tensor on every call, e.g. a layer input across probes) q's Gram matrix is computed once.
    """
    a, b, t = p.shape[1], q.shape[1], p.shape[2]
    if t * t * (a + b) < a * b * t:
        gq = None if memo is None else memo.get("gram")
        if gq is None:
            gq = torch.bmm(q.transpose(1, 2), q)
            memo_keep(memo, "gram", gq)
        return (torch.bmm(p.transpose(1, 2), p) * gq).flatten(1).sum(1)
    return _sq(torch.bmm(p, q.transpose(1, 2)))


def _zeros(d: torch.Tensor) -> torch.Tensor:
    return torch.zeros(d.shape[0], dtype=d.dtype, device=d.device)


# --------------------------------------------------------------------------------------------
# Linear (and transformers' Conv1D, a Linear with a transposed weight)
# --------------------------------------------------------------------------------------------
def _tokens(a: torch.Tensor, d: torch.Tensor):
    n = a.shape[0]
    return a.reshape(n, -1, a.shape[-1]), d.reshape(n, -1, d.shape[-1])


def _linear_sq(m, args, kwargs, d, memo=None):
    a = args[0]
    out = _zeros(d)
    if a.dim() == 2:
        if _trainable(m, "weight"):
            out += _sq(d) * _sq(a)
        if _trainable(m, "bias"):
            out += _sq(d)
        return out
    a3, d3 = _tokens(a, d)
    if _trainable(m, "weight"):
        out += _outer_sum_sq(d3.transpose(1, 2), a3.transpose(1, 2), memo)
    if _trainable(m, "bias"):
        out += _sq(d3.sum(1))
    return out


def _linear_grads(m, args, kwargs, d, transposed=False):
    a3, d3 = _tokens(args[0], d)
    g = {}
    if _trainable(m, "weight"):
        g["weight"] = torch.bmm(a3.transpose(1, 2), d3) if transposed else torch.bmm(d3.transpose(1, 2), a3)
    if _trainable(m, "bias"):
        g["bias"] = d3.sum(1)
    return g


def _conv1d_hf_grads(m, args, kwargs, d):
    return _linear_grads(m, args, kwargs, d, transposed=True)


# --------------------------------------------------------------------------------------------
# convolutions
# --------------------------------------------------------------------------------------------
def _conv_padding(m) -> tuple:
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"per-sample gradients of {type(m).__name__} with padding_mode="
                                  f"{m.padding_mode!r} have no handler; use backend='vmap'")
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0,) * len(m.kernel_size)
        pads = []
        for k, dl in zip(m.kernel_size, m.dilation):
            total = dl * (k - 1)
            if total % 2:
                raise NotImplementedError(f"{type(m).__name__} padding='same' with asymmetric padding has no "
                                          "handler; use backend='vmap'")
            pads.append(total // 2)
        return tuple(pads)
    return tuple(m.padding)


def _as2d(t: torch.Tensor, nd: int) -> torch.Tensor:
    return t.unsqueeze(-2) if nd == 1 else t


def _pair(v, nd):
    v = tuple(v)
    return (1,) + v if nd == 1 else v


def _conv_parts(m, a, d, memo=None):
    nd = len(m.kernel_size)
    if m.groups != 1:
        raise NotImplementedError(f"per-sample gradients of grouped {type(m).__name__} (groups={m.groups}) "
                                  "have no handler; use backend='vmap'")
    pad = _conv_padding(m)
    pad = (0,) + pad if nd == 1 else pad
    u = None if memo is None else memo.get("unfold")
    if u is None and _trainable(m, "weight"):
        u = F.unfold(_as2d(a, nd), _pair(m.kernel_size, nd), dilation=_pair(m.dilation, nd), padding=pad,
                     stride=_pair(m.stride, nd))  # (N, Cin k^2, L)
        memo_keep(memo, "unfold", u)
    return _as2d(d, nd).flatten(2), u


def _conv_sq(m, args, kwargs, d, memo=None):
    dflat, u = _conv_parts(m, args[0], d, memo)
    out = _zeros(d)
    if u is not None:
        out += _outer_sum_sq(dflat, u, memo)
    if _trainable(m, "bias"):
        out += _sq(dflat.sum(2))
    return out


def _conv_grads(m, args, kwargs, d):
    dflat, u = _conv_parts(m, args[0], d)
    g = {}
    if u is not None:
        g["weight"] = torch.bmm(dflat, u.transpose(1, 2)).reshape(d.shape[0], *m.weight.shape)
    if _trainable(m, "bias"):
        g["bias"] = dflat.sum(2)
    return g


def _convt_parts(m, a, d):
    nd = len(m.kernel_size)
    if m.groups != 1:
        raise NotImplementedError(f"per-sample gradients of grouped {type(m).__name__} have no handler; "
                                  "use backend='vmap'")
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"{type(m).__name__} padding_mode={m.padding_mode!r} has no handler; "
                                  "use backend='vmap'")
    a2, d2 = _as2d(a, nd), _as2d(d, nd)
    u = None
    if _trainable(m, "weight"):
        # dW[ci, co, k] = sum_pos a[ci, pos] d[co, pos*s - p + k*dil]: unfold the output gradient
        u = F.unfold(d2, _pair(m.kernel_size, nd), dilation=_pair(m.dilation, nd),
                     padding=(0,) + tuple(m.padding) if nd == 1 else tuple(m.padding),
                     stride=_pair(m.stride, nd))  # (N, Cout k^2, L)
        if u.shape[-1] != a2.flatten(2).shape[-1]:
            raise NotImplementedError(f"{type(m).__name__}: unfolded output gradient has {u.shape[-1]} positions, "
                                      f"the input {a2.flatten(2).shape[-1]}; use backend='vmap'")
    return a2.flatten(2), d2.flatten(2), u


def _convt_sq(m, args, kwargs, d, memo=None):
    af, dflat, u = _convt_parts(m, args[0], d)
    out = _zeros(d)
    if u is not None:
        out += _outer_sum_sq(u, af, memo)  # ||Σ_t a_t u_tᵀ|| = ||Σ_t u_t a_tᵀ||; the input a is the fixed side
    if _trainable(m, "bias"):
        out += _sq(dflat.sum(2))
    return out


def _convt_grads(m, args, kwargs, d):
    af, dflat, u = _convt_parts(m, args[0], d)
    g = {}
    if u is not None:
        g["weight"] = torch.bmm(af, u.transpose(1, 2)).reshape(d.shape[0], *m.weight.shape)
    if _trainable(m, "bias"):
        g["bias"] = dflat.sum(2)
    return g


# --------------------------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------------------------
def _emb_parts(m, a, d):
    n = a.shape[0]
    ids = a.reshape(n, -1)
    dd = d.reshape(n, ids.shape[1], -1)
    if m.padding_idx is not None:
        dd = dd * (ids != m.padding_idx).unsqueeze(-1).to(dd.dtype)
    return ids, dd


def _emb_grads(m, args, kwargs, d):
    if not _trainable(m, "weight"):
        return {}
    ids, dd = _emb_parts(m, args[0], d)
    n, v, dim = ids.shape[0], m.num_embeddings, dd.shape[-1]
    g = torch.zeros(n * v, dim, dtype=dd.dtype, device=dd.device)
    flat = (ids + v * torch.arange(n, device=ids.device).unsqueeze(1)).reshape(-1)
    g.index_add_(0, flat, dd.reshape(-1, dim))
    return {"weight": g.view(n, v, dim)}


def _emb_sq(m, args, kwargs, d):
    if not _trainable(m, "weight"):
        return _zeros(d)
    ids, dd = _emb_parts(m, args[0], d)
    if ids.shape[0] * m.num_embeddings * dd.shape[-1] <= 50_000_000:
        return _sq(_emb_grads(m, args, kwargs, d)["weight"])
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).to(dd.dtype)
    return (same * torch.bmm(dd, dd.transpose(1, 2))).flatten(1).sum(1)


# --------------------------------------------------------------------------------------------
# normalisation layers: out = weight * xhat + bias
# --------------------------------------------------------------------------------------------
def _affine_grads(m, xhat, d, channel_dims):
    red = tuple(i for i in range(1, d.dim()) if i not in channel_dims)
    g = {}
    if _trainable(m, "weight"):
        g["weight"] = ((d * xhat).sum(red) if red else d * xhat).reshape(d.shape[0], *m.weight.shape)
    if _trainable(m, "bias"):
        g["bias"] = (d.sum(red) if red else d).reshape(d.shape[0], *m.bias.shape)
    return g


def _xhat_unit_affine(m, args, kwargs):
    """The layer's own output with weight 1 and bias 0 (exactly what multiplies the weight)."""
    from torch.func import functional_call

    unit = {}
    for k in ("weight", "bias"):
        p = getattr(m, k, None)
        if isinstance(p, torch.Tensor):
            unit[k] = (torch.ones_like if k == "weight" else torch.zeros_like)(p).detach()
    with torch.no_grad():
        return functional_call(m, unit, args, kwargs)


def _trailing_affine_grads(m, args, kwargs, d):
    """LayerNorm / RMSNorm: parameters of the shape of the trailing output dims."""
    w = getattr(m, "weight", None)
    k = (w if isinstance(w, torch.Tensor) else m.bias).dim()
    xhat = _xhat_unit_affine(m, args, kwargs)
    return _affine_grads(m, xhat, d, tuple(range(d.dim() - k, d.dim())))


def _group_norm_grads(m, args, kwargs, d):
    xhat = F.group_norm(args[0], m.num_groups, None, None, m.eps)
    return _affine_grads(m, xhat, d, (1,))


def _batch_norm_grads(m, args, kwargs, d):
    if m.training or m.running_mean is None:
        raise RuntimeError(f"{type(m).__name__} must be in frozen-statistics mode during measurement")
    a = args[0]
    shape = [1, -1] + [1] * (a.dim() - 2)
    xhat = (a - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
    return _affine_grads(m, xhat, d, (1,))


def _sq_of(grads_fn):
    def sq(m, args, kwargs, d):
        out = _zeros(d)
        for t in grads_fn(m, args, kwargs, d).values():
            out += _sq(t)
        return out
    return sq


# --------------------------------------------------------------------------------------------
# any per-sample layer: torch.func on this layer only
# --------------------------------------------------------------------------------------------
def vmap_handler(module: nn.Module, args: tuple, kwargs: dict, grad_output) -> dict:
    """Per-sample gradients of one layer call with ``torch.func`` (``vjp`` under ``vmap``).

    Exact for any layer whose output for sample n depends only on sample n of its batched
    inputs (positional tensors whose first dim is the batch size; every other argument is shared).
    The layer is called on one sample at a time in its own layout: the batch dim of its
    registered ``batch_dim`` (``0`` if unregistered or ``"any"``) is put back with size 1.
    Covers the layer's whole parameter subtree; register it with ``params="all"``.
    """
    h = lookup_handler(module)
    b = 0 if h is None else (h.batch_dim_of(module) or 0)
    return _vmap_grads(module, args, kwargs, grad_output, b, {})


def _vmap_grads(module, args, kwargs, grad_output, in_dim: int, kw_batched: dict) -> dict:
    """``vmap_handler`` with the per-sample singleton batch at ``in_dim`` of the positional inputs and
    ``kw_batched`` = {keyword: (tensor with the batch on dim 0, per-sample slice -> keyword value)}."""
    from torch.func import functional_call, vjp, vmap

    cots = grad_output if isinstance(grad_output, tuple) else (grad_output,)
    n = next(c.shape[0] for c in cots if c is not None)
    params = {k: p.detach() for k, p in module.named_parameters() if p.requires_grad}
    fixed = {k: p.detach() for k, p in module.named_parameters() if not p.requires_grad}
    fixed.update(dict(module.named_buffers()))
    batched = [isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n for a in args]
    b_args = [a for a, b in zip(args, batched) if b]
    kw_names = list(kw_batched)
    b_kws = [kw_batched[k][0] for k in kw_names]
    cot_mask = [c is not None for c in cots]
    b_cots = [c for c in cots if c is not None]

    def one(*flat):
        xs = flat[:len(b_args)]
        ks = flat[len(b_args):len(b_args) + len(kw_names)]
        cs = flat[len(b_args) + len(kw_names):]
        it = iter(xs)
        call_args = tuple(next(it).unsqueeze(in_dim) if b else a for a, b in zip(args, batched))
        call_kwargs = {**kwargs, **{k: kw_batched[k][1](v) for k, v in zip(kw_names, ks)}}

        def fwd(p):
            out = functional_call(module, ({**p, **fixed}), call_args, call_kwargs)
            outs = out if isinstance(out, tuple) else (out,)
            # the per-sample output carries a size-1 batch dim somewhere: dropping it is a reshape
            return tuple(o.reshape(c.shape) for o, c in zip((o for o, keep in zip(outs, cot_mask) if keep), cs))

        _, pull = vjp(fwd, params)
        (g,) = pull(tuple(cs))
        return g

    return vmap(one)(*b_args, *b_kws, *b_cots)


def _mha_batch_dim(m: nn.MultiheadAttention) -> int:
    return 0 if m.batch_first else 1


def _mha_grads(m, args, kwargs, d):
    """nn.MultiheadAttention, either layout; a (N, S) key_padding_mask and a (N·heads, L, S) attn_mask
    are per-sample inputs (batch-first whatever ``batch_first`` is)."""
    n = next(t for t in (d if isinstance(d, tuple) else (d,)) if t is not None).shape[0]
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    kwargs = dict(kwargs)
    if len(args) > 3:  # masks passed positionally: make them keywords
        kwargs.update(zip(names[3:], args[3:]))
        args = args[:3]
    kw_batched = {}
    kpm = kwargs.get("key_padding_mask")
    if isinstance(kpm, torch.Tensor) and kpm.dim() == 2:
        kw_batched["key_padding_mask"] = (kpm, lambda t: t.unsqueeze(0))
    am = kwargs.get("attn_mask")
    if isinstance(am, torch.Tensor) and am.dim() == 3:
        if am.shape[0] != n * m.num_heads:
            raise NotImplementedError(f"nn.MultiheadAttention attn_mask of shape {tuple(am.shape)}: a 3-d mask "
                                      f"must be (batch·heads, L, S) = ({n * m.num_heads}, …); use backend='vmap'")
        kw_batched["attn_mask"] = (am.reshape(n, m.num_heads, *am.shape[1:]), lambda t: t)
    return _vmap_grads(m, args, kwargs, d, _mha_batch_dim(m), kw_batched)


# --------------------------------------------------------------------------------------------
# built-in table
# --------------------------------------------------------------------------------------------
def _prelu_grads(m, args, kwargs, d):
    """PReLU f = max(0, x) + w·min(0, x): ∂f/∂w = min(0, x), summed per sample over the elements
    sharing a slope (all of them for one slope, else those of channel c = dim 1)."""
    g = d * torch.clamp(args[0], max=0)
    n = g.shape[0]
    if m.weight.numel() == 1:
        return {"weight": g.reshape(n, -1).sum(1).reshape(n, 1)}
    return {"weight": g.reshape(n, g.shape[1], -1).sum(2)}


def _builtin():
    for cls in (nn.Linear,):
        register_lnp_handler(cls, _linear_grads, sq_norms=_linear_sq, batch_dim="any")
    for cls in (nn.Conv1d, nn.Conv2d):
        register_lnp_handler(cls, _conv_grads, sq_norms=_conv_sq)
    for cls in (nn.ConvTranspose1d, nn.ConvTranspose2d):
        register_lnp_handler(cls, _convt_grads, sq_norms=_convt_sq)
    register_lnp_handler(nn.Embedding, _emb_grads, sq_norms=_emb_sq, batch_dim="any")
    register_lnp_handler(nn.LayerNorm, _trailing_affine_grads, sq_norms=_sq_of(_trailing_affine_grads),
                         batch_dim="any")
    if hasattr(nn, "RMSNorm"):
        register_lnp_handler(nn.RMSNorm, _trailing_affine_grads, sq_norms=_sq_of(_trailing_affine_grads),
                             batch_dim="any")
    register_lnp_handler(nn.GroupNorm, _group_norm_grads, sq_norms=_sq_of(_group_norm_grads))
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
        register_lnp_handler(cls, _batch_norm_grads, sq_norms=_sq_of(_batch_norm_grads))
    register_lnp_handler(nn.MultiheadAttention, _mha_grads, params="all", batch_dim=_mha_batch_dim)
    register_lnp_handler(nn.PReLU, _prelu_grads, sq_norms=_sq_of(_prelu_grads))
    _with_memo(nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def _with_memo(*classes):
    """Mark built-in handlers whose ``sq_norms`` take ``memo=`` (see ``LayerHandler.memo``)."""
    for cls in classes:
        _REGISTRY[cls] = dataclasses.replace(_REGISTRY[cls], memo=True)


_builtin()
_OPTIONAL_DONE: set[str] = set()


def _register_optional():
    """Layer types of optional libraries, registered once the library has been imported by the user."""
    if "transformers.pytorch_utils" in sys.modules and "conv1d" not in _OPTIONAL_DONE:
        conv1d = getattr(sys.modules["transformers.pytorch_utils"], "Conv1D", None)
        if conv1d is not None:
            register_lnp_handler(conv1d, _conv1d_hf_grads, sq_norms=_linear_sq, batch_dim="any")
            _with_memo(conv1d)
        _OPTIONAL_DONE.add("conv1d")
    for mod_name, cls_name in (("transformers.models.llama.modeling_llama", "LlamaRMSNorm"),
                               ("transformers.models.mistral.modeling_mistral", "MistralRMSNorm"),
                               ("transformers.models.qwen2.modeling_qwen2", "Qwen2RMSNorm")):
        if mod_name in sys.modules and cls_name not in _OPTIONAL_DONE:
            cls = getattr(sys.modules[mod_name], cls_name, None)
            if cls is not None:
                register_lnp_handler(cls, _trailing_affine_grads, sq_norms=_sq_of(_trailing_affine_grads),
                                     batch_dim="any")
            _OPTIONAL_DONE.add(cls_name)
