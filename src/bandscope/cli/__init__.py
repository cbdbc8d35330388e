"""The ``bandscope`` command line (``docs/cli.md``): :mod:`.main` (``analyze``, ``reproduce``, the
parser), :mod:`.forecast` and :mod:`.record` (``bands``, ``param-time``).
"""
from .main import analysis_options, build_parser, main, parse_epoch_windows, parse_windows

__all__ = ["main", "build_parser", "analysis_options", "parse_windows", "parse_epoch_windows"]
