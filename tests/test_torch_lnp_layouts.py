"""Layouts on the hooks path: seq-first layers and free parameters of any shape, against torch.func.

Seq-first ``nn.MultiheadAttention`` (the torch default, batch on dim 1) and the Linear / LayerNorm /
Embedding of a ``(T, N, E)`` block; ``nn.TransformerEncoder`` with batch_first False and True;
free parameters without a leading size-1 dim (a 0-d temperature, a (D,) gain, a (T, D) positional
table). Exact routes equal the explicit eNTK K = JJᵀ (``torch.func.jacrev``, float64); per-sample
norms equal ``torch.func`` per-sample vjps with shapes drawn by hypothesis; what cannot be had
exactly raises naming the layer or parameter and the fix.
"""
import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bandscope.torch import measure_lnp, register_lnp_handler
from bandscope.torch.lnp import LayerHandler, per_sample_grad_norms
from bandscope.torch.lnp.taps import LayerTaps
from lnp_oracle import kernel_oracle, lm_ce

pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.usefixtures("float64_torch")]

STATS = ["loss_scale", "network_scale", "grad_norm_sq", "spectral_position", "network_scale_b", "grad_dot",
         "spectral_position_cross"]


def _check(model, loss_fn, a, b=None, rtol=1e-9, **kw):
    ds = measure_lnp(model, loss_fn, a, b, network_scale="exact", **kw)
    ref = kernel_oracle(model, loss_fn, a, b, eval_mode=True)
    for var in STATS if b is not None else STATS[:4]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=rtol, err_msg=var)
    return ds


def _oracle_scale(model, x):
    """The oracle's 𝒩 of an autoencoding batch (x, x) under MSE."""
    return kernel_oracle(model, F.mse_loss, (x, x), eval_mode=True)["network_scale"]


def _tokens(n, t=5, vocab=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, t), generator=g), torch.randint(0, vocab, (n, t), generator=g)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
class SeqFirstGPT(nn.Module):
    """nanoGPT-style, seq-first inside: tokens (N, T) -> (T, N, D) -> nn.MultiheadAttention (the torch
    default batch_first=False, causal mask, optional key padding mask) -> Linear/LayerNorm on (T, N, D)
    -> back to (N, T, V) with the head tied to the token embedding."""

    def __init__(self, vocab=9, t=5, d=8, padding=False):
        super().__init__()
        torch.manual_seed(0)
        self.padding = padding
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(t, d)
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mha = nn.MultiheadAttention(d, 2)
        self.fc = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx):
        n, t = idx.shape
        # (T, N, D): both embeddings looked up on (T, N) ids (an unbatched pos(arange(T)).unsqueeze(1)
        # cannot be given a batch dim: test_unbatched_lookup_that_cannot_be_expanded_is_named)
        x = self.tok(idx.T) + self.pos(torch.arange(t)[:, None].expand(t, n))
        h = self.n1(x)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        kpm = (idx == 0) & (torch.arange(t) > 0)  # token 0 = padding (never the first, so no row is all masked)
        if self.padding == "keyword":
            a = self.mha(h, h, h, attn_mask=mask, key_padding_mask=kpm, need_weights=False)[0]
        elif self.padding == "positional":
            a = self.mha(h, h, h, kpm, False, mask)[0]
        elif self.padding == "mask3d":  # a per-sample (N*heads, T, T) mask: causal and padding
            a = self.mha(h, h, h, attn_mask=(mask | kpm[:, None, :]).repeat_interleave(2, 0), need_weights=False)[0]
        else:
            a = self.mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        x = x + a
        x = x + self.fc(torch.tanh(self.n2(x)))
        return self.head(x).transpose(0, 1)


class FreeParams(nn.Module):
    """Free parameters without a leading size-1 dim: a (T, D) positional table (x + pos), a (D,) gain
    (x * gain), a 0-d learned scale and a 0-d temperature (logits / temperature)."""

    def __init__(self, vocab=9, t=5, d=6):
        super().__init__()
        torch.manual_seed(0)
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.1 * torch.randn(t, d))
        self.gain = nn.Parameter(1 + 0.1 * torch.randn(d))
        self.scale = nn.Parameter(torch.tensor(0.7))
        self.temperature = nn.Parameter(torch.tensor(1.3))
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab)
        self.drop = nn.Dropout(0.1)

    def forward(self, idx):
        x = self.tok(idx) + self.pos.to(self.gain.dtype)  # properties of a copy (.dtype) are no indexing
        h = self.norm(x) * self.gain
        x = x + self.drop(self.scale * torch.tanh(self.fc(h)))
        return self.head(x) / self.temperature


class Encoder(nn.Module):
    """Tokens -> nn.TransformerEncoder (batch_first False or True; optional padding mask) -> head."""

    def __init__(self, batch_first, vocab=7, d=8, padding=False):
        super().__init__()
        torch.manual_seed(0)
        self.batch_first, self.padding = batch_first, padding
        self.tok = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 2, 12, dropout=0.0, batch_first=batch_first)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # enable_nested_tensor is off for batch_first=False
            self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        h = self.tok(idx)
        kpm = (idx == 0) & (torch.arange(idx.shape[1]) > 0) if self.padding else None
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.enc(h, mask=nn.Transformer.generate_square_subsequent_mask(idx.shape[1]), is_causal=True,
                     src_key_padding_mask=kpm)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h)


class EncoderDecoder(nn.Module):
    """Tokens -> nn.Transformer (encoder-decoder, seq-first by default, pre-norm, GELU) -> head."""

    def __init__(self, batch_first, vocab=7, d=8):
        super().__init__()
        torch.manual_seed(0)
        self.batch_first = batch_first
        self.tok = nn.Embedding(vocab, d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.tf = nn.Transformer(d, 2, 1, 1, 12, dropout=0.0, activation="gelu", norm_first=True,
                                     batch_first=batch_first)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        src, tgt = self.tok(idx), self.tok(idx.flip(1))
        if not self.batch_first:
            src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)
        h = self.tf(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(idx.shape[1]))
        return self.head(h if self.batch_first else h.transpose(0, 1))


# ---------------------------------------------------------------------------------------------
# exact against the eNTK
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", [False, "keyword", "positional", "mask3d"])
def test_seq_first_gpt_exact_equals_entk(padding):
    model = SeqFirstGPT(padding=padding)
    a, b = _tokens(4), _tokens(5, seed=2)  # batch 5 = T: the layout is read from other batch sizes
    _check(model, lm_ce, a, b)


def test_free_parameters_exact_equals_entk():
    model = FreeParams().eval()  # dropout off: the eNTK is of the deterministic network
    a, b = _tokens(4), _tokens(3, seed=2)
    _check(model, lm_ce, a, b)
    plan = LayerTaps(model).plan(model, a[0], 4)
    ranks = {name: plan.free[(id(model), name)] for name in ("pos", "gain", "scale", "temperature")}
    assert ranks == {"pos": 0, "gain": 1, "scale": 2, "temperature": 2}  # (N, T, D), (N, 1, D), (N, 1, 1)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_transformer_encoder_exact_equals_entk(batch_first, padding):
    model = Encoder(batch_first, padding=padding)
    a, b = _tokens(3, vocab=7), _tokens(4, vocab=7, seed=2)
    _check(model, lm_ce, a, b)


@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_encoder_decoder_exact_equals_entk(batch_first):
    model = EncoderDecoder(batch_first)
    a, b = _tokens(3, t=4, vocab=7), _tokens(2, t=4, vocab=7, seed=2)
    _check(model, lm_ce, a, b)


def test_hutchinson_within_standard_errors_on_seq_first_gpt():
    model = SeqFirstGPT()
    a = _tokens(6)
    ref = kernel_oracle(model, lm_ce, a, eval_mode=True)
    ds = measure_lnp(model, lm_ce, a, n_probes=32, seed=4)
    z = (float(ds.network_scale) - ref["network_scale"]) / float(ds.network_scale_se)
    assert abs(z) < 4, z


@pytest.mark.parametrize("make", [FreeParams, lambda: SeqFirstGPT(padding="keyword")], ids=["free", "seq-first"])
def test_model_state_untouched(make):
    """Parameters (identities, the tie included), .grad, modes, buffers and the global RNG state unchanged."""
    model = make()
    (model.n2 if hasattr(model, "n2") else model.norm).register_buffer("seen", torch.arange(3.0))
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = copy.deepcopy(model.state_dict())
    params = dict(model.named_parameters())
    rng = torch.get_rng_state()
    measure_lnp(model, lm_ce, _tokens(4), _tokens(3, seed=2), seed=0)
    measure_lnp(model, lm_ce, _tokens(4), network_scale="exact")
    assert dict(model.named_parameters()) == params
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


class Scaled(nn.Module):
    """A Linear then a free parameter of shape ``shape`` used as ``op(x, p)``, for hypothesis."""

    def __init__(self, c, shape, op):
        super().__init__()
        self.fc = nn.Linear(c, c)
        self.p = nn.Parameter(1 + 0.3 * torch.randn(shape))
        self.op = op

    def forward(self, x):
        h = self.fc(x)
        return torch.tanh(h * self.p if self.op == "mul" else h + self.p if self.op == "add" else h / self.p)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), mid=st.lists(st.integers(1, 3), max_size=2), c=st.integers(1, 3),
       keep=st.integers(0, 3), ones=st.lists(st.booleans(), min_size=3, max_size=3),
       op=st.sampled_from(["mul", "add", "div"]))
def test_free_parameter_shapes_match_torch_func(n, mid, c, keep, ones, op):
    """Any broadcastable free-parameter shape: a suffix of the activation's (.., c) shape, some dims 1."""
    act = (*mid, c)
    suffix = act[len(act) - min(keep, len(act)):]
    shape = tuple(1 if o else s for s, o in zip(suffix, ones))
    torch.manual_seed(n + c)
    model = Scaled(c, shape, op)
    x = torch.randn(n, *act, generator=torch.Generator().manual_seed(len(mid)))
    v = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(n))
    ref = per_sample_grad_norms(model, x, v, backend="vmap").detach().numpy()
    np.testing.assert_allclose(per_sample_grad_norms(model, x, v).numpy(), ref, rtol=1e-9, atol=1e-12)


class SeqFirst(nn.Module):
    """One layer applied seq-first: (N, T, C) -> (T, N, C) -> layer -> (N, T, ·)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        h = x.transpose(0, 1)
        if isinstance(self.layer, nn.MultiheadAttention):
            out = self.layer(h, h, h)[0]  # need_weights=True: the weights (N, L, S) are batch-first
        else:
            out = self.layer(h)
        return torch.tanh(out.transpose(0, 1))


def _seq_first_setting(kind, n, c, t):
    g = torch.Generator().manual_seed(n * 100 + c * 10 + t)
    if kind == "mha":
        return nn.MultiheadAttention(2 * c, 2), torch.randn(n, t, 2 * c, generator=g)
    if kind == "linear":
        return nn.Linear(c, c + 1), torch.randn(n, t, c, generator=g)
    if kind == "layernorm":
        return nn.LayerNorm(c), torch.randn(n, t, c, generator=g)
    if kind == "rmsnorm":
        return nn.RMSNorm(c), torch.randn(n, t, c, generator=g)
    if kind == "embedding":
        return nn.Embedding(c + 3, 3), torch.randint(0, c + 3, (n, t), generator=g)
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["mha", "linear", "layernorm", "rmsnorm", "embedding"])
@settings(max_examples=4, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 3), t=st.integers(1, 4))
def test_seq_first_layers_match_torch_func(kind, n, c, t):
    torch.manual_seed(c + t)
    layer, x = _seq_first_setting(kind, n, c, t)
    model = SeqFirst(layer)
    v = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(n))
    ref = per_sample_grad_norms(model, x, v, backend="vmap").detach().numpy()
    np.testing.assert_allclose(per_sample_grad_norms(model, x, v).numpy(), ref, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the public registry: a user's seq-first layer
# ---------------------------------------------------------------------------------------------
class TimeMix(nn.Module):
    """A user's seq-first layer (T, N, C): a learned mix over time, then a channel gain."""

    def __init__(self, t, c):
        super().__init__()
        self.mix = nn.Parameter(torch.eye(t) + 0.1 * torch.randn(t, t))
        self.g = nn.Parameter(torch.randn(c))

    def forward(self, x):  # (T, N, C)
        return torch.einsum("st,tnc->snc", self.mix, x) * self.g


def test_user_seq_first_layer_with_batch_dim():
    from bandscope.torch.lnp import vmap_handler

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), SeqFirstWrap(TimeMix(4, 3)))
    x = torch.randn(5, 4, 3)
    register_lnp_handler(TimeMix, vmap_handler, params="all")  # batch_dim=0 (the default): wrong for it
    with pytest.raises(NotImplementedError, match=r"'1\.layer'.*batch_dim"):
        measure_lnp(model, F.mse_loss, (x, x), backend="hooks")
    register_lnp_handler(TimeMix, vmap_handler, params="all", batch_dim=1)
    _check(model, F.mse_loss, (x, x), (x[:3], x[:3]))
    register_lnp_handler(TimeMix, vmap_handler, params="all", batch_dim=lambda m: 1)
    _check(model, F.mse_loss, (x, x))


class SeqFirstWrap(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x.transpose(0, 1)).transpose(0, 1)


def test_register_batch_dim_is_validated():
    with pytest.raises(ValueError, match="batch_dim"):
        register_lnp_handler(TimeMix, lambda *a: {}, batch_dim=-1)
    with pytest.raises(ValueError, match="batch_dim"):
        register_lnp_handler(TimeMix, lambda *a: {}, batch_dim="first")
    assert LayerHandler(lambda *a: {}).batch_dim == 0  # the default keeps the earlier contract


# ---------------------------------------------------------------------------------------------
# what cannot be had exactly: errors naming the layer / parameter and the fix
# ---------------------------------------------------------------------------------------------
class MatmulFree(nn.Module):
    """A free (D, D) matrix used as ``x @ W``: on (N, D) inputs no per-sample copy broadcasts."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 3)
        self.W = nn.Parameter(torch.randn(3, 3))

    def forward(self, x):
        return torch.tanh(self.fc(x)) @ self.W


class NormalisedGain(nn.Module):
    """A free gain used in a reduction over its own entries (g / ||g||): no per-sample copy gives it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 3)
        self.g = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return self.fc(x) * self.g / self.g.norm()


class TwoRanks(nn.Module):
    """One free (D,) gain used on an (N, D) and an (N, T, D) tensor."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 3)
        self.g = nn.Parameter(torch.randn(3))

    def forward(self, x):  # (N, T, 3)
        pooled = self.fc(x).mean(1) * self.g  # (N, 3)
        return self.fc(x) * self.g + pooled.unsqueeze(1)


class Merged(nn.Module):
    """A Linear on (N*T, D): the batch merged with the time dim."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        n, t, d = x.shape
        return self.fc(x.reshape(n * t, d)).reshape(n, t, d)


def test_free_parameter_outside_broadcasting_is_named():
    x = torch.randn(4, 3)
    with pytest.raises(NotImplementedError, match=r"'W'.*register_lnp_handler.*backend='vmap'"):
        measure_lnp(MatmulFree(), F.mse_loss, (x, x), backend="hooks")
    with pytest.raises(NotImplementedError, match=r"'g'.*backend='vmap'"):
        measure_lnp(NormalisedGain(), F.mse_loss, (x, x), backend="hooks")
    ds = measure_lnp(MatmulFree(), F.mse_loss, (x, x), network_scale="exact", backend="vmap")
    np.testing.assert_allclose(float(ds.network_scale), _oracle_scale(MatmulFree(), x),
                               rtol=1e-10)


class Transposed(nn.Module):
    """A free (D, D) matrix used through .T: refused (the property indexes the copy's dims)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.W = nn.Parameter(torch.randn(3, 3))

    def forward(self, x):  # (N, T, 3)
        return x @ self.W.T


def test_free_parameter_transposed_is_named():
    x = torch.randn(4, 2, 3)
    with pytest.raises(NotImplementedError, match=r"'W'.*\.T\b.*backend='vmap'"):
        measure_lnp(Transposed(), F.mse_loss, (x, x), backend="hooks")


class SlicedTable(nn.Module):
    """A free (T, D) table sliced on its first dim: on the per-sample copy the slice would cut the batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 3)
        self.pos = nn.Parameter(torch.randn(8, 3))

    def forward(self, x):  # (N, T, 3), T <= 8
        return self.fc(x + self.pos[: x.shape[1]])


@pytest.mark.parametrize("n", [3, 9])
def test_free_parameter_sliced_on_its_first_dim_is_named(n):
    """pos[:T] is a no-op on the copy at the dry-run batch sizes (<= 4 < T): caught by the op, not the size."""
    x = torch.randn(n, 5, 3)
    with pytest.raises(NotImplementedError, match=r"'pos'.*__getitem__.*\(1, T, D\).*backend='vmap'"):
        measure_lnp(SlicedTable(), F.mse_loss, (x, x), backend="hooks")


def test_batched_matmul_with_a_free_matrix_is_exact():
    """x @ W on (N, T, D) inputs: the (N, D, D) per-sample copy is a batched matmul, exact."""
    x = torch.randn(4, 2, 3)
    _check(MatmulFree(), F.mse_loss, (x, x))


def test_free_parameter_used_at_two_ranks_is_exact_or_named():
    x = torch.randn(4, 2, 3)
    with pytest.raises(NotImplementedError, match=r"'g'.*backend='vmap'"):
        measure_lnp(TwoRanks(), F.mse_loss, (x, x), backend="hooks")


def test_merged_batch_is_named():
    x = torch.randn(4, 2, 3)
    with pytest.raises(NotImplementedError, match=r"'fc'.*batch is not a dim of its own.*backend='vmap'"):
        measure_lnp(Merged(), F.mse_loss, (x, x), backend="hooks")


def test_whole_seq_first_model_names_the_fix():
    """A model that takes (T, N, E) itself: the hooks path names the transposing wrapper."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0), 1)
    x = torch.randn(5, 3, 8)  # (T, N, E)
    with pytest.raises(NotImplementedError, match=r"'layers\.0\.self_attn'.*dim 1.*transpose\(0, 1\).*backend='vmap'"):
        measure_lnp(model, F.mse_loss, (x, x), backend="hooks")


class SeqFirstArange(nn.Module):
    """A seq-first model adding an unbatched positional lookup with the batch dim inserted after it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pos = nn.Embedding(5, 3)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):  # (N, T, 3)
        h = x.transpose(0, 1) + self.pos(torch.arange(x.shape[1])).unsqueeze(1)  # (T, N, 3)
        return self.fc(h).transpose(0, 1)


def test_unbatched_lookup_that_cannot_be_expanded_is_named():
    x = torch.randn(4, 5, 3)
    with pytest.raises(NotImplementedError, match=r"\('pos', 0\).*backend='vmap'"):
        measure_lnp(SeqFirstArange(), F.mse_loss, (x, x), backend="hooks")
    ds = measure_lnp(SeqFirstArange(), F.mse_loss, (x, x), network_scale="exact", backend="vmap")
    np.testing.assert_allclose(float(ds.network_scale),
                               _oracle_scale(SeqFirstArange(), x), rtol=1e-10)
