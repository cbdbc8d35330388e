"""The GPT-style model of the spectral-reach scaling runs (bandscope.torch.reference.lm): shapes, causality,
and exact LNP on the fast per-sample path against the explicit eNTK (torch.func.jacrev)."""

import numpy as np
import pytest
import torch

from bandscope.torch import measure_lnp
from bandscope.torch.reference.lm import LM_SIZES, LMConfig, TinyGPT
from lnp_oracle import kernel_oracle, lm_ce

TINY = LMConfig(vocab_size=11, context=6, d_model=8, n_layers=2, n_heads=2, d_ff=12)


pytestmark = pytest.mark.usefixtures("float64_torch")


def test_shapes_and_sizes():
    torch.manual_seed(0)
    m = TinyGPT(TINY)
    assert m(torch.randint(0, 11, (3, 6))).shape == (3, 6, 11)
    assert m(torch.randint(0, 11, (3, 4))).shape == (3, 4, 11)  # shorter than the context
    with pytest.raises(ValueError, match="exceeds the context"):
        m(torch.randint(0, 11, (3, 7)))
    counts = [sum(p.numel() for p in TinyGPT(c).parameters()) for c in LM_SIZES.values()]
    assert counts == sorted(counts) and counts[-1] > 5 * counts[0]


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        LMConfig(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="positive int"):
        LMConfig(context=0)


def test_causal():
    """The logits at position t do not depend on tokens after t."""
    torch.manual_seed(0)
    m = TinyGPT(TINY).eval()
    x = torch.randint(0, 11, (2, 6))
    y = x.clone()
    y[:, 4:] = (y[:, 4:] + 1) % 11
    torch.testing.assert_close(m(x)[:, :4], m(y)[:, :4])
    assert not torch.allclose(m(x)[:, 4:], m(y)[:, 4:])


@pytest.mark.parametrize("backend", ["hooks", "vmap"])
def test_exact_lnp_equals_entk(backend):
    """Per-sample exact 𝒩 (one backward per output coordinate) equals Tr JJᵀ; P, P_AB equal
    the eigen-sum definitions, on the fast hooks path (positions looked up with batched indices,
    head not tied) and through torch.func."""
    torch.manual_seed(3)
    m = TinyGPT(TINY)
    a = (torch.randint(0, 11, (3, 6)), torch.randint(0, 11, (3, 6)))
    b = (torch.randint(0, 11, (2, 6)), torch.randint(0, 11, (2, 6)))
    ds = measure_lnp(m, lm_ce, a, b, network_scale="exact", n_units="targets", n_units_b="targets",
                     backend=backend)
    ref = kernel_oracle(m, lm_ce, a, b)
    for ours, theirs in (("loss_scale", "loss_scale"), ("network_scale", "network_scale"),
                         ("grad_norm_sq", "grad_norm_sq"), ("spectral_position", "spectral_position"),
                         ("grad_dot", "grad_dot"), ("spectral_position_cross", "spectral_position_cross")):
        np.testing.assert_allclose(float(ds[ours]), ref[theirs], rtol=1e-9, err_msg=ours)
    assert ds.attrs["n_units"] == 18


def test_hutchinson_within_standard_errors():
    torch.manual_seed(4)
    m = TinyGPT(TINY)
    a = (torch.randint(0, 11, (4, 6)), torch.randint(0, 11, (4, 6)))
    exact = float(measure_lnp(m, lm_ce, a, network_scale="exact", n_units="targets")["network_scale"])
    ds = measure_lnp(m, lm_ce, a, network_scale="hutchinson", n_probes=32, n_units="targets", seed=1)
    assert abs(float(ds.network_scale) - exact) < 4 * float(ds.network_scale_se)
