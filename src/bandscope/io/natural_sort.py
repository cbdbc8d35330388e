"""Natural sort order of file names: ``step_2`` before ``step_10``."""
from __future__ import annotations

import re

__all__ = ["natural_key"]


def natural_key(name) -> list:
    """Sort key in which runs of digits compare as integers and letters case-insensitively.

    Examples
    --------
    >>> sorted(["c10.pt", "c2.pt", "C1.pt"], key=natural_key)
    ['C1.pt', 'c2.pt', 'c10.pt']
    """
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]
