"""Verify the hooks path once per model and input signature against autograd on single samples, in the measured mode.

On two or three samples, the per-sample gradients of every parameter from the captured calls must
sum to autograd's batch gradient and equal autograd's gradients of single samples, and the fast
squared-norm route must equal their squared norms; a forward that draws random numbers outside
``nn.Dropout`` or whose samples interact is refused first (no backend can measure it).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..checks import (
    NotPerSampleError,
    agrees,
    check_tolerance,
    dropout_off,
    first_mixing_module,
    random_draw,
    random_message,
)
from ..inputs import select_output, take
from .capture import Taps
from .layout import Plan

__all__ = ["verify_taps", "mixing_message"]


def mixing_message(model: nn.Module, at: tuple[str, str] | None) -> str:
    """Why a model whose samples interact has no per-sample gradients, naming where they start to."""
    where = f"module {at[0]!r} ({at[1]}) is the first whose output" if at else "the model's output"
    mode = "training" if any(mod.training for mod in model.modules()) else "eval"
    return (f"samples interact in the mode the model is measured in ({mode} mode): {where} for one sample "
            "depends on the other samples of the batch (e.g. a normalisation with batch statistics written by "
            "hand, x - x.mean(0), attention across the batch). Per-sample gradients, and so the network scale "
            "Σ_n ||J_n||², are not defined for it (with either backend); measure it in the mode where it is a "
            "per-sample function (e.g. model.eval()), or use estimator='batch-hutchinson' with "
            "exact_output_layer=False, which estimates the trace of the batch's kernel without them")


def verify_taps(taps: Taps, model: nn.Module, x: object, n: int, expand: Plan, gen: torch.Generator) -> None:
    """The one-time check of the hooks path on 2–3 samples, in the mode the model is measured in.

    Run after the measured forward (a training-mode BatchNorm is then frozen with the measured
    batch's statistics), with the modes as measured except ``nn.Dropout`` layers (off: their
    masks are elementwise and kept from the measured forward). In this order it refuses

    1. a forward that draws random numbers outside ``nn.Dropout`` (:func:`bandscope.torch.lnp.checks.random_draw`)
       whatever its mode; a module that draws only in training mode (functional dropout, drop
       path, SpecAugment) is verified in eval mode, like ``nn.Dropout``, with a warning, and
       measured as it ran;
    2. a model whose output for one sample depends on the others (naming the first module
       where it does, :func:`bandscope.torch.lnp.checks.first_mixing_module`);
    3. per-sample gradients whose sum over the samples is not autograd's batch gradient (the
       invariant every per-sample decomposition satisfies);
    4. per-sample gradients that differ from autograd on single samples;
    5. per-sample squared norms of the measurement's own route (ghost norms) that differ from
       the squared norms of the per-sample gradients.

    1 and 2 raise :class:`.checks.NotPerSampleError` (no backend can measure the model as it
    is); 3–5 ``NotImplementedError`` naming the parameters.
    """
    m = 2 if n != 2 else 3
    xs = take(x, torch.arange(m) % n)
    names: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.requires_grad:
            names.setdefault(id(p), name)
    params = {i: p for i, p in ((id(p), p) for p in model.parameters()) if p.requires_grad}
    kept = (taps.calls, taps.subs, taps.shape0, taps.shared, taps.n)
    box: dict[str, torch.Tensor] = {}

    def batched() -> None:
        with taps.capture(m, expand):
            box["out"] = select_output(model(xs))

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
            _, acc = taps.accumulate(out, cot, force_grads=True)
            fast = taps.per_sample_sq_norms(out, cot)
            whole = torch.autograd.grad(out, list(params.values()), cot, retain_graph=True, allow_unused=True)
            single = []
            for i in range(m):
                xi = take(xs, torch.tensor([i]))
                oi = select_output(model(xi))
                if not (torch.isfinite(oi).all() and torch.isfinite(out[i]).all()):
                    return  # non-finite model or inputs: the measurement reports NaN with the reason
                if oi.shape[1:] != out.shape[1:] or not agrees(oi[0].detach(), out[i].detach(), tol):
                    def alone(xi: object = xi) -> object:
                        return model(xi)

                    at = first_mixing_module(model, lambda: model(xs), alone, i, m, tol)
                    raise NotPerSampleError(mixing_message(model, at))
                gi = torch.autograd.grad(oi, list(params.values()), cot[i:i + 1], allow_unused=True)
                single.append(gi)
    finally:
        taps.calls, taps.subs, taps.shape0, taps.shared, taps.n = kept
        for _, modes in quiet.values():
            for mod, t in modes.items():
                mod.training = t
    if quiet:
        drew = [f"{w[0]!r} ({w[1]})" for w, _ in quiet.values()]
        warnings.warn(
            f"measure_lnp: the training-mode forward of {', '.join(drew)} draws random numbers outside "
            "nn.Dropout (functional dropout, drop path, random masking): the layer hooks measure the forward "
            "as it ran (its draws held fixed, like nn.Dropout's masks) and were verified with those modules "
            "in eval mode; a random op that mixes samples there (mixup inside the forward) would not be "
            "seen. Call model.eval() to measure without the random draws", stacklevel=5)
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
