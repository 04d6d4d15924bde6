# Commands a newcomer needs: `make demo` (install + run the main job), `make ui` (the Dagster UI on
# the demo's runs), `make test` (install + run the whole test suite). Everything installs into
# .venv; system packages come from apt.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install system-deps demo ui test lint bench

# Compiled bytecode: every Dagster run and solver worker is a new interpreter, and without .pyc
# files (uv writes none by default) each one compiles its imports again (seconds).
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PYTHON) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# CBC (optional solver, exercised by the tests) and docker-compose (validates the compose file).
system-deps:
	@if ! command -v cbc >/dev/null || ! command -v docker-compose >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coinor-cbc docker-compose >/dev/null; \
	  else echo "note: install coinor-cbc and docker-compose for the full suite" >&2; fi; \
	fi

demo: install
	$(VENV)/bin/dispatch-pipeline demo

ui: install
	$(VENV)/bin/dispatch-pipeline ui

test: install system-deps
	$(VENV)/bin/ruff check dispatch_pipeline tests bench deploy
	bash deploy/check_compose.sh
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check dispatch_pipeline tests bench deploy

bench: install
	$(PYTHON) bench/solve_latency.py
