"""Typed options of the torch adapter: LNPOptions reaches the estimator under its own names, the
legacy keywords and the typed objects measure and record the same, no untyped ``**kw`` hand-off is
left, each bad value of ProbeOptions / RunIdentity / SinkOptions is refused naming it."""
import ast
import dataclasses
import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bandscope.torch.lnp as tlnp
import bandscope.torch.lnp.hook as hook_module
import bandscope.torch.monitor as monitor_module
from bandscope.errors import BandscopeInputError
from bandscope.lnp.options import ESTIMATOR_NAMES, LNPOptions
from bandscope.torch import LNPHook, Monitor, measure_lnp
from bandscope.torch.lnp.estimators import ESTIMATOR_TABLE, Context
from bandscope.torch.options import ProbeOptions, RunIdentity, SinkOptions, callback_monitor_options

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# statistics compared between the two spellings: sums of squares in float64 of the same tensors;
# the same route in the same process, so they agree to a few ulps of the sum (rtol 1e-12 leaves
# room for a reordered reduction, far below any statistical difference)
RTOL = 1e-12
STATS = ("loss", "loss_scale", "network_scale", "network_scale_se", "grad_norm_sq", "spectral_position",
         "grad_dot", "spectral_position_cross", "loss_scale_norm", "network_scale_norm")


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)


def _same(a, b):
    for v in STATS:
        if v in a or v in b:
            np.testing.assert_allclose(float(a[v]), float(b[v]), rtol=RTOL, err_msg=v)
    for k in ("estimator", "backend", "n_probes", "n_units", "exact_output_layer"):
        assert a.attrs[k] == b.attrs[k], k


# ---------------------------------------------------------------------------------------------
# the estimator is the same whichever spelling
# ---------------------------------------------------------------------------------------------
SETTINGS = [
    dict(estimator="exact", backend="hooks"),
    dict(estimator="exact", backend="vmap", chunk_size=3),
    dict(estimator="hutchinson", n_probes=3, backend="hooks", exact_output_layer=False),
    dict(estimator="hutchinson", n_probes=2, n_units="samples", n_units_b=4),
    dict(estimator="batch-hutchinson", n_probes=4, backend="auto"),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_legacy_keywords_and_lnp_options_measure_the_same(setting):
    a, b = _batch(8, 1), _batch(6, 2)
    typed = measure_lnp(_net(), nn.MSELoss(), a, b, options=LNPOptions(**setting), seed=5)
    legacy = measure_lnp(_net(), nn.MSELoss(), a, b, seed=5, **setting)
    _same(typed, legacy)
    old = dict(setting)
    old["network_scale"] = old.pop("estimator")
    with pytest.warns(DeprecationWarning, match=f"pass estimator='{setting['estimator']}'"):
        deprecated = measure_lnp(_net(), nn.MSELoss(), a, b, seed=5, **old)
    _same(typed, deprecated)
    assert typed.attrs["estimator"] == setting["estimator"]


def test_hook_with_options_equals_hook_with_keywords():
    data = [_batch(4, s) for s in range(6)]
    val = _batch(3, 9)
    out = []
    for make in (lambda m: LNPHook(m, nn.MSELoss(), schedule=[1, 4], eval_batch=val,
                                   options=LNPOptions(estimator="hutchinson", n_probes=3, bands=False)),
                 lambda m: LNPHook(m, nn.MSELoss(), schedule=[1, 4], eval_batch=val, estimator="hutchinson",
                                   n_probes=3)):
        model = _net()
        hook = make(model)
        for t, batch in enumerate(data):
            hook(t, batch)
        out.append(hook.dataset())
    assert out[0].lnp_step.values.tolist() == [1, 4]
    for v in ("lnp_network_scale", "lnp_spectral_position", "lnp_grad_dot"):
        np.testing.assert_allclose(out[0][v].values, out[1][v].values, rtol=RTOL, err_msg=v)
    with pytest.warns(DeprecationWarning, match="network_scale= .* is deprecated"):
        old = LNPHook(_net(), nn.MSELoss(), schedule=[0], network_scale="exact")
    assert old.options == LNPOptions(estimator="exact")


def test_monitor_lnp_options_typed_and_dict_record_the_same(tmp_path):
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    batch = (x, x[:, :3])
    runs = []
    for i, opts in enumerate(({"schedule": [0, 2], "network_scale": "exact", "n_units": "samples"},
                              {"schedule": [0, 2], "options": LNPOptions(estimator="exact", n_units="samples")})):
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            mon = Monitor(model, path=tmp_path / f"r{i}.nc", schedule=[2], lnp=nn.MSELoss(), lnp_batch=batch,
                          lnp_options=opts)
        assert mon.lnp.options == LNPOptions(estimator="exact", n_units="samples")
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), x[:, :3]).backward()
            opt.step()
            mon.step()
        runs.append(mon.close())
    for v in ("lnp_network_scale", "lnp_spectral_position", "lnp_loss_scale_norm", "param_time"):
        np.testing.assert_allclose(runs[0][v].values, runs[1][v].values, rtol=RTOL, err_msg=v)
    # LNPOptions alone: the log windows of total_steps
    mon = Monitor(_net(), total_steps=50, lnp=nn.MSELoss(), lnp_batch=batch,
                  lnp_options=LNPOptions(estimator="exact"))
    assert mon.lnp.options.estimator == "exact" and mon.lnp.steps[0] == 0
    mon.close()
    with pytest.raises(BandscopeInputError, match=r"unknown key\(s\) \['windows'\]"):
        Monitor(_net(), total_steps=50, lnp=nn.MSELoss(), lnp_batch=batch, lnp_options={"windows": 3})
    with pytest.raises(BandscopeInputError, match=r"keyword\(s\) \['n_probes'\]"):
        Monitor(_net(), total_steps=50, lnp=nn.MSELoss(), lnp_batch=batch,
                lnp_options={"options": LNPOptions(), "n_probes": 3})


def test_hook_settings_defaults_are_the_hooks():
    """The monitor's reading of a legacy ``lnp_options`` dict falls back on LNPHook's own defaults."""
    sig = inspect.signature(LNPHook.__init__).parameters
    base = monitor_module._HookSettings()
    for name in ("total_steps", "n_windows", "steps_per_window", "first_step", "schedule", "eval_batch", "seed",
                 "path", "recorder"):
        assert getattr(base, name) == sig[name].default, name
    assert set(monitor_module._HOOK_KEYS) - {"options"} <= set(sig)


# ---------------------------------------------------------------------------------------------
# no option renamed on the way, no untyped hand-off
# ---------------------------------------------------------------------------------------------
def test_every_option_reaches_the_estimator_under_its_own_name(monkeypatch):
    """Spy on the estimator: the Context it receives carries each LNPOptions field it shares a name
    with, with the value given; the rest are read as ``options.<field>`` by the measurement."""
    seen = []
    real = ESTIMATOR_TABLE["hutchinson"]
    monkeypatch.setitem(ESTIMATOR_TABLE, "hutchinson", lambda ctx: (seen.append(ctx), real(ctx))[1])
    opts = LNPOptions(estimator="hutchinson", n_probes=3, backend="vmap", chunk_size=2, exact_output_layer=False)
    measure_lnp(_net(), nn.MSELoss(), _batch(5, 1), options=opts, seed=0)
    shared = {f.name for f in dataclasses.fields(Context)} & {f.name for f in dataclasses.fields(LNPOptions)}
    assert shared == {"n_probes", "backend", "chunk_size", "exact_output_layer"}
    assert seen and all(getattr(seen[0], name) == getattr(opts, name) for name in shared)
    src = inspect.getsource(tlnp)
    for f in dataclasses.fields(LNPOptions):
        assert f"options.{f.name}" in src, f"LNPOptions.{f.name} is not read by its own name"
    for fn in (tlnp._one_batch, tlnp._measure_batch, tlnp._measure):
        params = inspect.signature(fn).parameters
        assert params["options"].annotation == "LNPOptions", fn.__name__


def test_estimator_names_are_the_estimator_table():
    assert tuple(ESTIMATOR_TABLE) == ESTIMATOR_NAMES == tlnp.ESTIMATORS


#: known exceptions, not options: the result Dataset's builder passes batch B's optional cross terms to
#: the public ``lnp_components`` as one dict (that function belongs to the results schema), and the
#: held-out loss calls the model on a dict batch as ``model(**batch)`` (the user's data)
ALLOWED = {"_dataset", "_heldout_loss"}


@pytest.mark.parametrize("module", [tlnp, hook_module, monitor_module])
def test_no_untyped_keyword_hand_off(module):
    """No ``f(**kw)`` call and no ``**kwargs`` parameter in the measurement, the hook and the monitor."""
    tree = ast.parse(Path(module.__file__).read_text())
    allowed = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in ALLOWED
               for n in ast.walk(f)}
    calls = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and id(node) not in allowed
             and any(k.arg is None for k in node.keywords)]
    var_kw = [node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              and node.args.kwarg is not None]
    assert calls == [] and var_kw == [], (calls, var_kw)


def test_signatures_are_annotated():
    for fn in (measure_lnp, tlnp._one_batch, tlnp._measure_batch, tlnp._measure, LNPHook.__init__,
               Monitor.__init__, Monitor._init, Monitor._make_lnp, monitor_module._hook_settings,
               callback_monitor_options):
        sig = inspect.signature(fn)
        missing = [n for n, p in sig.parameters.items() if n != "self" and p.annotation is inspect.Parameter.empty]
        assert not missing and sig.return_annotation is not inspect.Signature.empty, (fn.__qualname__, missing)


# ---------------------------------------------------------------------------------------------
# refusals in measure_lnp / LNPHook
# ---------------------------------------------------------------------------------------------
def test_options_and_keywords_together_are_refused():
    a = _batch(4, 1)
    with pytest.raises(BandscopeInputError, match=r"measure_lnp: the LNPOptions and the keyword\(s\) \['backend'\]"):
        measure_lnp(_net(), nn.MSELoss(), a, options=LNPOptions(), backend="vmap")
    with pytest.raises(BandscopeInputError, match="disagree"):
        measure_lnp(_net(), nn.MSELoss(), a, estimator="exact", network_scale="hutchinson")
    with pytest.raises(BandscopeInputError, match=r"LNPHook: the LNPOptions and the keyword\(s\) \['bands'\]"):
        LNPHook(_net(), nn.MSELoss(), schedule=[0], options=LNPOptions(), bands=True)
    with pytest.raises(BandscopeInputError, match="n_probes = 0"):
        LNPHook(_net(), nn.MSELoss(), schedule=[0], n_probes=0)
    with pytest.raises(BandscopeInputError, match="estimator = 'opacus'"):
        measure_lnp(_net(), nn.MSELoss(), a, estimator="opacus")


# ---------------------------------------------------------------------------------------------
# ProbeOptions, RunIdentity, SinkOptions
# ---------------------------------------------------------------------------------------------
BAD = [
    (ProbeOptions, "batch_size", 0), (ProbeOptions, "batch_size", 2.5), (ProbeOptions, "autocast", "bf16"),
    (ProbeOptions, "dtype", torch.int64), (ProbeOptions, "output", 3),
    (RunIdentity, "name", 5), (RunIdentity, "arch", None), (RunIdentity, "seed", 1.5), (RunIdentity, "seed", "45"),
    (RunIdentity, "seed", True),
    (RunIdentity, "source", b"x"), (RunIdentity, "extra_attrs", [("a", 1)]), (RunIdentity, "extra_attrs", {1: 2}),
    (SinkOptions, "metrics", "everything"), (SinkOptions, "tensorboard_images", -1),
    (SinkOptions, "tensorboard_images", 1.5), (SinkOptions, "progress", object()), (SinkOptions, "log", "wandb"),
    (SinkOptions, "tensorboard", 42),
]


@pytest.mark.parametrize("cls, name, value", BAD, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in BAD])
def test_each_bad_monitor_option_is_refused_naming_it(cls, name, value):
    with pytest.raises(BandscopeInputError) as err:
        cls(**{name: value})
    msg = str(err.value)
    assert msg.startswith(f"{cls.__name__}: {name} = {value!r}") and "pass" in msg


def test_monitor_legacy_keywords_and_typed_objects_record_the_same(tmp_path):
    panel = np.random.default_rng(0).random((6, 3, 4, 4), dtype=np.float32)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(48, 48), nn.Unflatten(1, (3, 4, 4)))

    logged = [[], []]
    legacy = Monitor(model(), panel=panel, path=tmp_path / "a.nc", schedule=[1], name="r", arch="mlp", seed=45,
                     extra_attrs={"lr": 0.1}, probe_batch_size=4, log=lambda m, s: logged[0].append(s),
                     metrics="all")
    typed = Monitor(model(), panel=panel, path=tmp_path / "b.nc", schedule=[1],
                    identity=RunIdentity(name="r", arch="mlp", seed=45, extra_attrs={"lr": 0.1}),
                    probe=ProbeOptions(batch_size=4), sinks=SinkOptions(log=lambda m, s: logged[1].append(s),
                                                                         metrics="all"))
    assert legacy.identity == typed.identity and legacy.probe_options == typed.probe_options
    assert legacy.probe.batch_size == typed.probe.batch_size == 4
    for mon in (legacy, typed):
        with torch.no_grad():
            for p in mon.model.parameters():
                p.add_(0.01)
        mon.step()
    dss = [m.close() for m in (legacy, typed)]
    assert logged[0] == logged[1] == [0, 1]
    for k in ("name", "arch", "seed", "source", "lr", "n_parameters"):
        assert dss[0].attrs[k] == dss[1].attrs[k], k
    np.testing.assert_allclose(dss[0].band_loss.values, dss[1].band_loss.values, rtol=RTOL)
    with pytest.raises(BandscopeInputError, match=r"Monitor: the RunIdentity and the keyword\(s\) \['seed'\]"):
        Monitor(model(), identity=RunIdentity(), seed=3)
    with pytest.raises(BandscopeInputError, match=r"Monitor: the ProbeOptions and the keyword\(s\) \['batch_size'\]"):
        Monitor(model(), probe=ProbeOptions(), probe_batch_size=8)
    with pytest.raises(BandscopeInputError, match="SinkOptions: metrics = 'most'"):
        Monitor(model(), metrics="most")


def test_callback_options_keep_the_callbacks_defaults_in_either_spelling():
    log = lambda m, s: None  # noqa: E731
    out = callback_monitor_options({"name": "x"}, source="cb", log=log, probe_output=len)
    assert out == {"name": "x", "source": "cb", "log": log, "probe_output": len}
    out = callback_monitor_options({"source": "mine"}, source="cb", log=log)
    assert out["source"] == "mine"
    out = callback_monitor_options({"identity": RunIdentity(name="x"), "sinks": SinkOptions(metrics="all"),
                                    "probe": ProbeOptions(batch_size=8)}, source="cb", log=log, probe_output=len)
    assert out["identity"] == RunIdentity(name="x", source="cb")
    assert out["sinks"] == SinkOptions(metrics="all", log=log) and "log" not in out
    assert out["probe"] == ProbeOptions(batch_size=8, output=len) and "probe_output" not in out
    mine = RunIdentity(source="mine")
    assert callback_monitor_options({"identity": mine}, source="cb", log=log)["identity"] is mine
    with pytest.raises(BandscopeInputError, match=r"BandscopeCallback\(log=...\)"):
        callback_monitor_options({"sinks": SinkOptions(log=print)}, source="cb", log=log)


def test_a_batch_is_measured_into_typed_statistics():
    """One batch's statistics are a BatchStatistics (fields, not dict keys), and the Dataset is built from them."""
    from bandscope.torch.lnp.results import BatchStatistics

    opts = LNPOptions(estimator="exact", backend="hooks", n_units="samples")
    a = _batch(6, 1)
    stats, used, reason = tlnp._measure_batch(_net(), nn.MSELoss(), a, "a", opts, gen=torch.Generator())
    assert isinstance(stats, BatchStatistics) and used == "hooks" and reason == ""
    assert stats.band_grad_dot is None and "band_grad_dot" not in stats and stats.n_units == 6
    with pytest.raises(KeyError):
        stats["band_loss_scale"]  # not measured
    ds = measure_lnp(_net(), nn.MSELoss(), a, options=opts, seed=0)
    for v in ("loss", "loss_scale", "network_scale", "grad_norm_sq"):
        np.testing.assert_allclose(float(ds[v]), getattr(stats, v), rtol=RTOL, err_msg=v)
    assert inspect.signature(tlnp._one_batch).return_annotation == "BatchStatistics"
