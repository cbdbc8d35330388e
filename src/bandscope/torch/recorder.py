"""Incremental run recorder: one netCDF file rewritten atomically at every checkpoint.

After each :meth:`RunRecorder.record` the file at ``path`` is a complete, valid run Dataset
(``docs/format.md``, built with :func:`bandscope.run.make_run`) that ``bandscope analyze`` can
read at any moment: the new file is written to ``path.tmp`` and moved over ``path`` with
``os.replace`` (atomic on POSIX), so a crash or Ctrl-C loses at most the checkpoint in progress.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..io import write_netcdf_atomic
from ..run import make_run

__all__ = ["RunRecorder"]

_COLS = ("step", "epoch", "param_time", "arc_length", "mse")


class RunRecorder:
    """Collect checkpoints of one run and keep ``path`` (.nc) up to date.

    Parameters
    ----------
    path : str or Path
        netCDF file to (re)write.
    name, arch, seed, source : run attributes (``docs/format.md``)
    extra_attrs : dict, optional
        More attributes (e.g. the training config); values must be netCDF-storable
        (str, numbers).
    resume : bool
        If ``path`` exists, start from its checkpoints (see :meth:`truncate`).

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); rec = RunRecorder(os.path.join(d, "run.nc"), name="demo")
    >>> rec.record(step=0, band_loss=[0.02, 0.01], param_time=0.0, mse=0.03)
    >>> rec.record(step=10, band_loss=[0.01, 0.01], param_time=1.5, mse=0.02)
    >>> xr.open_dataset(rec.path).sizes["checkpoint"]
    2
    """

    def __init__(self, path, *, name: str = "run", arch: str = "", seed: int = -1, source: str = "",
                 extra_attrs: dict | None = None, resume: bool = False):
        self.path = Path(path)
        self.name, self.arch, self.seed, self.source = name, arch, int(seed), source
        self.extra_attrs = dict(extra_attrs or {})
        self.rows: list[dict] = []
        self._extras: list = []
        if resume and self.path.exists():
            with xr.open_dataset(self.path) as f:
                ds = f.load()
            for k in range(ds.sizes["checkpoint"]):
                row = {"band_loss": ds["band_loss"].values[k].copy()}
                for c in _COLS:
                    if c in ds:
                        row[c] = ds[c].values[k].item()
                self.rows.append(row)

    def add_extra(self, provider) -> None:
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
            ds = xr.merge([ds, extra], combine_attrs="drop").assign_attrs(attrs)
        return ds

    def __len__(self) -> int:
        return len(self.rows)

    def truncate(self, max_step: int) -> None:
        """Drop recorded checkpoints after optimizer step ``max_step`` (used when resuming from
        a training state older than the file's last checkpoint)."""
        self.rows = [r for r in self.rows if int(r["step"]) <= int(max_step)]

    def record(self, *, step: int, band_loss, param_time: float, epoch: float | None = None,
               arc_length: float | None = None, mse: float | None = None) -> None:
        """Append one checkpoint and rewrite the file atomically."""
        bl = np.asarray(band_loss, dtype=np.float64).reshape(-1)
        if self.rows and bl.shape != self.rows[0]["band_loss"].shape:
            raise ValueError(f"checkpoint has {bl.size} bands, earlier ones {self.rows[0]['band_loss'].size}")
        if self.rows and int(step) <= int(self.rows[-1]["step"]):
            raise ValueError(f"step {step} is not after the last recorded step {self.rows[-1]['step']}")
        row = {"band_loss": bl, "step": int(step), "param_time": float(param_time)}
        for key, val in (("epoch", epoch), ("arc_length", arc_length), ("mse", mse)):
            if val is not None:
                row[key] = float(val)
        self.rows.append(row)
        self.write()

    def dataset(self) -> xr.Dataset:
        """The recorded checkpoints as a validated run Dataset."""
        if not self.rows:
            raise ValueError("no checkpoint recorded yet")

        def col(key):
            vals = [r.get(key) for r in self.rows]
            return None if any(v is None for v in vals) else np.asarray(vals)

        return make_run(
            np.stack([r["band_loss"] for r in self.rows]), col("param_time"), col("step"),
            epoch=col("epoch"), arc_length=col("arc_length"), mse=col("mse"),
            name=self.name, arch=self.arch, seed=self.seed, source=self.source,
            extra_attrs=self.extra_attrs,
        )

    def write(self) -> Path:
        """Write the file atomically (tmp file + ``os.replace``), with every extra provider's
        variables merged in (:meth:`add_extra`)."""
        return write_netcdf_atomic(self._with_extras(self.dataset()), self.path)
