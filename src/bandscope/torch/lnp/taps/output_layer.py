"""The output layer's exact share of 𝒩 from the captured calls, when the output is elementwise in its result."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .capture import Taps

__all__ = ["output_layer_exact"]


def output_layer_exact(taps: Taps, out: torch.Tensor, gen: torch.Generator) -> tuple[tuple, torch.Tensor] | None:
    """Exact per-sample ||J_n||_F² of the output layer's parameters, when it can be had cheaply.

    Applies when the last Linear / Conv / ConvTranspose call produces a tensor z of the
    output's shape, its parameters are used nowhere else, and the output is an elementwise
    function of it, f = φ(z) (checked with a Gaussian probe: the vjp of w must equal
    w ⊙ φ'(z)). Then, per sample, ||∂f/∂b||² = Σ_o φ'(z_o)² and ||∂f/∂W||² = Σ_o φ'(z_o)² S_o
    with S_o the squared norm of the input patch feeding o (the layer's own op applied to a²
    with unit weights). Returns ``(call key, per-sample norms)`` or ``None``.
    """
    cands = [c for c in taps.calls if not c.tuple_out and not c.expanded and c.out_dims is None
             and c.taps[0] is not None and c.taps[0].shape == out.shape]
    if not cands:
        return None
    c = max(cands, key=lambda c: c.order)
    name, mod, _, ps = taps.units[c.unit]
    lin = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    if not isinstance(mod, lin) or type(mod) not in lin or any(id(p) in taps.shared for p in ps.values()):
        return None
    if not isinstance(mod, nn.Linear) and (mod.groups != 1 or mod.padding_mode != "zeros"
                                           or isinstance(mod.padding, str)):
        return None
    z = c.taps[0]
    assert z is not None  # a candidate's first tap is its output (filtered above)
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
            kw: dict[str, Any] = dict(stride=mod.stride, padding=mod.padding, dilation=mod.dilation)
            conv: Callable[..., torch.Tensor]
            if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                conv = F.conv1d if len(k) == 1 else F.conv2d
                s = conv(a2, torch.ones(1, cin, *k, dtype=a2.dtype, device=a2.device), **kw)
            else:
                conv = F.conv_transpose1d if len(k) == 1 else F.conv_transpose2d
                s = conv(a2, torch.ones(cin, 1, *k, dtype=a2.dtype, device=a2.device),
                         output_padding=mod.output_padding, **kw)
        total += (phi2 * s).reshape(phi2.shape[0], -1).sum(1, dtype=torch.float64)
    return c.key, total
