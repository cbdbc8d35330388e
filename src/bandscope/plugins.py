"""Commands and readers contributed by other packages (the torch adapter) through entry points.

The core never imports :mod:`bandscope.torch`. An extension declares, in its package metadata,

.. code-block:: toml

    [project.entry-points."bandscope.commands"]
    torch = "bandscope.torch.cli:register"

and the ``bandscope`` command line calls ``register(subparsers)`` to let it add (or extend)
subcommands. Importing the extension's module may also register checkpoint readers with
:func:`bandscope.cli.record.register_checkpoint_loader` (that is how ``bandscope param-time``
reads ``.pt`` files when the torch extra is installed). An extension that fails to import
(torch missing) is reported by name with its error, never silently dropped.
"""
from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

__all__ = ["GROUP", "load_plugins"]

GROUP = "bandscope.commands"


def load_plugins() -> tuple[dict[str, Callable], dict[str, str]]:
    """Import every ``bandscope.commands`` entry point.

    Returns
    -------
    (registers, failures)
        ``{entry point name: register(subparsers) callable}`` of the extensions that loaded,
        and ``{entry point name: "module: error"}`` of those that did not.
    """
    loaded: dict[str, Callable] = {}
    failed: dict[str, str] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in loaded:
            continue
        try:
            loaded[ep.name] = ep.load()
        except ImportError as exc:
            failed[ep.name] = f"{ep.value}: {exc}"
    return loaded, failed
