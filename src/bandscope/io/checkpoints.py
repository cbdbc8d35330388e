"""Checkpoint files: a numpy reader of ``.safetensors``, the loader registry, chord parameter time.

``.safetensors`` are read with numpy (:func:`read_safetensors`, bfloat16 included, no torch and
no ``safetensors`` package needed). Other checkpoint types are read by loaders that extensions
register with :func:`register_checkpoint_loader` (the torch adapter adds ``.pt``, ``.pth`` and
``.bin``, always ``torch.load(..., weights_only=True)``). Nothing here imports
:mod:`bandscope.torch`.

An unreadable checkpoint (broken symlink, truncated file, a pickle named ``.safetensors``, an
empty ``.pt``) is an error naming the file; with ``skip_unreadable`` it keeps its row with
``param_time`` NaN and the reason in ``note`` (rows never shift). Non-finite weights make
parameter time NaN from that checkpoint on, with the reason in ``note``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ..errors import BandscopeInputError, input_error_from

__all__ = ["CHECKPOINT_EXTENSIONS", "TORCH_EXTENSIONS", "read_safetensors", "register_checkpoint_loader",
           "checkpoint_loaders", "load_state_dict", "param_time_from_files"]

#: torch files (read by the torch adapter's loader; ``.ckpt`` is a Lightning checkpoint, whose
#: ``state_dict`` entry is used)
TORCH_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_EXTENSIONS = (".safetensors", *TORCH_EXTENSIONS)


_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "BF16": "<u2"}


def _what_is_it(head: bytes) -> str:
    if head.startswith(b"\x80"):
        return "; it starts like a Python pickle (a torch .pt file named .safetensors?)"
    if head.startswith(b"PK\x03\x04"):
        return "; it is a zip archive (a torch .pt file named .safetensors?)"
    return ""


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file into numpy arrays, checking its structure (pure numpy).

    Layout: 8-byte little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape",
    "data_offsets": [begin, end]}}``, then the data. bfloat16 is widened exactly to float32
    (numpy has no bfloat16). Any inconsistency -- a truncated file, a header that runs past the
    end, offsets outside the data, a size that does not match dtype x shape, a pickle named
    ``.safetensors`` -- raises :class:`~bandscope.errors.BandscopeInputError` naming the file.

    Examples
    --------
    >>> import tempfile, os, json, struct
    >>> p = os.path.join(tempfile.mkdtemp(), "a.safetensors")
    >>> h = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    >>> _ = open(p, "wb").write(struct.pack("<Q", len(h)) + h + np.float32([1, 2]).tobytes())
    >>> read_safetensors(p)
    {'w': array([1., 2.], dtype=float32)}
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(2, f"no such checkpoint (or a broken symlink): {path}", str(path)) from None
    except OSError as exc:
        raise BandscopeInputError(f"{path}: cannot read: {exc.strerror or exc}", path=path) from None

    def bad(why):
        return BandscopeInputError(f"{path}: not a valid safetensors file: {why}{_what_is_it(data[:8])}", path=path)

    if len(data) < 8:
        raise bad(f"{len(data)} bytes, shorter than the 8-byte header length (empty or truncated)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise bad(f"header length {n} runs past the end of the {len(data)}-byte file (truncated?)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise bad(f"entry {name!r} lacks dtype/shape/data_offsets") from None
        if dtype not in _ST_DTYPES:
            raise BandscopeInputError(f"{path}: tensor {name!r} has dtype {dtype}, which bandscope cannot read "
                                      f"without torch; supported: {sorted(_ST_DTYPES)}", path=path)
        np_dtype = np.dtype(_ST_DTYPES[dtype])
        size = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if not (0 <= begin <= end <= len(body)) or end - begin != size:
            raise bad(f"tensor {name!r} ({dtype} {shape}) has data offsets [{begin}, {end}] but needs {size} "
                      f"bytes within {len(body)} (truncated?)")
        arr = np.frombuffer(body[begin:end], dtype=np_dtype).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr
    return out


_LOADERS: dict[str, Callable[[Path], Mapping]] = {".safetensors": read_safetensors}


def register_checkpoint_loader(suffix: str, loader: Callable[[Path], Mapping]) -> None:
    """Read checkpoints ending in ``suffix`` with ``loader(path) -> {name: array or tensor}``.

    Extensions call this when imported (the torch adapter registers ``.pt``, ``.pth``, ``.bin``).
    A loader raises an exception naming the file when it cannot read it.
    """
    suffix = suffix.lower()
    if not suffix.startswith("."):
        raise ValueError(f"suffix must start with '.', got {suffix!r}")
    if not callable(loader):
        raise TypeError(f"loader must be callable, got {type(loader).__name__}")
    _LOADERS[suffix] = loader


def checkpoint_loaders() -> dict[str, Callable]:
    """The registered checkpoint loaders by suffix (a copy)."""
    return dict(_LOADERS)


def _loader_for(path: Path) -> Callable:
    suffix = path.suffix.lower()
    if suffix not in _LOADERS:
        from ..plugins import load_plugins

        _, failed = load_plugins()  # extensions register their loaders when imported
        if suffix not in _LOADERS:
            if suffix in TORCH_EXTENSIONS:
                broken = "; ".join(f"{k} ({v})" for k, v in failed.items())
                fix = (f"the torch extension could not be loaded: {broken}" if failed else
                       "torch files need the torch extra (pip install 'bandscope[torch]')")
                fix += "; or convert the checkpoints to .safetensors"
            else:
                torch_too = "" if ".pt" in _LOADERS else f", {', '.join(TORCH_EXTENSIONS)} with the torch extra"
                fix = (f"readable types: {', '.join(sorted(_LOADERS))}{torch_too}"
                       "; convert the checkpoints to .safetensors, or register a reader with "
                       "bandscope.io.checkpoints.register_checkpoint_loader")
            raise BandscopeInputError(f"{path}: no reader for {suffix} checkpoints: {fix}", path=path)
    return _LOADERS[suffix]


def load_state_dict(path) -> Mapping:
    """A checkpoint's state dict through its registered loader; any failure names the file."""
    path = Path(path)
    loader = _loader_for(path)
    if not path.exists():
        what = "a broken symlink" if path.is_symlink() else "missing"
        raise BandscopeInputError(f"{path}: unreadable checkpoint: {what}", path=path)
    try:
        return loader(path)
    except BandscopeInputError:
        raise
    except Exception as exc:  # a codec's error: name the file, keep the codec's words
        raise input_error_from(exc, path, "unreadable checkpoint") from exc


def _nonfinite(sd: Mapping, keys) -> list[str]:
    out = []
    for k, v in sd.items():
        if keys is not None and k not in keys:
            continue
        a = v.detach().cpu().float().numpy() if hasattr(v, "detach") else np.asarray(v)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            out.append(str(k))
    return out


def param_time_from_files(files, *, keys=None, load=None, skip_unreadable: bool = False):
    """Chord parameter time over checkpoint files, one row per file, reasons in ``note``.

    Shared by :func:`param_time_table` and :func:`bandscope.torch.checkpoint_param_time`.
    ``load(path)`` reads one file (default: the registered loader). Unreadable files raise
    (``BandscopeInputError`` naming the file) unless ``skip_unreadable``: then the row stays,
    with NaN and the reason, and the next readable checkpoint's chord starts from the last
    readable one (said in its note). Non-finite weights: NaN from there on, reason in ``note``.
    """
    import pandas as pd

    from ..transforms.paramtime import parameter_time

    load = load or load_state_dict
    files = [Path(f) for f in files]
    names = [f.name for f in files]
    notes = [""] * len(files)
    pt = np.full(len(files), np.nan)
    readable: list[int] = []
    current = {"i": -1}
    nan_from = None

    def states():
        nonlocal nan_from
        for i, f in enumerate(files):
            try:
                sd = load(f)
            except BandscopeInputError as exc:
                if not skip_unreadable:
                    raise
                notes[i] = f"skipped: {exc}"
                continue
            if readable and readable[-1] != i - 1:
                notes[i] = (f"chord from {names[readable[-1]]} (checkpoints in between unreadable)")
            bad = _nonfinite(sd, keys)
            if bad and nan_from is None:
                nan_from = i
                notes[i] = (f"non-finite weights in {bad[:5]}{'...' if len(bad) > 5 else ''}: parameter time is "
                            "undefined from this checkpoint on (diverged training?)")
            readable.append(i)
            current["i"] = i
            yield sd

    try:
        s = parameter_time(states(), keys=None if keys is None else sorted(keys)).values
    except BandscopeInputError:
        raise
    except (ValueError, TypeError) as exc:
        i = current["i"]
        where = f"{files[i]}" if i >= 0 else str(files[0].parent)
        raise BandscopeInputError(f"{where}: {exc}", path=where) from exc
    pt[readable] = s
    if nan_from is not None:
        pt[[i for i in readable if i >= nan_from]] = np.nan
        for i in readable:
            if i > nan_from and not notes[i]:
                notes[i] = f"undefined: {names[nan_from]} has non-finite weights"
    return pd.DataFrame({"name": names, "param_time": pt, "note": notes})
