"""tools/lm_runs_to_runfiles.py: every variable of the language-model run files it writes has the attrs of
``bandscope.schema`` (kind ``lm_run``), in the units of its model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bandscope import schema
from tools_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(ROOT.glob("reference_runs/lm-scaling*/runs/*.nc"))


@pytest.fixture(scope="module")
def tool():
    return load_tool("lm_runs_to_runfiles")


_LNP = [name for name in schema.kind("lm_run").variables if name.startswith("lnp_")]


def _run_folder(path: Path, *, vocab_size: int = 256, probes: bool = True) -> Path:
    """A tiny ``tools/lm_scaling.py`` folder: 6 LNP steps in 3 windows, 10 training steps."""
    path.mkdir()
    g = np.random.default_rng(0)
    (path / "config.json").write_text(json.dumps({
        "model": {"vocab_size": vocab_size, "context": 8, "d_model": 4, "n_layers": 1, "n_heads": 1, "d_ff": 8},
        "n_params": 123, "size": "xs", "seed": 0, "steps": 10}))
    steps = np.array([0, 1, 4, 5, 8, 9])

    def lnp_file(names):
        return xr.Dataset({n: ("lnp_step", g.random(steps.size)) for n in names},
                          coords={"lnp_step": steps, "lnp_window": ("lnp_step", steps // 4)},
                          attrs={"note": "batch A = training batch"})

    lnp_file(_LNP).to_netcdf(path / "lnp.nc")
    pd.DataFrame({"step": np.arange(10), "train_loss": g.random(10)}).to_csv(path / "train_loss.csv", index=False)
    pd.DataFrame({"phase": "train", "step": [0, 4, 8, 10], "heldout_loss": g.random(4)}).to_csv(
        path / "heldout.csv", index=False)
    if probes:
        for backbone in ("trained", "random"):
            lnp_file(f"lnp_{v}" for v in ("spectral_position", "spectral_position_cross", "network_scale_norm",
                                          "loss_scale_norm")).to_netcdf(path / f"probe_{backbone}.nc")
    return path


def _written(tool, folder: Path) -> xr.Dataset:
    """What the tool writes for ``folder``, read back from the netCDF file."""
    path = tool.write(tool.convert(folder), folder.parent / "runs" / f"{folder.name}.nc")
    return xr.load_dataset(path)


def _attrs_differ(ds: xr.Dataset, context: dict[str, str]) -> list[str]:
    """Every variable or coordinate of ``ds`` whose attrs are not exactly those of kind ``lm_run``."""
    return [f"{name}: {ds[name].attrs} != {schema.attrs('lm_run', str(name), **context)}"
            for name in ds.variables if ds[name].attrs != schema.attrs("lm_run", str(name), **context)]


@pytest.mark.parametrize(("vocab_size", "loss"), [(256, "nats / byte"), (512, "nats / token")])
def test_every_written_variable_has_the_schema_attrs(tool, tmp_path, vocab_size, loss):
    ds = _written(tool, _run_folder(tmp_path / "xs-seed0", vocab_size=vocab_size))
    context = tool.units({"model": {"vocab_size": vocab_size}})
    assert context == {"loss": loss}
    assert _attrs_differ(ds, context) == []
    assert schema.mismatches(ds, "lm_run", complete=True, **context) == []
    # the model's units are filled in: no placeholder is left, a compound unit under a power is parenthesised
    assert not [(n, a) for n in ds.variables for a, x in ds[n].attrs.items() if "{" in str(x)]
    assert ds.train_loss.attrs["units"] == ds.lnp_loss.attrs["units"] == loss
    assert ds.lnp_loss_scale.attrs["units"] == f"({loss})**2 / logit**2"
    assert ds.probe_network_scale_norm.attrs["units"] == "logit**2 / param**2 / tokens"


def test_a_run_without_probes_has_the_schema_attrs(tool, tmp_path):
    ds = _written(tool, _run_folder(tmp_path / "xs-seed1", probes=False))
    assert _attrs_differ(ds, {"loss": "nats / byte"}) == []
    missing = {m.split(":")[0] for m in schema.mismatches(ds, "lm_run", complete=True, loss="nats / byte")}
    assert missing == {n for k in ("variables", "coords") for n in getattr(schema.kind("lm_run"), k)
                       if n.startswith("probe_")}


def test_lnp_and_probe_attrs_are_those_of_the_lnp_kinds(tool, tmp_path):
    """One definition: the lnp_* variables carry what an LNPHook run file carries (kind lnp_run), the probes
    what kind lnp_probes gives, in the same units."""
    ds = _written(tool, _run_folder(tmp_path / "s-seed0"))
    units = {"loss": "nats / byte", "output": "logit", "param": "param", "unit": "tokens"}
    for name in _LNP + ["lnp_step", "lnp_window"]:
        assert ds[name].attrs == schema.attrs("lnp_run", name, **units), name
    probes = [str(v) for v in ds.variables if str(v).startswith("probe_")]
    assert len(probes) == 7
    assert schema.mismatches(ds[probes], "lnp_probes", complete=True, **units) == []
    assert ds.step.attrs == schema.attrs("run", "step")
    # the hook's defaults are unchanged by the templates
    assert schema.attrs("lnp_run", "lnp_loss_scale_norm")["units"] == "loss**2 / output**2 * unit"


def test_units_that_depend_on_the_model_must_be_given():
    with pytest.raises(ValueError, match=r"'train_loss' of kind 'lm_run' depend on the model: give loss="):
        schema.attrs("lm_run", "train_loss")
    assert schema.attrs("lm_run", "lnp_spectral_position") == schema.attrs("lnp_run", "lnp_spectral_position")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parents[1].name}/{p.name}")
def test_shipped_run_files_have_the_schema_attrs(tool, path):
    ds = xr.load_dataset(path)
    cfg = json.loads((path.parents[1] / ds.attrs["name"] / "config.json").read_text())
    assert _attrs_differ(ds, tool.units(cfg)) == []


def test_shipped_run_files_are_what_the_tool_writes(tool):
    """The shipped files were regenerated by the tool as it is: the same data and attrs (but the date and the
    library versions it ran with)."""
    assert len(SHIPPED) == 22
    shipped = xr.load_dataset(ROOT / "reference_runs" / "lm-scaling" / "runs" / "xs-seed1.nc")
    now = tool.convert(ROOT / "reference_runs" / "lm-scaling" / "xs-seed1")
    # the losses are parsed from the logs' decimal text and converted to nats per byte: numpy and pandas
    # releases round that to within one or two ulps of each other (2.4e-16 relative measured on the
    # declared minimum versions), so values agree to 5e-16 relative and everything else exactly
    xr.testing.assert_allclose(shipped, now, rtol=5e-16, atol=0.0)
    assert {n: shipped[n].attrs for n in shipped.variables} == {n: now[n].attrs for n in now.variables}
    assert ({k: str(v) for k, v in shipped.attrs.items() if k not in ("created", "versions")}
            == {k: str(v) for k, v in now.attrs.items() if k not in ("created", "versions")})
