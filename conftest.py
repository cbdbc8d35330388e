"""pytest configuration for the doctest lane (``pytest --doctest-modules src/bandscope``).

The doctests of :mod:`bandscope.torch` need torch and those of :mod:`bandscope.plot` need
matplotlib; they are not collected where those optional packages are missing (the core-only
lane). Test-suite settings live in ``tests/conftest.py``.
"""
import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob += ["src/bandscope/torch/*"]
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore_glob += ["src/bandscope/plot.py"]
