"""Spectral reach across sizes (bandscope.lnp.reach): the exact permutation test, by-size summaries, and an
oracle re-computing the numbers of the former tools/lm_scaling_report.py from the original run folders."""
from __future__ import annotations

import glob
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from bandscope.errors import BandscopeInputError
from bandscope.lnp.reach import (
    by_size,
    n_assignments,
    permutation_pvalue,
    reach_analysis,
    size_ordering,
    spearman,
    summarise_runs,
)
from bandscope.lnp.windows import ReachOptions

ROOT = Path(__file__).resolve().parents[1] / "reference_runs"


def brute_force_pvalue(groups, values, alternative="less"):
    """Every one of the n! orderings of the group labels (each distinct assignment counted prod n_g! times)."""
    groups, values = list(groups), np.asarray(values, float)
    obs = spearman(groups, values)
    rhos = np.array([spearman(perm, values) for perm in itertools.permutations(groups)])
    if alternative == "less":
        return float(np.mean(rhos <= obs + 1e-12))
    return float(np.mean(rhos >= obs - 1e-12))


small_case = st.integers(2, 3).flatmap(lambda g: st.tuples(
    st.lists(st.integers(1, 2), min_size=g, max_size=g),
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=6, max_size=6)))


@settings(max_examples=15, deadline=None)
@given(small_case, st.sampled_from(["less", "greater"]))
def test_exact_pvalue_equals_brute_force_over_all_orderings(case, alternative):
    counts, vals = case
    groups = np.repeat(np.arange(len(counts)) * 10.0 + 5, counts)
    vals = np.asarray(vals[: groups.size])
    r = permutation_pvalue(groups, vals, alternative)
    if np.isnan(r["p_value"]):
        assert np.unique(vals).size < 2
        return
    assert r["p_value"] == pytest.approx(brute_force_pvalue(groups, vals, alternative), abs=1e-12)
    assert r["n_assignments"] == n_assignments(counts)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=2, max_size=4), st.data())
def test_pvalue_in_unit_interval_and_invariant_to_relabelling(counts, data):
    n = sum(counts)
    vals = np.asarray(data.draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n)), dtype=float)
    keys = np.repeat(np.array([1.0, 2.0, 3.0, 4.0][: len(counts)]), counts)
    r = permutation_pvalue(keys, vals)
    if np.isnan(r["p_value"]):
        return
    assert 1 / r["n_assignments"] <= r["p_value"] <= 1
    perm = np.random.default_rng(n).permutation(n)  # run order does not matter
    assert permutation_pvalue(keys[perm], vals[perm])["p_value"] == pytest.approx(r["p_value"], abs=1e-12)
    relabelled = 1e5 * np.exp(keys)  # any increasing relabelling of the sizes
    assert permutation_pvalue(relabelled, vals)["p_value"] == pytest.approx(r["p_value"], abs=1e-12)
    monotone = np.exp(vals / 1e3)  # Spearman: log Q and Q give the same test
    assert permutation_pvalue(keys, monotone)["p_value"] == pytest.approx(r["p_value"], abs=1e-12)


def test_known_ordering_gives_the_smallest_attainable_pvalue_and_its_reverse_one():
    sizes = np.repeat([1e4, 1e5, 1e6, 1e7], 2)
    p = np.array([8.0, 7.5, 6.0, 5.5, 4.0, 3.5, 2.0, 1.5])  # larger models lower P, seeds never cross
    best = permutation_pvalue(sizes, p)
    assert best["n_assignments"] == 2520 and best["n_as_extreme"] == 1
    assert best["p_value"] == pytest.approx(1 / 2520)
    assert permutation_pvalue(sizes, -p)["p_value"] == 1.0
    assert permutation_pvalue(sizes, -p, "greater")["p_value"] == pytest.approx(1 / 2520)


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x, y = np.repeat([1.0, 2.0, 3.0], 3), rng.normal(size=9)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_too_many_assignments_is_refused_with_the_fix():
    with pytest.raises(BandscopeInputError, match="max_assignments"):
        permutation_pvalue(np.repeat(np.arange(6.0), 3), np.arange(18.0), max_assignments=1000)


def synthetic_runs(ordered=True):
    """Three sizes x two seeds with P_AB power laws whose floor falls with size (ordered) or not."""
    from test_lnp_windows import synthetic_run

    runs = []
    for i, n in enumerate([1_000, 10_000, 100_000]):
        for seed in (0, 1):
            r = synthetic_run(-0.5, flat_from=[300, 1000, 3000][i if ordered else 2 - i], scale=1 + 0.1 * seed)
            r.attrs.update(name=f"n{n}-s{seed}", n_parameters=n)
            runs.append(r)
    return runs


def test_analysis_finds_a_known_size_ordering():
    res = reach_analysis(synthetic_runs(True))
    row = res.sel(ordering="spectral_position_cross_last_mean")
    assert float(row.ordering_rho) < -0.8 and float(row.ordering_p_value) == pytest.approx(1 / 90)
    rev = reach_analysis(synthetic_runs(False)).sel(ordering="spectral_position_cross_last_mean")
    assert float(rev.ordering_p_value) == 1.0
    assert res.size.values.tolist() == [1000, 10000, 100000]
    assert res.size_n_runs.values.tolist() == [2, 2, 2]


def test_analysis_is_the_composition_of_its_public_parts():
    runs, opt = synthetic_runs(), ReachOptions(last_k=2)
    whole = reach_analysis(runs, opt)
    per_run = summarise_runs(runs, opt)
    parts = xr.merge([per_run, by_size(per_run), size_ordering(per_run)])
    for v in parts.data_vars:
        xr.testing.assert_equal(whole[v], parts[v])
    for v in whole.data_vars:
        assert whole[v].attrs.get("definition"), v


def _tool_numbers(run_dir: Path) -> dict:
    """The numbers of the former tools/lm_scaling_report.py, re-computed the obvious way (pandas groupby,
    numpy polyfit) from the original folder written by tools/lm_scaling.py."""
    from bandscope.lnp import probe_ratio

    lnp = xr.load_dataset(run_dir / "lnp.nc")
    frame = lnp[["lnp_spectral_position", "lnp_spectral_position_cross"]].to_dataframe()
    frame["step"] = lnp.lnp_step.values.astype(float)
    w = frame.groupby(lnp.lnp_window.values).mean()
    out = {}
    for col, key in (("lnp_spectral_position", "spectral_position"), ("lnp_spectral_position_cross",
                                                                      "spectral_position_cross")):
        late = w[(w.step >= 1000) & (w[col] > 0)]
        out[f"{key}_late_slope"] = np.polyfit(np.log(late.step), np.log(late[col]), 1)[0]
        out[f"{key}_last_mean"] = w[col].iloc[-3:].mean()
    held = pd.read_csv(run_dir / "heldout.csv")
    out["heldout_loss_final"] = float(held.heldout_loss.iloc[-1])
    pt, pr = (xr.load_dataset(run_dir / f"probe_{k}.nc") for k in ("trained", "random"))
    ratio = probe_ratio(pt.lnp_spectral_position, pr.lnp_spectral_position, bins=10,
                        window_pretrained=pt.lnp_window, window_random=pr.lnp_window)
    out["probe_ratio_median"] = float(np.nanmedian(ratio.values))
    out["n_parameters"] = json.loads((run_dir / "config.json").read_text())["n_params"]
    return out


@pytest.mark.parametrize("root", ["lm-scaling", "lm-scaling-long"])
def test_oracle_former_report_tool_on_the_shipped_runs(root):
    files = sorted(glob.glob(str(ROOT / root / "runs" / "*.nc")))
    assert len(files) >= 6
    res = reach_analysis([xr.load_dataset(f) for f in files], ReachOptions(slope_start=1000))
    for name in res.run.values:
        expected = _tool_numbers(ROOT / root / str(name))
        for key, value in expected.items():
            assert float(res[key].sel(run=name)) == pytest.approx(value, rel=1e-9), (name, key)
