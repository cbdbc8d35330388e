"""The taps protocol at its module boundaries: check → plan → capture (``LayerTaps.run``), verify → record
(``LayerTaps.verify_once``), and verification catching a wrong handler.

End-to-end numbers are checked against the oracles in ``test_torch_lnp_proof.py`` and the layouts
in ``test_torch_lnp_layouts.py``; here the order of the steps and what each one refuses.
"""
from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from bandscope.torch.lnp import handlers  # noqa: E402
from bandscope.torch.lnp.taps import LayerTaps, Plan, cache, checked, record_checked  # noqa: E402
from bandscope.torch.lnp.taps import plan as plan_module  # noqa: E402


class PosNet(nn.Module):
    """A free parameter (a positional table added in forward) beside handled layers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.pos = nn.Parameter(torch.randn(5, 4))
        self.out = nn.Linear(4, 2)

    def forward(self, x):  # x: (N, 5, 3)
        return self.out(torch.tanh(self.inp(x) + self.pos))


def _model_and_inputs(seed=0):
    torch.manual_seed(seed)
    return PosNet().double(), torch.randn(4, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_capture_refuses_to_run_without_a_plan():
    model, x = _model_and_inputs()
    taps = LayerTaps(model)
    for not_a_plan in (None, set(), frozenset()):
        with pytest.raises(TypeError, match="LayerTaps.run"), taps.capture(4, not_a_plan):
            model(x)
    with pytest.raises(TypeError, match="Plan"):
        record_checked(model, ("sig",), frozenset())


def test_verify_once_refuses_taps_that_captured_nothing():
    model, _ = _model_and_inputs()
    with pytest.raises(RuntimeError, match=r"LayerTaps.run\(model, x\) first"):
        LayerTaps(model).verify_once()


def test_run_gives_the_models_output_plans_once_and_remembers_after_verification(monkeypatch):
    model, x = _model_and_inputs(seed=2)
    ref = model(x)
    planned = []
    real = plan_module.make_plan
    monkeypatch.setattr(LayerTaps, "plan", lambda self, *a: planned.append(1) or real(self, *a))
    out, taps = LayerTaps.run(model, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert planned == [1] and isinstance(taps.layout, Plan) and not taps.verified
    assert taps.layout.free  # the positional table's per-sample copy rank
    assert checked(model, x)[1] is None  # not remembered before verification
    taps.verify_once()
    assert taps.verified and checked(model, x)[1] == taps.layout
    again_out, again = LayerTaps.run(model, x)
    assert planned == [1] and again.verified and again.layout == taps.layout  # the remembered plan
    torch.testing.assert_close(again_out, ref, rtol=0, atol=0)
    verified = []
    monkeypatch.setattr(LayerTaps, "verify", lambda *a: verified.append(1))
    again.verify_once()
    assert verified == []  # remembered: nothing to verify


def test_the_remembered_plan_dies_with_its_model():
    import gc
    import weakref

    model, x = _model_and_inputs(seed=3)
    _, taps = LayerTaps.run(model, x)
    taps.verify_once()
    owner = weakref.ref(cache.cache_owner(model))
    assert owner() in cache._CHECKED
    del model, taps
    gc.collect()
    # the cache holds no strong reference: the model (its cache key) is gone, and its entry with it
    assert owner() is None
    assert all(k is not None for k in cache._CHECKED.keys())


@pytest.mark.parametrize("mutation, message", [
    # per-sample gradients handed to the wrong samples: they still sum to the batch gradient
    ("roll", r"per-sample gradients of parameters \['out.weight', 'out.bias'\] cannot be had"),
    # a per-sample offset: the sum is no longer the batch gradient
    ("shift", r"invariant failed \(sum of per-sample gradients = batch gradient\)"),
    # the fast route disagrees with the handler's own gradients
    ("sq_norms", r"invariant failed \(squared norms of the per-sample gradients\)"),
])
def test_verification_catches_a_wrong_handler(monkeypatch, mutation, message):
    model, x = _model_and_inputs(seed=4)
    real = handlers._REGISTRY[nn.Linear]

    def rolled(m, args, kwargs, d):
        g = real.grads(m, args, kwargs, d)
        return {k: t.roll(1, 0) for k, t in g.items()} if m is model.out else g

    def shifted(m, args, kwargs, d):
        return {k: t + 0.1 for k, t in real.grads(m, args, kwargs, d).items()}

    def scaled_sq(*a, **k):
        return real.sq_norms(*a, **k) * 1.5

    wrong = {"roll": dataclasses.replace(real, grads=rolled), "shift": dataclasses.replace(real, grads=shifted),
             "sq_norms": dataclasses.replace(real, sq_norms=scaled_sq)}[mutation]
    _, taps = LayerTaps.run(model, x)  # planned with the right handler
    monkeypatch.setitem(handlers._REGISTRY, nn.Linear, wrong)
    taps.units = [(name, mod, wrong if isinstance(mod, nn.Linear) else h, ps) for name, mod, h, ps in taps.units]
    with pytest.raises(NotImplementedError, match=message):
        taps.verify_once()
    assert not taps.verified and checked(model, x)[1] is None  # a refused path is not remembered


def test_the_right_handler_passes_the_same_verification():
    model, x = _model_and_inputs(seed=4)
    _, taps = LayerTaps.run(model, x)
    taps.verify_once()
    assert taps.verified
