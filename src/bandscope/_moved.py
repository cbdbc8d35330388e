"""Module names that moved into folders by kind: importable for one release, with a DeprecationWarning.

``import bandscope.fitting`` still works and returns :mod:`bandscope.keysearch.fitting` (the same
module object), warning once per name; ``docs/architecture.md`` lists where everything lives.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from importlib.machinery import ModuleSpec

#: old module name -> its home since 0.2.0 (the old names go in 0.3.0)
MOVED = {
    "bandscope.bands": "bandscope.transforms.bands",
    "bandscope.paramtime": "bandscope.transforms.paramtime",
    "bandscope.trajectory": "bandscope.keysearch.trajectory",
    "bandscope.fitting": "bandscope.keysearch.fitting",
    "bandscope.ordering": "bandscope.keysearch.ordering",
    "bandscope.analysis": "bandscope.keysearch.analysis",
    "bandscope.forecasting": "bandscope.keysearch.forecasting",
    "bandscope.synthetic": "bandscope.keysearch.synthetic",
    "bandscope.sweep": "bandscope.keysearch.sweep",
    "bandscope.runlock": "bandscope.io.lock",
    "bandscope.natural_sort": "bandscope.io.natural_sort",
    "bandscope.tables": "bandscope.report.tables",
    "bandscope.plot": "bandscope.report.figures",
    "bandscope.verdict": "bandscope.report.verdict",
    "bandscope.paper": "bandscope.report.paper",
    "bandscope.numfmt": "bandscope.report.numfmt",
    "bandscope.forecastcli": "bandscope.cli.forecast",
    "bandscope.recordcli": "bandscope.cli.record",
    "bandscope.torch.models": "bandscope.torch.reference.models",
    "bandscope.torch.data": "bandscope.torch.reference.data",
    "bandscope.torch.train": "bandscope.torch.reference.train",
    "bandscope.torch.lm": "bandscope.torch.reference.lm",
    "bandscope.torch.lnp_hook": "bandscope.torch.lnp.hook",
    "bandscope.torch.schedule": "bandscope.schedule",
}


class _Alias:
    """Loads an old name as the module at its new home (the same object, its own spec kept)."""

    def __init__(self, new: str):
        self.new = new
        self.spec = None

    def create_module(self, spec):
        warnings.warn(f"{spec.name} has moved to {self.new}; import it from there "
                      "(the old name is removed in bandscope 0.3)", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.spec  # the import system set the alias's spec on the real module


class MovedFinder:
    """A meta-path finder for the names in :data:`MOVED` (installed once by ``import bandscope``)."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        return None if new is None else ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Put :class:`MovedFinder` on ``sys.meta_path`` unless it is there."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
