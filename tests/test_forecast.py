"""bandscope.forecast: floors and crossing times of runs in progress, their intervals, the CLI."""
import json

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

import bandscope
from bandscope.cli import main
from bandscope.io import write_run
from bandscope.keysearch import forecasting
from bandscope.keysearch.forecasting import ForecastOptions, _forecast_curves, forecast, prefix_length
from bandscope.keysearch.synthetic import make_run_synthetic
from bandscope.run import make_run

LAM = np.log(100.0)


def _true_reach(run, q=0.01):
    on, om, be = (np.array(run.attrs[k]) for k in ("true_onset", "true_omega", "true_beta"))
    return on + om * np.log(1 / q) ** (1 / be)


def _weibull_floor(s, c, A, omega, beta, onset=0.0):
    return c + A * np.exp(-(np.clip(s - onset, 0, None) / omega) ** beta)


# ---------------------------------------------------------------- API and layout
def test_lazy_name_is_the_function_and_module_importable():
    assert bandscope.forecast is forecasting.forecast
    assert callable(bandscope.forecast)
    import bandscope.keysearch.forecasting as mod

    assert mod.forecast is bandscope.forecast


def test_dataset_layout_units_and_attrs():
    run = make_run_synthetic(2)
    fc = forecast(run, prefix=0.5)
    assert fc.sizes == {"band": 7}
    np.testing.assert_array_equal(fc.band.values, run.band.values)
    for v in ("floor", "floor_low", "floor_high", "s_reach", "s_reach_low", "s_reach_high",
              "s_remaining", "s_remaining_low", "s_remaining_high", "status", "reason"):
        assert fc[v].dims == ("band",)
        assert fc["total_" + v].dims == ()
        assert "definition" in fc[v].attrs
    assert fc.floor.attrs["units"] == run.band_loss.attrs["units"]
    assert fc.s_reach.attrs["units"] == run.param_time.attrs["units"]
    assert fc.attrs["level"] == 0.01 and fc.attrs["confidence"] == 0.95
    assert "profile-likelihood" in fc.attrs["interval"]
    assert int(fc.n_checkpoints) == prefix_length(53, 0.5)
    assert float(fc.s_now) == float(run.param_time[prefix_length(53, 0.5) - 1])
    ok = fc.status.values == "ok"
    assert ok.all()
    assert np.all(fc.floor_low <= fc.floor) and np.all(fc.floor <= fc.floor_high)
    assert np.all(fc.s_reach_low <= fc.s_reach) and np.all(fc.s_reach <= fc.s_reach_high)
    rem = np.maximum(fc.s_reach.values - float(fc.s_now), 0)
    np.testing.assert_allclose(fc.s_remaining.values, rem)


def test_options_validated():
    for bad in ({"level": 0.0}, {"level": 1.0}, {"confidence": 1.5}, {"min_points": 4}):
        with pytest.raises(ValueError, match="must"):
            ForecastOptions(**bad)
    with pytest.raises(ValueError, match="prefix"):
        forecast(make_run_synthetic(0), prefix=0.0)
    with pytest.raises(ValueError, match="one run"):
        forecast(xr.concat([make_run_synthetic(0), make_run_synthetic(1)], dim="run"))
    with pytest.raises(TypeError):
        forecast(np.zeros((3, 3)))


def test_prefix_length():
    assert prefix_length(53, 0.2) == 11
    assert prefix_length(53, 0.4) == 21
    assert prefix_length(53, 1.0) == 53
    assert prefix_length(10, 0.04) == 1


# ---------------------------------------------------------------- known answers
@pytest.mark.numeric
@pytest.mark.parametrize("beta", [0.7, 1.0, 1.6])
def test_noise_free_known_answer(beta, rounding):
    s = rounding(np.linspace(0.0, 12.0, 40))
    c, A, omega = 0.3, 1.7, 2.5
    y = rounding(_weibull_floor(s, c, A, omega, beta))
    out = _forecast_curves(s, y[None])
    assert out["status"][0] == "ok"
    want = omega * LAM ** (1 / beta)
    assert out["floor"][0] == pytest.approx(c, rel=1e-3)
    assert out["s_reach"][0] == pytest.approx(want, rel=2e-3)
    assert out["beta"][0] == pytest.approx(beta, rel=1e-2)
    # a noise-free curve pins everything: intervals collapse onto the truth
    assert out["floor_high"][0] - out["floor_low"][0] < 1e-3 * c
    assert out["s_reach_high"][0] - out["s_reach_low"][0] < 1e-2 * want


@pytest.mark.numeric
def test_noise_free_with_onset_and_level(rounding):
    s = rounding(np.linspace(0.0, 20.0, 45))
    y = rounding(_weibull_floor(s, 0.1, 1.0, 4.0, 1.3, onset=2.0))
    out = _forecast_curves(s, y[None], level=0.05)
    assert out["onset"][0] == pytest.approx(2.0, abs=0.2)
    assert out["s_reach"][0] == pytest.approx(2.0 + 4.0 * np.log(20.0) ** (1 / 1.3), rel=5e-3)
    assert out["floor"][0] == pytest.approx(0.1, rel=3e-3)  # grid precision of the onset axis


@pytest.mark.numeric
def test_total_is_the_sum_of_bands(rounding):
    run = rounding(make_run_synthetic(4, n_bands=3))
    fc = forecast(run)
    tot = run.band_loss.sum("band")
    alone = forecast(make_run(tot.values[:, None], run.param_time.values, bands=[1]))
    assert float(fc.total_floor) == pytest.approx(float(alone.floor[0]), rel=1e-9)
    assert float(fc.total_s_reach) == pytest.approx(float(alone.s_reach[0]), rel=1e-9)


# ---------------------------------------------------------------- invariances
@given(a=st.floats(1e-3, 1e3), b=st.floats(1e-2, 1e2))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.numeric
def test_invariant_to_loss_and_time_scale(a, b, rounding):
    run = rounding(make_run_synthetic(5, n_bands=2))
    base = forecast(run, prefix=0.6)
    scaled = make_run(run.band_loss.values * a, run.param_time.values * b, bands=run.band.values)
    fc = forecast(scaled, prefix=0.6)
    np.testing.assert_array_equal(fc.status.values, base.status.values)
    for v in ("floor", "floor_low", "floor_high"):
        np.testing.assert_allclose(fc[v].values, base[v].values * a, rtol=1e-6)
    for v in ("s_reach", "s_reach_low", "s_reach_high", "s_remaining"):
        np.testing.assert_allclose(fc[v].values, base[v].values * b, rtol=1e-6, atol=1e-9 * b)
    assert float(fc.total_floor) == pytest.approx(float(base.total_floor) * a, rel=1e-6)


# ---------------------------------------------------------------- truth recovered, coverage
@pytest.mark.numeric
def test_recovers_true_floor_and_reach_on_one_run(rounding):
    run = rounding(make_run_synthetic(11))
    fc = forecast(run, prefix=0.8)
    floor = np.array(run.attrs["true_floor"])
    np.testing.assert_allclose(fc.floor.values, floor, rtol=0.03)
    np.testing.assert_allclose(fc.s_reach.values, _true_reach(run), rtol=0.1)


def test_interval_coverage_over_seeds():
    """Coverage of the 95 % intervals over 14 seeds x 7 bands at a 50 % prefix.

    Fails if the measured coverage is below nominal - 3 binomial SE (e.g. intervals that are
    too narrow by a factor 1.5 give about 0.83 and fail).
    """
    hit_f, hit_s = [], []
    for seed in range(100, 114):
        run = make_run_synthetic(seed)
        fc = forecast(run, prefix=0.5)
        assert (fc.status.values == "ok").all()
        floor = np.array(run.attrs["true_floor"])
        reach = _true_reach(run)
        hit_f += list((fc.floor_low.values <= floor) & (floor <= fc.floor_high.values))
        hit_s += list((fc.s_reach_low.values <= reach) & (reach <= fc.s_reach_high.values))
    n = len(hit_f)
    se = np.sqrt(0.95 * 0.05 / n)
    assert np.mean(hit_f) >= 0.95 - 3 * se, np.mean(hit_f)
    assert np.mean(hit_s) >= 0.95 - 3 * se, np.mean(hit_s)
    # and the intervals are informative, not [0, inf]
    assert np.isfinite(fc.s_reach_high.values).all()


# ---------------------------------------------------------------- the slow oracle
def _oracle_profile_sse(s, y, c, start):
    """min over (A, omega, beta, onset) of the unweighted SSE with the floor fixed at c (scipy)."""
    span = s[-1] - s[0]

    def res(p):
        A, lw, b, d = p
        return _weibull_floor(s, c, A, np.exp(lw), b, onset=d) - y

    best = np.inf
    for lw0 in (np.log(start["omega"]), np.log(0.3 * span), np.log(span)):
        for b0 in (start["beta"], 1.0, 2.0):
            p0 = [max(start["A"], 1e-6), lw0, b0, min(start["onset"], 0.4 * span)]
            r = optimize.least_squares(res, p0, bounds=([0, -30, 0.05, 0], [np.inf, 30, 8, 0.5 * span]),
                                       xtol=1e-14, ftol=1e-14, gtol=1e-14)
            best = min(best, 2 * r.cost)
    return best


@pytest.mark.numeric
def test_floor_interval_matches_a_scipy_profile(rounding):
    """At the floor interval's ends the scipy profile SSE equals the threshold
    T = SSE_min (1 + κ F_{1,n-5}(0.95)/(n-5)) (κ = kappa_floor); beyond them it exceeds T."""
    rng = np.random.default_rng(3)
    s = rounding(np.linspace(0.0, 10.0, 30))
    y = rounding(_weibull_floor(s, 0.5, 2.0, 2.5, 1.3) + rng.normal(0, 0.01, s.size))
    out = _forecast_curves(s, y[None], autocorr=False)
    n = s.size
    assert 1 <= out["kappa_floor"][0] <= 20
    T = out["sse"][0] * (1 + out["kappa_floor"][0] * stats.f.ppf(0.95, 1, n - 5) / (n - 5))
    start = {k: out[k][0] for k in ("A", "omega", "beta", "onset")}
    sse_min = _oracle_profile_sse(s, y, out["floor"][0], start)
    assert sse_min == pytest.approx(out["sse"][0], rel=2e-3)
    for end, out_dir in ((out["floor_high"][0], 1), (out["floor_low"][0], -1)):
        at = _oracle_profile_sse(s, y, end, start)
        assert at == pytest.approx(T, rel=0.03)
        width = out["floor_high"][0] - out["floor_low"][0]
        assert _oracle_profile_sse(s, y, end + out_dir * 0.15 * width, start) > T


# ---------------------------------------------------------------- NaN with a reason
def _run_from(curves, s):
    L = np.stack(curves, axis=1)
    return make_run(L, s, bands=2 ** np.arange(L.shape[1]))


def test_rising_not_started_and_too_few():
    rng = np.random.default_rng(0)
    s = np.linspace(0.0, 30.0, 25)
    noise = lambda: rng.normal(0, 1e-3, s.size)  # noqa: E731
    falling = _weibull_floor(s, 0.2, 1.0, 6.0, 1.2) + noise()
    rising = 0.5 + 0.02 * s + noise()  # still rising
    bump = np.where(s < 12, 0.5 + 0.025 * s, 0.8 - 0.15 * (s - 12) / 18) + noise()  # rose, falls, still above start
    flat = 0.4 + noise()  # not started
    fc = forecast(_run_from([falling, rising, bump, flat], s))
    st_ = dict(zip(fc.band.values.tolist(), fc.status.values.tolist()))
    assert st_ == {1: "ok", 2: "rising", 4: "rising", 8: "not_started"}
    for b in (2, 4, 8):
        one = fc.sel(band=b)
        assert np.isnan(one.floor) and np.isnan(one.s_reach) and np.isnan(one.s_remaining)
        assert np.isnan(one.floor_low) and np.isnan(one.s_reach_high)
        assert str(one.reason.item())
    assert "has not come back down" in str(fc.reason.sel(band=4).item())
    assert "rose" in str(fc.reason.sel(band=2).item())
    # a band that rose and has fallen back by more than half of its rise is forecast from its peak
    # even while still above its first loss
    back = np.where(s < 8, 0.3 + 0.05 * s, 0.7 - 0.3 * (1 - np.exp(-(s - 8) / 4))) + noise()
    fb = forecast(_run_from([falling, back], s))
    assert str(fb.status.sel(band=2).item()) == "ok", str(fb.reason.sel(band=2).item())
    assert np.median(back[-3:]) > back[0]  # still above its first loss
    assert "rose before falling" in str(fb.reason.sel(band=2).item())
    few = forecast(_run_from([falling, flat], s), prefix=4 / 25)
    assert (few.status.values == "too_few_checkpoints").all()
    assert "min_points" in str(few.reason.values[0])
    assert np.isnan(few.floor.values).all() and np.isnan(float(few.total_floor))


@pytest.mark.numeric
def test_rise_then_fall_is_fitted_from_its_peak(rounding):
    s = rounding(np.linspace(0.0, 40.0, 40))
    y = np.where(s < 5, 0.5 + 0.1 * s, 0.2 + 0.8 * np.exp(-(np.clip(s - 5, 0, None) / 6.0) ** 1.2))
    y = rounding(y + np.random.default_rng(1).normal(0, 1e-4, s.size))
    fc = forecast(_run_from([y], s))
    assert fc.status.values[0] == "ok"
    assert bool(fc.rose.values[0]) and float(fc.s_start[0]) == pytest.approx(5.1282, rel=1e-3)
    assert "rose before falling" in str(fc.reason.values[0])
    assert float(fc.floor[0]) == pytest.approx(0.2, rel=0.01)


@pytest.mark.numeric
def test_trailing_padding_ignored_and_inner_nan_rejected(rounding):
    run = rounding(make_run_synthetic(6, n_bands=2))
    base = forecast(run.isel(checkpoint=slice(0, 30)))
    padded = run.copy(deep=True)
    padded["band_loss"][30:] = np.nan
    padded["param_time"][30:] = np.nan
    fc = forecast(padded)
    xr.testing.assert_allclose(fc[["floor", "s_reach"]], base[["floor", "s_reach"]])
    bad = run.copy(deep=True)
    bad["band_loss"][5, 0] = np.nan
    with pytest.raises(ValueError, match="checkpoints \\[5\\]"):
        forecast(bad)


# ---------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fcruns")
    return [write_run(make_run_synthetic(seed, n_bands=4, name=f"syn{seed}"), d / f"syn{seed}.nc")
            for seed in (1, 2)]


def test_cli_json_shape_exact(run_files, tmp_path, capsys):
    out = tmp_path / "fc.json"
    assert main(["forecast", *map(str, run_files), "--json", str(out), "--prefix", "0.4"]) == 0
    printed = capsys.readouterr().out
    assert "s_reach_0.01 [low, high]" in printed and "total" in printed
    data = json.loads(out.read_text())
    assert list(data) == ["runs"]
    assert sorted(data["runs"]) == ["syn1", "syn2"]
    keys = {"floor", "floor_low", "floor_high", "s_reach_0.01", "s_reach_0.01_low", "s_reach_0.01_high"}
    for run in data["runs"].values():
        assert set(run) == {"bands", "total"}
        assert list(run["bands"]) == ["1", "2", "4", "8"]
        for entry in [*run["bands"].values(), run["total"]]:
            assert set(entry) == keys
            assert all(v is None or isinstance(v, float) for v in entry.values())
    # values are the Python API's
    from bandscope.io import read_run

    fc = forecast(read_run(run_files[0]), prefix=0.4)
    got = data["runs"]["syn1"]["bands"]["2"]
    assert got["floor"] == pytest.approx(float(fc.floor.sel(band=2)), rel=1e-12)
    assert got["s_reach_0.01_high"] == pytest.approx(float(fc.s_reach_high.sel(band=2)), rel=1e-12)


def test_cli_level_suffix_and_nulls(tmp_path):
    s = np.linspace(0.0, 30.0, 25)
    flat = 0.4 + np.random.default_rng(0).normal(0, 1e-3, s.size)
    falling = _weibull_floor(s, 0.2, 1.0, 6.0, 1.2)
    path = write_run(_run_from([falling, flat], s), tmp_path / "mixed.csv")
    out = tmp_path / "fc.json"
    assert main(["forecast", str(path), "--json", str(out), "--level", "0.05", "--quiet"]) == 0
    run = json.loads(out.read_text())["runs"]["mixed"]
    assert set(run["bands"]["1"]) == {"floor", "floor_low", "floor_high", "s_reach_0.05",
                                       "s_reach_0.05_low", "s_reach_0.05_high"}
    assert all(v is None for v in run["bands"]["2"].values())  # not started: null, not a number
    assert run["bands"]["1"]["s_reach_0.05"] == pytest.approx(6.0 * np.log(20.0) ** (1 / 1.2), rel=5e-3)


def test_cli_prefix_semantics(run_files, tmp_path):
    from bandscope.io import read_run

    out = tmp_path / "p.json"
    assert main(["forecast", str(run_files[1]), "--json", str(out), "--prefix", "0.3", "--quiet"]) == 0
    got = json.loads(out.read_text())["runs"]["syn2"]["total"]
    run = read_run(run_files[1])
    k = prefix_length(run.sizes["checkpoint"], 0.3)
    fc = forecast(run.isel(checkpoint=slice(0, k)))
    assert got["floor"] == pytest.approx(float(fc.total_floor), rel=1e-12)
    assert got["s_reach_0.01"] == pytest.approx(float(fc.total_s_reach), rel=1e-12)


@pytest.mark.parametrize("argv", [
    ["--prefix", "0"], ["--prefix", "1.5"], ["--prefix", "abc"], ["--level", "1"], ["--level", "-0.1"],
])
def test_cli_bad_options_exit_2(run_files, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["forecast", str(run_files[0]), *argv])
    assert exc.value.code == 2
    assert "fraction" in capsys.readouterr().err


def test_cli_missing_file_exits_2(tmp_path, capsys):
    assert main(["forecast", str(tmp_path / "nope.nc")]) == 2
    assert "nope.nc" in capsys.readouterr().err


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_very_early_runs_give_too_few_checkpoints(k):
    """What a training monitor sees in its first checkpoints: NaN with a reason, never an error."""
    run = make_run_synthetic(0, n_bands=3)
    part = run.copy(deep=True)
    part["band_loss"][k:] = np.nan  # a run file padded beyond its written checkpoints
    part["param_time"][k:] = np.nan
    fc = forecast(part)
    assert (fc.status.values == "too_few_checkpoints").all()
    assert str(fc.total_status.values) == "too_few_checkpoints"
    assert int(fc.n_checkpoints) == k
    assert np.isnan(fc.floor.values).all() and np.isnan(float(fc.total_s_reach))
