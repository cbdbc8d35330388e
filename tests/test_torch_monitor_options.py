"""The Monitor's options as one typed object: its keywords, the callbacks' typed ``**monitor_options``,
:class:`MonitorOptions` and the table of legacy keywords name the same options with the same defaults,
the callbacks validate theirs once when built and hand the Monitor that object, never a ``**`` dict."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bandscope.errors import BandscopeInputError  # noqa: E402
from bandscope.torch import LiveForecastOptions, LNPHook, Monitor, ProbeOptions, RunIdentity, SinkOptions  # noqa: E402
from bandscope.torch.options import (  # noqa: E402
    FORECAST_KEYWORDS,
    LEGACY_KEYWORDS,
    MonitorKeywords,
    MonitorOptions,
    callback_defaults,
    legacy_default,
    live_forecast_options,
    monitor_options,
)
from torch_models import TinyAE  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]

#: Monitor parameters that are neither options nor callback keywords: what it monitors, the object itself,
#: the training loop's position (set by the callbacks) and the callbacks' own arguments
NOT_KEYWORDS = {"self", "model", "panel", "path", "options", "rank", "start_step"}
CALLBACK_OWN = {"log", "forecast"}


def _panel():
    return (np.random.default_rng(0).random((8, 3, 8, 8)) * 255).astype(np.uint8)


def test_the_monitors_keywords_are_the_callbacks_typed_keywords():
    """The callbacks' MonitorKeywords are the Monitor's keywords with the same types (the same annotation
    text), and MonitorOptions' fields with the legacy keywords of the table are all of them."""
    sig = inspect.signature(Monitor.__init__).parameters
    params = set(sig) - NOT_KEYWORDS
    hints = typing.get_type_hints(MonitorKeywords, localns={"LNPHook": LNPHook})  # every annotation resolves
    assert set(hints) == params - CALLBACK_OWN
    for k, ref in MonitorKeywords.__annotations__.items():
        assert getattr(ref, "__forward_arg__", ref) == sig[k].annotation, k
    fields = {f.name for f in dataclasses.fields(MonitorOptions)}
    assert fields.isdisjoint(LEGACY_KEYWORDS) and fields | set(LEGACY_KEYWORDS) == params


def test_the_monitors_defaults_are_the_options_defaults():
    """One source of each default: a legacy keyword's is its field's (LEGACY_KEYWORDS), any other the
    MonitorOptions field's (None where the field is an object built by default)."""
    sig = inspect.signature(Monitor.__init__).parameters
    for k in LEGACY_KEYWORDS:
        assert sig[k].default == legacy_default(k) and type(sig[k].default) is type(legacy_default(k)), k
    base = MonitorOptions()
    for f in dataclasses.fields(MonitorOptions):
        if f.name == "forecast":
            assert sig[f.name].default is False and base.forecast is None
        elif f.default is dataclasses.MISSING:  # identity, probe, sinks
            assert sig[f.name].default is None and getattr(base, f.name) == f.default_factory(), f.name
        else:
            assert sig[f.name].default == f.default, f.name
    assert FORECAST_KEYWORDS == {"forecast_min_checkpoints": LiveForecastOptions.min_checkpoints,
                                 "forecast_budget": LiveForecastOptions.budget,
                                 "forecast_background": not LiveForecastOptions.synchronous}
    assert all(p.default is None for n, p in inspect.signature(live_forecast_options).parameters.items()
               if n in FORECAST_KEYWORDS), "live_forecast_options repeats a default of the table"


def test_keywords_and_options_build_the_same_monitor(tmp_path):
    logged = []
    kw = Monitor(TinyAE(), panel=_panel(), path=tmp_path / "a.nc", schedule=[1], name="r", seed=3,
                 probe_batch_size=4, metrics="all", log=lambda m, s: logged.append(s), forecast=True,
                 forecast_budget=0.5)
    opts = monitor_options("Monitor", {"schedule": [1], "name": "r", "seed": 3, "probe_batch_size": 4,
                                       "metrics": "all", "forecast_budget": 0.5}, forecast=True, log=kw.log)
    assert kw.options == opts
    assert opts.identity == RunIdentity(name="r", seed=3) and opts.probe == ProbeOptions(batch_size=4)
    assert opts.sinks == SinkOptions(metrics="all", log=kw.log) and opts.forecast == LiveForecastOptions(budget=0.5)
    typed = Monitor(TinyAE(), panel=_panel(), path=tmp_path / "b.nc", options=opts)
    assert typed.options is opts and typed.forecast_options is opts.forecast
    for mon in (kw, typed):
        mon.close()
    assert logged == [0, 0]
    with pytest.raises(BandscopeInputError, match=r"the MonitorOptions and the keyword\(s\) \['arch', 'n_points'\]"):
        Monitor(TinyAE(), options=MonitorOptions(), n_points=9, arch="cnn")
    with pytest.raises(BandscopeInputError, match=r"keyword\(s\) \['forecast'\]"):
        Monitor(TinyAE(), options=MonitorOptions(), forecast=True)
    with pytest.raises(BandscopeInputError, match="not a MonitorOptions"):
        Monitor(TinyAE(), options={"schedule": [1]})
    with pytest.raises(BandscopeInputError, match=r"unknown Monitor keyword\(s\) \['shedule'\]"):
        monitor_options("cb", {"shedule": [1]})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(BandscopeInputError, match="identity = 'ae' is not a RunIdentity"):
        MonitorOptions(identity="ae")


def test_an_iterable_schedule_is_kept_whole_for_every_run():
    """A callback hands the same options to each fit(): a generator must not be used up by the first."""
    opts = MonitorOptions(schedule=(s for s in (0, 3, 6)))
    assert opts.schedule == (0, 3, 6) and opts.schedule == (0, 3, 6)
    assert callable(MonitorOptions(schedule=lambda s: s % 2 == 0).schedule)


def test_callback_defaults_keep_the_users_choices():
    log = lambda m, s: None  # noqa: E731
    out = callback_defaults(monitor_options("cb", {"name": "x"}), where="cb", source="cb", log=log, probe_output=len)
    assert out.identity == RunIdentity(name="x", source="cb") and out.sinks.log is log and out.probe.output is len
    mine = monitor_options("cb", {"source": "mine", "probe_output": abs, "metrics": "all"})
    out = callback_defaults(mine, where="cb", source="cb", log=log, probe_output=len)
    assert out.identity.source == "mine" and out.probe.output is abs and out.sinks == SinkOptions(metrics="all",
                                                                                                 log=log)
    with pytest.raises(BandscopeInputError, match=r"cb: sinks=SinkOptions\(log=...\).*BandscopeCallback\(log=...\)"):
        callback_defaults(MonitorOptions(sinks=SinkOptions(log=print)), where="cb", source="cb", log=log)


@pytest.mark.parametrize("framework", ["lightning", "hf"])
def test_callbacks_validate_their_options_when_built(framework):
    mod = pytest.importorskip(f"bandscope.torch.{framework}", exc_type=ImportError)
    cb = mod.BandscopeCallback(name="r", probe_batch_size=8, schedule=range(0, 7, 3), forecast_budget=0.5,
                               forecast=True)
    o = cb.monitor_options
    assert o.identity == RunIdentity(name="r", source=mod.SOURCE) and o.probe.batch_size == 8
    assert o.schedule == (0, 3, 6) and o.forecast == LiveForecastOptions(budget=0.5) is not None
    assert cb.forecast_options is o.forecast and o.sinks.log == cb._log
    assert cb.options == {"name": "r", "probe_batch_size": 8, "schedule": range(0, 7, 3)}
    with pytest.raises(BandscopeInputError, match="SinkOptions: metrics = 'most'"):
        mod.BandscopeCallback(metrics="most")
    with pytest.raises(BandscopeInputError, match=r"BandscopeCallback\(log=...\)"):
        mod.BandscopeCallback(sinks=SinkOptions(log=print))
    with pytest.raises(BandscopeInputError, match=r"unknown Monitor keyword\(s\) \['rank'\]"):
        mod.BandscopeCallback(rank=1)


@pytest.mark.parametrize("framework", ["lightning", "hf"])
def test_callbacks_hand_the_monitor_one_typed_object(framework):
    """The callback's ``**monitor_options`` is typed (``Unpack[MonitorKeywords]``), and no call in the module
    hands on a ``**`` dict but the HF wrapper of the Trainer's own ``train(*args, **kwargs)``."""
    mod = pytest.importorskip(f"bandscope.torch.{framework}", exc_type=ImportError)
    tree = ast.parse(Path(mod.__file__).read_text())
    init = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "BandscopeCallback")
    init = next(n for n in init.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert ast.unparse(init.args.kwarg.annotation) == "Unpack[MonitorKeywords]"
    spread = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)
              and any(k.arg is None for k in n.keywords)]
    assert spread == ([] if framework == "lightning" else ["train"]), spread
    monitors = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "Monitor"]
    assert monitors and all({k.arg for k in n.keywords} >= {"options"} for n in monitors)
