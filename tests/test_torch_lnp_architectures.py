"""Architecture sweep: every family of tests/lnp_architectures.py exact against an explicit-Jacobian oracle, or
refused for the named reason, through ``measure_lnp(backend="auto")``.

The oracle is written here from torch alone (no bandscope code): J of the whole batch by
``torch.func.jacrev`` on the model as a function of its trainable parameters, with the inputs as
given (a dict as keywords), then 𝒩 = ||J||_F², ℒ = ||∂L/∂f||² and ||∇L||² by plain autograd.
torchvision / timm families skip when the package is missing (the shared venv has neither; run
them with ``pip install torchvision timm`` in a private venv and
``pytest -m slow tests/test_torch_lnp_architectures.py``).
"""
from __future__ import annotations

import importlib.util
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bandscope.torch import measure_lnp
from lnp_architectures import ARCHITECTURES

pytestmark = pytest.mark.slow  # 18 families run here: 21 min on the shared 2-core machine at load 10-19
N = 3


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _out(raw):
    return raw if isinstance(raw, torch.Tensor) else raw.logits


def oracle(model, x, y) -> dict:
    """ℒ, 𝒩, ||∇L||² of the MSE loss against y, from the explicit Jacobian (float64)."""
    from torch.func import functional_call, jacrev

    names = [k for k, p in model.named_parameters() if p.requires_grad]
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}

    def f(p):
        if isinstance(x, dict):
            return _out(functional_call(model, p, (), x, strict=False, tie_weights=True))
        return _out(functional_call(model, p, (x,), strict=False, tie_weights=True))

    jac = jacrev(f)(params)
    n_out = f(params).numel()
    j = torch.cat([jac[k].reshape(n_out, -1) for k in names], 1)
    out = _out(_call(model, x))
    loss = F.mse_loss(out, y)
    ps = [p for _, p in model.named_parameters() if p.requires_grad]
    *grad, g = torch.autograd.grad(loss, ps + [out])
    return {"network_scale": float(j.pow(2).sum()), "loss_scale": float(g.pow(2).sum()),
            "grad_norm_sq": float(sum(t.pow(2).sum() for t in grad))}


def _params():
    for name, arch in ARCHITECTURES.items():
        marks = []
        if arch.needs and importlib.util.find_spec(arch.needs) is None:
            marks.append(pytest.mark.skip(reason=f"{arch.needs} is not installed (pip install {arch.needs})"))
        yield pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("name", list(_params()))
def test_architecture_exact_or_refused_for_the_named_reason(name):
    arch = ARCHITECTURES[name]
    model, x, output = arch.build(N)
    if not arch.train:
        model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shape = _out(_call(model, x)).shape
    y = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    if arch.expect not in ("hooks", "vmap"):
        with pytest.raises((NotImplementedError, ValueError, TypeError), match=arch.expect):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                measure_lnp(model, F.mse_loss, (x, y), network_scale="exact", output=output)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = measure_lnp(model, F.mse_loss, (x, y), network_scale="exact", output=output, seed=0)
    said = [str(w.message) for w in caught if str(w.message).startswith("measure_lnp")]
    assert ds.attrs["backend"] == arch.expect, ds.attrs["hooks_refusal"]
    assert len(said) == (arch.expect == "vmap")
    ref = oracle(model, x, y)
    for var in ("network_scale", "loss_scale", "grad_norm_sq"):
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=1e-8, err_msg=var)
    if arch.expect == "vmap":  # the warning names a module of the model and the reason
        names = {n for n, _ in model.named_modules() if n} | {type(m).__name__ for m in model.modules()}
        assert any(re.search(re.escape(n), said[0]) for n in names)
