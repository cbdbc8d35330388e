"""The table from layer type to its per-sample gradient rule: registration, lookup along the class hierarchy.

Users add their own layer types with :func:`register_lnp_handler` (public, documented in
``docs/lnp.md``); the built-in families (:mod:`.linear`, :mod:`.conv`, ...) register theirs with
:func:`builtin_rule` beside each rule, and rules for layer types of optional libraries with
:func:`defer_registration`, run once the library has been imported by the user.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from .common import sq_of

__all__ = ["LayerHandler", "register_lnp_handler", "lookup_handler", "registered_layer_types",
           "registry_generation", "overriding_subclass", "builtin_rule", "defer_registration"]


@dataclasses.dataclass(frozen=True)
class LayerHandler:
    """Per-sample gradient rule of a layer type (see :mod:`bandscope.torch.lnp.handlers`)."""

    grads: Callable
    sq_norms: Callable | None = None
    params: str = "direct"
    batch_dim: int | str | Callable = 0
    #: ``sq_norms`` also takes ``memo=``: a dict private to one recorded layer call, kept across the
    #: probes of one measurement, for probe-independent intermediates (unfolded inputs, Gram matrices
    #: of the inputs) within the byte budget in ``memo["budget"]`` that all calls of the measurement
    #: share (:func:`.common.memo_keep`); set by the built-in Linear / Conv / ConvTranspose handlers
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
#: registrations of optional libraries' layer types: (name, run) pairs, each run once when it returns True
_DEFERRED: list[tuple[str, Callable[[], bool]]] = []
_DEFERRED_DONE: set[str] = set()


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
    >>> import torch
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


def builtin_rule(*layer_types: type, sq_norms: Callable | None = None, sq_from_grads: bool = False,
                 params: str = "direct", batch_dim: int | str | Callable = 0,
                 memo: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering a built-in ``grads`` rule for ``layer_types`` (as :func:`register_lnp_handler`).

    ``sq_from_grads``: the fast squared norms are the squared norms of the rule's own per-sample
    gradients (:func:`.common.sq_of`); ``memo``: ``sq_norms`` takes ``memo=`` (:attr:`LayerHandler.memo`).
    Returns the rule unchanged, so it stays a plain function of its family module.
    """
    def register(grads: Callable) -> Callable:
        register_builtin(layer_types, grads, sq_norms=sq_norms, sq_from_grads=sq_from_grads, params=params,
                         batch_dim=batch_dim, memo=memo)
        return grads
    return register


def register_builtin(layer_types: tuple[type, ...], grads: Callable, *, sq_norms: Callable | None = None,
                     sq_from_grads: bool = False, params: str = "direct", batch_dim: int | str | Callable = 0,
                     memo: bool = False) -> None:
    """Register a built-in rule for each of ``layer_types`` (the body of :func:`builtin_rule`)."""
    if sq_from_grads:
        sq_norms = sq_of(grads)
    for cls in layer_types:
        register_lnp_handler(cls, grads, sq_norms=sq_norms, params=params, batch_dim=batch_dim)
        if memo:
            _REGISTRY[cls] = dataclasses.replace(_REGISTRY[cls], memo=True)


def defer_registration(name: str, run: Callable[[], bool]) -> None:
    """Add a registration that needs an optional library: ``run()`` registers and returns True once it
    could look (the library imported by the user), False to be asked again at the next lookup."""
    _DEFERRED.append((name, run))


def _register_optional() -> None:
    """Run the deferred registrations whose library has been imported since the last lookup."""
    for name, run in _DEFERRED:
        if name not in _DEFERRED_DONE and run():
            _DEFERRED_DONE.add(name)


def registry_generation() -> int:
    """A number that changes whenever a handler is registered (a key of cached backend decisions)."""
    return _GENERATION[0]


def registered_layer_types() -> list[type]:
    """The layer types with a handler (built-in and registered)."""
    _register_optional()
    return list(_REGISTRY)


def _registered_base(module: nn.Module) -> type | None:
    _register_optional()
    return next((cls for cls in type(module).__mro__ if cls in _REGISTRY), None)


def lookup_handler(module: nn.Module) -> LayerHandler | None:
    """The handler of ``module``'s type, or of its nearest registered base class if it inherits that
    class's ``forward``; None otherwise.

    A subclass that overrides ``forward`` (a scaled embedding, a channels-first LayerNorm) computes
    something else than its parent, so the parent's rule would give wrong per-sample gradients:
    it gets no handler unless registered itself, and its parameters are then treated as free
    parameters (:mod:`bandscope.torch.lnp.taps`) or, where that cannot work, measured by ``backend="vmap"``.
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
