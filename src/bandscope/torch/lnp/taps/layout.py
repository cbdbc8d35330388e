"""The layout of a model's layer calls at one input signature: the :class:`Plan` planning writes, capture reads."""
from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Plan", "MAX_INSERTED_DIMS"]

#: largest number of size-1 dims inserted after the batch dim of a free parameter's per-sample copy
MAX_INSERTED_DIMS = 6


class Plan(frozenset):
    """The layout of a model's calls at one input signature, from :func:`.plan.make_plan`.

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

    def __new__(cls, expand: Iterable = (), dims: dict | None = None, free: dict | None = None,
                new_dim: Iterable = ()) -> Plan:
        """A plan: the expanded modules, their batch dims, the free parameters, the new-dim modules."""
        obj = super().__new__(cls, expand)
        obj.dims = dict(dims or {})
        obj.free = dict(free or {})
        obj.new_dim = frozenset(new_dim)
        return obj

    def __reduce__(self) -> tuple:
        return (Plan, (frozenset(self), self.dims, self.free, self.new_dim))
