"""Haar band losses (bandscope.transforms.bands): known answers, oracles (pywt, block-mean projection),
invariants (sum to MSE, Parseval) and errors."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from bandscope.transforms import bands
from bandscope.transforms.bands import (
    _band_energies,
    _band_energies_pywt,
    band_decompose,
    band_energies,
    band_losses,
    haar_levels,
)

# numeric: runs again in the rounding lane (`make test-rounding`, numpy's AVX-512 kernels off)
pytestmark = pytest.mark.numeric

FLOATS = [np.float16, np.float32, np.float64]


def _mse64(x, r):
    """Per-image MSE of the values as given, in float64 (the oracle for the band sum)."""
    e = np.asarray(x, dtype=np.float64) - np.asarray(r, dtype=np.float64)
    return np.mean(e**2, axis=(-3, -2, -1))


@st.composite
def panels(draw, max_j=5):
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    c = draw(st.integers(1, 3))
    j = draw(st.integers(0, max_j))
    dtype = draw(st.sampled_from(FLOATS))
    shape = tuple(lead) + (c, 2**j, 2**j)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.random(shape).astype(dtype)
    r = (rng.random(shape) * draw(st.sampled_from([0.5, 1.0, 3.0]))).astype(dtype)
    return x, r


# ----------------------------------------------------------------------- known answers


def test_haar_levels():
    assert [haar_levels(2**j) for j in range(8)] == list(range(8))
    for bad in (0, 3, 48, -4, 2.5):
        with pytest.raises(ValueError, match="power of two"):
            haar_levels(bad)


def test_constant_error_is_band_one():
    x = np.zeros((2, 3, 8, 8))
    L = band_losses(x, np.full_like(x, 0.5))
    np.testing.assert_allclose(L.values, [0.25, 0, 0, 0], atol=1e-15)
    assert L.band.values.tolist() == [1, 2, 4, 8]


def test_checkerboard_is_finest_band():
    n = 16
    cb = np.indices((n, n)).sum(axis=0) % 2 * 2.0 - 1.0  # +-1 checkerboard: HH of level 1
    L = band_losses(cb[None, None], np.zeros((1, 1, n, n)))
    expect = np.zeros(5)
    expect[-1] = 1.0
    np.testing.assert_allclose(L.values, expect, atol=1e-15)


def test_half_plane_step_is_band_two():
    # left half +1, right half -1: exactly one level-J detail coefficient (resolution 1 -> 2)
    e = np.ones((1, 8, 8))
    e[..., 4:] = -1
    en = band_energies(e)
    np.testing.assert_allclose(en, [0, 64, 0, 0], atol=1e-12)


# ----------------------------------------------------------------------- oracles


@pytest.mark.parametrize(
    "shape", [(4, 3, 64, 64), (2, 1, 32, 32), (3, 2, 1, 1), (5, 3, 2, 2), (3, 4, 4), (2, 2, 3, 16, 16)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_equals_pywt(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x, r = rng.normal(size=shape), rng.normal(size=shape)
    ref = _band_energies_pywt(x, r)
    got = _band_energies(x, r, dtype=dtype)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    assert got.shape == ref.shape == shape[:-3] + (haar_levels(shape[-1]) + 1,)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * ref.sum(axis=-1, keepdims=True).max())


def test_pywt_mode_irrelevant_for_dyadic_sizes():
    import pywt

    e = np.random.default_rng(1).normal(size=(2, 3, 32, 32))
    a = pywt.wavedec2(e, "haar", level=5, axes=(-2, -1))
    b = pywt.wavedec2(e, "haar", level=5, axes=(-2, -1), mode="periodization")
    flat = lambda cs: [cs[0]] + [d for lev in cs[1:] for d in lev]  # noqa: E731
    for ca, cb in zip(flat(a), flat(b)):
        np.testing.assert_array_equal(ca, cb)


def test_decompose_matches_energies_and_is_orthogonal():
    e = np.random.default_rng(2).normal(size=(3, 2, 16, 16))
    parts = band_decompose(e)
    assert parts.shape == (5,) + e.shape
    np.testing.assert_allclose(parts.sum(axis=0), e, atol=1e-12)
    flat = parts.reshape(parts.shape[0], -1)
    gram = flat @ flat.T
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-10 * np.trace(gram)
    per_image = np.moveaxis((parts**2).sum(axis=(-3, -2, -1)), 0, -1)
    np.testing.assert_allclose(band_energies(e), per_image, rtol=1e-12)
    np.testing.assert_allclose(_band_energies_pywt(e), per_image, rtol=1e-12)


def test_small_band_under_large_mean_keeps_precision():
    # error = 1000 (band 1) + 1e-3 checkerboard (finest band): energies differ by 1e12.
    # A difference-of-norms kernel loses the small band completely; ours must not.
    n = 32
    cb = (np.indices((n, n)).sum(axis=0) % 2 * 2.0 - 1.0) * 1e-3
    e = (1000.0 + cb)[None]
    en = band_energies(e)
    exact_fine = float(np.sum(np.square(e - e.mean())))  # all detail is in the finest band
    np.testing.assert_allclose(en[-1], exact_fine, rtol=1e-6)
    np.testing.assert_allclose(en[1:-1], 0, atol=1e-6 * exact_fine)


# ----------------------------------------------------------------------- invariants


@settings(max_examples=40, deadline=None)
@given(panels(), st.sampled_from([np.float32, np.float64]))
def test_bands_sum_to_mse(pair, wd):
    x, r = pair
    per = band_losses(x, r, per_image=True, dtype=wd)
    mse = _mse64(x, r)
    tol = 1e-11 if wd == np.float64 else 3e-6
    np.testing.assert_allclose(per.sum("band").values, mse, rtol=tol, atol=1e-300)
    assert (per.values >= 0).all()
    panel = band_losses(x, r, dtype=wd)
    np.testing.assert_allclose(panel.sum().item(), np.mean(mse), rtol=tol)
    # panel = mean of per-image rows
    lead = [d for d in per.dims if d != "band"]
    np.testing.assert_allclose(panel.values, per.mean(lead).values if lead else per.values, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(panels(max_j=4))
def test_parseval_and_pywt_random(pair):
    x, r = pair
    e = x.astype(np.float64) - r.astype(np.float64)
    en = band_energies(e)
    np.testing.assert_allclose(en.sum(axis=-1), np.sum(e**2, axis=(-3, -2, -1)), rtol=1e-12)
    ref = _band_energies_pywt(x, r)
    np.testing.assert_allclose(_band_energies(x, r), ref, rtol=1e-10, atol=1e-13 * ref.sum() + 1e-300)


def test_float16_and_integer_inputs():
    rng = np.random.default_rng(3)
    x = rng.random((4, 3, 16, 16)).astype(np.float16)
    r = rng.random((4, 3, 16, 16)).astype(np.float16)
    a = band_losses(x, r, dtype=np.float64)
    b = band_losses(x.astype(np.float64), r.astype(np.float64))
    np.testing.assert_allclose(a.values, b.values, rtol=1e-13)
    a32 = band_losses(x, r, dtype=np.float32)
    np.testing.assert_allclose(a32.values, b.values, rtol=1e-5)
    # default for float16/float32 input: float32 working precision (float64 accumulation)
    auto = band_losses(x, r)
    assert auto.attrs["dtype"] == "float32"
    np.testing.assert_allclose(auto.values, b.values, rtol=1e-5)
    assert band_losses(x.astype(np.float64), r).attrs["dtype"] == "float64"
    xi = rng.integers(0, 256, size=(2, 3, 8, 8)).astype(np.uint8)
    ri = rng.integers(0, 256, size=(2, 3, 8, 8)).astype(np.uint8)  # no uint8 wrap-around
    np.testing.assert_allclose(
        band_losses(xi, ri).values, band_losses(xi.astype(float), ri.astype(float)).values, rtol=1e-13
    )


def test_blocking_does_not_change_result(monkeypatch):
    rng = np.random.default_rng(4)
    x, r = rng.normal(size=(7, 3, 16, 16)), rng.normal(size=(7, 3, 16, 16))
    ref = _band_energies(x, r)
    monkeypatch.setattr(bands, "_BLOCK_BYTES", 16 * 16 * 8 * 2)  # 2 rows per block, ragged end
    np.testing.assert_allclose(_band_energies(x, r), ref, rtol=1e-13)


# ----------------------------------------------------------------------- labelled inputs


def test_dataarray_keeps_leading_dims_and_image_dims():
    rng = np.random.default_rng(5)
    data = rng.random((2, 3, 3, 8, 8))
    rec = rng.random((2, 3, 3, 8, 8))
    dims = ("ckpt", "image", "channel", "y", "x")
    coords = {"ckpt": [10, 20], "image": ["a", "b", "c"]}
    xa = xr.DataArray(data, dims=dims, coords=coords)
    ra = xr.DataArray(rec, dims=dims, coords=coords)
    per = band_losses(xa, ra, per_image=True)
    assert per.dims == ("ckpt", "image", "band")
    assert per.image.values.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(per.values, _band_energies(data, rec) / (3 * 64), rtol=1e-13)
    # image dims in another order, named explicitly; recon transposed differently
    xt = xa.transpose("y", "image", "x", "channel", "ckpt")
    rt = ra.transpose("ckpt", "x", "y", "channel", "image")
    per2 = band_losses(xt, rt, per_image=True, image_dims=("channel", "y", "x"))
    xr.testing.assert_allclose(per2.transpose("ckpt", "image", "band"), per)
    panel = band_losses(xa, ra)
    assert panel.dims == ("band",)
    np.testing.assert_allclose(panel.values, per.mean(("ckpt", "image")).values, rtol=1e-13)
    assert panel.attrs["units"] == "squared pixel value" and "A.6" in panel.attrs["paper"]
    assert panel.name == "band_loss"


def test_numpy_leading_dim_names():
    x = np.zeros((2, 3, 1, 4, 4))
    assert band_losses(x, x, per_image=True).dims == ("image_0", "image_1", "band")
    assert band_losses(x[0], x[0], per_image=True).dims == ("image", "band")
    assert band_losses(x[0, 0], x[0, 0], per_image=True).dims == ("band",)


def test_dask_matches_numpy():
    pytest.importorskip("dask")
    rng = np.random.default_rng(6)
    data, rec = rng.random((6, 2, 16, 16)), rng.random((6, 2, 16, 16))
    dims = ("image", "channel", "y", "x")
    xa = xr.DataArray(data, dims=dims).chunk({"image": 2, "y": 8})
    ra = xr.DataArray(rec, dims=dims).chunk({"image": 3})
    lazy = band_losses(xa, ra, per_image=True)
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.compute().values, band_losses(data, rec, per_image=True).values, rtol=1e-13)
    np.testing.assert_allclose(band_losses(xa, ra).values, band_losses(data, rec).values, rtol=1e-13)


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "xs, rs, match",
    [
        ((2, 3, 8, 6), (2, 3, 8, 6), "square"),
        ((2, 3, 12, 12), (2, 3, 12, 12), "power of two"),
        ((2, 3, 8, 8), (2, 3, 4, 4), "same shape"),
        ((8, 8), (8, 8), "at least 3 dims"),
        ((8,), (8,), "at least 3 dims"),
    ],
)
def test_bad_shapes(xs, rs, match):
    with pytest.raises(ValueError, match=match) as info:
        band_losses(np.zeros(xs), np.zeros(rs))
    assert str(xs[-1]) in str(info.value) or str(xs) in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_named(bad):
    x = np.zeros((3, 1, 4, 4))
    r = np.zeros_like(x)
    r[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=r"recon contains 1 non-finite.*\(1, 0, 2, 3\)"):
        band_losses(x, r)


def test_float32_overflow_is_reported():
    x = np.full((1, 1, 4, 4), 3e38, dtype=np.float32)
    with pytest.raises(FloatingPointError, match="float64"):
        band_losses(x, -x, dtype=np.float32)
    assert np.isfinite(band_losses(x, -x).values).all()


def test_bad_options():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="float32 or float64"):
        band_losses(x, x, dtype=np.float16)
    with pytest.raises(TypeError, match="image_dims"):
        band_losses(x, x, image_dims=("a", "b", "c"))
    with pytest.raises(TypeError, match="real numeric"):
        band_losses(x.astype(complex), x.astype(complex))
    xa = xr.DataArray(x, dims=("i", "c", "y", "x"))
    with pytest.raises(ValueError, match="not in x.dims"):
        band_losses(xa, xa, image_dims=("c", "h", "w"))
    with pytest.raises(ValueError, match="same dims"):
        band_losses(xa, xa.rename(i="j"))


def test_mixed_numpy_and_dataarray():
    rng = np.random.default_rng(7)
    data, rec = rng.random((3, 2, 8, 8)), rng.random((3, 2, 8, 8))
    xa = xr.DataArray(data, dims=("img", "c", "y", "x"), coords={"img": [5, 6, 7]})
    ref = band_losses(data, rec, per_image=True).values
    for a, b in ((xa, rec), (data, xa.copy(data=rec))):
        per = band_losses(a, b, per_image=True)
        assert per.dims == ("img", "band") and per.img.values.tolist() == [5, 6, 7]
        np.testing.assert_allclose(per.values, ref, rtol=1e-13)
    with pytest.raises(ValueError, match="same shape"):
        band_losses(data[:2], xa)
    with pytest.raises(ValueError, match="same shape"):
        band_losses(xa, rec[:2])


def test_empty_panel_is_a_clear_error():
    """No images: a message that says so, not numpy's "cannot reshape array of size 0"."""
    x = np.zeros((0, 3, 8, 8))
    with pytest.raises(ValueError, match="no images"):
        band_losses(x, x)


def test_float32_working_precision_is_relative_to_the_error_for_float64_inputs():
    """x ≈ recon in float64, working precision float32: the bands keep float32 accuracy relative to
    the error e = x - recon (found by hypothesis: casting x and recon first lost 1e-5)."""
    x = np.full((2, 3, 1, 1, 1), 0.81327024)
    r = np.full((2, 3, 1, 1, 1), 0.81585355)
    got = band_losses(x, r, per_image=True, dtype=np.float32).values.sum(-1)
    np.testing.assert_allclose(got, ((x - r) ** 2).mean(axis=(-3, -2, -1)), rtol=3e-6)


def _float32_pairs(x16, r16):
    """Oracle for ``bands._half_pairs``: numpy's float16 -> float32 cast, the float32
    subtraction, then the float32 path's horizontal pair sums and differences."""
    e = np.subtract(x16.astype(np.float32), r16.astype(np.float32)).reshape(-1, 2)
    return np.add(e[:, 0], e[:, 1]), np.subtract(e[:, 0], e[:, 1])


def _same_bits(got, want):
    """Equal as float32 bit patterns (so -0.0 differs from +0.0)."""
    np.testing.assert_array_equal(np.asarray(got).reshape(-1).view(np.uint32),
                                  np.asarray(want).reshape(-1).view(np.uint32))


def _half_pairs(x16, r16):
    """``bands._half_pairs`` on whole blocks: (c, u), or None for an inf/NaN input."""
    wx, wr = bands._half_words(x16), bands._half_words(r16)
    return bands._half_pairs(wx, wr, *np.empty((3,) + wx.shape, np.int32))


ALL_HALF = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
FINITE_HALF = ALL_HALF[np.isfinite(ALL_HALF)]  # 63488 values: both zeros, subnormals, normals


@pytest.mark.parametrize("signs", ["none", "x", "recon", "both"])
def test_float16_bit_decoding_every_value_in_both_columns(signs):
    """Every finite float16 bit pattern, in even and odd columns, against every other in a
    shuffled order: the decoded pair sums and differences equal the float32 path's bit for bit
    (signed zeros, subnormals and the largest values included), with and without sign bits."""
    rng = np.random.default_rng(7)
    vals = FINITE_HALF if signs != "none" else FINITE_HALF[FINITE_HALF.view(np.uint16) < 0x8000]
    x = np.concatenate([vals, np.roll(vals, 1)])  # every value once in an even, once in an odd column
    r = np.concatenate([rng.permutation(vals), rng.permutation(vals)])
    x, r = (np.abs(a) if signs in (side, "none") else a for a, side in ((x, "recon"), (r, "x")))
    n = 16
    x16, r16 = x.reshape(-1, n, n), r.reshape(-1, n, n)
    assert ((x16.view(np.uint16) >= 0x8000).any(), (r16.view(np.uint16) >= 0x8000).any()) == (
        signs in ("x", "both"), signs in ("recon", "both"))
    got = _half_pairs(x16, r16)
    assert got is not None
    for g, w in zip(got, _float32_pairs(x16, r16)):
        _same_bits(g, w)
    # each value against +0 and -0 as well: the decoded value itself (and its sign) survives
    for zero in (0.0, -0.0):
        z = np.full_like(x16, zero)
        for g, w in zip(_half_pairs(x16, z), _float32_pairs(x16, z)):
            _same_bits(g, w)


@pytest.mark.parametrize("share", [0, 64, 10**9])  # never, the default, always the float64 loop
def test_float16_bit_decoding_of_dark_images(monkeypatch, share):
    """Dark images (many values near 0, float16 subnormals, differences below 2**-14 that are
    subnormal when scaled): the float32 and the float64 scaling loop give the float32 path's
    values bit for bit."""
    rng = np.random.default_rng(11)
    x = np.where(rng.random((8, 1, 16, 16)) < 0.7, 0, rng.random((8, 1, 16, 16))).astype(np.float16)
    r = (1 / (1 + np.exp(-rng.normal(-9, 1.5, x.shape)))).astype(np.float16)
    r[::2] *= -1  # signed blocks too
    e = x.astype(np.float32) - r.astype(np.float32)
    assert np.mean((e != 0) & (np.abs(e) < 2.0**-14)) > 0.1
    monkeypatch.setattr(bands, "_HALF_SUBNORMAL_SHARE", share)
    for g, w in zip(_half_pairs(x[:, 0], r[:, 0]), _float32_pairs(x[:, 0], r[:, 0])):
        _same_bits(g, w)
    want = _band_energies(x.astype(np.float32), r.astype(np.float32), dtype=np.float32)
    np.testing.assert_array_equal(_band_energies(x, r, dtype=np.float32), want)


@st.composite
def half_bit_blocks(draw):
    """Two float16 blocks (k, n, n) from raw uint16 bit patterns (any: inf/NaN/-0/subnormal)."""
    k, n = draw(st.integers(1, 3)), draw(st.sampled_from([2, 4, 8]))
    bits = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0x8000, 1, 0x8001, 0x3FF, 0x83FF, 0x400,
                                                              0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE00]))
    draw_block = lambda: np.array(draw(st.lists(bits, min_size=k * n * n, max_size=k * n * n)),  # noqa: E731
                                  dtype=np.uint16).view(np.float16).reshape(k, n, n)
    return draw_block(), draw_block()


@settings(max_examples=200, deadline=None)
@given(half_bit_blocks())
def test_float16_bit_decoding_raw_bit_patterns(blocks):
    """hypothesis over raw uint16 bit patterns: the bit decoding equals ``astype(np.float32)``
    then the float32 subtraction, bit for bit, or reports an inf/NaN input (None) exactly when
    there is one; the whole kernel then raises, or equals the float32 route."""
    x16, r16 = blocks
    finite = bool(np.isfinite(x16).all() and np.isfinite(r16).all())
    got = _half_pairs(x16, r16)
    assert (got is not None) == finite
    if finite:
        for g, w in zip(got, _float32_pairs(x16, r16)):
            _same_bits(g, w)
        x, r = x16[:, None], r16[:, None]  # (k, 1, n, n)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(_band_energies(x, r, dtype=np.float32),
                                          _band_energies(x.astype(np.float32), r.astype(np.float32), dtype=np.float32))
    else:
        with pytest.raises(ValueError, match="non-finite"):
            _band_energies(x16[:, None], r16[:, None], dtype=np.float32)


def test_float16_bit_decoding_equals_the_float32_path(monkeypatch):
    """Two float16 inputs at float32 working precision are decoded by integer bit moves; the
    band energies equal those of the same values given as float32 (the same float32
    subtraction, the same kernel), in small blocks with a ragged end, with numpy's cast
    (flushed subnormals) as well, for inputs of either byte order, strided and unaligned inputs."""
    rng = np.random.default_rng(5)
    x = rng.random((6, 3, 32, 32), dtype=np.float32)
    r = np.clip(x + 0.05 * rng.standard_normal(x.shape, dtype=np.float32), -1, 1)
    x16, r16 = x.astype(np.float16), r.astype(np.float16)
    want = bands._band_energies(x16.astype(np.float32), r16.astype(np.float32), dtype=np.float32)
    np.testing.assert_array_equal(bands._band_energies(x16, r16, dtype=np.float32), want)
    monkeypatch.setattr(bands, "_HALF_BLOCK_BYTES", 32 * 32 * 4 * 5)  # 5 rows per block, ragged end
    np.testing.assert_array_equal(bands._band_energies(x16, r16, dtype=np.float32), want)
    monkeypatch.setattr(bands, "_subnormals_kept", lambda: False)
    np.testing.assert_allclose(bands._band_energies(x16, r16, dtype=np.float32), want, rtol=1e-12)
    monkeypatch.undo()
    swapped = x16.astype(x16.dtype.newbyteorder())  # same values, other byte order: numpy's cast
    np.testing.assert_allclose(bands._band_energies(swapped, r16, dtype=np.float32), want, rtol=1e-12)
    # images given channel-last and moved by `axis`: strided blocks are made contiguous per block
    xt, rt = np.moveaxis(x16, 1, -1).copy(), np.moveaxis(r16, 1, -1).copy()
    np.testing.assert_array_equal(bands._band_energies(xt, rt, axis=(-1, -3, -2), dtype=np.float32), want)
    # contiguous panels starting 2 bytes into a buffer: their int32 words are unaligned
    shifted = []
    for a in (x16, r16):
        buf = np.empty(a.size + 1, np.float16)
        buf[1:] = a.ravel()
        shifted.append(buf[1:].reshape(a.shape))
    assert not bands._half_words(shifted[0].reshape(-1, 32, 32)).flags.aligned
    np.testing.assert_array_equal(bands._band_energies(*shifted, dtype=np.float32), want)


@pytest.mark.parametrize("where", ["x", "recon"])
@pytest.mark.parametrize("column", [4, 5])
@pytest.mark.parametrize("bits", [0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01])  # +-inf, +-NaN, signalling NaN
@pytest.mark.parametrize("negatives", [False, True])
def test_float16_non_finite_input_still_raises(where, column, bits, negatives):
    """An inf or NaN of either sign, in an even or odd column of either input, among values
    with or without sign bits set, is reported (not decoded into a finite value)."""
    x = np.full((2, 1, 8, 8), -0.5 if negatives else 0.5, dtype=np.float16)
    r = np.zeros_like(x)
    (x if where == "x" else r).view(np.uint16)[1, 0, 3, column] = bits
    with pytest.raises(ValueError, match="non-finite"):
        _band_energies(x, r, dtype=np.float32)
