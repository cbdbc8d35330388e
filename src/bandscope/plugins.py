"""Commands and readers contributed by other packages (the torch adapter) through entry points.

The core never imports :mod:`bandscope.torch`. An extension declares, in its package metadata,
one entry point per command it adds, named after the command:

.. code-block:: toml

    [project.entry-points."bandscope.commands"]
    train = "bandscope.torch.cli:register"

and the ``bandscope`` command line calls ``register(subparsers)`` to let it add (or extend)
subcommands. The names let ``bandscope --help`` list extension commands without importing
them (an extension may import torch, which takes seconds); an extension is imported only when
its command runs, or when a core command needs it (``param-time --arch``, a ``.pt`` file to
read). Importing the extension's module may also register checkpoint readers with
:func:`bandscope.io.checkpoints.register_checkpoint_loader`.

One error boundary for every extension: whatever an extension raises while it is imported or
registered (an ``ImportError`` because torch is missing, or any other exception) is contained.
The command still runs, the extension is named with its error (:func:`describe_failures`), and
``--debug`` shows its traceback.
"""
from __future__ import annotations

from collections.abc import Callable

__all__ = ["GROUP", "PluginFailure", "command_names", "load_plugins", "describe_failures"]

GROUP = "bandscope.commands"


class PluginFailure:
    """An extension that could not be loaded: its entry point, what failed and the traceback."""

    __slots__ = ("name", "target", "error", "traceback")

    def __init__(self, name: str, target: str, error: str, traceback: str = ""):
        self.name, self.target, self.error, self.traceback = name, target, error, traceback

    def __repr__(self) -> str:
        return f"PluginFailure({self.name!r}, {self.target!r}, {self.error!r})"

    def __str__(self) -> str:
        return f"{self.target}: {self.error}"


def _entry_points():
    from importlib.metadata import entry_points  # here, not at import: `bandscope --version` never needs it

    return sorted(entry_points(group=GROUP), key=lambda e: e.name)


def command_names() -> dict[str, str]:
    """``{entry point name: "module:function"}`` of every extension, read from the installed
    packages' ``entry_points.txt`` files without importing anything (not even
    :mod:`importlib.metadata`, whose import and parse of every package's metadata would be most of
    ``bandscope --help``'s time); the first distribution on ``sys.path`` wins a name, as for
    :func:`importlib.metadata.entry_points`."""
    import os
    import sys

    out: dict[str, str] = {}
    header = f"[{GROUP}]"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in sorted(names):
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(entry or ".", name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            if header not in text:
                continue
            section = text.split(header, 1)[1].split("\n[", 1)[0]
            for line in section.splitlines():
                key, sep, value = line.partition("=")
                if sep and key.strip() and not key.lstrip().startswith(("#", ";")):
                    out.setdefault(key.strip(), value.strip())
    return dict(sorted(out.items()))


def load_plugins(names=None) -> tuple[dict[str, Callable], dict[str, PluginFailure]]:
    """Import the ``bandscope.commands`` entry points (all, or those named in ``names``).

    Returns
    -------
    (registers, failures)
        ``{entry point name: register(subparsers) callable}`` of the extensions that loaded, and
        ``{entry point name: PluginFailure}`` of those that raised anything while importing (an
        extension's failure never propagates: the caller decides how to report it).
    """
    loaded: dict[str, Callable] = {}
    failed: dict[str, PluginFailure] = {}
    seen: dict[str, Callable] = {}  # one import per target, however many names point at it
    for ep in _entry_points():
        if ep.name in loaded or ep.name in failed or (names is not None and ep.name not in names):
            continue
        if ep.value in seen:
            loaded[ep.name] = seen[ep.value]
            continue
        try:
            seen[ep.value] = loaded[ep.name] = ep.load()
        except Exception as exc:  # noqa: BLE001 -- the boundary: any extension failure is contained
            import traceback

            failed[ep.name] = PluginFailure(ep.name, ep.value, f"{type(exc).__name__}: {exc}",
                                            traceback.format_exc())
    return loaded, failed


def describe_failures(failures, *, debug: bool = False) -> str:
    """One line per broken extension (its name, target and error), with the tracebacks when
    ``debug``; '' when there are none."""
    lines = []
    for name, f in sorted(failures.items()):
        lines.append(f"bandscope: extension {name!r} could not be loaded ({f}); its commands are "
                     f"unavailable{'' if debug else ' (--debug shows the traceback)'}")
        if debug and getattr(f, "traceback", ""):
            lines.append(f.traceback.rstrip())
    return "\n".join(lines)
