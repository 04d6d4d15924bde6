# Commands a newcomer needs: `make demo` (install + run the main job), `make ui` (the Dagster UI on
# the demo's runs), `make test` (install + run the whole test suite). Everything installs into
# .venv; system packages come from apt.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install system-deps demo ui test lint bench constraints

# Compiled bytecode: every Dagster run and solver worker is a new interpreter, and without .pyc
# files (uv writes none by default) each one compiles its imports again (seconds).
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PYTHON) -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The versions the tests ran against, which the image installs too (Dockerfile). Run after a
# change to the dependencies of pyproject.toml, or to move to newer releases; then `make test`.
constraints:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --upgrade --quiet \
	    --custom-compile-command "make constraints" -o constraints.txt

install: $(STAMP)

# CBC (optional solver, exercised by the tests) and docker-compose (validates the compose file).
system-deps:
	@if ! command -v cbc >/dev/null || ! command -v docker-compose >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coinor-cbc docker-compose >/dev/null; \
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
