"""backend="auto", the checks that name the real reason, and the invariants every result must satisfy.

Each model is compared with the explicit-eNTK oracle (``tests/lnp_oracle.py``: jacrev of the whole
batch, no code shared with the measurement) or refused with the named reason. The mutation tests
break the engine so that it would give a wrong number and check that the named invariant refuses.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bandscope.torch import measure_lnp
from bandscope.torch.lnp import InvariantError, NotPerSampleError, estimators, handlers
from lnp_oracle import kernel_oracle

RTOL = 1e-9


def _r(*shape, seed=4):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _exact(model, batch, loss=F.mse_loss, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = measure_lnp(model, loss, batch, network_scale="exact", seed=0, **kw)
    return ds, [str(w.message) for w in caught if "measure_lnp" in str(w.message)]


def _check_oracle(model, batch, ds, loss=F.mse_loss):
    ref = kernel_oracle(model, loss, batch)
    for var in ("network_scale", "loss_scale", "grad_norm_sq", "spectral_position"):
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=RTOL, err_msg=var)


# ---------------------------------------------------------------------------------------------
# models the hooks do not cover: auto measures them through vmap, warns once, records why
# ---------------------------------------------------------------------------------------------
class Seq(nn.Module):
    def __init__(self, *layers, reduce=False):
        super().__init__()
        self.body = nn.Sequential(*layers)
        self.reduce = reduce

    def forward(self, x):
        out = self.body(x)
        out = out[0] if isinstance(out, tuple) else out
        return out.flatten(1) if self.reduce else out


class MinGPTPos(nn.Module):
    """minGPT's pattern: a free positional parameter sliced as pos[:T] from a longer table."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.pos = nn.Parameter(torch.randn(9, 4))
        self.head = nn.Linear(4, 3)

    def forward(self, idx):
        return self.head(torch.tanh(self.emb(idx) + self.pos[:idx.shape[1]]))


class ScaledEmbedding(nn.Embedding):
    """Gemma / BART style: the parent's lookup times a scale (overrides forward)."""

    def forward(self, idx):
        return super().forward(idx) * 3.0


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """ConvNeXt's LayerNorm: an nn.LayerNorm subclass normalising dim 1 of (N, C, H, W)."""

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - u) / torch.sqrt(s + self.eps) + self.bias[:, None, None]


class PlainSubclass(nn.Linear):
    """A subclass that inherits forward: it keeps nn.Linear's handler."""


def _tokens(n=4, t=5, v=7):
    return torch.randint(0, v, (n, t), generator=torch.Generator().manual_seed(3))


AUTO_VMAP = {  # name -> (model, inputs, a word the warning must contain)
    "grouped-conv": (lambda: Seq(nn.Conv2d(2, 2, 3, groups=2), reduce=True), _r(4, 2, 4, 4), "Conv2d"),
    "depthwise-conv": (lambda: Seq(nn.Conv2d(3, 3, 3, groups=3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 1),
                                   reduce=True), _r(4, 3, 4, 4), "Conv2d"),
    "conv3d": (lambda: Seq(nn.Conv3d(2, 2, 3, padding=1), reduce=True), _r(4, 2, 3, 3, 3), "body.0"),
    "mingpt-pos": (MinGPTPos, _tokens(), "pos"),
    "scaled-embedding": (lambda: Seq(ScaledEmbedding(7, 4), nn.Tanh(), nn.Linear(4, 3)), _tokens(),
                         "ScaledEmbedding"),
    "convnext-layernorm": (lambda: Seq(nn.Conv2d(2, 3, 1), ChannelsFirstLayerNorm(3), reduce=True),
                           _r(4, 2, 3, 3), "ChannelsFirstLayerNorm"),
}


@pytest.mark.parametrize("name", list(AUTO_VMAP))
def test_auto_measures_what_the_hooks_refuse_through_vmap_exactly(name):
    build, x, word = AUTO_VMAP[name]
    torch.manual_seed(0)
    model = build().double()
    y = torch.zeros_like(model(x))
    ds, warned = _exact(model, (x, y))
    assert ds.attrs["backend"] == "vmap" and ds.attrs["backend_requested"] == "auto"
    assert len(warned) == 1 and word in warned[0] and word in ds.attrs["hooks_refusal"]
    _check_oracle(model, (x, y), ds)
    ds2, warned2 = _exact(model, (x, y))  # the decision is remembered: no second warning
    assert warned2 == [] and ds2.attrs["backend"] == "vmap"
    with pytest.raises(NotImplementedError, match=word.split(".")[0]):  # explicit hooks: the strict refusal
        measure_lnp(model, F.mse_loss, (x, y), network_scale="exact", backend="hooks")


def test_a_subclass_that_inherits_forward_keeps_the_hooks():
    torch.manual_seed(0)
    model = Seq(PlainSubclass(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = _r(4, 3)
    ds, warned = _exact(model, (x, torch.zeros(4, 2, dtype=torch.float64)))
    assert ds.attrs["backend"] == "hooks" and warned == []
    _check_oracle(model, (x, torch.zeros(4, 2, dtype=torch.float64)), ds)


def test_a_subclass_that_overrides_forward_is_named_by_the_hooks():
    torch.manual_seed(0)
    model = Seq(ScaledEmbedding(7, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = _tokens()
    with pytest.raises(NotImplementedError, match=r"ScaledEmbedding, a subclass of torch\.nn.*Embedding.*overrides"):
        measure_lnp(model, F.mse_loss, (x, torch.zeros(4, 5, 3, dtype=torch.float64)), backend="hooks")


@pytest.mark.parametrize("rnn", [nn.GRU, nn.LSTM])
def test_recurrent_layers_are_refused_by_both_naming_them(rnn):
    torch.manual_seed(0)
    model = Seq(nn.Linear(3, 3), rnn(3, 4, batch_first=True), reduce=True).double()
    x = _r(4, 5, 3)
    with pytest.raises(NotImplementedError, match=rf"neither backend.*{rnn.__name__}.*Cell") as info:
        measure_lnp(model, F.mse_loss, (x, torch.zeros(4, 20, dtype=torch.float64)))
    assert "use backend='vmap'" not in str(info.value)  # never advise the backend that refused too


# ---------------------------------------------------------------------------------------------
# random forwards, samples that interact: named, in the mode the model is measured in
# ---------------------------------------------------------------------------------------------
class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(F.dropout(torch.tanh(self.a(x)), 0.3, self.training))


class DropPath(nn.Module):
    """Stochastic depth (timm's DropPath): a per-sample Bernoulli keep mask drawn in train mode."""

    def forward(self, x):
        if not self.training:
            return x
        keep = torch.rand(x.shape[0], 1, dtype=x.dtype) > 0.2
        return x * keep / 0.8


class NumpyMask(nn.Module):
    """SpecAugment done in numpy: a random time mask drawn from numpy's global RNG in train mode."""

    def forward(self, x):
        if self.training:
            t = np.random.randint(0, x.shape[1])
            x = x.clone()
            x[:, t] = 0
        return x


class HandBatchNorm(nn.Module):
    """A hand-written BatchNorm: batch statistics in train mode only (eval: running statistics)."""

    def __init__(self, c):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c) + 0.1), nn.Parameter(torch.zeros(c) + 0.1)
        self.register_buffer("mean", torch.zeros(c))
        self.register_buffer("var", torch.ones(c))

    def forward(self, x):
        if self.training:
            m, v = x.mean(0), x.var(0, unbiased=False)
        else:
            m, v = self.mean, self.var
        return self.weight * (x - m) / torch.sqrt(v + 1e-5) + self.bias


RANDOM = {"functional-dropout": (FunctionalDropout, "FunctionalDropout"),
          "drop-path": (lambda: Seq(nn.Linear(3, 4), DropPath(), nn.Linear(4, 2)), "body.1"),
          "numpy-mask": (lambda: Seq(nn.Linear(3, 4), NumpyMask(), nn.Linear(4, 2)), "body.1")}


class Replay(nn.Module):
    """The oracle's view of a random forward: every call reseeds torch's and numpy's generators, so
    it draws what the measured forward drew after the same seeding (no bandscope code)."""

    def __init__(self, m, seed):
        super().__init__()
        self.m, self.seed = m, seed

    def forward(self, x):
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        return self.m(x)


@pytest.mark.parametrize("backend", ["auto", "hooks", "vmap"])
@pytest.mark.parametrize("name", list(RANDOM))
def test_random_forwards_are_named_and_measured_as_they_ran_by_the_hooks(name, backend):
    """A module whose training-mode forward draws random numbers: the hooks measure the forward as it
    ran (checked against the oracle replaying the same draws) with a warning naming it; vmap refuses
    naming it and model.eval(); in eval mode both are exact."""
    build, where = RANDOM[name]
    torch.manual_seed(0)
    model = build().double().train()
    x, y = _r(4, 3), torch.zeros(4, 2, dtype=torch.float64)
    if backend == "vmap":
        with pytest.raises(NotPerSampleError, match=rf"draws random numbers.*{where}.*model\.eval\(\)"):
            measure_lnp(model, F.mse_loss, (x, y), network_scale="exact", backend=backend)
    else:
        torch.manual_seed(123)
        np.random.seed(123)
        with pytest.warns(UserWarning, match=rf"{where}.*draws random numbers.*model\.eval\(\)"):
            ds = measure_lnp(model, F.mse_loss, (x, y), network_scale="exact", backend=backend)
        assert ds.attrs["backend"] == "hooks"
        _check_oracle(Replay(model, 123), (x, y), ds)
    ds, _ = _exact(model.eval(), (x, y), backend=backend)
    _check_oracle(model, (x, y), ds)


class AlwaysRandom(nn.Module):
    """Noise injected whatever the mode (ViT-MAE's masking without a noise= input): no backend measures it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)

    def forward(self, x):
        return self.a(x) + 0.1 * torch.randn(x.shape[0], 2, dtype=x.dtype)


@pytest.mark.parametrize("backend", ["auto", "hooks", "vmap"])
def test_a_forward_random_in_eval_mode_too_is_refused_by_every_backend(backend):
    model = AlwaysRandom().double().eval()
    with pytest.raises(NotPerSampleError, match=r"draws random numbers.*AlwaysRandom"):
        measure_lnp(model, F.mse_loss, (_r(4, 3), torch.zeros(4, 2, dtype=torch.float64)), backend=backend)


@pytest.mark.parametrize("backend", ["auto", "hooks", "vmap"])
def test_train_mode_batch_statistics_written_by_hand_are_caught_in_train_mode(backend):
    torch.manual_seed(0)
    model = Seq(nn.Linear(3, 4), HandBatchNorm(4), nn.Tanh(), nn.Linear(4, 2)).double().train()
    x, y = _r(6, 3), torch.zeros(6, 2, dtype=torch.float64)
    with pytest.raises(NotPerSampleError, match=r"samples interact.*training mode.*'body\.1' \(HandBatchNorm\)"):
        measure_lnp(model, F.mse_loss, (x, y), backend=backend)
    ds, _ = _exact(model.eval(), (x, y), backend=backend)  # eval: running statistics, a per-sample function
    _check_oracle(model, (x, y), ds)


@pytest.mark.parametrize("backend", ["auto", "hooks", "vmap"])
def test_train_mode_nn_dropout_is_measured_as_it_ran_by_the_hooks(backend):
    torch.manual_seed(0)
    model = Seq(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 2)).double().train()
    x, y = _r(4, 3), torch.zeros(4, 2, dtype=torch.float64)
    if backend == "vmap":
        with pytest.raises(NotImplementedError, match=r"Dropout.*model\.eval\(\)"):
            measure_lnp(model, F.mse_loss, (x, y), backend=backend)
        return
    ds = measure_lnp(model, F.mse_loss, (x, y), network_scale="exact", backend=backend)
    assert ds.attrs["backend"] == "hooks" and float(ds.network_scale) > 0


# ---------------------------------------------------------------------------------------------
# SyncBatchNorm like BatchNorm; torch.compile through the original module; checkpointing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "hooks", "vmap"])
def test_sync_batchnorm_is_measured_like_batchnorm(backend):
    torch.manual_seed(0)
    bn = Seq(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Conv2d(3, 1, 2), reduce=True).double().train()
    sync = Seq(nn.Conv2d(2, 3, 3), nn.SyncBatchNorm(3), nn.Tanh(), nn.Conv2d(3, 1, 2), reduce=True).double().train()
    sync.load_state_dict(bn.state_dict())
    x = _r(4, 2, 5, 5)
    y = torch.zeros(4, 4, dtype=torch.float64)
    a = measure_lnp(bn, F.mse_loss, (x, y), network_scale="exact", backend=backend)
    b = measure_lnp(sync, F.mse_loss, (x, y), network_scale="exact", backend=backend)
    for var in ("network_scale", "grad_norm_sq", "loss_scale"):
        np.testing.assert_allclose(float(b[var]), float(a[var]), rtol=RTOL)
    assert b.attrs["backend"] == ("vmap" if backend == "vmap" else "hooks")


def test_torch_compile_is_measured_through_the_original_module():
    torch.manual_seed(0)
    model = Seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = _r(4, 3), torch.zeros(4, 2, dtype=torch.float64)
    compiled = torch.compile(model, backend="eager")
    ds = measure_lnp(compiled, F.mse_loss, (x, y), network_scale="exact")
    assert "_orig_mod" in ds.attrs["model_measured"]
    _check_oracle(model, (x, y), ds)
    nested = Seq(nn.Linear(3, 4), torch.compile(nn.Linear(4, 2), backend="eager")).double()
    with pytest.raises(NotImplementedError, match=r"'body\.1'.*torch\.compile"):
        measure_lnp(nested, F.mse_loss, (x, y))


class Checkpointed(nn.Module):
    def __init__(self, reentrant):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)
        self.reentrant = reentrant

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        if self.reentrant is None:  # no checkpointing: the oracle's copy (torch.func cannot checkpoint)
            return self.b(torch.tanh(self.a(x)))
        return self.b(checkpoint(lambda t: torch.tanh(self.a(t)), x, use_reentrant=self.reentrant))


def test_reentrant_checkpointing_is_named_with_its_fix():
    torch.manual_seed(0)
    x, y = _r(4, 3), torch.zeros(4, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"reentrant activation checkpointing.*use_reentrant=False"):
            measure_lnp(Checkpointed(True).double(), F.mse_loss, (x, y))
    model = Checkpointed(False).double()
    ds, _ = _exact(model, (x, y))
    assert ds.attrs["backend"] == "hooks"
    plain = Checkpointed(None).double()
    plain.load_state_dict(model.state_dict())
    _check_oracle(plain, (x, y), ds)


class ItemInForward(nn.Module):
    """A data-dependent .item() in a submodule (a padding check): torch.func cannot batch it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Bilinear(4, 4, 2)  # no handler: the hooks refuse, so auto tries vmap

    def forward(self, x):
        h = torch.tanh(self.a(x))
        if float(h.abs().max().item()) > 100:
            h = h / 2
        return self.b(h, h)


def test_a_model_torch_func_cannot_batch_is_measured_one_sample_at_a_time():
    torch.manual_seed(0)
    model = ItemInForward().double()
    x, y = _r(4, 3), torch.zeros(4, 2, dtype=torch.float64)
    ds, warned = _exact(model, (x, y))
    assert ds.attrs["backend"] == "vmap" and "Bilinear" in warned[0]
    assert "per-sample autograd loop" in ds.attrs["backend_note"] and "ItemInForward" in ds.attrs["backend_note"]
    _check_oracle(model, (x, y), ds)


class Boom(nn.Module):
    def forward(self, x):
        if x.shape[0] == 1:  # only the vmap route's single-sample calls
            raise RuntimeError("boom")
        return x


def test_a_vmap_failure_names_the_module():
    model = Seq(nn.Linear(3, 2), Boom()).double()
    x = _r(4, 3)
    with pytest.raises(RuntimeError, match=r"in module 'body\.1' \(Boom\): boom"):
        estimators.vmap_per_sample(model, x, torch.ones(4, 2, dtype=torch.float64), False, None)


# ---------------------------------------------------------------------------------------------
# inputs as they come: dicts, outputs with .logits, output=
# ---------------------------------------------------------------------------------------------
class KwModel(nn.Module):
    """Takes keywords (input_ids, attention_mask, a non-tensor flag) and returns a (logits, aux) tuple."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask, scale=1.0):
        h = torch.tanh(self.emb(input_ids)) * attention_mask[..., None] * scale
        return self.head(h), h.sum()


class TensorIn(nn.Module):
    """The oracle's view of KwModel: one tensor (N, 2, T) in, the logits out (no bandscope code)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(input_ids=x[:, 0], attention_mask=x[:, 1].double(), scale=1.0)[0]


@pytest.mark.parametrize("backend", ["auto", "hooks", "vmap"])
def test_dict_inputs_and_output_selector(backend):
    torch.manual_seed(0)
    model = KwModel().double()
    ids = _tokens()
    mask = torch.ones(4, 5, dtype=torch.float64)
    mask[1, 3:] = 0  # padding: per-sample masks must be split with their samples
    y = torch.zeros(4, 5, 3, dtype=torch.float64)
    batch = ({"input_ids": ids, "attention_mask": mask, "scale": 1.0}, y)
    ds = measure_lnp(model, F.mse_loss, batch, network_scale="exact", output=0, backend=backend)
    ref = kernel_oracle(TensorIn(model), F.mse_loss, (torch.stack([ids, mask.long()], 1), y))
    np.testing.assert_allclose(float(ds.network_scale), ref["network_scale"], rtol=RTOL)
    np.testing.assert_allclose(float(ds.grad_norm_sq), ref["grad_norm_sq"], rtol=RTOL)
    with pytest.raises(TypeError, match="output="):
        measure_lnp(model, F.mse_loss, batch, backend=backend)  # a tuple without a selector


# ---------------------------------------------------------------------------------------------
# mutation checks: break the engine, the named invariant refuses
# ---------------------------------------------------------------------------------------------
def _mlp():
    torch.manual_seed(0)
    return Seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()


def _mlp_batch():
    return _r(4, 3), _r(4, 1, seed=5)


def test_mutation_network_scale_too_small_breaks_cauchy_schwarz(monkeypatch):
    real = estimators.hooks_exact_per_sample
    monkeypatch.setattr(estimators, "hooks_exact_per_sample", lambda taps, out: real(taps, out) * 1e-3)
    with pytest.raises(InvariantError, match="Cauchy-Schwarz"):
        measure_lnp(_mlp(), F.mse_loss, _mlp_batch(), network_scale="exact", backend="hooks")


def test_mutation_hutchinson_too_small_breaks_cauchy_schwarz(monkeypatch):
    real = handlers._REGISTRY[nn.Linear]
    scaled = dataclasses.replace(real, sq_norms=lambda *a, **k: real.sq_norms(*a, **k) * 1e-3)
    monkeypatch.setitem(handlers._REGISTRY, nn.Linear, scaled)
    # verification compares the fast route with the per-sample gradients: it refuses first
    with pytest.raises(NotImplementedError, match="squared-norm route"):
        measure_lnp(_mlp(), F.mse_loss, _mlp_batch(), n_probes=4, seed=0, backend="hooks",
                    exact_output_layer=False)


def test_mutation_zero_network_scale_refused(monkeypatch):
    monkeypatch.setattr(estimators, "hooks_exact_per_sample", lambda taps, out: torch.zeros(out.shape[0]))
    with pytest.raises(InvariantError, match=r"network scale > 0"):
        measure_lnp(_mlp(), F.mse_loss, _mlp_batch(), network_scale="exact", backend="hooks")


def test_mutation_per_sample_gradients_not_summing_to_the_batch_gradient(monkeypatch):
    real = handlers._REGISTRY[nn.Linear]

    def shifted(m, args, kwargs, d):  # a per-sample offset: the sum no longer equals the batch gradient
        return {k: g + 0.1 for k, g in real.grads(m, args, kwargs, d).items()}

    monkeypatch.setitem(handlers._REGISTRY, nn.Linear, dataclasses.replace(real, grads=shifted))
    with pytest.raises(NotImplementedError, match=r"invariant failed \(sum of per-sample gradients"):
        measure_lnp(_mlp(), F.mse_loss, _mlp_batch(), network_scale="exact", backend="hooks")


def test_mutation_in_auto_falls_back_to_vmap_with_the_right_number(monkeypatch):
    real = estimators.hooks_exact_per_sample
    monkeypatch.setattr(estimators, "hooks_exact_per_sample", lambda taps, out: real(taps, out) * 1e-3)
    model = _mlp()
    with pytest.warns(UserWarning, match="Cauchy-Schwarz"):
        ds = measure_lnp(model, F.mse_loss, _mlp_batch(), network_scale="exact")
    assert ds.attrs["backend"] == "vmap"
    _check_oracle(model, _mlp_batch(), ds)
