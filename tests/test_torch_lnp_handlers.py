"""The handler registry and its family modules: each family registers its layer types beside its rules.

The per-sample numbers of every rule are checked against the explicit-Jacobian oracle in
``test_torch_lnp_proof.py``; here the module boundaries: which module registers which type, what
the built-in decorator registers, and that user registration still goes through the one public table.
"""
from __future__ import annotations

import importlib
import sys

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from bandscope.torch.lnp import handlers  # noqa: E402
from bandscope.torch.lnp.handlers import registry  # noqa: E402

PKG = "bandscope.torch.lnp.handlers"

#: family module -> the torch layer types it registers
FAMILIES = {
    "linear": [nn.Linear],
    "conv": [nn.Conv1d, nn.Conv2d],
    "conv_transpose": [nn.ConvTranspose1d, nn.ConvTranspose2d],
    "embedding": [nn.Embedding],
    "norm": [nn.LayerNorm, *([nn.RMSNorm] if hasattr(nn, "RMSNorm") else []), nn.GroupNorm, nn.BatchNorm1d,
             nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm],
    "attention": [nn.MultiheadAttention],
    "activation": [nn.PReLU],
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_module_registers_its_types_with_rules_of_its_own(family):
    module = importlib.import_module(f"{PKG}.{family}")
    assert module.__doc__ and module.__doc__.strip(), f"{family}.py opens without a docstring naming its job"
    for cls in FAMILIES[family]:
        h = handlers._REGISTRY[cls]
        assert h.grads.__module__ == module.__name__, (cls, h.grads.__module__)
        assert getattr(module, h.grads.__name__) is h.grads


def test_every_builtin_torch_type_belongs_to_one_family():
    listed = [cls for types in FAMILIES.values() for cls in types]
    assert len(listed) == len(set(listed))
    builtin = [cls for cls in handlers.registered_layer_types() if cls.__module__.startswith("torch.")]
    assert sorted(builtin, key=repr) == sorted(listed, key=repr)


def test_memo_is_set_for_the_unfold_and_gram_rules_only():
    memo = {cls for cls in FAMILIES["linear"] + FAMILIES["conv"] + FAMILIES["conv_transpose"]}
    for types in FAMILIES.values():
        for cls in types:
            assert handlers._REGISTRY[cls].memo == (cls in memo), cls


def test_transformers_types_are_registered_by_the_hf_module_once_imported():
    pytest.importorskip("transformers")
    import transformers.models.llama.modeling_llama as llama
    import transformers.pytorch_utils as pu

    types = handlers.registered_layer_types()
    assert pu.Conv1D in types and llama.LlamaRMSNorm in types
    conv1d = handlers._REGISTRY[pu.Conv1D]
    assert conv1d.grads.__module__ == f"{PKG}.hf" and conv1d.memo and conv1d.batch_dim == "any"
    assert handlers._REGISTRY[llama.LlamaRMSNorm].grads is handlers._REGISTRY[nn.LayerNorm].grads


def test_a_deferred_registration_waits_for_its_library(monkeypatch):
    calls = []

    def run():
        calls.append(1)
        return "fake_optional_lib" in sys.modules

    monkeypatch.setattr(registry, "_DEFERRED", [("fake", run)])
    monkeypatch.setattr(registry, "_DEFERRED_DONE", set())
    handlers.registered_layer_types()
    handlers.registered_layer_types()
    assert len(calls) == 2  # asked again while the library is absent
    monkeypatch.setitem(sys.modules, "fake_optional_lib", object())
    handlers.registered_layer_types()
    handlers.registered_layer_types()
    assert len(calls) == 3  # done once it could look


def test_builtin_rule_registers_like_the_public_call_and_returns_the_rule(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})

    class A(nn.Module):
        pass

    class B(nn.Module):
        pass

    def grads(m, args, kwargs, d):
        return {}

    before = registry.registry_generation()
    assert registry.builtin_rule(A, B, sq_from_grads=True, batch_dim="any", memo=True)(grads) is grads
    assert registry.registry_generation() == before + 2
    for cls in (A, B):
        h = registry._REGISTRY[cls]
        assert h.grads is grads and h.memo and h.batch_dim == "any" and h.params == "direct"
        assert h.sq_norms is not None  # the squared norms of the rule's own gradients
    d = torch.zeros(3, 2)
    assert torch.equal(registry._REGISTRY[A].sq_norms(A(), (d,), {}, d), torch.zeros(3))


def test_user_registration_is_the_public_table_the_package_reexports(monkeypatch):
    class Gain(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return x * self.g

    monkeypatch.setitem(handlers._REGISTRY, Gain, None)  # restored (removed) after the test
    handlers.register_lnp_handler(Gain, lambda m, a, k, d: {"g": d * a[0]})
    assert handlers.lookup_handler(Gain()) is registry._REGISTRY[Gain]
    assert handlers._REGISTRY is registry._REGISTRY
