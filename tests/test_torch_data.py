"""Embedded dataset and the A.1 loader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bandscope.torch.reference.data import embedded_dataset, load_image_array, load_image_folder, to_float


def test_embedded_deterministic_and_distinct_seeds():
    a = embedded_dataset(16, 24, 8)
    b = embedded_dataset(16, 24, 8)
    c = embedded_dataset(16, 24, 8, data_seed=1)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train)
    assert a.train.dtype == torch.uint8 and a.train.shape == (24, 3, 16, 16)
    assert a.train.float().std() > 10  # real image content, not constant


def test_lfw_option():
    d = embedded_dataset(32, 16, 4, source="lfw")
    assert d.train.shape == (16, 3, 32, 32)
    assert torch.equal(d.train[:, 0], d.train[:, 1])  # grey replicated
    with pytest.raises(ValueError, match="source"):
        embedded_dataset(16, 4, 4, source="celeba")


def test_to_float():
    x = torch.tensor([0, 255], dtype=torch.uint8)
    assert to_float(x).tolist() == [0.0, 1.0]


def _a1_oracle(img_uint8_hwc):
    """A.1 written out: ToTensor, centre crop 128 (torchvision rounding), bilinear 64."""
    t = torch.from_numpy(img_uint8_hwc).permute(2, 0, 1).float() / 255.0
    h, w = t.shape[1:]
    top, left = int(round((h - 128) / 2.0)), int(round((w - 128) / 2.0))
    t = t[:, top:top + 128, left:left + 128]
    return F.interpolate(t[None], size=(64, 64), mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("hw", [(218, 178), (128, 128), (200, 131)])
def test_a1_array_loader_matches_oracle(hw):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    got = load_image_array(img[None])[0]
    torch.testing.assert_close(got, _a1_oracle(img))  # incl. odd margins: torchvision rounding


def test_folder_loader_natural_sort(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    imgs = {}
    for i in (10, 2, 1):
        arr = rng.integers(0, 256, size=(130, 130, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
        imgs[i] = arr
    out = load_image_folder(tmp_path, 64)
    assert out.shape == (3, 3, 64, 64)
    for k, i in enumerate((1, 2, 10)):
        torch.testing.assert_close(out[k], load_image_array(imgs[i][None])[0])
    with pytest.raises(ValueError, match="smaller than the centre crop"):
        load_image_array(np.zeros((1, 100, 100, 3), dtype=np.uint8))
