# One task runner: `make help` lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup browser run test lint bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when pyproject.toml changes: a second `make run` installs nothing.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (idempotent)

run: setup  ## set up and run the whole system on the embedded broker
	$(BIN)/rtqis up

# The dashboard's browser tests drive Debian's chromium through Playwright (never `playwright install`).
browser:  ## install Debian's chromium for the browser tests, if missing (apt-get, as root)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

test: setup browser  ## set up, lint and run the test suite
	$(BIN)/ruff check rtqis tests bench
	$(BIN)/python -m pytest

lint: setup  ## ruff + mypy
	$(BIN)/ruff check rtqis tests bench
	$(BIN)/mypy rtqis

bench: setup  ## run the benchmarks (writes bench/results/*.json)
	$(BIN)/rtqis bench

clean:  ## remove build and runtime artefacts (keeps .venv)
	rm -rf var build *.egg-info .pytest_cache .ruff_cache .mypy_cache
