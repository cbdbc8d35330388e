"""Monitor: one object equals the separate pieces; each trap of the separate pieces is fixed."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

from bandscope.torch import BandProbe, Monitor, ParamTimeTracker, RunRecorder, measure_lnp, select_panel
from bandscope.torch.monitor import forecast_metrics, open_geometric_schedule, progress_postfix
from torch_models import TinyAE

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]


def _data(n=96, seed=0):
    g = np.random.default_rng(seed)
    return (g.random((n, 3, 8, 8)) * 255).astype(np.uint8)


def _batches(images, steps, bs=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images).float() / 255
    for _ in range(steps):
        yield x[torch.randint(0, len(x), (bs,), generator=g)]


def _train(model, opt, steps, after_step, autocast=None):
    for x in _batches(_data(), steps):
        opt.zero_grad()
        if autocast is not None:
            with torch.autocast("cpu", dtype=autocast):
                loss = torch.nn.functional.mse_loss(model(x.to(autocast)).float(), x)
        else:
            loss = torch.nn.functional.mse_loss(model(x.to(next(model.parameters()).dtype)), x.to(
                next(model.parameters()).dtype))
        loss.backward()
        opt.step()
        after_step()


def _model(seed=0):
    torch.manual_seed(seed)
    return TinyAE()


SCHEDULE = [0, 1, 2, 4, 8, 12]


def test_monitor_equals_separate_pieces(tmp_path):
    """The plain loop with Monitor records the same run as the documented separate pieces."""
    test = _data(40, seed=5)
    panel = test[select_panel(len(test), 3)]

    # today's pieces, in the correct order (checkpoint 0 before the first update)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tracker = ParamTimeTracker(model).attach(opt)
    probe = BandProbe(torch.from_numpy(panel))
    rec = RunRecorder(tmp_path / "pieces.nc", name="r")
    state = {"step": 0}

    def pieces_checkpoint():
        s, arc = tracker.checkpoint()
        r = probe(model)
        rec.record(step=state["step"], band_loss=r.band_loss, param_time=s, arc_length=arc, mse=r.mse)

    pieces_checkpoint()

    def after():
        state["step"] += 1
        if state["step"] in SCHEDULE:
            pieces_checkpoint()

    _train(model, opt, 12, after)
    a = rec.dataset()

    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = Monitor(model, panel=panel, path=tmp_path / "monitor.nc", schedule=SCHEDULE, name="r")
    _train(model, opt, 12, monitor.step)
    b = monitor.close()
    assert b.step.values.tolist() == SCHEDULE
    for v in ("band_loss", "param_time", "arc_length", "mse"):
        np.testing.assert_allclose(b[v].values, a[v].values, rtol=1e-12, atol=0, err_msg=v)
    on_disk = xr.open_dataset(tmp_path / "monitor.nc").load()
    np.testing.assert_allclose(on_disk.param_time.values, b.param_time.values)
    assert float(b.param_time[-1]) > 0 and (b.param_time <= b.arc_length + 1e-9).all()


# ----------------------------------------------------------------------------------- the traps
def test_trap_tracker_before_double_follows_the_parameters():
    """A tracker made before ``model.double()`` used to report 0 forever; it now follows the new
    storage and equals a tracker made after the move."""
    before = _model()
    tr_before = ParamTimeTracker(before)
    before.double()  # new storage behind the same Parameter objects
    after = _model().double()
    tr_after = ParamTimeTracker(after)
    res = []
    for model, tr in ((before, tr_before), (after, tr_after)):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        tr.checkpoint()
        _train(model, opt, 5, tr.step)
        res.append(tr.checkpoint())
    assert res[0][0] > 0 and res[0][1] > 0
    np.testing.assert_allclose(res[0], res[1], rtol=1e-12)
    assert tr_before._prev[0].dtype == torch.float64


def test_trap_tracker_follows_data_reassignment_mid_run():
    w = torch.nn.Parameter(torch.zeros(2))
    tr = ParamTimeTracker([w])
    tr.checkpoint()
    w.data = torch.tensor([3.0, 4.0], dtype=torch.float64)  # new storage, new dtype, values moved
    tr.step()
    assert tr.checkpoint() == pytest.approx((5.0, 5.0))


def test_trap_new_parameter_objects_reread_or_raise():
    """With torch's overwrite-on-conversion mode ``model.to`` makes new Parameter objects: a
    tracker made from the module re-reads them before any step, and raises (with the fix) after."""
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        model = _model()
        tr = ParamTimeTracker(model)
        model.double()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        tr.checkpoint()
        _train(model, opt, 3, tr.step)
        pt, arc = tr.checkpoint()
        assert pt > 0 and arc > 0 and all(a is b for a, b in zip(tr.params, model.parameters()))

        model2 = _model()
        tr2 = ParamTimeTracker(model2)
        opt2 = torch.optim.SGD(model2.parameters(), lr=0.5)
        _train(model2, opt2, 2, tr2.step)
        model2.double()
        with pytest.raises(RuntimeError, match="Create the tracker"):
            tr2.checkpoint()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)


def test_trap_monitor_step_zero_is_the_initial_weights(tmp_path):
    """The row labelled step 0 holds the weights before any update (recorded at construction)."""
    panel = _data(16, seed=7)
    model = _model()
    initial = BandProbe(panel)(copy.deepcopy(model))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = Monitor(model, panel=panel, path=tmp_path / "r.nc", schedule=[1, 3])
    _train(model, opt, 3, monitor.step)
    ds = monitor.close()
    assert ds.step.values.tolist() == [0, 1, 3]
    np.testing.assert_array_equal(ds.band_loss.values[0], initial.band_loss)
    assert not np.allclose(ds.band_loss.values[1], initial.band_loss)
    assert float(ds.param_time[0]) == 0.0 and float(ds.arc_length[0]) == 0.0


def test_trap_first_checkpoint_after_steps_chord_and_arc_start_together():
    """A first checkpoint() after N steps measures the chord from construction, where the arc
    started: on a straight path chord == arc, and always chord <= arc."""
    w = torch.nn.Parameter(torch.zeros(3))
    tr = ParamTimeTracker([w])
    for _ in range(4):
        with torch.no_grad():
            w += torch.tensor([1.0, 2.0, 2.0])  # straight line, 3 per step
        tr.step()
    assert tr.checkpoint() == pytest.approx((12.0, 12.0))
    # and a first checkpoint before any step starts both there (weights loaded after construction)
    w2 = torch.nn.Parameter(torch.zeros(2))
    tr2 = ParamTimeTracker([w2])
    with torch.no_grad():
        w2.copy_(torch.tensor([30.0, 40.0]))  # e.g. load_state_dict after building the tracker
    assert tr2.checkpoint() == (0.0, 0.0)
    with torch.no_grad():
        w2 += torch.tensor([3.0, 4.0])
    tr2.step()
    assert tr2.checkpoint() == pytest.approx((5.0, 5.0))


def test_trap_select_panel_small_test_set():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default size must not warn
        idx = select_panel(161, 45)
    assert idx.shape == (161,) and np.unique(idx).size == 161
    np.testing.assert_array_equal(select_panel(20_000, 45), select_panel(20_000, 45, 256))  # A.8 unchanged
    with pytest.warns(UserWarning, match="asked for, but the test set has only 161"):
        assert select_panel(161, 45, 256).shape == (161,)


def test_trap_band_probe_accepts_numpy():
    panel = _data(12, seed=3)
    model = _model()
    a = BandProbe(panel)(model)
    b = BandProbe(torch.from_numpy(panel))(model)
    np.testing.assert_array_equal(a.band_loss, b.band_loss)
    f = BandProbe(panel.astype(np.float32) / 255)(model)
    np.testing.assert_allclose(f.band_loss, a.band_loss, rtol=1e-6)
    with pytest.raises(ValueError, match="channel axis"):
        BandProbe(panel[:, 0])
    with pytest.raises(TypeError, match="uint8 or floating"):
        BandProbe(panel.astype(np.int64))


# ----------------------------------------------------------------------- precision and dtypes
def test_monitor_float64_model_and_bf16_autocast(tmp_path):
    panel = _data(16, seed=2)
    m64 = _model().double()
    opt = torch.optim.SGD(m64.parameters(), lr=0.5)
    mon = Monitor(m64, panel=panel, path=tmp_path / "a.nc", schedule=[2, 4])
    _train(m64, opt, 4, mon.step)
    a = mon.close()
    assert mon.probe.band_dtype == torch.float64 and a.param_time.values[-1] > 0

    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    mon = Monitor(m, panel=panel, path=tmp_path / "b.nc", schedule=[2, 4], probe_autocast=torch.bfloat16)
    _train(m, opt, 4, mon.step, autocast=torch.bfloat16)
    b = mon.close()
    assert b.band_loss.dtype == np.float64 and np.isfinite(b.band_loss.values).all()
    np.testing.assert_allclose(b.band_loss.sum("band"), b.mse, rtol=1e-12)  # bands sum to the MSE
    # a bfloat16 model: the probe casts the panel to the model's dtype, losses in float64
    mb = _model().to(torch.bfloat16)
    r = BandProbe(panel)(mb)
    ref = BandProbe(panel)(_model())
    np.testing.assert_allclose(r.band_loss, ref.band_loss, rtol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_monitor_cuda_no_host_sync_between_checkpoints(tmp_path):
    model = _model().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mon = Monitor(model, panel=_data(16), path=tmp_path / "c.nc", schedule=[10])
    x = torch.rand(16, 3, 8, 8, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(9):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), x).backward()
            opt.step()
            mon.step()  # no checkpoint: must not synchronise
    finally:
        torch.cuda.set_sync_debug_mode("default")
    mon.step()
    assert mon.close().param_time.values[-1] > 0


# ----------------------------------------------------------------------------- schedule, sinks
def test_default_schedule_open_geometric_and_close_records_last_step(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    mon = Monitor(model, panel=_data(8), path=tmp_path / "r.nc", log=lambda m, s: seen.append((s, m)))
    _train(model, opt, 25, mon.step)
    ds = mon.close()
    sched = open_geometric_schedule()
    expected = [int(s) for s in sched if s <= 25] + [25]
    assert ds.step.values.tolist() == sorted(set(expected))
    assert [s for s, _ in seen] == ds.step.values.tolist()
    # the compact default: band losses, mse, parameter time (arc length only with metrics="all")
    assert set(seen[-1][1]) == {"bandscope/param_time", "bandscope/mse",
                                "bandscope/band_1", "bandscope/band_2", "bandscope/band_4", "bandscope/band_8"}
    t = Monitor(_model(), total_steps=1000, n_points=5)
    assert t.schedule.tolist() == [0, 1, 10, 100, 1000]


def test_monitor_without_panel_and_errors(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = Monitor(model, schedule=[3])
    _train(model, opt, 3, mon.step)
    assert mon.metrics["bandscope/param_time"] > 0 and "bandscope/mse" not in mon.metrics
    assert mon.close() is None
    with pytest.raises(ValueError, match="lnp_batch"):
        Monitor(model, lnp=torch.nn.MSELoss(), total_steps=10)
    with pytest.raises(RuntimeError, match="after close"):
        mon.step()


def test_progress_bar_postfix(tmp_path):
    tqdm = pytest.importorskip("tqdm")
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with open(tmp_path / "bar.txt", "w") as f:
        bar = tqdm.tqdm(total=6, disable=False, file=f)
        mon = Monitor(model, panel=_data(8), path=tmp_path / "r.nc", schedule=[3, 6], progress=bar)
        _train(model, opt, 6, lambda: (mon.step(), bar.update(1)))
        mon.close()
        fields = dict(kv.split("=") for kv in bar.postfix.replace(" ", "").split(","))
        bar.close()
    assert fields["s"] == f"{mon.metrics['bandscope/param_time']:.4g}"
    assert fields["mse"] == f"{mon.metrics['bandscope/mse']:.5f}"


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = Monitor(model, panel=_data(8), path=tmp_path / "r.nc", schedule=[3, 6], tensorboard=tmp_path / "tb")
    _train(model, opt, 6, mon.step)
    mon.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    pts = acc.Scalars("bandscope/param_time")
    assert [p.step for p in pts] == [0, 3, 6]
    np.testing.assert_allclose([p.value for p in pts], mon.dataset().param_time.values, rtol=1e-6)
    assert "bandscope/band_4" in acc.Tags()["scalars"]


def test_progress_postfix_and_forecast_metrics():
    assert progress_postfix({"bandscope/param_time": 2.0, "bandscope/lnp_spectral_position": 0.25}) == {
        "s": "2", "P": "0.250"}
    ds = xr.Dataset({"floor": ("band", [0.1, np.nan]), "total_floor": 0.3, "label": ((), "x")},
                    coords={"band": [1, 2]})
    assert forecast_metrics(ds) == {"bandscope/forecast_floor/1": 0.1, "bandscope/forecast_total_floor": 0.3}


def test_monitor_logs_forecast_when_available(tmp_path, monkeypatch):
    """The monitor calls bandscope.forecast(run) at checkpoints once enough are recorded."""
    import bandscope

    calls = []

    def fake_forecast(run):
        calls.append(run.sizes["checkpoint"])
        return xr.Dataset({"floor": ("band", run.band_loss.values[-1] * 0.5)},
                          coords={"band": run.band.values})

    monkeypatch.setattr(bandscope, "forecast", fake_forecast, raising=False)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = Monitor(model, panel=_data(8), path=tmp_path / "r.nc", schedule=range(7), forecast_min_checkpoints=4,
                  forecast=True, forecast_background=False, forecast_budget=1.0)
    _train(model, opt, 6, mon.step)
    assert calls == [4, 5, 6, 7]
    assert any(k.startswith("bandscope/forecast_floor/") for k in mon.metrics)

    def broken(run):
        raise FloatingPointError("no fit")

    monkeypatch.setattr(bandscope, "forecast", broken, raising=False)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="no fit"):  # said once; training goes on
        mon = Monitor(model, panel=_data(8), schedule=range(3), forecast_min_checkpoints=1, path=tmp_path / "b.nc",
                      forecast=True, forecast_background=False, forecast_budget=1.0)
    _train(model, opt, 1, mon.step)
    assert mon._forecast_failed and len(mon.recorder) == 2


def test_monitor_lnp_merged_into_run(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.from_numpy(_data(16, seed=9)).float() / 255
    mon = Monitor(model, panel=_data(8), path=tmp_path / "r.nc", schedule=[2, 6], total_steps=6,
                  lnp=torch.nn.MSELoss(), lnp_batch=(x, x),
                  lnp_options={"n_windows": 2, "steps_per_window": 1})
    _train(model, opt, 6, mon.step)
    ds = mon.close()
    assert ds.lnp_step.values.tolist() == mon.lnp.steps.tolist() and ds.lnp_step.size == 2
    assert np.isfinite(ds.lnp_spectral_position.values).all()
    assert "bandscope/lnp_spectral_position" in mon.metrics
    on_disk = xr.open_dataset(tmp_path / "r.nc")
    assert "lnp_spectral_position" in on_disk and on_disk.sizes["checkpoint"] == 3


def test_monitor_logs_the_real_forecast(tmp_path):
    """With bandscope.forecast installed, forecasts of floor and reach reach the log."""
    import bandscope

    if getattr(bandscope, "forecast", None) is None:
        pytest.skip("bandscope.forecast not available")
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    seen = []
    mon = Monitor(model, panel=_data(16), path=tmp_path / "r.nc", schedule=range(0, 41, 2),
                  log=lambda m, s: seen.append(m), forecast=True, forecast_budget=1.0)
    _train(model, opt, 40, mon.step)
    mon._forecaster.wait(timeout=60)  # the background forecast of the last checkpoint
    mon.close()
    keys = set().union(*seen)
    assert any(k.startswith("bandscope/forecast_floor/") for k in keys), sorted(keys)
    assert all(k.split("/")[1].split("_")[0] in ("forecast", "band", "mse", "param", "arc") for k in keys)


# ------------------------------------------------------------------------------ DDP (2 x gloo)
def _lnp_shard(rank):
    return torch.from_numpy(_data(4, seed=50 + rank)).float() / 255


def _ddp_body(rank, world, out_dir):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = DDP(TinyAE())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    lnp_x = _lnp_shard(rank)  # this rank's shard of the global LNP batch
    mon = Monitor(model, panel=_data(16, seed=4), path=f"{out_dir}/run.nc", schedule=[2, 5, 8],
                  lnp=torch.nn.MSELoss(), lnp_batch=(lnp_x, lnp_x),
                  lnp_options={"schedule": [3, 6], "network_scale": "exact"})
    flat = lambda: torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])  # noqa: E731
    path = [flat()]
    g = torch.Generator().manual_seed(100 + rank)  # each rank trains on its own batches
    x_all = torch.from_numpy(_data(64, seed=rank)).float() / 255
    for _ in range(8):
        x = x_all[torch.randint(0, 64, (8,), generator=g)]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), x).backward()
        opt.step()
        mon.step()
        path.append(flat())
    mon.close()
    np.save(f"{out_dir}/path{rank}.npy", torch.stack(path).numpy())
    np.save(f"{out_dir}/hist{rank}.npy", np.array([[h["step"], h["bandscope/param_time"],
                                                    h["bandscope/arc_length"]] for h in mon.history]))
    np.save(f"{out_dir}/writer{rank}.npy", np.array([mon.recorder is not None, "bandscope/mse" in mon.metrics]))


@pytest.mark.slow
def test_ddp_two_process_gloo_one_run_correct_param_time(tmp_path):
    """Under DDP only rank 0 writes; the run's parameter time equals the float64 path of rank 0's
    own (replicated) weights, and both ranks' trackers agree."""
    from gloo_workers import run_gloo

    run_gloo(_ddp_body, 2, str(tmp_path))
    ds = xr.open_dataset(tmp_path / "run.nc").load()
    assert ds.step.values.tolist() == [0, 2, 5, 8]
    assert sorted(p.name for p in tmp_path.glob("*.nc")) == ["run.nc"]
    assert np.load(tmp_path / "writer0.npy").tolist() == [True, True]
    assert np.load(tmp_path / "writer1.npy").tolist() == [False, False]  # rank 1: no file, no probe
    paths = [np.load(tmp_path / f"path{r}.npy") for r in range(2)]
    np.testing.assert_allclose(paths[0], paths[1], rtol=1e-6)  # replicated weights
    steps = np.linalg.norm(np.diff(paths[0], axis=0), axis=1)
    idx = [0, 2, 5, 8]
    arc = np.concatenate([[0], np.cumsum(steps)])[idx]
    chord = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(paths[0][idx], axis=0), axis=1))])
    np.testing.assert_allclose(ds.arc_length.values, arc, rtol=1e-5)
    np.testing.assert_allclose(ds.param_time.values, chord, rtol=1e-5)
    hist = [np.load(tmp_path / f"hist{r}.npy") for r in range(2)]
    np.testing.assert_allclose(hist[0], hist[1], rtol=1e-6)
    assert chord[-1] > 0
    # LNP: every rank measured its shard; the run holds the statistics of the global batch, i.e. of
    # one process on the concatenated batch at the same weights (theta_k, right after update k)
    assert ds.lnp_step.values.tolist() == [3, 6]
    x = torch.cat([_lnp_shard(0), _lnp_shard(1)])
    for i, k in enumerate([3, 6]):
        model = TinyAE()
        torch.nn.utils.vector_to_parameters(torch.from_numpy(paths[0][k]).float(), model.parameters())
        ref = measure_lnp(model, torch.nn.MSELoss(), (x, x), network_scale="exact")
        for v in ("loss", "loss_scale", "network_scale", "grad_norm_sq", "spectral_position"):
            np.testing.assert_allclose(float(ds[f"lnp_{v}"][i]), float(ref[v]), rtol=1e-4, err_msg=v)
