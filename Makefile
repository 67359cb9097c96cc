# Orders service: `make run` brings the whole service up locally, `make test` checks it.
# Both create the virtualenv and install the locked dependencies first when needed: a fresh
# machine needs python3 (3.11+) and make, nothing else.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# uv, pinned, lives in the virtualenv itself (pip puts it there): it installs the exact set
# uv.lock pins, and locks and exports it. `make` needs nothing installed beforehand.
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
# uv acts on this virtualenv (VENV=... moves it) and never downloads an interpreter.
UV_RUN := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(UV)
# Stamps, touched after a successful step: uv syncs again only when uv.lock or
# pyproject.toml is newer. `make run` needs the runtime set; test, lint and format the
# `dev` group too (tests, linters, type stubs, schemathesis, Playwright).
UV_STAMP := $(VENV)/.uv-$(UV_VERSION).stamp
RUNTIME_STAMP := $(VENV)/.sync-runtime.stamp
DEV_STAMP := $(VENV)/.sync-dev.stamp
# requirements.txt and requirements-embedded.txt are exports of uv.lock (`make requirements`).
EXPORT := $(UV_RUN) export --frozen --no-emit-project --format requirements-txt --no-header
EXPORT_RUNTIME := $(EXPORT) --no-dev
EXPORT_EMBEDDED := $(EXPORT) --only-group embedded
# The header both exports start with (printf format; %s: what the file holds).
EXPORT_HEADER := '\# %s, exported from uv.lock by `make requirements`: do not edit.\n\# Change pyproject.toml, then `.venv/bin/uv lock && make requirements`; `make lint`\n\# (and so CI) fails while this file differs from the export.\n'
# pytest-xdist workers; each gets its own test database (test_<name>_gw0, ...).
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

# Variables given on the command line (`make run PORT=8001`) reach the scripts' environment
# as they are; no `export` here, which would turn unset ones into empty strings.

.PHONY: help install run test lint format check-lock check-lock-drill requirements services stop-services status-services

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0] + ": run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

$(UV_STAMP): | $(PY)
	@echo "==> installing uv $(UV_VERSION) into $(VENV), then the locked dependencies (the first time takes a minute)"
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@touch $@

# --frozen: exactly what uv.lock says, never re-resolved here (`make lint` checks that the
# lock matches pyproject.toml). --inexact: keep what the lock does not list (pip, uv itself,
# the embedded servers' packages scripts/services.py may have added).
$(RUNTIME_STAMP): uv.lock pyproject.toml | $(UV_STAMP)
	$(UV_RUN) sync --frozen --inexact --no-dev
	@touch $@

$(DEV_STAMP): uv.lock pyproject.toml | $(UV_STAMP)
	$(UV_RUN) sync --frozen --inexact
	@touch $@ $(RUNTIME_STAMP)

install: $(DEV_STAMP) ## create .venv and install the locked dependencies, dev tools included (if changed)

run: $(RUNTIME_STAMP) ## set everything up and run web, worker, beat and the fake provider (Ctrl-C stops)
	$(PY) -m scripts.run

.PHONY: demo
demo: $(RUNTIME_STAMP) ## walk the whole API of a running `make run` (DEMO_BASE_URL, default :8000)
	$(PY) -m scripts.demo

# AsyncAPI's own parser (Node.js, from the npm registry, into .local/) on the contract as
# files (the document and the apps' schemas side by side, as served). CI checks the same
# document against AsyncAPI's JSON Schema (tests/events) and needs neither.
ASYNCAPI_PARSER := .local/asyncapi-parser
EVENT_CONTRACT_FILES := .local/event-contract
.PHONY: check-asyncapi
check-asyncapi: $(RUNTIME_STAMP) ## validate the event contract's AsyncAPI document with @asyncapi/parser (needs node and npm)
	@test -d $(ASYNCAPI_PARSER)/node_modules/@asyncapi/parser || npm install --prefix $(ASYNCAPI_PARSER) --no-audit --no-fund --silent @asyncapi/parser@3.6.6
	SECRET_KEY=export-only $(PY) manage.py export_event_contract $(EVENT_CONTRACT_FILES)
	NODE_PATH=$(ASYNCAPI_PARSER)/node_modules node scripts/validate_asyncapi.cjs $(EVENT_CONTRACT_FILES)/asyncapi.yaml

test: lint ## set up, then lint and the whole test suite against real PostgreSQL and Redis
	$(PY) -m scripts.services up
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(DEV_STAMP) check-lock ## ruff check, ruff format --check, mypy, the import contracts, the lock
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(DEV_STAMP) ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check-lock: $(UV_STAMP) ## fail when uv.lock disagrees with pyproject.toml or requirements*.txt with uv.lock
	@$(UV_RUN) lock --check || { echo "uv.lock does not match pyproject.toml: run .venv/bin/uv lock && make requirements" >&2; exit 1; }
	@diff -u requirements.txt <(printf $(EXPORT_HEADER) "The runtime set"; $(EXPORT_RUNTIME)) \
		|| { echo "requirements.txt is not the export of uv.lock: run make requirements" >&2; exit 1; }
	@diff -u requirements-embedded.txt <(printf $(EXPORT_HEADER) "Embedded PostgreSQL and Redis for scripts/services.py"; $(EXPORT_EMBEDDED)) \
		|| { echo "requirements-embedded.txt is not the export of uv.lock: run make requirements" >&2; exit 1; }
	@echo "uv.lock matches pyproject.toml; requirements.txt and requirements-embedded.txt match uv.lock"

# Needs the package index (uv resolves the drifted copy to compare), so CI does not run it.
check-lock-drill: $(UV_STAMP) ## show check-lock failing on drift, in a scratch copy (this checkout is untouched)
	@set -euo pipefail; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	fresh() { rm -rf "$$scratch"/*; cp Makefile pyproject.toml uv.lock requirements.txt requirements-embedded.txt "$$scratch"/; }; \
	drifted() { if $(MAKE) -s -C "$$scratch" check-lock VENV=$(abspath $(VENV)) >"$$scratch/.out" 2>&1; then \
		echo "drill FAILED: check-lock passed although $$1" >&2; exit 1; fi; \
		echo "ok: check-lock fails when $$1:"; grep -E "^(error|uv.lock|requirements)" "$$scratch/.out" | sed 's/^/      /'; }; \
	fresh; $(MAKE) -s -C "$$scratch" check-lock VENV=$(abspath $(VENV)) >/dev/null 2>&1 \
		&& echo "ok: check-lock passes on an unchanged copy" || { echo "drill FAILED: check-lock fails on an unchanged copy" >&2; exit 1; }; \
	fresh; sed -i 's/^    "gunicorn>=23",/    "gunicorn>=23",\n    "six>=1.16",/' "$$scratch/pyproject.toml"; \
	drifted "pyproject.toml gains a dependency uv.lock lacks"; \
	fresh; sed -i 's/^    "gunicorn>=23",/    "gunicorn>=23,<27",/' "$$scratch/pyproject.toml"; \
	drifted "pyproject.toml excludes the locked gunicorn"; \
	fresh; sed -i 's/^gunicorn==[0-9.]*/gunicorn==23.0.0/' "$$scratch/requirements.txt"; \
	drifted "requirements.txt is edited by hand"; \
	fresh; sed -i '/^    "whitenoise>=6.6",/d' "$$scratch/pyproject.toml"; (cd "$$scratch" && $(abspath $(UV)) lock -q); \
	drifted "uv.lock is updated but requirements.txt is not re-exported"

requirements: $(UV_STAMP) ## write requirements.txt (runtime) and requirements-embedded.txt from uv.lock
	{ printf $(EXPORT_HEADER) "The runtime set"; $(EXPORT_RUNTIME); } > requirements.txt.tmp
	{ printf $(EXPORT_HEADER) "Embedded PostgreSQL and Redis for scripts/services.py"; $(EXPORT_EMBEDDED); } > requirements-embedded.txt.tmp
	mv requirements.txt.tmp requirements.txt
	mv requirements-embedded.txt.tmp requirements-embedded.txt

services: $(RUNTIME_STAMP) ## find or start PostgreSQL and Redis only
	$(PY) -m scripts.services up

# Needs only the standard library, so it works without the virtualenv too.
stop-services: ## stop the embedded PostgreSQL/Redis started under .local/ (never others)
	@$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m scripts.services down

status-services: ## show whether embedded servers under .local/ are running
	@$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m scripts.services status
