"""One atomic writer for every file bandscope writes: temporary file, fsync, rename.

Run files, results (netCDF, JSON), the HTML report, figures, forecast JSON, tables and Zarr
stores all go through :func:`write_atomic` (a file) or :func:`write_tree_atomic` (a directory):
a reader never sees a half-written output, a crash or a full disk leaves the previous version
(or nothing) at the path, and every failure names the path it was writing.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from pathlib import Path

from .lock import pid_alive

__all__ = ["write_atomic", "write_text_atomic", "write_tree_atomic", "stale_temp_files"]


def _tmp_name(path: Path) -> Path:
    """A temporary file beside ``path`` unique to this writer: ``NAME.<pid>.<random>.tmp``."""
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def stale_temp_files(path) -> list[Path]:
    """Temporary files of ``path`` (``NAME.<pid>.<random>.tmp``, or the old ``NAME.tmp``) left
    by writers that died on this host (their pid no longer runs)."""
    path = Path(path)
    out = []
    legacy = path.with_name(path.name + ".tmp")
    if legacy.exists():
        out.append(legacy)
    pat = re.compile(re.escape(path.name) + r"\.(\d+)\.[0-9a-f]+\.tmp$")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return out
    for p in entries:
        m = pat.match(p.name)
        if m and not pid_alive(int(m.group(1))):
            out.append(p)
    return out


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def write_atomic(path, write, *, size_hint: int = 0) -> Path:
    """Run ``write(tmp)`` on a temporary file unique to this writer, fsync it, move it over
    ``path`` (``os.replace``). On any failure the temporary file is removed, ``path`` is left as
    it was, and a full disk is reported as ``OSError(ENOSPC)`` naming ``path`` (codecs often
    say only "HDF error"). Nothing stays open or locked, so the next write can succeed."""
    path = Path(path)
    _prepare_parent(path)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:  # pragma: no cover - best effort; the name is unique to this writer
            pass
        if isinstance(exc, Exception):
            free = _free_bytes(path.parent)
            enospc = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            if not enospc and free is not None and free < max(size_hint, 1) + (1 << 20):
                enospc = "HDF" in str(exc) or isinstance(exc, (OSError, RuntimeError))
            if enospc:
                raise OSError(errno.ENOSPC, f"disk full (ENOSPC) while writing {path}: no space left on "
                              f"device ({free if free is not None else 'unknown'} bytes free); "
                              f"{path} still holds its previous version. Free space and write again",
                              str(path)) from exc
            if isinstance(exc, OSError):
                raise _named(exc, path) from exc
        raise
    _fsync_dir(path.parent)
    return path


def _prepare_parent(path: Path, *, directory: bool = False) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        bad = next((p for p in [path.parent, *path.parent.parents] if p.exists() and not p.is_dir()), path.parent)
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write {path}: {bad} is a regular file, not a directory "
                                 "(choose another output path, or move that file away)", str(bad)) from exc
    if path.is_dir() and not directory:
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a directory, not a file "
                                "(give a file name for this output)", str(path))


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` as an error naming ``path`` (what bandscope was writing), keeping its errno."""
    name = str(exc.filename) if exc.filename else ""
    if name == str(path):
        return exc
    return type(exc)(exc.errno, f"cannot write {path}: {exc.strerror or exc}", str(path))


def write_text_atomic(path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`write_atomic`)."""
    data = text.encode(encoding)
    return write_atomic(path, lambda tmp: Path(tmp).write_bytes(data), size_hint=len(data))


def write_tree_atomic(path, write) -> Path:
    """Run ``write(tmp)`` to build a directory (a Zarr store) beside ``path``, then put it in
    place: an existing ``path`` is moved aside first and removed after, so a reader sees the old
    store or the new one, never a half-written one (for a moment there may be none). On failure
    the temporary directory is removed and the error names ``path``."""
    path = Path(path)
    _prepare_parent(path, directory=True)
    if path.exists() and not path.is_dir():
        raise FileExistsError(errno.EEXIST, f"cannot write the store {path}: a regular file of that name exists "
                              "(a store is a directory; move the file away or choose another name)", str(path))
    tmp = _tmp_name(path)
    try:
        write(tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _named(exc, path) from exc
        raise
    old = tmp.with_suffix(".old")
    if path.exists():
        path.replace(old)
    tmp.replace(path)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(path.parent)
    return path
