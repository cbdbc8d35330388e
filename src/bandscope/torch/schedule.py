"""Checkpoint schedules, re-exported from the core :mod:`bandscope.schedule` (where they are
defined once; they need no torch)."""
from __future__ import annotations

from ..schedule import PAPER_EPOCHS, geometric_schedule, paper_epochs, paper_schedule

__all__ = ["PAPER_EPOCHS", "paper_epochs", "paper_schedule", "geometric_schedule"]
