"""LNP statistics of one training step, measured with torch (spectral reach §3, appendix B.1).

:func:`measure_lnp` returns ℒ = ||dL/df||², 𝒩 = Tr K = Σ_n ||J_n||_F², ||∇L||², P and (with a
second batch) ∇L_A·∇L_B and P_AB, raw and batch-size normalised, optionally split by Haar band.
The definitions and the estimators are written out in ``docs/lnp.md``; the arithmetic on the
statistics is :func:`bandscope.lnp.lnp_components`.

Estimators of 𝒩 (``network_scale=``)

``"hutchinson"`` (default)
    Per-sample Hutchinson: one Rademacher vector u_n per sample and probe, 𝒩 ≈ Σ_n ||J_nᵀu_n||²
    averaged over probes. One backward pass per probe that stops at the layer outputs (no
    weight gradients); the per-sample squared gradient norms are formed from layer inputs and
    output gradients by a registry of layer handlers (Linear, Conv1d/2d, ConvTranspose1d/2d,
    Embedding, LayerNorm, GroupNorm, BatchNorm). ``backend="vmap"`` computes the same per-sample
    norms with torch.func (any layer, slower).
``"batch-hutchinson"``
    One plain backward of Σ u·f per probe (u Rademacher over the whole batch); unbiased but the
    cross-sample kernel entries add variance.
``"exact"``
    Per-sample Jacobian norms: one backward per output coordinate (all samples at once) with
    the handlers, or ``jacrev`` per sample with ``backend="vmap"``. For small outputs.

BatchNorm convention: the measurement uses the model as it trains. A BatchNorm layer in
training mode normalises with the statistics of the measured batch, exactly as in the training
step, but those statistics are held constant (no gradient flows through the batch mean and
variance, and running statistics are not updated). This keeps the network a per-sample function,
so 𝒩 = Σ_n ||J_n||_F² is defined; the gradient ∇L is that of this frozen-statistics network.
"""
from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from bandscope.lnp import lnp_components

__all__ = ["measure_lnp", "per_sample_grad_norms", "ESTIMATORS"]

ESTIMATORS = ("hutchinson", "batch-hutchinson", "exact")
DEFAULT_ESTIMATOR = "hutchinson"

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# --------------------------------------------------------------------------------------------
# per-sample squared gradient norms from (layer input, layer output gradient): layer registry
# --------------------------------------------------------------------------------------------
def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """Σ a·b as a Python float (BLAS dot in the tensors' dtype)."""
    return float(torch.dot(a.reshape(-1), b.reshape(-1)))


def _sqsum(ts) -> float:
    """Σ over tensors of squared entries (a squared norm)."""
    return sum(_dot(t, t) for t in ts)


def _sq(t: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of squares over all but the first dim."""
    return t.pow(2).flatten(1).sum(1)


def _trainable(module: nn.Module, name: str) -> bool:
    p = getattr(module, name, None)
    return isinstance(p, torch.Tensor) and p.requires_grad


def _outer_sum_sq(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-sample ||Σ_t p_t q_tᵀ||_F² for p (N, A, T), q (N, B, T).

    Either materialise the (A, B) matrix (cost N·A·B·T) or use the ghost-norm identity
    Σ_{t,t'} (p_t·p_t')(q_t·q_t') (cost N·T²·(A+B)), whichever is cheaper.
    """
    a, b, t = p.shape[1], q.shape[1], p.shape[2]
    if t * t * (a + b) < a * b * t:
        return (torch.bmm(p.transpose(1, 2), p) * torch.bmm(q.transpose(1, 2), q)).flatten(1).sum(1)
    return _sq(torch.bmm(p, q.transpose(1, 2)))


def _linear(m: nn.Linear, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    n = a.shape[0]
    out = torch.zeros(n, dtype=d.dtype, device=d.device)
    if a.dim() == 2:
        if _trainable(m, "weight"):
            out += _sq(d) * _sq(a)
        if _trainable(m, "bias"):
            out += _sq(d)
        return out
    a3, d3 = a.reshape(n, -1, a.shape[-1]), d.reshape(n, -1, d.shape[-1])
    if _trainable(m, "weight"):
        out += _outer_sum_sq(d3.transpose(1, 2), a3.transpose(1, 2))
    if _trainable(m, "bias"):
        out += _sq(d3.sum(1))
    return out


def _conv_padding(m) -> tuple:
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"per-sample norms of {type(m).__name__} with padding_mode="
                                  f"{m.padding_mode!r}; use backend='vmap'")
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0,) * len(m.kernel_size)
        pads = []
        for k, dl in zip(m.kernel_size, m.dilation):
            total = dl * (k - 1)
            if total % 2:
                raise NotImplementedError(f"{type(m).__name__} padding='same' with asymmetric padding; "
                                          "use backend='vmap'")
            pads.append(total // 2)
        return tuple(pads)
    return tuple(m.padding)


def _as2d(t: torch.Tensor, nd: int) -> torch.Tensor:
    return t.unsqueeze(-2) if nd == 1 else t


def _pair(v, nd):
    v = tuple(v)
    return (1,) + v if nd == 1 else v


def _conv(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    nd = len(m.kernel_size)
    if m.groups != 1:
        raise NotImplementedError(f"per-sample norms of grouped {type(m).__name__} (groups={m.groups}); "
                                  "use backend='vmap'")
    pad = _conv_padding(m)
    pad = (0,) + pad if nd == 1 else pad
    a2, d2 = _as2d(a, nd), _as2d(d, nd)
    n = a.shape[0]
    out = torch.zeros(n, dtype=d.dtype, device=d.device)
    dflat = d2.flatten(2)  # (N, Cout, L)
    if _trainable(m, "weight"):
        u = F.unfold(a2, _pair(m.kernel_size, nd), dilation=_pair(m.dilation, nd), padding=pad,
                     stride=_pair(m.stride, nd))  # (N, Cin k^2, L)
        out += _outer_sum_sq(dflat, u)
    if _trainable(m, "bias"):
        out += _sq(dflat.sum(2))
    return out


def _conv_transpose(m: nn.ConvTranspose2d, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    nd = len(m.kernel_size)
    if m.groups != 1:
        raise NotImplementedError(f"per-sample norms of grouped {type(m).__name__}; use backend='vmap'")
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"{type(m).__name__} padding_mode={m.padding_mode!r}; use backend='vmap'")
    a2, d2 = _as2d(a, nd), _as2d(d, nd)
    n = a.shape[0]
    out = torch.zeros(n, dtype=d.dtype, device=d.device)
    if _trainable(m, "weight"):
        # dW[ci, co, k] = sum_pos a[ci, pos] d[co, pos*s - p + k*dil]: unfold the output gradient
        u = F.unfold(d2, _pair(m.kernel_size, nd), dilation=_pair(m.dilation, nd),
                     padding=_pair(m.padding, nd), stride=_pair(m.stride, nd))  # (N, Cout k^2, L)
        af = a2.flatten(2)  # (N, Cin, L)
        if u.shape[-1] != af.shape[-1]:
            raise RuntimeError(f"{type(m).__name__}: unfolded output gradient has {u.shape[-1]} positions, "
                               f"input has {af.shape[-1]}")
        out += _outer_sum_sq(af, u)
    if _trainable(m, "bias"):
        out += _sq(d2.flatten(2).sum(2))
    return out


def _embedding(m: nn.Embedding, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    n = a.shape[0]
    ids = a.reshape(n, -1)
    dd = d.reshape(n, ids.shape[1], -1)
    if m.padding_idx is not None:
        dd = dd * (ids != m.padding_idx).unsqueeze(-1).to(dd.dtype)
    if not _trainable(m, "weight"):
        return torch.zeros(n, dtype=d.dtype, device=d.device)
    v, dim = m.num_embeddings, dd.shape[-1]
    if n * v * dim <= 50_000_000:
        g = torch.zeros(n * v, dim, dtype=dd.dtype, device=dd.device)
        flat = (ids + v * torch.arange(n, device=ids.device).unsqueeze(1)).reshape(-1)
        g.index_add_(0, flat, dd.reshape(-1, dim))
        return _sq(g.view(n, v * dim))
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).to(dd.dtype)
    return (same * torch.bmm(dd, dd.transpose(1, 2))).flatten(1).sum(1)


def _affine_norm(m, xhat: torch.Tensor, d: torch.Tensor, channel_dims: tuple[int, ...]) -> torch.Tensor:
    """weight grad = sum over non-parameter dims of d * xhat; bias grad = sum of d."""
    n = d.shape[0]
    out = torch.zeros(n, dtype=d.dtype, device=d.device)
    red = tuple(i for i in range(1, d.dim()) if i not in channel_dims)
    if _trainable(m, "weight"):
        out += _sq((d * xhat).sum(red) if red else d * xhat)
    if _trainable(m, "bias"):
        out += _sq(d.sum(red) if red else d)
    return out


def _layer_norm(m: nn.LayerNorm, a, d):
    k = len(m.normalized_shape)
    xhat = F.layer_norm(a, m.normalized_shape, None, None, m.eps)
    return _affine_norm(m, xhat, d, tuple(range(a.dim() - k, a.dim())))


def _group_norm(m: nn.GroupNorm, a, d):
    xhat = F.group_norm(a, m.num_groups, None, None, m.eps)
    return _affine_norm(m, xhat, d, (1,))


def _batch_norm(m, a, d):
    if m.training or m.running_mean is None:
        raise RuntimeError(f"{type(m).__name__} must be in frozen-statistics mode during measurement")
    shape = [1, -1] + [1] * (a.dim() - 2)
    xhat = (a - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
    return _affine_norm(m, xhat, d, (1,))


_HANDLERS: dict[type, Callable] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.ConvTranspose1d: _conv_transpose,
    nn.ConvTranspose2d: _conv_transpose,
    nn.Embedding: _embedding,
    nn.LayerNorm: _layer_norm,
    nn.GroupNorm: _group_norm,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.BatchNorm3d: _batch_norm,
}


def _handler(module: nn.Module):
    for cls in type(module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


class _LayerTaps:
    """Forward hooks that keep each parametrised layer's input and a private copy of its output.

    The hook returns a clone of the layer output so that a later in-place op (ReLU(inplace=True))
    modifies the clone; the original stays a clean autograd node whose gradient is the layer's
    output gradient δ. ``autograd.grad(out, taps.outputs, u)`` then returns every δ without
    computing any weight gradient.
    """

    def __init__(self, model: nn.Module):
        self.layers: list[tuple[str, nn.Module, Callable]] = []
        for name, mod in model.named_modules():
            direct = [p for p in mod.parameters(recurse=False) if p.requires_grad]
            if not direct:
                continue
            h = _handler(mod)
            if h is None:
                raise NotImplementedError(
                    f"per-sample gradient norms: no handler for layer {name!r} ({type(mod).__name__}) "
                    f"with trainable parameters; use backend='vmap' (torch.func) for this model")
            extra = [k for k, p in mod.named_parameters(recurse=False)
                     if p.requires_grad and k not in ("weight", "bias")]
            if extra:
                raise NotImplementedError(f"layer {name!r} has unexpected parameters {extra}; use backend='vmap'")
            self.layers.append((name, mod, h))
        self.inputs: dict[str, tuple[torch.Tensor, int]] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.order: dict[str, int] = {}
        self._handles = []

    @contextlib.contextmanager
    def capture(self):
        def make(name):
            def hook(mod, inp, out):
                if name in self.outputs:
                    raise NotImplementedError(
                        f"layer {name!r} is called more than once per forward (weight sharing); "
                        "per-sample norms need backend='vmap'")
                x = inp[0].detach()
                self.inputs[name] = (x, x._version)
                self.outputs[name] = out
                self.order[name] = len(self.order)
                return out.clone()
            return hook

        self.inputs.clear()
        self.outputs.clear()
        self.order.clear()
        self._handles = [mod.register_forward_hook(make(name)) for name, mod, _ in self.layers]
        try:
            yield self
        finally:
            for h in self._handles:
                h.remove()
            self._handles = []
        missing = [name for name, _, _ in self.layers if name not in self.outputs]
        if missing:
            raise NotImplementedError(
                f"layers {missing} hold trainable parameters but their forward was never called "
                "(parameters used functionally, e.g. inside nn.MultiheadAttention); use backend='vmap'")

    def per_sample_sq_norms(self, out: torch.Tensor, cotangent: torch.Tensor, skip=()) -> torch.Tensor:
        """Σ over layers of ||∂(cotangent·f_n)/∂θ||² per sample n (one backward, no weight grads)."""
        layers = [lay for lay in self.layers if lay[0] not in skip]
        total = torch.zeros(out.shape[0], dtype=torch.float64, device=out.device)
        if not layers:
            return total
        deltas = torch.autograd.grad(out, [self.outputs[k] for k, _, _ in layers], cotangent,
                                     retain_graph=True, allow_unused=True)
        for (name, mod, h), d in zip(layers, deltas):
            if d is None:
                continue
            a, version = self.inputs[name]
            if a._version != version:
                raise RuntimeError(f"the input of layer {name!r} was modified in place after the layer "
                                   "ran; per-sample norms need backend='vmap'")
            total += h(mod, a, d).to(torch.float64)
        return total

    def output_layer_exact(self, out: torch.Tensor, gen: torch.Generator):
        """Exact per-sample ||J_n||_F² of the output layer's parameters, when it can be had cheaply.

        Applies when the last Linear / Conv / ConvTranspose layer run produces a tensor z of the
        output's shape and the output is an elementwise function of it, f = φ(z) (checked with a
        Gaussian probe: the vjp of w must equal w ⊙ φ'(z)). Then, per sample,
        ||∂f/∂b||² = Σ_o φ'(z_o)² and ||∂f/∂W||² = Σ_o φ'(z_o)² S_o with S_o the squared norm
        of the input patch feeding output o (the layer's own op applied to a² with unit
        weights). Returns ``(layer name, per-sample norms)`` or ``None``.
        """
        cands = [lay for lay in self.layers if self.outputs[lay[0]].shape == out.shape]
        if not cands:
            return None
        name, mod, _ = max(cands, key=lambda lay: self.order[lay[0]])
        if not isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
            return None
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)) and (
                mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str)):
            return None
        z = self.outputs[name]
        w = torch.randn(out.shape, generator=gen).to(out.device, out.dtype)
        d1, dw = (torch.autograd.grad(out, z, c, retain_graph=True)[0]
                  for c in (torch.ones_like(out), w))
        scale = float(d1.abs().max())
        if not math.isfinite(scale):  # NaN/inf outputs (NaN inputs, a diverged model): probe instead,
            return None  # which gives P = NaN with the reason, as the exact route does
        if not torch.allclose(dw, w * d1, rtol=1e-4, atol=1e-6 * scale + 1e-30):
            return None  # not elementwise (softmax, mixing, reshapes that permute...)
        a = self.inputs[name][0]
        phi2 = d1.pow(2)
        n = out.shape[0]
        total = torch.zeros(n, dtype=torch.float64, device=out.device)
        if _trainable(mod, "bias"):
            total += phi2.flatten(1).sum(1, dtype=torch.float64)
        if _trainable(mod, "weight"):
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
            total += (phi2 * s).flatten(1).sum(1, dtype=torch.float64)
        return name, total


# --------------------------------------------------------------------------------------------
# state handling
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _preserved(model: nn.Module):
    """Restore modes, buffers (running stats), buffer identities and the torch RNG state."""
    modes = {m: m.training for m in model.modules()}
    bufs = {(m, k): (b, None if b is None else b.detach().clone())
            for m in model.modules() for k, b in m._buffers.items()}
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        for m, t in modes.items():
            m.training = t
        with torch.no_grad():
            for (m, k), (orig, copy) in bufs.items():
                if orig is not None:
                    orig.copy_(copy)
                m._buffers[k] = orig
        torch.set_rng_state(rng)


def _freeze_batchnorm_hooks(model: nn.Module):
    """Pre-hooks: a training-mode BatchNorm normalises with the batch statistics, held constant."""
    handles = []

    def pre(mod, inp):
        x = inp[0].detach()
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        mod._buffers["running_mean"] = mean
        mod._buffers["running_var"] = var
        mod.training = False
        return None

    for m in model.modules():
        if isinstance(m, _BN) and m.training:
            handles.append(m.register_forward_pre_hook(pre))
    return handles


def _rademacher(shape, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=gen, device="cpu").to(like.device, like.dtype) * 2 - 1)


def _make_generator(seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    g.manual_seed(random.SystemRandom().randrange(2**62) if seed is None else int(seed))
    return g


# --------------------------------------------------------------------------------------------
# network scale estimators
# --------------------------------------------------------------------------------------------
def _vmap_per_sample(model, x, cot, exact: bool, chunk_size):
    """Per-sample ||J_nᵀ v_n||² (or ||J_n||_F² if exact) with torch.func; any layer."""
    from torch.func import functional_call, jacrev, vjp, vmap

    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    buffers = {k: b for k, b in model.named_buffers()}

    def f1(p, xn):
        return functional_call(model, ({**p, **frozen}, buffers), (xn.unsqueeze(0),)).squeeze(0)

    if exact:
        def one(xn):
            jac = jacrev(f1)(params, xn)
            return sum(j.to(torch.float64).pow(2).sum() for j in jac.values())
        return vmap(one, chunk_size=chunk_size)(x)

    def one(xn, vn):
        _, pull = vjp(lambda p: f1(p, xn), params)
        (g,) = pull(vn)
        return sum(t.to(torch.float64).pow(2).sum() for t in g.values())
    return vmap(one, chunk_size=chunk_size)(x, cot)


def per_sample_grad_norms(model: nn.Module, inputs: torch.Tensor, cotangent: torch.Tensor | None = None,
                          *, backend: str = "hooks") -> torch.Tensor:
    """Per-sample ||J_nᵀ v_n||² for cotangents v (same shape as the output), or ||J_n||_F² if None.

    A building block of :func:`measure_lnp`, exposed for tests and custom estimators. The model
    is evaluated as it is (call it in the mode you want; BatchNorm must be in eval mode).

    Examples
    --------
    >>> lin = nn.Linear(3, 2)
    >>> x = torch.randn(4, 3)
    >>> n = per_sample_grad_norms(lin, x)  # exact: ||J_n||_F^2 = O (|x_n|^2 + 1)
    >>> torch.allclose(n, 2 * (x.double().pow(2).sum(1) + 1))
    True
    """
    with torch.enable_grad():
        if backend == "vmap":
            return _vmap_per_sample(model, inputs, cotangent, cotangent is None, None)
        taps = _LayerTaps(model)
        with taps.capture():
            out = model(inputs)
        if cotangent is not None:
            return taps.per_sample_sq_norms(out, cotangent)
        total = torch.zeros(out.shape[0], dtype=torch.float64)
        flat = out.reshape(out.shape[0], -1)
        for o in range(flat.shape[1]):
            e = torch.zeros_like(flat)
            e[:, o] = 1
            total += taps.per_sample_sq_norms(out, e.view_as(out))
        return total


def _network_scale(model, out, taps, x, estimator, n_probes, gen, backend, chunk_size, params,
                   exact_output_layer):
    """Return (estimate, standard error or nan, per-probe values)."""
    n = out.shape[0]
    if estimator == "exact":
        if backend == "vmap":
            return float(_vmap_per_sample(model, x, None, True, chunk_size).sum()), 0.0, None, ""
        flat = out.reshape(n, -1)
        total = torch.zeros(n, dtype=torch.float64)
        for o in range(flat.shape[1]):
            e = torch.zeros_like(flat)
            e[:, o] = 1
            total += taps.per_sample_sq_norms(out, e.view_as(out))
        return float(total.sum()), 0.0, None, ""
    vals = []
    per_sample = []
    exact_part, skip, skip_params = None, (), set()
    if exact_output_layer and backend == "hooks":
        found = taps.output_layer_exact(out, gen)
        if found is not None:
            name, exact_part = found
            skip = (name,)
            mod = dict(model.named_modules())[name]
            skip_params = {id(getattr(mod, k)) for k in ("weight", "bias") if _trainable(mod, k)}
    const = 0.0 if exact_part is None else float(exact_part.sum())
    for _ in range(n_probes):
        u = _rademacher(out.shape, out, gen)
        if estimator == "batch-hutchinson":
            ps = [p for p in params if id(p) not in skip_params]
            gp = torch.autograd.grad(out, ps, u, retain_graph=True) if ps else ()
            vals.append(const + _sqsum(gp))
        elif backend == "vmap":
            s = _vmap_per_sample(model, x, u, False, chunk_size)
            per_sample.append(s)
            vals.append(float(s.sum()))
        else:
            s = taps.per_sample_sq_norms(out, u, skip=skip)
            per_sample.append(s)
            vals.append(const + float(s.sum()))
    info = skip[0] if skip else ""
    est = float(np.mean(vals))
    if n_probes < 2:
        return est, math.nan, vals, info
    if per_sample:  # independent across samples: Var = Σ_n var_n / n_probes
        s = torch.stack(per_sample)
        se = math.sqrt(float(s.var(0, unbiased=True).sum()) / n_probes)
    else:
        se = float(np.std(vals, ddof=1) / math.sqrt(n_probes))
    return est, se, vals, info


# --------------------------------------------------------------------------------------------
# units
# --------------------------------------------------------------------------------------------
def _infer_units(loss_fn, out, y, n_units) -> tuple[float, str]:
    if n_units is not None:
        if callable(n_units):
            return float(n_units(out, y)), "n_units(outputs, targets)"
        if isinstance(n_units, str):
            table = {"samples": out.shape[0], "elements": out.numel(), "targets": y.numel(), "sum": 1}
            if n_units not in table:
                raise ValueError(f"n_units must be an int, a callable or one of {sorted(table)}, got {n_units!r}")
            return float(table[n_units]), n_units
        return float(n_units), "given"
    red = getattr(loss_fn, "reduction", None)
    if isinstance(loss_fn, (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss,
                            nn.BCEWithLogitsLoss)):
        return (float(out.numel()), "elements (element-wise mean)") if red == "mean" else (1.0, "sum")
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        if red == "sum":
            return 1.0, "sum"
        if red == "mean":
            ign = getattr(loss_fn, "ignore_index", -100)
            if y.dtype in (torch.long, torch.int, torch.int32, torch.int64):
                return float((y != ign).sum()), "targets (tokens / samples not ignored)"
            return float(y.numel() // max(1, y.shape[1] if y.dim() > 1 else 1)), "targets"
    raise ValueError(
        f"cannot tell the loss-reduction unit count M of {loss_fn!r}; pass n_units= an int, "
        "'samples', 'elements', 'targets', 'sum' or a callable (outputs, targets) -> M")


# --------------------------------------------------------------------------------------------
# the measurement
# --------------------------------------------------------------------------------------------
def _split(batch, which):
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(f"batch_{which} must be (inputs, targets), got {type(batch).__name__}")
    return batch


def _one_batch(model, loss_fn, batch, which, *, estimator, n_probes, gen, backend, chunk_size,
               bands, n_units, exact_output_layer):
    x, y = _split(batch, which)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    bn_handles = _freeze_batchnorm_hooks(model)
    taps = None
    need_taps = backend == "hooks" and (estimator != "batch-hutchinson" or exact_output_layer)
    try:
        with torch.enable_grad():
            if need_taps:
                taps = _LayerTaps(model)
                with taps.capture():
                    out = model(x)
            else:
                out = model(x)
    finally:
        for h in bn_handles:
            h.remove()
    with torch.enable_grad():
        loss = loss_fn(out, y)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        if not loss.requires_grad:
            raise ValueError("loss_fn(outputs, targets) does not depend on the model's outputs (its value "
                             "needs no gradient); LNP statistics are about the loss as a function of the "
                             "outputs: compute the loss from the outputs passed to loss_fn")
        *grad, g = torch.autograd.grad(loss, params + [out], retain_graph=True, allow_unused=True)
        if g is None:
            raise ValueError("loss_fn(outputs, targets) does not depend on the model's outputs (its gradient "
                             "with respect to them does not exist); LNP statistics are about the loss as a "
                             "function of the outputs: compute the loss from the outputs passed to loss_fn")
        unused = [n for (n, p), gp in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), grad)
                  if gp is None]
        if unused:
            raise ValueError(f"trainable parameters {unused[:5]} do not influence the loss on this batch; "
                             "freeze them (requires_grad=False) for the measurement")
        m, m_how = _infer_units(loss_fn, out, y, n_units)
        stats = {
            "loss": float(loss.detach()),
            "loss_scale": _sqsum([g]),
            "grad_norm_sq": _sqsum(grad),
            "n_units": m, "n_units_how": m_how, "n_samples": int(out.shape[0]),
            "n_outputs": int(out[0].numel()),
        }
        ns, se, vals, exact_layer = _network_scale(model, out, taps, x, estimator, n_probes, gen,
                                                   backend, chunk_size, params, exact_output_layer)
        stats.update(network_scale=ns, network_scale_se=se, network_scale_probes=vals,
                     exact_output_layer=exact_layer)
        if bands:
            from bandscope.torch.haar import haar_band_project

            if out.dim() != 4:
                raise ValueError(f"band-resolved LNP needs image outputs (N, C, H, W), got {tuple(out.shape)}")
            parts = haar_band_project(g.detach())
            bdot, bsq, bls = [], [], []
            for gi in parts:
                gpi = torch.autograd.grad(out, params, gi, retain_graph=True)
                bdot.append(sum(_dot(a, b) for a, b in zip(gpi, grad)))
                bsq.append(_sqsum(gpi))
                bls.append(_sqsum([gi]))
            stats.update(band_grad_dot=bdot, band_grad_norm_sq=bsq, band_loss_scale=bls)
    stats["grad"] = [t.detach() for t in grad]
    return stats


def measure_lnp(
    model: nn.Module,
    loss_fn: Callable,
    batch_a,
    batch_b=None,
    *,
    network_scale: str = DEFAULT_ESTIMATOR,
    n_probes: int = 2,
    n_units=None,
    n_units_b=None,
    bands: bool = False,
    backend: str = "hooks",
    seed=None,
    exact_output_layer: bool = True,
    chunk_size: int | None = None,
) -> xr.Dataset:
    """LNP statistics of one step: ℒ, 𝒩, ||∇L||², P (and the cross terms with a second batch).

    Parameters
    ----------
    model : nn.Module
        Evaluated as it is (train or eval mode). Left exactly as found: parameters, ``.grad``,
        modes, buffers (BatchNorm running statistics) and the global torch RNG state.
    loss_fn : callable
        ``loss_fn(outputs, targets) -> scalar`` with the user's own reduction; statistics are
        for this loss as reduced ("raw").
    batch_a, batch_b : (inputs, targets)
        Update batch A and optional evaluation batch B (spectral reach appendix A.1, B.2).
    network_scale : {"hutchinson", "batch-hutchinson", "exact"}
        Estimator of 𝒩 = Tr K (module docstring; default chosen by ``benchmarks/bench_lnp.py``).
    n_probes : int
        Rademacher probes per batch for the Hutchinson estimators (≥ 2 gives a standard error).
        Default 2: on the paper's CNN autoencoder (32×32, batch 32) ≈2 training steps per
        measurement at 3–5 % relative std of 𝒩 (``benchmarks/bench_lnp.py``).
    n_units, n_units_b : int, str or callable, optional
        Loss-reduction unit counts M (A.2): inferred for torch loss modules (MSELoss mean: all
        elements; CrossEntropyLoss mean: non-ignored targets, i.e. tokens); otherwise required:
        an int, ``"samples"``, ``"elements"``, ``"targets"``, ``"sum"`` or ``f(outputs, targets)``.
    bands : bool
        Add the Haar-band split (image outputs, an MSE-type loss): ``band_grad_dot`` = ∇L_i·∇L
        (sums to ||∇L||²), ``band_loss_scale`` = ||g_i||², ``band_grad_norm_sq`` = ||Jᵀg_i||²
        and ``band_spectral_position`` P_i = ||Jᵀg_i||² / (||g_i||² 𝒩), on dim ``band``.
    backend : {"hooks", "vmap"}
        Per-sample norms by layer handlers (fast; raises naming an unsupported layer) or by
        torch.func (any layer; no train-mode dropout).
    seed : int, torch.Generator or None
        Probe randomness (a private generator; the global RNG is never used).
    exact_output_layer : bool
        Hutchinson estimators (hooks backend): take the output layer's share of 𝒩 exactly when
        the output is an elementwise function of its last Linear/Conv/ConvTranspose layer
        (``_LayerTaps.output_layer_exact``) and probe only the other layers. Still unbiased;
        removes the output layer's (often dominant) probe variance. The layer used is named in
        ``attrs["exact_output_layer"]`` ("" if none).

    Returns
    -------
    xarray.Dataset
        Scalars ``loss``, ``loss_scale``, ``network_scale``, ``network_scale_se``,
        ``grad_norm_sq``, ``spectral_position``, ``spectral_position_se``, the ``*_norm``
        batch-size-normalised scales (unit counts in attrs ``n_units``/``n_units_b``), and
        with batch B ``loss_b``, ``loss_scale_b``, ``network_scale_b``, ``grad_norm_sq_b``,
        ``grad_dot``, ``spectral_position_cross``.

    Examples
    --------
    >>> _ = torch.manual_seed(0); net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    >>> ds = measure_lnp(net, nn.CrossEntropyLoss(), (x, y), network_scale="exact")
    >>> 0 < float(ds.spectral_position) <= 1
    True
    """
    if network_scale not in ESTIMATORS:
        raise ValueError(f"network_scale must be one of {ESTIMATORS}, got {network_scale!r}")
    if backend not in ("hooks", "vmap"):
        raise ValueError(f"backend must be 'hooks' or 'vmap', got {backend!r}")
    n_probes = int(n_probes)
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    gen = _make_generator(seed)
    kw = dict(estimator=network_scale, n_probes=n_probes, gen=gen, backend=backend, chunk_size=chunk_size,
              exact_output_layer=bool(exact_output_layer))
    with _preserved(model):
        sa = _one_batch(model, loss_fn, batch_a, "a", bands=bands, n_units=n_units, **kw)
    sb = None
    if batch_b is not None:
        with _preserved(model):
            sb = _one_batch(model, loss_fn, batch_b, "b", bands=False, n_units=n_units_b, **kw)
        grad_dot = sum(_dot(a, b) for a, b in zip(sa["grad"], sb["grad"]))
    ds = lnp_components(
        sa["loss_scale"], sa["network_scale"], sa["grad_norm_sq"], n_units=sa["n_units"],
        **({} if sb is None else dict(grad_dot=grad_dot, loss_scale_b=sb["loss_scale"],
                                      network_scale_b=sb["network_scale"], n_units_b=sb["n_units"])),
    )
    se_attrs = {"long_name": "standard error of the network-scale estimate",
                "definition": "0 for exact; Hutchinson: over probes (needs n_probes >= 2), else NaN"}
    ds["loss"] = ((), sa["loss"], {"long_name": "loss on batch A as reduced by loss_fn"})
    ds["network_scale_se"] = ((), sa["network_scale_se"], se_attrs)
    rel = sa["network_scale_se"] / sa["network_scale"] if sa["network_scale"] > 0 else math.nan
    ds["spectral_position_se"] = ((), abs(float(ds.spectral_position)) * rel, {
        "long_name": "standard error of P from the network-scale estimate (first order)"})
    if sb is not None:
        ds["loss_b"] = ((), sb["loss"], {"long_name": "loss on batch B as reduced by loss_fn"})
        ds["grad_norm_sq_b"] = ((), sb["grad_norm_sq"], {"long_name": "||grad L_B||^2"})
        ds["network_scale_b_se"] = ((), sb["network_scale_se"], se_attrs)
        pb = lnp_components(sb["loss_scale"], sb["network_scale"], sb["grad_norm_sq"])
        ds["spectral_position_b"] = ((), float(pb.spectral_position),
                                     {"long_name": "spectral position P of batch B (self)"})
    if bands:
        from bandscope.run import band_resolutions

        nb = len(sa["band_grad_dot"])
        bls = np.asarray(sa["band_loss_scale"])
        bsq = np.asarray(sa["band_grad_norm_sq"])
        with np.errstate(divide="ignore", invalid="ignore"):
            pi = np.where(bls > 0, bsq / (bls * sa["network_scale"]), np.nan)
        ds = ds.assign_coords(band=("band", band_resolutions(nb), {"units": "pixels per side"}))
        ds["band_grad_dot"] = ("band", np.asarray(sa["band_grad_dot"]), {
            "long_name": "grad L_i . grad L (linear decrease of the step, band i)",
            "definition": "J^T g_i . J^T g with g_i the Haar projection of dL/df; sums to grad_norm_sq"})
        ds["band_grad_norm_sq"] = ("band", bsq, {"long_name": "||J^T g_i||^2"})
        ds["band_loss_scale"] = ("band", bls, {"long_name": "||g_i||^2 (sums to loss_scale)"})
        ds["band_spectral_position"] = ("band", pi, {
            "long_name": "per-band spectral position P_i", "units": "1",
            "definition": "||J^T g_i||^2 / (||g_i||^2 network_scale) (LNP.md, band-resolved)"})
    ds.attrs.update(
        estimator=network_scale, backend=backend, n_probes=n_probes,
        n_units=sa["n_units"], n_units_how=sa["n_units_how"], n_samples=sa["n_samples"],
        n_outputs=sa["n_outputs"], exact_output_layer=sa["exact_output_layer"],
        batchnorm="training-mode BatchNorm uses the batch statistics held constant; running stats untouched",
        definition="LNP decomposition, spectral reach section 3 / appendix A; docs/lnp.md",
    )
    if sb is not None:
        ds.attrs.update(n_units_b=sb["n_units"], n_units_b_how=sb["n_units_how"], n_samples_b=sb["n_samples"])
    return ds
