"""Spectral reach across model sizes: per-size summaries and an exact permutation test of the size ordering.

Spectral reach §4 claims that larger models reach lower spectral position (Figure 1). Given the
per-run summaries of :mod:`bandscope.lnp.windows`, this module groups runs by model size (the
run's ``n_parameters``) and tests the ordering with

    ρ = Spearman correlation between n_parameters and a per-run quantity Q over the runs

(ties in n_parameters, i.e. seeds of one size, get their average rank). Its one-sided p-value
in the predicted direction (``alternative="less"``: larger models lower Q) is exact: the
fraction of all distinct assignments of the runs to the size groups (keeping each group's
number of runs) whose ρ is at most the observed one. Under the null hypothesis that Q does not
depend on size, every assignment is equally likely, so the p-value needs no distributional
assumption; with 8 runs in 4 sizes of 2 there are 8!/(2!^4) = 2,520 assignments and the smallest
attainable p-value is 1/2,520. Spearman ρ depends on ranks only, so Q and log Q give the same test.

Numpy kernels are ``_name``; the public functions take and return xarray objects.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xarray as xr

from ..errors import BandscopeInputError
from .windows import ReachOptions, summarise_run

#: the alternative hypothesis of a one-sided (or two-sided) permutation test
Alternative = Literal["less", "greater", "two-sided"]

__all__ = ["spearman", "n_assignments", "permutation_pvalue", "size_ordering", "by_size",
           "summarise_runs", "reach_analysis", "ORDERING_TESTS"]

#: per-run quantities the analysis tests for the size ordering, with the predicted direction
ORDERING_TESTS: dict[str, Alternative] = {
    "spectral_position_cross_last_mean": "less",
    "spectral_position_last_mean": "less",
    "heldout_loss_final": "less",
    "gradient_cosine_last_mean": "two-sided",
}


# --------------------------------------------------------------------------------------------
# numpy kernels
# --------------------------------------------------------------------------------------------
def _ranks(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Ranks 1..n of ``x`` along the last axis, ties averaged."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.arange(1, x.size + 1)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def _pearson_rows(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Pearson correlation of each row of ``a`` (n_rows, n) with the vector ``b`` (n)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a0 = a - a.mean(axis=-1, keepdims=True)
    b0 = b - b.mean()
    denom = np.sqrt(np.sum(a0**2, axis=-1) * np.sum(b0**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(a0 * b0, axis=-1) / denom


def _spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman ρ of two vectors (Pearson correlation of their average ranks)."""
    return float(_pearson_rows(_ranks(x)[None, :], _ranks(y))[0])


def _assignments(counts: Sequence[int]) -> npt.NDArray[np.int64]:
    """Every distinct assignment of n = sum(counts) slots to groups 0..G-1 with those counts.

    Returns an int array (n_assignments, n): row r gives each slot's group.
    """
    n = int(sum(counts))
    rows: list[npt.NDArray[np.int64]] = []

    def fill(slots: list[int], group: int, current: npt.NDArray[np.int64]) -> None:
        if group == len(counts):
            rows.append(current.copy())
            return
        for chosen in itertools.combinations(slots, counts[group]):
            rest = [s for s in slots if s not in chosen]
            current[list(chosen)] = group
            fill(rest, group + 1, current)

    fill(list(range(n)), 0, np.zeros(n, dtype=np.int64))
    return np.asarray(rows, dtype=np.int64).reshape(-1, n)


def _n_assignments(counts: Iterable[int]) -> int:
    n = int(sum(counts))
    out = math.factorial(n)
    for c in counts:
        out //= math.factorial(int(c))
    return out


def _permutation_pvalue(groups: npt.ArrayLike, values: npt.ArrayLike, alternative: Alternative = "less",
                        rtol: float = 1e-12) -> tuple[float, float, int, int]:
    """Exact one-sided permutation p-value of Spearman ρ(groups, values) over group assignments.

    ``groups``: an ordered group key per run (e.g. n_parameters); ``values``: the quantity.
    Returns (ρ_observed, p, number of assignments, number at least as extreme).
    """
    g = np.asarray(groups, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    keys, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    rank_of_group = np.empty(keys.size)  # the average rank of each group's runs (ties)
    start = 0
    for i, c in enumerate(counts):
        rank_of_group[i] = start + (c + 1) / 2.0
        start += c
    y_rank = _ranks(y)
    observed = float(_pearson_rows(rank_of_group[inverse][None, :], y_rank)[0])
    table = _assignments(counts.tolist())
    rho = _pearson_rows(rank_of_group[table], y_rank)
    tol = rtol * max(1.0, abs(observed))
    if alternative == "less":
        extreme = int(np.sum(rho <= observed + tol))
    elif alternative == "greater":
        extreme = int(np.sum(rho >= observed - tol))
    else:
        extreme = int(np.sum(np.abs(rho) >= abs(observed) - tol))
    return observed, extreme / rho.size, int(rho.size), extreme


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman rank correlation ρ (Pearson correlation of average ranks; ties averaged).

    Examples
    --------
    >>> spearman([1, 2, 3], [30.0, 20.0, 10.0])
    -1.0
    """
    return _spearman(x, y)


def n_assignments(counts: Iterable[int]) -> int:
    """Distinct assignments of runs to groups of the given sizes: n! / Π n_g! (multinomial).

    >>> n_assignments([2, 2, 2, 2])
    2520
    """
    return _n_assignments(counts)


def permutation_pvalue(groups: npt.ArrayLike, values: npt.ArrayLike, alternative: Alternative = "less", *,
                       max_assignments: int = 2_000_000) -> dict[str, Any]:
    """Exact permutation test of Spearman ρ between a group key and a per-run value.

    Enumerates every distinct assignment of the runs to the groups (each group keeps its
    number of runs) and counts those whose ρ is as extreme as the observed one:
    ``alternative="less"`` counts ρ ≤ ρ_obs (predicted: larger key, smaller value),
    ``"greater"`` ρ ≥ ρ_obs, ``"two-sided"`` |ρ| ≥ |ρ_obs|. The observed assignment is one
    of them, so p ≥ 1 / n_assignments. NaN values are dropped first.

    Returns
    -------
    dict
        ``rho``, ``p_value``, ``n_assignments``, ``n_as_extreme``, ``n_runs``, ``n_groups``.

    Examples
    --------
    >>> r = permutation_pvalue([1, 1, 2, 2, 3, 3], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    >>> r["rho"] < 0, r["n_assignments"], round(r["p_value"], 6)
    (True, 90, 0.011111)
    """
    if alternative not in ("less", "greater", "two-sided"):
        raise BandscopeInputError(f"alternative = {alternative!r}: expected 'less', 'greater' or 'two-sided'")
    g = np.asarray(groups, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if g.shape != y.shape or g.ndim != 1:
        raise BandscopeInputError(f"groups (shape {g.shape}) and values (shape {y.shape}) must be 1-D of equal "
                                  "length: one group key and one value per run")
    keep = np.isfinite(g) & np.isfinite(y)
    g, y = g[keep], y[keep]
    counts = np.unique(g, return_counts=True)[1]
    nan = {"rho": float("nan"), "p_value": float("nan"), "n_assignments": 0, "n_as_extreme": 0,
           "n_runs": int(g.size), "n_groups": int(counts.size)}
    if counts.size < 2 or np.unique(y).size < 2:
        return nan  # one group, or constant values: ρ is undefined
    total = _n_assignments(counts)
    if total > max_assignments:
        raise BandscopeInputError(
            f"{g.size} runs in {counts.size} sizes have {total:,} assignments, more than max_assignments = "
            f"{max_assignments:,}; raise max_assignments (time grows with it) or test fewer runs")
    rho, p, n, extreme = _permutation_pvalue(g, y, alternative)
    return {"rho": rho, "p_value": p, "n_assignments": n, "n_as_extreme": extreme,
            "n_runs": int(g.size), "n_groups": int(counts.size)}


def summarise_runs(runs: Sequence[xr.Dataset], options: ReachOptions | None = None) -> xr.Dataset:
    """Per-run summaries (:func:`bandscope.lnp.windows.summarise_run`) stacked on dim ``run``.

    Window quantities are padded with NaN to the longest window list (``lnp_window``), the
    probe ratio shares its ``time_bin`` bins. Coordinate ``run`` holds the run names.
    """
    options = options or ReachOptions()
    if not runs:
        raise BandscopeInputError("no runs given to the spectral-reach analysis; pass run files with LNP variables")
    names = [str(r.attrs.get("name", f"run{i}")) for i, r in enumerate(runs)]
    if len(set(names)) != len(names):
        raise BandscopeInputError(f"run names are not unique: {names}; rename the files or set attrs['name']")
    parts = [summarise_run(r, options) for r in runs]
    out = xr.concat(parts, dim=xr.DataArray(names, dims="run", name="run"), join="outer",
                    combine_attrs="override", coords="different", compat="equals", data_vars="all")
    for c, dim in (("window_step", "lnp_window"), ("checkpoint_step", "checkpoint")):
        if c in out.coords and "run" not in out[c].dims:  # the same schedule in every run: keep one layout
            out = out.assign_coords({c: out[c].expand_dims(run=out["run"].values).transpose("run", dim)})
    starts = {p.attrs["slope_start"] for p in parts}
    out.attrs = {"slope_start": f"{starts.pop():g}" if len(starts) == 1 else
                 "; ".join(f"{p.attrs['name']}: {p.attrs['slope_start']:g}" for p in parts),
                 "last_k": int(options.last_k)}
    from ..schema import annotate

    return annotate(out, "reach")  # the run coordinate too; attrs as reach_analysis gives them


def by_size(summary: xr.Dataset, quantities: Iterable[str] | None = None) -> xr.Dataset:
    """Mean, standard deviation (ddof 1; NaN for one run) and run count of per-run scalars by size.

    Groups the runs of :func:`summarise_runs` by ``n_parameters``; dim ``size`` (coordinate:
    the parameter count, ascending), dim ``quantity`` (the per-run scalar names).
    """
    scalars = [v for v in (quantities or summary.data_vars) if summary[v].dims == ("run",) and v != "n_parameters"]
    sizes = np.unique(summary["n_parameters"].values)
    mean = np.full((sizes.size, len(scalars)), np.nan)
    sd = np.full_like(mean, np.nan)
    count = np.zeros(sizes.size, dtype=np.int64)
    for i, s in enumerate(sizes):
        sel = summary["n_parameters"].values == s
        count[i] = int(sel.sum())
        for j, q in enumerate(scalars):
            v = np.asarray(summary[q].values[sel], dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                mean[i, j] = v.mean()
            if v.size >= 2:
                sd[i, j] = v.std(ddof=1)
    from ..schema import reach_attrs

    return xr.Dataset(
        {"size_mean": (("size", "quantity"), mean, reach_attrs("size_mean")),
         "size_sd": (("size", "quantity"), sd, reach_attrs("size_sd")),
         "size_n_runs": ("size", count, reach_attrs("size_n_runs"))},
        coords={"size": ("size", sizes.astype(np.int64), reach_attrs("size")),
                "quantity": ("quantity", scalars, reach_attrs("quantity"))})


def size_ordering(summary: xr.Dataset, tests: Mapping[str, Alternative] | None = None, *,
                  max_assignments: int = 2_000_000) -> xr.Dataset:
    """Exact permutation tests of the size ordering of per-run quantities (module docstring).

    ``tests``: quantity name -> alternative (default :data:`ORDERING_TESTS`: P_AB and P last-window
    means and the final held-out loss, all ``"less"``; the last-window mean of cos(∇L_A, ∇L_B),
    which links P_AB to P, ``"two-sided"``: the paper predicts no direction for it). Dim ``ordering``; variables
    ``ordering_rho``, ``ordering_p_value``, ``ordering_n_assignments``, ``ordering_n_as_extreme``,
    ``ordering_n_runs``, ``ordering_n_sizes``; coordinate ``ordering_alternative``.
    """
    from ..schema import reach_attrs

    tests = dict(ORDERING_TESTS if tests is None else tests)
    tests = {q: a for q, a in tests.items() if q in summary}
    rows: dict[str, list[Any]] = {k: [] for k in ("rho", "p_value", "n_assignments", "n_as_extreme", "n_runs",
                                                  "n_groups")}
    for q, alt in tests.items():
        r = permutation_pvalue(summary["n_parameters"].values, summary[q].values, alt,
                               max_assignments=max_assignments)
        for k in rows:
            rows[k].append(r[k])
    names = {"n_groups": "n_sizes"}
    ds = xr.Dataset(coords={"ordering": list(tests), "ordering_alternative": ("ordering", list(tests.values()))})
    for k, vals in rows.items():
        name = f"ordering_{names.get(k, k)}"
        dtype = np.float64 if k in ("rho", "p_value") else np.int64
        ds[name] = ("ordering", np.asarray(vals, dtype=dtype), reach_attrs(name))
    return ds


def reach_analysis(runs: Sequence[xr.Dataset], options: ReachOptions | None = None) -> xr.Dataset:
    """The spectral-reach analysis of runs with LNP: per run, by size, and the size-ordering tests.

    ``summarise_runs(runs)`` merged with ``by_size(...)`` and ``size_ordering(...)``; every
    variable's units and definition come from :data:`bandscope.schema.REACH`
    (``docs/format.md``). ``attrs['bandscope_results'] = "reach/1"``; ``attrs['which_p']``
    says which position is Figure 1's.
    """
    options = options or ReachOptions()
    per_run = summarise_runs(runs, options)
    out = xr.merge([per_run, by_size(per_run), size_ordering(per_run, max_assignments=options.max_assignments)],
                   combine_attrs="override")
    from ..schema import REACH_FORMAT, annotate

    out = annotate(out, "reach")  # the coordinates too (run, lnp_window, quantity, ordering, ...)
    out.attrs.update({
        "bandscope_results": REACH_FORMAT,
        "which_p": "spectral_position_cross = P_AB, batch A = the training batch, batch B = held out: the "
                   "quantity of spectral reach Figure 1 (appendix B.2.1); spectral_position = P_A (self)",
        "ordering_statistic": "Spearman rho between n_parameters (seeds tied) and the per-run quantity; exact "
                              "one-sided permutation p-value over all assignments of runs to the size groups",
        "last_k": int(options.last_k), "probe_bins": int(options.probe_bins),
        "probe_fraction": float(options.probe_fraction),
    })
    return out
