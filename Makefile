# Orders service: `make run` brings the whole service up locally, `make test` checks it.
# Both create the virtualenv and install the pinned requirements first when needed.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Touched after a successful install: pip runs again only when requirements.txt is newer.
STAMP := $(VENV)/.requirements.stamp
# pytest-xdist workers; each gets its own test database (test_<name>_gw0, ...).
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

# Variables given on the command line (`make run PORT=8001`) reach the scripts' environment
# as they are; no `export` here, which would turn unset ones into empty strings.

.PHONY: help install run test lint format services stop-services status-services

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0] + ": run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	@echo "==> installing requirements.txt into $(VENV) (the first time takes a minute or two)"
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	@touch $@

install: $(STAMP) ## create .venv and install the pinned requirements (if changed)

run: $(STAMP) ## set everything up and run web, worker, beat and the fake provider (Ctrl-C stops)
	$(PY) -m scripts.run

test: $(STAMP) ## set up, then lint and the whole test suite against real PostgreSQL and Redis
	$(PY) -m scripts.services up
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check, ruff format --check, mypy and the import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

services: $(STAMP) ## find or start PostgreSQL and Redis only
	$(PY) -m scripts.services up

# Needs only the standard library, so it works without the virtualenv too.
stop-services: ## stop the embedded PostgreSQL/Redis started under .local/ (never others)
	@$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m scripts.services down

status-services: ## show whether embedded servers under .local/ are running
	@$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m scripts.services status
