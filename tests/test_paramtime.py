"""Parameter time (chord sums between checkpoints) and the s(t) = a + b t^gamma fit."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from bandscope.keysearch.synthetic import PAPER_EPOCHS, make_run_synthetic
from bandscope.transforms.paramtime import fit_power_time, parameter_time, power_time

# ----------------------------------------------------------------------- parameter_time


def _ckpts():
    # hand-made: chord 1 = ||(3,4)|| = 5 (w) ; chord 2 = sqrt(1^2 + 2^2 + 2^2) = 3 (w and b)
    return [
        {"w": np.array([0.0, 0.0]), "b": np.array([[1.0]]), "count": np.array(0)},
        {"w": np.array([3.0, 4.0]), "b": np.array([[1.0]]), "count": np.array(7)},
        {"w": np.array([4.0, 6.0]), "b": np.array([[3.0]]), "count": np.array(9)},
    ]


def test_hand_computed_sequence():
    pt = parameter_time(_ckpts())
    np.testing.assert_allclose(pt.values, [0.0, 5.0, 8.0], rtol=1e-15)
    assert pt.dims == ("checkpoint",) and pt.checkpoint.values.tolist() == [0, 1, 2]
    assert pt.attrs["skipped_keys"] == "count" and pt.attrs["n_parameters"] == 3
    assert pt.attrs["n_tensors"] == 2 and "A.7" in pt.attrs["paper"]
    assert pt.name == "param_time"


def test_generator_and_live_aliasing():
    # a generator that mutates and re-yields the same arrays (like model.state_dict() during
    # training): the previous checkpoint must have been copied
    def gen():
        w = np.zeros(3)
        for k in range(4):
            w += np.array([1.0, 2.0, 2.0]) * (k > 0)  # each chord has length 3
            yield {"w": w}

    np.testing.assert_allclose(parameter_time(gen()).values, [0, 3, 6, 9])


def test_flat_arrays_and_names():
    pt = parameter_time(iter([np.zeros(4), np.full(4, 0.5), np.ones(4)]), names=["a", "b", "c"])
    np.testing.assert_allclose(pt.values, [0, 1, 2])
    assert pt["checkpoint_name"].values.tolist() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 names for 3 checkpoints"):
        parameter_time([np.zeros(4)] * 3, names=["a", "b"])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(0, 2**31 - 1),
       st.sampled_from([np.float16, np.float32, np.float64]))
def test_matches_concatenated_oracle(n_ckpt, sizes, seed, dtype):
    rng = np.random.default_rng(seed)
    sds = [{f"p{i}": rng.normal(size=(n,)).astype(dtype) for i, n in enumerate(sizes)} for _ in range(n_ckpt)]
    flat = [np.concatenate([sd[f"p{i}"].astype(np.float64) for i in range(len(sizes))]) for sd in sds]
    expect = np.concatenate([[0.0], np.cumsum([np.linalg.norm(b - a) for a, b in zip(flat, flat[1:])])])
    np.testing.assert_allclose(parameter_time(sds).values, expect, rtol=1e-13, atol=1e-300)


def test_large_tensor_chunked(monkeypatch):
    import bandscope.transforms.paramtime as P

    monkeypatch.setattr(P, "_CHUNK", 7)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 10)).astype(np.float32), rng.normal(size=(10, 10)).astype(np.float32)
    expect = np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))
    np.testing.assert_allclose(parameter_time([{"x": a}, {"x": b}]).values[1], expect, rtol=1e-14)


def test_keys_selection():
    pt = parameter_time(_ckpts(), keys=["w"])
    np.testing.assert_allclose(pt.values, [0.0, 5.0, 5.0 + np.sqrt(5.0)])
    with pytest.raises(KeyError, match="'nope'"):
        parameter_time(_ckpts(), keys=["nope"])


def test_errors_name_the_key():
    c = _ckpts()
    del c[2]["b"]
    with pytest.raises(ValueError, match=r"checkpoint 2 is missing entry 'b'"):
        parameter_time(c)
    c = _ckpts()
    c[1]["extra"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"checkpoint 1 has an extra entry 'extra'"):
        parameter_time(c)
    c = _ckpts()
    c[1]["w"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"entry 'w' has shape \(3,\) at checkpoint 1 but \(2,\)"):
        parameter_time(c)
    c = _ckpts()
    c[2]["count"] = np.array(1.5)
    with pytest.raises(ValueError, match="'count' changes between floating and non-floating"):
        parameter_time(c)
    with pytest.raises(ValueError, match="empty"):
        parameter_time(iter([]))
    with pytest.raises(ValueError, match="no floating tensors"):
        parameter_time([{"n": np.array(3)}])
    with pytest.raises(TypeError, match="checkpoint 1 is a array"):
        parameter_time([{"w": np.zeros(2)}, np.zeros(2)])
    with pytest.raises(TypeError, match="not numeric"):
        parameter_time([np.array(["a", "b"])])


def test_torch_state_dicts_duck_typed():
    torch = pytest.importorskip("torch")

    def states(copy):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            sd = model.state_dict()  # live tensors, mutated in place by the next step
            if copy:  # oracle: one float64 vector of every floating entry, copied
                yield torch.cat([v.detach().double().flatten() for v in sd.values() if v.is_floating_point()])
            else:
                yield sd
            loss = model(torch.randn(8, 3)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    pt = parameter_time(states(copy=False))
    assert "num_batches_tracked" in pt.attrs["skipped_keys"]
    flat = list(states(copy=True))
    expect = np.concatenate([[0.0], np.cumsum([float((b - a).norm()) for a, b in zip(flat, flat[1:])])])
    np.testing.assert_allclose(pt.values, expect, rtol=1e-12)
    assert expect[-1] > 0
    # bfloat16 tensors (no numpy dtype) are widened exactly
    a = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    b = torch.tensor([4.0, 6.0], dtype=torch.bfloat16, requires_grad=True)
    np.testing.assert_allclose(parameter_time([{"w": a}, {"w": b}]).values, [0, 5])


# ----------------------------------------------------------------------- fit_power_time

STEPS = np.round(PAPER_EPOCHS * 1427).astype(np.int64)


def test_power_time_model():
    np.testing.assert_allclose(power_time([0, 4, 9], 1.0, 2.0, 0.5), [1.0, 5.0, 7.0])


@pytest.mark.numeric
def test_noise_free_exact(rounding):
    s = rounding(power_time(STEPS, 0.3, 0.9, 0.368))
    fit = fit_power_time(STEPS, s)
    assert str(fit.status.values) == "ok"
    np.testing.assert_allclose([fit.gamma, fit.a, fit.b], [0.368, 0.3, 0.9], rtol=1e-6, atol=1e-8)
    assert float(fit.r2) > 1 - 1e-12 and int(fit.n) == 53


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("truth", [(0.0, 0.9, 0.37), (2.0, 0.05, 0.6), (-1.0, 3.0, 0.25)])
@pytest.mark.numeric
def test_noisy_known_answer(seed, truth, rounding):
    a, b, g = truth
    rng = np.random.default_rng(seed)
    s_true = power_time(STEPS, a, b, g)
    s = rounding(s_true + rng.normal(0, 2e-3 * (s_true.max() - s_true.min()), s_true.size))
    fit = fit_power_time(STEPS, s)
    assert str(fit.status.values) == "ok"
    assert abs(float(fit.gamma) - g) < 0.01 * g + 4 * float(fit.gamma_stderr)
    assert abs(float(fit.gamma) - g) < 0.03 * g
    assert float(fit.r2) > 0.999
    # oracle: scipy curve_fit started at the truth can do no better than our global fit
    from scipy.optimize import curve_fit

    p, _ = curve_fit(lambda t, a_, b_, g_: a_ + b_ * np.power(t, g_), STEPS.astype(float), s, p0=truth, maxfev=20000)
    sse_cf = float(np.sum((s - power_time(STEPS, *p)) ** 2))
    assert float(fit.sse) <= sse_cf * (1 + 1e-6)


def test_stderr_calibrated_roughly():
    # gamma_stderr should match the spread of gamma over noise draws within a factor ~1.5
    g_hat, se = [], []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        s = power_time(STEPS, 0.0, 1.0, 0.4) + rng.normal(0, 0.5, STEPS.size)
        f = fit_power_time(STEPS, s)
        g_hat.append(float(f.gamma))
        se.append(float(f.gamma_stderr))
    ratio = np.std(g_hat) / np.median(se)
    assert 0.6 < ratio < 1.6, ratio


@pytest.mark.numeric
def test_run_dataset_variables_and_windows(rounding):
    ds = rounding(make_run_synthetic(5, gamma=0.41))
    fit = fit_power_time(ds.step, ds.param_time)
    np.testing.assert_allclose(float(fit.gamma), 0.41, rtol=1e-6)  # synthetic s is exactly b t^gamma
    win = fit_power_time(ds.step, ds.param_time, epoch=ds.epoch, epoch_windows=[(0, 10), (0, 25), (0, 50), (44, 46)])
    assert win.epoch_window.values.tolist() == ["0-10", "0-25", "0-50", "44-46"]
    assert win.n.values.tolist() == [30, 42, 53, 1]  # 1+11+18 | +10 (11..20) +2 (22, 24) | all
    assert win.status.values.tolist() == ["ok", "ok", "ok", "omitted"]
    assert np.isnan(win.gamma.values[-1]) and "fit omitted" in str(win.reason.values[-1])
    np.testing.assert_allclose(win.gamma.values[:3], 0.41, rtol=1e-6)
    assert win.epoch_lo.values.tolist() == [0, 0, 0, 44]


@pytest.mark.numeric
def test_windows_recover_changing_exponent(rounding):
    # gamma differs between early and late training: window fits must see the local exponent
    t = STEPS.astype(float)
    s = rounding(np.where(PAPER_EPOCHS <= 10, power_time(t, 0, 1.0, 0.47), np.nan))
    win = fit_power_time(t, s, epoch=PAPER_EPOCHS, epoch_windows=[(0, 10), (0, 50)])
    np.testing.assert_allclose(win.gamma.values, [0.47, 0.47], rtol=1e-6)  # NaN padding ignored
    assert win.n.values.tolist() == [30, 30]


def test_unknown_steps_and_degenerate_inputs():
    s = np.arange(5.0)
    f = fit_power_time(np.full(5, -1), s)
    assert str(f.status.values) == "omitted" and np.isnan(float(f.gamma)) and int(f.n) == 0
    f = fit_power_time([0, 1, 2, 3, 4], np.ones(5))
    assert str(f.status.values) == "failed" and "constant" in str(f.reason.values)
    f = fit_power_time([0, 0, 5, 5, 5], [0, 0, 1, 1, 1.0])
    assert str(f.status.values) == "failed" and "distinct" in str(f.reason.values)
    f = fit_power_time([0, 1, 2], [0, 1, 2.0])
    assert str(f.status.values) == "omitted"
    # a step function is not power-like: gamma runs to the bound and is flagged
    f = fit_power_time(STEPS, (STEPS > 0).astype(float))
    assert str(f.status.values) == "failed" and "bound" in str(f.reason.values)


def test_argument_errors():
    with pytest.raises(ValueError, match="pass epoch="):
        fit_power_time(STEPS, STEPS**0.5, epoch_windows=[(0, 10)])
    with pytest.raises(ValueError, match="lo < hi"):
        fit_power_time(STEPS, STEPS**0.5, epoch=PAPER_EPOCHS, epoch_windows=[(10, 0)])
    with pytest.raises(ValueError, match="different lengths|line up"):
        fit_power_time(STEPS[:-1], STEPS**0.5)
    with pytest.raises(ValueError, match="1-D"):
        fit_power_time(np.zeros((2, 3)), np.zeros((2, 3)))


@pytest.mark.numeric
def test_stacked_runs_loop_over_extra_dims(rounding):
    runs = xr.concat([rounding(make_run_synthetic(s, gamma=g)) for s, g in ((1, 0.35), (2, 0.45))], dim="run")
    runs = runs.assign_coords(run=["r1", "r2"])
    fit = fit_power_time(runs.step, runs.param_time, epoch=runs.epoch, epoch_windows=[(0, 10), (0, 50)])
    assert fit.gamma.dims == ("run", "epoch_window") and fit.run.values.tolist() == ["r1", "r2"]
    np.testing.assert_allclose(fit.gamma.values, [[0.35, 0.35], [0.45, 0.45]], rtol=1e-6)
    full = fit_power_time(runs.step, runs.param_time)
    assert full.gamma.dims == ("run",)


@pytest.mark.numeric
def test_vectorised_sse_grid_equals_the_closed_form_loop(rounding):
    from bandscope.transforms.paramtime import _linear_ab, _sse_grid

    rng = np.random.default_rng(4)
    tau = np.sort(rounding(rng.random(40)))
    tau[0] = 0.0
    s = rounding(2.0 + 3.0 * tau**0.4 + rng.normal(0, 0.01, tau.size))
    grid = np.geomspace(1e-3, 10, 121)
    loop = np.array([_linear_ab(np.power(tau, g), s)[2] for g in grid])
    np.testing.assert_allclose(_sse_grid(tau, s, grid), loop, rtol=1e-9, atol=1e-12 * float(s @ s))


def test_old_windows_keyword_and_saved_names_still_work():
    """``windows=`` (renamed ``epoch_windows=``) still works, with a DeprecationWarning, and a
    Dataset saved with the old dim names reads back under the new ones."""
    from bandscope.transforms.paramtime import RENAMED, upgrade

    with pytest.warns(DeprecationWarning, match="epoch_windows"):
        old = fit_power_time(STEPS, STEPS**0.5, epoch=PAPER_EPOCHS, windows=[(0, 10)])
    new = fit_power_time(STEPS, STEPS**0.5, epoch=PAPER_EPOCHS, epoch_windows=[(0, 10)])
    xr.testing.assert_identical(old, new)
    saved = new.rename({v: k for k, v in RENAMED.items()})
    assert "window" in saved.dims
    xr.testing.assert_identical(upgrade(saved), new)
    with pytest.raises(TypeError, match="epoch_windows= only"):
        fit_power_time(STEPS, STEPS**0.5, epoch=PAPER_EPOCHS, windows=[(0, 10)],
                       epoch_windows=[(0, 10)])


@pytest.mark.numeric
def test_fit_run_gamma_notes_instead_of_raising(rounding):
    from bandscope.transforms.paramtime import fit_run_gamma

    ds = rounding(make_run_synthetic(5, gamma=0.41))
    g = fit_run_gamma(ds)
    np.testing.assert_allclose(g.gamma_w.values, 0.41, rtol=1e-6)
    assert str(g.note.values) == ""
    g = fit_run_gamma([ds, ds.assign(step=ds.step * 0 - 1)])
    assert np.isnan(float(g.gamma[1])) and "no step" in str(g.note.values[1])
    np.testing.assert_allclose(g.gamma_w.values[0], 0.41, rtol=1e-6)


def test_batched_gamma_fit_equals_the_one_row_kernel():
    """``_fit_power_many`` (one grid and one vectorised bounded Brent for all rows) gives the
    γ of ``_fit_power`` (scipy's ``minimize_scalar``) row by row: γ and b to 1e-12, R² to 1e-12
    absolute; a, the ill-conditioned offset, to 1e-4 relative of the s range; statuses equal."""
    from bandscope.keysearch.synthetic import make_runs_synthetic
    from bandscope.transforms.paramtime import _fit_power, _fit_power_many

    rows = []
    rng = np.random.default_rng(0)
    for r in make_runs_synthetic(6):
        t, s, e = r.step.values, r.param_time.values, r.epoch.values
        rows.append((t, s))
        rows.append((t, s * np.exp(0.01 * rng.standard_normal(s.size))))
        for hi in (10, 25):
            rows.append((t[e <= hi], s[e <= hi]))
    rows.append((np.arange(3.0), np.arange(3.0)))  # too few points: omitted
    many = _fit_power_many(rows)
    for (t, s), got in zip(rows, many):
        ref = _fit_power(t, s)
        assert got["status"] == ref["status"] and got["n"] == ref["n"]
        if ref["status"] != "ok":
            continue
        assert got["gamma"] == pytest.approx(ref["gamma"], rel=1e-12)
        assert got["b"] == pytest.approx(ref["b"], rel=1e-9)
        assert got["r2"] == pytest.approx(ref["r2"], abs=1e-12)
        assert abs(got["a"] - ref["a"]) <= 1e-4 * (np.max(s) - np.min(s))
        assert got["gamma_stderr"] == pytest.approx(ref["gamma_stderr"], rel=1e-4, nan_ok=True)


@given(st.lists(st.sampled_from([0.0, -0.0, 1.0, 2.5, 7.0, 1e300]), max_size=8))
def test_three_distinct_is_numpys_unique(values):
    from bandscope.transforms.paramtime import _three_distinct

    t = np.array(values, dtype=np.float64)
    assert _three_distinct(t) == (np.unique(t).size >= 3)


def test_gamma_stderr_all_rows_at_once_equals_one_at_a_time():
    """The standard errors from one batched inverse are those of inverting each JᵀJ alone
    (bit for bit), with a singular matrix (NaN, and the others still computed), n <= 3 (NaN)
    and a negative variance (NaN)."""
    from bandscope.transforms.paramtime import _gamma_stderr

    rng = np.random.default_rng(1)
    J = rng.standard_normal((6, 9, 3))
    jtj = np.einsum("rni,rnj->rij", J, J)
    jtj[2] = np.ones((3, 3))  # singular
    sse = rng.random(6)
    sse[4] = -1.0  # a negative variance
    n = np.array([9.0, 9.0, 9.0, 3.0, 9.0, 9.0])

    def one(j: int) -> float:
        if n[j] <= 3:
            return np.nan
        try:
            c = np.linalg.inv(jtj[j])[2, 2] * (sse[j] / (n[j] - 3))
        except np.linalg.LinAlgError:
            return np.nan
        return float(np.sqrt(c)) if c >= 0 else np.nan

    got = _gamma_stderr(jtj, sse, n)
    want = np.array([one(j) for j in range(6)])
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[[2, 3, 4]]).all() and np.isfinite(got[[0, 1, 5]]).all()
    keep = [0, 1, 3, 4, 5]  # no singular matrix: the one-call path
    np.testing.assert_array_equal(_gamma_stderr(jtj[keep], sse[keep], n[keep]), want[keep])


def test_vectorised_bounded_brent_takes_scipys_steps():
    from scipy.optimize import minimize_scalar

    from bandscope.transforms.paramtime import _brent_bounded

    centres = np.array([0.3, -1.7, 2.5, 0.0, 4.9])
    lo, hi = centres - 1.3, centres + 0.9

    def f(x, rows):
        return (x - centres[rows]) ** 2 + 0.1 * np.sin(5 * x)

    got = _brent_bounded(f, lo, hi, 1e-12)
    for j in range(centres.size):
        ref = minimize_scalar(lambda x, j=j: f(np.array([x]), np.array([j]))[0], bounds=(lo[j], hi[j]),
                              method="bounded", options={"xatol": 1e-12})
        assert got[j] == ref.x
