# Two entry points for a fresh clone (see README): `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[demo]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	touch $@

.PHONY: demo test test-jitless bench fuzz
demo: $(VENV)/.demo-installed
	$(BIN)/flexsparse demo

test: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -m jitless -p no:cacheprovider tests

# The fuzz suite's deep profile (thousands of cases per property; `make test` runs the fast one).
fuzz: $(VENV)/.test-installed
	HYPOTHESIS_PROFILE=fuzz-deep $(BIN)/python -m pytest -p no:cacheprovider tests/fuzz

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/bench_machine.py
	$(BIN)/python benchmarks/bench_einsum.py
	$(BIN)/python benchmarks/bench_spgemm.py
	$(BIN)/python benchmarks/bench_structured.py
	$(BIN)/python benchmarks/bench_tiling.py
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_gpu.py
