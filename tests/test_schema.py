"""bandscope.schema: one definition of every results variable, used by analyze, JSON and docs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bandscope import io as bio
from bandscope import schema
from bandscope.keysearch.analysis import analyze
from bandscope.keysearch.synthetic import make_runs_synthetic
from bandscope.report import results_json

DOCS = Path(__file__).resolve().parents[1] / "docs" / "format.md"


@pytest.fixture(scope="module")
def res():
    return analyze(make_runs_synthetic(3))


def test_analyze_writes_exactly_the_schema(res):
    assert list(res.data_vars) == list(schema.RESULTS)
    for name, v in schema.RESULTS.items():
        assert res[name].dims == v.dims, name
        assert res[name].attrs["definition"], name
        assert "{" not in res[name].attrs.get("units", ""), (name, res[name].attrs)
    for name, v in schema.COORDS.items():
        assert name in res.coords and res[name].dims == v.dims, name
    assert res.attrs["bandscope_results"] == schema.FORMAT


def test_results_attrs_are_the_schema(res):
    ctx = {"loss": res.band_loss.attrs["units"], "time": res.param_time.attrs["units"], "k": res.attrs["k"],
           "floor": res.attrs["floor_convention"], "deflation": f"{res.attrs['deflation']:g}",
           "saturation_tol_pct": res.attrs["saturation_tol_pct"]}
    ds = res.copy()
    for v in ("band_loss", "param_time"):  # the run's long_name is carried along beside the schema's attrs
        assert ds[v].attrs.pop("long_name")
    bad = [m for m in schema.mismatches(ds, "results", complete=True, **ctx) if m.split(":")[0] in schema.RESULTS]
    assert bad == [], bad
    # the coordinates too (run, window, checkpoint, alpha, metric, arch, seed, ...)
    bad = [m for m in schema.mismatches(ds, "results", **ctx) if m.split(":")[0] in schema.COORDS]
    assert bad == [], bad


def test_units_filled_from_the_run(res):
    assert res.onset.attrs["units"] == res.param_time.attrs["units"]
    assert res.floor.attrs["units"] == "squared pixel value"
    assert res.sse_weibull.attrs["units"] == "(squared pixel value)^2"
    pct = {res[v].attrs["units"] for v in res.data_vars if v.endswith("_pct")}
    assert pct == {schema.PCT}  # one wording for every % statistic
    assert "k=5" in res.floor_mean_last_k.attrs["definition"]


def test_docs_table_is_the_schema():
    text = DOCS.read_text()
    assert schema.markdown_table() in text, (
        "docs/format.md's results table differs from bandscope.schema; regenerate it with "
        "python -c \"from bandscope import schema; schema.update_docs('docs/format.md')\"")


def test_docs_table_rows_name_every_variable_once():
    block = schema.markdown_table()
    names = re.findall(r"^\| `([^`]+)` \|", block, flags=re.M)
    assert sorted(names) == sorted([*schema.RESULTS, *schema.COORDS])


def test_json_keys_come_from_the_schema(res, tmp_path):
    out = results_json.write_json(res, tmp_path / "r.json")
    d = json.loads(out.read_text())
    run = d["runs"][str(res.run.values[0])]
    band = run["bands"]["1"]
    fit = band["fits"]["0.95/0.01"]
    assert set(schema.json_keys("fit")) <= set(fit)
    assert set(schema.json_keys("total")) <= set(run["total"])
    assert set(schema.json_keys("band")) <= set(band)
    assert fit["n"] == int(res.fit_n.sel(window="0.95/0.01", band=1)[0])
    assert fit["delta_bic_acf"] == pytest.approx(
        float(res.delta_bic_acf.sel(window="0.95/0.01", band=1)[0]), nan_ok=True)


def test_attrs_and_errors():
    assert schema.attrs("floor", floor="final", loss="L")["definition"].endswith("(here: final)")
    assert schema.attrs("floor", loss="L")["units"] == "L"
    with pytest.raises(KeyError, match="not a results variable"):
        schema.attrs("nope")
    with pytest.raises(ValueError, match="dims"):
        schema.variable("onset", np.zeros(3))
    with pytest.raises(ValueError, match="JSON group"):
        schema.json_keys("nope")
    assert schema.describe("delta_bic").startswith("delta_bic [1]: ")


def test_results_netcdf_roundtrip_and_old_names(res, tmp_path, monkeypatch):
    p = bio.write_results(res, tmp_path / "r.nc")
    back = bio.read_results(p)
    np.testing.assert_array_equal(back.delta_bic.values, res.delta_bic.values)
    # a file written under an old name is read back under the new one
    monkeypatch.setitem(schema.RENAMED, "old_delta_bic", "delta_bic")
    old = res.rename({"delta_bic": "old_delta_bic"})
    p2 = bio.write_results(old, tmp_path / "old.nc")
    np.testing.assert_array_equal(bio.read_results(p2).delta_bic.values, res.delta_bic.values)
    with pytest.raises(FileNotFoundError):
        bio.read_results(tmp_path / "missing.nc")


def test_update_docs_rewrites_the_block(tmp_path):
    page = tmp_path / "format.md"
    page.write_text("intro\n" + schema.markdown_table().replace("| `A` |", "| `stale` |")
                    + "\noutro\n")
    schema.update_docs(page)
    assert schema.markdown_table() in page.read_text()
    page.write_text("no table")
    with pytest.raises(ValueError, match="no generated results table"):
        schema.update_docs(page)


# --------------------------------------------------------------------------- every Dataset kind
def _conditional(kind_name):
    """Names of kind ``kind_name`` the producer writes only in some settings (``when`` not empty)."""
    k = schema.kind(kind_name)
    return {v.name for v in [*k.variables.values(), *k.coords.values()] if v.when}


def _missing(ds, kinds):
    return [m for m in schema.mismatches(ds, kinds, complete=True) if "not in the Dataset" in m]


def test_run_dataset_is_the_schema():
    from bandscope.run import RUN_VARIABLES, make_run

    run = make_run([[1.0, 0.5], [0.5, 0.2]], [0.0, 1.0], [0, 1], epoch=[0, 1], arc_length=[0, 1], mse=[1.5, 0.7],
                   train_loss=[np.nan, 1.0], heldout_loss=[1.0, 0.9])
    assert schema.mismatches(run, "run") == []
    # every run variable over checkpoint/band is written here; the rest are LNP ones (torch test below)
    assert {m.split(":")[0] for m in _missing(run, "run")} == {"lnp_step", "lnp_window", "lnp_arc_length"}
    assert RUN_VARIABLES["step"] == schema.attrs("run", "step") == {"units": "optimizer steps",
                                                                    "long_name": "raw training time t"}
    # a run read back from netCDF keeps them
    assert run.band_loss.attrs["definition"].endswith("sums to the pixel MSE")


def test_run_file_roundtrip_keeps_the_schema(tmp_path):
    from bandscope.keysearch.synthetic import make_run_synthetic

    run = make_run_synthetic(0)
    p = bio.write_run(run, tmp_path / "r.nc")
    back = bio.read_run(p)
    assert schema.mismatches(back[["band_loss", "param_time", "step"]], "run") == []


def test_band_losses_are_the_schema():
    from bandscope.transforms.bands import band_losses

    x = np.random.default_rng(0).random((3, 1, 8, 8))
    out = band_losses(x, x * 0.5)
    assert schema.mismatches(out, "bands") == []
    assert _missing(out.to_dataset(), "bands") == []
    assert set(out.attrs) == {"units", "long_name", "definition", "paper", "reduction", "dtype"}
    assert out.attrs["paper"] == "key search §3 (band loss, Eq. 1) and appendix A.6"
    per = band_losses(x, x * 0.5, per_image=True)  # leading image dim: only the dims differ
    assert [m.split(":")[0] for m in schema.mismatches(per, "bands")] == ["band_loss"]


def test_lnp_components_are_the_schema():
    from bandscope.lnp.statistics import lnp_components

    ds = lnp_components([0.5, 0.0], [4.0, 4.0], [1.0, 0.0], n_units=2, grad_dot=[0.2, 0.1],
                        loss_scale_b=[0.4, 0.4], network_scale_b=[3.0, 3.0], n_units_b=3)
    assert [m for m in schema.mismatches(ds, "lnp") if "dims" not in m] == []  # dims: those of the inputs
    core = {v.name for v in schema.kind("lnp").variables.values() if not v.when.startswith("measure_lnp")}
    assert core == set(ds.data_vars)  # lnp_components writes every core statistic


def test_lnp_schedule_and_probe_ratio_are_the_schema():
    import xarray as xr

    from bandscope.lnp.statistics import log_windows, probe_ratio

    sched = log_windows(4, 3, 200)
    assert schema.mismatches(sched, "lnp_schedule", complete=True) == []
    a = xr.DataArray([0.2, 0.1, 0.05], dims="lnp_step", coords={"lnp_step": [0, 10, 20]})
    b = xr.DataArray([0.4, 0.4, 0.3], dims="lnp_step", coords={"lnp_step": [0, 100, 200]})
    ratio = probe_ratio(a, b, bins=2, fraction=None)
    assert schema.mismatches(ratio, "probe_ratio", complete=True) == []
    assert ratio.attrs["top_fraction"] == "none"


def test_measure_lnp_is_the_schema():
    torch = pytest.importorskip("torch")
    from bandscope.torch import measure_lnp

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 16), torch.nn.Unflatten(1, (1, 4, 4)))
    x, y = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    ds = measure_lnp(model, torch.nn.functional.mse_loss, (x, y), (x + 0.1, y), bands=True)
    assert schema.mismatches(ds, "lnp", complete=True) == []
    # an unknown loss-reduction count: NaN *_norm with the schema attrs and a reason
    ds = measure_lnp(model, lambda o, t: ((o - t) ** 2).mean(), (x, y))
    assert schema.mismatches(ds, "lnp") == []
    assert ds.loss_scale_norm.attrs["reason"] and np.isnan(float(ds.loss_scale_norm))


def test_run_file_with_lnp_is_the_schema(tmp_path):
    torch = pytest.importorskip("torch")
    from bandscope.torch import Monitor

    class AE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.dec = torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)

        def forward(self, x):
            return torch.sigmoid(self.dec(torch.relu(self.enc(x))))

    torch.manual_seed(0)
    model = AE()
    g = np.random.default_rng(0)
    panel = (g.random((8, 3, 8, 8)) * 255).astype(np.uint8)
    x = torch.from_numpy(g.random((8, 3, 8, 8))).float()
    val = torch.from_numpy(g.random((8, 3, 8, 8))).float()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = Monitor(model, panel=panel, path=tmp_path / "r.nc", schedule=[0, 2, 4], total_steps=4,
                  steps_per_epoch=2, heldout_batch=(val, val), lnp=torch.nn.MSELoss(), lnp_batch=(x, x),
                  lnp_options={"schedule": [1, 3], "eval_batch": (val, val), "bands": True})
    for _ in range(4):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), x).backward()
        opt.step()
        mon.step()
    mon.close()
    from xarray import open_dataset

    with open_dataset(tmp_path / "r.nc") as ds:
        ds = ds.load()
    assert schema.mismatches(ds, ("run", "lnp_run")) == []
    missing = {m.split(":")[0] for m in _missing(ds, ("run", "lnp_run"))}
    assert missing <= _conditional("run") | _conditional("lnp_run"), missing
    assert "lnp_spectral_position_cross" in ds and "lnp_band_spectral_position" in ds and "lnp_arc_length" in ds


def test_forecast_is_the_schema():
    from bandscope.keysearch.forecasting import forecast
    from bandscope.keysearch.synthetic import make_run_synthetic

    run = make_run_synthetic(0)
    fc = forecast(run, prefix=0.6)
    ctx = {"loss": run.band_loss.attrs["units"], "time": run.param_time.attrs["units"]}
    assert schema.mismatches(fc, "forecast", complete=True, **ctx) == []
    assert fc.s_reach.attrs["units"] == run.param_time.attrs["units"]
    series = forecast(run.band_loss.sel(band=1).values, param_time=run.param_time.values)
    assert schema.mismatches(series, "forecast_series", complete=True) == []


def test_reach_results_are_the_schema():
    from bandscope.io.lnp_runfiles import read_lnp_run
    from bandscope.lnp.reach import reach_analysis

    root = Path(__file__).resolve().parents[1] / "reference_runs" / "lm-scaling" / "runs"
    runs = [read_lnp_run(p) for p in sorted(root.glob("*.nc"))]
    assert len(runs) == 6
    res = reach_analysis(runs)  # these runs hold every LNP statistic and the linear probes
    assert schema.mismatches(res, "reach", complete=True) == []
    # units are the run's (a dynamic attr), the rest the schema's
    assert res.loss_scale.attrs["units"] == runs[0].lnp_loss_scale.attrs["units"]
    assert res.time_bin.attrs == schema.reach_attrs("time_bin")


@pytest.mark.parametrize("page", sorted(schema.docs_tables()))
def test_every_docs_table_is_the_schema(page):
    text = (DOCS.parents[0] / Path(page).name).read_text()
    for block in schema.docs_tables()[page]:
        assert block in text, (f"{page}'s table {block.splitlines()[0]!r} differs from bandscope.schema; "
                               "regenerate it with python tools/schema_docs.py")


def test_update_all_docs_rewrites_stale_tables(tmp_path):
    for page, blocks in schema.docs_tables().items():
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("intro\n" + "\n\n".join(b.replace("| always |", "| stale |") for b in blocks))
    changed = schema.update_all_docs(tmp_path, check=True)
    assert {p.relative_to(tmp_path).as_posix() for p in changed} == {"docs/bands.md", "docs/format.md",
                                                                    "docs/forecast.md", "docs/lnp.md",
                                                                    "docs/paramtime.md"}
    schema.update_all_docs(tmp_path)
    assert schema.update_all_docs(tmp_path, check=True) == []


def test_kind_errors_and_two_argument_attrs():
    with pytest.raises(KeyError, match="not a Dataset kind"):
        schema.kind("nope")
    with pytest.raises(KeyError, match="not a variable of the 'lnp' Dataset"):
        schema.attrs("lnp", "nope")
    assert schema.attrs("results", "onset", time="T") == schema.attrs("onset", time="T")
    assert schema.attrs("reach", "size") == schema.reach_attrs("size")
    ds = schema.annotate(__import__("xarray").Dataset({"spectral_position": ((), 0.5, {"reason": "x", "a": 1})}),
                         "lnp")
    assert ds.spectral_position.attrs == {**schema.attrs("lnp", "spectral_position"), "reason": "x"}
    assert schema.mismatches(ds.assign(extra=0), "lnp") == ["extra: not in the schema of ('lnp',)"]


# --------------------------------------------------------------------------- the kinds beneath the public functions
def test_fit_power_time_is_the_schema():
    from bandscope.keysearch.synthetic import make_run_synthetic
    from bandscope.transforms.paramtime import fit_power_time

    run = make_run_synthetic(0)
    fit = fit_power_time(run.step.values, run.param_time.values)
    assert _missing(fit, "power_time") == [f"{c}: in the schema of power_time, not in the Dataset"
                                           for c in ("epoch_window", "epoch_lo", "epoch_hi")]
    assert schema.mismatches(fit, "power_time") == []
    assert fit.gamma.attrs == {"units": "1", "long_name": "exponent gamma of s(t) = a + b t**gamma"}
    # epoch windows add a last dim (only the dims differ from the schema's plain-array case)
    win = fit_power_time(run.step, run.param_time, epoch=run.epoch, epoch_windows=[(0, 10), (0, 25)])
    bad = schema.mismatches(win, "power_time", complete=True)
    assert bad == [f"{n}: dims ('epoch_window',) != schema ()" for n in schema.kind("power_time").variables]


def test_fit_run_gamma_is_the_schema():
    from bandscope.keysearch.synthetic import make_run_synthetic
    from bandscope.transforms.paramtime import fit_run_gamma

    run = make_run_synthetic(0)
    g = fit_run_gamma(run)
    assert schema.mismatches(g, "run_gamma", complete=True, time=run.param_time.attrs["units"]) == []
    # the attrs of the results variables of the same names (analyze's)
    res_ctx = {"time": run.param_time.attrs["units"]}
    for name in ("gamma", "gamma_a", "gamma_w"):
        assert g[name].attrs == schema.attrs(name, **res_ctx)
    many = fit_run_gamma(iter([run, make_run_synthetic(1)]))  # a generator: the units still come from the first
    assert many.gamma_a.dims == ("run",) and many.gamma_a.attrs["units"] == run.param_time.attrs["units"]


def _trajectory_dataset(run, windows=((0.95, 0.01), (0.5, 0.01))):
    import xarray as xr

    from bandscope.keysearch import ordering, trajectory

    L, s = run.band_loss, run.param_time
    f = trajectory.floors(L, param_time=s)
    R, Rt = trajectory.residuals(L, f.floor_mean_last_k)
    c = trajectory.crossings(R, s, sorted({a for w in windows for a in w}, reverse=True))
    on, w = trajectory.onset_width(c, windows=windows)
    aw = trajectory.active_windows(s, c, windows)
    o = ordering.band_ordering(on, w, f.floor_mean_last_k, R.isel(checkpoint=0, drop=True))
    return xr.Dataset({**f.data_vars, "residual": R, "total_residual": Rt,
                       "normalized_residual": trajectory.normalized_residual(R), "crossing": c, "onset": on,
                       "width": w, **aw.data_vars, **o.data_vars})


def test_trajectory_steps_are_the_schema():
    from bandscope.keysearch.synthetic import make_run_synthetic

    run = make_run_synthetic(0)
    ds = _trajectory_dataset(run)
    ctx = {"loss": run.band_loss.attrs["units"], "time": run.param_time.attrs["units"], "k": 5,
           "saturation_tol_pct": 2.0}
    assert schema.mismatches(ds, "trajectory", complete=True, **ctx) == []
    # no attr of the band losses leaks into a floor, no crossing attr into onset or width
    assert "long_name" not in ds.floor_final.attrs and ds.width.attrs["definition"].startswith("w_i")
    # the results variables of the same name carry the same attrs (analyze's)
    for name in ("floor_final", "onset", "fit_n", "rho"):
        assert ds[name].attrs == schema.attrs(name, **ctx), name


def test_lnp_run_summary_and_window_functions_are_the_schema():
    import xarray as xr

    from bandscope.io.lnp_runfiles import read_lnp_run
    from bandscope.lnp import windows

    root = Path(__file__).resolve().parents[1] / "reference_runs" / "lm-scaling" / "runs"
    run = read_lnp_run(sorted(root.glob("*.nc"))[0])
    summary = windows.summarise_run(run)  # this run holds every LNP statistic and the linear probes
    assert schema.mismatches(summary, "lnp_summary", complete=True) == []
    assert summary.loss_scale.attrs["units"] == run.lnp_loss_scale.attrs["units"]
    w = windows.window_means(run)
    assert schema.mismatches(w, "lnp_summary") == []
    cos = windows.gradient_cosine(run.lnp_grad_dot, run.lnp_grad_norm_sq, run.lnp_grad_norm_sq_b)
    slope = windows.loglog_slope(w.spectral_position, w.window_step, 1000)
    m, sd = windows.last_windows(w.loss_scale)
    ds = xr.Dataset({"gradient_cosine": cos.drop_vars(list(cos.coords)), "late_slope": slope, "last_mean": m,
                     "last_sd": sd})
    assert schema.mismatches(ds, "lnp_windows", complete=True, start="1000") == []
    assert "long_name" not in cos.attrs  # not the grad_dot's
    assert m.attrs["units"] == run.lnp_loss_scale.attrs["units"]


def test_probe_variables_of_the_lm_runs_are_the_schema():
    import sys

    import xarray as xr

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tools"))
    try:
        import lm_runs_to_runfiles
    finally:
        sys.path.remove(str(root / "tools"))
    ds = lm_runs_to_runfiles.convert(root / "reference_runs" / "lm-scaling" / "m-seed0")
    probes = [v for v in ds.variables if str(v).startswith("probe_")]
    units = {"loss": "nats / byte", "output": "logit", "unit": "tokens"}  # the model's (kind lm_run)
    assert schema.mismatches(ds[probes], "lnp_probes", complete=True, **units) == []
    # the shipped run files were written by the tool: the same attrs
    shipped = xr.load_dataset(root / "reference_runs" / "lm-scaling" / "runs" / "m-seed0.nc")
    assert schema.mismatches(shipped[probes], "lnp_probes", complete=True, **units) == []
    assert shipped.probe_loss_scale_norm.attrs["units"] == ds.probe_loss_scale_norm.attrs["units"]
    assert ds.probe_loss_scale_norm.attrs["units"] == "(nats / byte)**2 / logit**2 * tokens"


def test_lnp_concept_table_names_only_lnp_variables(monkeypatch):
    table = schema.lnp_concept_table()
    assert "| spectral position | P = ‖∇L‖²/(ℒ𝒩) ∈ [0, 1] (Eq. 49) | `spectral_position` |" in table
    monkeypatch.setattr(schema, "LNP_CONCEPTS", [*schema.LNP_CONCEPTS, ("gone", "x", "`no_such_variable`")])
    with pytest.raises(ValueError, match="no_such_variable"):
        schema.lnp_concept_table()


def test_annotate_coords_only_fills_bare_coordinates_in_place():
    import xarray as xr

    ds = xr.Dataset({"onset": ("run", [1.0], {"units": "mine"})},
                    coords={"run": ["a"], "window": ("window", ["0.95/0.01"], {"definition": "kept"})})
    out = schema.annotate(ds, "results", coords_only=True)
    assert out is ds  # in place, as annotate_coords always was
    assert ds.run.attrs == schema.attrs("results", "run")
    assert ds.window.attrs == {"definition": "kept"}  # a coordinate with attrs is left alone
    assert ds.onset.attrs == {"units": "mine"}  # and so is every data variable
    assert schema.annotate_coords(xr.Dataset(coords={"run": ["b"]})).run.attrs == schema.attrs("run")
    # without coords_only: a copy, every variable the kind defines given its attrs
    full = schema.annotate(ds, "results", time="s")
    assert full is not ds and full.onset.attrs == schema.attrs("onset", time="s")


def test_across_runs_and_reach_parts_are_the_schema():
    import xarray as xr

    from bandscope.io.lnp_runfiles import read_lnp_run
    from bandscope.keysearch.ordering import summarize_runs
    from bandscope.lnp import reach

    da = xr.DataArray([0.5, 0.75, 1.0, np.nan], dims="run", attrs={"units": "steps", "long_name": "not carried"})
    s = summarize_runs(da)
    assert schema.mismatches(s, "across_runs", complete=True) == []
    assert s["median"].attrs["units"] == "steps" and s.n_runs.attrs["units"] == "1"
    root = Path(__file__).resolve().parents[1] / "reference_runs" / "lm-scaling" / "runs"
    per_run = reach.summarise_runs([read_lnp_run(p) for p in sorted(root.glob("*.nc"))[:2]])
    assert schema.mismatches(per_run, "reach") == []
    assert schema.mismatches(reach.by_size(per_run), "reach") == []


def test_parameter_time_carries_the_run_schema():
    from bandscope.transforms.paramtime import parameter_time

    pt = parameter_time([{"w": [0.0, 0.0]}, {"w": [3.0, 4.0]}])
    want = schema.attrs("run", "param_time")
    assert {k: pt.attrs[k] for k in want} == want  # plus what the call adds (paper, n_parameters, ...)
    assert pt.dims == schema.kind("run").variables["param_time"].dims
