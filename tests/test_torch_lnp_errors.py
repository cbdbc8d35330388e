"""measure_lnp / LNPHook on NaN inputs, a diverged model, a loss that ignores the outputs."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from bandscope.io import read_run  # noqa: E402
from bandscope.torch import LNPHook, RunRecorder, measure_lnp  # noqa: E402


def _net(out_act=True):
    torch.manual_seed(0)
    layers = [nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers, *( [nn.Sigmoid()] if out_act else []))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=g), torch.rand(16, 3, generator=g)


def _nan_input():
    x, y = _data()
    x[3, 1] = float("nan")
    return _net(), (x, y)


def _diverged():
    net = _net()
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    return net, _data()


def _inf_input_conv():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 1, 3, padding=1), nn.Sigmoid())
    x = torch.randn(4, 1, 8, 8)
    x[0, 0, 0, 0] = float("inf")
    return net, (x, torch.rand(4, 1, 8, 8))


@pytest.mark.parametrize("make", [_nan_input, _diverged, _inf_input_conv])
@pytest.mark.parametrize("kw", [{}, {"network_scale": "batch-hutchinson"}, {"network_scale": "exact"},
                                {"backend": "vmap"}, {"exact_output_layer": False}])
def test_non_finite_gives_nan_with_a_reason_like_the_exact_route(make, kw):
    model, batch = make()
    ds = measure_lnp(model, nn.MSELoss(), batch, seed=0, **kw)
    assert np.isnan(float(ds.spectral_position))
    assert "NaN or inf" in str(ds.reason.values)


def test_hook_keeps_the_reason_in_the_run_file(tmp_path):
    model, batch = _diverged()
    with RunRecorder(tmp_path / "run.nc", name="diverged") as rec:
        hook = LNPHook(model, nn.MSELoss(), schedule=[0, 1], seed=0, recorder=rec)
        for step in (0, 1):
            hook(step, batch)
            rec.record(step=step, band_loss=[0.1, 0.1], param_time=float(step))
    ds = read_run(tmp_path / "run.nc")
    assert np.isnan(ds["lnp_spectral_position"].values).all()
    assert all("NaN or inf" in str(r) for r in ds["lnp_reason"].values)


@pytest.mark.parametrize("loss_fn", [
    lambda out, y: (y ** 2).mean(),  # no graph at all
    lambda out, y: (y ** 2).mean() + 0.0 * torch.ones((), requires_grad=True),  # a graph without the outputs
])
def test_loss_that_ignores_the_outputs_is_a_clear_error(loss_fn):
    model = _net()
    with pytest.raises(ValueError, match="does not depend on the model's outputs"):
        measure_lnp(model, loss_fn, _data(), seed=0, n_units=16)
    hook = LNPHook(model, loss_fn, schedule=[0], seed=0, n_units=16)
    with pytest.raises(ValueError, match="does not depend on the model's outputs"):
        hook(0, _data())


def test_unused_trainable_parameters_are_named():
    class Half(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(NotImplementedError, match="unused"):  # hooks backend: its own clear message
        measure_lnp(Half(), nn.MSELoss(), _data(), seed=0, backend="hooks")
    with pytest.raises(ValueError, match=r"unused\.weight"):  # auto: the hooks refuse, vmap names them
        measure_lnp(Half(), nn.MSELoss(), _data(), seed=0)
    with pytest.raises(ValueError, match=r"unused\.weight"):  # vmap: named before autograd complains
        measure_lnp(Half(), nn.MSELoss(), _data(), seed=0, backend="vmap")


def test_an_empty_batch_is_an_input_error_not_a_zero_division():
    from bandscope.errors import BandscopeInputError

    m = nn.Linear(3, 2)
    with pytest.raises(BandscopeInputError, match="batch_a is empty"):
        measure_lnp(m, nn.MSELoss(), (torch.zeros(0, 3), torch.zeros(0, 2)))
    with pytest.raises(BandscopeInputError, match="batch_b is empty"):
        measure_lnp(m, nn.MSELoss(), (torch.zeros(4, 3), torch.zeros(4, 2)), (torch.zeros(0, 3), torch.zeros(0, 2)))
