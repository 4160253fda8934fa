# GridWatch developer commands. The README documents two: `make demo` and `make test`.
#
#   make demo   create .venv if needed, install, and run `gridwatch demo $(DEMO_ARGS)`
#   make test   install, then ruff check, ruff format --check, mypy and pytest
#   make lint   the three static checks only
#   make translations  extract the web interface's strings, merge them into the catalogues
#               and compile them (the .mo files are committed, so a fresh clone needs nothing)
#   make clean  remove build output and caches (keeps .venv and var/, which holds data)
#   make distclean  clean, and remove .venv too

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
PYTEST_ARGS ?=
PIP_QUIET ?= --quiet

.DEFAULT_GOAL := help
.PHONY: help install demo test lint translations clean distclean

help:
	@echo "make demo   - set up .venv and run the GridWatch demo (DEMO_ARGS='...' to pass options)"
	@echo "make test   - lint (ruff, mypy) and run the test suite (needs PostgreSQL+PostGIS, Redis)"
	@echo "make lint   - ruff check, ruff format --check, mypy"
	@echo "make clean  - remove build output and caches"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "GridWatch needs Python >= 3.11; run e.g. 'make PYTHON=python3.11 ...'" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes (the install is editable, so source edits
# need nothing). pip stays quiet but still prints errors.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_QUIET) --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gridwatch demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collects no tests; like any non-zero status that fails make.
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

WEB := platform/gridwatch/web

translations: $(STAMP)
	@mkdir -p build
	$(BIN)/pybabel extract -F $(WEB)/babel.cfg -k _l --no-location --sort-output \
	  -o build/messages.pot $(WEB)
	$(BIN)/pybabel update -i build/messages.pot -d $(WEB)/translations --no-fuzzy-matching
	$(BIN)/pybabel compile -d $(WEB)/translations --statistics

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
