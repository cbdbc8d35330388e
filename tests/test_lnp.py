"""Core LNP arithmetic (bandscope.lnp): definitions, bounds, normalisation, schedules, appendix C."""
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bandscope import lnp

# numeric: runs again in the rounding lane (`make test-rounding`, numpy's AVX-512 kernels off)
pytestmark = pytest.mark.numeric


def _kernel_and_grads(seed, n_out, rank, n_b=None):
    """Random J (n_out x rank), a PSD kernel K = J J^T and output gradients."""
    rng = np.random.default_rng(seed)
    ja = rng.standard_normal((n_out, rank)) * rng.uniform(0.1, 3, rank)
    jb = rng.standard_normal((n_b or n_out, rank))
    return ja, jb, rng.standard_normal(n_out), rng.standard_normal(n_b or n_out)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_out=st.integers(1, 12), rank=st.integers(1, 8), n_b=st.integers(1, 12))
def test_positions_bounded_for_consistent_statistics(seed, n_out, rank, n_b):
    ja, jb, ga, gb = _kernel_and_grads(seed, n_out, rank, n_b)
    grad_a, grad_b = ja.T @ ga, jb.T @ gb
    ds = lnp.lnp_components(ga @ ga, np.sum(ja**2), grad_a @ grad_a, grad_dot=grad_b @ grad_a,
                            loss_scale_b=gb @ gb, network_scale_b=np.sum(jb**2))
    assert -1e-12 <= float(ds.spectral_position) <= 1 + 1e-12
    assert abs(float(ds.spectral_position_cross)) <= 1 + 1e-12
    assert ds.reason.item() == "" and ds.reason_cross.item() == ""


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_out=st.integers(2, 10), rank=st.integers(1, 6))
def test_position_equals_eigen_sum(seed, n_out, rank):
    ja, _, g, _ = _kernel_and_grads(seed, n_out, rank)
    k = ja @ ja.T
    out = lnp.kernel_lnp(k, g)
    # the eigen-sum of LNP.md, and the ratio of the three cheap numbers
    np.testing.assert_allclose(out["spectral_position"], out["spectral_position_eig"], rtol=1e-9, atol=1e-14)
    direct = float(lnp.spectral_position(g @ k @ g, g @ g, np.trace(k)))
    np.testing.assert_allclose(direct, out["spectral_position"], rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(ls=arrays(float, 5, elements=st.floats(1e-6, 1e3)), ns=arrays(float, 5, elements=st.floats(1e-6, 1e3)),
       m=st.integers(1, 10_000))
def test_normalisation_keeps_product_and_position(ls, ns, m):
    lt, nt = lnp.normalise_scales(ls, ns, m)
    np.testing.assert_allclose(lt * nt, ls * ns, rtol=1e-12)
    np.testing.assert_allclose(lt, ls * m)
    ds = lnp.lnp_components(ls, ns, 0.5 * ls * ns, n_units=m)
    np.testing.assert_allclose(ds.spectral_position, 0.5, rtol=1e-12)
    np.testing.assert_allclose(ds.loss_scale_norm * ds.network_scale_norm, ls * ns, rtol=1e-12)
    assert ds.attrs["n_units"] == m


def test_batch_size_normalisation_is_batch_size_free():
    """Mean-reduced MSE of a linear model: L~ and N~ do not depend on N, raw ones scale 1/N and N."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(3)
    res = {}
    for n in (1000, 4000):
        x = rng.standard_normal((n, 3))
        y = x @ w + rng.standard_normal(n)
        g = 2 * (x @ np.zeros(3) - y) / n  # dL/df, L = mean (f - y)^2 at w = 0
        res[n] = lnp.lnp_components(g @ g, np.sum(x**2), (x.T @ g) @ (x.T @ g), n_units=n)
    a, b = res[1000], res[4000]
    np.testing.assert_allclose(float(a.loss_scale) / float(b.loss_scale), 4, rtol=0.1)
    np.testing.assert_allclose(float(a.loss_scale_norm), float(b.loss_scale_norm), rtol=0.1)
    np.testing.assert_allclose(float(a.network_scale_norm), float(b.network_scale_norm), rtol=0.1)


@pytest.mark.parametrize("bad,reason", [
    (dict(loss_scale=0.0), "loss_scale == 0"),
    (dict(network_scale=-1.0), "network_scale < 0"),
    (dict(network_scale=np.nan), "network_scale is NaN"),
    (dict(grad_norm_sq=-2.0), "grad_norm_sq < 0"),
])
def test_meaningless_inputs_nan_with_reason_or_raise(bad, reason):
    kw = dict(loss_scale=1.0, network_scale=2.0, grad_norm_sq=1.0) | bad
    ds = lnp.lnp_components(**kw)
    assert np.isnan(float(ds.spectral_position))
    assert reason in ds.reason.item()
    with pytest.raises(ValueError, match=reason.split(" ")[0]):
        lnp.lnp_components(**kw, invalid="raise")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="grad_norm_sq"):
        lnp.lnp_components(1.0, 1.0)
    with pytest.raises(ValueError, match="loss_scale_b"):
        lnp.lnp_components(1.0, 1.0, grad_dot=0.3)
    with pytest.raises(ValueError, match="n_units"):
        lnp.lnp_components(1.0, 1.0, 1.0, n_units=0)


def test_dataarray_inputs_broadcast_by_name():
    ls = xr.DataArray([1.0, 2.0], dims="lnp_step")
    ns = xr.DataArray([4.0, 8.0, 16.0], dims="run")
    ds = lnp.lnp_components(ls, ns, ls * ns * 0.25)
    assert set(ds.spectral_position.dims) == {"lnp_step", "run"}
    np.testing.assert_allclose(ds.spectral_position, 0.25)


@settings(max_examples=30, deadline=None)
@given(n_windows=st.integers(1, 30), spw=st.integers(1, 50), extra=st.integers(0, 5000), first=st.integers(0, 100))
def test_log_windows_properties(n_windows, spw, extra, first):
    total = first + spw + extra
    s = lnp.log_windows(n_windows, spw, total, first)
    steps = s.lnp_step.values
    assert steps[0] == first
    if s.sizes['window'] >= 2:
        assert steps[-1] == total - 1
    assert np.all(np.diff(steps) > 0) and np.all(steps >= first) and np.all(steps < total)
    starts = s.window_start.values
    assert np.all(np.diff(starts) > 0) and starts.size <= n_windows
    # every step of every window is measured exactly once, nothing else is
    want = np.unique(np.concatenate([np.arange(a, a + spw) for a in starts]))
    np.testing.assert_array_equal(steps, want)
    # a step belongs to the first window containing it
    for t, w in zip(steps, s.lnp_window.values):
        assert starts[w] <= t < starts[w] + spw
        assert not np.any((starts[:w] <= t) & (t < starts[:w] + spw))


def test_log_windows_spacing_is_logarithmic():
    s = lnp.log_windows(10, 5, 100_005, 0)
    np.testing.assert_allclose(s.window_start.values + 1, np.geomspace(1, 100_001, 10), atol=0.5)
    with pytest.raises(ValueError, match="do not fit"):
        lnp.log_windows(3, 10, 5)


def test_window_mean_and_top_fraction_against_loops():
    rng = np.random.default_rng(1)
    s = lnp.log_windows(6, 7, 500)
    v = xr.DataArray(rng.uniform(size=s.sizes["lnp_step"]), dims="lnp_step",
                     coords={"lnp_step": s.lnp_step.values})
    m = lnp.window_mean(v, s)
    top = lnp.top_fraction(v, s, fraction=0.3)
    for w in np.unique(s.lnp_window.values):
        vals = v.values[s.lnp_window.values == w]
        np.testing.assert_allclose(float(m.sel(lnp_window=w)), vals.mean())
        kept = np.sort(top.values[s.lnp_window.values == w][~np.isnan(top.values[s.lnp_window.values == w])])
        np.testing.assert_allclose(kept, np.sort(vals)[::-1][: int(np.ceil(0.3 * vals.size))][::-1])


def test_probe_ratio_known_answer():
    steps = np.arange(100)
    pre = xr.DataArray(np.where(steps < 50, 0.2, 0.05), dims="lnp_step", coords={"lnp_step": steps})
    rnd = xr.DataArray(np.full(100, 0.1), dims="lnp_step", coords={"lnp_step": steps * 3})
    r = lnp.probe_ratio(pre, rnd, bins=2, fraction=None)
    np.testing.assert_allclose(r.values, [2.0, 0.5])
    # top-fraction filter first: windows of 10 steps, keep the max of each (all equal here)
    win = steps // 10
    r2 = lnp.probe_ratio(pre, rnd, bins=2, fraction=0.1, window_pretrained=win, window_random=win)
    np.testing.assert_allclose(r2.values, [2.0, 0.5])


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 2.0, 3.0])
def test_random_feature_position_matches_inverse_participation(alpha):
    """Spectral reach §3.2 / A.4: at initialisation P ≈ Σλ²/(Σλ)² of the kernel (average of draws)."""
    for seed in range(3):
        d = lnp.random_feature_lnp(alpha, n_samples=200, dim=100, width=600, n_teachers=400, seed=seed)
        # Eq. 46 as an expectation over teachers y ~ N(0, K): E[g^T K g] / (E[||g||^2] Tr K) = IPR
        np.testing.assert_allclose(d["spectral_position_ratio_of_means"], d["ipr"], rtol=0.15)
        # the mean of P itself sits below (finite N: a few dominant modes fluctuate) but tracks it
        assert 0.4 * d["ipr"] < d["spectral_position"] <= d["ipr"] * 1.05


def test_random_feature_position_grows_with_alpha():
    ps = [lnp.random_feature_lnp(a, n_samples=200, dim=100, width=600, n_teachers=200)["spectral_position"]
          for a in (0.5, 1.5, 3.0)]
    assert ps[0] < ps[1] < ps[2]


def test_inverse_participation_ratio():
    assert lnp.inverse_participation_ratio([2.0, 0.0, 0.0]) == 1.0
    da = xr.DataArray([[1.0, 1.0], [1.0, 0.0]], dims=("run", "k"))
    np.testing.assert_allclose(lnp.inverse_participation_ratio(da, "k"), [0.5, 1.0])


def test_positions_beyond_cauchy_schwarz_warn():
    import pytest

    from bandscope.lnp import lnp_components

    with pytest.warns(UserWarning, match="Cauchy-Schwarz"):
        ds = lnp_components([1.0], [1.0], [3.0], grad_dot=[-5.0], loss_scale_b=[1.0], network_scale_b=[1.0])
    assert float(ds.spectral_position[0]) == 3.0  # reported as measured, not hidden
