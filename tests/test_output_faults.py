"""Outputs under faults (one atomic writer: temporary file, fsync, rename; failures name the path)
and Zarr stores that are not whole (missing chunks, corrupt chunks, empty stores)."""
from __future__ import annotations

import errno
import json
import pathlib
import shutil

import numpy as np
import pytest

from bandscope.errors import BandscopeInputError
from bandscope.io import atomic, read_run, write_run, write_zarr_run
from bandscope.keysearch.synthetic import make_run_synthetic


def _leftovers(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir() if ".tmp" in p.name or p.name.endswith(".old"))


@pytest.fixture(scope="module")
def run_csv(tmp_path_factory):
    return write_run(make_run_synthetic(0, n_bands=4), tmp_path_factory.mktemp("runs") / "r0.csv")


def test_a_full_disk_keeps_the_previous_output_and_names_it(tmp_path, monkeypatch):
    out = tmp_path / "out.json"
    atomic.write_text_atomic(out, "old\n")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    with pytest.raises(OSError) as e:
        atomic.write_text_atomic(out, "new\n")
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and str(out) in str(e.value)
    assert out.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_any_write_error_names_the_output_not_the_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "out.txt"

    def denied(self, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", denied)
    with pytest.raises(PermissionError) as e:
        atomic.write_text_atomic(out, "x")
    assert e.value.filename == str(out) and ".tmp" not in str(e.value)
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("flag", ["--json", "--netcdf", "--html"])
def test_an_output_under_a_regular_file_names_that_file(run_csv, tmp_path, flag, capsys):
    from bandscope.cli import main

    blocker = tmp_path / "out"
    blocker.write_text("I am a file")
    code = main(["analyze", str(run_csv), "--quiet", flag, str(blocker / "result.x")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(blocker) in err and "regular file" in err
    assert blocker.read_text() == "I am a file"


def test_an_output_onto_a_directory_says_so(run_csv, tmp_path, capsys):
    from bandscope.cli import main

    (tmp_path / "d").mkdir()
    assert main(["analyze", str(run_csv), "--quiet", "--json", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and str(tmp_path / "d") in err


def test_json_and_forecast_outputs_are_written_whole(run_csv, tmp_path):
    from bandscope.cli import main

    assert main(["analyze", str(run_csv), "--quiet", "--json", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["runs"]
    assert main(["forecast", str(run_csv), "--json", str(tmp_path / "f.json")]) == 0
    assert "runs" in json.loads((tmp_path / "f.json").read_text())
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- Zarr stores
@pytest.fixture
def store(tmp_path):
    pytest.importorskip("zarr")
    return write_zarr_run(make_run_synthetic(0, n_bands=4), tmp_path / "a.zarr")


def test_a_whole_store_reads_back(store):
    assert read_run(store).sizes["band"] == 4


@pytest.mark.parametrize("var", ["band_loss", "step", "param_time"])
def test_a_missing_chunk_is_named_not_read_as_fill_values(store, var):
    for chunk in (store / var).iterdir():
        if not chunk.name.startswith("."):
            chunk.unlink()
    with pytest.raises(BandscopeInputError, match=rf"variable '{var}' is missing its chunk"):
        read_run(store)


def test_a_truncated_chunk_is_named_with_its_variable(store):
    chunk = next(p for p in (store / "band_loss").iterdir() if not p.name.startswith("."))
    chunk.write_bytes(chunk.read_bytes()[:7])
    with pytest.raises(BandscopeInputError, match=r"variable 'band_loss' cannot be decoded"):
        read_run(store)


def test_an_empty_store_directory_is_not_called_missing(tmp_path):
    pytest.importorskip("zarr")
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(BandscopeInputError, match="empty directory"):
        read_run(tmp_path / "x.zarr")


def test_zarr_faults_through_the_cli(store, capsys):
    from bandscope.cli import main

    shutil.rmtree(store / "step")
    (store / "step").mkdir()
    assert main(["analyze", str(store), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(store) in err and "step" in err and "Traceback" not in err


def test_rewriting_a_store_leaves_no_temporary_directories(store):
    write_zarr_run(make_run_synthetic(1, n_bands=4), store)
    assert _leftovers(store.parent) == []
    assert read_run(store).attrs["name"] == "synthetic-seed1"


# --------------------------------------------------------------------------- messages that point the right way
def test_npz_with_an_object_array_is_refused_by_name(tmp_path, capsys):
    from bandscope.cli import main

    np.savez(tmp_path / "panel.npz", images=np.array([object(), object()], dtype=object))
    np.savez(tmp_path / "recon.npz", recon=np.zeros((2, 1, 4, 4)))
    assert main(["bands", str(tmp_path / "panel.npz"), str(tmp_path / "recon.npz")]) == 2
    err = capsys.readouterr().err
    assert "object (pickled) array" in err and "panel.npz" in err


def test_a_28_pixel_image_gets_the_fix():
    from bandscope import band_losses

    x = np.zeros((1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"pad or resize the images to 32 x 32 \(or crop to 16 x 16\)"):
        band_losses(x, x)


def test_a_bad_seed_column_under_dask_names_its_file(tmp_path, capsys):
    pytest.importorskip("dask")
    import pandas as pd

    from bandscope.cli import main
    from bandscope.io import run_to_frame

    good = write_run(make_run_synthetic(0, n_bands=4), tmp_path / "good.csv")
    df = run_to_frame(make_run_synthetic(1, n_bands=4))
    df["seed"] = "abc"
    df.to_csv(tmp_path / "bad.csv", index=False)
    assert good.exists()
    assert main(["analyze", str(tmp_path / "*.csv"), "--dask", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "Traceback" not in err
    assert pd.read_csv(tmp_path / "bad.csv")["seed"].iloc[0] == "abc"
