"""A results variable as numpy, read from its Variable without building a DataArray: the one
reader of the tables, the JSON writer and the figures (a DataArray per read costs more than the
arithmetic they do with it)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

__all__ = ["values", "json_lists"]


def values(ds: xr.Dataset, var: str, dims: Sequence[str] | None = None, **at: int) -> npt.NDArray[Any]:
    """``ds[var]`` as numpy: taken at the integer positions ``at`` along the dims they name, then
    with the remaining axes in the order ``dims`` (which must be exactly the remaining dims;
    None keeps the variable's order). The positional twin of ``ds[var].isel(**at).transpose(*dims).values``.

    >>> import xarray as xr
    >>> ds = xr.Dataset({"x": (("run", "band"), [[1, 2, 3], [4, 5, 6]])})
    >>> values(ds, "x", ("band", "run"))[0], values(ds, "x", band=2)
    (array([1, 4]), array([3, 6]))
    """
    v = ds.variables[var]
    names = [str(d) for d in v.dims]
    unknown = set(at) - set(names)
    if unknown:
        raise ValueError(f"{var} has dims {tuple(names)}; no dim {sorted(unknown)}")
    vals = np.asarray(v.values)
    if at:
        vals = np.asarray(vals[tuple(at.get(d, slice(None)) for d in names)])
    rest = [d for d in names if d not in at]
    if dims is None:
        return vals
    if sorted(dims) != sorted(rest):
        raise ValueError(f"{var} has dims {tuple(rest)}" + (f" after {sorted(at)}" if at else "")
                         + f", not {tuple(dims)}")
    return np.transpose(vals, [rest.index(d) for d in dims])


def json_lists(vals: npt.NDArray[Any]) -> Any:
    """``vals`` as nested python lists of JSON-safe scalars: NaN and ±inf as None, bytes decoded.

    >>> import numpy as np
    >>> json_lists(np.array([[1.0, np.nan], [np.inf, 2.5]])), json_lists(np.array([b"a", b"b"]))
    ([[1.0, None], [None, 2.5]], ['a', 'b'])
    """
    if vals.dtype.kind == "f":
        obj = vals.astype(object)
        obj[~np.isfinite(vals)] = None
        return obj.tolist()
    if vals.dtype.kind == "S":
        return np.char.decode(vals).tolist()
    return vals.tolist()
