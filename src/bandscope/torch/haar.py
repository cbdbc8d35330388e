"""Orthogonal 2-D Haar band losses and band projections in torch (twin of :mod:`bandscope.transforms.bands`).

Same definitions as the numpy core (key search §3 and appendix A.6): for an error
``e = x - recon`` of shape ``(..., C, H, W)`` with ``H = W = 2**J``, band 1 is the final
approximation coefficient of the orthogonal Haar pyramid and band ``2**j`` the three detail
sub-bands of the level that refines resolution ``2**(j-1)`` to ``2**j``. The band loss is the
sum of squared coefficients of the band divided by the number of pixel values ``C*H*W`` of
one image (and, for the panel, averaged over images), so the band losses sum to the pixel MSE.

Everything runs on the tensors' device with plain differentiable torch ops (reshape, add,
square, sum): wrap calls in ``torch.no_grad()`` when only the values are needed, or backprop
through them (band-resolved LNP).

Gradient convention (checked in ``tests/test_torch_haar.py``): with ``e_i`` the orthogonal
projection of ``e`` onto band ``i`` (:func:`haar_band_project`) and ``n`` the number of pixel
values averaged over (``C*H*W`` per image, ``N*C*H*W`` for the panel mean),

    dL_i / d recon = -2 e_i / n,        dL_i / d x = +2 e_i / n.
"""
from __future__ import annotations

import torch

from ..transforms.bands import _power_of_two_fix, haar_levels

__all__ = ["haar_band_losses", "haar_band_project", "haar_levels"]


def _check_image(t: torch.Tensor, what: str) -> int:
    if t.dim() < 3:
        raise ValueError(
            f"{what} must have at least 3 dims (..., C, H, W), got shape {tuple(t.shape)}"
        )
    h, w = int(t.shape[-2]), int(t.shape[-1])
    if h != w:
        raise ValueError(f"{what} images must be square (H == W), got H={h}, W={w}")
    try:
        return haar_levels(h)
    except ValueError:
        raise ValueError(f"{what} image size must be a power of two, got H = W = {h}: {_power_of_two_fix(h)}") from None


def _working(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None:
        return t.to(dtype)
    if not t.is_floating_point():
        raise TypeError(f"expected a floating tensor, got dtype {t.dtype}")
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float()  # half precision sums lose digits: work in float32
    return t


def _sq_sum(t: torch.Tensor, accumulate: torch.dtype | None) -> torch.Tensor:
    """Sum of squares over the last three dims; with ``accumulate`` each row's sum (<= S
    values) stays in the working precision and the rows are summed in ``accumulate``."""
    if accumulate is None or accumulate == t.dtype:
        return t.square().sum(dim=(-3, -2, -1))
    return t.square().sum(dim=-1).to(accumulate).sum(dim=(-2, -1))


def _band_energies(e: torch.Tensor, accumulate: torch.dtype | None = None) -> torch.Tensor:
    """Sum of squared orthonormal Haar coefficients per band over the last three dims.

    Returns ``(..., J+1)``, band 1 first. Per level, with ``c = r0 + r1`` / ``u = r0 - r1`` over
    vertical pairs of rows (contiguous, fast) and ``c0, c1`` the horizontal neighbours of ``c``,
    the detail energy is ``sum(u**2)/2 + sum((c0-c1)**2)/4`` and the next approximation is
    ``(c0+c1)/2`` (orthonormal Haar; every detail energy is a sum of squares of directly
    computed coefficients, no difference of large norms).
    """
    j_levels = haar_levels(int(e.shape[-1]))
    lead = e.shape[:-2]
    a = e
    details = []
    n = int(e.shape[-1])
    for _ in range(j_levels):
        m = n // 2
        rows = a.reshape(*lead, m, 2, n)
        c = rows[..., 0, :] + rows[..., 1, :]  # (..., C, m, n) vertical pair sums
        u = rows[..., 0, :] - rows[..., 1, :]
        cols = c.reshape(*lead, m, m, 2)
        v = cols[..., 0] - cols[..., 1]
        det = _sq_sum(u, accumulate) * 0.5 + _sq_sum(v, accumulate) * 0.25
        details.append(det)
        a = (cols[..., 0] + cols[..., 1]) * 0.5
        n = m
    approx = _sq_sum(a, accumulate)
    return torch.stack([approx] + details[::-1], dim=-1)


def haar_band_losses(
    x: torch.Tensor,
    recon: torch.Tensor,
    per_image: bool = False,
    *,
    dtype: torch.dtype | None = None,
    accumulate: torch.dtype | None = None,
) -> torch.Tensor:
    """Haar band losses ``L_i`` of ``recon`` against ``x`` (key search §3, A.6), in torch.

    ``L_i = ||e_i||^2 / (C*H*W)`` per image with ``e = x - recon`` and ``e_i`` its band-``i``
    component; the panel value is the mean over images. ``sum_i L_i`` equals the pixel MSE.

    Parameters
    ----------
    x, recon : torch.Tensor, shape (..., C, H, W)
        Images and reconstructions, same shape, ``H == W == 2**J``, on any device.
    per_image : bool
        If True return ``(..., J+1)`` (one row per image), else the panel mean ``(J+1,)``.
    dtype : torch.dtype, optional
        Working precision; default the inputs' dtype, with float16/bfloat16 promoted to float32.
    accumulate : torch.dtype, optional
        Precision of the sums of squares (e.g. ``torch.float64`` with a float32 working
        precision: each image row is summed in float32, the rows and the bands in float64, so
        a band's relative error stays ~1e-7 however large the image; the band probe does this).
        Default: the working precision. The result has this dtype.

    Returns
    -------
    torch.Tensor
        Band losses ordered band 1, 2, 4, ..., 2**J. Differentiable; gradient
        ``dL_i/d recon = -2 e_i / n`` with ``n`` the number of pixel values averaged over.

    Examples
    --------
    >>> x = torch.zeros(2, 1, 4, 4); recon = torch.ones(2, 1, 4, 4)
    >>> haar_band_losses(x, recon)
    tensor([1., 0., 0.])
    """
    if x.shape != recon.shape:
        raise ValueError(
            f"x and recon must have the same shape, got {tuple(x.shape)} and {tuple(recon.shape)}"
        )
    _check_image(x, "x")
    c, h, w = x.shape[-3:]
    lead = x.shape[:-3]
    n_img = x.numel() // max(c * h * w, 1)
    per_block = max(1, _BLOCK_BYTES // max(4 * c * h * w, 1))
    if (x.device.type == "cpu" and n_img > per_block and x.numel() > 0
            and not (torch.is_grad_enabled() and (x.requires_grad or recon.requires_grad))):
        # CPU, no autograd graph: blocks of images small enough for the cache, each widened
        # (float16) and transformed while it is there; every image's arithmetic is its own
        xs, rs = x.reshape(n_img, c, h, w), recon.reshape(n_img, c, h, w)
        energies = torch.cat([_image_energies(xs[i: i + per_block], rs[i: i + per_block], dtype, accumulate)
                              for i in range(0, n_img, per_block)]).reshape(*lead, -1)
    else:
        energies = _image_energies(x, recon, dtype, accumulate)
    energies = energies / float(c * h * w)
    if per_image:
        return energies
    return energies.reshape(-1, energies.shape[-1]).mean(dim=0)


#: bytes of float32 error per block of images on the CPU (the working set stays in L2)
_BLOCK_BYTES = 1 << 20


def _image_energies(x: torch.Tensor, recon: torch.Tensor, dtype: torch.dtype | None,
                    accumulate: torch.dtype | None) -> torch.Tensor:
    """Band energies ``(..., J+1)`` of ``x - recon`` in the working precision (not normalised).

    Parameters
    ----------
    x, recon : torch.Tensor, shape (..., C, H, W)
        Images and reconstructions (same shape).
    dtype : torch.dtype or None
        Working precision (None: the inputs', float16/bfloat16 widened to float32).
    accumulate : torch.dtype or None
        Precision of the sums of squares (see :func:`haar_band_losses`).

    Returns
    -------
    torch.Tensor
        Sums of squared orthonormal Haar coefficients per band, band 1 first.
    """
    xw = _working(x, dtype)
    if recon.dtype in (torch.float16, torch.bfloat16) and xw.dtype == torch.float32 and dtype in (None, torch.float32):
        # both widened by torch's vectorised casts, then subtracted in place: the same float32
        # values as a float32 input (a mixed-dtype subtraction casts element by element)
        e = (xw.clone() if xw is x else xw).sub_(recon.float())
    else:
        rw = _working(recon, dtype if dtype is not None else xw.dtype)
        if rw.dtype != xw.dtype:
            rw = rw.to(xw.dtype)
        e = xw - rw
    return _band_energies(e, accumulate)


def haar_band_project(e: torch.Tensor) -> torch.Tensor:
    """Orthogonal projections ``e_i`` of ``e`` onto each Haar band (key search A.6).

    The approximation of ``e`` at resolution ``r`` is its mean over each ``(H/r) x (W/r)``
    block (the orthogonal projection onto functions constant on an ``r x r`` grid, per image and
    channel), so ``e_1 = P_1 e`` and ``e_r = P_r e - P_{r/2} e``. Then ``sum_i e_i = e``,
    ``<e_i, e_j> = 0`` for ``i != j`` and ``||e_i||^2`` is the band-``i`` energy used by
    :func:`haar_band_losses`.

    Parameters
    ----------
    e : torch.Tensor, shape (..., C, H, W)
        Error (or output gradient) images, ``H == W == 2**J``.

    Returns
    -------
    torch.Tensor, shape (J+1, ..., C, H, W)
        Band components, band 1 first. Differentiable (linear in ``e``).

    Examples
    --------
    >>> e = torch.arange(16.).reshape(1, 4, 4)
    >>> parts = haar_band_project(e)
    >>> parts.shape, torch.allclose(parts.sum(0), e)
    (torch.Size([3, 1, 4, 4]), True)
    """
    j_levels = _check_image(e, "e")
    lead = e.shape[:-2]
    n = int(e.shape[-1])
    # approximations at resolutions n, n/2, ..., 1 (block means, coarse grid)
    approx = [e]
    a = e
    for _ in range(j_levels):
        m = a.shape[-1] // 2
        a = a.reshape(*lead, m, 2, m, 2).mean(dim=(-3, -1))
        approx.append(a)
    approx = approx[::-1]  # resolution 1, 2, 4, ..., n

    def up(t: torch.Tensor) -> torch.Tensor:
        r = t.shape[-1]
        k = n // r
        return t[..., :, None, :, None].expand(*lead, r, k, r, k).reshape(*lead, n, n)

    parts = [up(approx[0])]
    for j in range(1, j_levels + 1):
        fine = approx[j] if j == j_levels else up(approx[j])
        parts.append(fine - up(approx[j - 1]))
    return torch.stack(parts, dim=0)
