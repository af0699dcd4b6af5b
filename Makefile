# scalewise: `make repro` runs the pipeline, `make test` runs the tests.
# Both create .venv and install the project when needed (idempotent; quick once installed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Offline, quiet tools (no telemetry, enough time for Prefect's ephemeral API to start).
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 60
export PATH := $(BIN):$(PATH)

.PHONY: install repro test test-fast pipeline clean-state

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

repro: install
	@[ -d .dvc ] || { git rev-parse --git-dir >/dev/null 2>&1 && $(BIN)/dvc init --quiet || $(BIN)/dvc init --no-scm --quiet; }
	$(BIN)/scalewise repro

# One pytest-xdist worker per core, a test file per worker (module fixtures are built once),
# in the order tests/conftest.py gives (the pipeline-sized files first).
PYTEST_PARALLEL ?= -n auto --dist loadfile --no-loadscope-reorder

test: install
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

# The fast lane: unit tests only (no real DVC / MLflow / Prefect runs, no long training), < 3 min on 2 cores.
test-fast: install
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not integration and not slow"

# The same pipeline driven by Prefect (ephemeral API): one task per DVC stage.
pipeline: install
	$(BIN)/python -m flows.pipeline

clean-state:
	rm -rf state
