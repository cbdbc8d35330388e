"""bandscope.keysearch.analysis.analyze: contract, known answers on synthetic runs, input forms, errors."""
import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from bandscope import schema
from bandscope.keysearch import fitting, ordering, trajectory
from bandscope.keysearch.analysis import AnalysisOptions, analyze, collect_runs, stack
from bandscope.keysearch.fitting import weibull
from bandscope.keysearch.synthetic import make_run_synthetic, make_runs_synthetic
from bandscope.run import make_run
from bandscope.transforms import paramtime

# numeric: the synthetic runs, and the inputs of the tests on fitted numbers, go through the
# rounding fixtures (moved by a few ulps in the rounding lane, `make test-rounding`)
pytestmark = [pytest.mark.filterwarnings("ignore:.*still moved:UserWarning"), pytest.mark.numeric]


@pytest.fixture(scope="module")
def runs(rounding_module):
    return [rounding_module(r) for r in make_runs_synthetic(12)]


@pytest.fixture(scope="module")
def res(runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(runs)


# the contract's variables and dims: the one schema (tests/certified pins results/1 itself)
FORMAT_VARS = {name: v.dims for name, v in schema.RESULTS.items()}


def test_results_follow_the_format_contract(res):
    for var, dims in FORMAT_VARS.items():
        assert var in res, var
        assert res[var].dims == dims, (var, res[var].dims)
    assert res.window.values.tolist() == ["0.95/0.01", "0.90/0.10", "0.80/0.20"]
    assert res.window_hi.values.tolist() == [0.95, 0.9, 0.8]
    assert res.window_lo.values.tolist() == [0.01, 0.1, 0.2]
    assert res.metric.values.tolist() == ["onset", "width", "floor", "initial_residual"]
    assert set(res.arch.values) == {"synthetic-cnn", "synthetic-vit"}
    for key in ("floor_convention", "k", "deflation", "min_points", "bandscope_version"):
        assert key in res.attrs
    assert set(np.unique(res.status.values)) <= {"ok", "omitted", "failed"}


def test_floors_and_residuals(res, runs):
    L = np.stack([r.band_loss.values for r in runs])
    np.testing.assert_allclose(res.floor.values, L[:, -5:].mean(axis=1), rtol=1e-14)
    np.testing.assert_array_equal(res.floor_final.values, L[:, -1])
    np.testing.assert_array_equal(res.total_residual.values, res.residual.sum("band").values)
    np.testing.assert_allclose(res.total_residual.values,
                               L.sum(axis=2) - res.floor.values.sum(axis=1)[:, None],
                               rtol=1e-10, atol=1e-15)


def test_recovers_true_beta_and_ordering_signs(res, runs):
    true_beta = np.median([r.attrs["true_beta"] for r in runs], axis=0)
    got = res.beta.sel(window="0.95/0.01").where(res.status.sel(window="0.95/0.01") == "ok")
    med = got.median("run").values
    fitted = np.isfinite(med)
    assert fitted[1:].all()  # bands 2..64 fitted in every run
    # the paper's window starts after c(0.95) > the synthetic onset, so a shifted Weibull is
    # fitted; on these runs the median beta lands within 0.15 of the truth
    np.testing.assert_allclose(med[fitted], true_beta[fitted], atol=0.15)
    assert (res.r2.where(res.status == "ok") > 0.98).sum() == (res.status == "ok").sum()
    rho = res.rho.sel(window="0.95/0.01").median("run")
    assert rho.sel(metric="onset") > 0.7
    assert rho.sel(metric="width") > 0.7
    assert rho.sel(metric="floor") > 0.7
    assert rho.sel(metric="initial_residual") < -0.7
    # Weibull (beta != 1 truth) preferred in most band fits
    d = res.delta_bic.sel(window="0.95/0.01").values
    assert np.nanmedian(d) < -5


def test_fit_uses_only_saved_checkpoints(res):
    """Recompute each window's SSE from the saved checkpoints fit_start..fit_stop: equal to the
    reported SSE, so no interpolated point entered the fit; and the window is strict."""
    n_checked = 0
    for i in range(res.sizes["run"]):
        s = res.param_time[i].values
        for w in range(res.sizes["window"]):
            for b in range(res.sizes["band"]):
                if res.status[i, w, b] != "ok":
                    continue
                a, z = int(res.fit_start[i, w, b]), int(res.fit_stop[i, w, b])
                assert int(res.fit_n[i, w, b]) == z - a + 1
                assert s[a] > float(res.onset[i, w, b])
                assert s[z] < float(res.onset[i, w, b] + res.width[i, w, b])
                if a > 0:
                    assert s[a - 1] <= float(res.onset[i, w, b])
                x = s[a: z + 1] - s[a]
                y = res.residual[i, a: z + 1, b].values
                sse = np.sum((y - weibull(x, float(res.A[i, w, b]), float(res.omega[i, w, b]),
                                          float(res.beta[i, w, b]))) ** 2)
                assert sse == pytest.approx(float(res.sse_weibull[i, w, b]), rel=1e-9)
                n_checked += 1
    assert n_checked > 150


def test_band_sum_reconstruction_by_hand(runs):
    # min_points=8 leaves the fast coarse band 1 without a fit (its window is shorter)
    one = analyze(runs[0], band_sum_missing="observed", min_points=8)
    w = "0.95/0.01"
    assert (one.status.sel(window=w, band=1) != "ok").all()
    s = one.param_time[0].values
    total = np.zeros_like(s)
    for b in one.band.values:
        r = one.sel(run=one.run[0], window=w, band=b)
        if r.status == "ok":
            s0 = s[int(r.fit_start)]
            total += np.where(s < s0, float(r.A),
                              weibull(np.clip(s - s0, 0, None), float(r.A), float(r.omega),
                                      float(r.beta)))
        else:
            total += r.residual.values
    np.testing.assert_allclose(one.band_sum_fit.sel(window=w)[0].values, total, rtol=1e-12)
    Rt = one.total_residual[0].values
    r2 = 1 - np.sum((Rt - total) ** 2) / np.sum((Rt - Rt.mean()) ** 2)
    assert float(one.band_sum_r2.sel(window=w)[0]) == pytest.approx(r2, rel=1e-12)
    # default: a band without a fit makes the reconstruction NaN (band 1 is omitted here)
    default = analyze(runs[0], min_points=8)
    assert (default.status.sel(window=w, band=1) != "ok").all()
    assert np.isnan(default.band_sum_r2.sel(window=w)).all()


def test_full_loss_fit(res):
    assert (res.total_status == "ok").all()
    assert (res.total_r2 > 0.99).all()
    assert (res.total_n == 53).all()


# ---------------------------------------------------------------- inputs
def test_input_forms_agree(runs):
    sub = runs[:3]
    a = analyze(sub)
    b = analyze({r.attrs["name"]: r for r in sub})
    c = analyze(xr.concat([r.expand_dims(run=[r.attrs["name"]]) for r in sub], dim="run",
                          combine_attrs="drop_conflicts"))
    for other in (b, c):
        assert other.run.values.tolist() == a.run.values.tolist()
        for v in ("beta", "onset", "rho", "total_beta", "floor"):
            np.testing.assert_allclose(other[v].values, a[v].values, rtol=1e-12)
    single = analyze(sub[0])
    assert single.sizes["run"] == 1
    np.testing.assert_allclose(single.beta.values[0], a.beta.values[0], rtol=1e-12)


def test_duplicate_names_made_unique():
    r = make_run_synthetic(3)
    out = analyze([r, r])
    assert out.run.values.tolist() == [r.attrs["name"], r.attrs["name"] + "#2"]


def test_stacked_with_trailing_padding_ignores_padded_checkpoints():
    long, short = make_run_synthetic(1, name="long"), make_run_synthetic(2, name="short")
    short = short.isel(checkpoint=slice(0, 40))
    stacked = xr.concat([long.expand_dims(run=["long"]), short.expand_dims(run=["short"])],
                        dim="run", join="outer", combine_attrs="drop_conflicts")
    assert np.isnan(stacked.param_time.sel(run="short")[40:]).all()
    out = analyze(stacked)
    ref = analyze(short)
    np.testing.assert_allclose(out.beta.sel(run="short").values, ref.beta[0].values, rtol=1e-12)
    np.testing.assert_allclose(out.floor.sel(run="short").values, ref.floor[0].values)
    assert np.isnan(out.total_residual.sel(run="short")[40:]).all()
    assert (out.step.sel(run="short")[40:] == -1).all()


def test_padding_in_the_middle_is_an_error():
    r = make_run_synthetic(1, name="holey").expand_dims(run=["holey"])
    r["param_time"] = r.param_time.where(r.checkpoint != 10)
    with pytest.raises(ValueError, match=r"'holey'.*\[10\]"):
        analyze(r)


def test_too_few_checkpoints_names_the_run():
    r = make_run_synthetic(1, name="tiny").isel(checkpoint=slice(0, 5))
    with pytest.raises(ValueError, match=r"'tiny' has 5 checkpoints.*at least 6"):
        analyze(r)


def test_invalid_run_names_the_run():
    r = make_run_synthetic(1, name="bad")
    r["band_loss"] = r.band_loss.copy(data=-r.band_loss.values)
    with pytest.raises(ValueError, match="'bad'.*negative"):
        analyze(r)


def test_bad_options():
    r = make_run_synthetic(1)
    with pytest.raises(ValueError, match="floor"):
        analyze(r, floor="median")
    with pytest.raises(ValueError, match="lo < hi"):
        analyze(r, windows=[(0.01, 0.95)])
    with pytest.raises(TypeError):
        analyze(42)


# ---------------------------------------------------------------- conventions and edge cases
def test_final_floor_convention(runs):
    out = analyze(runs[0], floor="final")
    assert out.attrs["floor_convention"] == "final"
    np.testing.assert_array_equal(out.floor.values, out.floor_final.values)
    assert (out.residual[0, -1].values == 0).all()


def test_unsaturated_band_warns():
    s = np.linspace(0, 10, 30)
    L = np.stack([1e-3 + np.exp(-s), 1e-3 + np.exp(-s / 20)], axis=1)  # band 2 still moving
    r = make_run(L, s, np.arange(30), name="slow")
    with pytest.warns(UserWarning, match="slow band 2"):
        out = analyze(r)
    assert out.saturated.values.tolist() == [[True, False]]
    trend = out.floor_window_trend_pct.values[0]
    assert trend[1] > 2 and abs(trend[0]) < 0.1  # band 2 is still falling; band 1 is flat


def test_noisy_flat_band_warns_with_noise_not_trend():
    """A band that has stopped falling but scatters by 2 % of its range between checkpoints is
    flagged by the drift; the warning and late_noise_pct show that noise, not a trend, did it."""
    s = np.linspace(0, 10, 30)
    wobble = np.where(np.arange(30) % 2 == 0, 1.0, -1.0)
    L = np.stack([1e-3 + np.exp(-s), 0.05 + np.exp(-s) + 0.02 * wobble * (s > 5)], axis=1)
    r = make_run(L, s, np.arange(30), name="noisy")
    with pytest.warns(UserWarning, match=r"noisy band 2 \(\d+\.\d+ %; trend -?0\.\d+ %, noise \d+\.\d+ %\)"):
        out = analyze(r)
    noise = out.late_noise_pct.values[0]
    assert noise[1] > 1.5 and noise[0] < 0.01
    assert out.saturated.values.tolist() == [[True, False]]


def test_band_with_nonpositive_initial_residual():
    s = np.linspace(0, 10, 30)
    rising = 0.5 + 0.3 * np.exp(-((s - 5) ** 2))  # ends above its start: R(s0) < 0
    L = np.stack([1e-3 + np.exp(-s), 1e-3 + np.exp(-s / 2), rising], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = analyze(make_run(L, s, np.arange(30)))
    assert float(out.initial_residual[0, 2]) <= 0
    assert np.isnan(out.crossing[0, 2]).all()
    assert (out.status[0, :, 2] == "omitted").all()
    assert "R_i(s_0) <= 0" in str(out.reason[0, 0, 2].values)
    assert (out.rho_n.sel(metric="onset") == 2).all()


def test_exponential_bands_recover_exact_parameters(rounding):
    """Noise-free exponential residuals: shift-invariant, so the rebased fit is exact."""
    s = rounding(np.linspace(0, 200, 800))  # exp(-200/4) is far below rounding: R is exactly exponential
    om = np.array([1.0, 2.0, 4.0])
    L = rounding(1e-6 + np.exp(-s[:, None] / om[None, :]))
    out = analyze(make_run(L, s, np.arange(800)), floor="final", windows=[(0.95, 0.01)])
    ok = out.status[0, 0].values == "ok"
    assert ok.all()
    np.testing.assert_allclose(out.omega[0, 0].values, om, rtol=1e-5)
    np.testing.assert_allclose(out.beta[0, 0].values, 1.0, rtol=1e-5)


def test_gamma_from_paramtime(monkeypatch, runs):
    """analyze() takes gamma from paramtime.fit_power_time's Dataset (one accessor, by name)."""
    from bandscope.transforms import paramtime

    def fit_power_time(step, s, epoch_windows=None, epoch=None):
        if epoch_windows is None:
            return xr.Dataset({"gamma": 0.37, "a": 0.0, "b": 1.0, "r2": 0.999, "status": "ok",
                               "reason": ""})
        n = len(epoch_windows)
        return xr.Dataset({"gamma": ("epoch_window", [0.3, 0.35, 0.4][:n]),
                           "r2": ("epoch_window", [0.99] * n)})

    monkeypatch.setattr(paramtime, "fit_power_time", fit_power_time)
    out = analyze(runs[:2])
    np.testing.assert_allclose(out.gamma.values, 0.37)
    np.testing.assert_allclose(out.gamma_w.values, [[0.3, 0.35, 0.4]] * 2)
    assert out.gamma_window.values.tolist() == ["0-10", "0-25", "0-50"]


def test_gamma_known_answer_with_real_paramtime(runs):
    """The synthetic runs have s = b t^0.37 exactly (A.7), so every gamma is 0.37."""
    out = analyze(runs[:2])
    np.testing.assert_allclose(out.gamma.values, 0.37, rtol=1e-6)
    np.testing.assert_allclose(out.gamma_w.values, 0.37, rtol=1e-6)
    assert (out.gamma_r2 > 0.999999).all()


def test_gamma_nan_without_step():
    s = np.linspace(0, 10, 30)
    L = np.stack([1e-3 + np.exp(-s), 1e-3 + np.exp(-s / 2)], axis=1)
    out = analyze(make_run(L, s))  # step unknown (-1)
    assert np.isnan(out.gamma.values).all() and "no step" in out.attrs["gamma_note"]


# ------------------------------------------------------------------ composition and options
def test_analyze_is_the_composition_of_the_public_functions(runs):
    """analyze() == the labelled functions called one after the other (docs/analysis.md)."""
    opts = AnalysisOptions(k=4, windows=[(0.95, 0.01), (0.7, 0.3)], deflation=5.0)
    sub = [runs[0], runs[5].isel(checkpoint=slice(0, 45))]  # unequal lengths: padding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = analyze(sub, opts)
        st_ = stack(collect_runs(sub))
        L, s = st_.band_loss, st_.param_time
        fl = trajectory.floors(L, k=opts.k, saturation_tol_pct=opts.saturation_tol_pct,
                               param_time=s)
    floor = fl.floor_mean_last_k
    R, Rtot = trajectory.residuals(L, floor)
    R = R.transpose("run", "checkpoint", "band")
    cross = trajectory.crossings(R, s, opts.alphas)
    onset, width = trajectory.onset_width(cross, windows=opts.windows)
    aw = trajectory.active_windows(s, cross, opts.windows)
    kw = {"deflation": opts.deflation, "min_points": opts.min_points}
    n_valid = (np.isfinite(Rtot) & np.isfinite(s)).sum("checkpoint")
    fits, total = fitting.compare_window_sets(
        [(R, s, aw.fit_start, aw.fit_n), (Rtot, s, xr.zeros_like(n_valid), n_valid)], **kw)
    # one batch or two: the same fits (to rounding: the batch pads curves to one length)
    alone = fitting.compare_windows(R, s, aw.fit_start, aw.fit_n, **kw)
    for name in ("beta", "delta_bic", "delta_bic_acf", "r2"):
        np.testing.assert_allclose(alone[name], fits[name], rtol=1e-12, atol=1e-12)
    recon = fitting.band_sum(fits, R, Rtot, s, aw.fit_start)
    order = ordering.band_ordering(onset, width, floor, R.isel(checkpoint=0, drop=True))
    gam = paramtime.fit_run_gamma(sub)

    def same(a, b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    for name in ("floor_mean_last_k", "floor_final", "floor_window_drift_pct",
                 "floor_window_trend_pct", "late_noise_pct", "saturated"):
        same(res[name], fl[name].transpose("run", "band"))
    same(res.floor, floor.transpose("run", "band"))
    same(res.residual, R)
    same(res.total_residual, Rtot.transpose("run", "checkpoint"))
    same(res.crossing, cross.transpose("run", "band", "alpha"))
    same(res.onset, onset.transpose("run", "window", "band"))
    same(res.width, width.transpose("run", "window", "band"))
    for name in ("fit_start", "fit_stop", "fit_n"):
        same(res[name], aw[name].transpose("run", "window", "band"))
    for name in ("A", "omega", "beta", "r2", "delta_bic", "delta_bic_neff", "delta_bic_acf",
                 "n_eff_acf", "status"):
        same(res[name], fits[name].transpose("run", "window", "band"))
        same(res[f"total_{name}"], total[name])
    same(res.band_sum_r2, recon.band_sum_r2.transpose("run", "window"))
    same(res.band_sum_fit, recon.band_sum_fit.transpose("run", "window", "checkpoint"))
    same(res.rho, order.rho.transpose("run", "window", "metric"))
    same(res.gamma, gam.gamma)
    same(res.gamma_w, gam.gamma_w)
    assert res.attrs["k"] == 4 and res.attrs["deflation"] == 5.0


def test_options_object_and_keywords_agree(runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a = analyze(runs[:2], AnalysisOptions(floor="final", min_points=6))
        b = analyze(runs[:2], floor="final", min_points=6)
        c = analyze(runs[:2], AnalysisOptions(floor="final"), min_points=6)
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    xr.testing.assert_identical(a.drop_attrs(), c.drop_attrs())


@pytest.mark.parametrize("kw, match", [
    ({"floor": "median"}, "floor must be one of"),
    ({"k": 0}, "k >= 1"),
    ({"k": 2.5}, "k must be an integer"),
    ({"min_points": 3}, "min_points >= 4"),
    ({"deflation": 0.5}, "deflation must be finite and >= 1"),
    ({"saturation_tol_pct": -1}, "saturation_tol_pct"),
    ({"n_starts": 0}, "n_starts"),
    ({"gamma_windows": [(10, 0)]}, "start < end"),
    ({"band_sum_missing": "zero"}, "band_sum_missing"),
    ({"windows": []}, "at least one"),
])
def test_options_are_validated_once_with_the_bad_value(kw, match):
    with pytest.raises(ValueError, match=match):
        AnalysisOptions(**kw)


def test_unknown_option_is_refused(runs):
    with pytest.raises(TypeError, match="unknown analysis option"):
        analyze(runs[:1], widnows=[(0.9, 0.1)])
    with pytest.raises(TypeError, match="AnalysisOptions"):
        analyze(runs[:1], {"k": 3})


def test_every_option_reachable_from_the_cli():
    import dataclasses

    from bandscope import cli

    parser = cli.build_parser()
    args = parser.parse_args(["analyze", "x.csv", "--windows", "0.9/0.1", "--floor", "final",
                              "-k", "3", "--deflation", "4", "--min-points", "6",
                              "--saturation-tol", "3", "--n-starts", "2",
                              "--gamma-windows", "0-5,0-40", "--no-fallback",
                              "--band-sum-missing", "observed"])
    opts = cli.analysis_options(args)
    assert opts == AnalysisOptions(windows=[(0.9, 0.1)], floor="final", k=3, deflation=4,
                                   min_points=6, saturation_tol_pct=3, n_starts=2,
                                   gamma_windows=[(0, 5), (0, 40)], fallback=False,
                                   band_sum_missing="observed")
    defaults = cli.analysis_options(parser.parse_args(["analyze", "x.csv"]))
    assert defaults == AnalysisOptions()
    changed = {f.name for f in dataclasses.fields(AnalysisOptions)
               if getattr(opts, f.name) != getattr(defaults, f.name)}
    assert changed == {f.name for f in dataclasses.fields(AnalysisOptions)}


# ------------------------------------------------------------------ scale-free statistics
_SCALE_FREE = ("r2", "exp_r2", "beta", "delta_bic", "delta_bic_neff", "delta_bic_acf",
               "n_eff_acf", "onset", "width", "omega", "crossing", "floor_convention_diff_pct",
               "floor_window_drift_pct", "floor_window_trend_pct", "late_noise_pct",
               "band_sum_r2", "rho", "total_r2", "total_delta_bic", "total_delta_bic_acf")


@pytest.fixture(scope="module")
def small_run(rounding_module):
    return rounding_module(make_run_synthetic(4, n_bands=4))


@settings(max_examples=15, deadline=None)
@given(exponent=st.floats(-250, 250))
def test_statistics_do_not_depend_on_the_loss_scale(small_run, exponent):
    """Multiplying every band loss by 10^e (|e| <= 250) changes no statistic (scale-free)."""
    c = 10.0 ** exponent
    scaled = small_run.copy()
    scaled["band_loss"] = small_run.band_loss * c
    scaled = scaled.drop_vars("mse", errors="ignore")
    base = small_run.drop_vars("mse", errors="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a, b = analyze(base), analyze(scaled)
    for name in _SCALE_FREE:
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-6, atol=1e-9,
                                   err_msg=name)
    for name in ("status", "reason", "saturated", "total_status"):
        np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=name)
    np.testing.assert_allclose(b.A.values / c, a.A.values, rtol=1e-6)
    np.testing.assert_allclose(b.floor.values / c, a.floor.values, rtol=1e-12)
    # BIC itself shifts by 2 n log c; delta_bic (above) does not
    n = a.fit_n.values
    np.testing.assert_allclose(b.bic_weibull.values - a.bic_weibull.values,
                               np.where(a.status.values == "ok", 2 * n * np.log(c), np.nan),
                               rtol=1e-9, atol=1e-6)


def test_tiny_losses_give_no_false_exact_fit(rounding):
    """Band losses ~1e-200: R², ΔBIC and late noise as at scale 1 (SSE itself underflows)."""
    run = rounding(make_run_synthetic(2, n_bands=4)).drop_vars("mse", errors="ignore")
    tiny = run.copy()
    tiny["band_loss"] = run.band_loss * 1e-200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a, b = analyze(run), analyze(tiny)
    ok = a.status.values == "ok"
    assert ok.any() and np.isfinite(b.r2.values[ok]).all()
    assert np.isfinite(b.delta_bic.values[ok]).all()
    assert not any("exact fit" in r for r in b.reason.values.ravel())
    assert (b.late_noise_pct.values > 0).all()
    np.testing.assert_allclose(b.late_noise_pct.values, a.late_noise_pct.values, rtol=1e-9)
