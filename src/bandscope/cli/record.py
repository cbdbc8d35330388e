"""The file commands of the recording side: ``bandscope bands`` and ``bandscope param-time``.

Pure numpy: ``bands`` reads ``.npz`` panels and reconstructions; ``param-time`` reads
``.safetensors`` with its own reader (:func:`read_safetensors`, bfloat16 included, no torch and
no ``safetensors`` package needed). Other checkpoint types are read by loaders that extensions
register with :func:`register_checkpoint_loader`: the torch adapter
(:mod:`bandscope.torch.cli`, an entry point of group ``bandscope.commands``) adds ``.pt``,
``.pth`` and ``.bin`` (always ``torch.load(..., weights_only=True)``), the ``train`` command
and ``param-time --arch``. Nothing here imports :mod:`bandscope.torch`.

An unreadable checkpoint (broken symlink, truncated file, a pickle named ``.safetensors``, an
empty ``.pt``) is an error naming the file; with ``skip_unreadable`` it keeps its row with
``param_time`` NaN and the reason in ``note`` (rows never shift). Non-finite weights make
parameter time NaN from that checkpoint on, with the reason in ``note``.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BandscopeInputError, input_error_from
from ..io.checkpoints import (
    CHECKPOINT_EXTENSIONS,
    checkpoint_loaders,
    param_time_from_files,
    read_safetensors,
    register_checkpoint_loader,
)
from ..io.natural_sort import natural_key

if TYPE_CHECKING:
    import argparse

    import pandas as pd

__all__ = ["register", "bands_table", "param_time_table", "natural_key", "read_safetensors",
           "register_checkpoint_loader", "checkpoint_loaders", "CHECKPOINT_EXTENSIONS"]



def _list_files(path: str | Path, extensions: tuple[str, ...]) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        # a broken symlink is listed (and then refused by name), never silently left out
        files = [p for p in path.iterdir() if (p.is_file() or p.is_symlink()) and p.suffix.lower() in extensions]
        if not files:
            raise ValueError(f"no files with extensions {extensions} in {path}")
        return sorted(files, key=lambda p: natural_key(p.name))
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(2, f"no such file or directory: {path}", str(path))
    return [path]


def _npz_images(path: str | Path, prefer: str) -> np.ndarray:
    """The image array of an ``.npz``: key ``prefer``, else its only array. (N, C, S, S)."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(2, f"no such file (or a broken symlink): {path}", str(path)) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise input_error_from(exc, path, "not a readable .npz archive") from None
    if not hasattr(z, "keys"):
        raise BandscopeInputError(f"{path}: a single .npy array, expected an .npz archive", path=path)
    with z:
        keys = list(z.keys())
        try:
            if prefer in keys:
                arr = z[prefer]
            elif len([k for k in keys if z[k].ndim >= 3]) == 1:
                arr = next(z[k] for k in keys if z[k].ndim >= 3)
            else:
                raise BandscopeInputError(f"{path}: expected an array {prefer!r} or a single image array; "
                                          f"found keys {keys}", path=path)
        except ValueError as exc:  # numpy refuses object (pickled) arrays with allow_pickle=False
            if "allow_pickle" not in str(exc) and "Object arrays" not in str(exc):
                raise input_error_from(exc, path, "unreadable array in the .npz archive") from None
            raise BandscopeInputError(f"{path}: holds an object (pickled) array, which bandscope never unpickles; "
                                      "save the images as a numeric array, e.g. np.savez(path, images=np.asarray("
                                      "images, dtype=np.float32))", path=path) from None
    if arr.dtype.kind not in "biuf":
        raise BandscopeInputError(f"{path}: images must be numbers (uint8 or float), got dtype {arr.dtype}",
                                  path=path)
    if arr.ndim != 4:
        raise BandscopeInputError(f"{path}: images must be (N, C, S, S), got shape {arr.shape}", path=path)
    if 0 in arr.shape:
        raise BandscopeInputError(f"{path}: empty panel, shape {arr.shape}; band losses need at least one "
                                  "image with at least one pixel", path=path)
    return arr


def bands_table(panel: str | Path, recon: str | Path) -> pd.DataFrame:
    """Band losses of saved panel reconstructions, one row per reconstruction file.

    Parameters
    ----------
    panel : path to ``.npz``
        The panel images (N, C, S, S) in [0, 1] (key ``images`` or the only array).
    recon : path to ``.npz`` or a directory of them
        Reconstructions (key ``recon`` or the only array), e.g. the float16 archives the paper
        stores; a directory is read in natural sort order of file names.

    Returns
    -------
    pandas.DataFrame
        ``name``, ``band_1``, ``band_2``, ..., ``mse`` (panel means, key search A.6, computed with
        :func:`bandscope.transforms.bands.band_losses` in float64).
    """
    import pandas as pd

    from ..transforms.bands import band_losses

    x = _npz_images(panel, "images")
    rows = []
    for f in _list_files(recon, (".npz",)):
        r = _npz_images(f, "recon")
        if r.shape != x.shape:
            raise BandscopeInputError(f"{f}: reconstructions have shape {r.shape}, the panel {x.shape}", path=f)
        bl = band_losses(x, r, dtype=np.float64).values
        row: dict[str, Any] = {"name": f.name}
        row.update({f"band_{int(b)}": float(v) for b, v in zip(2 ** np.arange(bl.size), bl)})
        row["mse"] = float(np.mean((x.astype(np.float64) - r.astype(np.float64)) ** 2))
        rows.append(row)
    return pd.DataFrame(rows)


def param_time_table(ckpt_dir: str | Path, *, trainable: Any = None, skip_unreadable: bool = False) -> pd.DataFrame:
    """Chord parameter time over a directory of checkpoints (key search A.7).

    ``s_0 = 0``, ``s_k = s_{k-1} + ||theta_k - theta_{k-1}||_2`` over all floating tensors of
    the state dicts (or only the names in ``trainable``), in float64, files in natural sort
    order. ``.safetensors`` are read with numpy (:func:`read_safetensors`); other types through
    a registered loader (torch files: ``weights_only=True``, a pickle that would run code is
    refused).

    Parameters
    ----------
    skip_unreadable : bool
        Keep going past unreadable files (their row: NaN and the reason in ``note``) instead
        of raising :class:`~bandscope.errors.BandscopeInputError` naming the first one.

    Returns
    -------
    pandas.DataFrame
        ``name`` (file name), ``param_time`` and ``note`` ('' or why the value is NaN / how it
        was measured).
    """
    files = _list_files(ckpt_dir, CHECKPOINT_EXTENSIONS)
    return param_time_from_files(files, keys=None if trainable is None else set(trainable),
                                 skip_unreadable=skip_unreadable)


def _write_table(df: pd.DataFrame, out: str | None) -> None:
    if out:
        from ..io.atomic import write_atomic

        write_atomic(out, lambda tmp: df.to_csv(tmp, index=False))
        print(f"wrote {len(df)} rows to {out}", file=sys.stderr)
    else:
        df.to_csv(sys.stdout, index=False)


def _cmd_bands(args: argparse.Namespace) -> int:
    _write_table(bands_table(args.panel, args.recon), args.out)
    return 0


def _cmd_param_time(args: argparse.Namespace) -> int:
    df = param_time_table(args.ckpt_dir, trainable=getattr(args, "trainable", None),
                          skip_unreadable=args.skip_unreadable)
    for name, note in zip(df["name"], df["note"]):
        if note:
            print(f"param-time: {name}: {note}", file=sys.stderr)
    _write_table(df, args.out)
    return 0


def register(subparsers: Any) -> None:
    """Add ``bands`` and ``param-time`` to the ``bandscope`` CLI's subparsers."""
    p = subparsers.add_parser("bands", help="band losses of saved panel reconstructions (.npz)",
                              description="One row per reconstruction file: name, band_1, band_2, ..., mse. "
                              "PANEL.npz and RECON.npz hold one array (N, C, S, S) each (key 'images' / "
                              "'recon' or the only array); RECON may be a directory of .npz files "
                              "(natural sort order).")
    p.add_argument("panel")
    p.add_argument("recon")
    p.add_argument("--out", help="CSV file (default: stdout)")
    p.set_defaults(func=_cmd_bands)

    p = subparsers.add_parser("param-time", help="chord parameter time from a directory of checkpoints",
                              description="One row per checkpoint (natural sort order of file names): "
                              "name, param_time (starting at 0), note (why a value is NaN). Checkpoints are "
                              "state dicts in .safetensors (read with numpy) or, with the torch extra, torch "
                              "files (.pt/.pth/.bin, loaded with weights_only=True). All floating tensors "
                              "count, unless --arch (torch extra) restricts to the model's trainable "
                              "parameters. An unreadable checkpoint is an error naming it.")
    p.add_argument("ckpt_dir")
    p.add_argument("--out", help="CSV file (default: stdout)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="keep going past unreadable checkpoints: their row gets NaN and the reason (also on "
                   "stderr); the next chord starts from the last readable checkpoint")
    p.set_defaults(func=_cmd_param_time)
