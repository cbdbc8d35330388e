"""Live forecast options: one typed object for the Monitor and both callbacks; the legacy keywords
are converted in one place and give the same forecasts."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

from bandscope.errors import BandscopeInputError  # noqa: E402
from bandscope.keysearch.forecasting import ForecastOptions  # noqa: E402
from bandscope.torch import LiveForecastOptions, Monitor  # noqa: E402
from bandscope.torch.options import callback_forecast_options, live_forecast_options  # noqa: E402
from torch_models import TinyAE, lightning_autoencoder  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]


def _panel(n=8, seed=0):
    return (np.random.default_rng(seed).random((n, 3, 8, 8)) * 255).astype(np.uint8)


def _record(tmp_path, name, steps, **forecast_kw):
    """Train a seeded TinyAE for ``steps`` updates under a Monitor; return its checkpoint metrics."""
    torch.manual_seed(0)
    model = TinyAE()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    mon = Monitor(model, panel=_panel(), path=tmp_path / f"{name}.nc", schedule=range(steps + 1), **forecast_kw)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 8, 8, generator=g)
    for t in range(steps):
        b = x[(t * 16) % 64:(t * 16) % 64 + 16]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(b), b).backward()
        opt.step()
        mon.step()
    mon.close(final_checkpoint=False)
    return mon, [{k: v for k, v in h.items() if not k.endswith("_seconds") and "_seconds/" not in k}
                 for h in mon.history]  # seconds of wall time differ from run to run


def test_legacy_keywords_build_the_typed_options():
    legacy = live_forecast_options(True, "Monitor", forecast_min_checkpoints=4, forecast_budget=0.5,
                                   forecast_background=False)
    assert legacy == LiveForecastOptions(min_checkpoints=4, budget=0.5, synchronous=True)
    assert live_forecast_options(True, "Monitor") == LiveForecastOptions()
    assert live_forecast_options(False, "Monitor", forecast_budget=0.5) is None  # off, as before
    assert live_forecast_options(None, "Monitor") is None
    typed = LiveForecastOptions(budget=0.1)
    assert live_forecast_options(typed, "Monitor") is typed
    # the defaults spelled out beside the object are not "given"
    assert live_forecast_options(typed, "Monitor", forecast_min_checkpoints=8, forecast_budget=0.02,
                                 forecast_background=True) is typed
    core = ForecastOptions(level=0.05)
    assert live_forecast_options(core, "Monitor", forecast_budget=0.3) == LiveForecastOptions(budget=0.3,
                                                                                              options=core)


@pytest.mark.parametrize("call, match", [
    (lambda: live_forecast_options(LiveForecastOptions(), "Monitor", forecast_budget=0.5), "both set"),
    (lambda: live_forecast_options("yes", "Monitor"), "forecast = 'yes'"),
    (lambda: live_forecast_options(True, "Monitor", forecast_background="no"), "forecast_background"),
    (lambda: live_forecast_options(True, "Monitor", forecast_budget=0.0), "budget = 0.0"),
    (lambda: LiveForecastOptions(min_checkpoints=0), "min_checkpoints = 0"),
    (lambda: LiveForecastOptions(min_checkpoints=2.5), "min_checkpoints = 2.5"),
    (lambda: LiveForecastOptions(synchronous=1), "synchronous = 1"),
    (lambda: LiveForecastOptions(nice=-1), "nice = -1"),
    (lambda: LiveForecastOptions(options={"level": 0.05}), "not a ForecastOptions"),
])
def test_bad_forecast_options_are_refused_with_the_value(call, match):
    with pytest.raises(BandscopeInputError, match=match):
        call()


def test_monitor_typed_and_legacy_forecasts_are_identical(tmp_path, monkeypatch):
    """The same training under a Monitor given the legacy keywords, the typed object, or a core
    ForecastOptions logs the same metrics at every checkpoint, and bandscope.forecast receives
    the method options and calibration the object carries."""
    import bandscope

    calls = []

    def fake_forecast(run, options=None, calibration=None):
        calls.append((run.sizes["checkpoint"], options, calibration))
        level = 0.01 if options is None else options.level
        return xr.Dataset({"floor": ("band", run.band_loss.values[-1] * level),
                           "total_floor": float(run.band_loss.values[-1].sum())}, coords={"band": run.band.values})

    monkeypatch.setattr(bandscope, "forecast", fake_forecast, raising=False)
    mon_a, legacy = _record(tmp_path, "legacy", 6, forecast=True, forecast_min_checkpoints=4,
                            forecast_budget=1.0, forecast_background=False)
    calls_legacy, calls[:] = list(calls), []
    mon_b, typed = _record(tmp_path, "typed", 6, forecast=LiveForecastOptions(min_checkpoints=4, budget=1.0,
                                                                              synchronous=True))
    assert mon_a.forecast_options == mon_b.forecast_options
    assert [c[0] for c in calls_legacy] == [c[0] for c in calls] == [4, 5, 6, 7]
    assert typed == legacy and any("bandscope/forecast_floor/1" in h for h in typed)
    calls[:] = []
    core = ForecastOptions(level=0.5)
    mon_c, with_core = _record(tmp_path, "core", 6, forecast=LiveForecastOptions(
        min_checkpoints=4, budget=1.0, synchronous=True, options=core, calibration=False))
    assert calls and all(c[1] is core and c[2] is False for c in calls)
    assert [h["bandscope/forecast_floor/1"] for h in with_core if "bandscope/forecast_floor/1" in h] == pytest.approx(
        [50 * h["bandscope/forecast_floor/1"] for h in legacy if "bandscope/forecast_floor/1" in h], rel=1e-12)


def test_monitor_typed_and_legacy_real_forecasts_are_identical(tmp_path):
    """With the real bandscope.forecast, on the training thread: the same numbers either way."""
    _, legacy = _record(tmp_path, "legacy", 9, forecast=True, forecast_background=False, forecast_budget=1.0)
    _, typed = _record(tmp_path, "typed", 9, forecast=LiveForecastOptions(budget=1.0, synchronous=True))
    assert any(k.startswith("bandscope/forecast_floor") for h in typed for k in h)
    assert typed == legacy


def test_the_forecast_function_is_looked_up_on_the_worker_thread(tmp_path, monkeypatch):
    """bandscope.forecast (whose first import costs about 0.7 s of CPU) is resolved by the
    background worker, never on the training thread."""
    import threading

    import bandscope

    if "forecast" in vars(bandscope):  # else resolved by the module's __getattr__
        monkeypatch.delattr(bandscope, "forecast")
    lazy = bandscope.__getattr__
    threads = []

    def spy(name):
        if name == "forecast":
            threads.append(threading.current_thread().name)
            return lambda run: xr.Dataset({"floor": ("band", run.band_loss.values[-1])},
                                          coords={"band": run.band.values})
        return lazy(name)

    monkeypatch.setattr(bandscope, "__getattr__", spy)
    torch.manual_seed(0)
    model = TinyAE()
    mon = Monitor(model, panel=_panel(), path=tmp_path / "r.nc", schedule=range(5),
                  forecast=LiveForecastOptions(min_checkpoints=2, budget=1.0))
    for _ in range(4):
        mon.step()
        mon._forecaster.wait(timeout=30)
    mon.close()
    assert threads and all(t.startswith("bandscope-forecast") for t in threads), threads
    assert any(k.startswith("bandscope/forecast_floor/") for h in mon.history for k in h)


def test_callback_forecast_options_take_the_legacy_keywords_out():
    opts = {"forecast_min_checkpoints": 3, "forecast_background": False, "schedule": [4]}
    assert callback_forecast_options(True, opts, "cb") == LiveForecastOptions(min_checkpoints=3, synchronous=True)
    assert opts == {"schedule": [4]}
    with pytest.raises(BandscopeInputError, match="both set"):
        callback_forecast_options(LiveForecastOptions(), {"forecast_budget": 0.5}, "cb")


def test_lightning_callback_hands_the_monitor_one_typed_object(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from bandscope.torch.lightning import BandscopeCallback

    typed = LiveForecastOptions(min_checkpoints=3, budget=1.0)
    legacy = BandscopeCallback(panel=_panel(), path=tmp_path / "a.nc", forecast=True, forecast_min_checkpoints=3,
                               forecast_budget=1.0)
    assert legacy.forecast_options == typed and not any(k.startswith("forecast") for k in legacy.options)
    with pytest.raises(BandscopeInputError, match="both set"):
        BandscopeCallback(forecast=typed, forecast_budget=0.5)

    cb = BandscopeCallback(panel=_panel(), path=tmp_path / "b.nc", forecast=typed, schedule=[1, 2])
    data = torch.utils.data.TensorDataset(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, callbacks=[cb],
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(lightning_autoencoder(TinyAE), torch.utils.data.DataLoader(data, batch_size=8))
    assert cb.monitor.forecast_options is typed


def test_hf_callback_hands_the_monitor_one_typed_object(tmp_path):
    transformers = pytest.importorskip("transformers")
    from bandscope.torch.hf import BandscopeCallback

    legacy = BandscopeCallback(forecast=True, forecast_background=False, forecast_min_checkpoints=2)
    assert legacy.forecast_options == LiveForecastOptions(min_checkpoints=2, synchronous=True)
    assert legacy.options == {}
    with pytest.raises(BandscopeInputError, match="both set"):
        BandscopeCallback(forecast=LiveForecastOptions(), forecast_min_checkpoints=2)
    core = ForecastOptions(confidence=0.9)
    cb = BandscopeCallback(schedule=[1, 2], forecast=core)
    assert cb.forecast_options == dataclasses.replace(LiveForecastOptions(), options=core)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x, labels=None):
            out = self.lin(x)
            return {"loss": torch.nn.functional.mse_loss(out, labels)}

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            x = torch.full((4,), float(i) / 16)
            return {"x": x, "labels": x}

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8,
                                          save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
    transformers.Trainer(model=Tiny(), args=args, train_dataset=Rows(), callbacks=[cb]).train()
    assert cb.monitor.forecast_options is cb.forecast_options
