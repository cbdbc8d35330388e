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

Layout (as opacus' ``grad_sample/<layer>.py``): :mod:`.registry` holds the table, the lookup along
the class hierarchy and the public registration; each family module holds its rules with their
registration beside them (:mod:`.linear`, :mod:`.conv`, :mod:`.conv_transpose`, :mod:`.embedding`,
:mod:`.norm`, :mod:`.attention`, :mod:`.activation`, :mod:`.hf` for transformers' types);
:mod:`.common` the arithmetic they share; :mod:`.vmap` the rule for any per-sample layer. Importing
this package imports every family module, which registers the built-in layer types.
"""
from __future__ import annotations

# the family modules register their layer types on import (the registry's order is not a contract)
from . import (  # noqa: F401
    activation,  # nn.PReLU
    attention,  # nn.MultiheadAttention
    conv,  # nn.Conv1d, nn.Conv2d
    conv_transpose,  # nn.ConvTranspose1d, nn.ConvTranspose2d
    embedding,  # nn.Embedding
    hf,  # transformers' Conv1D and RMSNorms, once transformers is imported
    linear,  # nn.Linear
    norm,  # LayerNorm, RMSNorm, GroupNorm, BatchNorm
)
from .common import memo_keep
from .registry import (
    _REGISTRY,
    LayerHandler,
    lookup_handler,
    overriding_subclass,
    register_lnp_handler,
    registered_layer_types,
    registry_generation,
)
from .vmap import vmap_handler

__all__ = ["LayerHandler", "register_lnp_handler", "lookup_handler", "vmap_handler",
           "registered_layer_types", "overriding_subclass", "registry_generation", "memo_keep", "_REGISTRY"]
