"""Models of key search A.2 and the A.5 schedule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bandscope.keysearch.synthetic import PAPER_EPOCHS as CORE_PAPER_EPOCHS
from bandscope.schedule import PAPER_EPOCHS, geometric_schedule, paper_epochs, paper_schedule
from bandscope.torch.reference.models import CNNAutoencoder, ViTAutoencoder, build_model, count_parameters


@pytest.mark.parametrize("arch,count", [("cnn", 1_829_379), ("vit", 2_779_651)])
def test_parameter_counts_match_paper_at_64(arch, count):
    assert count_parameters(build_model(arch, 64)) == count


@pytest.mark.parametrize("arch,size,kw", [("cnn", 32, {}), ("cnn", 64, {}), ("vit", 32, {}), ("vit", 32, {"patch": 8}),
                                          ("cnn", 16, {})])
def test_shapes_and_sigmoid_range(arch, size, kw):
    m = build_model(arch, size, seed=0, **kw)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_seeded_init_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = build_model("vit", 32, seed=7), build_model("vit", 32, seed=7)
    c = build_model("vit", 32, seed=8)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="arch"):
        build_model("mlp")
    with pytest.raises(ValueError, match="multiple of 16"):
        CNNAutoencoder(40)
    with pytest.raises(ValueError, match="patch"):
        ViTAutoencoder(48, patch=32)


def test_paper_schedule_53_points_of_a5():
    # 32 steps per epoch makes every A.5 point an integer step: epoch = step / 32 exactly
    s = paper_schedule(32, 50)
    assert s.size == 53
    expected = [0, 1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1]
    expected += [1.5 + 0.5 * i for i in range(18)] + list(range(11, 21)) + list(range(22, 43, 2)) + [45, 50]
    np.testing.assert_array_equal(s / 32.0, np.array(expected))
    np.testing.assert_array_equal(PAPER_EPOCHS, CORE_PAPER_EPOCHS)
    assert s.dtype == np.int64 and np.all(np.diff(s) > 0)


def test_paper_schedule_scaled_and_merging():
    np.testing.assert_allclose(paper_epochs(25), PAPER_EPOCHS / 2)
    s = paper_schedule(64, 30)  # the CNN reference runs
    assert s.size == 53 and s[-1] == 1920
    tiny = paper_schedule(2, 50)  # 1/32 and 1/16 epoch round to steps 0 -> merged
    assert tiny[0] == 0 and np.all(np.diff(tiny) > 0) and tiny.size < 53
    with pytest.raises(ValueError):
        paper_schedule(0)


def test_geometric_schedule():
    s = geometric_schedule(10_000, 53)
    assert s[0] == 0 and s[-1] == 10_000 and np.all(np.diff(s) > 0)
    ratios = s[20:][1:] / s[20:][:-1]  # log-spaced where rounding no longer merges points
    np.testing.assert_allclose(ratios, ratios.mean(), rtol=0.02)
    with pytest.raises(ValueError):
        geometric_schedule(0)
