"""RunRecorder under faults: two writers, a full disk, SIGKILL at random points, rejected rows.

Nothing already recorded may be lost, no stale state may outlive a failed write, and a rejected
or failed checkpoint leaves the recorder exactly as before (docs/format.md, "Rules").
"""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("torch")

from bandscope.errors import BandscopeInputError, RunFileBusyError  # noqa: E402
from bandscope.io import read_run  # noqa: E402
from bandscope.io.lock import RunFileLock, lock_path, read_owner  # noqa: E402
from bandscope.torch.recorder import RunRecorder  # noqa: E402


def _row(k: int) -> dict:
    """A deterministic checkpoint k (band losses falling, parameter time growing)."""
    bl = [0.02 / (k + 1), 0.01 / (k + 1), 0.005]
    return dict(step=10 * k, band_loss=bl, param_time=1.5 * k, epoch=k / 4, mse=sum(bl))


def _snapshot(rec: RunRecorder):
    return [dict(r, band_loss=r["band_loss"].tolist()) for r in rec.rows]


def _tmp_files(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- validation before mutation
@pytest.mark.parametrize("bad", [
    dict(band_loss=[np.nan, 0.01, 0.005]),
    dict(band_loss=[0.02, np.inf, 0.005]),
    dict(band_loss=[0.02, 0.01]),
    dict(band_loss=[-0.02, 0.01, 0.005]),
    dict(param_time=np.nan),
    dict(param_time=-1.0),
    dict(param_time=1.0),  # decreases from 1.5 * 2
    dict(step=20),  # not after the last step
    dict(step=25.5),  # not an integer
])
def test_rejected_checkpoint_leaves_recorder_and_file_as_before(tmp_path, bad):
    path = tmp_path / "run.nc"
    with RunRecorder(path, name="r") as rec:
        for k in range(3):
            rec.record(**_row(k))
        before, on_disk = _snapshot(rec), path.read_bytes()
        with pytest.raises(BandscopeInputError) as info:
            rec.record(**{**_row(3), **bad})
        assert str(path) in str(info.value)
        assert _snapshot(rec) == before and path.read_bytes() == on_disk
        rec.record(**_row(3))  # the valid checkpoint is accepted afterwards: nothing was poisoned
        rec.record(**_row(4))
    ds = read_run(path)
    np.testing.assert_array_equal(ds["step"].values, [0, 10, 20, 30, 40])
    assert np.isfinite(ds["band_loss"].values).all()


def test_equal_parameter_time_is_valid(tmp_path):
    """Frozen weights / warm-up from lr 0: equal param_time at consecutive checkpoints."""
    path = tmp_path / "run.nc"
    with RunRecorder(path, name="warmup") as rec:
        for k in range(3):
            rec.record(step=k, band_loss=[0.02, 0.01], param_time=0.0, mse=0.03)
        rec.record(step=3, band_loss=[0.015, 0.01], param_time=0.5, mse=0.025)
        rec.record(step=4, band_loss=[0.015, 0.01], param_time=0.5, mse=0.025)  # frozen phase
    ds = read_run(path)
    np.testing.assert_array_equal(ds["param_time"].values, [0, 0, 0, 0.5, 0.5])


def test_recorded_name_comes_back(tmp_path):
    with RunRecorder(tmp_path / "run.nc", name="my-run") as rec:
        rec.record(**_row(0))
        rec.record(**_row(1))
    assert read_run(tmp_path / "run.nc").attrs["name"] == "my-run"
    named = read_run(tmp_path / "run.nc", name="other")
    assert named.attrs["name"] == "other" and named.attrs["recorded_name"] == "my-run"


# --------------------------------------------------------------------------- a failing write, then recovery
@pytest.mark.parametrize("failure", ["enospc", "hdf-error-on-full-disk"])
def test_failed_write_leaves_nothing_stale_and_recovers(tmp_path, monkeypatch, failure):
    import bandscope.io.atomic as bio

    path = tmp_path / "run.nc"
    rec = RunRecorder(path, name="r")
    for k in range(3):
        rec.record(**_row(k))
    before, on_disk = _snapshot(rec), path.read_bytes()
    real = xr.Dataset.to_netcdf

    def full_disk(self, target=None, *args, **kwargs):
        with open(target, "wb") as f:  # a partial file, as a real full disk leaves it
            f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        raise RuntimeError("NetCDF: HDF error")  # what netCDF4 says; only free space tells the truth

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full_disk)
    if failure != "enospc":
        monkeypatch.setattr(bio, "_free_bytes", lambda d: 0)
    for _ in range(2):  # every attempt fails the same clear way, never a PermissionError on a stale tmp
        with pytest.raises(OSError) as info:
            rec.record(**_row(3))
        assert info.value.errno == errno.ENOSPC
        assert "disk full" in str(info.value) and "ENOSPC" in str(info.value) and str(path) in str(info.value)
        assert _tmp_files(tmp_path) == []
        assert _snapshot(rec) == before and path.read_bytes() == on_disk
    monkeypatch.setattr(xr.Dataset, "to_netcdf", real)  # space is back
    rec.record(**_row(3))  # the retry of the same checkpoint is accepted
    rec.record(**_row(4))
    rec.close()
    np.testing.assert_array_equal(read_run(path)["step"].values, [0, 10, 20, 30, 40])
    assert _tmp_files(tmp_path) == [] and not lock_path(path).exists()


def test_write_error_that_is_not_a_full_disk_is_passed_on(tmp_path, monkeypatch):
    def broken(self, target=None, *a, **k):
        raise RuntimeError("NetCDF: some codec error")

    with RunRecorder(tmp_path / "run.nc") as rec:
        rec.record(**_row(0))
        monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
        with pytest.raises(RuntimeError, match="codec"):
            rec.record(**_row(1))
        assert len(rec) == 1 and _tmp_files(tmp_path) == []


# --------------------------------------------------------------------------- two writers
_HOLDER = textwrap.dedent("""
    import sys
    from bandscope.torch.recorder import RunRecorder
    rec = RunRecorder(sys.argv[1], name="first")
    rec.record(step=0, band_loss=[1.0, 0.5], param_time=0.0)
    print("locked", flush=True)
    sys.stdin.read()  # hold the file until the parent closes our stdin
    rec.record(step=1, band_loss=[0.5, 0.25], param_time=1.0)
    print("done", flush=True)
""")


def _start(code, *args):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_second_writer_is_refused_naming_the_first(tmp_path):
    path = tmp_path / "run.nc"
    holder = _start(_HOLDER, path)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        owner = read_owner(path)
        assert owner["pid"] == holder.pid and owner["host"] == socket.gethostname()
        with pytest.raises(RunFileBusyError) as info:  # another process
            RunRecorder(path, name="second", resume=True)
        msg = str(info.value)
        assert f"pid {holder.pid}" in msg and socket.gethostname() in msg and str(path) in msg
        second = _start(_HOLDER, path)  # a job started twice with the same output
        out, err = second.communicate(input="", timeout=300)
        assert second.returncode != 0 and f"pid {holder.pid}" in err and "RunFileBusyError" in err
        out, err = holder.communicate(input="", timeout=300)
        assert holder.returncode == 0 and "done" in out, err
    finally:
        if holder.poll() is None:
            holder.kill()
    ds = read_run(path)  # the first writer's run is intact, nobody overwrote it
    assert ds.attrs["name"] == "first" and ds.sizes["checkpoint"] == 2
    assert not lock_path(path).exists()
    with RunRecorder(path, resume=True) as rec:  # free again
        assert len(rec) == 2


def test_two_recorders_in_one_process(tmp_path):
    path = tmp_path / "run.nc"
    first = RunRecorder(path, name="a")
    with pytest.raises(RunFileBusyError, match="same process"):
        RunRecorder(path, name="b")
    first.record(**_row(0))
    first.close()
    with RunRecorder(path, name="b", resume=True) as second:
        assert len(second) == 1


def test_lock_of_a_killed_writer_is_reclaimed(tmp_path):
    path = tmp_path / "run.nc"
    holder = _start(_HOLDER, path)
    assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert lock_path(path).exists() and read_owner(path)["pid"] == holder.pid  # stale lock file left
    with RunRecorder(path, resume=True) as rec:  # reclaimed: the dead pid holds no flock
        assert len(rec) == 1
        assert read_owner(path)["pid"] == os.getpid()
        rec.record(step=1, band_loss=[0.5, 0.25], param_time=1.0)
    assert read_run(path).sizes["checkpoint"] == 2


def test_lock_without_flock_reclaims_dead_pid_and_refuses_live_one(tmp_path, monkeypatch):
    """File systems without flock: the lock file's pid/host decide."""
    monkeypatch.setattr(RunFileLock, "_flock", staticmethod(lambda fd: None))
    path = tmp_path / "run.nc"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    lock_path(path).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "time": 0}))
    with RunFileLock(path):
        assert read_owner(path)["pid"] == os.getpid()
    lock_path(path).write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "time": 0}))  # pid 1 lives
    with pytest.raises(RunFileBusyError, match="pid 1 on host"):
        RunFileLock(path).acquire()
    lock_path(path).write_text(json.dumps({"pid": int(dead), "host": "elsewhere", "time": 0}))
    with pytest.raises(RunFileBusyError, match="host elsewhere"):  # cannot tell if alive: refuse
        RunFileLock(path).acquire()


def test_temp_files_are_unique_per_writer_and_stale_ones_are_cleaned(tmp_path):
    from bandscope.io.atomic import _tmp_name

    path = tmp_path / "run.nc"
    names = {_tmp_name(path).name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(f"run.nc.{os.getpid()}.") and n.endswith(".tmp") for n in names)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f"run.nc.{dead}.deadbeef.tmp").write_bytes(b"partial")  # left by a SIGKILLed writer
    (tmp_path / "run.nc.tmp").write_bytes(b"partial")  # the old fixed name
    with RunRecorder(path) as rec:
        rec.record(**_row(0))
    assert _tmp_files(tmp_path) == []


# --------------------------------------------------------------------------- SIGKILL at random points
_WRITER = textwrap.dedent("""
    import sys, time
    from bandscope.torch.recorder import RunRecorder
    path, n = sys.argv[1], int(sys.argv[2])
    pace = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0  # seconds between records
    def row(k):
        bl = [0.02 / (k + 1), 0.01 / (k + 1), 0.005]
        return dict(step=10 * k, band_loss=bl, param_time=1.5 * k, epoch=k / 4, mse=sum(bl))
    rec = RunRecorder(path, name="killed", resume=True)
    print("ready", len(rec), flush=True)
    for k in range(len(rec), n):
        rec.record(**row(k))
        print("recorded", 10 * k, flush=True)
        time.sleep(pace)
    print("finished", flush=True)
""")


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_recorded(tmp_path):
    path = tmp_path / "run.nc"
    n_total = 400
    rng = random.Random(20261130)
    acknowledged: list[int] = []
    # The writer paces itself (10 ms between records) and each kill comes within 0.5 s of its
    # first write, so a round records at most ~50 of the 400 rows on any machine, however fast:
    # every kill lands mid-run (checked by the exit status), during a write or between two.
    for _round in range(4):
        proc = _start(_WRITER, path, n_total, 0.01)
        first = proc.stdout.readline().split()
        assert first and first[0] == "ready", proc.stderr.read()
        assert int(first[1]) >= len(acknowledged)  # resumed with at least everything acknowledged
        line = proc.stdout.readline()  # its first write in this process is done (imports are slow here)
        assert line.startswith("recorded"), proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.5))  # then kill it at a random point of a later write
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, "the writer finished before the kill"
        acknowledged += [int(x.split()[1]) for x in [line, *out.splitlines()] if x.startswith("recorded")]
        ds = read_run(path)  # readable after every kill
        steps = ds["step"].values.tolist()
        assert steps == [10 * k for k in range(len(steps))]  # a clean prefix: no torn or repeated row
        assert set(acknowledged) <= set(steps)  # every record() that returned is on disk
        want = xr.concat([xr.Dataset({"bl": ("band", _row(k)["band_loss"])}) for k in range(len(steps))], "checkpoint")
        np.testing.assert_array_equal(ds["band_loss"].values, want["bl"].values)
    assert acknowledged and len(acknowledged) < n_total  # the kills did land mid-run
    proc = _start(_WRITER, path, n_total)  # finally let it finish
    out, err = proc.communicate(input="", timeout=600)
    assert proc.returncode == 0 and "finished" in out, err
    ds = read_run(path)
    assert ds["step"].values.tolist() == [10 * k for k in range(n_total)]
    assert _tmp_files(tmp_path) == [] and not lock_path(path).exists()
