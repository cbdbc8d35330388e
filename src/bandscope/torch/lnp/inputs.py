"""Model inputs and outputs as users bring them: one tensor, or a dict / BatchEncoding of tensors.

A batch of inputs is either one tensor with the batch on dim 0 or a mapping (a dict, a
transformers ``BatchEncoding``) whose tensor values with the batch on dim 0 (``input_ids``,
``attention_mask``, ``pixel_values``, ...) are split per sample together; its other values are
passed unchanged to every call. A mapping is passed as keywords, ``model(**x)``. The output
used is the tensor the model returns, its ``.logits``, or what ``output=`` selects.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["batch_size", "take", "input_signature", "select_output", "Adapted", "split_batched", "is_batch"]


def is_batch(x: object) -> bool:
    """Is ``x`` a batch of inputs measure_lnp can split (a tensor or a mapping holding one)?"""
    if isinstance(x, torch.Tensor):
        return x.dim() >= 1
    return isinstance(x, Mapping) and any(isinstance(v, torch.Tensor) and v.dim() >= 1 for v in x.values())


def batch_size(x: object) -> int:
    """N: dim 0 of the tensor, or of the mapping's first tensor value (all batched values must agree)."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0])
    if isinstance(x, Mapping):
        sizes = {k: int(v.shape[0]) for k, v in x.items() if isinstance(v, torch.Tensor) and v.dim() >= 1}
        if not sizes:
            raise TypeError(f"the inputs mapping holds no tensor with a batch dim (keys {sorted(x)})")
        return max(sizes.values(), key=list(sizes.values()).count)
    raise TypeError(unsupported_inputs_message(x))


def _batched_keys(x: Mapping[Any, Any], n: int) -> list[Hashable]:
    return [k for k, v in x.items() if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == n]


def take(x: Any, idx: torch.Tensor) -> Any:
    """The samples ``idx`` of a batch (every batched tensor of a mapping indexed together)."""
    if isinstance(x, torch.Tensor):
        return x[idx.to(x.device)]
    n = batch_size(x)
    keys = set(_batched_keys(x, n))
    return {k: (v[idx.to(v.device)] if k in keys else v) for k, v in x.items()}


def split_batched(x: Any) -> tuple[Any, Callable[[Any], Any]]:
    """(batched tensors as a dict or the tensor itself, rebuild(batched) -> inputs) for torch.func.vmap."""
    if isinstance(x, torch.Tensor):
        return x, lambda b: b
    n = batch_size(x)
    keys = _batched_keys(x, n)
    rest = {k: v for k, v in x.items() if k not in keys}
    return {k: x[k] for k in keys}, lambda b: {**rest, **b}


def input_signature(x: object) -> tuple[Any, ...]:
    """Shapes and dtypes of the inputs (a key of the one-time checks' caches)."""
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.dtype)
    if isinstance(x, Mapping):
        return tuple(sorted((str(k), tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else (str(k), repr(v))
                            for k, v in x.items()))
    return (type(x).__name__,)


def unsupported_inputs_message(x: object) -> str:
    """The refusal of inputs that are neither a tensor nor a mapping of tensors."""
    return (f"measure_lnp takes the inputs as one tensor with the batch on dim 0 or as a mapping (dict, "
            f"BatchEncoding) of tensors with the batch on dim 0, passed as model(**inputs); got "
            f"{type(x).__name__}; wrap the model in a module taking one of these")


def select_output(out: Any, output: str | int | Callable[[Any], Any] | None = None) -> torch.Tensor:
    """The measured output tensor: ``output(out)`` if callable, ``out[output]`` for a key or index,
    else the tensor itself or its ``.logits`` (a transformers ``ModelOutput``)."""
    if output is not None:
        sel = output(out) if callable(output) else out[output]
        if not isinstance(sel, torch.Tensor):
            raise TypeError(f"output={output!r} selects a {type(sel).__name__} from the model's "
                            f"{type(out).__name__}, not a tensor")
        return sel
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"the model must return a tensor (or an object with a .logits tensor), got {type(out).__name__}; "
                    "pass output= (a key, an index or a callable) to select the measured tensor")


class Adapted(nn.Module):
    """``model`` called on a mapping as keywords, its output reduced to the selected tensor.

    Used only when the inputs are a mapping or ``output=`` is given; its one submodule is the
    user's model, registered as ``model`` (parameter names in messages carry the ``model.`` prefix).
    """

    def __init__(self, model: nn.Module, output: str | int | Callable[[Any], Any] | None) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, x: Any) -> torch.Tensor:
        """The selected output tensor of the model on ``x`` (a mapping passed as keywords)."""
        out = self.model(**x) if isinstance(x, Mapping) else self.model(x)
        return select_output(out, self.output)
