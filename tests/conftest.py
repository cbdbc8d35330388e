"""Test-suite configuration shared by every test module.

Optional dependencies are handled here, once, instead of in each test file:

- a test module whose name says what it needs (``test_torch_*`` needs torch, ``test_sweep`` needs
  dask, ...) is not collected when that package is not installed, so the suite runs cleanly in
  the core-only lane (``make test-core``: neither torch nor dask);
- a test whose own name says ``dask`` (``test_dask_matches_numpy``) is skipped when dask is not
  installed, wherever it lives;
- ``BANDSCOPE_PERTURB_ULPS=N`` (the rounding lane, ``make test-rounding``): the ``rounding``
  fixture moves the inputs of the numeric tests (marker ``numeric``) by up to N ulps
  (``tests/rounding.py``); unset, it returns every input as it is;
- ``BANDSCOPE_STRICT_WARNINGS=1`` (the minimum-versions lane): a DeprecationWarning,
  PendingDeprecationWarning or FutureWarning raised from a bandscope module -- a call of ours that
  a dependency deprecates -- is an error;
- ``BANDSCOPE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns every skip of a test marked
  ``browser``, or skipped for a reason that names a browser or Chromium, into a failure, so a
  missing headless browser cannot pass CI silently. ``BANDSCOPE_REQUIRE_TORCH=1`` does the same
  for torch (and refuses to start when torch is missing).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from rounding import ENV as PERTURB_ENV
from rounding import Rounding, env_seed, env_ulps, rng_for
from strict_warnings import ENV as STRICT_ENV
from strict_warnings import FILTERS as STRICT_WARNINGS

HERE = Path(__file__).resolve().parent

# test-file glob -> modules it needs (every one must be importable)
NEEDS = {
    "test_torch_*.py": ("torch",),
    "test_sweep*.py": ("dask",),
    "test_plot*.py": ("matplotlib",),
    "test_docs_site*.py": ("mkdocs", "playwright"),  # the docs extra (in the development install)
}


def _missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


collect_ignore_glob: list[str] = []
_left_out: dict[str, list[str]] = {}
for _glob, _mods in NEEDS.items():
    _miss = _missing(_mods)
    if _miss:
        collect_ignore_glob.append(_glob)
        _left_out[_glob] = _miss


# test-name word -> module it needs (for tests inside modules that otherwise need only the core)
NAMED = {"dask": "dask"}


def pytest_collection_modifyitems(config, items):
    for word, module in NAMED.items():
        if not _missing([module]):
            continue
        skip = pytest.mark.skip(reason=f"needs {module}, which is not installed (its name says {word!r})")
        for item in items:
            if word in item.name.lower().split("[")[0].split("_"):
                item.add_marker(skip)


def _required(env: str) -> bool:
    return os.environ.get(env, "").strip() not in ("", "0")


def pytest_configure(config):
    if _required(STRICT_ENV):
        for line in STRICT_WARNINGS:
            config.addinivalue_line("filterwarnings", line)
    env_ulps()  # refuses a malformed BANDSCOPE_PERTURB_ULPS before any test runs
    if _left_out and _required("BANDSCOPE_REQUIRE_TORCH") and any("torch" in m for m in _left_out.values()):
        raise pytest.UsageError("BANDSCOPE_REQUIRE_TORCH=1 but torch is not installed (pip install -e '.[torch]')")


def pytest_report_header(config):
    lines = []
    if _left_out:
        lines.append("not collected (optional packages missing): " + ", ".join(
            f"{g} (needs {', '.join(m)})" for g, m in _left_out.items()))
    if env_ulps():
        lines.append(f"rounding lane: inputs of the numeric tests moved by up to {env_ulps()} ulps "
                     f"({PERTURB_ENV}, seed {env_seed()}); NPY_DISABLE_CPU_FEATURES="
                     f"{os.environ.get('NPY_DISABLE_CPU_FEATURES', '')!r}")
    if _required(STRICT_ENV):
        lines.append("strict warnings: " + ", ".join(STRICT_WARNINGS))
    return lines or None


@pytest.fixture
def rounding(request) -> Rounding:
    """The inputs of a numeric test, moved by ``BANDSCOPE_PERTURB_ULPS`` ulps (``tests/rounding.py``).

    ``rounding(x)`` returns ``x`` unchanged outside the rounding lane; in it, every nonzero finite
    float of an array, float, DataArray or Dataset moves by a whole number of ulps in
    [-N, N], drawn from a generator seeded by the test's node id (and ``BANDSCOPE_PERTURB_SEED``).
    A tolerance that holds only for the exact inputs it was tuned on fails there.
    """
    return Rounding(env_ulps(), rng_for(request.node.nodeid, env_seed()))


@pytest.fixture(scope="module")
def rounding_module(request) -> Rounding:
    """``rounding`` for inputs built once per module (a module-scoped fixture's runs), seeded by
    the module's node id."""
    return Rounding(env_ulps(), rng_for(request.node.nodeid, env_seed()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    browser_words = ("browser", "chromium", "chrome", "playwright")
    for marker, env, words in (("browser", "BANDSCOPE_REQUIRE_BROWSER", browser_words),
                               ("torch", "BANDSCOPE_REQUIRE_TORCH", ("torch",))):
        named = any(w in reason.lower() for w in words)  # e.g. "no headless chromium found"
        if (item.get_closest_marker(marker) is not None or named) and _required(env):
            rep.outcome = "failed"
            rep.longrepr = f"{env}=1, but this {marker} test was skipped: {reason}"
            return


@pytest.fixture
def one_torch_thread():
    """Tiny torch models: one intra-op thread (no OpenMP contention on a busy machine), restored
    after. Imports torch only when a test asks for it, so the core-only lane never needs it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def float64_torch(one_torch_thread):
    """float64 as torch's default dtype (exact routes then agree to ~1e-12), restored after; one
    intra-op thread (``one_torch_thread``)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
