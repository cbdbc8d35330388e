"""Orthogonal Haar band losses of reconstruction errors (key search §3 and appendix A.6).

For images ``x`` and reconstructions ``recon`` of shape ``(..., C, H, W)`` with
``H = W = 2**J`` the error ``e = x - recon`` is split by the orthogonal 2-D Haar pyramid:

- band 1 is the final approximation coefficient (the 1 x 1 ``LL`` of each channel),
- band ``2**j`` (j = 1 .. J) holds the three detail sub-bands (``LH, HL, HH``) of the level
  that refines resolution ``2**(j-1)`` to ``2**j``.

The band loss of one image is the sum of squared coefficients of the band divided by the
number of pixel values ``C*H*W``, so for every image ``sum_i L_i = MSE`` exactly (Parseval), and
the panel value (the mean over images) sums to the panel MSE.

Layout: numpy kernels ``_band_energies`` / ``_band_losses`` (arrays, ``axis``) do the arithmetic;
the public :func:`band_losses` does labels, validation, attrs and dask via
``xr.apply_ufunc``. ``_band_energies_pywt`` is the slow oracle (``pywt.wavedec2``) used by the
tests and the benchmark.

Speed (see ``benchmarks/bench_bands.py``): the fast kernel never stores coefficients. It works
on blocks of images that fit in cache and, per level, uses only pair sums and differences of
the orthonormal Haar step: with ``c = a0 + a1`` / ``u = a0 - a1`` over horizontal pairs and
``c0, c1`` the two rows of each block,

    detail energy = sum(u**2) / 2 + sum((c0 - c1)**2) / 4,   next approximation = (c0 + c1) / 2

(computed unnormalised, with the powers of two applied once to the band sums). Every detail
energy is a sum of squares of directly computed coefficients (no difference of large norms),
so bands much smaller than the mean of the error keep their relative precision.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .. import schema
from ..run import band_resolutions

if TYPE_CHECKING:
    from typing import Any

    import numpy.typing as npt

__all__ = ["band_losses", "band_energies", "band_decompose", "haar_levels"]

#: bytes of working buffer per block of images in the fast kernel (fits the L2/L3 caches)
_BLOCK_BYTES = 1 << 21
_HALF_BLOCK_BYTES = 1 << 19  # float16 pairs: three int32 scratch blocks of half this size stay in L2


def haar_levels(size: int) -> int:
    """Number of Haar levels ``J`` of a ``size x size`` image, ``size == 2**J``.

    There are ``J + 1`` bands, with resolutions ``bandscope.run.band_resolutions(J + 1)``.

    Examples
    --------
    >>> haar_levels(64)
    6
    >>> haar_levels(48)
    Traceback (most recent call last):
    ...
    ValueError: image size must be a power of two (1, 2, 4, ...), got 48
    """
    n = int(size)
    if n != size or n < 1 or n & (n - 1):
        raise ValueError(f"image size must be a power of two (1, 2, 4, ...), got {size!r}")
    return n.bit_length() - 1


# --------------------------------------------------------------------------- validation


def _power_of_two_fix(h: int) -> str:
    """How to make an image side ``h`` a power of two (the Haar bands need ``2**J``)."""
    up = 1 << max(int(h) - 1, 0).bit_length()
    down = up >> 1
    return (f"pad or resize the images to {up} x {up}" + (f" (or crop to {down} x {down})" if down >= 1 else "")
            + ": Haar bands halve the side at every level")


def _shape_levels(shape: tuple[int, ...], what: str = "x") -> int:
    if len(shape) < 3:
        raise ValueError(
            f"{what} must have at least 3 dims (..., C, H, W) -- one channel dim and two "
            f"square spatial dims -- got shape {shape}"
        )
    h, w = shape[-2], shape[-1]
    if h != w:
        raise ValueError(f"{what} images must be square (H == W), got H={h}, W={w} (shape {shape})")
    if h < 1 or h & (h - 1):
        raise ValueError(
            f"{what} image size must be a power of two (H = W = 2**J), got H = W = {h} (shape {shape}): "
            f"{_power_of_two_fix(h)}"
        )
    return int(h).bit_length() - 1


def _working_dtype(dtype: npt.DTypeLike) -> np.dtype:
    wd = np.dtype(dtype)
    if wd not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64 (working precision), got {wd}")
    return wd


def _check_real(a: np.ndarray, what: str) -> None:
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a real numeric array (float16/32/64 or integer), got dtype {a.dtype}")


def _raise_nonfinite(arrays: Sequence[tuple[str, np.ndarray]], wd: np.dtype) -> None:
    for what, a in arrays:
        bad = ~np.isfinite(a)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{what} contains {int(bad.sum())} non-finite values (first at index {idx}: "
                f"{a[idx]!r}); band losses need finite images and reconstructions"
            )
    raise FloatingPointError(
        f"band energies overflowed in {wd} although the inputs are finite; use dtype=np.float64"
    )


# --------------------------------------------------------------------------- numpy kernels


def _level_energies(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """One unnormalised Haar level on ``a`` (P, n, n) contiguous.

    Writes the detail energies ``sum(u**2)/2 + sum(v**2)/4`` per row into ``out`` (P,) and
    returns the next unnormalised approximation (P, n/2, n/2) = 2x2 block sums.
    """
    p, n, _ = a.shape
    pairs = a.reshape(-1, 2)  # horizontal neighbours, one long stride-2 loop
    c = np.add(pairs[:, 0], pairs[:, 1])
    u = np.subtract(pairs[:, 0], pairs[:, 1])
    return _level_rest(c, u, p, n, out)


def _level_rest(c: np.ndarray, u: np.ndarray, p: int, n: int, out: np.ndarray) -> np.ndarray:
    """The rest of :func:`_level_energies` from the horizontal pair sums ``c`` and differences
    ``u`` (each ``p * n * n/2`` values, row-major, contiguous)."""
    m = n // 2
    u = u.reshape(p, -1)
    rows = c.reshape(p * m, 2, m)  # vertical neighbours of the horizontal sums
    v = np.subtract(rows[:, 0], rows[:, 1]).reshape(p, -1)
    np.multiply(np.einsum("ij,ij->i", u, u), 0.5, out=out)
    out += 0.25 * np.einsum("ij,ij->i", v, v)
    return np.add(rows[:, 0], rows[:, 1]).reshape(p, m, m)


# float16 -> float32 by integer bit moves (numpy's float16 casts convert one value at a time).
# Two horizontal neighbours of a float16 image row share one int32 word (little-endian: the
# even column in bits 0-15, the odd one in bits 16-31). An arithmetic shift puts a float16's
# sign at bit 31 (copied into bits 28-30) and its exponent and mantissa where float32 has them;
# clearing bits 28-30 and the 13 bits below gives the float32 whose value is the float16's
# times 2**-112 (float32 bias 127 - float16 bias 15), exactly, float16 subnormals included (they
# land on float32 subnormals). Inf/NaN (exponent 31) would land on finite values, so the blocks
# are checked for them first (on the float16 bits: one reduction).
_HALF_MASK = np.int32(-0x70002000)  # 0x8FFFE000: sign, exponent and mantissa of the float32
_HALF_SCALE = np.float32(2.0**112)
#: the same scale in a float64 loop: a float32 multiply of a subnormal takes a microcode assist on
#: x86 (measured 35x slower per value), float64 sees no subnormal here (conversion is exact)
_HALF_SCALE_WIDE = np.float64(2.0**112)
#: about this many values are sampled per block to estimate how many scaled differences are subnormal
_HALF_SAMPLE = 512
#: the float64 loop is used when more than 1 in this many sampled differences are subnormal
_HALF_SUBNORMAL_SHARE = 64
_F32_TINY = np.float32(2.0**-126)  # smallest normal float32
_HALF_SIGNLESS_FINITE = 0x7C00  # float16 bits below this: finite, sign bit clear


def _half_kind(w: np.ndarray) -> int:
    """Float16 block given as its int32 words ``w``: 0 if every value is finite with its sign bit
    clear (+0 included), 1 if finite with some sign bits set, 2 if it holds an inf or NaN."""
    u = w.view(np.uint16)
    top = int(np.maximum.reduce(u, axis=None))
    if top < _HALF_SIGNLESS_FINITE:
        return 0
    # negative inf/NaN: unsigned bits >= 0xFC00; positive ones: signed bits >= 0x7C00
    if top >= 0x8000 | _HALF_SIGNLESS_FINITE:
        return 2
    if int(np.maximum.reduce(u.view(np.int16), axis=None)) >= _HALF_SIGNLESS_FINITE:
        return 2
    return 1


def _half_words(h: np.ndarray) -> np.ndarray:
    """Float16 images ``(k, n, n)``, n even, as int32 words ``(k, n*n/2)``, two horizontal
    neighbours each (a view, or a copy of a strided block)."""
    return np.ascontiguousarray(h).reshape(h.shape[0], -1).view(np.int32)


def _half_pairs(wx: np.ndarray, wr: np.ndarray, e0: np.ndarray, e1: np.ndarray,
                tmp: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """First horizontal Haar step of ``e = float32(x16) - float32(r16)`` for float16 blocks given
    as their int32 words ``wx``, ``wr`` (``_half_words``; native little-endian): returns the
    pair sums ``c = e0 + e1`` and differences ``u = e0 - e1`` of horizontal neighbours (float32,
    shape of ``wx``, row-major) bit for bit as the float32 path computes them, or None if an
    input holds an inf or NaN. ``e0, e1, tmp`` are int32 scratch of the shape of ``wx``.

    Each input's even and odd columns are decoded by integer shifts and masks of its int32
    words into float32 values scaled by 2**-112 (exact, see ``_HALF_MASK``); the scaled values
    are subtracted and the two differences scaled back by 2**112. The subtraction rounds as
    the unscaled one does: the differences are multiples of 2**-136 below 2**-95, so a
    normal result keeps the significand the unscaled difference rounds to, and a subnormal
    one is exact (as is the unscaled difference, below 2**-14 on a 2**-24 grid). Signed zeros
    follow the same rules. ``c`` and ``u`` are then the float32 path's own operations on the
    same values.
    """
    kx = _half_kind(wx)
    kr = _half_kind(wr)
    if kx == 2 or kr == 2:
        return None
    _half_decode(wx, e0, e1, kx)
    f0, f1, ft = e0.view(np.float32), e1.view(np.float32), tmp.view(np.float32)
    _half_decode(wr, tmp, None, kr)
    np.subtract(f0, ft, out=f0)
    _half_decode(wr, None, tmp, kr)
    np.subtract(f1, ft, out=f1)
    # differences below 2**-14 (nonzero) are subnormal when scaled, and a float32 multiply of a
    # subnormal is slow: dark images (values near 0) can have a quarter of them. A sample (a
    # few contiguous values from the middle of each image) decides whether the float64 loop (no
    # subnormals, ~1 ns a value) pays.
    k, half = f0.shape
    run = max(1, min(half, _HALF_SAMPLE // k))
    sample = np.abs(f0[:, (half - run) // 2:(half + run) // 2])
    tiny = np.count_nonzero(sample < _F32_TINY)
    if tiny * _HALF_SUBNORMAL_SHARE > sample.size:
        tiny -= np.count_nonzero(sample == 0)
    if tiny * _HALF_SUBNORMAL_SHARE > sample.size:
        np.multiply(f0, _HALF_SCALE_WIDE, out=f0, casting="same_kind")
        np.multiply(f1, _HALF_SCALE_WIDE, out=f1, casting="same_kind")
    else:
        np.multiply(f0, _HALF_SCALE, out=f0)
        np.multiply(f1, _HALF_SCALE, out=f1)
    np.add(f0, f1, out=ft)
    np.subtract(f0, f1, out=f1)
    return ft, f1


def _half_decode(w: np.ndarray, even: np.ndarray | None, odd: np.ndarray | None, signed: int) -> None:
    """Float16 pairs ``w`` (int32 words) -> the even and odd columns' values times 2**-112 as
    float32 bits (int32 ``even`` / ``odd``, either may be None); ``signed``: some sign bits set."""
    if odd is not None:
        np.right_shift(w, 3, out=odd)  # sign at bit 31 (copies in 28-30), the even column below bit 13
        np.bitwise_and(odd, _HALF_MASK, out=odd)
    if even is not None:
        np.left_shift(w, 16, out=even)  # moved up, then the same shift: nothing below bit 13
        np.right_shift(even, 3, out=even)
        if signed:  # clear the sign's copies in bits 28-30 (zero without sign bits)
            np.bitwise_and(even, _HALF_MASK, out=even)


def _subnormals_kept() -> bool:
    """False when the CPU flushes subnormal floats to zero (e.g. after
    ``torch.set_flush_denormal(True)``): the bit decoding then takes numpy's cast instead."""
    tiny = np.array([2.0**-140], dtype=np.float32)
    return bool((tiny * np.float32(2.0)) [0] != 0)


def _energies_rows(e: np.ndarray, levels: int, out: np.ndarray, first: int = 0) -> np.ndarray:
    """Unnormalised pyramid on ``e`` (P, n, n); fills ``out[:, first:]`` (bands fine to coarse
    at the end of ``out``) and returns the remaining unnormalised approximation."""
    a = e
    j_total = out.shape[1] - 1
    for lev in range(first, first + levels):
        a = _level_energies(a, out[:, j_total - lev])
    return a


def _energies_kernel(x: np.ndarray, recon: np.ndarray | None, wd: np.dtype) -> np.ndarray:
    """Band energies (sum of squared orthonormal coefficients) of ``x - recon`` over the last
    three axes; returns (..., J+1) float64. ``recon=None`` means ``x`` is the error."""
    shape = x.shape
    j_levels = _shape_levels(shape)
    *lead, c, h, _ = shape
    n_img = int(np.prod(lead, dtype=np.int64)) if lead else 1
    p = n_img * c
    rows = np.empty((p, j_levels + 1), dtype=np.float64)
    xf = x.reshape(p, h, h)
    rf = None if recon is None else recon.reshape(p, h, h)
    half = x.dtype == np.float16 or (rf is not None and rf.dtype == np.float16)
    # two float16 inputs at float32 working precision: decoded by integer bit moves, two
    # horizontal neighbours per int32 word, straight into the first Haar step (_half_pairs)
    bits = (rf is not None and wd == np.float32 and xf.dtype == np.float16 and rf.dtype == np.float16
            and h >= 2 and np.little_endian and xf.dtype.isnative and rf.dtype.isnative and _subnormals_kept())
    # fine levels in cache-sized blocks of rows; coarse levels (<= 1/16 of the data) at once
    fine = min(j_levels, 2)
    # the bit decoding makes several passes over its block: keep the block in L2
    block = max(1, (_HALF_BLOCK_BYTES if bits else _BLOCK_BYTES) // (h * h * wd.itemsize))
    m = h >> fine
    coarse = np.empty((p, m, m), dtype=wd)
    # numpy casts float16 -> float64 much faster than float16 -> float32 (measured): for a
    # float32 working precision go through a float64 block (the difference of two float16
    # values is exact in float64; its rounding to float32 is that of the float32 subtraction)
    # values wider than float32 (float64, int64) are also subtracted in float64 first, so the float32
    # error is relative to the image's error e, not to |x| (x ≈ recon would lose digits otherwise)
    wide = rf is not None and np.result_type(xf.dtype, rf.dtype).itemsize > 4
    buf = None if bits else np.empty((min(block, p), h, h), dtype=wd)
    via64 = (np.empty((min(block, p), h, h), dtype=np.float64) if (half or wide) and wd == np.float32
             and rf is not None and not bits else None)
    ints = np.empty((3, min(block, p), h * h // 2), np.int32) if bits else None
    # int32 words of a contiguous float16 panel are one view; a strided one is copied per block
    words = [_half_words(a) if bits and a is not None and a.flags.c_contiguous else None for a in (xf, rf)]
    for i0 in range(0, p, block):
        i1 = min(i0 + block, p)
        if bits:
            assert rf is not None and ints is not None
            wx, wr = (w[i0:i1] if w is not None else _half_words(a[i0:i1]) for w, a in zip(words, (xf, rf)))
            cu = _half_pairs(wx, wr, ints[0, : i1 - i0], ints[1, : i1 - i0], ints[2, : i1 - i0])
            if cu is None:  # an inf/NaN input: the caller raises naming it
                rows[i0:i1] = coarse[i0:i1] = np.nan
                continue
            a = _level_rest(*cu, i1 - i0, h, rows[i0:i1, j_levels])
            coarse[i0:i1] = _energies_rows(a, fine - 1, rows[i0:i1], first=1)
            continue
        assert buf is not None
        e = buf[: i1 - i0]
        if rf is None:
            np.copyto(e, xf[i0:i1], casting="unsafe")
        elif via64 is not None:
            tmp = via64[: i1 - i0]
            np.subtract(xf[i0:i1], rf[i0:i1], out=tmp, dtype=np.float64)
            np.copyto(e, tmp, casting="unsafe")
        else:
            np.subtract(xf[i0:i1], rf[i0:i1], out=e, dtype=wd, casting="unsafe")
        coarse[i0:i1] = _energies_rows(e, fine, rows[i0:i1])
    a = _energies_rows(coarse, j_levels - fine, rows, first=fine)
    rows[:, 0] = np.einsum("ij,ij->i", a.reshape(p, -1), a.reshape(p, -1))
    # undo the unnormalised sums: the input of level l (0 = finest) is 2**l times the
    # orthonormal approximation, so its energies carry 4**l. Column k >= 1 (band 2**k) comes
    # from level J-k; column 0 (band 1) from the approximation after all J levels.
    scale = 4.0 ** -np.arange(j_levels, -1, -1, dtype=np.float64)
    scale[0] = 4.0**-j_levels
    rows *= scale
    return rows.reshape(n_img, c, j_levels + 1).sum(axis=1).reshape(*lead, j_levels + 1)


def _prepare(x: npt.ArrayLike, recon: npt.ArrayLike | None,
             axis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(x)
    _check_real(x, "x")
    if recon is not None:
        recon = np.asarray(recon)
        _check_real(recon, "recon")
        if x.shape != recon.shape:
            raise ValueError(
                f"x and recon must have the same shape, got {x.shape} and {recon.shape}"
            )
    axis = tuple(int(a) for a in axis)
    if len(axis) != 3:
        raise ValueError(f"axis must name the 3 axes (C, H, W) of one image, got {axis}")
    if x.ndim < 3:
        _shape_levels(x.shape)  # raises with the shape
    dst = (-3, -2, -1)
    if tuple(a % x.ndim for a in axis) != tuple(a % x.ndim for a in dst):
        x = np.moveaxis(x, axis, dst)
        recon = None if recon is None else np.moveaxis(recon, axis, dst)
    return x, recon


def _band_energies(x: npt.ArrayLike, recon: npt.ArrayLike | None = None, axis: tuple[int, ...] = (-3, -2, -1),
                   dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """Fast kernel: per-image band energies ``sum of squared coefficients`` (not normalised).

    ``x - recon`` (or ``x`` alone when ``recon`` is None) over the image ``axis`` (C, H, W);
    returns the remaining axes plus a trailing band axis (band 1 first), float64, computed in
    ``dtype`` (float32: faster, each band accurate to ~1e-6 of the image's total squared error;
    float64: ~1e-15).
    """
    wd = _working_dtype(dtype)
    x, recon = _prepare(x, recon, axis)
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite results raise below
        out = _energies_kernel(x, recon, wd)
    if not np.isfinite(out).all():
        _raise_nonfinite([("x", x)] + ([] if recon is None else [("recon", recon)]), wd)
    return out


def _band_losses(x: npt.ArrayLike, recon: npt.ArrayLike | None, axis: tuple[int, ...] = (-3, -2, -1),
                 dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """Per-image band losses ``L_i = energy_i / (C*H*W)``; (..., J+1) float64."""
    x, recon = _prepare(x, recon, axis)
    n_pix = int(np.prod(x.shape[-3:]))
    return _band_energies(x, recon, dtype=dtype) / n_pix


def _band_energies_pywt(x: npt.ArrayLike, recon: npt.ArrayLike | None = None,
                        axis: tuple[int, ...] = (-3, -2, -1), dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """Slow oracle: ``pywt.wavedec2(e, 'haar', level=J, axes=(-2, -1))``, then squared
    coefficients summed per band (and over channels). For dyadic sizes the boundary mode is
    irrelevant (Haar never reaches past an even-length edge; the tests check 'periodization')."""
    import pywt

    x, recon = _prepare(x, recon, axis)
    j_levels = _shape_levels(x.shape)
    e = x.astype(dtype) if recon is None else np.subtract(x, recon, dtype=dtype)
    if j_levels == 0:
        return np.square(e).sum(axis=(-3, -2, -1), dtype=np.float64)[..., None]
    coeffs = pywt.wavedec2(e, "haar", level=j_levels, axes=(-2, -1))
    sq = lambda c: np.square(c, dtype=np.float64).sum(axis=(-3, -2, -1))  # noqa: E731
    bands = [sq(coeffs[0])] + [sq(h) + sq(v) + sq(d) for h, v, d in coeffs[1:]]
    return np.stack(bands, axis=-1)


# --------------------------------------------------------------------------- public API


def band_energies(err: npt.ArrayLike, *, dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """Sums of squared orthonormal Haar coefficients per band of error images (key search A.6).

    Parameters
    ----------
    err : array_like, shape (..., C, H, W)
        Error images ``e = x - recon``; ``H == W == 2**J``.
    dtype : float32 or float64
        Working precision.

    Returns
    -------
    numpy.ndarray, shape (..., J+1), float64
        ``||e_i||^2`` per image (summed over channels), band 1 first. They sum to ``||e||^2``.

    Examples
    --------
    >>> e = np.ones((1, 4, 4))  # a constant error lives entirely in band 1
    >>> band_energies(e)
    array([16.,  0.,  0.])
    """
    return _band_energies(err, None, dtype=dtype)


def band_decompose(err: npt.ArrayLike) -> np.ndarray:
    """Orthogonal band components ``e_i`` of error images (key search A.6), ``sum_i e_i = e``.

    The Haar approximation at resolution ``r`` is the mean of ``e`` over each
    ``(H/r) x (W/r)`` block, per image and channel (the orthogonal projection onto images that
    are constant on an ``r x r`` grid); ``e_1`` is that at ``r = 1`` and
    ``e_r = P_r e - P_{r/2} e``. Components are mutually orthogonal and ``||e_i||^2`` equals
    :func:`band_energies`. Same as :func:`bandscope.torch.haar.haar_band_project`.

    Parameters
    ----------
    err : array_like, shape (..., C, H, W)

    Returns
    -------
    numpy.ndarray, shape (J+1, ..., C, H, W), float64

    Examples
    --------
    >>> e = np.arange(16.0).reshape(1, 4, 4)
    >>> parts = band_decompose(e)
    >>> parts.shape, bool(np.allclose(parts.sum(axis=0), e))
    ((3, 1, 4, 4), True)
    """
    e = np.asarray(err, dtype=np.float64)
    j_levels = _shape_levels(e.shape, "err")
    lead, n = e.shape[:-2], e.shape[-1]
    approx = [e]
    a = e
    for _ in range(j_levels):
        m = a.shape[-1] // 2
        a = a.reshape(*lead, m, 2, m, 2).mean(axis=(-3, -1))
        approx.append(a)
    approx = approx[::-1]  # resolution 1, 2, ..., n

    def up(t: np.ndarray) -> np.ndarray:
        k = n // t.shape[-1]
        return np.repeat(np.repeat(t, k, axis=-2), k, axis=-1)

    parts = [up(approx[0])]
    for j in range(1, j_levels + 1):
        parts.append(up(approx[j]) - up(approx[j - 1]))
    return np.stack(parts, axis=0)


def _as_dataarray(x: Any, recon: Any,
                  image_dims: Sequence[Hashable] | None
                  ) -> tuple[xr.DataArray, xr.DataArray, tuple[Hashable, ...], tuple[Hashable, ...]]:
    """Both inputs as DataArrays with the same dims; returns (x, recon, image_dims, lead_dims)."""
    if isinstance(x, xr.DataArray):
        dims = tuple(x.dims)
        if image_dims is None:
            if len(dims) < 3:
                _shape_levels(x.shape)
            image_dims = dims[-3:]
        image_dims = tuple(image_dims)
        if len(image_dims) != 3:
            raise ValueError(f"image_dims must name 3 dims (channel, height, width), got {image_dims}")
        missing = [d for d in image_dims if d not in dims]
        if missing:
            raise ValueError(f"image_dims {missing} not in x.dims {dims}")
        if isinstance(recon, xr.DataArray):
            if set(recon.dims) != set(dims):
                raise ValueError(f"x and recon must have the same dims, got {dims} and {tuple(recon.dims)}")
            recon = recon.transpose(*dims)
            if recon.shape != x.shape:
                raise ValueError(
                    f"x and recon must have the same shape, got {dict(x.sizes)} and {dict(recon.sizes)}"
                )
        else:
            r = np.asarray(recon)
            if r.shape != x.shape:
                raise ValueError(f"x and recon must have the same shape, got {x.shape} and {r.shape}")
            recon = x.copy(data=r)
    else:
        if image_dims is not None:
            raise TypeError(
                "image_dims names dims of a DataArray; for numpy inputs the last three axes are "
                "(C, H, W)"
            )
        xa = np.asarray(x)
        if isinstance(recon, xr.DataArray):
            if recon.shape != xa.shape:
                raise ValueError(f"x and recon must have the same shape, got {xa.shape} and {recon.shape}")
            return _as_dataarray(recon.copy(data=xa), recon, None)
        ra = np.asarray(recon)
        if xa.shape != ra.shape:
            raise ValueError(f"x and recon must have the same shape, got {xa.shape} and {ra.shape}")
        _shape_levels(xa.shape)
        lead = xa.ndim - 3
        lead_names = ["image"] if lead == 1 else [f"image_{i}" for i in range(lead)]
        image_dims = ("channel", "y", "x")
        dims = tuple(lead_names) + image_dims
        x, recon = xr.DataArray(xa, dims=dims), xr.DataArray(ra, dims=dims)
    lead_dims = tuple(d for d in x.dims if d not in image_dims)
    return x, recon, image_dims, lead_dims


def band_losses(
    x: xr.DataArray | npt.ArrayLike,
    recon: xr.DataArray | npt.ArrayLike,
    *,
    per_image: bool = False,
    dtype: npt.DTypeLike | None = None,
    image_dims: Sequence[Hashable] | None = None,
) -> xr.DataArray:
    """Haar band losses ``L_i`` of reconstructions (key search §3 Eq. 1, appendix A.6).

    With ``e = x - recon`` and ``e_i`` its component in Haar band ``i`` (orthogonal 2-D Haar
    pyramid; band 1 = final approximation coefficient, band ``2**j`` = the three detail
    sub-bands refining resolution ``2**(j-1)`` to ``2**j``), the band loss of one image is

        L_i = ||e_i||^2 / (C * H * W),     sum_i L_i = MSE(x, recon)

    and the panel value is the mean of ``L_i`` over images (= sum of squared band coefficients
    over the panel / number of pixel values of the panel), which sums to the panel MSE.

    Parameters
    ----------
    x, recon : array_like or xarray.DataArray, shape (..., C, H, W)
        Images and reconstructions (same shape; ``H == W == 2**J``; float16/32/64 or integer).
        DataArrays may be dask-backed (computed lazily, chunked along the leading dims).
    per_image : bool
        False: panel mean, dims ``(band,)``. True: one row per image, dims
        ``(<leading dims>, band)``; numpy inputs name one leading dim ``image`` (several:
        ``image_0, image_1, ...``), DataArrays keep their leading dims and coords.
    dtype : None, float32 or float64
        Working precision (sums are always accumulated and returned in float64). None
        (default): float32 when both inputs are float16/float32 -- their own rounding (<= 6e-8
        relative) is already of the order of float32 arithmetic, and this is ~2x faster --
        and float64 otherwise. float64: bands accurate to ~1e-15 relative to the image's
        squared error; float32: ~1e-6.
    image_dims : 3 dim names, optional
        For DataArrays, the (channel, height, width) dims of one image; default the last three.

    Returns
    -------
    xarray.DataArray
        ``band_loss`` over ``band`` = 1, 2, 4, ..., 2**J (``bandscope.run.band_resolutions``),
        with attrs ``units``, ``definition``, ``paper``, ``reduction``, ``dtype``.

    Raises
    ------
    ValueError
        Fewer than 3 dims, non-square or non-dyadic images, mismatched shapes, NaN/inf inputs
        (naming the first bad index).

    Examples
    --------
    >>> x = np.zeros((2, 1, 4, 4)); recon = np.full((2, 1, 4, 4), 0.5)
    >>> band_losses(x, recon).values  # a constant error is all band 1
    array([0.25, 0.  , 0.  ])
    >>> recon[:, :, ::2, :] = -0.5  # alternating rows: the finest band
    >>> L = band_losses(x, recon, per_image=True)
    >>> L.dims, L.sel(band=4).values.tolist()
    (('image', 'band'), [0.25, 0.25])
    """
    xd, rd, image_dims, lead_dims = _as_dataarray(x, recon, image_dims)
    if xd.size == 0:
        raise ValueError(f"x holds no images (shape {dict(xd.sizes)}): an empty panel has no band losses")
    if dtype is None:
        low = all(a.dtype in (np.dtype(np.float16), np.dtype(np.float32)) for a in (xd, rd))
        lazy = xd.chunks is not None or rd.chunks is not None
        if low and not lazy:
            try:
                return _band_losses_da(xd, rd, image_dims, lead_dims, per_image, np.dtype(np.float32))
            except FloatingPointError:  # float32 overflow on huge values: redo in float64
                pass
        dtype = np.float64
    return _band_losses_da(xd, rd, image_dims, lead_dims, per_image, _working_dtype(dtype))


def _band_losses_da(xd: xr.DataArray, rd: xr.DataArray, image_dims: Sequence[Hashable], lead_dims: Sequence[Hashable],
                    per_image: bool, wd: np.dtype) -> xr.DataArray:
    """xarray part of :func:`band_losses` for a fixed working precision ``wd``."""
    j_levels = _shape_levels(tuple(xd.sizes[d] for d in image_dims), "x")
    for what, arr in (("x", xd), ("recon", rd)):
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{what} must be real numeric (float16/32/64 or integer), got dtype {arr.dtype}")
    if xd.chunks is not None or rd.chunks is not None:  # dask: one chunk per image
        whole = {d: -1 for d in image_dims}
        xd, rd = xd.chunk(whole), rd.chunk(whole)
    n_bands = j_levels + 1
    out = xr.apply_ufunc(
        _band_losses,
        xd,
        rd,
        input_core_dims=[list(image_dims), list(image_dims)],
        output_core_dims=[["band"]],
        kwargs={"axis": (-3, -2, -1), "dtype": wd},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"band": n_bands}},
    )
    out = out.assign_coords(band=("band", band_resolutions(n_bands), schema.attrs("bands", "band")))
    attrs = dict(schema.attrs("bands", "band_loss"), dtype=str(wd))
    if per_image:
        attrs["reduction"] = "per image"
    else:
        attrs["reduction"] = f"mean over images ({', '.join(map(str, lead_dims)) or 'single image'})"
        if lead_dims:
            out = out.mean(dim=list(lead_dims))
        out = out.drop_vars([c for c in out.coords if c != "band"])
    out.attrs = attrs
    out.name = "band_loss"
    return out
