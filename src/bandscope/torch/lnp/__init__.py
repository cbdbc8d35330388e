"""LNP statistics of one training step, measured with torch (spectral reach §3, appendix B.1).

:func:`measure_lnp` returns ℒ = ||dL/df||², 𝒩 = Tr K = Σ_n ||J_n||_F², ||∇L||², P and (with a
second batch) ∇L_A·∇L_B and P_AB, raw and batch-size normalised, optionally split by Haar band.
The definitions and the estimators are written out in ``docs/lnp.md``; the arithmetic on the
statistics is :func:`bandscope.lnp.lnp_components`.

Estimators of 𝒩 (``estimator=``, :class:`~bandscope.lnp.options.LNPOptions`)

``"hutchinson"`` (default)
    Per-sample Hutchinson: one Rademacher vector u_n per sample and probe, 𝒩 ≈ Σ_n ||J_nᵀu_n||²
    averaged over probes. One backward pass per probe that stops at the layer outputs (no
    weight gradients); the per-sample squared gradient norms are formed from layer inputs and
    output gradients by a registry of layer handlers (:mod:`.handlers`; Linear, Conv1d/2d,
    ConvTranspose1d/2d, Embedding, LayerNorm, RMSNorm, GroupNorm, BatchNorm, MultiheadAttention,
    transformers' Conv1D and LlamaRMSNorm, plus :func:`register_lnp_handler`), with free
    parameters, tied weights and broadcast lookups handled by :mod:`.taps`.
    ``backend="vmap"`` computes the same per-sample norms with torch.func (any layer, slower);
    ``backend="auto"`` (default) uses the handlers where they cover the model, else vmap, with one
    warning naming the layer (docs/lnp.md, "Choosing the backend").
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
import dataclasses
import math
import re
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from bandscope.errors import BandscopeInputError
from bandscope.lnp import band_spectral_position, lnp_components, position_standard_error
from bandscope.lnp.options import ESTIMATOR_NAMES, ESTIMATOR_RENAMED, LNPOptions, legacy_estimator

from .checks import NotPerSampleError, check_tolerance
from .estimators import ESTIMATOR_TABLE, Context, default_probes, vmap_per_sample
from .handlers import LayerHandler, register_lnp_handler, registered_layer_types, vmap_handler
from .inputs import Adapted, batch_size, is_batch
from .results import BatchStatistics
from .state import freeze_batchnorm_hooks, make_generator, preserved
from .taps import LayerTaps, _signature, cache_owner, model_output, single_tensor_inputs_message
from .taps.layout import Plan
from .vmap_guard import check_vmap_route, vmap_errors

__all__ = ["measure_lnp", "LNPOptions", "per_sample_grad_norms", "register_lnp_handler", "vmap_handler", "LayerHandler",
           "registered_layer_types", "ESTIMATORS", "ESTIMATOR_TABLE", "BACKENDS", "InvariantError",
           "NotPerSampleError"]

ESTIMATORS = ESTIMATOR_NAMES
DEFAULT_ESTIMATOR = "hutchinson"
BACKENDS = ("auto", "hooks", "vmap")

#: user model -> {signature: why the hooks could not cover it} for backend="auto" (weak keys: a cache
#: of decisions that dies with the model, never a result)
_AUTO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: a Hutchinson estimate of 𝒩 is refused by the Cauchy–Schwarz check only when ||∇L||² exceeds ℒ·(𝒩 + k·SE)
CAUCHY_SCHWARZ_SES = 10.0


class InvariantError(NotImplementedError):
    """A measurement broke an invariant that every correct result satisfies (named in the message)."""


def check_invariants(stats: BatchStatistics, estimator: str, dtype: torch.dtype) -> None:
    """Refuse a result that breaks an invariant of any correct one (docs/lnp.md, "Invariants").

    * 𝒩 > 0 whenever ||∇L||² > 0 (the output depends on the parameters, so some J_n ≠ 0);
    * Cauchy–Schwarz ||∇L||² = ||Jᵀg||² ≤ ||g||² ||J||_F² = ℒ·𝒩: exactly (to the float tolerance)
      for ``"exact"``; for the Hutchinson estimates, ℒ·(𝒩 + 10 SE) (skipped with one probe, which
      gives no SE).

    The third invariant, Σ_n per-sample gradients = the batch gradient, is checked on the verified
    samples by the one-time verification (:meth:`.taps.LayerTaps.verify`).
    """
    g2, ls, ns, se = stats.grad_norm_sq, stats.loss_scale, stats.network_scale, stats.network_scale_se
    if not all(math.isfinite(v) for v in (g2, ls, ns)):
        return  # non-finite: reported as NaN with the reason
    if g2 > 0 and not ns > 0:
        raise InvariantError(
            f"invariant failed (network scale > 0): ||grad L||^2 = {g2:.6g} > 0, so the output depends on the "
            f"parameters and N = sum_n ||J_n||_F^2 > 0, but the measurement gave N = {ns:.6g}: the per-sample "
            "route missed the parameters' use (e.g. a forward the layer hooks do not see, such as a compiled "
            "submodule)")
    tol = check_tolerance(dtype)
    if estimator == "exact":
        bound = ls * ns
    elif math.isfinite(se):
        bound = ls * (ns + CAUCHY_SCHWARZ_SES * se)
    else:
        return
    if g2 > bound * (1 + tol) + 1e-300:
        raise InvariantError(
            f"invariant failed (Cauchy-Schwarz, ||grad L||^2 <= L * N): ||grad L||^2 = {g2:.6g} but "
            f"L * N = {ls * ns:.6g} (L = {ls:.6g}, N = {ns:.6g}"
            + ("" if estimator == "exact" else f", allowing {CAUCHY_SCHWARZ_SES:g} standard errors of N")
            + "): the per-sample gradient norms are too small, the network scale is wrong")


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """Σ a·b as a Python float (BLAS dot in the tensors' dtype)."""
    return float(torch.dot(a.reshape(-1), b.reshape(-1)))


def _sqsum(ts: Iterable[torch.Tensor]) -> float:
    return sum(_dot(t, t) for t in ts)


# --------------------------------------------------------------------------------------------
# units
# --------------------------------------------------------------------------------------------
_ELEMENTWISE_FNS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.binary_cross_entropy,
                    F.binary_cross_entropy_with_logits)
_CLASS_FNS = (F.cross_entropy, F.nll_loss)


def _infer_units(loss_fn: Callable[..., Any], out: torch.Tensor, y: Any, n_units: Any,
                 arg: str) -> tuple[float, str]:
    """(M, how it was found); M = NaN with the reason when it cannot be known."""
    if n_units is not None:
        if callable(n_units):
            return float(n_units(out, y)), "n_units(outputs, targets)"
        if isinstance(n_units, str):
            table = {"samples": out.shape[0], "elements": out.numel(), "targets": y.numel(), "sum": 1}
            if n_units not in table:
                raise ValueError(f"{arg} must be an int, a callable or one of {sorted(table)}, got {n_units!r}")
            return float(table[n_units]), n_units
        return float(n_units), "given"
    red = getattr(loss_fn, "reduction", "mean" if loss_fn in _ELEMENTWISE_FNS + _CLASS_FNS else None)
    if isinstance(loss_fn, (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss,
                            nn.BCEWithLogitsLoss)) or loss_fn in _ELEMENTWISE_FNS:
        return (float(out.numel()), "elements (element-wise mean)") if red == "mean" else (1.0, "sum")
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)) or loss_fn in _CLASS_FNS:
        if red == "sum":
            return 1.0, "sum"
        ign = getattr(loss_fn, "ignore_index", -100)
        if y.dtype in (torch.long, torch.int, torch.int32, torch.int64):
            w = getattr(loss_fn, "weight", None)
            if w is not None:  # a weighted mean divides by the summed weights of the targets
                keep = y != ign
                return float(w.to(torch.float64)[y[keep]].sum()), "summed class weights of the targets not ignored"
            return float((y != ign).sum()), "targets (tokens / samples not ignored)"
        return float(y.numel() // max(1, y.shape[1] if y.dim() > 1 else 1)), "targets"
    return math.nan, (f"the loss-reduction unit count M of {loss_fn!r} cannot be inferred (the raw "
                      f"statistics and P do not need it); pass {arg}= an int, 'samples', 'elements', "
                      "'targets', 'sum' or a callable (outputs, targets) -> M for the normalised scales")


# --------------------------------------------------------------------------------------------
# one batch
# --------------------------------------------------------------------------------------------
def _split(batch: object, which: str) -> tuple[Any, Any]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(f"batch_{which} must be (inputs, targets), got {type(batch).__name__}")
    return batch[0], batch[1]


def _forward(model: nn.Module, x: Any, backend: str,
             need_taps: bool) -> tuple[torch.Tensor, LayerTaps | None, Plan | None]:
    """The measured forward: (outputs, taps, their layout plan); the taps are to be verified (``verify_once``)."""
    bn_handles = freeze_batchnorm_hooks(model)
    try:
        with torch.enable_grad():
            if not need_taps:
                return model_output(model(x)), None, None
            out, taps = LayerTaps.run(model, x)  # check -> plan -> capture
            return out, taps, taps.layout
    finally:
        for h in bn_handles:
            h.remove()


def _refuse_reentrant_checkpoint(out: torch.Tensor, model: nn.Module | None = None, x: Any = None,
                                 limit: int = 100_000) -> None:
    """Raise naming ``use_reentrant=False`` if ``out``'s graph holds a reentrant activation checkpoint
    (or, given ``model`` and ``x``, if a forward warns that a reentrant checkpoint's inputs need no
    gradient: its output is then cut from the parameters inside it)."""
    seen: set[Any] = set()
    stack = [out.grad_fn]
    found = False
    while stack and len(seen) < limit and not found:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        found = "CheckpointFunction" in fn.name()
        stack.extend(f for f, _ in fn.next_functions)
    if not found and model is not None:
        with warnings.catch_warnings(record=True) as caught, torch.enable_grad():
            warnings.simplefilter("always")
            model(x)
        found = any("None of the inputs have requires_grad=True" in str(w.message) for w in caught)
    if found:
        from bandscope.errors import BandscopeInputError

        raise BandscopeInputError(
                "the model uses reentrant activation checkpointing (torch.utils.checkpoint.checkpoint with "
                "use_reentrant=True, or a library default): its recomputation runs inside backward() only, so "
                "torch.autograd.grad, and with it every gradient statistic, cannot reach the parameters inside "
                "the checkpointed blocks; pass use_reentrant=False (transformers: model.gradient_checkpointing_"
                "enable(gradient_checkpointing_kwargs={'use_reentrant': False})), which measure_lnp supports")


def _one_batch(model: nn.Module, loss_fn: Callable, batch: object, which: str, options: LNPOptions, *,
               backend: str, gen: torch.Generator, keep_band_grads: bool = False) -> BatchStatistics:
    """The statistics of one batch (``which``: ``"a"`` or ``"b"``) measured with ``backend`` (``"hooks"`` or
    ``"vmap"``, the route ``options.backend`` chose); every other option is read from ``options`` by its own
    name."""
    estimator, n_probes, chunk_size = options.estimator, options.n_probes, options.chunk_size
    exact_output_layer = options.exact_output_layer
    bands = options.bands and which == "a"  # the band split is of batch A
    n_units = options.n_units if which == "a" else options.n_units_b
    x, y = _split(batch, which)
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    need_taps = backend == "hooks" and (estimator != "batch-hutchinson" or exact_output_layer)
    if (need_taps or (backend == "vmap" and estimator != "batch-hutchinson")) and not is_batch(x):
        raise TypeError(single_tensor_inputs_message(x))
    out, taps, expand = _forward(model, x, backend, need_taps)
    with torch.enable_grad():
        loss = loss_fn(out, y)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
        if not loss.requires_grad:
            raise ValueError("loss_fn(outputs, targets) does not depend on the model's outputs (its value "
                             "needs no gradient); LNP statistics are about the loss as a function of the "
                             "outputs: compute the loss from the outputs passed to loss_fn")
        _refuse_reentrant_checkpoint(out)
        *grad, g = torch.autograd.grad(loss, params + [out], retain_graph=True, allow_unused=True)
        if g is None:
            raise ValueError("loss_fn(outputs, targets) does not depend on the model's outputs (its gradient "
                             "with respect to them does not exist); LNP statistics are about the loss as a "
                             "function of the outputs: compute the loss from the outputs passed to loss_fn")
        unused = [n for (n, p), gp in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), grad)
                  if gp is None]
        if unused:
            _refuse_reentrant_checkpoint(out, model, x)
            raise ValueError(f"trainable parameters {unused[:5]} do not influence the loss on this batch; "
                             "freeze them (requires_grad=False) for the measurement")
        if taps is not None:
            taps.verify_once()  # verify -> record, once per model and input signature
        notes: list[str] = []
        if backend == "vmap" and estimator != "batch-hutchinson":
            check_vmap_route(model, x, out, exact=estimator == "exact", gen=torch.Generator().manual_seed(0),
                             chunk_size=chunk_size, notes=notes)
        m, m_how = _infer_units(loss_fn, out, y, n_units, "n_units" if which == "a" else "n_units_b")
        if n_probes is None:
            n_probes = default_probes(int(out.shape[0]))
        ctx = Context(model, out, taps, x, n_probes, gen, backend, chunk_size, params, exact_output_layer, notes)
        with vmap_errors() if backend == "vmap" else contextlib.nullcontext():
            ns = ESTIMATOR_TABLE[estimator](ctx)
        stats = BatchStatistics(
            loss=float(loss.detach()), loss_scale=_sqsum([g]), grad_norm_sq=_sqsum(grad), n_units=m, n_units_how=m_how,
            n_samples=int(out.shape[0]), n_outputs=int(out[0].numel()), n_probes=n_probes,
            network_scale=ns.estimate, network_scale_se=ns.se, network_scale_probes=ns.probes,
            exact_output_layer=ns.exact_layer, network_scale_se_dof=ns.se_dof, backend_note="; ".join(ctx.notes),
            grad=[t.detach() for t in grad])
        check_invariants(stats, estimator, out.dtype)
        if bands:
            from bandscope.torch.haar import haar_band_project

            if out.dim() != 4:
                raise ValueError(f"band-resolved LNP needs image outputs (N, C, H, W), got {tuple(out.shape)}")
            parts = haar_band_project(g.detach())
            bdot, bsq, bls, bgrads = [], [], [], []
            for gi in parts:
                gpi = torch.autograd.grad(out, params, gi, retain_graph=True)
                bdot.append(sum(_dot(a, b) for a, b in zip(gpi, grad)))
                bsq.append(_sqsum(gpi))
                bls.append(_sqsum([gi]))
                if keep_band_grads:  # the band gradients are all-reduced across ranks
                    bgrads.append([t.detach() for t in gpi])
            stats = dataclasses.replace(stats, band_grad_dot=bdot, band_grad_norm_sq=bsq, band_loss_scale=bls,
                                        band_grads=bgrads if keep_band_grads else None)
    return stats


def measure_lnp(
    model: nn.Module,
    loss_fn: Callable,
    batch_a: object,
    batch_b: object = None,
    *,
    options: LNPOptions | None = None,
    seed: int | torch.Generator | None = None,
    estimator: str = DEFAULT_ESTIMATOR,
    n_probes: int | None = None,
    n_units: object = None,
    n_units_b: object = None,
    bands: bool = False,
    backend: str = "auto",
    output: object = None,
    exact_output_layer: bool = True,
    chunk_size: int | None = None,
    distributed: bool | None = None,
    process_group: object = None,
    network_scale: str | None = None,
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
    options : bandscope.lnp.options.LNPOptions, optional
        Every option below but ``seed`` in one validated object (the documented way); the
        keywords below are its fields, kept for existing calls. Give either ``options`` or the
        keywords: a keyword set away from its default beside ``options`` is refused.
    estimator : {"hutchinson", "batch-hutchinson", "exact"}
        Estimator of 𝒩 = Tr K (module docstring; default chosen by ``benchmarks/bench_lnp.py``).
    network_scale : str, optional
        Deprecated spelling of ``estimator`` (it collides with the output statistic
        ``network_scale``); still accepted, with a ``DeprecationWarning``.
    n_probes : int, optional
        Rademacher probes per batch for the Hutchinson estimators (≥ 2 gives a standard error).
        Default ``max(2, 1 + ceil(32 / N))`` for a batch of N samples (:func:`.estimators.default_probes`):
        2 from N = 32 on (on the paper's CNN autoencoder, 32×32, batch 32: ≈2 training steps per
        measurement at 3–5 % relative std of 𝒩, ``benchmarks/bench_lnp.py``), more at small N so
        that the standard error rests on N·(n_probes − 1) ≥ 32 degrees of freedom (at N = 4 and 2
        probes, |z| > 5 happened in 1–2.5 % of calls; ``benchmarks/calib_lnp_se.py``). Under
        ``torch.distributed``: 2. The degrees of freedom are in ``attrs["network_scale_se_dof"]``.
    n_units, n_units_b : int, str or callable, optional
        Loss-reduction unit counts M (A.2) of batch A and B, used only for the batch-size
        normalised ``*_norm`` scales. Inferred for torch loss modules and for ``F.mse_loss`` /
        ``F.cross_entropy`` / ``F.nll_loss`` … passed as plain functions (mean: all elements /
        non-ignored targets, i.e. tokens); otherwise the ``*_norm`` values are NaN with the reason
        in ``attrs["n_units_reason"]`` (raw ℒ, 𝒩, ||∇L||², P never need M). An int,
        ``"samples"``, ``"elements"``, ``"targets"`` (``targets.numel()``, ignored ones included),
        ``"sum"`` or ``f(outputs, targets)``. A class-weighted ``nn.CrossEntropyLoss(weight=w)`` /
        ``nn.NLLLoss`` divides by the summed weights of its targets, and that is its M.
    bands : bool
        Add the Haar-band split (image outputs, an MSE-type loss): ``band_grad_dot`` = ∇L_i·∇L
        (sums to ||∇L||²), ``band_loss_scale`` = ||g_i||², ``band_grad_norm_sq`` = ||Jᵀg_i||²
        and ``band_spectral_position`` P_i = ||Jᵀg_i||² / (||g_i||² 𝒩), on dim ``band``.
    backend : {"auto", "hooks", "vmap"}
        Per-sample norms by layer handlers (``"hooks"``: fast; raises naming an unsupported layer)
        or by torch.func (``"vmap"``: any per-sample layer; no train-mode dropout). ``"auto"``
        (default): the hooks where they cover the model; where they refuse and vmap can measure
        it, vmap, with one warning per model naming the layer and the reason. The backend used is
        ``attrs["backend"]``, the reason in ``attrs["hooks_refusal"]``. A model that is not a
        per-sample function as measured (a random forward, samples that interact) is refused by
        every backend (:class:`NotPerSampleError`).
    output : key, int or callable, optional
        Selects the measured tensor from the model's output: ``out[output]`` (a key of a dict or
        ``ModelOutput``, an index of a tuple) or ``output(out)``. Default: the tensor returned, or
        its ``.logits``. Inputs may be a tensor or a mapping of tensors (a dict, a transformers
        ``BatchEncoding``), passed as ``model(**inputs)`` and split per sample along dim 0 of every
        tensor whose first dim is the batch size.
    seed : int, torch.Generator or None
        Probe randomness (a private generator; the global RNG is never used). Under
        ``torch.distributed`` an int seed is combined with the rank, so the ranks draw
        independent probes (a Generator is used as given: give each rank its own).
    exact_output_layer : bool
        Hutchinson estimators (hooks backend): take the output layer's share of 𝒩 exactly when
        the output is an elementwise function of its last Linear/Conv/ConvTranspose layer
        (``_LayerTaps.output_layer_exact``) and probe only the other layers. Still unbiased;
        removes the output layer's (often dominant) probe variance. The layer used is named in
        ``attrs["exact_output_layer"]`` ("" if none).

    distributed : bool or None
        Under ``torch.distributed`` with each rank holding a shard of the batch, reduce to the
        statistics of the global batch (loss = mean of the ranks' losses, as DDP descends;
        ``bandscope.torch.lnp.distributed``). ``None`` (default): whenever a process group is
        initialised with more than one process. Every rank must call ``measure_lnp``. A
        ``DistributedDataParallel`` model is measured through its ``.module``; a model sharded
        with FSDP2 (``fully_shard``) with its parameters all-gathered for the measurement (one
        full copy of the parameters and of their gradient per rank; the sharded parameters and
        their ``.grad`` are left as found). ``bands=True`` is reduced too (the band gradients are
        all-reduced). FSDP1 (``FullyShardedDataParallel``) and tensor-parallel DTensors raise.
    process_group : optional
        The group to reduce over (default: the world).

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
    >>> ds = measure_lnp(net, nn.CrossEntropyLoss(), (x, y), estimator="exact")
    >>> 0 < float(ds.spectral_position) <= 1
    True
    """
    if network_scale is not None:
        estimator = legacy_estimator(network_scale, estimator, "measure_lnp")
        warnings.warn(ESTIMATOR_RENAMED.format(network_scale), DeprecationWarning, stacklevel=2)
    options = LNPOptions.from_keywords(options, "measure_lnp", {
        "estimator": estimator, "n_probes": n_probes, "n_units": n_units, "n_units_b": n_units_b, "bands": bands,
        "backend": backend, "output": output, "exact_output_layer": exact_output_layer, "chunk_size": chunk_size,
        "distributed": distributed, "process_group": process_group})
    return _measure(model, loss_fn, batch_a, batch_b, options, seed)


def _measure(model: nn.Module, loss_fn: Callable, batch_a: object, batch_b: object, options: LNPOptions,
             seed: int | torch.Generator | None) -> xr.Dataset:
    """:func:`measure_lnp` with its options validated (the one implementation)."""
    for which, b in (("a", batch_a), ("b", batch_b)):
        if b is not None:
            x = _split(b, which)[0]
            if is_batch(x) and batch_size(x) == 0:
                raise BandscopeInputError(f"measure_lnp: batch_{which} is empty (0 samples): the LNP statistics are "
                                          "sums over samples and need at least one; pass a non-empty batch")
    from .distributed import active_world, gathered, probe_seed, reduce_stats

    world = active_world(options.distributed, options.process_group)
    if options.n_probes is None and world > 1:
        # every rank must draw as many probes (their totals are all-reduced)
        options = dataclasses.replace(options, n_probes=2)
    gen = make_generator(probe_seed(seed, world, options.process_group))
    model, measured = _uncompiled(model)
    with gathered(model) as model:
        sa, used, reason = _measure_batch(_adapted(model, batch_a, options.output), loss_fn, batch_a, "a", options,
                                          gen=gen, keep_band_grads=world > 1)
        sb = None
        if batch_b is not None:
            sb, used_b, reason_b = _measure_batch(_adapted(model, batch_b, options.output), loss_fn, batch_b, "b",
                                                  options, gen=gen)
            if used_b != used:
                used, reason = f"{used} (batch A), {used_b} (batch B)", reason or reason_b
    if world > 1:
        sa = reduce_stats(sa, world, options.process_group)
        sb = None if sb is None else reduce_stats(sb, world, options.process_group)
    ds = _dataset(sa, sb, options.bands, options.estimator, used, sa.n_probes)
    ds.attrs.update(world_size=world, backend_requested=options.backend, hooks_refusal=reason,
                    model_measured=measured)
    return ds


def _uncompiled(model: nn.Module) -> tuple[nn.Module, str]:
    """(the module measured, how): a ``torch.compile``'d model through its original module."""
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except ImportError:  # pragma: no cover - torch without dynamo
        return model, "as given"
    if isinstance(model, OptimizedModule):
        model = model._orig_mod
        how = ("the original module of a torch.compile'd model (._orig_mod: the same parameters and buffers, "
               "run uncompiled; hooks and torch.func do not see inside compiled graphs)")
    else:
        how = "as given"
    inner = [name for name, m in model.named_modules() if isinstance(m, OptimizedModule)]
    if inner:
        raise NotImplementedError(
            f"submodules {inner[:5]} are torch.compile'd: the layer hooks and torch.func do not see inside a "
            "compiled graph, so their parameters' per-sample gradients cannot be measured; measure the model "
            "with uncompiled submodules (compile the whole model instead: measure_lnp then uses its "
            "._orig_mod)")
    return model, how


def _adapted(model: nn.Module, batch: object, output: Any) -> nn.Module:
    x = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else None
    if output is None and not isinstance(x, Mapping):
        return model
    return Adapted(model, output)


def _measure_batch(model: nn.Module, loss_fn: Callable, batch: object, which: str, options: LNPOptions, *,
                   gen: torch.Generator, keep_band_grads: bool = False) -> tuple[BatchStatistics, str, str]:
    """(statistics, backend used, why not the hooks) of one batch; ``backend="auto"`` chooses."""
    backend = options.backend
    if backend != "auto":
        with preserved(model):
            return _one_batch(model, loss_fn, batch, which, options, backend=backend, gen=gen,
                              keep_band_grads=keep_band_grads), backend, ""
    x = _split(batch, which)[0]
    owner = cache_owner(model)
    from .handlers import registry_generation

    key = _signature(model, x) + (options.estimator, options.exact_output_layer, registry_generation())
    reason = _AUTO.get(owner, {}).get(key)
    fresh = reason is None
    if fresh:
        state = gen.get_state()
        try:
            with preserved(model):
                return _one_batch(model, loss_fn, batch, which, options, backend="hooks", gen=gen,
                                  keep_band_grads=keep_band_grads), "hooks", ""
        except NotPerSampleError:
            raise
        except NotImplementedError as exc:
            reason = str(exc)
            gen.set_state(state)
    try:
        with preserved(model):
            stats = _one_batch(model, loss_fn, batch, which, options, backend="vmap", gen=gen,
                               keep_band_grads=keep_band_grads)
        if fresh:
            _AUTO.setdefault(owner, {})[key] = reason
            warnings.warn(f"measure_lnp: the layer hooks cannot cover {type(owner).__name__}: {reason}. Measured "
                          "with backend='vmap' (torch.func: the same quantities, slower); pass backend='vmap' to "
                          "choose it, or register a handler for the layer to use the hooks", stacklevel=3)
        return stats, "vmap", reason
    except NotPerSampleError as exc:
        if not fresh:
            raise
        raise NotPerSampleError(f"{exc}. (The layer hooks refused first: {_no_vmap_advice(reason)})") from exc
    except NotImplementedError as exc:
        raise NotImplementedError(
            f"neither backend can measure {type(owner).__name__}. The layer hooks: {_no_vmap_advice(reason)} -- "
            f"The vmap route (torch.func): {_no_hooks_advice(str(exc))}") from exc


_VMAP_ADVICE = re.compile(r"(,| or|;)? (or )?use backend='vmap'|, or by backend='vmap'| or backend='vmap'")


def _no_hooks_advice(msg: str) -> str:
    """A vmap refusal without its advice to use backend='hooks' (quoted once the hooks have refused)."""
    return msg.replace("backend='hooks' with a handler", "a handler").replace(
        "backend='hooks' has a handler for nn.PReLU; for another layer register one", "register a handler")


def _no_vmap_advice(msg: str) -> str:
    """A hooks refusal without its advice to use backend='vmap' (quoted once vmap has refused too)."""
    return _VMAP_ADVICE.sub("", msg)


def _units_or_none(m: float) -> float | None:
    return None if not math.isfinite(m) else m


def _dataset(sa: BatchStatistics, sb: BatchStatistics | None, bands: bool, estimator: str, backend: str,
             n_probes: int | None) -> xr.Dataset:
    """The Dataset of :func:`measure_lnp` from the statistics of batch A (and B); attrs from ``bandscope.schema``.

    ``estimator`` is the estimator of 𝒩 that was used (``LNPOptions.estimator``), written as ``attrs['estimator']``.
    """
    from bandscope import schema

    cross: dict[str, Any] = {}
    if sb is not None:
        cross = dict(grad_dot=sum(_dot(a, b) for a, b in zip(sa.grad, sb.grad)),
                     loss_scale_b=sb.loss_scale, network_scale_b=sb.network_scale,
                     n_units_b=_units_or_none(sb.n_units))
    ds = lnp_components(sa.loss_scale, sa.network_scale, sa.grad_norm_sq, n_units=_units_or_none(sa.n_units),
                        **cross)
    reasons = {}
    for suffix, s in (("", sa), ("_b", sb)):
        if s is None or math.isfinite(s.n_units):
            continue
        reasons[f"n_units{suffix}_reason"] = s.n_units_how
        for var in (f"loss_scale{suffix}_norm", f"network_scale{suffix}_norm"):
            ds[var] = ((), math.nan, {**schema.attrs("lnp", var), "reason": s.n_units_how})
    ds["loss"] = ((), sa.loss, schema.attrs("lnp", "loss"))
    ds["network_scale_se"] = ((), sa.network_scale_se, schema.attrs("lnp", "network_scale_se"))
    ds["spectral_position_se"] = ((), position_standard_error(float(ds.spectral_position), sa.network_scale,
                                                              sa.network_scale_se),
                                  schema.attrs("lnp", "spectral_position_se"))
    if sb is not None:
        ds["loss_b"] = ((), sb.loss, schema.attrs("lnp", "loss_b"))
        ds["grad_norm_sq_b"] = ((), sb.grad_norm_sq, schema.attrs("lnp", "grad_norm_sq_b"))
        ds["network_scale_b_se"] = ((), sb.network_scale_se, schema.attrs("lnp", "network_scale_b_se"))
        pb = lnp_components(sb.loss_scale, sb.network_scale, sb.grad_norm_sq)
        ds["spectral_position_b"] = ((), float(pb.spectral_position), schema.attrs("lnp", "spectral_position_b"))
    if bands:
        from bandscope.run import band_resolutions

        if sa.band_grad_dot is None or sa.band_loss_scale is None or sa.band_grad_norm_sq is None:
            raise RuntimeError("bands=True but batch A was measured without its band split")
        nb = len(sa.band_grad_dot)
        bls = np.asarray(sa.band_loss_scale)
        bsq = np.asarray(sa.band_grad_norm_sq)
        ds = ds.assign_coords(band=("band", band_resolutions(nb), schema.attrs("lnp", "band")))
        ds["band_grad_dot"] = ("band", np.asarray(sa.band_grad_dot), schema.attrs("lnp", "band_grad_dot"))
        ds["band_grad_norm_sq"] = ("band", bsq, schema.attrs("lnp", "band_grad_norm_sq"))
        ds["band_loss_scale"] = ("band", bls, schema.attrs("lnp", "band_loss_scale"))
        ds["band_spectral_position"] = ("band", band_spectral_position(bsq, bls, sa.network_scale),
                                        schema.attrs("lnp", "band_spectral_position"))
    ds.attrs.update(
        estimator=estimator, backend=backend, n_probes=n_probes,
        network_scale_se_dof=sa.network_scale_se_dof, backend_note=sa.backend_note,
        n_units=sa.n_units, n_units_how=sa.n_units_how, n_samples=sa.n_samples,
        n_outputs=sa.n_outputs, exact_output_layer=sa.exact_output_layer,
        batchnorm="training-mode BatchNorm uses the batch statistics held constant; running stats untouched",
        definition="LNP decomposition, spectral reach section 3 / appendix A; docs/lnp.md",
    )
    if sb is not None:
        ds.attrs.update(n_units_b=sb.n_units, n_units_b_how=sb.n_units_how, n_samples_b=sb.n_samples)
    ds.attrs.update(reasons)
    return ds


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
    from .estimators import hooks_exact_per_sample

    with torch.enable_grad():
        if backend == "vmap":
            return vmap_per_sample(model, inputs, cotangent, cotangent is None, None)
        out, taps, _ = _forward(model, inputs, backend, True)
        assert taps is not None  # need_taps=True
        taps.verify_once()
        if cotangent is not None:
            return taps.per_sample_sq_norms(out, cotangent)
        return hooks_exact_per_sample(taps, out)
