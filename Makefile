# bandscope developer entry points. Every install goes into a venv with pinned constraints:
# .venv (every extra, constraints.txt), .venv-core (core + test only: no torch, no dask) and
# .venv-min (the lowest Python and the declared floors, constraints-min.txt).
PY ?= python3
# The lowest supported Python, for the minimum-versions lane (pyenv's 3.10 when there is one).
PY_MIN ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python) $(shell command -v python3.10))
VENV ?= .venv
PIP = $(VENV)/bin/pip
BIN = $(VENV)/bin
# Extras of the full development install (what `make test` and the CI lanes use).
DEV_EXTRAS = torch,plot,dask,test,lint,lightning,hf,tensorboard,docs

.PHONY: reproduce test test-fast test-rounding test-core test-min lint typecheck doctest ci dev bench venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(BIN)/python

# One command: install bandscope (with torch and plots) and run the paper's analysis on reference_runs/.
reproduce: venv
	$(PIP) install -q -c constraints.txt -e ".[torch,plot]"
	$(BIN)/bandscope reproduce

# The development install, redone only when pyproject.toml or constraints.txt change.
DEV_STAMP = $(VENV)/.bandscope-dev
$(DEV_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt -e ".[$(DEV_EXTRAS)]"
	touch $@

dev: $(DEV_STAMP)

# One command: install bandscope with every extra the tests use and run the full test suite.
test: dev
	$(BIN)/python -m pytest -q

# The fast lane: everything but the tests marked slow (end-to-end training, wheel install).
test-fast: dev
	$(BIN)/python -m pytest -q -m "not slow"

# The rounding lane: the numeric tests (marker `numeric`) once more, with their inputs moved by a
# few ulps (BANDSCOPE_PERTURB_ULPS, applied by the `rounding` fixture of tests/conftest.py) and
# numpy's AVX-512 kernels switched off (NPY_DISABLE_CPU_FEATURES: the AVX-512 dispatch targets
# this numpy has on this CPU, tools/numpy_avx512.py; empty on a CPU without AVX-512), and torch's
# too (ATEN_CPU_CAPABILITY=avx2; a CPU without AVX2 keeps what it has). A tolerance tighter than its
# quantity's conditioning fails here, not on a user's machine. OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE stay as the environment sets them.
PERTURB_ULPS ?= 4
test-rounding: dev
	NPY_DISABLE_CPU_FEATURES="$$($(BIN)/python tools/numpy_avx512.py)" && export NPY_DISABLE_CPU_FEATURES && \
	$(BIN)/python tools/numpy_avx512.py --check && \
	ATEN_CPU_CAPABILITY=avx2 BANDSCOPE_PERTURB_ULPS=$(PERTURB_ULPS) $(BIN)/python -m pytest -q -m "numeric and not slow"

lint: dev
	$(BIN)/ruff check

# The type-checker lane: mypy over the analysis core and the public API (the `files` list and the
# strictness of [tool.mypy] in pyproject.toml; tests/test_lint_ratchet.py keeps ruff's allow list shrinking).
typecheck: dev
	$(BIN)/mypy

# The docstring examples of the package (torch's are left out where torch is missing: conftest.py).
doctest: dev
	$(BIN)/python -m pytest -q --doctest-modules src/bandscope

# Core only: a venv with neither torch nor dask (nor matplotlib); their tests are not collected
# or skip (tests/conftest.py), and everything else must pass.
test-core:
	$(PY) -m venv .venv-core
	.venv-core/bin/pip install -q --upgrade pip
	.venv-core/bin/pip install -q -c constraints.txt -e ".[test]"
	.venv-core/bin/python -c "import importlib.util as u; assert not any(u.find_spec(m) for m in ('torch', 'dask')), 'not a core-only venv'"
	.venv-core/bin/python -m pytest -q --doctest-modules src/bandscope
	# browser tests need the docs extra (playwright), which this venv lacks by design: they run in the full lane
	BANDSCOPE_REQUIRE_BROWSER=0 .venv-core/bin/python -m pytest -q

# Minimum versions: the lowest Python and every floor pyproject.toml declares for the core, test,
# plot and dask dependencies (constraints-min.txt, which also pins the transitive dependencies that
# break at the floors). torch is not in this lane (see README). A deprecation warning raised in a
# bandscope module (a call of ours that a dependency at its floor deprecates) fails the lane, and
# so does any warning while bandscope and its optional dependencies are imported.
# (BANDSCOPE_STRICT_WARNINGS=1: tests/conftest.py turns DeprecationWarning, PendingDeprecationWarning
# and FutureWarning raised from a bandscope module into errors.) The import check sets its filter
# in code, not with `python -W`: pyparsing switches on its own diagnostics when -W is given.
export IMPORT_CLEAN = import warnings; warnings.simplefilter("error"); \
	import bandscope, bandscope.report.figures, bandscope.keysearch.sweep, bandscope.io, zarr, numcodecs, matplotlib.pyplot; print("imports clean")
test-min:
	@test -n "$(PY_MIN)" || { echo "no Python 3.10 found for the minimum-versions lane: set PY_MIN=/path/to/python3.10" >&2; exit 2; }
	$(PY_MIN) -m venv .venv-min
	.venv-min/bin/pip install -q --upgrade pip
	.venv-min/bin/pip install -q --only-binary :all: -c constraints-min.txt -e ".[test,plot,dask]"
	.venv-min/bin/python -c "import sys; assert sys.version_info[:2] == (3, 10), sys.version"
	.venv-min/bin/python -c "$$IMPORT_CLEAN"
	BANDSCOPE_REQUIRE_BROWSER=0 BANDSCOPE_STRICT_WARNINGS=1 .venv-min/bin/python -m pytest -q

# Every CI lane, in order (.ci/run also times each one, runs every lane whatever the others did,
# and adds the docs lanes).
ci: lint typecheck doctest test-fast test test-rounding test-core test-min

bench: venv
	$(PIP) install -q -c constraints.txt -e ".[torch,plot,opacus,test]"
	$(BIN)/python benchmarks/run.py --json build/bench.json

clean:
	rm -rf $(VENV) .venv-core .venv-min build dist src/*.egg-info .pytest_cache .hypothesis

# Documentation site (mkdocs.yml). `docs`: install the docs extra and build build/site with every
# warning an error; the tutorials' code runs during the build, so a failing tutorial fails it.
# `docs-check`: open every page of the built site in headless Chromium (Debian's
# /usr/bin/chromium, installed with apt-get when missing) and check scripts, links, images, the
# API reference and the tutorials' output (tools/check_docs_site.py), then the HTML report in
# both views at 1,280 px (tests/test_report.py -k layout); screenshots of a tutorial, the API
# index and both report views are kept in build/screenshots. Builds the site first if
# build/site is missing.
# `docs-serve`: the built site on http://127.0.0.1:8000/ (search needs a server: browsers do not
# start its web worker from file://).
.PHONY: docs docs-check docs-serve
docs-serve:
	test -f build/site/index.html || $(MAKE) docs
	$(PY) -m http.server -d build/site -b 127.0.0.1 8000

docs: venv
	$(PIP) install -q -c constraints.txt -e ".[torch,plot,docs]"
	NO_MKDOCS_2_WARNING=1 MPLBACKEND=Agg $(BIN)/mkdocs build --strict

docs-check: venv
	test -f build/site/index.html || $(MAKE) docs
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	$(BIN)/python tools/check_docs_site.py build/site --screenshots build/screenshots
	BANDSCOPE_REQUIRE_BROWSER=1 BANDSCOPE_SCREENSHOT_DIR=build/screenshots $(BIN)/python -m pytest -q tests/test_report.py -k layout
