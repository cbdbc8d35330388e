"""torch twin of the Haar band losses (bandscope.torch.haar) against the numpy core."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bandscope.torch.haar import haar_band_losses, haar_band_project, haar_levels  # noqa: E402
from bandscope.transforms.bands import _band_energies_pywt, band_decompose, band_losses  # noqa: E402

# numeric: runs again in the rounding lane (`make test-rounding`, AVX-512 kernels off)
pytestmark = [pytest.mark.torch, pytest.mark.numeric]


@st.composite
def shapes(draw):
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    return tuple(lead) + (draw(st.integers(1, 3)), 2 ** draw(st.integers(0, 5)), 0)


@settings(max_examples=30, deadline=None)
@given(shapes(), st.integers(0, 2**31 - 1))
def test_equals_numpy_core_float64(shape, seed):
    shape = shape[:-1] + (shape[-2],)
    rng = np.random.default_rng(seed)
    x, r = rng.normal(size=shape), rng.normal(size=shape)
    got = haar_band_losses(torch.from_numpy(x), torch.from_numpy(r), per_image=True).numpy()
    ref = band_losses(x, r, per_image=True).values
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    ref_pywt = _band_energies_pywt(x, r) / np.prod(shape[-3:])
    np.testing.assert_allclose(got, ref_pywt, rtol=1e-12, atol=1e-15)
    panel = haar_band_losses(torch.from_numpy(x), torch.from_numpy(r)).numpy()
    np.testing.assert_allclose(panel, band_losses(x, r).values, rtol=1e-12, atol=1e-15)
    assert panel.shape == (haar_levels(shape[-1]) + 1,)


def test_half_precision_inputs_work_in_float32():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 32, 32)).astype(np.float16)
    r = rng.random((4, 3, 32, 32)).astype(np.float16)
    got = haar_band_losses(torch.from_numpy(x), torch.from_numpy(r))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), band_losses(x, r).values, rtol=1e-5)
    got64 = haar_band_losses(torch.from_numpy(x), torch.from_numpy(r), dtype=torch.float64)
    np.testing.assert_allclose(got64.numpy(), band_losses(x, r, dtype=np.float64).values, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_image_blocks_equal_the_whole_panel(monkeypatch, dtype):
    """On the CPU without autograd the panel is transformed in blocks of images (cache-sized):
    per image and panel values equal the one-piece computation (to the working precision's
    rounding), and float16 inputs equal their float32 values given as float32, bit for bit."""
    from bandscope.torch import haar

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((2, 7, 3, 16, 16))).to(dtype)
    r = torch.from_numpy(rng.random((2, 7, 3, 16, 16))).to(dtype)
    monkeypatch.setattr(haar, "_BLOCK_BYTES", 1 << 40)
    whole = haar_band_losses(x, r, per_image=True)
    monkeypatch.setattr(haar, "_BLOCK_BYTES", 3 * 3 * 16 * 16 * 4)  # 3 images per block
    blocked = haar_band_losses(x, r, per_image=True)
    assert blocked.shape == whole.shape == (2, 7, 5)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    np.testing.assert_allclose(blocked.numpy(), whole.numpy(), rtol=tol)
    np.testing.assert_allclose(haar_band_losses(x, r).numpy(), whole.reshape(-1, 5).mean(0).numpy(), rtol=tol)
    x16, r16 = x.half(), r.half()
    x32 = x16.float()
    want = haar_band_losses(x32, r16.float(), per_image=True)
    assert torch.equal(haar_band_losses(x16, r16, per_image=True), want)
    assert torch.equal(haar_band_losses(x32, r16, per_image=True), want)
    assert torch.equal(x32, x16.float())  # a float32 input is not modified in place


def test_project_sums_to_e_orthogonal_and_matches_numpy():
    e = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    parts = haar_band_project(e)
    assert parts.shape == (5, 3, 2, 16, 16)
    torch.testing.assert_close(parts.sum(0), e, rtol=0, atol=1e-12)
    flat = parts.reshape(5, -1)
    gram = flat @ flat.T
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max() < 1e-10 * torch.trace(gram)
    # per image, too (orthogonality holds image by image)
    per = torch.einsum("iabhw,jabhw->abij", parts, parts)
    eye = torch.eye(5, dtype=torch.bool)
    assert per[..., ~eye].abs().max() < 1e-10 * per[..., eye].abs().max()
    np.testing.assert_allclose(parts.numpy(), band_decompose(e.numpy()), atol=1e-12)
    # ||e_i||^2 / (C H W) are the band losses
    L = (parts**2).sum(dim=(-3, -2, -1)).T / (2 * 16 * 16)
    torch.testing.assert_close(L, haar_band_losses(e, torch.zeros_like(e), per_image=True))


@pytest.mark.parametrize("per_image", [False, True])
def test_gradient_is_minus_two_e_i_over_n(per_image):
    torch.manual_seed(0)
    n_img, c, h = 3, 2, 8
    x = torch.randn(n_img, c, h, h, dtype=torch.float64, requires_grad=True)
    recon = torch.randn(n_img, c, h, h, dtype=torch.float64, requires_grad=True)
    e_parts = haar_band_project((x - recon).detach())
    for i in range(haar_levels(h) + 1):
        x.grad = recon.grad = None
        L = haar_band_losses(x, recon, per_image=per_image)
        if per_image:
            L[:, i].sum().backward()  # sum over images of per-image losses: n = C*H*W
            n = c * h * h
        else:
            L[i].backward()  # panel mean: n = N*C*H*W
            n = n_img * c * h * h
        torch.testing.assert_close(recon.grad, -2 * e_parts[i] / n, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(x.grad, 2 * e_parts[i] / n, rtol=1e-12, atol=1e-14)


def test_gradcheck_and_project_linear():
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    recon = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: haar_band_losses(x, r, per_image=True), (recon,))
    e = torch.randn(1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(haar_band_project, (e,))


def test_no_grad_mode_and_float32():
    x, r = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        L = haar_band_losses(x, r)
    assert not L.requires_grad and L.dtype == torch.float32
    torch.testing.assert_close(L.sum(), ((x - r) ** 2).mean(), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "xs, rs, match",
    [
        ((2, 3, 8, 6), (2, 3, 8, 6), "square"),
        ((2, 3, 12, 12), (2, 3, 12, 12), "power of two"),
        ((2, 3, 8, 8), (2, 3, 4, 4), "same shape"),
        ((8, 8), (8, 8), "at least 3 dims"),
    ],
)
def test_errors(xs, rs, match):
    with pytest.raises(ValueError, match=match):
        haar_band_losses(torch.zeros(xs), torch.zeros(rs))
    if len(xs) >= 3 and xs == rs:
        with pytest.raises(ValueError, match=match):
            haar_band_project(torch.zeros(xs))
