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


def test_probe_float32_bands_with_float64_sums_match_float64():
    """The default probe (float32 band arithmetic, float64 accumulation) agrees with the float64
    probe to 1e-6 relative per band, and its bands sum to the pixel MSE to 1e-6."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Sigmoid())
    panel = torch.rand(20, 3, 32, 32)
    fast = BandProbe(panel, batch_size=8)
    res = fast(model)
    assert fast.band_dtype == torch.float32
    ref = BandProbe(panel, batch_size=8, dtype=torch.float64)(model)
    np.testing.assert_allclose(res.band_loss, ref.band_loss, rtol=1e-6)
    with torch.no_grad():
        mse = float(((model(panel).double() - panel.double()) ** 2).mean())
    assert res.band_loss.sum() == pytest.approx(mse, rel=1e-6)


def test_torch_haar_float16_equals_float32():
    from bandscope.torch.haar import haar_band_losses

    torch.manual_seed(1)
    x = torch.rand(4, 3, 16, 16).half()
    r = (x.float() + 0.05 * torch.randn(4, 3, 16, 16)).clamp(0, 1).half()
    got = haar_band_losses(x, r, per_image=True)
    want = haar_band_losses(x.float(), r.float(), per_image=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
