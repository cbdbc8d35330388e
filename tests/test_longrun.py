"""Long runs (thousands of checkpoints): what is thinned for speed changes no result.

Three places take a shortcut on long curves, each checked here against the plain computation:
the fitter's start search on ``fitting.THIN_POINTS`` points of each curve (then a polish on
every point), the γ grid on ``paramtime.GAMMA_GRID_POINTS`` checkpoints (then Brent on every
checkpoint, exp(γ log τ) for τ^γ) and the residual autocorrelation by FFT above
``fitting._ACF_DIRECT_MAX`` points.
"""
import warnings

import numpy as np
import pytest

from bandscope.keysearch import fitting
from bandscope.keysearch.analysis import analyze
from bandscope.keysearch.synthetic import make_run_synthetic
from bandscope.transforms import paramtime


def _analyze(run, patch=()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mp = pytest.MonkeyPatch()
        try:
            for mod, name, value in patch:
                mp.setattr(mod, name, value)
            return analyze(run)
        finally:
            mp.undo()


@pytest.fixture(scope="module")
def long_pair():
    # small thresholds so that a run of 1,500 checkpoints takes every shortcut on most curves
    run = make_run_synthetic(3, n_bands=4, n_checkpoints=1500)
    fast = _analyze(run, [(fitting, "THIN_POINTS", 40), (paramtime, "GAMMA_GRID_POINTS", 200),
                          (fitting, "_ACF_DIRECT_MAX", 30)])
    plain = _analyze(run, [(fitting, "THIN_POINTS", 10**9), (paramtime, "GAMMA_GRID_POINTS", 10**9),
                           (fitting, "_ACF_DIRECT_MAX", 10**9)])
    return fast, plain


def test_long_run_takes_the_thinned_path(long_pair):
    fast, _ = long_pair
    assert int((fast.fit_n > 40).sum()) >= 3
    assert int(fast.total_n.max()) > 200


def test_thinning_changes_no_result(long_pair):
    """Every variable of the thinned analysis equals the plain one: statuses, counts and
    windows exactly; fitted parameters, SSE, R², BIC and n_eff to 1e-6 relative (the
    optimizers' tolerance, far inside any standard error); γ to 1e-8."""
    fast, plain = long_pair
    assert (fast.status == plain.status).all() and (fast.total_status == plain.total_status).all()
    for name, var in plain.data_vars.items():
        a, b = fast[name].values, var.values
        if a.dtype.kind in "OUSbi":
            assert np.array_equal(a, b), name
            continue
        rtol = 1e-8 if name.startswith("gamma") else 1e-6
        atol = 1e-9 * np.nanmax(np.abs(b), initial=0)
        if name == "gamma_a":  # the offset of s = a + b t^gamma, ~0 here: rounding of s itself
            atol = 1e-12 * float(np.nanmax(plain.param_time.values))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)


def test_thinned_fit_reaches_the_full_optimum():
    """On long noisy curves the polished fit's SSE is never above the plain batch fit's."""
    rng = np.random.default_rng(0)
    s = np.linspace(0.0, 5.0, 3000)
    Y = np.stack([fitting.weibull(s, 1.0, 1.3, b) * np.exp(0.05 * rng.standard_normal(s.size))
                  + 0.01 * rng.standard_normal(s.size) for b in (0.6, 1.0, 2.5, 6.0)])
    X = np.broadcast_to(s, Y.shape)
    fast = fitting.fit_curves(X, Y, fallback=False)
    mp = pytest.MonkeyPatch()
    mp.setattr(fitting, "THIN_POINTS", 10**9)
    try:
        plain = fitting.fit_curves(X, Y, fallback=False)
    finally:
        mp.undo()
    assert fast["converged"].all()
    assert np.all(fast["sse"] <= plain["sse"] * (1 + 1e-9))
    for k in ("A", "omega", "beta"):
        np.testing.assert_allclose(fast[k], plain[k], rtol=1e-6)


@pytest.mark.parametrize("n", [300, 2000])
def test_fft_autocorrelation_equals_statsmodels(n):
    from statsmodels.tsa.stattools import acf

    rng = np.random.default_rng(n)
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = 0.7 * e[i - 1] + rng.standard_normal()
    assert n > fitting._ACF_DIRECT_MAX
    np.testing.assert_allclose(fitting._acf(e[None])[0], acf(e, nlags=n - 1, adjusted=False, fft=False),
                               atol=1e-12)
