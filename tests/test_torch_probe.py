"""BandProbe and panel selection (key search A.6, A.8)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bandscope.torch.probe import BandProbe, select_panel
from bandscope.transforms.bands import band_losses

# numeric: runs again in the rounding lane (`make test-rounding`, AVX-512 kernels off)
pytestmark = pytest.mark.numeric


class _Noisy(torch.nn.Module):
    """Deterministic 'reconstruction' with dropout, so train/eval mode matters."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return torch.sigmoid(self.drop(self.conv(x)))


@pytest.mark.parametrize("batch_size", [256, 5])
def test_probe_equals_numpy_core(batch_size):
    torch.manual_seed(0)
    model = _Noisy()
    panel = (torch.rand(12, 3, 16, 16) * 255).to(torch.uint8)
    model.train()
    res = BandProbe(panel, batch_size=batch_size, keep_recon=True)(model)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        x = panel.double() / 255.0
        recon = model(panel.float() / 255.0).double()
    want = band_losses(x.numpy(), recon.numpy()).values
    np.testing.assert_allclose(res.band_loss, want, rtol=1e-6)  # model ran in float32 twice
    assert res.mse == pytest.approx(float(((x - recon) ** 2).mean()), rel=1e-6)
    assert res.band_loss.shape == (5,) and res.recon.dtype == np.float16 and res.recon.shape == (12, 3, 16, 16)


def test_probe_no_grad_and_eval_mode_restored():
    model = _Noisy().eval()
    res = BandProbe(torch.rand(4, 3, 8, 8))(model)
    assert not model.training and res.recon is None
    assert all(p.grad is None for p in model.parameters())


def test_probe_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="output shape"):
        BandProbe(torch.rand(2, 3, 8, 8))(torch.nn.Conv2d(3, 1, 1))


def test_select_panel_without_replacement_seed_plus_3():
    idx = select_panel(20_000, 45)
    assert idx.shape == (256,) and np.unique(idx).size == 256 and idx.max() < 20_000
    np.testing.assert_array_equal(idx, np.random.default_rng(48).choice(20_000, 256, replace=False))
    assert not np.array_equal(idx, select_panel(20_000, 46))
    assert np.array_equal(np.sort(select_panel(10, 1, 10)), np.arange(10))
    with pytest.warns(UserWarning, match="only 10 images"):  # asked for more: clipped, with a warning
        assert np.array_equal(np.sort(select_panel(10, 1, 11)), np.arange(10))
    with pytest.raises(ValueError):
        select_panel(10, 1, 0)


def test_empty_panel_is_a_clear_error():
    with pytest.raises(ValueError, match="no images"):
        BandProbe(np.zeros((0, 3, 8, 8), dtype=np.float32))
