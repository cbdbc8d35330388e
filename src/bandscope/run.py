"""The run Dataset: construction and validation of the format in ``docs/format.md``.

Every producer of runs (the CSV/Parquet/netCDF readers, the torch recorder, the synthetic
generator) builds its Dataset with :func:`make_run`, and every consumer checks it with
:func:`validate_run`, so the contract lives in one place.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from . import schema
from .errors import BandscopeInputError

if TYPE_CHECKING:
    from typing import Any

    import numpy.typing as npt

FORMAT = "run/1"

#: variables over ``checkpoint`` a run may carry besides ``param_time`` and ``step``
CHECKPOINT_VARS = ("epoch", "arc_length", "mse", "train_loss", "heldout_loss")

#: the run variables over ``checkpoint`` and their attrs, from :data:`bandscope.schema.KINDS` ``["run"]``
#: (``docs/format.md``'s run table is generated from the same schema)
RUN_VARIABLES = {name: schema.attrs("run", name) for name in ("band_loss", "param_time", "step", *CHECKPOINT_VARS)}
_VAR_ATTRS = RUN_VARIABLES  # the name transforms.paramtime reads


def band_resolutions(n_bands: int) -> np.ndarray:
    """Band coordinate for ``n_bands`` dyadic bands: 1, 2, 4, ..., 2**(n_bands-1)."""
    return 2 ** np.arange(int(n_bands), dtype=np.int64)



def _rows(mask: npt.ArrayLike, limit: int = 20) -> str:
    """``[3, 7]`` (at most ``limit`` indices, then ``...``) for a boolean mask or index list."""
    idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask, dtype=np.int64)
    text = ", ".join(str(int(i)) for i in idx[:limit])
    return f"[{text}{', ...' if idx.size > limit else ''}]"


def integer_steps(values: npt.ArrayLike, *, where: str = "") -> np.ndarray:
    """Optimizer steps as int64, refusing anything that would be truncated or invented.

    Integers pass; floats must be finite and integer-valued (``10.0`` is step 10, ``10.5`` is an
    error naming the rows: epochs logged as steps would otherwise be silently truncated and γ
    would come out wrong); anything else is an error.

    >>> integer_steps([0, 10.0, 20]).tolist()
    [0, 10, 20]
    >>> try:
    ...     integer_steps([0, 0.5, 1.5], where="log.csv")
    ... except ValueError as exc:
    ...     print(str(exc)[:51])
    log.csv: step is not an integer at rows [1, 2] (val
    """
    prefix = f"{where}: " if where else ""
    arr = np.asarray(values)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise BandscopeInputError(f"{prefix}step is not numeric (dtype {arr.dtype}); steps count "
                                      "optimizer steps") from None
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise BandscopeInputError(f"{prefix}step is NaN or inf at rows {_rows(bad)}; every checkpoint "
                                      "needs its optimizer step (or leave the whole column out)")
        frac = arr != np.round(arr)
        if frac.any():
            raise BandscopeInputError(
                f"{prefix}step is not an integer at rows {_rows(frac)} (values "
                f"{[float(v) for v in arr[frac][:5]]}); steps count optimizer steps: log epochs in an "
                "'epoch' column")
        if (np.abs(arr) > 2**62).any():
            raise BandscopeInputError(f"{prefix}step values beyond 2**62 at rows {_rows(np.abs(arr) > 2**62)}")
    return arr.astype(np.int64)


def make_run(
    band_loss: npt.ArrayLike | None,
    param_time: npt.ArrayLike,
    step: npt.ArrayLike | None = None,
    *,
    bands: Sequence[int] | npt.ArrayLike | None = None,
    epoch: npt.ArrayLike | None = None,
    arc_length: npt.ArrayLike | None = None,
    mse: npt.ArrayLike | None = None,
    train_loss: npt.ArrayLike | None = None,
    heldout_loss: npt.ArrayLike | None = None,
    name: str = "run",
    arch: str = "",
    seed: int = -1,
    source: str = "",
    extra_attrs: Mapping[str, Any] | None = None,
    require_advance: bool = True,
) -> xr.Dataset:
    """Build a validated run Dataset (``docs/format.md``).

    Parameters
    ----------
    band_loss : array (checkpoint, band) or None
        Band losses L_i at each saved checkpoint; None for a run without a panel (a language
        model), which then needs ``train_loss`` (``docs/format.md``, "Runs without a panel").
    param_time : array (checkpoint,)
        Parameter time s_k >= 0, non-decreasing (equal values at consecutive checkpoints are
        fine: frozen weights, a warm-up from lr 0).
    step : array (checkpoint,), optional
        Optimizer steps: integers (integer-valued floats accepted), unique and increasing;
        omitted or all ``-1`` means unknown.
    bands : sequence of int, optional
        Band resolutions; default 1, 2, 4, ...
    epoch, arc_length, mse, train_loss, heldout_loss : array (checkpoint,), optional
        The optional variables over ``checkpoint`` (:data:`RUN_VARIABLES` defines them).
    require_advance : bool
        Refuse a run whose parameter time never advances (the analysis is in its units). The
        recorder passes ``False``: a run whose weights have not moved yet is still being recorded.

    Raises
    ------
    bandscope.errors.BandscopeInputError
        (a ``ValueError``) naming the rule broken and the rows, see :func:`validate_run`.

    Examples
    --------
    >>> ds = make_run([[2.0, 1.0], [1.0, 0.5]], [0.0, 1.5], [0, 10])
    >>> ds.band_loss.dims
    ('checkpoint', 'band')
    >>> [int(b) for b in ds.band]
    [1, 2]
    """
    where = source or (name if name != "run" else "")
    prefix = f"{where}: " if where else ""
    pt = np.asarray(param_time, dtype=np.float64).reshape(-1)
    k = pt.size
    data_vars = {}
    coords = {}
    if band_loss is not None:
        bl = np.asarray(band_loss, dtype=np.float64)
        if bl.ndim != 2:
            raise BandscopeInputError(f"{prefix}band_loss must be 2-D (checkpoint, band), got shape {bl.shape}")
        k, nb = bl.shape
        if k == 0 or nb == 0:
            raise BandscopeInputError(f"{prefix}empty run: {k} checkpoints x {nb} bands; a run needs at least one "
                                      "checkpoint and one band")
        if pt.shape != (k,):
            raise BandscopeInputError(f"{prefix}param_time has {pt.size} values, band_loss has {k} checkpoints")
        band_coord = band_resolutions(nb) if bands is None else np.asarray(bands, dtype=np.int64)
        if band_coord.shape != (nb,):
            raise BandscopeInputError(f"{prefix}{band_coord.size} band labels for {nb} band columns")
        data_vars["band_loss"] = (("checkpoint", "band"), bl, schema.attrs("run", "band_loss"))
        coords["band"] = ("band", band_coord, schema.attrs("run", "band"))
    elif k == 0:
        raise BandscopeInputError(f"{prefix}empty run: no checkpoint; a run needs at least one checkpoint")
    st = np.full(k, -1, dtype=np.int64) if step is None else integer_steps(np.reshape(step, -1), where=where)
    if st.shape != (k,):
        raise BandscopeInputError(f"{prefix}step has {st.size} values, expected {k}")
    data_vars["param_time"] = (("checkpoint",), pt, schema.attrs("run", "param_time"))
    data_vars["step"] = (("checkpoint",), st, schema.attrs("run", "step"))
    for key, val in (("epoch", epoch), ("arc_length", arc_length), ("mse", mse), ("train_loss", train_loss),
                     ("heldout_loss", heldout_loss)):
        if val is not None:
            arr = np.asarray(val, dtype=np.float64).reshape(-1)
            if arr.shape != (k,):
                raise BandscopeInputError(f"{prefix}{key} has {arr.size} values, expected {k}")
            data_vars[key] = (("checkpoint",), arr, schema.attrs("run", key))
    attrs = {
        "name": str(name),
        "arch": str(arch),
        "seed": int(seed),
        "source": str(source),
        "bandscope_format": FORMAT,
        "format": FORMAT,
    }
    if extra_attrs:
        attrs.update(extra_attrs)
    coords["checkpoint"] = ("checkpoint", np.arange(k, dtype=np.int64))
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    validate_run(ds, require_advance=require_advance, require_bands=band_loss is not None)
    return ds


def _where(ds: xr.Dataset) -> str:
    """``"runs/a.csv: "`` (the run's source, else its name) to prefix error messages."""
    src = str(ds.attrs.get("source", "") or "")
    name = str(ds.attrs.get("name", "") or "")
    if src.startswith("bandscope.") and name:  # a recorder's source names the writer, not the file
        src = ""
    where = src or (f"run {name!r}" if name and name != "run" else "")
    return f"{where}: " if where else ""


def has_bands(ds: xr.Dataset) -> bool:
    """Whether a run carries band losses (a panel was probed), ``docs/format.md``."""
    return "band_loss" in ds.variables


def is_lnp_var(name: str) -> bool:
    """Whether a run variable is an LNP statistic (``lnp_*`` over ``lnp_step``)."""
    return str(name).startswith("lnp_")


def _values(ds: xr.Dataset, name: str) -> np.ndarray:
    """``ds[name].values`` without building a DataArray (a dim without a coordinate gives its range)."""
    var = ds.variables.get(name)
    return np.asarray(ds[name].values if var is None else var.values)


def validate_run(ds: xr.Dataset, *, mse_rtol: float = 1e-3, require_advance: bool = True,
                 require_bands: bool = True) -> xr.Dataset:
    """Check a single run Dataset against the format; raise naming the rule, the rows and the run.

    The rules (``docs/format.md``, "Rules"):

    - ``param_time`` (checkpoint) present, at least one checkpoint; ``band_loss`` (checkpoint,
      band) with a dyadic band coordinate 1, 2, 4, ... -- or, with ``require_bands=False``, a run
      without a panel, which must then carry ``train_loss`` or ``lnp_*`` variables;
    - band losses finite and >= 0, ``param_time`` finite, >= 0 and non-decreasing (ties are
      valid: weights that did not move); with ``require_advance`` it must also grow somewhere;
    - ``step``, if known: integer-valued, >= 0, unique and strictly increasing (a repeated step
      is a checkpoint logged twice); all ``-1`` means unknown. Without known steps, two
      consecutive rows identical in every value are a row logged twice;
    - ``mse``, if present, equals the sum of the band losses within ``mse_rtol`` (float16
      panels round at ~1e-3).

    ``require_bands`` is for the key-search analysis, which needs band losses; the readers pass
    ``False`` (a language-model run is a valid file, analysed by the spectral-reach analysis).

    Raises
    ------
    bandscope.errors.BandscopeInputError
        A ``ValueError`` whose message starts with the run's source (or name) and names the
        offending checkpoints (0-based rows).
    """
    p = _where(ds)
    if "param_time" not in ds:
        raise BandscopeInputError(f"{p}run is missing variable 'param_time'; has {sorted(ds.data_vars)}")
    if ds.variables["param_time"].dims != ("checkpoint",):
        raise BandscopeInputError(f"{p}param_time dims must be ('checkpoint',), got {ds.variables['param_time'].dims}")
    if not has_bands(ds):
        others = [v for v in ds.data_vars if v == "train_loss" or is_lnp_var(v)]
        if not others:
            raise BandscopeInputError(f"{p}run is missing variable 'band_loss' and has no 'train_loss' or lnp_* "
                                      f"variable either; has {sorted(ds.data_vars)}")
        if require_bands:
            raise BandscopeInputError(f"{p}run has no band losses (recorded without a panel, e.g. a language "
                                      "model): the key-search analysis needs band_loss; analyse this run with "
                                      "the spectral-reach analysis (LNP) instead (`bandscope analyze FILE` "
                                      "chooses it by what the file holds; in Python "
                                      "bandscope.lnp.reach.reach_analysis), or record it with a panel")
    elif ds.variables["band_loss"].dims != ("checkpoint", "band"):
        raise BandscopeInputError(f"{p}band_loss dims must be ('checkpoint', 'band'), "
                                  f"got {ds.variables['band_loss'].dims}")
    n_bands = ds.sizes["band"] if has_bands(ds) else 1
    if ds.sizes["checkpoint"] == 0 or n_bands == 0:
        raise BandscopeInputError(f"{p}empty run ({ds.sizes['checkpoint']} checkpoints x {n_bands} "
                                  "bands); a run needs at least one checkpoint and one band")
    pt = np.asarray(_values(ds, "param_time"), dtype=np.float64)
    if has_bands(ds):
        bands = np.asarray(_values(ds, "band"))
        expected = band_resolutions(bands.size)
        if not np.array_equal(bands, expected):
            raise BandscopeInputError(f"{p}band coordinate must be {expected.tolist()}, got {bands.tolist()}")
        bl = np.asarray(_values(ds, "band_loss"), dtype=np.float64)
    else:
        bl = np.zeros((pt.size, 0))
    bad_bl = ~np.isfinite(bl).all(axis=1)
    bad_pt = ~np.isfinite(pt)
    if bad_bl.any() or bad_pt.any():
        parts = []
        if bad_bl.any():
            parts.append(f"band_loss at checkpoints {_rows(bad_bl)}")
        if bad_pt.any():
            parts.append(f"param_time at checkpoints {_rows(bad_pt)}")
        raise BandscopeInputError(f"{p}NaN or inf in {' and '.join(parts)}; a NaN band loss means the model "
                                  "diverged or the log is broken (read_run(..., dropna=True) / --dropna drops "
                                  "such rows, reporting them)")
    if (bl < 0).any():
        raise BandscopeInputError(f"{p}negative band loss at checkpoints {_rows((bl < 0).any(axis=1))}; band "
                                  "losses are sums of squares")
    if (pt < 0).any():
        raise BandscopeInputError(f"{p}negative param_time at checkpoints {_rows(pt < 0)} (first "
                                  f"{float(pt[pt < 0][0])!r}); parameter time is a distance travelled, >= 0")
    dec = np.flatnonzero(np.diff(pt) < 0)
    if dec.size:
        i = int(dec[0])
        raise BandscopeInputError(
            f"{p}param_time decreases from {pt[i]!r} (checkpoint {i}) to {pt[i + 1]!r} "
            f"(checkpoint {i + 1}); parameter time is cumulative and must be non-decreasing"
        )
    if require_advance and pt.size >= 2 and not pt[-1] > pt[0]:
        raise BandscopeInputError(
            f"{p}param_time does not advance (it is {pt[0]!r} at every checkpoint); parameter time "
            "is the distance the weights travelled and the analysis is in its units"
        )
    known_steps = False
    if "step" in ds:
        st = integer_steps(_values(ds, "step"), where=p.rstrip(": "))
        unknown = st == -1
        if unknown.all():
            pass
        elif unknown.any():
            raise BandscopeInputError(f"{p}step is unknown (-1) at checkpoints {_rows(unknown)} but known "
                                      "elsewhere; give every step or none")
        else:
            known_steps = True
            if (st < 0).any():
                raise BandscopeInputError(f"{p}negative step at checkpoints {_rows(st < 0)}")
            _check_increasing_steps(st, p)
    if not known_steps and bl.shape[0] >= 2:
        same = (pt[1:] == pt[:-1]) & (bl[1:] == bl[:-1]).all(axis=1)
        for opt in CHECKPOINT_VARS:
            if opt in ds:
                v = np.asarray(_values(ds, opt), dtype=np.float64)
                same &= (v[1:] == v[:-1]) | (np.isnan(v[1:]) & np.isnan(v[:-1]))
        if same.any():
            i = np.flatnonzero(same)
            pairs = ", ".join(f"{int(a)}={int(a) + 1}" for a in i[:10])
            raise BandscopeInputError(
                f"{p}checkpoints {pairs} are identical rows (a checkpoint logged twice); without a step "
                "column a repeat cannot be told from frozen weights: remove the duplicate, or log 'step'")
    if "lnp_step" in ds.coords and ds.sizes.get("lnp_step", 0):
        _check_increasing_steps(integer_steps(_values(ds, "lnp_step"), where=p.rstrip(": ")), p + "lnp_step: ")
    if "mse" in ds and has_bands(ds):
        mse = _values(ds, "mse")
        total = bl.sum(axis=1)
        ok = np.isclose(total, mse, rtol=mse_rtol, atol=1e-12) | ~np.isfinite(mse)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise BandscopeInputError(
                f"{p}band losses sum to {total[i]!r} at checkpoint {i} but mse column is {mse[i]!r}: "
                "the bands are not a complete orthogonal split of this MSE"
            )
    return ds


def _check_increasing_steps(st: np.ndarray, p: str = "") -> None:
    """Unique, strictly increasing steps; repeated steps are named as duplicated checkpoints."""
    if st.size < 2 or bool((st[1:] > st[:-1]).all()):  # strictly increasing: nothing to name
        return
    vals, first, counts = np.unique(st, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = []
        for v in vals[counts > 1][:10]:
            dup.append(f"step {int(v)} at rows {_rows(st == v)}")
        raise BandscopeInputError(f"{p}duplicated checkpoints: {'; '.join(dup)}; each checkpoint must be "
                                  "logged once (a row logged twice would be fitted twice)")
    dec = np.flatnonzero(np.diff(st) < 0)
    if dec.size:
        i = int(dec[0])
        raise BandscopeInputError(f"{p}step decreases at row {i + 1} ({int(st[i])} -> {int(st[i + 1])}); rows "
                                  "must be in training order")


def by_step(run: xr.Dataset) -> xr.Dataset:
    """The run indexed by optimizer step: ``by_step(run).sel(step=1000)`` (``docs/format.md``).

    One call, no copy of the data: ``step`` becomes a coordinate with an index on the
    ``checkpoint`` dimension (``Dataset.set_xindex``), so ``.sel(step=...)`` selects checkpoints by
    their step while every variable keeps its dims. Runs with unknown steps (``-1``) are refused.

    Examples
    --------
    >>> ds = make_run([[2.0, 1.0], [1.0, 0.5]], [0.0, 1.5], [0, 10])
    >>> float(by_step(ds).sel(step=10).param_time)
    1.5
    """
    st = np.asarray(run["step"].values)
    if (st < 0).any():
        raise BandscopeInputError(f"{_where(run)}steps are unknown (-1): a run without steps cannot be indexed "
                                  "by step; select by checkpoint instead (run.isel(checkpoint=...))")
    return run.set_coords("step").set_xindex("step")
