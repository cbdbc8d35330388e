"""Integrity of a Zarr store before it is trusted: metadata present, every chunk present, codecs readable.

A Zarr array whose chunk file is missing reads as its fill value (NaN for floats: a "diverged"
band; uninitialised memory for integers without a fill value: different steps in different
processes), and a truncated chunk raises the codec's own error (``zlib.error``). bandscope lists
the store before reading it (:func:`check_zarr_store`) and reads each variable under an error
boundary that names the store and the variable (:func:`load_zarr`), so none of these reach a
user as a number or as a codec's traceback.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from ..errors import BandscopeInputError

__all__ = ["check_zarr_store", "load_zarr"]

_META_V2 = (".zmetadata", ".zgroup")


def _expected_chunks(meta: dict) -> list[str]:
    shape, chunks = meta["shape"], meta["chunks"]
    sep = meta.get("dimension_separator") or "."
    if not shape:
        return ["0"]
    grid = [range(max(1, math.ceil(s / c))) if s else range(0) for s, c in zip(shape, chunks)]
    return [sep.join(str(i) for i in idx) for idx in itertools.product(*grid)]


def check_zarr_store(path) -> Path:
    """Refuse a Zarr (format 2) store that is not whole, naming what is missing.

    Checks that ``path`` is a directory holding Zarr metadata (``.zmetadata`` or ``.zgroup``;
    an empty or half-copied ``x.zarr`` is named as such), and that every chunk of every array
    exists (the grid ``ceil(shape / chunks)`` of its ``.zarray``): a missing chunk would read as
    the fill value. Stores in Zarr format 3 (``zarr.json``) are checked for their metadata only.

    Raises
    ------
    BandscopeInputError
        naming the store, the variable and the first missing chunk.
    FileNotFoundError
        when ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, f"no such Zarr store (a directory NAME.zarr): {path}", str(path))
    if not path.is_dir():
        raise BandscopeInputError(f"{path}: not a Zarr store: a Zarr store is a directory, this is a file", path=path)
    if (path / "zarr.json").exists():
        return path
    if not any((path / m).exists() for m in _META_V2):
        what = "an empty directory" if not any(path.iterdir()) else "a directory without Zarr metadata"
        raise BandscopeInputError(f"{path}: not a Zarr store: {what} (no .zmetadata or .zgroup); was it copied "
                                  "or written completely?", path=path)
    for zarray in sorted(path.rglob(".zarray")):
        var = zarray.parent.relative_to(path).as_posix()
        try:
            meta = json.loads(zarray.read_text())
        except (OSError, ValueError) as exc:
            raise BandscopeInputError(f"{path}: variable {var!r}: unreadable array metadata ({exc})",
                                      path=path) from exc
        present = {p.name for p in zarray.parent.iterdir()} if meta.get("dimension_separator", ".") == "." else None
        for key in _expected_chunks(meta):
            found = key in present if present is not None else (zarray.parent / key).exists()
            if not found:
                raise BandscopeInputError(
                    f"{path}: variable {var!r} is missing its chunk {key!r} (a missing chunk would read as the "
                    f"fill value {meta.get('fill_value')!r}, not as data): the store is incomplete; copy or "
                    "write it again", path=path)
    return path


def load_zarr(ds, path):
    """Load every variable of the lazily opened store ``ds`` into memory, turning a codec's error
    (a truncated or corrupt chunk) into a :class:`~bandscope.errors.BandscopeInputError` naming
    the store and the variable."""
    for name in list(ds.variables):
        try:
            ds[name].load()
        except Exception as exc:  # noqa: BLE001 -- zlib.error, numcodecs/blosc errors, ValueError, ...
            raise BandscopeInputError(f"{path}: variable {name!r} cannot be decoded ({type(exc).__name__}: {exc}): "
                                      "a chunk is truncated or corrupt; copy or write the store again",
                                      path=path) from exc
    return ds
