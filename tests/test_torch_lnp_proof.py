"""An independent check of ``measure_lnp`` on transformer models: every number against a slow oracle.

The oracle here shares no code with ``bandscope.torch.lnp`` (nor with the other LNP test files):

* ℒ = ||∂L/∂f||², ||∇L||², ∇L_A·∇L_B from ``torch.autograd.grad`` on the loss exactly as the user
  wrote it (the model called normally, tied weights and all);
* 𝒩 = Tr K = ||J||_F² with J = ∂f/∂θ from ``torch.func.jacrev`` over ``functional_call`` and
  K = J Jᵀ in float64; the oracle checks itself (||Jᵀg||² = ||∇L||², so J sees the tied head);
* P = ||∇L||² / (ℒ 𝒩), P_AB = ∇L_A·∇L_B / √(ℒ_A ℒ_B 𝒩_A 𝒩_B) (spectral reach §3, Eq. 49).

Models: a nanoGPT-style LM (nn.MultiheadAttention or SDPA, a free positional parameter or an
``nn.Embedding`` looked up with an unbatched ``arange``, a learned gain, head tied to the token
embedding), a LLaMA-style LM (RMSNorm, rotary positions, SDPA, SwiGLU), transformers' GPT-2 and
LLaMA from tiny configs (random weights, nothing downloaded) and bandscope's ViT autoencoder;
losses ``F.cross_entropy`` and ``F.mse_loss`` passed as plain functions, and lambdas.
"""
from __future__ import annotations

import functools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bandscope.torch import measure_lnp
from bandscope.torch.lnp import per_sample_grad_norms, registered_layer_types
from bandscope.torch.lnp.handlers import lookup_handler

VOCAB, T, D = 7, 4, 8
RTOL = 1e-9  # float64 throughout: exact routes agree with the oracle to ~1e-15 ...


def _rtol(name):
    """... except transformers' LLaMA, whose LlamaRMSNorm and rotary tables compute in float32
    whatever the model's dtype: two correct float64 routes through it then agree to ~1e-10."""
    return 1e-6 if name == "hf-llama" else RTOL


@pytest.fixture(autouse=True)
def _float64(float64_torch):
    yield


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def _rope(x, inv_freq):
    """Rotary positions on (N, H, T, hd), no parameters (LLaMA's rotate-half form)."""
    t, hd = x.shape[-2], x.shape[-1]
    ang = torch.arange(t, dtype=x.dtype)[:, None] * inv_freq[None]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class GPT(nn.Module):
    """nanoGPT-style: tied embedding/head, positions as a free (1, T, D) parameter or an nn.Embedding
    on an unbatched arange, pre-norm block with MHA or SDPA over a fused qkv Linear, GELU MLP."""

    def __init__(self, attn="mha", pos="param", seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.attn_kind, self.pos_kind = attn, pos
        self.wte = nn.Embedding(VOCAB, D)
        if pos == "param":
            self.wpe = nn.Parameter(0.1 * torch.randn(1, T, D))
        else:
            self.wpe = nn.Embedding(T, D)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        if attn == "mha":
            self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
            self.register_buffer("causal", torch.triu(torch.ones(T, T, dtype=torch.bool), 1))  # as nanoGPT's "bias"
        else:
            self.c_attn, self.c_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
        self.lm_head = nn.Linear(D, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        n, t = idx.shape
        pos = self.wpe[:, :t] if self.pos_kind == "param" else self.wpe(torch.arange(t))
        x = self.wte(idx) + pos
        h = self.ln1(x)
        if self.attn_kind == "mha":
            a = self.attn(h, h, h, attn_mask=self.causal[:t, :t], need_weights=False)[0]
        else:
            q, k, v = (z.view(n, t, 2, D // 2).transpose(1, 2) for z in self.c_attn(h).split(D, -1))
            a = self.c_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, D))
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return self.lm_head(self.ln_f(x))


class Llama(nn.Module):
    """LLaMA-style: RMSNorm, rotary q/k (a non-persistent frequency buffer), SDPA (causal), SwiGLU MLP,
    untied head."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, D)
        self.norm1, self.norm2, self.norm = nn.RMSNorm(D), nn.RMSNorm(D), nn.RMSNorm(D)
        for m in (self.norm1, self.norm2, self.norm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.gate, self.up, self.down = nn.Linear(D, 12, bias=False), nn.Linear(D, 12, bias=False), \
            nn.Linear(12, D, bias=False)
        self.lm_head = nn.Linear(D, VOCAB, bias=False)
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, D // 2, 2) / (D // 2)), persistent=False)

    def forward(self, idx):
        n, t = idx.shape
        x = self.embed(idx)
        h = self.norm1(x)
        q, k, v = (lin(h).view(n, t, 2, D // 2).transpose(1, 2) for lin in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(_rope(q, self.inv_freq), _rope(k, self.inv_freq), v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(n, t, D))
        h = self.norm2(x)
        x = x + self.down(F.silu(self.gate(h)) * self.up(h))
        return self.lm_head(self.norm(x))


def _hf(kind, dropout=0.0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "hf-gpt2":
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=T, n_embd=D, n_layer=1, n_head=2,
                                      resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                                      use_cache=False)
        return transformers.GPT2LMHeadModel(cfg).double()
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=12, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=T,
                                   attention_dropout=dropout, use_cache=False)
    model = transformers.LlamaForCausalLM(cfg).double()
    with torch.no_grad():  # RMSNorm weights start at 1: perturb them so their gradients are generic
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def _vit():
    """bandscope's ViT autoencoder at its smallest size; the middle of its CNN decoder (the 390k
    parameters that would make J too large for the oracle) frozen, so the gradient still flows
    through frozen layers to trainable ones on both sides."""
    from bandscope.torch.reference.models import ViTAutoencoder

    torch.manual_seed(0)
    model = ViTAutoencoder(16, latent_dim=3, patch=8, dim=8, depth=1, heads=2, mlp_ratio=2).double()
    for layer in list(model.decoder.net)[:-2]:
        for p in layer.parameters():
            p.requires_grad_(False)
    return model


class ClassesFirst(nn.Module):
    """Logits (N, T, V) -> (N, V, T), the layout ``F.cross_entropy(out, y)`` takes for token targets."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, idx):
        out = self.lm(idx)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        return logits.transpose(1, 2)


MODELS = {
    "gpt-mha-param": lambda: GPT("mha", "param"),
    "gpt-sdpa-arange": lambda: GPT("sdpa", "embedding"),
    "llama-block": Llama,
    "hf-gpt2": lambda: _hf("hf-gpt2"),
    "hf-llama": lambda: _hf("hf-llama"),
    "vit": _vit,
}
LMS = [k for k in MODELS if k != "vit"]


def _logits(out):
    return out if isinstance(out, torch.Tensor) else out.logits


def _batch(name, loss, n, seed):
    """(inputs, targets) for model ``name`` and loss ``loss``; a few ignored tokens for cross-entropy."""
    g = torch.Generator().manual_seed(seed)
    if name == "vit":
        x = torch.rand(n, 3, 16, 16, generator=g)
        y = torch.rand(n, 3, 16, 16, generator=g) if loss == "mse" else torch.randint(0, 3, (n, 16, 16), generator=g)
    else:
        x = torch.randint(0, VOCAB, (n, T), generator=g)
        y = torch.randn(n, T, VOCAB, generator=g) if loss == "mse" else torch.randint(0, VOCAB, (n, T), generator=g)
    if loss == "ce":
        y.view(-1)[:: 5] = -100  # ignore_index: these targets are not loss units
    return x, y


def _setup(name, loss):
    """(model as measured, plain loss function, batch A, batch B, expected M_A, expected M_B)."""
    model = MODELS[name]()
    if loss == "ce" and name != "vit":
        model = ClassesFirst(model)
    na, nb = (2, 1) if name == "vit" else (3, 2)  # batch B of one sample: the smallest batch works too
    a, b = _batch(name, loss, na, 1), _batch(name, loss, nb, 2)
    fn = F.cross_entropy if loss == "ce" else F.mse_loss

    def units(batch):  # tokens (targets not ignored) for cross-entropy, elements for mse
        x, y = batch
        return int((y != -100).sum()) if loss == "ce" else int(_logits(model(x)).numel())

    return model, fn, a, b, units(a), units(b)


# ---------------------------------------------------------------------------------------------
# the oracle
# ---------------------------------------------------------------------------------------------
def _trainable(model):
    return [(k, p) for k, p in model.named_parameters() if p.requires_grad]


def _jacobian(model, x) -> np.ndarray:
    """J = ∂f/∂θ of the whole batch's output, (N·O, P) float64, by torch.func.jacrev."""
    from torch.func import functional_call, jacrev

    params = {k: p.detach() for k, p in _trainable(model)}

    def f(p):
        return _logits(functional_call(model, p, (x,), strict=False, tie_weights=True))

    jac = jacrev(f)(params)
    n_out = f(params).numel()
    return torch.cat([j.reshape(n_out, -1) for j in jac.values()], 1).numpy()


def _direct(model, loss_fn, batch, rtol) -> dict:
    """ℒ, ||∇L||², ∇L and 𝒩 = Tr(J Jᵀ) for one batch, straight from autograd and jacrev."""
    x, y = batch
    params = [p for _, p in _trainable(model)]
    out = _logits(model(x))
    loss = loss_fn(out, y)
    *grad, g = torch.autograd.grad(loss, params + [out])
    grad = torch.cat([t.reshape(-1) for t in grad]).numpy()
    g = g.reshape(-1).numpy()
    j = _jacobian(model, x)
    kernel = j @ j.T
    np.testing.assert_allclose(g @ kernel @ g, grad @ grad, rtol=rtol)  # the oracle checks itself
    return {"loss": float(loss), "loss_scale": float(g @ g), "network_scale": float(np.trace(kernel)),
            "grad_norm_sq": float(grad @ grad), "grad": grad, "j": j}


@functools.cache
def _reference(name, loss):
    model, fn, a, b, ma, mb = _setup(name, loss)
    model.eval()  # the oracle's model (dropout is 0 anyway); the measured model is built afresh
    ra, rb = _direct(model, fn, a, _rtol(name)), _direct(model, fn, b, _rtol(name))
    ref = {"loss": ra["loss"], "loss_scale": ra["loss_scale"], "network_scale": ra["network_scale"],
           "grad_norm_sq": ra["grad_norm_sq"], "loss_b": rb["loss"], "loss_scale_b": rb["loss_scale"],
           "network_scale_b": rb["network_scale"], "grad_norm_sq_b": rb["grad_norm_sq"],
           "grad_dot": float(ra["grad"] @ rb["grad"])}
    ref["spectral_position"] = ref["grad_norm_sq"] / (ref["loss_scale"] * ref["network_scale"])
    ref["spectral_position_b"] = ref["grad_norm_sq_b"] / (ref["loss_scale_b"] * ref["network_scale_b"])
    ref["spectral_position_cross"] = ref["grad_dot"] / math.sqrt(
        ref["loss_scale"] * ref["loss_scale_b"] * ref["network_scale"] * ref["network_scale_b"])
    ref["loss_scale_norm"], ref["network_scale_norm"] = ma * ref["loss_scale"], ref["network_scale"] / ma
    ref["loss_scale_b_norm"], ref["network_scale_b_norm"] = mb * ref["loss_scale_b"], ref["network_scale_b"] / mb
    return ref, ma, mb, ra["j"]


SCALAR_VARS = ["loss", "loss_scale", "network_scale", "grad_norm_sq", "spectral_position", "loss_b",
               "loss_scale_b", "network_scale_b", "grad_norm_sq_b", "grad_dot", "spectral_position_b",
               "spectral_position_cross", "loss_scale_norm", "network_scale_norm", "loss_scale_b_norm",
               "network_scale_b_norm"]
# the ViT's exact hooks route takes one backward pass per output coordinate (768 per sample, through
# the frozen CNN decoder): several seconds. Its per-probe hooks norms are checked exactly in the fast
# lane (test_probe_norms_are_exact), its vmap route here.
SLOW_CASES = {("vit", "ce", "hooks"), ("vit", "mse", "hooks")}


def _cases():
    for name in MODELS:
        for loss in ("ce", "mse"):
            for backend in ("hooks", "vmap"):
                marks = [pytest.mark.slow] if (name, loss, backend) in SLOW_CASES else []
                yield pytest.param(name, loss, backend, id=f"{name}-{loss}-{backend}", marks=marks)


# ---------------------------------------------------------------------------------------------
# exact routes == the oracle; the cross statistics; the normalised scales with the expected M
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, loss, backend", list(_cases()))
def test_exact_routes_equal_the_oracle(name, loss, backend):
    """ℒ, 𝒩, ||∇L||², P, ∇L_A·∇L_B, P_AB and the ``*_norm`` scales (M = tokens not ignored for
    cross-entropy, elements for mse) of ``measure_lnp(..., network_scale="exact")``."""
    ref, ma, mb, _ = _reference(name, loss)
    model, fn, a, b, _, _ = _setup(name, loss)
    ds = measure_lnp(model, fn, a, b, network_scale="exact", backend=backend)
    assert ds.attrs["n_units"] == ma and ds.attrs["n_units_b"] == mb
    for var in SCALAR_VARS:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=_rtol(name), err_msg=var)
    assert float(ds.network_scale_se) == 0.0
    assert -1 <= float(ds.spectral_position_cross) <= 1 and 0 < float(ds.spectral_position) <= 1


def test_the_oracle_sees_the_tie():
    """The tied head's gradient is the sum over both uses: the oracle on the model with the tie broken
    (two independent copies of the same values, i.e. the sum of per-layer norms) gives 𝒩 and
    ||∇L||² off by > 1e-4 (here ~7e-4 and ~2e-2), 1e5 times the tolerance of the exact tests, so
    those tests would catch a hooks path that lost the cross term of the shared weight."""
    ref, *_ = _reference("gpt-mha-param", "mse")
    model, fn, a, _, _, _ = _setup("gpt-mha-param", "mse")
    model.lm_head.weight = nn.Parameter(model.wte.weight.detach().clone())
    untied = _direct(model, fn, a, RTOL)
    for var in ["network_scale", "grad_norm_sq"]:
        assert abs(untied[var] / ref[var] - 1) > 1e-4, var


# ---------------------------------------------------------------------------------------------
# the default estimator: each probe exact, the average within a few standard errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LMS + ["vit"])
def test_probe_norms_are_exact(name):
    """The hooks' per-sample ||J_nᵀv_n||² equal the oracle's, from its J, for any cotangent v."""
    loss = "mse" if name == "vit" else "ce"
    _, _, _, j = _reference(name, loss)
    model, _, (x, _), _, _, _ = _setup(name, loss)
    model.eval()
    out = _logits(model(x))
    v = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    got = per_sample_grad_norms(model, x, v).numpy()
    jtv = (v.reshape(-1).numpy()[:, None] * j).reshape(x.shape[0], -1, j.shape[1]).sum(1)
    np.testing.assert_allclose(got, (jtv ** 2).sum(1), rtol=_rtol(name))


@pytest.mark.parametrize("name", LMS + ["vit"])
def test_default_estimator_within_five_standard_errors(name):
    """Per-sample Hutchinson (the default), 16 probes, a fixed seed: |estimate - exact| < 5 SE.

    The seed fixes the Rademacher draws (a private torch.Generator: the same on every CPU), so the
    test is deterministic. 5 SE: the estimate is a mean of 16 independent draws per sample, close to
    normal, and the standard error itself is estimated from those 16 draws (±~20 %); a correct
    estimator then fails with probability well below 1e-4 for a new seed. The SE must also be
    small (< 20 % of 𝒩), so a useless estimator with a huge SE cannot pass.
    """
    loss = "mse" if name == "vit" else "ce"
    ref, *_ = _reference(name, loss)
    model, fn, a, b, _, _ = _setup(name, loss)
    ds = measure_lnp(model, fn, a, b, n_probes=16, seed=12345)
    assert ds.attrs["estimator"] == "hutchinson"
    se = float(ds.network_scale_se)
    assert 0 < se < 0.2 * ref["network_scale"], (se, ref["network_scale"])
    z = (float(ds.network_scale) - ref["network_scale"]) / se
    assert abs(z) < 5, (z, float(ds.network_scale), ref["network_scale"], se)
    # P's standard error is the first-order propagation of 𝒩's
    np.testing.assert_allclose(float(ds.spectral_position_se),
                               float(ds.spectral_position) * se / float(ds.network_scale), rtol=1e-12)
    # the parts without probes are exact whatever the estimator
    for var in ["loss_scale", "grad_norm_sq", "grad_dot", "loss_scale_b", "grad_norm_sq_b"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=_rtol(name), err_msg=var)
    zb = (float(ds.network_scale_b) - ref["network_scale_b"]) / float(ds.network_scale_b_se)
    assert abs(zb) < 5, zb


@pytest.mark.parametrize("name", ["llama-block", "hf-gpt2"])
def test_default_estimator_has_no_bias_above_a_few_percent(name):
    """The fast test above has the power to see only gross errors (16 probes: SE ~ 4 % of 𝒩, so a
    10 % bias is ~2.5 SE). 256 probes bring the SE near 1 %, and a bias of 6 % or more fails the
    5 SE bound. (A bias in the probe kernel itself is ruled out exactly by test_probe_norms_are_exact.)"""
    ref, *_ = _reference(name, "ce")
    model, fn, a, _, _, _ = _setup(name, "ce")
    ds = measure_lnp(model, fn, a, n_probes=256, seed=2024)
    se = float(ds.network_scale_se)
    assert se < 0.012 * ref["network_scale"], se / ref["network_scale"]
    assert abs(float(ds.network_scale) - ref["network_scale"]) < 5 * se


# ---------------------------------------------------------------------------------------------
# any loss function: raw statistics always, normalised ones NaN with the reason naming the argument
# ---------------------------------------------------------------------------------------------
def _lm_loss(out, y):
    """The usual way to write a language-model loss: M cannot be read from a lambda."""
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


@pytest.mark.parametrize("name", ["gpt-sdpa-arange", "hf-gpt2"])
def test_custom_loss_raw_statistics_and_nan_norms_with_the_reason(name):
    """``lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten())``: the same loss as
    ``F.cross_entropy`` on (N, V, T) logits, so its raw statistics are the oracle's for that case;
    the ``*_norm`` values are NaN and the reason names ``n_units=`` (``n_units_b=`` for batch B)."""
    ref, ma, mb, _ = _reference(name, "ce")
    model = MODELS[name]()
    a, b = _batch(name, "ce", 3, 1), _batch(name, "ce", 2, 2)
    loss = lambda out, y: _lm_loss(out, y)
    ds = measure_lnp(model, loss, a, b, network_scale="exact")
    for var in SCALAR_VARS:
        if var.endswith("_norm"):
            assert np.isnan(float(ds[var])), var
            assert ("n_units_b=" if "_b_" in var else "n_units=") in ds[var].attrs["reason"], var
        else:
            np.testing.assert_allclose(float(ds[var]), ref[var], rtol=_rtol(name), err_msg=var)
    reason_a, reason_b = ds.attrs["n_units_reason"], ds.attrs["n_units_b_reason"]
    assert "n_units=" in reason_a and "n_units_b=" not in reason_a, reason_a
    assert "n_units_b=" in reason_b and "n_units=" not in reason_b, reason_b
    assert str(ds.reason.values) == "" and str(ds.reason_cross.values) == ""  # P is valid

    # n_units for A only: A normalised with it, B still NaN naming n_units_b=
    ds = measure_lnp(model, loss, a, b, network_scale="exact", n_units=lambda out, y: int((y != -100).sum()))
    assert ds.attrs["n_units"] == ma and "n_units_reason" not in ds.attrs
    np.testing.assert_allclose(float(ds.loss_scale_norm), ref["loss_scale_norm"], rtol=_rtol(name))
    np.testing.assert_allclose(float(ds.network_scale_norm), ref["network_scale_norm"], rtol=_rtol(name))
    assert np.isnan(float(ds.loss_scale_b_norm)) and "n_units_b=" in ds.attrs["n_units_b_reason"]
    # both given: no reasons left
    ds = measure_lnp(model, loss, a, b, network_scale="exact", n_units=ma, n_units_b=mb)
    assert not any(k.endswith("_reason") for k in ds.attrs)
    for var in ["loss_scale_b_norm", "network_scale_b_norm"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=_rtol(name), err_msg=var)
    # one batch, default estimator: still raw statistics, NaN norms with the reason
    ds = measure_lnp(model, loss, a, seed=0)
    assert np.isfinite(float(ds.spectral_position)) and np.isnan(float(ds.network_scale_norm))
    assert "n_units=" in ds.attrs["n_units_reason"] and "n_units_b_reason" not in ds.attrs


# ---------------------------------------------------------------------------------------------
# every registered layer type: handler per-sample gradients against a per-sample autograd loop
# ---------------------------------------------------------------------------------------------
def _optional_types():
    """transformers' layer types with built-in handlers (imported so that they are registered)."""
    try:
        import transformers.models.llama.modeling_llama as llama
        import transformers.models.mistral.modeling_mistral as mistral
        import transformers.models.qwen2.modeling_qwen2 as qwen2
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return {}
    rms = lambda cls: [("last", lambda n, c, t, g: (cls(c), (torch.randn(n, t, c, generator=g),), {}))]
    return {Conv1D: [("tokens", lambda n, c, t, g: (Conv1D(c + 1, c), (torch.randn(n, t, c, generator=g),), {})),
                     ("2d", lambda n, c, t, g: (Conv1D(2, c), (torch.randn(n, c, generator=g),), {}))],
            llama.LlamaRMSNorm: rms(llama.LlamaRMSNorm), mistral.MistralRMSNorm: rms(mistral.MistralRMSNorm),
            qwen2.Qwen2RMSNorm: rms(qwen2.Qwen2RMSNorm)}


def _bn(cls, c):
    bn = cls(c).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return bn


def _r(g, *shape):
    return torch.randn(*shape, generator=g)


def _ids(g, hi, *shape):
    return torch.randint(0, hi, shape, generator=g)


#: layer type -> [(label, build(n, c, t, generator) -> (layer, args, kwargs))]; every registered type
#: of torch, transformers or bandscope must have an entry (test_every_registered_type_has_settings)
LAYER_SETTINGS = {
    nn.Linear: [
        ("2d", lambda n, c, t, g: (nn.Linear(c, c + 1), (_r(g, n, c),), {})),
        ("tokens", lambda n, c, t, g: (nn.Linear(c, 2), (_r(g, n, t, c),), {})),
        ("4d-no-bias", lambda n, c, t, g: (nn.Linear(c, 2, bias=False), (_r(g, n, 2, t, c),), {}))],
    nn.Conv1d: [
        ("pad-stride", lambda n, c, t, g: (nn.Conv1d(c, 2, 3, stride=2, padding=1), (_r(g, n, c, t + 3),), {})),
        ("same-dilated", lambda n, c, t, g: (nn.Conv1d(c, 2, 3, padding="same", dilation=2),
                                             (_r(g, n, c, t + 4),), {})),
        ("valid-no-bias", lambda n, c, t, g: (nn.Conv1d(c, 3, 2, padding="valid", bias=False),
                                              (_r(g, n, c, t + 1),), {}))],
    nn.Conv2d: [
        ("stride", lambda n, c, t, g: (nn.Conv2d(c, 2, 2, stride=2), (_r(g, n, c, 4, t + 2),), {})),
        ("same", lambda n, c, t, g: (nn.Conv2d(c, 3, 3, padding="same"), (_r(g, n, c, 3, t + 1),), {})),
        ("rect-dilated", lambda n, c, t, g: (nn.Conv2d(c, 2, (2, 3), padding=(1, 2), dilation=(2, 1)),
                                             (_r(g, n, c, 5, t + 2),), {}))],
    nn.ConvTranspose1d: [
        ("stride", lambda n, c, t, g: (nn.ConvTranspose1d(c, 2, 3, stride=2), (_r(g, n, c, t),), {})),
        ("pad-outpad", lambda n, c, t, g: (nn.ConvTranspose1d(c, 2, 3, stride=2, padding=1, output_padding=1),
                                           (_r(g, n, c, t + 1),), {})),
        ("dilated-no-bias", lambda n, c, t, g: (nn.ConvTranspose1d(c, 2, 2, dilation=2, bias=False),
                                                (_r(g, n, c, t),), {}))],
    nn.ConvTranspose2d: [
        ("stride-pad-outpad", lambda n, c, t, g: (nn.ConvTranspose2d(c, 2, 3, stride=2, padding=1, output_padding=1),
                                                  (_r(g, n, c, 2, t),), {})),
        ("rect", lambda n, c, t, g: (nn.ConvTranspose2d(c, 2, (2, 3), stride=(1, 2)), (_r(g, n, c, 3, t),), {}))],
    nn.Embedding: [
        ("plain", lambda n, c, t, g: (nn.Embedding(c + 4, 3), (_ids(g, c + 4, n, t),), {})),
        ("padding-idx", lambda n, c, t, g: (nn.Embedding(c + 2, 3, padding_idx=1), (_ids(g, 2, n, t + 1),), {})),
        ("ids-3d", lambda n, c, t, g: (nn.Embedding(5, c), (_ids(g, 5, n, 2, t),), {}))],
    nn.LayerNorm: [
        ("last", lambda n, c, t, g: (nn.LayerNorm(c + 1), (_r(g, n, t, c + 1),), {})),
        ("two-dims", lambda n, c, t, g: (nn.LayerNorm((t, c + 1)), (_r(g, n, 2, t, c + 1),), {})),
        ("no-bias", lambda n, c, t, g: (nn.LayerNorm(c + 1, bias=False), (_r(g, n, t, c + 1),), {}))],
    nn.RMSNorm: [
        ("last", lambda n, c, t, g: (nn.RMSNorm(c), (_r(g, n, t, c),), {})),
        ("two-dims-eps", lambda n, c, t, g: (nn.RMSNorm((t, c), eps=1e-3), (_r(g, n, t, c),), {}))],
    nn.GroupNorm: [
        ("one-group", lambda n, c, t, g: (nn.GroupNorm(1, c), (_r(g, n, c, t + 1),), {})),
        ("groups-2d", lambda n, c, t, g: (nn.GroupNorm(2, 2 * c), (_r(g, n, 2 * c, t, 2),), {}))],
    nn.BatchNorm1d: [
        ("2d", lambda n, c, t, g: (_bn(nn.BatchNorm1d, c), (_r(g, n, c),), {})),
        ("3d", lambda n, c, t, g: (_bn(nn.BatchNorm1d, c), (_r(g, n, c, t),), {}))],
    nn.BatchNorm2d: [("4d", lambda n, c, t, g: (_bn(nn.BatchNorm2d, c), (_r(g, n, c, t, 2),), {}))],
    nn.BatchNorm3d: [("5d", lambda n, c, t, g: (_bn(nn.BatchNorm3d, c), (_r(g, n, c, t, 2, 2),), {}))],
    nn.MultiheadAttention: [
        ("self", lambda n, c, t, g: (nn.MultiheadAttention(2 * c, 2, batch_first=True),
                                     (_r(g, n, t, 2 * c),) * 3, {"need_weights": False})),
        ("cross-kdim-vdim", lambda n, c, t, g: (nn.MultiheadAttention(2 * c, 2, batch_first=True, kdim=3, vdim=c + 1),
                                                (_r(g, n, t, 2 * c), _r(g, n, t + 1, 3), _r(g, n, t + 1, c + 1)),
                                                {"need_weights": False})),
        ("bias-kv-mask", lambda n, c, t, g: (nn.MultiheadAttention(2, 1, batch_first=True, bias=False,
                                                                   add_bias_kv=True),
                                             (_r(g, n, t, 2),) * 3,
                                             {"need_weights": False,
                                              "attn_mask": torch.triu(torch.ones(t, t, dtype=torch.bool), 1)}))],
    nn.PReLU: [
        ("shared-slope", lambda n, c, t, g: (nn.PReLU(init=0.3), (_r(g, n, t, c),), {})),
        ("per-channel", lambda n, c, t, g: (nn.PReLU(c, init=0.2), (_r(g, n, c, t),), {})),
        ("per-channel-2d", lambda n, c, t, g: (nn.PReLU(c), (_r(g, n, c),), {}))],
    **_optional_types(),
}


def _setting_params():
    for cls, variants in LAYER_SETTINGS.items():
        for label, _ in variants:
            yield pytest.param(cls, label, id=f"{cls.__name__}-{label}")


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _loop_grads(layer, args, kwargs, v, names):
    """Per-sample gradients of v_n·layer(x_n): one autograd call per sample (the obvious oracle)."""
    params = dict(layer.named_parameters())
    rows = []
    for i in range(v.shape[0]):
        out = _first(layer(*(a[i:i + 1] for a in args), **kwargs))
        gs = torch.autograd.grad(out, [params[k] for k in names], v[i:i + 1], allow_unused=True)
        rows.append([torch.zeros_like(params[k]) if gi is None else gi for k, gi in zip(names, gs)])
    return {k: torch.stack([r[j] for r in rows]) for j, k in enumerate(names)}


class _Tanh(nn.Module):
    """The layer inside a model: tanh of its (first) output; self-attention gets (x, x, x)."""

    def __init__(self, layer, n_args, kwargs):
        super().__init__()
        self.layer, self.n_args, self.kw = layer, n_args, kwargs

    def forward(self, x):
        return torch.tanh(_first(self.layer(*([x] * self.n_args), **self.kw)))


@pytest.mark.parametrize("cls, label", list(_setting_params()))
@settings(max_examples=3, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 3), t=st.integers(1, 3))
def test_registered_layer_handlers_match_a_per_sample_loop(cls, label, n, c, t):
    """The handler's per-sample gradients (``grads``, used for shared weights) and squared norms
    (``sq_norms``, the fast path), and ``per_sample_grad_norms`` on the layer inside a model, all
    against autograd on one sample at a time."""
    g = torch.Generator().manual_seed(1000 * n + 100 * c + t)
    torch.manual_seed(n + c + t)
    layer, args, kwargs = dict(LAYER_SETTINGS[cls])[label](n, c, t, g)
    assert type(layer) is cls
    with torch.no_grad():  # generic values (norm weights start at exactly 1, biases at 0)
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    handler = lookup_handler(layer)
    assert handler is not None, cls
    names = [k for k, p in (layer.named_parameters() if handler.params == "all"
                            else layer.named_parameters(recurse=False)) if p.requires_grad]
    out = layer(*args, **kwargs)
    v = torch.randn(_first(out).shape, generator=g)
    d = (v,) + (None,) * (len(out) - 1) if isinstance(out, tuple) else v
    ref = _loop_grads(layer, args, kwargs, v, names)
    got = handler.grads(layer, args, kwargs, d)
    for k in names:
        np.testing.assert_allclose(got[k].reshape(ref[k].shape).detach().numpy(), ref[k].numpy(),
                                   rtol=1e-9, atol=1e-12, err_msg=k)
    ref_sq = sum(r.pow(2).flatten(1).sum(1) for r in ref.values()).numpy()
    if handler.sq_norms is not None:
        np.testing.assert_allclose(handler.sq_norms(layer, args, kwargs, d).detach().numpy(), ref_sq,
                                   rtol=1e-9, atol=1e-12)
    if len(args) == 1 or all(a is args[0] for a in args):  # one input tensor: the layer inside a model
        model = _Tanh(layer, len(args), kwargs)
        x = args[0]
        w = torch.randn(model(x).shape, generator=g)
        names_m = [f"layer.{k}" for k in names]
        ref_m = _loop_grads(model, (x,), {}, w, names_m)
        np.testing.assert_allclose(per_sample_grad_norms(model, x, w).numpy(),
                                   sum(r.pow(2).flatten(1).sum(1) for r in ref_m.values()).numpy(),
                                   rtol=1e-9, atol=1e-12)


def test_every_registered_type_has_settings():
    """A layer type registered in bandscope (or for torch / transformers) without settings above
    would go unchecked: this fails until it gets some. Types registered by tests are exempt."""
    import sys

    def public(cls):  # a library's class (not one defined in a test or a doctest)
        return (cls.__module__.split(".")[0] in ("torch", "transformers", "bandscope")
                and getattr(sys.modules.get(cls.__module__), cls.__name__, None) is cls)

    missing = [cls for cls in registered_layer_types() if public(cls) and cls not in LAYER_SETTINGS]
    assert not missing, f"registered layer types without settings in LAYER_SETTINGS: {missing}"


# ---------------------------------------------------------------------------------------------
# the model is left exactly as found
# ---------------------------------------------------------------------------------------------
def _snapshot(model):
    """Everything measure_lnp must leave alone, with identities where they matter."""
    return {
        "params": [(k, p, p.detach().clone(), p.requires_grad, type(p))
                   for k, p in model.named_parameters(remove_duplicate=False)],
        "grads": [(k, None if p.grad is None else p.grad.detach().clone(), p.grad)
                  for k, p in model.named_parameters()],
        "buffers": [(k, b, b.detach().clone()) for k, b in model.named_buffers(remove_duplicate=False)],
        "modes": [(k, m.training) for k, m in model.named_modules()],
        "hooks": [(k, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for k, m in model.named_modules()],
        "attrs": [(k, sorted(vars(m)["_parameters"]), sorted(vars(m)["_buffers"])) for k, m in model.named_modules()],
    }


def _assert_same(before, after):
    for (k, p, v, rg, tp), (k2, p2, v2, rg2, tp2) in zip(before["params"], after["params"], strict=True):
        assert k == k2 and p is p2 and tp is tp2 and rg == rg2 and torch.equal(v, v2), k
    for (k, g, gid), (_, g2, gid2) in zip(before["grads"], after["grads"], strict=True):
        assert (g is None) == (g2 is None) and gid is gid2, k
        assert g is None or torch.equal(g, g2), k
    for (k, b, v), (k2, b2, v2) in zip(before["buffers"], after["buffers"], strict=True):
        assert k == k2 and b is b2 and torch.equal(v, v2), k
    for key in ("modes", "hooks", "attrs"):
        assert before[key] == after[key], key


def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


STATE_MODELS = {
    "gpt-mha-param": lambda: GPT("mha", "param"),
    "gpt-sdpa-arange": lambda: GPT("sdpa", "embedding"),
    "llama-block": Llama,
    "hf-gpt2-dropout": lambda: _hf("hf-gpt2", dropout=0.1),
    "hf-llama": lambda: _hf("hf-llama"),
    "vit": _vit,
}


@pytest.mark.parametrize("name", list(STATE_MODELS))
def test_model_grads_modes_buffers_and_rng_untouched(name):
    """After measure_lnp (default estimator with batch B, batch-hutchinson, exact on the vmap
    route): parameters (values, identities, the tie, requires_grad), existing ``.grad`` values and
    the ``None`` ones, per-module train/eval modes (mixed), every buffer (non-persistent ones, e.g.
    rotary tables, included), hooks, and the torch / numpy / Python RNG states are as before."""
    model = STATE_MODELS[name]()
    base = "vit" if name == "vit" else "gpt-mha-param"
    a, b = _batch(base, "mse", 3, 1), _batch(base, "mse", 2, 2)
    model.train()
    mods = [m for m in model.modules() if m is not model]
    for m in mods[1::3]:  # mixed modes: every third submodule in eval
        m.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for i, p in enumerate(trainable):  # half the parameters hold a gradient, half None
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) if i % 2 else None
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(7)
    before, rng = _snapshot(model), _rng_states()
    grad_mode, dtype = torch.is_grad_enabled(), torch.get_default_dtype()
    loss = lambda out, y: F.mse_loss(_logits(out), y)
    for kw in [dict(), dict(network_scale="batch-hutchinson"), dict(network_scale="exact", backend="vmap")]:
        if name == "hf-gpt2-dropout" and kw.get("backend") == "vmap":
            continue  # train-mode dropout: the vmap route refuses it (test_vmap_route_refusals_name_the_layer)
        ds = measure_lnp(model, loss, a, b if not kw else None, seed=0, **kw)
        assert np.isfinite(float(ds.spectral_position))
        _assert_same(before, _snapshot(model))
        after = _rng_states()
        assert torch.equal(after[0], rng[0]) and np.array_equal(after[1], rng[1]) and after[2] == rng[2]
        assert torch.is_grad_enabled() == grad_mode and torch.get_default_dtype() == dtype
    if hasattr(model, "lm_head") and hasattr(model, "wte"):
        assert model.lm_head.weight is model.wte.weight
    if name.startswith("hf-gpt2"):
        assert model.lm_head.weight is model.transformer.wte.weight


# ---------------------------------------------------------------------------------------------
# free parameters beyond positions: a class token and a learned scale
# ---------------------------------------------------------------------------------------------
class ClassToken(nn.Module):
    """ViT-style: a class token (1, 1, D) prepended, positions (1, T+1, D), a learned per-channel
    scale (1, 1, D), MHA, read-out from the class token."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.proj = nn.Linear(3, D)
        self.cls = nn.Parameter(torch.randn(1, 1, D))
        self.pos = nn.Parameter(0.1 * torch.randn(1, T + 1, D))
        self.scale = nn.Parameter(1 + 0.1 * torch.randn(1, 1, D))
        self.norm = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.head = nn.Linear(D, 2)

    def forward(self, x):
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.proj(x)], 1) + self.pos
        h = self.norm(h) * self.scale
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(h[:, 0])


@pytest.mark.parametrize("backend", ["hooks", "vmap"])
def test_class_token_and_learned_scale_exact(backend):
    g = torch.Generator().manual_seed(9)
    a = (torch.randn(3, T, 3, generator=g), torch.randn(3, 2, generator=g))
    b = (torch.randn(2, T, 3, generator=g), torch.randn(2, 2, generator=g))
    model = ClassToken()
    ra, rb = _direct(model, F.mse_loss, a, RTOL), _direct(model, F.mse_loss, b, RTOL)
    ds = measure_lnp(model, F.mse_loss, a, b, network_scale="exact", backend=backend)
    for var in ["loss_scale", "network_scale", "grad_norm_sq"]:
        np.testing.assert_allclose(float(ds[var]), ra[var], rtol=RTOL, err_msg=var)
        np.testing.assert_allclose(float(ds[f"{var}_b"]), rb[var], rtol=RTOL, err_msg=var)
    np.testing.assert_allclose(float(ds.grad_dot), ra["grad"] @ rb["grad"], rtol=RTOL)
    assert ds.attrs["n_units"] == 6 and ds.attrs["n_units_b"] == 4  # mse: elements


# ---------------------------------------------------------------------------------------------
# what the hooks cannot cover: an error naming the layer and backend='vmap', never a bare one
# ---------------------------------------------------------------------------------------------
class _Seq(nn.Module):
    def __init__(self, *mods, reduce=False):
        super().__init__()
        self.body, self.reduce = nn.Sequential(*mods), reduce

    def forward(self, x):
        out = _first(self.body(x))
        return out.flatten(1).mean(1, keepdim=True) if self.reduce else out


class _TwoInput(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.fc, self.layer = nn.Linear(3, 3), layer

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.layer(h, h)


class _Centre(nn.Module):
    """Mixes samples: subtracts the batch mean between two Linear layers."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.tanh(h - h.mean(0, keepdim=True)))


def _r4(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


UNCOVERED = {  # name -> (model, inputs, what the message must name)
    "lstm": (lambda: _Seq(nn.Linear(3, 3), nn.LSTM(3, 4, batch_first=True)), _r4(4, 5, 3), r"body\.1\.weight_ih_l0"),
    "embedding-bag": (lambda: _Seq(nn.EmbeddingBag(7, 3)), torch.arange(20).reshape(4, 5) % 7, r"body\.0\.weight"),
    "conv3d": (lambda: _Seq(nn.Conv3d(2, 2, 3, padding=1)), _r4(4, 2, 3, 3, 3), r"body\.0\.weight"),
    # a weight with a leading dim of 1 looks like a broadcast free parameter; it must still be refused
    "conv3d-one-output-channel": (lambda: _Seq(nn.Conv3d(2, 1, 3, padding=1), reduce=True), _r4(4, 2, 3, 3, 3),
                                  r"body\.0\.weight"),
    "instance-norm-one-channel": (lambda: _Seq(nn.Conv1d(2, 1, 1), nn.InstanceNorm1d(1, affine=True)),
                                  _r4(4, 2, 5), r"body\.1\.weight"),
    "bilinear": (lambda: _TwoInput(nn.Bilinear(3, 3, 2)), _r4(4, 3), r"layer\.weight"),
    # weight (1, 3, 3): a leading 1 again (this was a bare RuntimeError from inside autograd)
    "bilinear-one-output": (lambda: _TwoInput(nn.Bilinear(3, 3, 1)), _r4(4, 3), r"layer\.weight"),
    "grouped-conv": (lambda: _Seq(nn.Conv2d(2, 2, 1, groups=2)), _r4(4, 2, 3, 3), "Conv2d"),
    "reflect-padding": (lambda: _Seq(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")), _r4(4, 2, 3, 3),
                        "Conv2d"),
    "grouped-conv-transpose": (lambda: _Seq(nn.ConvTranspose2d(2, 2, 3, groups=2)), _r4(4, 2, 3, 3),
                               "ConvTranspose2d"),
    "sample-mixing": (_Centre, _r4(4, 3), r"a\.weight"),
}


@pytest.mark.parametrize("name", list(UNCOVERED))
def test_uncovered_layers_raise_naming_the_layer_and_the_fallback(name):
    build, x, what = UNCOVERED[name]
    model = build()
    y = torch.zeros_like(_first(model(x)))
    for kw in [dict(), dict(network_scale="exact")]:
        with pytest.raises(NotImplementedError, match=what) as info:
            measure_lnp(model, F.mse_loss, (x, y), seed=0, **kw)
        assert "backend='vmap'" in str(info.value)


def test_batchnorm_without_running_stats_in_eval_mode_is_measured_like_train_mode():
    torch.manual_seed(5)
    model = _Seq(nn.Linear(3, 4), nn.Tanh(), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2))
    x, y = _r4(6, 3), torch.zeros(6, 2)
    train = measure_lnp(model, F.mse_loss, (x, y), network_scale="exact")
    model.eval()  # the same function: no running statistics to switch to
    torch.testing.assert_close(model(x), model.train()(x))
    model.eval()
    for backend in ("hooks", "vmap"):
        ds = measure_lnp(model, F.mse_loss, (x, y), network_scale="exact", backend=backend)
        np.testing.assert_allclose(float(ds.network_scale), float(train.network_scale), rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# the vmap route (the fallback every message above points to)
# ---------------------------------------------------------------------------------------------
def _loop_network_scale(model, x) -> float:
    """Σ_n ||∂f(x_n)/∂θ||_F² one sample and one output coordinate at a time."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = 0.0
    for n in range(x.shape[0]):
        out = model(x[n:n + 1]).reshape(-1)
        for o in range(out.numel()):
            gs = torch.autograd.grad(out[o], params, retain_graph=True, allow_unused=True)
            total += sum(float(gi.pow(2).sum()) for gi in gs if gi is not None)
    return total


@pytest.mark.parametrize("n", [3, 4])
def test_prelu_equals_the_oracle_or_the_vmap_route_refuses(n):
    """torch.func's PReLU batching rule is wrong when the vmap size equals the number of channels
    (torch 2.13: exact 26.198 vs 20.980 at batch 4) and fails at other sizes: the vmap route must
    refuse (naming the hooks route), and the hooks route, which has a PReLU handler, be exact."""
    torch.manual_seed(1)
    model = _Seq(nn.Linear(3, 4), nn.PReLU()).double()
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batch = (x, torch.zeros(n, 4, dtype=torch.float64))
    ref = _loop_network_scale(model, x)
    ds = measure_lnp(model, F.mse_loss, batch, network_scale="exact")
    np.testing.assert_allclose(float(ds.network_scale), ref, rtol=RTOL)
    try:
        ds = measure_lnp(model, F.mse_loss, batch, network_scale="exact", backend="vmap")
    except NotImplementedError as exc:
        assert "backend='hooks'" in str(exc)
    else:
        np.testing.assert_allclose(float(ds.network_scale), ref, rtol=RTOL)


def test_vmap_route_refuses_or_measures_a_sample_mixing_model():
    model = _Centre()
    x = _r4(4, 3)
    y = torch.zeros(4, 2)
    try:
        ds = measure_lnp(model, F.mse_loss, (x, y), network_scale="exact", backend="vmap")
    except (NotImplementedError, ValueError):
        return
    np.testing.assert_allclose(float(ds.network_scale), _direct(model, F.mse_loss, (x, y), RTOL)["network_scale"],
                               rtol=RTOL)


@pytest.mark.parametrize("case", ["lstm", "train-mode-dropout"])
def test_vmap_route_refusals_name_the_layer(case):
    if case == "lstm":
        model, x, what = UNCOVERED["lstm"][0](), UNCOVERED["lstm"][1], "LSTM"
    else:
        model, x, what = _hf("hf-gpt2", dropout=0.1).train(), _batch("hf-gpt2", "ce", 3, 1)[0], "Dropout"
    y = torch.zeros_like(_logits(_first(model(x))))
    with pytest.raises((NotImplementedError, ValueError), match=what):
        measure_lnp(model, lambda out, t: F.mse_loss(_first(out), t), (x, y), seed=0, backend="vmap")


# ---------------------------------------------------------------------------------------------
# float32, as models train: no false refusal by the per-sample check, numbers at float32 accuracy
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_float32_models_measured_at_float32_accuracy(name):
    loss = "mse" if name == "vit" else "ce"
    ref, *_ = _reference(name, loss)  # float64
    model, fn, a, b, _, _ = _setup(name, loss)
    model = model.float()
    a, b = ([t.float() if t.is_floating_point() else t for t in batch] for batch in (a, b))
    ds = measure_lnp(model, fn, a, b, network_scale="exact", backend="vmap" if name == "vit" else "hooks")
    assert ds.network_scale.dtype == np.float64
    for var in ["loss_scale", "network_scale", "grad_norm_sq", "grad_dot", "spectral_position",
                "spectral_position_cross"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=1e-4, err_msg=var)
    measure_lnp(model, fn, a, b, seed=0)  # the default route passes its per-sample check in float32


# ---------------------------------------------------------------------------------------------
# positions looked up with an unbatched arange(T): every sequence length
# ---------------------------------------------------------------------------------------------
def _short(t, n):
    g = torch.Generator().manual_seed(t * 10 + n)
    return torch.randint(0, VOCAB, (n, t), generator=g), torch.randn(n, t, VOCAB, generator=g)


@pytest.mark.parametrize("t, n", [(4, 4), (4, 2), (3, 4), (4, 1), (2, 4), (3, 2), (2, 3)])
def test_unbatched_positions_at_other_lengths(t, n):
    """Including T equal to the size of a dry run (2 or 3), once refused as a sample-mixing lookup."""
    model = GPT("sdpa", "embedding")
    batch = _short(t, n)
    ds = measure_lnp(model, F.mse_loss, batch, network_scale="exact")
    np.testing.assert_allclose(float(ds.network_scale), _direct(model, F.mse_loss, batch, RTOL)["network_scale"],
                               rtol=RTOL)


def test_unbatched_positions_at_length_one():
    model = GPT("sdpa", "embedding")
    batch = _short(1, 3)
    ds = measure_lnp(model, F.mse_loss, batch, network_scale="exact")
    np.testing.assert_allclose(float(ds.network_scale), _direct(model, F.mse_loss, batch, RTOL)["network_scale"],
                               rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# transformers models as they are trained: gradient checkpointing, tied LLaMA, a shared block
# ---------------------------------------------------------------------------------------------
def _hf_tied_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=12, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=T,
                                   tie_word_embeddings=True, use_cache=False)
    model = transformers.LlamaForCausalLM(cfg).double()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


class SharedBlock(nn.Module):
    """One pre-norm attention block applied twice (ALBERT / universal-transformer weight sharing)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.emb = nn.Embedding(VOCAB, D)
        self.norm = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.fc = nn.Linear(D, D)
        self.head = nn.Linear(D, VOCAB)

    def forward(self, idx):
        x = self.emb(idx)
        for _ in range(2):
            h = self.norm(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            x = x + self.fc(torch.tanh(self.norm(x)))
        return self.head(x)


@pytest.mark.parametrize("case", ["gpt2-checkpointing", "llama-checkpointing", "llama-tied", "shared-block"])
def test_models_as_trained(case):
    make = {"gpt2-checkpointing": lambda: _hf("hf-gpt2"), "llama-checkpointing": lambda: _hf("hf-llama"),
            "llama-tied": _hf_tied_llama, "shared-block": SharedBlock}[case]
    a = _batch("gpt-mha-param", "mse", 3, 1)
    ref = _direct(make().train(), F.mse_loss, a, 1e-6)  # the oracle on a plain copy (same seed)
    model = make().train()
    if case.endswith("checkpointing"):
        model.gradient_checkpointing_enable()
    ds = measure_lnp(model, F.mse_loss, a, network_scale="exact")
    rtol = 1e-6 if "llama" in case else RTOL
    for var in ["loss_scale", "network_scale", "grad_norm_sq"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=rtol, err_msg=var)
    ds = measure_lnp(model, F.mse_loss, a, n_probes=16, seed=1)
    assert abs(float(ds.network_scale) - ref["network_scale"]) < 5 * float(ds.network_scale_se)


def test_dict_inputs_measured_or_refused_clearly():
    model = _hf("hf-gpt2")
    x, y = _batch("hf-gpt2", "mse", 3, 1)
    batch = ({"input_ids": x, "attention_mask": torch.ones_like(x)}, y)
    for backend in ("hooks", "vmap"):
        try:
            ds = measure_lnp(model, F.mse_loss, batch, network_scale="exact", backend=backend)
        except (TypeError, ValueError, NotImplementedError) as exc:
            assert "dict" in str(exc)
            continue
        ref = _direct(model, F.mse_loss, (x, y), RTOL)  # an all-ones mask changes nothing
        np.testing.assert_allclose(float(ds.network_scale), ref["network_scale"], rtol=RTOL)
