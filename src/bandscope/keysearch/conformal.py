"""Conformal calibration of floor forecasts on real runs: scores, quantiles, leave-one-run-out.

A floor forecast from a run's prefix is a point ``p`` and a scale ``u > 0`` (both computed from
the prefix alone, :func:`point_and_scale`). On a calibration corpus of runs whose late values
are known (the *truth*: the mean of each saturated curve's last 10 % of checkpoints, never a
fit), the normalised signed scores ``r = (truth - p) / u`` are collected. Split-conformal
prediction (Vovk et al. 2005; Lei et al. 2018) then gives the interval

    [p + u · r_lo,  p + u · r_hi],
    r_lo = the ⌊(m + 1) α/2⌋-th smallest score,  r_hi = the ⌈(m + 1)(1 - α/2)⌉-th smallest,

m scores, α = 1 - confidence, which covers a new exchangeable forecast with probability at
least ``confidence`` (each tail at most α/2; -inf/+inf when m is too small for the rank).
Scores are grouped (Mondrian conformal, :func:`group_of`): a forecast made from fewer than
:data:`EARLY_CHECKPOINTS` checkpoints falls in the *early* group whatever its shape (a young run's
extrapolation errs far more than a mature run's at the same stage); the others are grouped by the
prefix's observable *stage* (:func:`stage_of`): how much of the fall seen so far came in the
second half of the fitted checkpoints, so that curves still moving and curves at rest get their
own quantiles.

The point is the latest value, moved down toward the ensemble floor only in the groups of
:data:`SHRINK_GROUPS` (the top stage group, "still falling fast", and the early group) by a
shrinkage weight ``k`` fitted on the same corpus so that the median error is never above the
naive forecast's at any of the corpus' prefixes (:func:`_fit_k`): ``k = 0`` is the naive "the
last value is the floor", ``k = 1`` trusts the ensemble. The point is never above the last value
(an ensemble floor above the latest checkpoint of a falling curve is a misfit, not evidence of a
rise).

:func:`conformal_bounds` is the fast kernel; :func:`_conformal_bounds_oracle` the slow obvious
one (sorting in a loop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

    import numpy.typing as npt

__all__ = ["conformal_bounds", "point_and_scale", "stage_of", "group_of", "Calibration", "fit_calibration",
           "STAGE_EDGES", "EARLY_CHECKPOINTS", "NOISE_WEIGHT", "K_GRID", "SHRINK_GROUP", "SHRINK_GROUPS",
           "EARLY_GROUP", "N_GROUPS"]

#: Mondrian groups by stage s = drop_half / range_seen: [0, e1), [e1, e2), ..., [e_last, inf)
STAGE_EDGES = (0.01, 0.03, 0.08, 0.2)
#: a forecast from fewer checkpoints than this (the prefix, whole curve) is in the early group
EARLY_CHECKPOINTS = 20
#: weight of the checkpoint noise sd in the scale u = spread + drop_half + NOISE_WEIGHT noise
NOISE_WEIGHT = 0.5
#: shrinkage weights searched for the point
K_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
#: the top stage group ("still falling fast")
SHRINK_GROUP = len(STAGE_EDGES)
#: the early group (fewer than EARLY_CHECKPOINTS checkpoints), after the stage groups
EARLY_GROUP = len(STAGE_EDGES) + 1
#: number of groups: the stage groups and the early group
N_GROUPS = len(STAGE_EDGES) + 2
#: the groups whose point may move below the last value; every other group's point is the
#: last value (k = 0)
SHRINK_GROUPS = (SHRINK_GROUP, EARLY_GROUP)


def _ranks(m: int, confidence: float) -> tuple[int, int]:
    a = round(1.0 - float(confidence), 12)  # 1 - 0.9 is 0.0999...98 in floating point
    lo = math.floor((m + 1) * a / 2.0 + 1e-9)
    hi = math.ceil((m + 1) * (1.0 - a / 2.0) - 1e-9)
    return lo, hi


def conformal_bounds(scores: npt.ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Split-conformal lower and upper score quantiles of signed scores (module docstring).

    ``(r_lo, r_hi)``: the ⌊(m+1)α/2⌋-th and ⌈(m+1)(1-α/2)⌉-th smallest of the m finite scores
    (1-based), -inf / +inf when that rank is below 1 / above m.

    Examples
    --------
    >>> conformal_bounds(np.arange(1.0, 40.0), 0.9)  # m = 39: ranks 2 and 38
    (2.0, 38.0)
    >>> conformal_bounds([0.0, 1.0], 0.95)
    (-inf, inf)
    """
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    lo, hi = _ranks(s.size, confidence)
    r_lo = float(s[lo - 1]) if lo >= 1 else -np.inf
    r_hi = float(s[hi - 1]) if hi <= s.size else np.inf
    return r_lo, r_hi


def _conformal_bounds_oracle(scores: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """Slow obvious oracle of :func:`conformal_bounds`: the smallest score with at least
    ``1 - α/2`` of the m + 1 (scores plus +inf) at or below it, and its mirror image."""
    s = [float(v) for v in scores if np.isfinite(v)]
    m = len(s)
    a = round(1.0 - confidence, 12)
    hi = np.inf
    for v in sorted(s):
        if sum(1 for t in s if t <= v) >= (1 - a / 2) * (m + 1) - 1e-9:
            hi = v
            break
    lo = -np.inf
    for v in sorted(s, reverse=True):
        if sum(1 for t in s if t >= v) >= (1 - a / 2) * (m + 1) - 1e-9:
            lo = v
            break
    return lo, hi


def stage_of(drop_half: npt.ArrayLike, range_seen: npt.ArrayLike,
             edges: Sequence[float] = STAGE_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """Observable stage of a prefix: ``drop_half / range_seen`` (0 = the second half of the
    fitted checkpoints did not fall at all), and its stage group index by ``edges``
    (default :data:`STAGE_EDGES`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        st = np.where(np.asarray(range_seen) > 0, np.asarray(drop_half) / np.asarray(range_seen), 0.0)
    return st, np.searchsorted(np.asarray(edges), st, side="right")


def group_of(drop_half: npt.ArrayLike, range_seen: npt.ArrayLike, n_seen: npt.ArrayLike,
             edges: Sequence[float] = STAGE_EDGES, early: int | None = EARLY_CHECKPOINTS) -> np.ndarray:
    """Calibration group of a prefix: ``len(edges) + 1`` (the early group) when it has fewer
    than ``early`` checkpoints, else its stage group (:func:`stage_of`); ``early=None``: stage
    groups only (calibrations of format 1).

    Examples
    --------
    >>> group_of([0.0, 0.5, 0.5], [1.0, 1.0, 1.0], [30, 30, 10]).tolist()  # at rest, falling, early
    [0, 4, 5]
    """
    _, g = stage_of(drop_half, range_seen, edges)
    if early is None:
        return g
    return np.where(np.asarray(n_seen) < early, len(edges) + 1, g)


def point_and_scale(last: npt.ArrayLike, floor_ens: npt.ArrayLike, spread: npt.ArrayLike, drop_half: npt.ArrayLike,
                    noise: npt.ArrayLike, k: npt.ArrayLike,
                    noise_weight: float = NOISE_WEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Point and scale of a floor forecast.

    Point ``last + k min(floor_ens - last, 0)`` (never above the last value) and scale
    ``u = spread + drop_half + w noise`` (w = :data:`NOISE_WEIGHT`; all ≥ 0; a tiny positive
    floor keeps u > 0): the disagreement of the plausible families, how much the curve still fell
    in the second half of the fit, and the checkpoint noise.

    Parameters
    ----------
    last, floor_ens, spread, drop_half, noise : float or array_like
        The prefix's observables (:data:`bandscope.keysearch.ensemble.FEATURES`).
    k : float or array_like
        Shrinkage weight of the point toward the ensemble floor (0 = the last value).
    noise_weight : float
        Weight w of the noise sd in the scale (default :data:`NOISE_WEIGHT`).

    Returns
    -------
    point, u : numpy.ndarray
        The point forecast of the floor and the scale of its conformal interval.

    Examples
    --------
    >>> p, u = point_and_scale(1.0, 0.6, 0.1, 0.2, 0.2, 0.5)
    >>> float(p), float(u)
    (0.8, 0.4)
    >>> float(point_and_scale(1.0, 1.3, 0.1, 0.2, 0.05, 0.5)[0])  # an ensemble floor above the last value
    1.0
    """
    last, fe = np.asarray(last, dtype=np.float64), np.asarray(floor_ens, dtype=np.float64)
    point = last + np.asarray(k) * np.minimum(fe - last, 0.0)
    u = np.asarray(spread) + np.asarray(drop_half) + float(noise_weight) * np.asarray(noise)
    u = np.maximum(u, 1e-12 * np.maximum(np.abs(last), 1e-300))
    return point, u


@dataclass
class Calibration:
    """Per-group shrinkage weights and conformal scores of floor forecasts (JSON-serialisable).

    ``k[g]`` the point's shrinkage weight of group g (:func:`group_of`), ``scores[g]`` the sorted
    signed scores, ``runs`` the calibration runs' names, ``source`` how it was made;
    ``stage_edges``, ``early_checkpoints`` and ``noise_weight`` define the groups and the scale
    it was made with (format 1 files, made before the early group existed, have
    ``early_checkpoints = None`` and ``noise_weight = 2``).
    """

    k: list
    scores: list
    runs: list = field(default_factory=list)
    source: str = ""
    stage_edges: tuple = STAGE_EDGES
    early_checkpoints: int | None = EARLY_CHECKPOINTS
    noise_weight: float = NOISE_WEIGHT
    format: str = "bandscope-forecast-calibration/2"

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "stage_edges": list(self.stage_edges),
                "early_checkpoints": self.early_checkpoints, "noise_weight": float(self.noise_weight),
                "k": [float(v) for v in self.k],
                "scores": [[float(v) for v in s] for s in self.scores], "runs": list(self.runs),
                "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        fmt = d.get("format")
        if fmt == "bandscope-forecast-calibration/1":  # stage groups only, scale with 2 noise sd
            return cls(k=list(d["k"]), scores=[list(s) for s in d["scores"]], runs=list(d.get("runs", [])),
                       source=str(d.get("source", "")), stage_edges=tuple(d["stage_edges"]),
                       early_checkpoints=None, noise_weight=2.0, format=fmt)
        if fmt != "bandscope-forecast-calibration/2":
            raise ValueError(f"not a bandscope forecast calibration (format {fmt!r}); "
                             "make one with `bandscope forecast --calibrate RUNS --calibration-out OUT.json`")
        early = d.get("early_checkpoints")
        return cls(k=list(d["k"]), scores=[list(s) for s in d["scores"]], runs=list(d.get("runs", [])),
                   source=str(d.get("source", "")), stage_edges=tuple(d["stage_edges"]),
                   early_checkpoints=None if early is None else int(early),
                   noise_weight=float(d["noise_weight"]), format=fmt)

    def interval(self, last: float, floor_ens: float, spread: float, drop_half: float, noise: float,
                 range_seen: float, confidence: float = 0.95,
                 n_seen: int | None = None) -> tuple[float, float, float, int, int]:
        """``(point, low, high, group, n_scores)`` of one forecast (scalars); ``n_seen`` is the
        number of checkpoints the forecast was made from (None: not early).

        When the group has too few scores for ``confidence`` (fewer than 2/α - 1), the interval
        uses the scores of all groups pooled and ``n_scores`` is their number (a small
        calibration of the user's own runs); when even those are too few, it is unbounded.
        """
        n = np.inf if n_seen is None else n_seen
        g = int(group_of(drop_half, range_seen, n, self.stage_edges, self.early_checkpoints))
        p, u = point_and_scale(last, floor_ens, spread, drop_half, noise, self.k[g], self.noise_weight)
        scores = self.scores[g]
        r_lo, r_hi = conformal_bounds(scores, confidence)
        if not (np.isfinite(r_lo) and np.isfinite(r_hi)):
            scores = [v for s in self.scores for v in s]
            r_lo, r_hi = conformal_bounds(scores, confidence)
        return float(p), float(p + u * r_lo), float(p + u * r_hi), g, len(scores)


def _fit_k(cols: Mapping[str, np.ndarray], grp: np.ndarray, prefix: np.ndarray, n_groups: int,
           fold: np.ndarray | None = None, min_cell: int = 5) -> np.ndarray:
    """Shrinkage weight of each group: 0 but in :data:`SHRINK_GROUPS`; there the k of
    :data:`K_GRID` minimising (lexicographically) the largest and then the mean, over the
    group's cells (prefixes, or prefix × ``fold``; cells with at least ``min_cell`` records), of
    median |point - truth| / median |last - truth|, with the point of :func:`point_and_scale`.
    k = 0 (the naive point) scores exactly 1 and wins ties, so in-sample no group's point is
    worse than the last value at any prefix."""
    fold = np.zeros(prefix.size, dtype=np.int64) if fold is None else np.asarray(fold)
    e0 = np.abs(cols["last"] - cols["truth"])
    step = np.minimum(cols["floor_ens"] - cols["last"], 0.0)
    k = np.zeros(n_groups)
    for g in (g_ for g_ in SHRINK_GROUPS if g_ < n_groups):
        in_g = grp == g
        cells = [in_g & (prefix == p) & (fold == f) for p in np.unique(prefix) for f in np.unique(fold)]
        cells = [c for c in cells if c.sum() >= min_cell and np.median(e0[c]) > 0]
        if not cells:
            continue
        best = (1.0, 1.0)
        for kk in K_GRID[1:]:
            e = np.abs(cols["last"] + kk * step - cols["truth"])
            r = [float(np.median(e[c]) / np.median(e0[c])) for c in cells]
            o = (round(max(r), 9), round(float(np.mean(r)), 9))
            if o < best:
                best, k[g] = o, float(kk)
    return k


def fit_calibration(records: Sequence[Mapping[str, Any]], *, runs: Iterable[str] = (),
                    source: str = "") -> Calibration:
    """Fit the shrinkage weights and collect the scores of a calibration corpus.

    Parameters
    ----------
    records : sequence of dict
        One per (run, curve, prefix) forecast of a saturated curve, with the keys of
        :data:`bandscope.keysearch.ensemble.FEATURES`, ``truth``, ``prefix`` and ``n`` (the
        checkpoints the forecast was made from).

    Returns
    -------
    Calibration
        Per group (:func:`group_of`): ``k`` (:func:`_fit_k`) and the sorted scores
        ``(truth - point) / u``.
    """
    n_groups = N_GROUPS
    cols = {key: np.array([float(r[key]) for r in records]) for key in
            ("last", "floor_ens", "spread", "drop_half", "noise", "range_seen", "truth", "n")}
    prefix = np.array([float(r.get("prefix", 0.0)) for r in records])
    grp = group_of(cols["drop_half"], cols["range_seen"], cols["n"])
    k = _fit_k(cols, grp, prefix, n_groups)
    p, u = point_and_scale(cols["last"], cols["floor_ens"], cols["spread"], cols["drop_half"], cols["noise"],
                           k[grp])
    scores = [sorted(((cols["truth"] - p) / u)[grp == g].tolist()) for g in range(n_groups)]
    return Calibration(k=[float(v) for v in k], scores=scores, runs=list(runs), source=source)


#: file name of the calibration shipped with the package (``bandscope/keysearch/``)
SHIPPED = "forecast_calibration.json"


def load_calibration(path: Calibration | str | os.PathLike[str] | None = None) -> Calibration:
    """The calibration in ``path`` (JSON of :meth:`Calibration.to_dict`), or the shipped one.

    Examples
    --------
    >>> cal = load_calibration()
    >>> len(cal.k) == len(cal.scores) == N_GROUPS
    True
    """
    import json
    from pathlib import Path

    if isinstance(path, Calibration):
        return path
    if path is None:
        from importlib import resources

        text = resources.files("bandscope.keysearch").joinpath(SHIPPED).read_text()
    else:
        p = Path(path)
        if not p.is_file():
            from ..errors import BandscopeInputError

            raise BandscopeInputError(f"calibration file {str(p)!r} does not exist; make one with "
                                      "`bandscope forecast --calibrate RUNS --calibration-out FILE.json`")
        text = p.read_text()
    return Calibration.from_dict(json.loads(text))
