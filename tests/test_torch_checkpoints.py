"""File-based parameter time and band losses; checkpoints never execute code."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from bandscope.cli import main
from bandscope.cli.record import bands_table, natural_key, param_time_table
from bandscope.torch.checkpoints import checkpoint_param_time, load_checkpoint
from bandscope.transforms.bands import band_losses


def _states(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {"a.weight": torch.zeros(3, 2), "b.bias": torch.zeros(4), "count": torch.zeros((), dtype=torch.long)}
    out = []
    for _ in range(n):
        out.append({key: v.clone() for key, v in sd.items()})
        sd["a.weight"] += torch.randn(3, 2, generator=g)
        sd["b.bias"] += torch.randn(4, generator=g)
        sd["count"] += 1
    return out


def _oracle(states, keys=("a.weight", "b.bias")):
    vecs = [np.concatenate([s[k].double().numpy().ravel() for k in keys]) for s in states]
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(np.array(vecs), axis=0), axis=1))])


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_param_time_natural_sort_and_oracle(tmp_path, fmt):
    states = _states(11)
    for k, sd in enumerate(states):  # names whose lexical order is wrong: ckpt_10 < ckpt_2
        path = tmp_path / f"ckpt_{k}.{fmt}"
        save_file(sd, str(path)) if fmt == "safetensors" else torch.save(sd, path)
    df = param_time_table(tmp_path)
    assert df["name"].tolist() == [f"ckpt_{k}.{fmt}" for k in range(11)]
    np.testing.assert_allclose(df["param_time"], _oracle(states), rtol=1e-12)
    dft = checkpoint_param_time(tmp_path)  # the torch twin
    pd.testing.assert_frame_equal(df, dft, rtol=1e-12)


def test_trainable_restriction_and_cli(tmp_path, capsys):
    from bandscope.torch.reference.models import build_model

    m = build_model("cnn", 16, seed=0)
    sds = []
    for k in range(3):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * (k + 1))
        sd = dict(m.state_dict())
        sd["extra_buffer"] = torch.full((5,), float(k))  # floating, but not a parameter
        sds.append({kk: v.clone() for kk, v in sd.items()})
        save_file(sds[-1], str(tmp_path / f"s{k}.safetensors"))
    names = [n for n, _ in m.named_parameters()]
    restricted = param_time_table(tmp_path, trainable=names)
    np.testing.assert_allclose(restricted["param_time"], _oracle(sds, names), rtol=1e-12)
    by_model = checkpoint_param_time(tmp_path, model=m)["param_time"]
    np.testing.assert_allclose(by_model, restricted["param_time"], rtol=1e-12)
    everything = param_time_table(tmp_path)
    np.testing.assert_allclose(everything["param_time"], _oracle(sds, names + ["extra_buffer"]), rtol=1e-12)
    out_csv = tmp_path / "pt.csv"
    assert main(["param-time", str(tmp_path), "--out", str(out_csv), "--arch", "cnn", "--size", "16"]) == 0
    back = pd.read_csv(out_csv, dtype={"note": str}, keep_default_na=False)
    pd.testing.assert_frame_equal(back[["name", "param_time"]], restricted[["name", "param_time"]])
    assert back["note"].tolist() == ["", "", ""]


def test_bfloat16_safetensors_go_through_torch(tmp_path):
    states = _states(3)
    for k, sd in enumerate(states):
        save_file({kk: (v.to(torch.bfloat16) if v.is_floating_point() else v) for kk, v in sd.items()},
                  str(tmp_path / f"c{k}.safetensors"))
    bf = [{kk: v.to(torch.bfloat16) for kk, v in s.items() if v.is_floating_point()} for s in states]
    np.testing.assert_allclose(param_time_table(tmp_path)["param_time"], _oracle(bf), rtol=1e-12)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt_0.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": _Evil(str(marker))}, f, protocol=2)
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="refused to load"):
        param_time_table(tmp_path)
    assert main(["param-time", str(tmp_path)]) == 2  # the CLI reports the refusal as an error
    assert not marker.exists()
    # the same pickle really does run code when loaded unsafely: the test would catch a regression
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_mismatched_checkpoints_fail_loudly(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "a1.safetensors"))
    save_file({"v": torch.zeros(2)}, str(tmp_path / "a2.safetensors"))
    with pytest.raises(ValueError, match="identical keys"):
        param_time_table(tmp_path)
    with pytest.raises(FileNotFoundError):
        param_time_table(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        param_time_table(tmp_path / "empty")


def test_nested_state_dict_pt(tmp_path):
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "x.pt")
    assert set(load_checkpoint(tmp_path / "x.pt")) == {"w"}


def test_bands_table_and_cli(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((6, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "panel.npz", images=x)
    rdir = tmp_path / "recon"
    rdir.mkdir()
    recons = {}
    for k in (10, 2, 1):
        r = (x + 0.1 * k * rng.standard_normal(x.shape)).astype(np.float16)
        np.savez(rdir / f"step_{k}.npz", recon=r)
        recons[k] = r
    df = bands_table(tmp_path / "panel.npz", rdir)
    assert df.columns.tolist() == ["name", "band_1", "band_2", "band_4", "band_8", "mse"]
    assert df["name"].tolist() == ["step_1.npz", "step_2.npz", "step_10.npz"]
    for row, k in zip(df.itertuples(), (1, 2, 10)):
        want = band_losses(x, recons[k], dtype=np.float64).values
        np.testing.assert_allclose([row.band_1, row.band_2, row.band_4, row.band_8], want, rtol=1e-12)
        assert row.mse == pytest.approx(float(np.mean((x.astype(np.float64) - recons[k]) ** 2)), rel=1e-12)
        assert row.mse == pytest.approx(want.sum(), rel=1e-6)
    out = tmp_path / "b.csv"
    assert main(["bands", str(tmp_path / "panel.npz"), str(rdir / "step_2.npz"), "--out", str(out)]) == 0
    assert pd.read_csv(out)["name"].tolist() == ["step_2.npz"]


def test_natural_key():
    assert sorted(["s10", "s9", "S1"], key=natural_key) == ["S1", "s9", "s10"]


def test_file_commands_do_not_import_torch(tmp_path):
    """`bands` on .npz and `param-time` on .safetensors are pure numpy (torch stays optional)."""
    import subprocess
    import sys

    for k in range(2):
        save_file({"w": torch.full((3,), float(k))}, str(tmp_path / f"c{k}.safetensors"))
    np.savez(tmp_path / "panel.npz", images=np.zeros((2, 3, 4, 4), np.float32))
    np.savez(tmp_path / "recon.npz", recon=np.ones((2, 3, 4, 4), np.float16))
    code = (
        "import sys\nfrom bandscope.cli import main\n"
        f"assert main(['param-time', {str(tmp_path)!r}]) == 0\n"
        f"assert main(['bands', {str(tmp_path / 'panel.npz')!r}, {str(tmp_path / 'recon.npz')!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "c1.safetensors,1.7320508" in out.stdout  # sqrt(3)
