"""Per-sample gradients of transformers' layer types (Conv1D, Llama / Mistral / Qwen2 RMSNorm), once imported.

transformers is never imported here: each registration runs at the first handler lookup after
the user's code has imported the module defining the type (:func:`.registry.defer_registration`).
"""
from __future__ import annotations

import sys
from functools import partial

import torch
from torch import nn

from .linear import _linear_grads, _linear_sq
from .norm import _trailing_affine_grads
from .registry import defer_registration, register_builtin

__all__: list[str] = []  # registers transformers' layer types once transformers is imported


def _conv1d_hf_grads(m: nn.Module, args: tuple, kwargs: dict, d: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers' Conv1D: a Linear whose weight is stored transposed, ``(in, out)``."""
    return _linear_grads(m, args, kwargs, d, transposed=True)


def _register_conv1d() -> bool:
    if "transformers.pytorch_utils" not in sys.modules:
        return False
    conv1d = getattr(sys.modules["transformers.pytorch_utils"], "Conv1D", None)
    if conv1d is not None:
        register_builtin((conv1d,), _conv1d_hf_grads, sq_norms=_linear_sq, batch_dim="any", memo=True)
    return True


def _rms_norm(mod_name: str, cls_name: str) -> bool:
    if mod_name not in sys.modules:
        return False
    cls = getattr(sys.modules[mod_name], cls_name, None)
    if cls is not None:
        register_builtin((cls,), _trailing_affine_grads, sq_from_grads=True, batch_dim="any")
    return True


defer_registration("conv1d", _register_conv1d)
for _mod_name, _cls_name in (("transformers.models.llama.modeling_llama", "LlamaRMSNorm"),
                             ("transformers.models.mistral.modeling_mistral", "MistralRMSNorm"),
                             ("transformers.models.qwen2.modeling_qwen2", "Qwen2RMSNorm")):
    defer_registration(_cls_name, partial(_rms_norm, _mod_name, _cls_name))

