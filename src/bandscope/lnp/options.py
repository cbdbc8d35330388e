"""The options of the spectral-reach analysis (:class:`ReachOptions`), validated once.

Light on purpose: the command line reads the defaults from here to build its parser without
importing the analysis (xarray).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BandscopeInputError

__all__ = ["ReachOptions"]


@dataclass(frozen=True)
class ReachOptions:
    """Options of the spectral-reach analysis, shared by the functions, the CLI and the report.

    Attributes
    ----------
    last_k : int
        Windows averaged for the last-window mean (default 3).
    slope_start : int or None
        First optimizer step of the late log-log slope; ``None``: a tenth of the run's last LNP
        step (the last decade of training).
    probe_bins : int
        Normalised-time bins τ of the §5.1 probe ratio (default 10, as Figure 4).
    probe_fraction : float
        Top fraction of P kept per probe window before averaging (appendix C.1, default 0.1).
    max_assignments : int
        Largest number of run-to-size assignments the exact permutation test enumerates.
    """

    last_k: int = 3
    slope_start: int | None = None
    probe_bins: int = 10
    probe_fraction: float = 0.1
    max_assignments: int = 2_000_000

    def __post_init__(self) -> None:
        if int(self.last_k) < 1:
            raise BandscopeInputError(f"last_k = {self.last_k!r}: need at least one window; pass last_k >= 1")
        if self.slope_start is not None and int(self.slope_start) < 0:
            raise BandscopeInputError(f"slope_start = {self.slope_start!r}: need a step >= 0 (or None)")
        if int(self.probe_bins) < 1:
            raise BandscopeInputError(f"probe_bins = {self.probe_bins!r}: need >= 1")
        if not 0 < float(self.probe_fraction) <= 1:
            raise BandscopeInputError(f"probe_fraction = {self.probe_fraction!r}: need 0 < fraction <= 1")
