"""Real training jobs: the language-model recipes of docs/torch.md run as written and write a run
without a panel that ``bandscope.read_run`` reads; every logged metric is documented; the run
file's lock is released when a job fails; the LNP hook refuses fractional steps."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bandscope.errors import BandscopeInputError  # noqa: E402
from bandscope.io import read_run  # noqa: E402
from bandscope.torch import LNPHook, Monitor  # noqa: E402
from bandscope.torch.monitor import remaining_in_steps_and_time, tensorboard_layout  # noqa: E402
from bandscope.torch.reference.lm import LMConfig, TinyGPT  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]

DOC = Path(__file__).resolve().parents[1] / "docs" / "torch.md"
CFG = LMConfig(vocab_size=12, context=8, d_model=8, n_layers=1, n_heads=2, d_ff=16)
STEPS = 12


def snippet(name: str) -> str:
    found = dict(re.findall(r"<!-- run: (\w+) -->\s*```python\n(.*?)```", DOC.read_text(), flags=re.S))
    return found[name]


def lm_loss(logits, targets):
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _tokens(n, seed):
    """A Markov chain over 12 tokens (next = 3 * token + 1 mod 12, 20 % noise): learnable quickly."""
    g = np.random.default_rng(seed)
    seq = np.empty((n, CFG.context + 1), dtype=np.int64)
    seq[:, 0] = g.integers(0, 12, n)
    for t in range(1, CFG.context + 1):
        nxt = (3 * seq[:, t - 1] + 1) % 12
        noise = g.random(n) < 0.2
        seq[:, t] = np.where(noise, g.integers(0, 12, n), nxt)
    x = torch.from_numpy(seq)
    return x[:, :-1].contiguous(), x[:, 1:].contiguous()


class TokenSet(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        self.x, self.y = _tokens(n, seed)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.y[i]}


def _check_lm_run(path, steps):
    run = read_run(path)
    assert "band_loss" not in run and "band" not in run.dims
    assert run.step.values.tolist()[0] == 0 and run.step.values.tolist()[-1] == steps
    assert (np.diff(run.param_time.values) > 0).all() and (run.arc_length >= run.param_time - 1e-12).all()
    assert np.isnan(run.train_loss.values[0]) and np.isfinite(run.train_loss.values[1:]).all()
    assert np.isfinite(run.heldout_loss.values).all()
    assert run.heldout_loss.values[-1] < run.heldout_loss.values[0]  # it learned something
    for v in ("lnp_spectral_position", "lnp_loss_scale", "lnp_network_scale", "lnp_grad_dot",
              "lnp_spectral_position_cross", "lnp_arc_length"):
        assert v in run and run[v].dims == ("lnp_step",), v
        assert {"units", "long_name"} <= set(run[v].attrs), v
    assert run.lnp_step.dtype == np.int64 and "lnp_window" in run.coords
    # the arc length at each LNP step lies between the arc lengths of the checkpoints around it
    arc = np.interp(run.lnp_step.values, run.step.values, run.arc_length.values)
    assert np.all(np.abs(run.lnp_arc_length.values - arc) <= run.arc_length.values[-1])
    assert run.attrs["format"] == "run/1" and run.attrs["n_parameters"] == sum(
        p.numel() for p in TinyGPT(CFG).parameters())
    assert run.attrs["created"].endswith("Z") and '"torch"' in run.attrs["versions"]
    assert run.attrs["name"] == Path(path).stem
    from bandscope.run import by_step, validate_run

    assert float(by_step(run).sel(step=steps).param_time) == float(run.param_time[-1])
    with pytest.raises(BandscopeInputError, match="spectral-reach"):
        validate_run(run)  # the key-search analysis needs band losses and says what to run instead
    return run


def test_lm_recipe_hf(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ns = {"torch": torch, "TinyGPT": TinyGPT, "lm_loss": lm_loss, "cfg": CFG, "STEPS": STEPS,
          "RUN_FILE": tmp_path / "lm-hf.nc", "Trainer": transformers.Trainer,
          "train_dataset": TokenSet(64, 0), "heldout": _tokens(8, 1), "lnp_batch": _tokens(8, 2),
          "args": transformers.TrainingArguments(
              output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=8, learning_rate=1e-2,
              logging_steps=4, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)}
    exec(compile(snippet("lm_hf"), "docs/torch.md:lm_hf", "exec"), ns)
    run = _check_lm_run(tmp_path / "lm-hf.nc", STEPS)
    # logging_steps=4 over 12 steps: 3 log lines with our metrics, not one per checkpoint
    logged = [h for h in ns["trainer"].state.log_history if "bandscope/param_time" in h]
    assert [h["step"] for h in logged] == [4, 8, 12]
    assert run.sizes["checkpoint"] > 3
    # the run file the recipe wrote is a spectral-reach run for `bandscope analyze`
    import json

    from bandscope.cli import main

    out = tmp_path / "report"
    assert main(["analyze", str(tmp_path / "lm-hf.nc"), "--quiet", "--html", str(out / "r.html"),
                 "--json", str(out / "r.json")]) == 0
    reach = json.loads((out / "r.json").read_text())["spectral_reach"]
    assert "lm-hf" in json.dumps(reach)
    assert "id='spectral-reach'" in (out / "r.html").read_text()


def test_lm_recipe_lightning(tmp_path):
    pytest.importorskip("lightning.pytorch")
    import lightning

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(TokenSet(64, 0), batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    ns = {"torch": torch, "TinyGPT": TinyGPT, "lm_loss": lm_loss, "cfg": CFG, "STEPS": STEPS,
          "RUN_FILE": tmp_path / "lm-lit.nc", "lightning": lightning, "loader": loader,
          "heldout": _tokens(8, 1), "lnp_batch": _tokens(8, 2)}
    code = snippet("lm_lightning").replace(
        "Trainer(max_steps=STEPS, callbacks=[callback])",
        "Trainer(max_steps=STEPS, callbacks=[callback], accelerator='cpu', logger=False, enable_progress_bar=False, "
        "enable_checkpointing=False, enable_model_summary=False)")
    exec(compile(code, "docs/torch.md:lm_lightning", "exec"), ns)
    _check_lm_run(tmp_path / "lm-lit.nc", STEPS)


# ------------------------------------------------------------------------------ metrics are documented
def _documented() -> list[str]:
    text = DOC.read_text()
    table = text[text.index("<!-- metrics-table -->"):text.index("<!-- end metrics-table -->")]
    pats = []
    for cell in re.findall(r"^\| (.*?) \|", table, flags=re.M):
        for name in re.findall(r"`(bandscope/[^`]+)`", cell):
            pats.append("^" + re.escape(name).replace(re.escape("<r>"), r"\d+").replace(
                re.escape("<var>"), r"[a-z_]+") + "$")
    return pats


def test_every_logged_metric_is_documented(tmp_path):
    pats = _documented()
    assert len(pats) >= 15
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 48), torch.nn.Unflatten(1, (3, 4, 4)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: dict[str, float] = {}
    x = torch.rand(8, 3, 4, 4)
    mse = torch.nn.functional.mse_loss
    mon = Monitor(model, panel=np.random.default_rng(0).random((4, 3, 4, 4)), path=tmp_path / "r.nc",
                  schedule=range(0, 13), lnp=mse, lnp_batch=(x, x), heldout_batch=(x, x), metrics="all",
                  lnp_options={"schedule": [0, 4, 8]}, log=lambda m, s: seen.update(m))
    for _ in range(12):
        opt.zero_grad()
        loss = mse(model(x), x)
        loss.backward()
        opt.step()
        mon.step(loss=loss)
    mon.close()
    fc = {"bandscope/forecast_s_remaining/1": 1.0, "bandscope/forecast_total_s_remaining_low": 2.0}
    seen.update(fc)
    seen.update(remaining_in_steps_and_time(fc, [(0, 0.0, 0.0), (4, 1.0, 2.0)]))
    seen["bandscope/checkpoint_step"] = 12
    missing = [k for k in seen if not any(re.match(p, k) for p in pats)]
    assert not missing, f"metrics not listed in docs/torch.md's metrics table: {missing}"
    assert {"bandscope/train_loss", "bandscope/heldout_loss", "bandscope/lnp_spectral_position",
            "bandscope/forecast_s_remaining_steps/1", "bandscope/forecast_total_s_remaining_low_seconds"} <= set(seen)


def test_remaining_in_steps_and_time_from_the_recent_rate():
    pts = [(0, 0.0, 0.0), (10, 5.0, 1.0), (20, 6.0, 3.0), (30, 7.0, 5.0), (40, 8.0, 7.0), (50, 9.0, 9.0)]
    out = remaining_in_steps_and_time({"bandscope/forecast_total_s_remaining": 3.0, "bandscope/x": 1.0}, pts)
    # the last 4 intervals: 4 units of s over 40 steps and 8 seconds (the fast start is left out)
    assert out == {"bandscope/forecast_total_s_remaining_steps": pytest.approx(30.0),
                   "bandscope/forecast_total_s_remaining_seconds": pytest.approx(6.0)}
    assert remaining_in_steps_and_time({"bandscope/forecast_s_remaining/1": 1.0}, pts[:1]) == {}
    assert remaining_in_steps_and_time({"bandscope/forecast_s_remaining/1": 1.0}, [(0, 1.0, 0), (5, 1.0, 1)]) == {}


def test_tensorboard_layout_and_images(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = torch.nn.Identity()
    p = torch.nn.Parameter(torch.zeros(1))
    model.register_parameter("w", p)
    mon = Monitor(model, panel=np.random.default_rng(0).random((4, 3, 4, 4)), schedule=[1],
                  tensorboard=tmp_path / "tb", tensorboard_images=2)
    mon.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert any("reconstruction" in t for t in acc.Tags()["images"])
    layout = tensorboard_layout({"bandscope/band_1": 0.0})["bandscope"]["band losses"]
    assert layout[0] == "Multiline" and re.match(layout[1][0], "bandscope/band_16")


# ------------------------------------------------------------------------------ locks, bad input
def test_hf_train_that_raises_releases_the_run_file(tmp_path):
    transformers = pytest.importorskip("transformers")
    from bandscope.torch.hf import BandscopeCallback

    class Boom(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                raise ValueError("boom")

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gpt = TinyGPT(CFG)

        def forward(self, input_ids, labels=None):
            return {"loss": lm_loss(self.gpt(input_ids), labels)}

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "o"), max_steps=4, per_device_train_batch_size=8,
                                          save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
    path = tmp_path / "run.nc"
    t = transformers.Trainer(model=LM(), args=args, train_dataset=TokenSet(32, 0),
                             callbacks=[BandscopeCallback(path=path, schedule=[1, 2, 3, 4]), Boom()])
    with pytest.raises(ValueError, match="boom"):
        t.train()
    # a retry in the same process: a new trainer on the same run file (replacing it) is accepted
    t2 = transformers.Trainer(model=LM(), args=args, train_dataset=TokenSet(32, 0),
                              callbacks=[BandscopeCallback(path=path, schedule=[1, 2, 3, 4], overwrite=True)])
    t2.train()
    assert read_run(path).step.values.tolist() == [0, 1, 2, 3, 4]


def test_lnp_hook_refuses_fractional_steps():
    net = torch.nn.Linear(3, 2)
    hook = LNPHook(net, torch.nn.MSELoss(), schedule=[2, 3], network_scale="exact")
    b = (torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(BandscopeInputError, match="2.7"):
        hook(2.7, b)
    assert hook(2.0, b) is not None and hook.dataset().lnp_step.values.tolist() == [2]


def test_probe_refuses_nan_panels_and_tuple_outputs_and_warns_on_255():
    model = torch.nn.Identity()
    model.register_parameter("w", torch.nn.Parameter(torch.zeros(1)))
    panel = np.random.default_rng(0).random((4, 3, 4, 4))
    bad = panel.copy()
    bad[2, 0, 1, 1] = np.nan
    with pytest.raises(BandscopeInputError, match=r"images \[2\].*not a diverged model"):
        Monitor(model, panel=bad)
    with pytest.warns(UserWarning, match=r"\[0, 255\].*panel / 255"):
        Monitor(model, panel=panel * 255).close()

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x, self.w

    with pytest.raises(BandscopeInputError, match="probe_output=lambda out: out"):
        Monitor(Pair(), panel=panel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Monitor(Pair(), panel=panel, probe_output=lambda out: out[0]).close()
