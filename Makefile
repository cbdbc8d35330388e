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
