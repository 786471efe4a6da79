# Two commands for a new user: `make demo` and `make test`. Both build .venv from scratch.
SHELL := bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sktx-installed
DATA ?= demo
OUT ?= runs/demo
ARGS ?=
# pip lists every local index it skips; keep the log readable.
PIP_QUIET := 2> >(grep -v "is ignored: it is neither" >&2)

.PHONY: demo test test-slow lint format bench perf-doc clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(PIP_QUIET)
	$(BIN)/pip install -q -e '.[dev,eval,scale]' $(PIP_QUIET)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sktx demo --data $(DATA) --out $(OUT) $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check sktx tests benchmarks examples
	$(BIN)/ruff format --check sktx tests benchmarks examples
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check --fix sktx tests benchmarks examples
	$(BIN)/ruff format sktx tests benchmarks examples

perf-doc: $(STAMP)
	$(BIN)/python benchmarks/render_performance.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
