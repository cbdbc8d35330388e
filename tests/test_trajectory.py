"""bandscope.keysearch.trajectory: floors, residuals, A.10 crossings, active windows."""
import numpy as np
import pytest
import xarray as xr
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bandscope.keysearch import trajectory as tr
from bandscope.run import make_run

# numeric: runs again in the rounding lane (`make test-rounding`, numpy's AVX-512 kernels off)
pytestmark = pytest.mark.numeric


def _crossing_oracle(q, s, alpha):
    """Slow, obvious A.10: walk the checkpoints."""
    for k in range(1, len(q)):
        if q[k - 1] > alpha and q[k] <= alpha:
            return s[k - 1] + (q[k - 1] - alpha) / (q[k - 1] - q[k]) * (s[k] - s[k - 1])
    return np.nan


# ---------------------------------------------------------------- crossings
def test_crossing_hand_worked():
    q = np.array([1.0, 0.9, 0.6, 0.2, 0.05, -0.01])
    s = np.array([0.0, 1.0, 3.0, 4.0, 8.0, 10.0])
    c = tr._crossings(q, s, [0.95, 0.5, 0.1, 0.01])
    # 0.95: between s=0 (q=1) and s=1 (q=0.9): 0 + 0.05/0.1 * 1 = 0.5
    # 0.5: between s=3 (0.6) and s=4 (0.2): 3 + 0.1/0.4 = 3.25
    # 0.1: between s=4 (0.2) and s=8 (0.05): 4 + 0.1/0.15*4 = 6.6667
    # 0.01: between s=8 (0.05) and s=10 (-0.01): 8 + 0.04/0.06*2 = 9.3333
    np.testing.assert_allclose(c, [0.5, 3.25, 4 + 0.4 / 0.15, 8 + 0.08 / 0.06], rtol=1e-12)


def test_crossing_is_first_bracket_not_later_one():
    q = np.array([1.0, 0.4, 0.7, 0.3])
    s = np.array([0.0, 1.0, 2.0, 3.0])
    assert tr._crossings(q, s, [0.5])[0] == pytest.approx(1 / 1.2)


def test_crossing_starting_below_alpha_uses_first_downward_transition():
    q = np.array([0.3, 0.6, 0.2])  # starts <= 0.5: first downward transition is k=2
    s = np.array([0.0, 1.0, 2.0])
    assert tr._crossings(q, s, [0.5])[0] == pytest.approx(1.25)
    assert np.isnan(tr._crossings(np.array([0.3, 0.2, 0.1]), s, [0.5])[0])


def test_crossing_landing_exactly_on_checkpoint():
    q = np.array([1.0, 0.5, 0.0])
    s = np.array([0.0, 2.0, 4.0])
    assert tr._crossings(q, s, [0.5])[0] == 2.0


def test_initial_residual_at_rounding_level_counts_as_zero():
    # R = L - mean(L[-5:]) with equal values can leave R_0 ~ 1e-16 instead of 0
    R = np.array([[6e-16], [-7.0], [0.0], [0.0]])
    assert np.isnan(tr._normalized_residual(R, axis=0)).all()
    R[0, 0] = 1e-12  # well above rounding of a magnitude-7 curve: a real (tiny) residual
    assert np.isfinite(tr._normalized_residual(R, axis=0)).all()


def test_never_crossed_and_nonpositive_initial_residual_are_nan():
    R = xr.DataArray([[1.0, -0.1], [0.8, 0.2], [0.6, 0.0]], dims=("checkpoint", "band"))
    s = xr.DataArray([0.0, 1.0, 2.0], dims="checkpoint")
    c = tr.crossings(R, s, [0.5, 0.1])
    assert np.isnan(c.values).all()  # band 0 never below 0.6; band 1 has R(s0) <= 0


def test_crossings_reject_thresholds_outside_unit_interval():
    R = xr.DataArray([[1.0], [0.0]], dims=("checkpoint", "band"))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        tr.crossings(R, xr.DataArray([0.0, 1.0], dims="checkpoint"), [1.0])


@given(
    q=hnp.arrays(np.float64, st.integers(2, 20), elements=st.floats(-0.5, 1.5)),
    ds=st.lists(st.floats(0.0, 5.0), min_size=20, max_size=20),
    alpha=st.sampled_from([0.95, 0.9, 0.5, 0.2, 0.1, 0.01]),
)
@settings(max_examples=80, deadline=None)
def test_crossing_matches_loop_oracle(q, ds, alpha):
    s = np.cumsum(ds[: q.size])
    got = tr._crossings(q, s, [alpha])[0]
    exp = _crossing_oracle(q, s, alpha)
    if np.isnan(exp):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(exp, rel=1e-12, abs=1e-12)


@given(
    # no subnormals: scaling 5e-324 by c < 1 underflows to 0 and changes the curve itself
    L=hnp.arrays(np.float64, st.tuples(st.integers(7, 15), st.integers(1, 4)),
                 elements=st.floats(0.0, 10.0, allow_subnormal=False)),
    c=st.floats(1e-3, 1e3),
)
@settings(max_examples=50, deadline=None)
def test_crossings_invariant_to_scaling_losses(L, c):
    s = np.arange(L.shape[0], dtype=float)
    run1 = make_run(L, s)
    run2 = make_run(L * c, s)
    alphas = [0.95, 0.5, 0.01]
    out = []
    for run in (run1, run2):
        fl = tr.floors(run.band_loss, k=5)
        R, _ = tr.residuals(run.band_loss, fl.floor_mean_last_k)
        out.append(tr.crossings(R, run.param_time, alphas).values)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- floors and residuals
def test_floors_by_hand():
    L = np.array([[10.0, 4.0], [6.0, 3.0], [2.0, 2.0], [1.0, 2.5], [1.5, 2.0], [1.0, 2.0]])
    f = tr.floors(xr.DataArray(L, dims=("checkpoint", "band")), k=3)
    np.testing.assert_allclose(f.floor_mean_last_k, [3.5 / 3, 6.5 / 3])
    np.testing.assert_allclose(f.floor_final, [1.0, 2.0])
    np.testing.assert_allclose(f.floor_convention_diff_pct,
                               [abs(3.5 / 3 - 1) / 9 * 100, abs(6.5 / 3 - 2) / 2 * 100])
    np.testing.assert_allclose(f.floor_window_drift_pct, [0.5 / 9 * 100, 0.5 / 2 * 100])
    assert f.saturated.values.tolist() == [False, False]
    assert tr.floors(xr.DataArray(L, dims=("checkpoint", "band")), k=3,
                     saturation_tol_pct=30).saturated.values.tolist() == [True, True]


def test_window_trend_known_answers():
    """A straight fall over the window is all trend (= the drift); a band alternating around a
    flat floor has drift but no trend; uneven parameter-time spacing is respected."""
    s = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0])
    falling = np.array([10.0, 5.0, 3.0, 2.0, 1.8, 1.4, 1.2])  # slope -0.2 per unit s over the last 4
    flat = np.array([10.0, 5.0, 1.0, 1.0, 1.4, 1.4, 1.0])  # symmetric about the window's centre in s
    L = np.stack([falling, flat], axis=1)
    trend = tr._window_trend(L, s, k=4, axis=0)
    np.testing.assert_allclose(trend[0], 0.2 * (7 - 3) / 8.8 * 100)
    drift = tr._floors(L, k=4, axis=0)[3]
    np.testing.assert_allclose(trend[0], drift[0])  # collinear points: the whole drift is trend
    assert drift[1] > 2 and abs(trend[1]) < 1e-12
    assert tr._window_trend(falling[::-1], s, k=3)[()] < 0  # a rising band has a negative trend
    assert np.isnan(tr._window_trend(falling, np.r_[s[:4], 3.0, 3.0, 3.0], k=3)[()])  # s stalls
    assert tr._window_trend(np.ones(7), s, k=3)[()] == 0.0


def test_late_noise_known_answers():
    """Second differences in s cancel any straight line, even on uneven s (the A.5 end has
    gaps 2, 2, 3, 5); independent noise of sd sigma is recovered (mean over 4,000 bands within
    2 %); only the last 2k + 2 checkpoints count; too few checkpoints give NaN."""
    rng = np.random.default_rng(0)
    s = np.r_[np.linspace(0.0, 30.0, 16), 32.0, 34.0, 37.0, 42.0]  # 20 checkpoints, uneven end
    line = 5.0 - 0.1 * s  # range 4.2
    assert tr._late_noise(line, s, k=5)[()] == pytest.approx(0.0, abs=1e-12)
    sigma = 0.021  # 0.5 % of the range
    L = line[:, None] + sigma * rng.standard_normal((20, 4000))
    est = tr._late_noise(L, s, k=5, axis=0)
    rngs = L.max(axis=0) - L.min(axis=0)  # back from % of each band's own range
    np.testing.assert_allclose(np.sqrt(np.mean((est * rngs / 100) ** 2)), sigma, rtol=0.02)
    early = line.copy()
    early[:8] += np.array([0.3, -0.3] * 4)  # wild early scatter, outside the last 12
    assert tr._late_noise(early, s, k=5)[()] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(tr._late_noise(np.array([1.0, 0.5]), np.array([0.0, 1.0]), k=1)[()])
    assert np.isnan(tr._late_noise(line[:4], np.zeros(4), k=2)[()])  # s never advances
    assert tr._late_noise(np.ones(20), s, k=5)[()] == 0.0


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, 15, elements=st.floats(-1e3, 1e3, allow_subnormal=False)),
       st.floats(1e-3, 1e3), st.floats(-1e3, 1e3), st.floats(1e-3, 1e3))
def test_late_noise_invariant_to_affine_loss_and_scaled_time(L, c, shift, ts):
    """A % of range does not change when L -> c L + shift (c > 0) or s -> ts s. Only for bands
    whose range float64 can still see after the shift (L ~ 1e-101 plus 1 rounds to a constant)."""
    assume(c * np.ptp(L) > 1e-6 * (abs(shift) + c * np.abs(L).max()))  # the shifted curve's own range
    s = np.cumsum(np.r_[0.0, np.linspace(1.0, 3.0, 14)])
    base = tr._late_noise(L, s, k=5)[()]
    np.testing.assert_allclose(tr._late_noise(c * L + shift, s, k=5)[()], base, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tr._late_noise(L, ts * s, k=5)[()], base, rtol=1e-6, atol=1e-6)


def test_floor_k_out_of_range():
    with pytest.raises(ValueError, match="k must be"):
        tr._floors(np.ones((3, 2)), k=4, axis=0)


@given(L=hnp.arrays(np.float64, st.tuples(st.integers(6, 12), st.integers(1, 7)),
                    elements=st.floats(0.0, 1e3)))
@settings(max_examples=50, deadline=None)
def test_total_residual_is_sum_of_band_residuals(L):
    da = xr.DataArray(L, dims=("checkpoint", "band"))
    fl = tr.floors(da, k=5).floor_mean_last_k
    R, Rt = tr.residuals(da, fl)
    np.testing.assert_array_equal(Rt.values, R.values.sum(axis=1))
    # and it equals L_tot - sum of band floors (A.9) up to rounding
    np.testing.assert_allclose(Rt.values, L.sum(axis=1) - fl.values.sum(),
                               rtol=1e-12, atol=1e-9 * max(L.max(), 1.0))


# ---------------------------------------------------------------- active windows
def test_active_window_strict_on_both_sides():
    s = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    m, a, b, n = tr._active_window(s, 1.0, 4.0)
    assert m.tolist() == [False, False, True, True, False, False]
    assert (int(a), int(b), int(n)) == (2, 3, 2)
    m, a, b, n = tr._active_window(s, np.nan, 4.0)
    assert (int(a), int(b), int(n)) == (-1, -1, 0) and not m.any()


@given(
    q=hnp.arrays(np.float64, st.integers(3, 30), elements=st.floats(-0.2, 1.2)),
    ds=st.lists(st.floats(0.0, 3.0), min_size=31, max_size=31),
    pair=st.sampled_from([(0.95, 0.01), (0.9, 0.1), (0.8, 0.2)]),
)
@settings(max_examples=60, deadline=None)
def test_window_holds_only_saved_checkpoints_strictly_inside(q, ds, pair):
    q = np.concatenate([[1.0], q])
    s = np.cumsum(ds[: q.size])
    c = tr._crossings(q, s, list(pair))
    m, a, b, n = tr._active_window(s, c[0], c[1])
    idx = np.flatnonzero(m)
    assert n == idx.size
    if idx.size:
        assert (s[idx] > c[0]).all() and (s[idx] < c[1]).all()
        assert a == idx[0] and b == idx[-1]
        # contiguous range of saved checkpoints (s is non-decreasing)
        assert np.array_equal(idx, np.arange(a, b + 1))
    outside = np.setdiff1d(np.arange(s.size), idx)
    assert not ((s[outside] > c[0]) & (s[outside] < c[1])).any()


def test_active_windows_wrapper_labels():
    R = xr.DataArray(np.linspace(1, 0, 11)[:, None], dims=("checkpoint", "band"))
    s = xr.DataArray(np.arange(11.0), dims="checkpoint")
    c = tr.crossings(R, s, [0.95, 0.9, 0.1, 0.01])
    w = tr.active_windows(s, c, [(0.95, 0.01), (0.9, 0.1)])
    assert w.window.values.tolist() == ["0.95/0.01", "0.90/0.10"]
    # q = 1 - s/10: c(0.95) = 0.5, c(0.01) = 9.9 -> checkpoints 1..9
    assert w.fit_start.values.ravel().tolist() == [1, 2]
    assert w.fit_stop.values.ravel().tolist() == [9, 8]  # c(0.1) = 9.0 exactly: excluded
    with pytest.raises(ValueError, match="0 < lo < hi < 1"):
        tr.active_windows(s, c, [(0.1, 0.9)])


def test_onset_width():
    c = xr.DataArray([[1.0, 5.0]], dims=("band", "alpha"), coords={"alpha": [0.95, 0.01]})
    on, w = tr.onset_width(c)
    assert float(on[0]) == 1.0 and float(w[0]) == 4.0


def test_dask_and_numpy_inputs_agree():
    from bandscope.keysearch.synthetic import make_run_synthetic

    run = make_run_synthetic(4)
    alphas = [0.95, 0.9, 0.1, 0.01]
    out = {}
    for kind, ds in (("numpy", run), ("dask", run.chunk({"band": 3}))):
        f = tr.floors(ds.band_loss, k=5)
        R, _ = tr.residuals(ds.band_loss, f.floor_mean_last_k)
        c = tr.crossings(R, ds.param_time, alphas)
        w = tr.active_windows(ds.param_time, c, [(0.95, 0.01), (0.9, 0.1)])
        out[kind] = xr.merge([f, c.rename("crossing"), w]).compute()
    xr.testing.assert_identical(out["numpy"], out["dask"])
