"""Ownership of a run file: one writer at a time (``docs/format.md``, "Rules").

A writer that keeps a run file up to date (:class:`bandscope.torch.RunRecorder`, a training
job) owns it for as long as it runs: it holds an exclusive ``fcntl.flock`` on the sidecar
``RUN.lock`` (``run.nc`` -> ``run.nc.lock``), which records who holds it (pid, host, time,
command line). A second writer -- another recorder in the same process, or a job started twice
with the same ``--out`` -- is refused at once with :class:`bandscope.errors.RunFileBusyError`
naming the owner's pid and host; readers never need the lock (writes are atomic renames).

The kernel drops an ``flock`` when its process dies, however it dies (SIGKILL included), so a
lock file left by a dead writer is reclaimed by the next one without any action. Where the file
system does not support ``flock`` the lock falls back to the lock file's contents: a lock whose
pid is dead on this same host is reclaimed; one held from another host is refused.

Examples
--------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "run.nc")
>>> with RunFileLock(path) as lock:
...     try:
...         RunFileLock(path).acquire()
...     except RunFileBusyError as exc:
...         print("refused:", exc.owner["pid"] == os.getpid())
refused: True
>>> os.path.exists(path + ".lock")
False
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import RunFileBusyError

try:  # POSIX; elsewhere the lock-file contents alone decide
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunFileLock", "lock_path", "pid_alive", "read_owner"]

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def lock_path(path) -> Path:
    """The sidecar lock file of a run file: ``run.nc`` -> ``run.nc.lock``."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie counts as dead).

    >>> pid_alive(os.getpid())
    True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) holds no lock and writes nothing
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_owner(path) -> dict:
    """What the lock file of ``path`` says about its writer ({} if none or unreadable)."""
    try:
        return json.loads(lock_path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another writer (its lock file says nothing more)"
    since = owner.get("time")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    cmd = owner.get("argv") or ""
    return (f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} (since {when}"
            + (f"; command: {cmd}" if cmd else "") + ")")


class RunFileLock:
    """Exclusive ownership of one run file by this process and this object.

    Parameters
    ----------
    path : str or Path
        The run file (``.nc``); the lock is the sidecar :func:`lock_path`.

    Notes
    -----
    Use as a context manager or call :meth:`acquire` / :meth:`release`. :meth:`acquire` raises
    :class:`bandscope.errors.RunFileBusyError` naming the other writer's pid and host when the
    file is owned; :meth:`release` removes the lock file.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.lock_file = lock_path(self.path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this lock holds the run file now."""
        return self._fd is not None

    def _refuse(self, owner: dict):
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            raise RunFileBusyError(
                f"{self.path} is already being written by another recorder in this same process (pid "
                f"{os.getpid()} on host {owner.get('host')}); two writers on one run file would overwrite each "
                "other. close() the first one (a recorder kept alive by an old traceback still owns the file), "
                "then open a new one with resume=True", path=self.path, owner=owner)
        raise RunFileBusyError(
            f"{self.path} is being written by {_describe(owner)}; two writers on one run file would "
            f"overwrite each other. Stop that writer, or record to another path (lock: {self.lock_file})",
            path=self.path, owner=owner)

    def acquire(self) -> RunFileLock:
        """Take the lock or raise :class:`~bandscope.errors.RunFileBusyError`."""
        if self._fd is not None:
            return self
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                got = self._flock(fd)
                if got is None:  # no flock here: decide from the contents
                    owner = self._owner_from_fd(fd)
                    if owner and not self._stale(owner):
                        self._refuse(owner)
                elif not got:
                    self._refuse(self._owner_from_fd(fd))
                # the path may have been unlinked (released) between open and flock: retry
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                self._write_owner(fd)
                self._fd = fd
                return self
            except BaseException:
                if self._fd is None:
                    os.close(fd)
                raise
        raise RunFileBusyError(f"{self.path}: could not take the lock {self.lock_file} (it keeps being "
                               "replaced by another writer)", path=self.path)

    @staticmethod
    def _flock(fd: int):
        """True: locked; False: held by another; None: this file system has no flock."""
        if fcntl is None:  # pragma: no cover
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in _NO_FLOCK:
                return None
            raise

    @staticmethod
    def _owner_from_fd(fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            data = os.read(fd, 65536)
            return json.loads(data.decode() or "{}")
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _stale(owner: dict) -> bool:
        """A lock-file owner that is a dead pid on this host (only used without flock)."""
        try:
            return owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", -1)))
        except (TypeError, ValueError):
            return True

    def _write_owner(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
                "argv": " ".join(sys.argv)[:500], "file": str(self.path)}
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        try:
            os.fsync(fd)
        except OSError:  # pragma: no cover
            pass

    def release(self) -> None:
        """Give up ownership and remove the lock file (a no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            try:
                if os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino:
                    os.unlink(self.lock_file)
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> RunFileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a forgotten lock must not outlive its owner object
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"RunFileLock({str(self.path)!r}, held={self.held})"
