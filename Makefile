# One task runner: `make help` lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup lock browser run test lint audit chaos bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs the pinned, hash-checked versions of requirements.lock, then the project itself (editable, no
# dependency resolution). Re-installs only when the lock or pyproject.toml changes: a second `make run`
# installs nothing.
$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the locked versions (idempotent)

# pyproject.toml keeps the ranges; the lock pins what CI and `make` install (Python 3.11, every platform's hashes).
lock: setup  ## re-resolve requirements.lock from pyproject.toml's ranges (newest versions allowed)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes --upgrade \
		--quiet -o requirements.lock

run: setup  ## set up and run the whole system (Apache Kafka where Java is: RTQIS_BROKER=auto; else the embedded Tansu)
	$(BIN)/rtqis up

# The dashboard's browser tests drive Debian's chromium through Playwright (never `playwright install`).
browser:  ## install Debian's chromium for the browser tests, if missing (apt-get, as root)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

test: lint audit browser  ## set up, lint (ruff, mypy, import contract) and run the test suite on Tansu, then on Apache Kafka
	$(BIN)/python -m pytest -m "not kafka_pass"
	RTQIS_TEST_BROKER=kafka $(BIN)/python -m pytest -m "both_brokers or kafka_pass"

lint: setup  ## ruff, mypy and the import-layer contract (pyproject.toml [tool.importlinter])
	$(BIN)/ruff check rtqis tests bench deploy examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Offline: the pins of requirements.lock against a vendored subset of the PyPA advisory database (deploy/audit/).
# After `make lock`, refresh the subset: deploy/audit/refresh.py --from <advisory-db checkout>.
audit: setup  ## audit requirements.lock against the vendored OSV advisories, offline (deploy/audit/)
	$(BIN)/python deploy/audit/audit.py

# The crash drills of `make test` with 300 SIGKILLs instead of 50 (tests/drills.py; RTQIS_CHAOS_SEED replays one).
chaos: setup  ## crash drills with 300 kills (make test runs 50)
	RTQIS_CHAOS_KILLS=300 $(BIN)/python -m pytest -q -p no:cacheprovider -s --timeout 3600 tests/test_crash_drills.py

bench: setup  ## run the benchmarks (writes bench/results/*.json)
	$(BIN)/rtqis bench

clean:  ## remove build and runtime artefacts (keeps .venv)
	rm -rf var build *.egg-info .pytest_cache .ruff_cache .mypy_cache
