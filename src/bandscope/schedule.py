"""Checkpoint schedules: the paper's A.5 schedule and geometric (log-spaced) schedules.

Defined once here, in the core (numpy only): the torch recorder (``bandscope.schedule``
re-exports these) and the synthetic runs (:mod:`bandscope.keysearch.synthetic`) both use them.

A schedule is a sorted 1-D ``int64`` array of optimizer-step counts at which to record a
checkpoint, starting with 0 (the initialisation).
"""
from __future__ import annotations

import numpy as np

__all__ = ["PAPER_EPOCHS", "paper_epochs", "paper_schedule", "geometric_schedule"]

#: key search A.5: the 53 checkpoint epochs of a 50-epoch run
PAPER_EPOCHS = np.array(
    [0.0]
    + [1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0]
    + [1.5 + 0.5 * i for i in range(18)]  # 1.5, 2, ..., 10
    + list(range(11, 21))
    + list(range(22, 43, 2))
    + [45, 50],
    dtype=np.float64,
)


def paper_epochs(epochs: float = 50) -> np.ndarray:
    """A.5 checkpoint epochs, uniformly rescaled from 50 epochs to ``epochs`` (53 values)."""
    if not epochs > 0:
        raise ValueError(f"epochs must be positive, got {epochs!r}")
    return PAPER_EPOCHS * (float(epochs) / 50.0)


def paper_schedule(steps_per_epoch: int, epochs: float = 50) -> np.ndarray:
    """Optimizer steps of the key-search A.5 checkpoint schedule.

    Epoch 0; epoch 1/32, 1/16, 1/8, 3/16, 1/4, 3/8, 1/2, 5/8, 3/4, 7/8, 1; every half epoch to
    10; every epoch to 20; every 2 epochs to 42; 45 and 50 -- 53 points for a 50-epoch run. For
    ``epochs != 50`` every point is scaled by ``epochs / 50`` (a shortened run keeps the shape of
    the schedule). Steps are ``round(epoch * steps_per_epoch)``; points that round to the same
    step are merged, so very short epochs give fewer than 53 points.

    Examples
    --------
    >>> s = paper_schedule(32)
    >>> len(s), s[:4].tolist(), int(s[-1])
    (53, [0, 1, 2, 4], 1600)
    """
    spe = int(steps_per_epoch)
    if spe < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
    steps = np.round(paper_epochs(epochs) * spe).astype(np.int64)
    return np.unique(steps)


def geometric_schedule(total_steps: int, n_points: int = 53, first: int = 1) -> np.ndarray:
    """Step 0 plus ``n_points - 1`` log-spaced steps from ``first`` to ``total_steps``.

    Points that round to the same integer are merged (so short runs get fewer points); the
    last point is always ``total_steps``.

    Examples
    --------
    >>> geometric_schedule(1000, 5).tolist()
    [0, 1, 10, 100, 1000]
    """
    total, first, n = int(total_steps), int(first), int(n_points)
    if total < 1 or first < 1 or first > total or n < 2:
        raise ValueError(f"need 1 <= first <= total_steps and n_points >= 2; got first={first}, "
                         f"total_steps={total}, n_points={n}")
    pts = np.round(np.geomspace(first, total, n - 1)).astype(np.int64)
    return np.unique(np.concatenate([[0], pts, [total]]))
