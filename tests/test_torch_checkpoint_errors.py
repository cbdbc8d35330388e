"""param-time never silently shifts rows: unreadable checkpoints are named, NaN weights explained;
the pure-numpy safetensors reader against the safetensors package; the adapter's CLI plugin."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
from safetensors.torch import save_file  # noqa: E402

from bandscope.cli import build_parser, main  # noqa: E402
from bandscope.cli.record import param_time_table, read_safetensors  # noqa: E402
from bandscope.errors import BandscopeInputError  # noqa: E402
from bandscope.torch.checkpoints import checkpoint_param_time, load_checkpoint  # noqa: E402


def _write(tmp_path, n=5, fmt="safetensors"):
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(4, 3)
    states = []
    for k in range(n):
        states.append({"w": w.clone(), "b": torch.full((2,), float(k))})
        p = tmp_path / f"ckpt_{k}.{fmt}"
        save_file(states[-1], str(p)) if fmt == "safetensors" else torch.save(states[-1], p)
        w += torch.randn(4, 3, generator=g)
    return states


def _chords(states):
    v = [np.concatenate([s["w"].numpy().ravel(), s["b"].numpy().ravel()]).astype(np.float64) for s in states]
    return np.concatenate([[0.0], np.cumsum([np.linalg.norm(b - a) for a, b in zip(v, v[1:])])])


def _corrupt(tmp_path, kind):
    """Make checkpoint 2 unreadable in one of the ways users meet."""
    victim = tmp_path / "ckpt_2.safetensors"
    if kind == "broken symlink":
        victim.unlink()
        victim.symlink_to(tmp_path / "gone.safetensors")
    elif kind == "truncated":
        victim.write_bytes(victim.read_bytes()[:-7])
    elif kind == "pickle named .safetensors":
        victim.write_bytes(pickle.dumps({"w": np.zeros((4, 3))}))
    elif kind == "empty":
        victim.write_bytes(b"")
    elif kind == "garbage header":
        victim.write_bytes((12).to_bytes(8, "little") + b"{not json!!}")
    return victim


KINDS = ["broken symlink", "truncated", "pickle named .safetensors", "empty", "garbage header"]


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_checkpoint_is_an_error_naming_it(tmp_path, capsys, kind):
    _write(tmp_path)
    victim = _corrupt(tmp_path, kind)
    for table in (param_time_table, checkpoint_param_time):  # numpy and torch twins alike
        with pytest.raises(BandscopeInputError) as info:
            table(tmp_path)
        assert str(victim) in str(info.value)
    assert main(["param-time", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "Traceback" not in err


@pytest.mark.parametrize("kind", KINDS)
def test_skip_unreadable_keeps_the_row_and_says_why(tmp_path, capsys, kind):
    states = _write(tmp_path)
    victim = _corrupt(tmp_path, kind)
    df = param_time_table(tmp_path, skip_unreadable=True)
    assert df["name"].tolist() == [f"ckpt_{k}.safetensors" for k in range(5)]  # no row shifted
    assert np.isnan(df["param_time"][2]) and df["note"][2].startswith("skipped:") and victim.name in df["note"][2]
    kept = [s for k, s in enumerate(states) if k != 2]
    np.testing.assert_allclose(df["param_time"][[0, 1, 3, 4]], _chords(kept), rtol=1e-12)
    assert "chord from ckpt_1.safetensors" in df["note"][3]
    twin = checkpoint_param_time(tmp_path, skip_unreadable=True)  # the torch twin: same rows, same gaps
    pd.testing.assert_frame_equal(df[["name", "param_time"]], twin[["name", "param_time"]], rtol=1e-12)
    assert (df["note"] != "").tolist() == (twin["note"] != "").tolist()
    out = tmp_path / "pt.csv"
    assert main(["param-time", str(tmp_path), "--skip-unreadable", "--out", str(out)]) == 0
    assert "ckpt_2.safetensors: skipped" in capsys.readouterr().err
    back = pd.read_csv(out)
    assert len(back) == 5 and np.isnan(back["param_time"][2])


def test_zero_byte_and_truncated_pt(tmp_path, capsys):
    _write(tmp_path, n=3, fmt="pt")
    (tmp_path / "ckpt_1.pt").write_bytes(b"")
    with pytest.raises(BandscopeInputError, match="ckpt_1.pt.*empty"):
        load_checkpoint(tmp_path / "ckpt_1.pt")
    assert main(["param-time", str(tmp_path)]) == 2
    assert "ckpt_1.pt" in capsys.readouterr().err
    data = (tmp_path / "ckpt_2.pt").read_bytes()
    (tmp_path / "ckpt_1.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BandscopeInputError, match="ckpt_1.pt"):
        load_checkpoint(tmp_path / "ckpt_1.pt")


def test_nan_weights_give_nan_from_there_with_the_reason(tmp_path, capsys):
    states = _write(tmp_path)
    bad = dict(states[2])
    bad["w"] = bad["w"].clone()
    bad["w"][0, 0] = float("nan")
    save_file(bad, str(tmp_path / "ckpt_2.safetensors"))
    df = param_time_table(tmp_path)
    np.testing.assert_allclose(df["param_time"][:2], _chords(states[:2]), rtol=1e-12)
    assert np.isnan(df["param_time"][2:]).all()
    assert "non-finite weights in ['w']" in df["note"][2]
    assert all("ckpt_2.safetensors has non-finite weights" in n for n in df["note"][3:])
    assert main(["param-time", str(tmp_path)]) == 0
    assert "non-finite weights" in capsys.readouterr().err


# --------------------------------------------------------------------------- the numpy safetensors reader
_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
           torch.int8, torch.uint8, torch.bool]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(_DTYPES))),
                          st.lists(st.integers(0, 4), min_size=0, max_size=3)), min_size=1, max_size=5),
       st.integers(0, 2**31 - 1))
def test_read_safetensors_equals_the_safetensors_package(tmp_path_factory, specs, seed):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (d, shape) in enumerate(specs):
        x = torch.randn(tuple(shape), generator=g) * 100
        sd[f"t{i}"] = x.to(_DTYPES[d])
    p = tmp_path_factory.mktemp("st") / "x.safetensors"
    save_file(sd, str(p))
    ours = read_safetensors(p)
    assert set(ours) == set(sd)
    oracle = None if any(t.dtype == torch.bfloat16 for t in sd.values()) else safetensors_numpy.load_file(str(p))
    for k, t in sd.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()  # bf16 widened exactly
        np.testing.assert_array_equal(ours[k], want)
        assert ours[k].shape == tuple(t.shape)
        if oracle is not None:  # the safetensors package itself (it cannot read bfloat16 into numpy)
            np.testing.assert_array_equal(ours[k], oracle[k])
            assert ours[k].dtype == oracle[k].dtype


def test_bfloat16_checkpoints_need_no_torch(tmp_path):
    for k in range(2):
        save_file({"w": torch.full((3,), float(k), dtype=torch.bfloat16)}, str(tmp_path / f"c{k}.safetensors"))
    code = ("import sys\nfrom bandscope.cli.record import param_time_table\n"
            f"print(round(float(param_time_table({str(tmp_path)!r})['param_time'].iloc[-1]), 6))\n"
            "assert 'torch' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(round(3**0.5, 6))


# --------------------------------------------------------------------------- the adapter's CLI plugin
def test_torch_commands_come_from_the_entry_point():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="bandscope.commands")}
    assert eps.get("train") == "bandscope.torch.cli:register", (
        "the bandscope.commands entry point is not installed: reinstall the package (pip install -e .)")
    full = build_parser(plugins=True)._subparsers._group_actions[0].choices
    core = build_parser(plugins=False, list_extensions=False)._subparsers._group_actions[0].choices
    listed = build_parser(plugins=False)._subparsers._group_actions[0].choices  # --help: names, not imported
    assert "train" in full and "train" not in core and "train" in listed
    assert {"analyze", "reproduce", "bands", "param-time"} <= set(core)


def test_core_cli_does_not_import_the_adapter():
    code = ("import sys\nfrom bandscope.cli import build_parser, main\n"
            "build_parser(plugins=False)\n"
            "assert not any(m.startswith('bandscope.torch') or m == 'torch' for m in sys.modules), "
            "sorted(m for m in sys.modules if 'torch' in m)\n"
            "import ast, inspect, bandscope.cli, bandscope.cli.record, bandscope.plugins\n"
            "for mod in (bandscope.cli, bandscope.cli.record, bandscope.plugins):\n"
            "    for node in ast.walk(ast.parse(inspect.getsource(mod))):\n"
            "        if isinstance(node, (ast.Import, ast.ImportFrom)):\n"
            "            names = [a.name for a in node.names] + [getattr(node, 'module', None) or '']\n"
            "            assert not any('torch' in n for n in names), (mod, names)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def test_train_help_through_main(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0 and "--warmup-steps" in capsys.readouterr().out


def test_train_refuses_an_output_owned_by_another_writer(tmp_path, capsys):
    from bandscope.io.lock import RunFileLock

    out = tmp_path / "run"
    with RunFileLock(out / "run.nc"):
        code = main(["train", "--out", str(out), "--size", "16", "--epochs", "1", "--n-train", "64",
                     "--n-test", "32", "--batch-size", "32", "--panel-size", "8", "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "being written by" in err and "run.nc" in err and "Traceback" not in err
