"""The slow obvious oracle of the LNP tests: the explicit eNTK K = J Jᵀ of the whole batch.

J (N·O, P) comes from ``torch.func.jacrev`` on the model as a function of its trainable
parameters (frozen ones and buffers held fixed, tied weights kept tied), the output gradient g
from autograd on the loss as given, and ℒ, 𝒩, ||∇L||², P (and the cross terms) from
:func:`bandscope.lnp.kernel_lnp` on K and g. Nothing here uses the hooks or vmap routes it checks.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from bandscope.lnp import kernel_lnp
from bandscope.torch.lnp.taps import model_output


def jacobian(model, x) -> np.ndarray:
    """J = ∂f/∂θ of the whole batch's output, (N·O, P), by torch.func.jacrev."""
    from torch.func import functional_call, jacrev

    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def f(p):
        return model_output(functional_call(model, ({**p, **frozen}, buffers), (x,), tie_weights=True))

    jac = jacrev(f)(params)
    n_out = f(params).numel()
    return torch.cat([j.reshape(n_out, -1) for j in jac.values()], 1).detach().numpy()


def output_grad(model, loss_fn, x, y) -> np.ndarray:
    """g = ∂L/∂f of the loss as given, flattened."""
    out = model_output(model(x)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(out, y), out)
    return g.reshape(-1).numpy()


def kernel_oracle(model, loss_fn, a, b=None, *, eval_mode: bool = False) -> dict:
    """LNP statistics of batch A (and the cross terms with batch B) from the explicit eNTK.

    ``eval_mode``: measure a copy in eval mode (layers whose training mode is random, such as
    the dropout of ``nn.TransformerEncoderLayer``)."""
    model = copy.deepcopy(model)
    if eval_mode:
        model.eval()
    ja, ga = jacobian(model, a[0]), output_grad(model, loss_fn, *a)
    if b is None:
        return kernel_lnp(ja @ ja.T, ga)
    jb, gb = jacobian(model, b[0]), output_grad(model, loss_fn, *b)
    return kernel_lnp(ja @ ja.T, ga, jb @ ja.T, gb, jb @ jb.T)


def lm_ce(logits, y):
    """Token cross-entropy of (N, T, V) logits, as a plain function (mean over tokens)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
