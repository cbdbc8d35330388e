"""bandscope.keysearch.ordering: Spearman ρ against scipy, across-run summaries against numpy."""
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from bandscope.keysearch import ordering

# numeric: runs again in the rounding lane (`make test-rounding`, numpy's AVX-512 kernels off)
pytestmark = pytest.mark.numeric

RES = np.array([1, 2, 4, 8, 16, 32, 64])


def _oracle(row):
    ok = np.isfinite(row)
    if ok.sum() < 3 or np.ptp(row[ok]) == 0:
        return np.nan, int(ok.sum())
    return stats.spearmanr(RES[ok], row[ok]).statistic, int(ok.sum())


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.just(7)),
                  elements=st.one_of(st.sampled_from([0.0, 1.0, 2.0, np.nan]),
                                     st.floats(-5, 5))))
@settings(max_examples=60, deadline=None)
def test_spearman_matches_scipy_with_ties_and_nan(values):
    rho, n = ordering._spearman(values, RES)
    for i, row in enumerate(values):
        r_exp, n_exp = _oracle(row)
        assert n[i] == n_exp
        if np.isnan(r_exp):
            assert np.isnan(rho[i])
        else:
            assert rho[i] == pytest.approx(r_exp, abs=1e-12)


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 9)),
                  elements=st.one_of(st.sampled_from([0.0, 1.0, 2.0, -0.0]), st.floats(-5, 5))))
@settings(max_examples=80, deadline=None)
def test_average_ranks_are_scipys_rankdata(values):
    """The ranks behind ρ are scipy.stats.rankdata's (method "average"): ties, -0.0 == 0.0, one column."""
    np.testing.assert_array_equal(ordering._average_ranks(values), stats.rankdata(values, axis=1))


def test_band_ordering_signs_and_broadcast():
    onset = xr.DataArray(np.array([[0.1, 0.2, 0.3, 0.5, 0.4, 0.8, 0.9]] * 2), dims=("window", "band"),
                         coords={"band": RES, "window": ["a", "b"]})
    floor = xr.DataArray(RES * 1e-3, dims="band", coords={"band": RES})
    init = xr.DataArray(1.0 / RES, dims="band", coords={"band": RES})
    width = onset.copy()
    width[0, 0] = np.nan
    out = ordering.band_ordering(onset, width, floor, init)
    assert out.rho.sel(metric="floor").values.tolist() == [1.0, 1.0]
    assert out.rho.sel(metric="initial_residual").values.tolist() == [-1.0, -1.0]
    assert out.rho.sel(metric="onset", window="a") == pytest.approx(
        stats.spearmanr(RES, onset[0]).statistic)
    assert out.rho_n.sel(metric="width").values.tolist() == [6, 7]


def test_summarize_runs_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    x[2, 1] = np.nan
    da = xr.DataArray(x, dims=("run", "window"))
    s = ordering.summarize_runs(da)
    for w in range(3):
        col = x[:, w][np.isfinite(x[:, w])]
        assert float(s["median"][w]) == pytest.approx(np.median(col))
        assert float(s.q25[w]) == pytest.approx(np.percentile(col, 25))
        assert float(s.q75[w]) == pytest.approx(np.percentile(col, 75))
        assert float(s["min"][w]) == col.min() and float(s["max"][w]) == col.max()
        assert int(s.n_runs[w]) == col.size
