"""Per-run spectral-reach summaries (bandscope.lnp.windows): known answers, invariants, the cosine identity."""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from bandscope.errors import BandscopeInputError
from bandscope.lnp import log_windows
from bandscope.lnp.windows import ReachOptions, gradient_cosine, last_windows, loglog_slope, summarise_run, window_means

ROOT = Path(__file__).resolve().parents[1] / "reference_runs"
RUN_FILES = sorted(glob.glob(str(ROOT / "lm-scaling*" / "runs" / "*.nc")))


def synthetic_run(exponent=-0.7, total=9000, n_windows=18, per_window=4, scale=3e-4, flat_from=None):
    """A run whose window means of P follow scale * window_step**exponent exactly (P constant in a window),
    flat (exponent 0) from step ``flat_from`` on; P_AB = P / 2."""
    sched = log_windows(n_windows, per_window, total)
    step = sched.lnp_step.values.astype(float)
    win = sched.lnp_window.values
    wstep = np.array([step[win == w].mean() for w in win])
    t = wstep if flat_from is None else np.minimum(wstep, flat_from)
    p = scale * (t + 0.0) ** exponent
    return xr.Dataset({"lnp_spectral_position": ("lnp_step", p),
                       "lnp_spectral_position_cross": ("lnp_step", p / 2)},
                      coords={"lnp_step": sched.lnp_step.values, "lnp_window": ("lnp_step", win)},
                      attrs={"name": "synthetic", "n_parameters": 1000})


@pytest.mark.parametrize("exponent", [-1.5, -0.7, 0.0, 0.3])
def test_late_slope_recovers_a_known_power_law(exponent):
    s = summarise_run(synthetic_run(exponent), ReachOptions(slope_start=100))
    assert float(s.spectral_position_late_slope) == pytest.approx(exponent, abs=1e-10)
    assert float(s.spectral_position_cross_late_slope) == pytest.approx(exponent, abs=1e-10)


def test_late_slope_is_zero_once_p_has_flattened_and_last_mean_is_the_floor():
    run = synthetic_run(-0.8, flat_from=1000)
    s = summarise_run(run, ReachOptions(slope_start=1500, last_k=3))
    assert float(s.spectral_position_late_slope) == pytest.approx(0.0, abs=1e-12)
    assert float(s.spectral_position_last_mean) == pytest.approx(3e-4 * 1000 ** -0.8, rel=1e-12)
    assert float(s.spectral_position_last_sd) == pytest.approx(0.0, abs=1e-20)


def test_default_slope_start_is_the_last_decade():
    s = summarise_run(synthetic_run(-0.5, total=9000))
    assert s.attrs["slope_start"] == pytest.approx(8999 / 10)


def test_last_windows_known_answer_and_nan_skipped():
    m, s = last_windows(xr.DataArray([[5.0, 1.0, 2.0, 3.0, np.nan]], dims=("run", "lnp_window")), k=3)
    assert m.values.tolist() == [2.0] and s.values.tolist() == [1.0]


def test_window_means_average_each_window():
    run = xr.Dataset({"lnp_spectral_position": ("lnp_step", [1.0, 3.0, np.nan, 10.0])},
                     coords={"lnp_step": [0, 1, 2, 50], "lnp_window": ("lnp_step", [0, 0, 0, 1])})
    w = window_means(run)
    assert w.spectral_position.values.tolist() == [2.0, 10.0]
    assert w.window_step.values.tolist() == [1.0, 50.0]


@settings(max_examples=40, deadline=None)
@given(a=st.floats(-2, 1), c=st.floats(1e-8, 1e3), k=st.floats(0.1, 10))
def test_slope_invariant_to_scaling_values_and_time(a, c, k):
    t = xr.DataArray(np.geomspace(10, 1e4, 12), dims="lnp_window")
    rng = np.random.default_rng(0)
    y = t ** a * np.exp(rng.normal(0, 0.1, t.size))
    base = float(loglog_slope(y, t))
    assert float(loglog_slope(c * y, t)) == pytest.approx(base, abs=1e-9)
    assert float(loglog_slope(y, k * t)) == pytest.approx(base, abs=1e-9)


def test_slope_needs_three_points():
    t = xr.DataArray([10.0, 100.0], dims="lnp_window")
    assert np.isnan(float(loglog_slope(t, t)))


def test_gradient_cosine_bounds_and_known_answer():
    assert float(gradient_cosine(-2.0, 4.0, 1.0)) == -1.0
    assert np.isnan(gradient_cosine(1.0, 0.0, 1.0))


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: "/".join(Path(p).parts[-3:]))
def test_cross_position_is_cosine_times_geometric_mean_of_self_positions(path):
    """P_AB = cos(grad L_A, grad L_B) sqrt(P_A P_B): an identity of the LNP definitions, on the stored runs."""
    run = xr.load_dataset(path)
    cos = gradient_cosine(run.lnp_grad_dot, run.lnp_grad_norm_sq, run.lnp_grad_norm_sq_b)
    rebuilt = cos * np.sqrt(run.lnp_spectral_position * run.lnp_spectral_position_b)
    np.testing.assert_allclose(rebuilt.values, run.lnp_spectral_position_cross.values, rtol=1e-9)
    assert np.all(np.abs(cos.values) <= 1 + 1e-12)


def test_options_refuse_bad_values():
    for bad in ({"last_k": 0}, {"slope_start": -1}, {"probe_bins": 0}, {"probe_fraction": 0.0}):
        with pytest.raises(BandscopeInputError):
            ReachOptions(**bad)


def test_a_run_without_lnp_is_refused_naming_the_other_analysis():
    with pytest.raises(BandscopeInputError, match="key-search"):
        summarise_run(xr.Dataset({"train_loss": ("checkpoint", [1.0])}, attrs={"name": "x"}))
