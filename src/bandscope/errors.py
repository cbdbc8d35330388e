"""The exceptions bandscope raises for expected failures (``docs/cli.md``, "Error boundary").

An *expected* failure is one caused by the input or the environment, not by a bug: a file that
is missing, corrupt, empty or in the wrong format; a log that breaks a rule of
``docs/format.md``; a run file owned by another writer; a full disk. bandscope raises
:class:`BandscopeInputError` (a ``ValueError``, so ``except ValueError`` keeps working) with a
message that names the file and the problem, or a plain ``OSError`` from the operating system
(which names the path). The command line turns both into exit status 2 and a one-line message;
anything else is a bug and keeps its traceback.

Library callers catch the same classes:

>>> from bandscope.errors import BandscopeInputError
>>> try:
...     raise BandscopeInputError("run.csv: no 'param_time' column", path="run.csv")
... except ValueError as exc:
...     print(exc.path, "|", exc)
run.csv | run.csv: no 'param_time' column
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["BandscopeInputError", "RunFileBusyError", "input_error_from"]


class BandscopeInputError(ValueError):
    """Bad or unreadable input: the message names the file (if any) and what is wrong with it.

    Parameters
    ----------
    message : str
        What is wrong and what was expected.
    path : str or Path, optional
        The file concerned (also in the message); kept as ``.path`` for callers.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class RunFileBusyError(BandscopeInputError):
    """A run file is owned by another live writer (``docs/format.md``, "File ownership").

    ``.owner`` holds what the lock file says about that writer (``pid``, ``host``, ``time``,
    ``argv``).
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 owner: dict[str, Any] | None = None) -> None:
        super().__init__(message, path=path)
        self.owner = dict(owner or {})


def input_error_from(exc: BaseException, path: str | os.PathLike[str],
                     what: str = "cannot read") -> BandscopeInputError:
    """Wrap a codec's or pandas' exception so that the message names ``path``.

    >>> str(input_error_from(ValueError("No columns to parse from file"), "x.csv"))
    'x.csv: cannot read: No columns to parse from file (ValueError)'
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BandscopeInputError(f"{path}: {what}: {text} ({type(exc).__name__})", path=path)
