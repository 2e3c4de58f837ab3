# The README's two commands (`make demo`, `make test`) and a few more.
# Each target installs what it needs into .venv first, so a fresh clone needs only Python 3.11+.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: on this project's machines it is the CPU build on local disk; anything
# looser would let pip pull a multi-GB CUDA build. Override for a GPU box, e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
# Test processes (pytest-xdist); each test file runs whole on one of them.
TEST_WORKERS ?= 2

.PHONY: install install-test demo example test lint perf clean

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

## The main job on its embedded defaults: the offline demo (CPU, under a minute after the install).
demo: install
	$(VENV)/bin/supersede demo

example: demo

## The whole test suite (lint, the import contract and type checks first).
test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

## supersede vs lm-eval, side by side (a benchmark, not a test); options via PERF_ARGS.
perf: install-test
	$(PY) perf/bench_vs_lmeval.py $(PERF_ARGS)

clean:
	rm -rf $(VENV) .supersede .pytest_cache .mypy_cache .ruff_cache
