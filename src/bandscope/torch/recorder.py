"""Incremental run recorder: one netCDF file rewritten atomically at every checkpoint.

After each :meth:`RunRecorder.record` the file at ``path`` is a complete, valid run Dataset
(``docs/format.md``, built with :func:`bandscope.run.make_run`) that ``bandscope analyze`` can
read at any moment: the new file is written to a temporary file unique to this writer and moved
over ``path`` with ``os.replace`` (atomic on POSIX), so a crash, SIGKILL or Ctrl-C loses at most
the checkpoint in progress.

The rules it keeps (``docs/format.md``, "Rules"):

- **one owner**: the recorder holds the run file's lock (:class:`bandscope.io.lock.RunFileLock`,
  sidecar ``RUN.lock`` with pid/host/time) from construction to :meth:`RunRecorder.close`; a
  second recorder on the same path, in this process or another, is refused naming the owner;
- **validation before mutation**: a checkpoint is checked (finite band losses, the same bands,
  an integer step after the last one, a finite parameter time >= 0 that does not decrease --
  equal is fine: frozen weights) and written before it becomes part of the recorder; a
  rejected checkpoint or a failed write (disk full) leaves the recorder exactly as before, so
  a retry of the same checkpoint is accepted.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import BandscopeInputError
from ..io import stale_temp_files, write_netcdf_atomic
from ..io.lock import RunFileLock
from ..io.runfiles import default_run_name
from ..run import CHECKPOINT_VARS, integer_steps, make_run

__all__ = ["RunRecorder", "package_versions"]

_COLS = ("step", "param_time", *CHECKPOINT_VARS)


def package_versions() -> str:
    """JSON text of the versions that produced a run: bandscope, torch, python, numpy (the
    ``versions`` attribute of a run file, ``docs/format.md``)."""
    import torch

    from .. import __version__

    return json.dumps({"bandscope": __version__, "torch": torch.__version__,
                       "python": platform.python_version(), "numpy": np.__version__}, sort_keys=True)


def utc_now() -> str:
    """The current time as ISO 8601 UTC (``2026-01-31T12:00:00Z``), the ``created`` attribute."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunRecorder:
    """Collect checkpoints of one run and keep ``path`` (.nc) up to date.

    Parameters
    ----------
    path : str or Path
        netCDF file to (re)write. The recorder owns it (lock ``path + ".lock"``) until
        :meth:`close` (or the end of a ``with`` block, or garbage collection).
    name, arch, seed, source : run attributes (``docs/format.md``); ``name=None`` is the file's
        stem, or its directory's name when the stem is ``run``.
    extra_attrs : dict, optional
        More attributes (e.g. the training config); values must be netCDF-storable
        (str, numbers).
    resume : bool
        If ``path`` exists, start from its checkpoints (see :meth:`truncate`); its other
        variables (e.g. ``lnp_*``) are in :attr:`previous`.

    Attributes
    ----------
    previous : xr.Dataset or None
        On resume, the file as it was (every variable), for extra providers to continue from.

    Raises
    ------
    bandscope.errors.RunFileBusyError
        Another writer owns ``path``; the message names its pid and host.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with RunRecorder(os.path.join(d, "run.nc"), name="demo") as rec:
    ...     rec.record(step=0, band_loss=[0.02, 0.01], param_time=0.0, mse=0.03)
    ...     rec.record(step=10, band_loss=[0.01, 0.01], param_time=1.5, mse=0.02)
    >>> xr.open_dataset(rec.path).sizes["checkpoint"]
    2
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, arch: str = "", seed: int = -1,
                 source: str = "", extra_attrs: dict | None = None, resume: bool = False) -> None:
        self.path = Path(path)
        name = default_run_name(self.path) if name is None else name
        self.name, self.arch, self.seed, self.source = name, arch, int(seed), source
        self.extra_attrs = {"created": utc_now(), "versions": package_versions(), **dict(extra_attrs or {})}
        self.rows: list[dict] = []
        self.previous: xr.Dataset | None = None
        self._extras: list = []
        self._lock = RunFileLock(self.path).acquire()
        for tmp in stale_temp_files(self.path):  # left by a writer that was killed mid-write
            try:
                tmp.unlink()
            except OSError:  # pragma: no cover
                pass
        if resume and self.path.exists():
            try:
                with xr.open_dataset(self.path) as f:
                    ds = f.load()
            except Exception as exc:
                self.close()
                raise BandscopeInputError(f"{self.path}: cannot resume from it: not a readable netCDF run "
                                          f"({type(exc).__name__}: {exc})", path=self.path) from exc
            self.previous = ds
            if "created" in ds.attrs:  # a resumed run keeps its creation time
                self.extra_attrs["created"] = str(ds.attrs["created"])
            for k in range(ds.sizes["checkpoint"]):
                row = {"band_loss": ds["band_loss"].values[k].copy()} if "band_loss" in ds else {}
                for c in _COLS:
                    if c in ds:
                        row[c] = ds[c].values[k].item()
                self.rows.append(row)

    def close(self) -> None:
        """Give up ownership of ``path`` (removes the lock file). The file itself stays."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def add_extra(self, provider: Callable[[], xr.Dataset | None]) -> None:
        """Merge ``provider()`` (an ``xr.Dataset`` of extra variables on their own dims, e.g.
        the LNP statistics of :class:`bandscope.torch.LNPHook` on ``lnp_step``) into every
        file written from now on, so extra measurements are never dropped by a rewrite.
        Variables that clash with the run's own raise ``ValueError``."""
        if not callable(provider):
            raise TypeError(f"provider must be callable returning an xarray.Dataset, got {type(provider)!r}")
        self._extras.append(provider)

    def _with_extras(self, ds: xr.Dataset) -> xr.Dataset:
        for provider in self._extras:
            extra = provider()
            if extra is None or not len(extra.variables):
                continue
            clash = [v for v in list(extra.data_vars) + list(extra.coords)
                     if v in ds.variables and v not in ds.dims]
            if clash:
                raise ValueError(f"extra variables {clash} would overwrite the run's own")
            attrs = {**extra.attrs, **ds.attrs}
            var_attrs = {v: dict(src[v].attrs) for src in (ds, extra) for v in src.variables}
            ds = xr.merge([ds, extra], combine_attrs="drop").assign_attrs(attrs)
            for v, a in var_attrs.items():  # merge(combine_attrs="drop") drops the variables' attrs too
                ds[v].attrs = a
        return ds

    def __len__(self) -> int:
        return len(self.rows)

    def truncate(self, max_step: int) -> list[int]:
        """Drop recorded checkpoints after optimizer step ``max_step`` (used when resuming from
        a training state older than the file's last checkpoint); returns the dropped steps.
        The file is rewritten at the next :meth:`record` / :meth:`write`."""
        dropped = [int(r["step"]) for r in self.rows if int(r["step"]) > int(max_step)]
        self.rows = [r for r in self.rows if int(r["step"]) <= int(max_step)]
        return dropped

    def _checked_row(self, *, step: int, band_loss: Any, param_time: float, epoch: float | None,
                     arc_length: float | None, mse: float | None, train_loss: float | None = None,
                     heldout_loss: float | None = None) -> dict[str, Any]:
        """The new checkpoint as a row, or ``BandscopeInputError`` -- without touching ``self``."""
        where = f"{self.path}: checkpoint at step {step!r}"
        try:
            st = int(integer_steps(np.reshape(np.asarray(step), 1), where=where)[0])
        except (TypeError, ValueError) as exc:
            raise BandscopeInputError(str(exc), path=self.path) from None
        bl = None if band_loss is None else np.array(band_loss, dtype=np.float64).reshape(-1)
        if self.rows and (bl is None) != ("band_loss" not in self.rows[0]):
            raise BandscopeInputError(f"{where}: a run has band losses at every checkpoint or at none (earlier "
                                      f"checkpoints {'have' if 'band_loss' in self.rows[0] else 'have none'})",
                                      path=self.path)
        if bl is None:
            bl = np.zeros(0)
        elif self.rows and bl.shape != self.rows[0]["band_loss"].shape:
            raise BandscopeInputError(f"{where} has {bl.size} bands, earlier ones {self.rows[0]['band_loss'].size}",
                                      path=self.path)
        if not np.isfinite(bl).all():
            bad = np.flatnonzero(~np.isfinite(bl)).tolist()
            raise BandscopeInputError(f"{where}: band loss is NaN or inf in bands at positions {bad} (the model "
                                      "diverged?); the checkpoint was not recorded", path=self.path)
        if (bl < 0).any():
            raise BandscopeInputError(f"{where}: negative band loss {bl.tolist()}", path=self.path)
        pt = float(param_time)
        if not (math.isfinite(pt) and pt >= 0):
            raise BandscopeInputError(f"{where}: param_time is {pt!r}; it must be finite and >= 0", path=self.path)
        if self.rows:
            last = self.rows[-1]
            if st <= int(last["step"]):
                raise BandscopeInputError(f"{where}: step {st} is not after the last recorded step "
                                          f"{int(last['step'])}", path=self.path)
            if pt < float(last["param_time"]):
                raise BandscopeInputError(f"{where}: param_time decreases from {float(last['param_time'])!r} "
                                          f"to {pt!r}; parameter time is cumulative", path=self.path)
        row: dict[str, Any] = {"step": st, "param_time": pt}
        if band_loss is not None:
            row["band_loss"] = bl
        elif train_loss is None:
            train_loss = math.nan  # a run without a panel always carries train_loss (docs/format.md)
        for key, val in (("epoch", epoch), ("arc_length", arc_length), ("mse", mse), ("train_loss", train_loss),
                         ("heldout_loss", heldout_loss)):
            if val is not None:
                row[key] = float(val)
        return row

    def record(self, *, step: int, band_loss: Any = None, param_time: float, epoch: float | None = None,
               arc_length: float | None = None, mse: float | None = None, train_loss: float | None = None,
               heldout_loss: float | None = None) -> None:
        """Append one checkpoint and rewrite the file atomically.

        The checkpoint is validated and the file written first; only then does it join the
        recorder. A rejected checkpoint (``BandscopeInputError``) or a failed write
        (``OSError``, e.g. ``ENOSPC``) leaves the recorder and the file as they were, so the
        same call can be retried. Equal parameter time at consecutive checkpoints (weights that
        did not move) is valid. ``band_loss=None`` records a run without a panel (then at every
        checkpoint); ``train_loss`` may be NaN (not reported at that step).
        """
        if not self._lock.held:
            raise BandscopeInputError(f"{self.path}: this recorder was closed; open a new one with resume=True",
                                      path=self.path)
        row = self._checked_row(step=step, band_loss=band_loss, param_time=param_time, epoch=epoch,
                                arc_length=arc_length, mse=mse, train_loss=train_loss, heldout_loss=heldout_loss)
        rows = [*self.rows, row]
        self._write(self._dataset(rows))
        self.rows = rows

    def dataset(self) -> xr.Dataset:
        """The recorded checkpoints as a validated run Dataset."""
        return self._dataset(self.rows)

    def _dataset(self, rows: list[dict[str, Any]]) -> xr.Dataset:
        if not rows:
            raise BandscopeInputError("no checkpoint recorded yet")

        def col(key: str) -> np.ndarray | None:
            vals = [r.get(key) for r in rows]
            if all(v is None for v in vals):
                return None
            if key in ("train_loss", "heldout_loss"):  # not reported at some steps: NaN there
                return np.asarray([np.nan if v is None else v for v in vals], dtype=np.float64)
            return None if any(v is None for v in vals) else np.asarray(vals)

        bl = np.stack([r["band_loss"] for r in rows]) if "band_loss" in rows[0] else None
        param_time = col("param_time")
        assert param_time is not None  # every row has one (_checked_row)
        return make_run(
            bl, param_time, col("step"),
            epoch=col("epoch"), arc_length=col("arc_length"), mse=col("mse"),
            train_loss=col("train_loss"), heldout_loss=col("heldout_loss"),
            name=self.name, arch=self.arch, seed=self.seed, source=self.source,
            extra_attrs=self.extra_attrs, require_advance=False,
        )

    def _write(self, ds: xr.Dataset) -> Path:
        return write_netcdf_atomic(self._with_extras(ds), self.path)

    def write(self) -> Path:
        """Write the file atomically (temporary file + ``os.replace``), with every extra
        provider's variables merged in (:meth:`add_extra`)."""
        return self._write(self.dataset())
