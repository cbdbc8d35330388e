"""Parameter time from checkpoints a user already has (key search A.7), in torch.

A checkpoint is a state dict saved as ``.safetensors`` or as a torch file (``.pt``, ``.pth``,
``.bin``, or a Lightning ``.ckpt``, whose ``state_dict`` entry is used). Torch files are loaded
with ``torch.load(..., weights_only=True)`` only: a checkpoint
from elsewhere must never run code, so anything that is not plain tensors/containers is refused.
The numpy twin used by the ``bandscope param-time`` command is
:func:`bandscope.cli.record.param_time_table`; both are tested against each other and share
:func:`bandscope.cli.record.param_time_from_files` (rows, reasons in ``note``).
An unreadable file (missing, truncated, a pickle named ``.safetensors``, empty) raises
:class:`bandscope.errors.BandscopeInputError` naming it.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..errors import BandscopeInputError, input_error_from
from ..io.checkpoints import CHECKPOINT_EXTENSIONS
from ..io.natural_sort import natural_key as _natural_key

__all__ = ["load_checkpoint", "checkpoint_param_time", "CHECKPOINT_EXTENSIONS"]



def _unwrap(obj: object, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict: the object itself, or its ``state_dict`` / ``model`` entry."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    raise BandscopeInputError(f"{path}: not a state dict (a mapping of names to tensors, optionally under "
                     f"'state_dict' or 'model'); got {type(obj).__name__}", path=path)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` or a torch file, never executing code.

    Torch files go through ``torch.load(path, weights_only=True)``; a pickle that would build
    arbitrary objects (or run code) raises ``ValueError`` naming the file.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.pt"); torch.save({"w": torch.ones(2)}, p)
    >>> load_checkpoint(p)
    {'w': tensor([1., 1.])}
    """
    path = Path(path)
    if path.suffix not in CHECKPOINT_EXTENSIONS:
        raise BandscopeInputError(f"{path}: unknown checkpoint type {path.suffix!r}; expected one of "
                                  f"{CHECKPOINT_EXTENSIONS}", path=path)
    if not path.exists():
        what = "a broken symlink" if path.is_symlink() else "no such file"
        raise BandscopeInputError(f"{path}: unreadable checkpoint: {what}", path=path)
    if path.stat().st_size == 0:
        raise BandscopeInputError(f"{path}: unreadable checkpoint: empty file (0 bytes)", path=path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except Exception as exc:  # SafetensorError: truncated, or a pickle named .safetensors
            from ..io.checkpoints import read_safetensors

            read_safetensors(path)  # raises naming the structural problem when there is one
            raise input_error_from(exc, path, "unreadable safetensors checkpoint") from exc
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BandscopeInputError(
            f"refused to load {path}: it is not a plain weights file (torch.load with "
            f"weights_only=True rejected it: {str(exc).splitlines()[0]}). bandscope never "
            "unpickles arbitrary objects from checkpoints; re-save it as a state dict or safetensors.",
            path=path,
        ) from exc
    except (EOFError, RuntimeError, OSError, ValueError) as exc:  # truncated zip, empty pickle, ...
        raise input_error_from(exc, path, "unreadable torch checkpoint (truncated or corrupt?)") from exc
    return _unwrap(obj, path)


def _list(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir():
        files = [p for p in Path(paths).iterdir()
                 if p.suffix in CHECKPOINT_EXTENSIONS and (p.is_file() or p.is_symlink())]
        files.sort(key=lambda p: _natural_key(p.name))
        if not files:
            raise BandscopeInputError(f"no checkpoints ({', '.join(CHECKPOINT_EXTENSIONS)}) in {paths}")
        return files
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def checkpoint_param_time(paths: Iterable | str | os.PathLike, *, model: torch.nn.Module | None = None,
                          trainable_only: bool = True, skip_unreadable: bool = False) -> pd.DataFrame:
    """Chord parameter time ``s_k = sum_{m<=k} ||theta_m - theta_{m-1}||_2`` over checkpoints.

    Parameters
    ----------
    paths : directory or iterable of files
        A directory is read in natural sort order of file names.
    model : nn.Module, optional
        With ``trainable_only``, restrict the sum to this model's parameters with
        ``requires_grad`` (key search A.7: all trainable parameters). Without a model every
        floating tensor of the state dict counts (buffers included).
    skip_unreadable : bool
        Keep unreadable files as rows with NaN and the reason in ``note`` instead of raising.

    Returns
    -------
    pandas.DataFrame
        Columns ``name`` (file name), ``param_time`` (float64, starting at 0) and ``note`` (why
        a value is NaN: an unreadable file, non-finite weights).
    """
    from ..io.checkpoints import param_time_from_files

    files = _list(paths)
    keys = None
    if model is not None and trainable_only:
        keys = {n for n, p in model.named_parameters() if p.requires_grad}
    return param_time_from_files(files, keys=keys, load=load_checkpoint, skip_unreadable=skip_unreadable)
