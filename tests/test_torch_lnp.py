"""measure_lnp against the explicit eNTK (torch.func.jacrev, K = J J^T, eigh) on small models."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from bandscope.lnp import kernel_lnp
from bandscope.torch import measure_lnp
from bandscope.torch.lnp import per_sample_grad_norms
from lnp_oracle import jacobian, kernel_oracle, output_grad

pytestmark = pytest.mark.usefixtures("float64_torch")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7), nn.ReLU(inplace=True), nn.Linear(7, 4))


def cnn():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(3, 4, 3, padding="same"), nn.GroupNorm(2, 4), nn.ReLU(),
        nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
    )


def cnn_classifier():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LayerNorm(3 * 8 * 8),
                         nn.Linear(3 * 8 * 8, 5))


class TinyLM(nn.Module):
    def __init__(self, vocab=11, dim=6):
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids):
        return self.head(torch.tanh(self.mix(self.emb(ids))))


def _batches(kind):
    g = torch.Generator().manual_seed(7)
    if kind == "mlp_mse":
        model, loss = mlp(), nn.MSELoss()
        mk = lambda n: (torch.randn(n, 5, generator=g), torch.randn(n, 4, generator=g))
    elif kind == "mlp_ce":
        model, loss = mlp(), nn.CrossEntropyLoss()
        mk = lambda n: (torch.randn(n, 5, generator=g), torch.randint(0, 4, (n,), generator=g))
    elif kind == "cnn_mse":
        model, loss = cnn(), nn.MSELoss()
        mk = lambda n: (torch.randn(n, 2, 4, 4, generator=g), torch.randn(n, 2, 4, 4, generator=g))
    elif kind == "cnn_ce":
        model, loss = cnn_classifier(), nn.CrossEntropyLoss()
        mk = lambda n: (torch.randn(n, 2, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g))
    elif kind == "lm_ce":
        model = TinyLM()
        ce = nn.CrossEntropyLoss()
        loss = lambda out, y: ce(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        mk = lambda n: (torch.randint(0, 11, (n, 5), generator=g), torch.randint(0, 11, (n, 5), generator=g))
    return model, loss, mk(6), mk(5)


KINDS = ["mlp_mse", "mlp_ce", "cnn_mse", "cnn_ce", "lm_ce"]


@pytest.mark.parametrize("backend", ["hooks", "vmap"])
@pytest.mark.parametrize("kind", KINDS)
def test_exact_equals_entk(kind, backend):
    model, loss, a, b = _batches(kind)
    units = "targets" if kind == "lm_ce" else None
    ds = measure_lnp(model, loss, a, b, network_scale="exact", backend=backend, n_units=units, n_units_b=units)
    ref = kernel_oracle(model, loss, a, b)
    for var in ["loss_scale", "network_scale", "grad_norm_sq", "spectral_position",
                "loss_scale_b", "network_scale_b", "grad_dot", "spectral_position_cross"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=1e-10, err_msg=var)
    np.testing.assert_allclose(ref["spectral_position"], ref["spectral_position_eig"], rtol=1e-10)
    assert 0 <= float(ds.spectral_position) <= 1
    assert abs(float(ds.spectral_position_cross)) <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_hutchinson_matches_vmapkernel_oracle(kind):
    """Handler (hooks) per-sample ||J_n^T v_n||^2 equal torch.func per-sample vjp norms."""
    model, _, (x, _), _ = _batches(kind)
    out = model(x)
    v = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    h = per_sample_grad_norms(model, x, v, backend="hooks")
    ref = per_sample_grad_norms(model, x, v, backend="vmap")
    np.testing.assert_allclose(h.numpy(), ref.detach().numpy(), rtol=1e-10)


@pytest.mark.parametrize("estimator", ["hutchinson", "batch-hutchinson"])
@pytest.mark.parametrize("kind", ["mlp_mse", "cnn_mse", "cnn_ce"])
def test_hutchinson_within_standard_errors(kind, estimator):
    model, loss, a, _ = _batches(kind)
    ref = kernel_oracle(model, loss, a)
    ds = measure_lnp(model, loss, a, network_scale=estimator, n_probes=32, seed=11)
    z = (float(ds.network_scale) - ref["network_scale"]) / float(ds.network_scale_se)
    assert abs(z) < 4, (z, float(ds.network_scale), ref["network_scale"])
    assert float(ds.network_scale_se) < 0.5 * ref["network_scale"]
    # exact pieces are exact for every estimator
    np.testing.assert_allclose(float(ds.grad_norm_sq), ref["grad_norm_sq"], rtol=1e-10)
    np.testing.assert_allclose(float(ds.loss_scale), ref["loss_scale"], rtol=1e-10)


def test_hutchinson_is_unbiased_over_seeds():
    """Mean of many single-probe estimates within 4 standard errors of the exact trace."""
    model, loss, a, _ = _batches("cnn_mse")
    ref = kernel_oracle(model, loss, a)["network_scale"]
    for est in ["hutchinson", "batch-hutchinson"]:
        vals = np.array([float(measure_lnp(model, loss, a, network_scale=est, seed=s).network_scale)
                         for s in range(25)])
        se = vals.std(ddof=1) / np.sqrt(vals.size)
        assert abs(vals.mean() - ref) < 4 * se, (est, vals.mean(), ref, se)


def test_batchnorm_frozen_statistics_and_state_untouched():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Dropout(0.0), nn.Linear(3 * 4 * 4, 3))
    model.train()
    x, y = torch.randn(6, 2, 4, 4), torch.randint(0, 3, (6,))
    loss = nn.CrossEntropyLoss()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    ds = measure_lnp(model, loss, (x, y), network_scale="exact", seed=0)
    # nothing changed
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert torch.equal(torch.get_rng_state(), rng)
    # oracle: the same network with BatchNorm normalising by the (constant) batch statistics
    frozen = copy.deepcopy(model)
    h = frozen[0](x).detach()
    bn = frozen[1]
    bn.running_mean = h.mean((0, 2, 3))
    bn.running_var = h.var((0, 2, 3), unbiased=False)
    frozen.eval()
    torch.testing.assert_close(frozen(x), model(x))  # same forward values as the training step
    ref = kernel_oracle(frozen, loss, (x, y))
    for var in ["loss_scale", "network_scale", "grad_norm_sq", "spectral_position"]:
        np.testing.assert_allclose(float(ds[var]), ref[var], rtol=1e-10, err_msg=var)


def test_bands_sum_to_whole():
    model, loss, a, _ = _batches("cnn_mse")
    ds = measure_lnp(model, loss, a, network_scale="exact", bands=True)
    assert ds.band.values.tolist() == [1, 2, 4]
    np.testing.assert_allclose(float(ds.band_grad_dot.sum()), float(ds.grad_norm_sq), rtol=1e-10)
    np.testing.assert_allclose(float(ds.band_loss_scale.sum()), float(ds.loss_scale), rtol=1e-10)
    # P_i from the eNTK with the Haar-projected output gradient
    from bandscope.torch.haar import haar_band_project

    m = copy.deepcopy(model)
    j = jacobian(m, a[0])
    k = j @ j.T
    g = torch.from_numpy(output_grad(m, loss, *a)).reshape(m(a[0]).shape)
    for i, gi in enumerate(haar_band_project(g)):
        ref = kernel_lnp(k, gi.reshape(-1).numpy())
        np.testing.assert_allclose(float(ds.band_spectral_position[i]), ref["spectral_position"], rtol=1e-10)
        assert 0 <= float(ds.band_spectral_position[i]) <= 1


def test_errors_are_loud():
    model, loss, a, _ = _batches("mlp_mse")
    with pytest.raises(ValueError, match="network_scale must be one of"):
        measure_lnp(model, loss, a, network_scale="opacus")
    mha = nn.MultiheadAttention(4, 2, batch_first=True)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = mha

        def forward(self, x):
            return self.att(x, x, x)[0]

    x = torch.randn(3, 2, 4)
    ref = kernel_oracle(M(), nn.MSELoss(), (x, x))
    for backend in ("hooks", "vmap"):  # MultiheadAttention has a handler; vmap handles any layer
        ds = measure_lnp(M(), nn.MSELoss(), (x, x), network_scale="exact", backend=backend)
        np.testing.assert_allclose(float(ds.spectral_position), ref["spectral_position"], rtol=1e-10)


@pytest.mark.parametrize("last", ["convT", "conv", "linear"])
def test_exact_output_layer_part_is_exact(last):
    """One parametrised layer + elementwise output map: every Hutchinson estimate is exact."""
    torch.manual_seed(5)
    layer = {"convT": nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1),
             "conv": nn.Conv2d(3, 2, 3, stride=2, padding=1),
             "linear": nn.Linear(3, 2)}[last]
    model = nn.Sequential(layer, nn.Sigmoid())
    x = torch.randn(4, 3, 4, 4) if last != "linear" else torch.randn(4, 5, 3)
    y = model(x).detach() * 0.5
    exact = float(measure_lnp(model, nn.MSELoss(), (x, y), network_scale="exact").network_scale)
    for est in ["hutchinson", "batch-hutchinson"]:
        ds = measure_lnp(model, nn.MSELoss(), (x, y), network_scale=est, seed=0)
        assert ds.attrs["exact_output_layer"] == "0"
        np.testing.assert_allclose(float(ds.network_scale), exact, rtol=1e-10)
    ds = measure_lnp(model, nn.MSELoss(), (x, y), seed=0, exact_output_layer=False)
    assert ds.attrs["exact_output_layer"] == ""
    assert abs(float(ds.network_scale) / exact - 1) > 1e-6  # a genuine random estimate


def test_output_layer_not_elementwise_falls_back():
    """A softmax output mixes coordinates: the shortcut must not be taken."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 4), nn.Softmax(-1))
    x = torch.randn(5, 3)
    ds = measure_lnp(model, nn.MSELoss(), (x, torch.zeros(5, 4)), seed=0)
    assert ds.attrs["exact_output_layer"] == ""


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_random_feature_model_measured_with_torch(alpha):
    """§3.2 check through the torch measurement: frozen ReLU features + zero readout.

    measure_lnp on the torch random-feature model gives the P of the kernel definition (and hence
    tracks Σλ²/(Σλ)², tested in test_lnp.py); for O = 1 every Hutchinson draw is exact.
    """
    rng = np.random.default_rng(0)
    n, dim, width = 64, 30, 200
    lam = np.arange(1, dim + 1) ** -alpha
    lam /= lam.sum()
    x = rng.standard_normal((n, dim)) * np.sqrt(lam)
    f = rng.standard_normal((width, dim))
    phi = np.sqrt(2.0 / width) * np.maximum(x @ f.T, 0)
    y = phi @ rng.standard_normal(width)

    class RF(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Linear(dim, width, bias=False)
            self.features.weight = nn.Parameter(torch.from_numpy(f), requires_grad=False)
            self.readout = nn.Linear(width, 1, bias=False)
            nn.init.zeros_(self.readout.weight)

        def forward(self, inp):
            return self.readout(np.sqrt(2.0 / width) * torch.relu(self.features(inp)))

    loss = lambda out, t: ((out[:, 0] - t) ** 2).sum() / (2 * n)
    batch = (torch.from_numpy(x), torch.from_numpy(y))
    ref = kernel_lnp(phi @ phi.T, -y / n)
    for est in ["exact", "hutchinson", "batch-hutchinson"]:
        ds = measure_lnp(RF(), loss, batch, network_scale=est, n_units="samples", seed=1)
        np.testing.assert_allclose(float(ds.spectral_position), ref["spectral_position"], rtol=1e-9)
        np.testing.assert_allclose(float(ds.network_scale), ref["network_scale"], rtol=1e-9)
    assert ds.attrs["n_units"] == n


@pytest.mark.parametrize("backend", ["hooks", "vmap"])
def test_seeded_measurement_does_not_depend_on_earlier_calls(backend):
    """The first call on a model runs the one-time checks; they draw from their own generator, so
    a seeded measurement is the same whether or not the model was measured before."""
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).double()

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, 3, generator=g, dtype=torch.float64)
    net = build()
    first, second = (float(measure_lnp(net, nn.MSELoss(), (x, y), seed=0, backend=backend).network_scale)
                     for _ in range(2))
    fresh = float(measure_lnp(build(), nn.MSELoss(), (x, y), seed=0, backend=backend).network_scale)
    assert first == second == fresh
    assert float(measure_lnp(net, nn.MSELoss(), (x, y), seed=1, backend=backend).network_scale) != first


def test_class_weighted_cross_entropy_units_are_the_summed_target_weights():
    """M is what the mean divides by: Σ w[y] over targets not ignored (torch's weighted mean)."""
    torch.manual_seed(0)
    net = nn.Linear(4, 3).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, -100, 1])
    w = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64)
    loss = nn.CrossEntropyLoss(weight=w)
    ds = measure_lnp(net, loss, (x, y), network_scale="exact")
    m = float(w[y[y != -100]].sum())
    assert ds.attrs["n_units"] == m
    summed = nn.CrossEntropyLoss(weight=w, reduction="sum")(net(x), y)
    np.testing.assert_allclose(float(loss(net(x), y)), float(summed) / m, rtol=1e-12)


@pytest.mark.parametrize("kind", ["conv", "tokens"])
def test_handler_memo_reused_across_cotangents(kind):
    """Layers in the ghost-norm regime (many channels, few positions or tokens): the unfolded inputs and
    input Gram matrices the handlers keep per layer call are reused for every cotangent of one forward
    (the exact route runs one backward per output coordinate on the same taps), and stay exact."""
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(5)
    if kind == "conv":
        model = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Tanh(),
                              nn.ConvTranspose2d(16, 2, 3, stride=2, padding=1, output_padding=1))
        x = torch.randn(3, 8, 4, 4, generator=g)
    else:
        model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
        x = torch.randn(3, 2, 16, generator=g)
    h = per_sample_grad_norms(model, x, backend="hooks")
    ref = per_sample_grad_norms(model, x, backend="vmap")
    np.testing.assert_allclose(h.numpy(), ref.detach().numpy(), rtol=1e-10)
    out = model(x)
    for s in range(3):
        v = torch.randn(out.shape, generator=torch.Generator().manual_seed(s))
        np.testing.assert_allclose(per_sample_grad_norms(model, x, v).numpy(),
                                   per_sample_grad_norms(model, x, v, backend="vmap").detach().numpy(), rtol=1e-10)


def test_handler_memo_stays_within_its_byte_budget(monkeypatch):
    """The memo keeps a tensor only while the measurement's shared budget has room; with no room the
    handlers recompute per probe and give the same numbers."""
    from bandscope.torch.lnp.handlers import memo_keep
    from bandscope.torch.lnp.taps import capture

    t = torch.zeros(10, dtype=torch.float32)  # 40 bytes
    budget = [100]
    m1, m2, m3 = {"budget": budget}, {"budget": budget}, {"budget": budget}
    memo_keep(m1, "unfold", t)
    memo_keep(m2, "unfold", t)
    memo_keep(m3, "unfold", t)  # 20 bytes left: not kept
    assert "unfold" in m1 and "unfold" in m2 and "unfold" not in m3 and budget == [20]
    memo_keep(None, "unfold", t)  # no memo: nothing to do
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Tanh(),
                          nn.ConvTranspose2d(16, 2, 3, stride=2, padding=1, output_padding=1))
    x = torch.randn(3, 8, 4, 4, generator=torch.Generator().manual_seed(5))
    kept = per_sample_grad_norms(model, x)
    monkeypatch.setattr(capture, "_MEMO_BYTES", 0)
    np.testing.assert_allclose(per_sample_grad_norms(model, x).numpy(), kept.numpy(), rtol=1e-12)
