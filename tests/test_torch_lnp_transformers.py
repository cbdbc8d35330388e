"""Transformer building blocks on the fast (hooks) path against the explicit eNTK (torch.func.jacrev).

Tied embedding/head, positional embeddings looked up with unbatched indices, free positional
parameters, nn.MultiheadAttention, SDPA over Linear projections, RMSNorm, rotary positions,
bandscope's ViT, transformers GPT-2 and LLaMA from tiny configs; any loss function; the public
handler registry; layers that cannot be covered give an error naming them and backend='vmap'.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bandscope.torch import measure_lnp, register_lnp_handler
from bandscope.torch.lnp import per_sample_grad_norms, registered_layer_types, vmap_handler
from lnp_oracle import kernel_oracle, lm_ce

pytestmark = pytest.mark.usefixtures("float64_torch")


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def _rotary(x):
    """Rotary positions (no parameters) on (N, H, T, hd)."""
    t, hd = x.shape[-2], x.shape[-1]
    freq = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=x.dtype) / hd))
    ang = torch.arange(t, dtype=x.dtype)[:, None] * freq[None]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


class NanoGPT(nn.Module):
    """Token + positional embedding (unbatched arange lookup or a free parameter), attention (MHA or
    SDPA over Linear, optionally rotary), LayerNorm or RMSNorm, a learned per-channel gain of shape
    (1, 1, D), output head tied to the token embedding."""

    def __init__(self, vocab=9, t=5, d=8, attn="sdpa", pos="embedding", norm="layer", tied=True, rotary=False):
        super().__init__()
        torch.manual_seed(0)
        self.attn, self.posk, self.rotary = attn, pos, rotary
        self.tok = nn.Embedding(vocab, d)
        if pos == "embedding":
            self.pos = nn.Embedding(t, d)
        elif pos == "param":
            self.pos = nn.Parameter(0.1 * torch.randn(1, t, d))
        self.gain = nn.Parameter(1 + 0.1 * torch.randn(1, 1, d))
        norm_cls = {"layer": nn.LayerNorm, "rms": nn.RMSNorm}[norm]
        self.n1, self.n2 = norm_cls(d), norm_cls(d)
        if attn == "mha":
            self.mha = nn.MultiheadAttention(d, 2, batch_first=True)
        else:
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.tok.weight

    def forward(self, idx):
        n, t = idx.shape
        x = self.tok(idx)
        if self.posk == "embedding":
            x = x + self.pos(torch.arange(t))  # unbatched lookup, broadcast over the batch
        elif self.posk == "param":
            x = x + self.pos[:, :t]
        h = self.n1(x) * self.gain
        if self.attn == "mha":
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            a = self.mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        else:
            q, k, v = self.qkv(h).split(h.shape[-1], -1)
            q, k, v = (z.view(n, t, 2, -1).transpose(1, 2) for z in (q, k, v))
            if self.rotary:
                q, k = _rotary(q), _rotary(k)
            a = self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, -1))
        x = x + (self.drop(a) if hasattr(self, "drop") else a)
        x = x + self.fc(torch.tanh(self.n2(x)))
        return self.head(x)


def _tokens(n, t=5, vocab=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, t), generator=g), torch.randint(0, vocab, (n, t), generator=g)


VARIANTS = {
    "sdpa-tied-arange": dict(),
    "mha-tied-param": dict(attn="mha", pos="param"),
    "llama-block": dict(norm="rms", pos="none", rotary=True, tied=False),
    "sdpa-untied-arange-batch5": dict(tied=False),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_nanogpt_exact_equals_entk(name):
    model = NanoGPT(**VARIANTS[name])
    a, b = _tokens(4), _tokens(5, seed=2)  # batch 5 = sequence length 5: the broadcast lookup is still found
    ds = measure_lnp(model, lm_ce, a, b, network_scale="exact")
    ref = kernel_oracle(model, lm_ce, a, b)
    for var in ["loss_scale", "network_scale", "grad_norm_sq", "spectral_position", "network_scale_b",
                "grad_dot", "spectral_position_cross"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=1e-9, err_msg=var)


def test_tied_weights_are_the_norm_of_the_summed_gradient():
    """Sum of per-layer norms (the old behaviour) differs from the truth; the hooks path equals vmap."""
    model = NanoGPT()
    x, _ = _tokens(4)
    v = torch.randn(4, 5, 9, generator=torch.Generator().manual_seed(3))
    hooks = per_sample_grad_norms(model, x, v)
    ref = per_sample_grad_norms(model, x, v, backend="vmap")
    np.testing.assert_allclose(hooks.numpy(), ref.detach().numpy(), rtol=1e-10)


def test_gpt_state_untouched():
    """Parameters (tied identity included), .grad, modes, RNG unchanged; dropout in train mode is fine."""
    model = NanoGPT(attn="mha", pos="param")
    model.drop = nn.Dropout(0.1)
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = copy.deepcopy(model.state_dict())
    params = dict(model.named_parameters())
    rng = torch.get_rng_state()
    measure_lnp(model, lm_ce, _tokens(4), _tokens(3, seed=2), seed=0)
    assert model.head.weight is model.tok.weight and dict(model.named_parameters()) == params
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_hutchinson_within_standard_errors_on_gpt():
    model = NanoGPT(attn="mha")
    a = _tokens(6)
    ref = kernel_oracle(model, lm_ce, a)
    ds = measure_lnp(model, lm_ce, a, n_probes=32, seed=4)
    z = (float(ds.network_scale) - ref["network_scale"]) / float(ds.network_scale_se)
    assert abs(z) < 4, z
    np.testing.assert_allclose(float(ds.grad_norm_sq), ref["grad_norm_sq"], rtol=1e-10)


def test_vit_exact_equals_entk_and_state_untouched():
    from bandscope.torch.reference.models import ViTAutoencoder

    torch.manual_seed(0)
    model = ViTAutoencoder(16, latent_dim=2, patch=8, dim=8, depth=1, heads=2, mlp_ratio=1)
    for p in model.decoder.parameters():  # the CNN decoder (390k parameters) is covered by the CNN tests;
        p.requires_grad_(False)  # frozen, the eNTK oracle stays small (J over the transformer encoder)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 16, 16, generator=g)
    a = (x, torch.rand(2, 3, 16, 16, generator=g))
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25) if p.requires_grad else None
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    ds = measure_lnp(model, F.mse_loss, a, network_scale="exact")
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters() if p.requires_grad)
    assert torch.equal(torch.get_rng_state(), rng)
    assert isinstance(model._parameters["pos_embed"], nn.Parameter)
    ref = kernel_oracle(model, F.mse_loss, a)
    for var in ["loss_scale", "network_scale", "grad_norm_sq", "spectral_position"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=1e-9, err_msg=var)
    assert ds.attrs["n_units"] == x.numel()  # F.mse_loss as a plain function: all elements


# ---------------------------------------------------------------------------------------------
# transformers (optional extra)
# ---------------------------------------------------------------------------------------------
def _hf(kind):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.LlamaConfig(vocab_size=11, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8,
                                       use_cache=False)
        model = transformers.LlamaForCausalLM(cfg)
    return model.double()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_transformers_models_exact_equals_entk(kind):
    model = _hf(kind)
    a, b = _tokens(3, vocab=11), _tokens(4, vocab=11, seed=2)
    ds = measure_lnp(model, lm_ce, a, b, network_scale="exact")
    ref = kernel_oracle(model, lm_ce, a, b)
    for var in ["network_scale", "grad_norm_sq", "spectral_position", "grad_dot", "spectral_position_cross"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=1e-7, err_msg=var)
    state = copy.deepcopy(model.state_dict())
    measure_lnp(model, lm_ce, a, seed=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# what cannot be covered: an error naming it and the fallback
# ---------------------------------------------------------------------------------------------
class FunctionalTie(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.tok = nn.Embedding(7, 4)
        self.fc = nn.Linear(4, 4)

    def forward(self, idx):
        return torch.tanh(self.fc(self.tok(idx))) @ self.tok.weight.T  # the tied head as a plain tensor


class ScalarScale(nn.Module):
    """A 0-d learned scale: given the per-sample copy (N, 1), exact (tests/test_torch_lnp_layouts.py)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.fc(x) * self.scale


def test_uncoverable_layers_are_named():
    x, y = _tokens(4, vocab=7)
    with pytest.raises(NotImplementedError, match=r"tok\.weight.*backend='vmap'"):
        measure_lnp(FunctionalTie(), lm_ce, (x, y))
    # the fallback gives the eNTK numbers
    ds = measure_lnp(FunctionalTie(), lm_ce, (x, y), network_scale="exact", backend="vmap")
    np.testing.assert_allclose(float(ds.network_scale), kernel_oracle(FunctionalTie(), lm_ce, (x, y))["network_scale"],
                               rtol=1e-10)
    z, scaled = (torch.randn(4, 3), torch.randn(4, 2)), ScalarScale()
    ds = measure_lnp(scaled, F.mse_loss, z, network_scale="exact")
    ref = kernel_oracle(scaled, F.mse_loss, z)["network_scale"]
    np.testing.assert_allclose(float(ds.network_scale), ref, rtol=1e-10)


def test_plain_cross_entropy_infers_tokens():
    """F.cross_entropy passed as a plain function: M = non-ignored targets."""
    model = nn.Sequential(nn.Embedding(9, 4), nn.Flatten(), nn.Linear(20, 3))
    x, _ = _tokens(6)
    y = torch.tensor([0, 1, 2, -100, 1, 0])
    ds = measure_lnp(model, F.cross_entropy, (x, y), network_scale="exact")
    assert ds.attrs["n_units"] == 5
    np.testing.assert_allclose(float(ds.spectral_position),
                               kernel_oracle(model, F.cross_entropy, (x, y))["spectral_position"], rtol=1e-10)


def test_any_loss_function():
    """A lambda loss gives raw statistics; the normalised ones are NaN with the reason and the right argument."""
    model = NanoGPT()
    a, b = _tokens(4), _tokens(3, seed=2)
    loss = lambda out, y: lm_ce(out, y) * 2.0  # noqa: E731
    ds = measure_lnp(model, loss, a, b, network_scale="exact")
    ref = kernel_oracle(model, loss, a, b)
    np.testing.assert_allclose(float(ds.spectral_position), ref["spectral_position"], rtol=1e-9)
    np.testing.assert_allclose(float(ds.grad_dot), ref["grad_dot"], rtol=1e-9)
    assert np.isnan(float(ds.loss_scale_norm)) and np.isnan(float(ds.network_scale_b_norm))
    assert "n_units=" in ds.attrs["n_units_reason"] and "n_units_b=" in ds.attrs["n_units_b_reason"]
    ds = measure_lnp(model, loss, a, b, network_scale="exact", n_units=20)
    assert np.isfinite(float(ds.loss_scale_norm)) and np.isnan(float(ds.loss_scale_b_norm))
    assert "n_units_b=" in ds.attrs["n_units_b_reason"] and "n_units_reason" not in ds.attrs


# ---------------------------------------------------------------------------------------------
# the registry: every registered layer type against torch.func per-sample norms
# ---------------------------------------------------------------------------------------------
class Gain(nn.Module):
    """A user's layer: per-channel gain on the last dim."""

    def __init__(self, d):
        super().__init__()
        self.g = nn.Parameter(torch.randn(d))

    def forward(self, x):
        return x * self.g


def _gain_grads(m, args, kwargs, d):
    return {"g": (d * args[0]).reshape(d.shape[0], -1, d.shape[-1]).sum(1)}


def _layer_settings(kind, n, c, t):
    """(layer, input) for one layer type; sizes from hypothesis."""
    g = torch.Generator().manual_seed(n * 100 + c * 10 + t)
    if kind == "linear":
        return nn.Linear(c, c + 1), torch.randn(n, t, c, generator=g)
    if kind == "linear2d":
        return nn.Linear(c, 2), torch.randn(n, c, generator=g)
    if kind == "conv1d":
        return nn.Conv1d(c, 2, 3, padding=1), torch.randn(n, c, t + 2, generator=g)
    if kind == "conv2d":
        return nn.Conv2d(c, 2, 2, stride=2), torch.randn(n, c, 4, 4, generator=g)
    if kind == "convT2d":
        return nn.ConvTranspose2d(c, 2, 3, stride=2, padding=1), torch.randn(n, c, 3, 3, generator=g)
    if kind == "embedding":
        return nn.Embedding(c + 3, 3, padding_idx=0), torch.randint(0, c + 3, (n, t), generator=g)
    if kind == "layernorm":
        return nn.LayerNorm(c), torch.randn(n, t, c, generator=g)
    if kind == "rmsnorm":
        return nn.RMSNorm(c), torch.randn(n, t, c, generator=g)
    if kind == "groupnorm":
        return nn.GroupNorm(1, c), torch.randn(n, c, t + 1, generator=g)
    if kind.startswith("batchnorm"):
        nd = {"batchnorm": 1, "batchnorm2d": 2, "batchnorm3d": 3}[kind]
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[nd](c).eval()
        bn.running_mean.uniform_(-1, 1)
        return bn, torch.randn(n, c, t, *([2] * (nd - 1)), generator=g)
    if kind == "convT1d":
        return nn.ConvTranspose1d(c, 2, 3, stride=2), torch.randn(n, c, t + 1, generator=g)
    if kind == "mha":
        return nn.MultiheadAttention(2 * c, 2, batch_first=True), torch.randn(n, t, 2 * c, generator=g)
    if kind == "gain":
        return Gain(c), torch.randn(n, t, c, generator=g)
    if kind == "prelu":
        return nn.PReLU(c, init=0.2), torch.randn(n, c, t, generator=g)
    if kind == "prelu-shared":
        return nn.PReLU(init=0.3), torch.randn(n, t, c, generator=g)
    raise KeyError(kind)


class _Wrap(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        out = self.layer(x, x, x, need_weights=False)[0] if isinstance(self.layer, nn.MultiheadAttention) \
            else self.layer(x)
        return torch.tanh(out)


LAYER_KINDS = ["linear", "linear2d", "conv1d", "conv2d", "convT1d", "convT2d", "embedding", "layernorm",
               "rmsnorm", "groupnorm", "batchnorm", "batchnorm2d", "batchnorm3d", "mha", "gain", "prelu",
               "prelu-shared"]


def test_every_builtin_type_has_a_setting():
    covered = {type(_layer_settings(k, 2, 2, 2)[0]) for k in LAYER_KINDS}
    for cls in registered_layer_types():
        if cls.__module__.startswith("torch.nn"):
            assert cls in covered, cls


@pytest.mark.parametrize("kind", LAYER_KINDS)
@settings(max_examples=4, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 3), t=st.integers(1, 4))
def test_registered_layers_match_torch_func(kind, n, c, t):
    register_lnp_handler(Gain, _gain_grads)
    torch.manual_seed(c + t)
    layer, x = _layer_settings(kind, n, c, t)
    model = _Wrap(layer)
    out = model(x)
    v = torch.randn(out.shape, generator=torch.Generator().manual_seed(n))
    ref = per_sample_grad_norms(model, x, v, backend="vmap").detach().numpy()
    np.testing.assert_allclose(per_sample_grad_norms(model, x, v).numpy(), ref, rtol=1e-9, atol=1e-12)


def test_user_layer_via_vmap_handler():
    """A layer type without a rule: register the generic torch.func handler for it."""

    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 3))

        def forward(self, x):
            return (x @ self.w) * x

    model = nn.Sequential(nn.Linear(3, 3), Bilinear())
    x = torch.randn(4, 3)
    with pytest.raises(NotImplementedError, match="Bilinear"):
        measure_lnp(model, F.mse_loss, (x, x))
    register_lnp_handler(Bilinear, vmap_handler, params="all")
    ds = measure_lnp(model, F.mse_loss, (x, x), network_scale="exact")
    np.testing.assert_allclose(float(ds.network_scale), kernel_oracle(model, F.mse_loss, (x, x))["network_scale"],
                               rtol=1e-10)


class BadFree(nn.Module):
    """A (1, D) parameter used along a non-batch dim: its per-sample copy cannot be broadcast."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.p = nn.Parameter(torch.randn(1, 3))

    def forward(self, x):  # x (N, T, 3)
        return self.fc(x) * self.p.T.unsqueeze(0)[:, :, :1]


def test_free_parameter_not_broadcast_over_the_batch_is_named():
    x = torch.randn(4, 3, 3)
    with pytest.raises(NotImplementedError, match=r"'p'.*backend='vmap'"):
        measure_lnp(BadFree(), F.mse_loss, (x, x))
