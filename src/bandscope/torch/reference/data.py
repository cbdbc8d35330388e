"""Training data for the reference experiment (key search A.1) without downloading anything.

- :func:`embedded_dataset` builds a deterministic dataset from the images scikit-image ships:
  natural-image patches cut at random positions and scales (``source="skimage"``), or crops of
  its 25x25 LFW face subset (``source="lfw"``). Training and test (panel) patches come from
  disjoint sets of source images, so the panel is held out like CelebA's test split.
- :func:`load_image_folder` / :func:`load_image_array` follow A.1 exactly for a user's own
  images (e.g. CelebA): centre crop 128x128, bilinear resize to 64x64 with
  ``align_corners=False`` (no antialiasing, as ``torch.nn.functional.interpolate``), values in
  [0, 1], no normalisation, no augmentation.

Datasets are returned as tensors of shape (N, 3, S, S). The embedded dataset is stored as
``uint8`` (like real 8-bit photos, 4x smaller); :func:`to_float` converts a batch to float32 in
[0, 1].
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...io.natural_sort import natural_key

__all__ = ["EmbeddedData", "embedded_dataset", "load_image_folder", "load_image_array", "to_float",
           "SKIMAGE_TRAIN", "SKIMAGE_TEST"]

#: colour images of ``skimage.data`` used for training patches
SKIMAGE_TRAIN = ("astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "rocket",
                 "motorcycle_left", "motorcycle_right")
#: held-out colour images: the evaluation panel is cut only from these
SKIMAGE_TEST = ("chelsea", "coffee")


@dataclass(frozen=True)
class EmbeddedData:
    """Train and held-out test images (uint8, (N, 3, S, S)) plus a description for attrs."""

    train: torch.Tensor
    test: torch.Tensor
    description: str


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (``x / 255``, like ``ToTensor``); float passes through."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


@functools.cache
def _skimage_image(name: str) -> np.ndarray:
    """A bundled scikit-image photo (cached: decoding the PNGs dominates dataset build time)."""
    import skimage.data as skd

    if name == "motorcycle_left":
        return skd.stereo_motorcycle()[0]
    if name == "motorcycle_right":
        return skd.stereo_motorcycle()[1]
    return getattr(skd, name)()


def _lfw_faces() -> np.ndarray:
    import skimage.data as skd

    faces = skd.lfw_subset()[:100]  # first 100 are faces (skimage docs)
    if faces.dtype != np.uint8:
        faces = np.clip(np.round(faces * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(faces[..., None], 3, axis=-1)  # grey -> 3 channels


def _cut_patches(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator,
                 min_side: int) -> torch.Tensor:
    """``n`` square crops at random position and log-uniform side in [min_side, min(H, W)],
    random horizontal flip, resized to ``size`` (bilinear, antialiased), quantised to uint8."""
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    owner = np.arange(n) % len(images)  # equal share per source image
    rng.shuffle(owner)
    for i in range(n):
        img = images[owner[i]]
        h, w = img.shape[:2]
        lo, hi = min(min_side, min(h, w)), min(h, w)
        side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        crop = torch.from_numpy(np.array(img[y:y + side, x:x + side, :3]))
        t = crop.permute(2, 0, 1)[None].to(torch.float32)
        if rng.random() < 0.5:
            t = t.flip(-1)
        if side != size:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=side > size)
        out[i] = t[0].round_().clamp_(0, 255).to(torch.uint8)
    return out


def embedded_dataset(image_size: int = 32, n_train: int = 8192, n_test: int = 2048, *,
                     source: str = "skimage", data_seed: int = 0) -> EmbeddedData:
    """Deterministic stand-in for CelebA built from scikit-image's bundled images.

    Parameters
    ----------
    image_size : int
        Side S of the square patches.
    n_train, n_test : int
        Number of training patches and held-out test patches (the panel of A.8 is drawn from
        the test patches).
    source : {"skimage", "lfw"}
        ``"skimage"``: patches of the colour photos :data:`SKIMAGE_TRAIN` (train) and
        :data:`SKIMAGE_TEST` (test), side log-uniform between S and the image's short side.
        ``"lfw"``: crops (side 16..25 px, upsampled) of skimage's 100 LFW faces, faces 0-79
        train and 80-99 test, grey replicated to RGB.
    data_seed : int
        Seed of the patch positions; the dataset is the same for every training seed, like a
        fixed dataset. The run seed only controls init, data order and panel.

    Examples
    --------
    >>> d = embedded_dataset(16, 8, 4)
    >>> d.train.shape, d.train.dtype, d.test.shape
    (torch.Size([8, 3, 16, 16]), torch.uint8, torch.Size([4, 3, 16, 16]))
    >>> torch.equal(d.train, embedded_dataset(16, 8, 4).train)
    True
    """
    size = int(image_size)
    if size < 2 or n_train < 1 or n_test < 1:
        raise ValueError(f"need image_size >= 2 and n_train, n_test >= 1; got {size}, {n_train}, {n_test}")
    rng_train = np.random.default_rng([int(data_seed), 0])
    rng_test = np.random.default_rng([int(data_seed), 1])
    if source == "skimage":
        train_imgs = [_skimage_image(n) for n in SKIMAGE_TRAIN]
        test_imgs = [_skimage_image(n) for n in SKIMAGE_TEST]
        min_side = size
        desc = (f"skimage patches {size}x{size}: train {n_train} from {','.join(SKIMAGE_TRAIN)}; "
                f"test {n_test} from {','.join(SKIMAGE_TEST)}; data_seed {data_seed}")
    elif source == "lfw":
        faces = _lfw_faces()
        train_imgs, test_imgs = list(faces[:80]), list(faces[80:])
        min_side = 16
        desc = (f"skimage LFW faces {size}x{size}: train {n_train} crops of faces 0-79, "
                f"test {n_test} crops of faces 80-99; data_seed {data_seed}")
    else:
        raise ValueError(f"source must be 'skimage' or 'lfw', got {source!r}")
    train = _cut_patches(train_imgs, int(n_train), size, rng_train, min_side)
    test = _cut_patches(test_imgs, int(n_test), size, rng_test, min_side)
    return EmbeddedData(train, test, desc)


def _a1_transform(x: torch.Tensor, crop: int, image_size: int) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> centre crop ``crop`` -> bilinear resize (A.1)."""
    h, w = x.shape[-2:]
    if h < crop or w < crop:
        raise ValueError(f"image of size {h}x{w} is smaller than the centre crop {crop}")
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))  # torchvision CenterCrop
    x = x[..., top:top + crop, left:left + crop]
    if crop != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x


def load_image_array(images: Any, image_size: int = 64, crop: int = 128) -> torch.Tensor:
    """A.1 preprocessing for an array of images (N, H, W, 3) uint8 (or float in [0, 1]).

    Returns float32 (N, 3, image_size, image_size) in [0, 1].
    """
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"images must have shape (N, H, W, 3), got {arr.shape}")
    t = torch.from_numpy(np.array(arr[..., :3])).permute(0, 3, 1, 2)  # copy: input may be read-only
    if t.dtype == torch.uint8:
        t = t.to(torch.float32) / 255.0
    else:
        t = t.to(torch.float32)
        if float(t.min()) < 0 or float(t.max()) > 1:
            raise ValueError(f"float images must lie in [0, 1]; got range [{float(t.min())}, {float(t.max())}]")
    return _a1_transform(t, crop, image_size).clamp_(0.0, 1.0)


def load_image_folder(path: str | os.PathLike[str], image_size: int = 64, crop: int = 128, *,
                      limit: int | None = None,
                      extensions: Sequence[str] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")) -> torch.Tensor:
    """Load a folder of images (natural sort by file name) with the A.1 preprocessing.

    Each image is read with PIL, converted to RGB and ``ToTensor``-scaled to [0, 1], centre
    cropped to ``crop`` x ``crop`` and bilinearly resized to ``image_size`` (align_corners=False).
    Returns float32 (N, 3, image_size, image_size). To reproduce the paper with CelebA: the first
    182,599 images for training, the last 20,000 as the test split.
    """
    from PIL import Image

    files = sorted((f for f in os.listdir(path) if f.lower().endswith(tuple(extensions))), key=natural_key)
    if limit is not None:
        files = files[: int(limit)]
    if not files:
        raise ValueError(f"no images with extensions {extensions} in {path!r}")
    out = torch.empty((len(files), 3, image_size, image_size), dtype=torch.float32)
    for i, f in enumerate(files):
        with Image.open(os.path.join(path, f)) as im:
            arr = np.asarray(im.convert("RGB"))
        out[i] = load_image_array(arr[None], image_size, crop)[0]
    return out
