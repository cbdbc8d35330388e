"""The options of the key-search analysis, validated once (:class:`AnalysisOptions`).

Light on purpose: the command line reads the defaults from here to build its parser without
importing the analysis (scipy, xarray), so ``bandscope --help`` starts fast.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["AnalysisOptions", "DEFAULT_WINDOWS", "DEFAULT_GAMMA_WINDOWS"]

DEFAULT_WINDOWS = ((0.95, 0.01), (0.90, 0.10), (0.80, 0.20))
DEFAULT_GAMMA_WINDOWS = ((0.0, 10.0), (0.0, 25.0), (0.0, 50.0))
_FLOOR_CONVENTIONS = ("mean_last_k", "final")



@dataclass(frozen=True)
class AnalysisOptions:
    """Every option of :func:`analyze`, validated once (CLI: ``bandscope analyze --help``).

    Parameters
    ----------
    windows : sequence of (hi, lo)
        Threshold windows, 0 < lo < hi < 1 (paper: 0.95/0.01; B.3 adds 0.90/0.10,
        0.80/0.20). The first is the primary window. CLI ``--windows``.
    floor : {"mean_last_k", "final"}
        Floor convention (A.9). CLI ``--floor``.
    k : int
        Checkpoints averaged by the mean-of-last-k floor (paper: 5). CLI ``-k/--floor-k``.
    deflation : float
        The paper's fixed n_eff = n / deflation for ``delta_bic_neff`` (paper: 10; >= 1).
        CLI ``--deflation``.
    min_points : int
        Windows with fewer checkpoints are not fitted (status ``"omitted"``; paper: 5; >= 4).
        CLI ``--min-points``.
    saturation_tol_pct : float
        A band whose floor-window drift is at least this many % of its range is flagged
        (``saturated`` False) and a warning is issued. CLI ``--saturation-tol``.
    n_starts : int
        Starts of the lmfit multistart fallback. CLI ``--n-starts``.
    gamma_windows : sequence of (epoch0, epoch1)
        Epoch windows of the γ fit (``gamma_w``; needs an ``epoch`` variable). CLI
        ``--gamma-windows``.
    fallback : bool
        Re-fit curves the batch solver did not converge on with lmfit. CLI ``--no-fallback``.
    band_sum_missing : {"nan", "observed"}
        What R̂_Σ does with a band whose fit is not ``"ok"``: ``"nan"`` (default) makes
        ``band_sum_fit``/``band_sum_r2`` NaN for that run and window; ``"observed"`` puts
        the band's observed R_i in the sum (flatters R², so opt-in). CLI
        ``--band-sum-missing``.

    Examples
    --------
    >>> AnalysisOptions(k=3).k
    3
    >>> AnalysisOptions(windows=[(0.01, 0.95)])
    Traceback (most recent call last):
    ...
    ValueError: window thresholds must satisfy 0 < lo < hi < 1, got (0.01, 0.95); give (hi, lo), e.g. (0.95, 0.01)
    """

    windows: tuple = DEFAULT_WINDOWS
    floor: Literal["mean_last_k", "final"] = "mean_last_k"
    k: int = 5
    deflation: float = 10.0
    min_points: int = 5
    saturation_tol_pct: float = 2.0
    n_starts: int = 5
    gamma_windows: tuple = DEFAULT_GAMMA_WINDOWS
    fallback: bool = True
    band_sum_missing: Literal["nan", "observed"] = "nan"

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        from .trajectory import threshold_pairs

        put("windows", tuple(threshold_pairs(self.windows)))
        if self.floor not in _FLOOR_CONVENTIONS:
            raise ValueError(f"floor must be one of {_FLOOR_CONVENTIONS}, got {self.floor!r}")
        if self.band_sum_missing not in ("nan", "observed"):
            raise ValueError("band_sum_missing must be 'nan' or 'observed', got "
                             f"{self.band_sum_missing!r}")
        for name in ("k", "min_points", "n_starts"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v:
                raise ValueError(f"{name} must be an integer, got {v!r}")
            put(name, int(v))
        if self.k < 1 or self.min_points < 4:
            raise ValueError("need k >= 1 and min_points >= 4 (3 Weibull parameters + 1); got "
                             f"k={self.k}, min_points={self.min_points}")
        if self.n_starts < 1:
            raise ValueError(f"n_starts must be >= 1, got {self.n_starts}")
        d = float(self.deflation)
        if not (np.isfinite(d) and d >= 1):
            raise ValueError(f"deflation must be finite and >= 1 (n_eff = n / deflation <= n), "
                             f"got {self.deflation!r}")
        put("deflation", d)
        tol = float(self.saturation_tol_pct)
        if not (np.isfinite(tol) and tol > 0):
            raise ValueError(f"saturation_tol_pct must be a positive number, got {tol!r}")
        put("saturation_tol_pct", tol)
        gw = tuple((float(a), float(b)) for a, b in self.gamma_windows)
        for a, b in gw:
            if not a < b:
                raise ValueError(f"gamma epoch window ({a:g}, {b:g}) must have start < end")
        put("gamma_windows", gw)
        put("fallback", bool(self.fallback))

    @classmethod
    def resolve(cls, options: AnalysisOptions | None = None, **overrides: Any) -> AnalysisOptions:
        """``options`` (an :class:`AnalysisOptions` or None) with ``overrides`` applied."""
        base = cls() if options is None else options
        if not isinstance(base, cls):
            raise TypeError(f"options must be an AnalysisOptions, got {type(base).__name__}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown analysis option(s) {sorted(unknown)}; known: "
                            f"{[f.name for f in dataclasses.fields(cls)]}")
        return dataclasses.replace(base, **overrides) if overrides else base

    @property
    def alphas(self) -> npt.NDArray[np.float64]:
        """Every threshold of every window, descending (the ``alpha`` coordinate)."""
        return np.array(sorted({a for w in self.windows for a in w}, reverse=True))

    @property
    def window_labels(self) -> list[str]:
        """The windows as labels (`window_label`), in the order of `windows`."""
        from .trajectory import window_label

        return [window_label(h, lo) for h, lo in self.windows]
