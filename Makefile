# bandscope developer entry points. Everything installs into .venv with the pinned constraints.
PY ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip
BIN = $(VENV)/bin

.PHONY: reproduce test bench venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(BIN)/python

# One command: install bandscope (with torch and plots) and run the paper's analysis on reference_runs/.
reproduce: venv
	$(PIP) install -q -c constraints.txt -e ".[torch,plot]"
	$(BIN)/bandscope reproduce

# One command: install bandscope with every extra the tests use and run the test suite.
test: venv
	$(PIP) install -q -c constraints.txt -e ".[torch,plot,dask,test,lightning,hf,tensorboard]"
	$(BIN)/python -m pytest -q

bench: venv
	$(PIP) install -q -c constraints.txt -e ".[torch,plot,opacus,test]"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis

# Documentation site (mkdocs.yml). `docs`: install the docs extra and build build/site with every
# warning an error; the tutorials' code runs during the build, so a failing tutorial fails it.
# `docs-check`: open every page of the built site in headless Chromium (Debian's
# /usr/bin/chromium, installed with apt-get when missing) and check scripts, links, images, the
# API reference and the tutorials' output (tools/check_docs_site.py). Builds the site first if
# build/site is missing.
.PHONY: docs docs-check
docs: venv
	$(PIP) install -q -c constraints.txt -e ".[torch,plot,docs]"
	NO_MKDOCS_2_WARNING=1 MPLBACKEND=Agg $(BIN)/mkdocs build --strict

docs-check: venv
	test -f build/site/index.html || $(MAKE) docs
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	$(BIN)/python tools/check_docs_site.py build/site
