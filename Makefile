# The two commands a newcomer needs: `make demo` and `make test`.
# Everything is installed into $(VENV) by these targets; nothing by hand.

PYTHON ?= python3
VENV ?= .venv
# Another Django for the matrix, e.g. DJANGO="Django>=6.1,<6.2" (empty: the newest 5.2+).
DJANGO ?=
EXTRAS ?= test
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRAS)

# How the suite is run; `make coverage` runs the same `make test` under coverage.
PYTEST ?= $(BIN)/python -m pytest

.PHONY: help install test coverage test-matrix fuzz bench demo lint typecheck check messages clean

help:
	@echo "make demo         run the example project on http://127.0.0.1:8000/ (no TextFlow account needed)"
	@echo "make test         install everything into $(VENV) and run the whole test suite"
	@echo "make coverage     make test under coverage (branches); fails below 95% (setup.cfg)"
	@echo "make test-matrix  the suite on the newest Django (6.1) and Python 3.12+ (found by itself,"
	@echo "                  or PYTHON312=/path/to/python3.12)"
	@echo "make lint         ruff check, ruff format --check, and the layer contracts (lint-imports)"
	@echo "make typecheck    mypy --strict on the package"
	@echo "make check        lint, typecheck and coverage: what CI runs before the other legs"
	@echo "make fuzz         fuzz the API (FUZZ_EXAMPLES=10000 for a longer run) and property tests"
	@echo "make bench        run the benchmarks under bench/ and print their figures (bench/README.md)"
	@echo "make messages     regenerate and compile the translation catalogs (needs GNU gettext)"
	@echo "make install      only install into $(VENV) (EXTRAS=test|dev|bench|demo)"
	@echo "make clean        remove the venvs and caches"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The bench extra's django-phone-verify (the load benchmark's peer) pulls phonenumberslite,
# which writes its files over phonenumbers' (the same package name): put phonenumbers' own
# files back, at the version pip chose, so the tests keep the metadata they were written for.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]" $(if $(DJANGO),"$(DJANGO)")
	@if $(BIN)/python -m pip show --quiet phonenumberslite >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
	    "phonenumbers==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("phonenumbers"))')"; \
	fi
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m django --version
	$(PYTEST) $(PYTEST_ARGS)

# Coverage starts before pytest, so the pytest plugin's import of textflow_django.testing is
# counted too (pytest-cov would start after it).
coverage: $(STAMP)
	$(BIN)/python -m coverage erase
	$(MAKE) test PYTEST="$(BIN)/python -m coverage run -m pytest"
	$(BIN)/python -m coverage report

# A Python >= 3.12 for the newest Django: pyenv's first, then python3.12 / python3.13 on PATH
# (a pyenv shim on PATH may point nowhere, hence the version check).
FIND_PY312 = for v in 3.12 3.13; do \
	  cands="$$(command -v pyenv >/dev/null 2>&1 && ls -d "$$(pyenv root)"/versions/$$v*/bin/python$$v 2>/dev/null) $$(command -v python$$v)"; \
	  for c in $$cands; do \
	    "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo "$$c"; exit 0; }; \
	  done; \
	done; exit 1

# The newest Django on a newer Python, in a venv of its own.
test-matrix:
	@py="$(PYTHON312)"; \
	if [ -z "$$py" ]; then \
	  py=$$($(FIND_PY312)) || { echo "make test-matrix: no Python 3.12 or newer found; pass PYTHON312=/path/to/python3.12" >&2; exit 1; }; \
	fi; \
	echo "make test-matrix: Django 6.1 on $$py"; \
	$(MAKE) test PYTHON="$$py" VENV=.venv-django61 DJANGO="Django>=6.1,<6.2"

FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	TEXTFLOW_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/test_fuzz_api.py tests/test_properties.py $(PYTEST_ARGS)

# Every benchmark runs and prints its figures; the target fails if any missed its goal.
bench:
	$(MAKE) install EXTRAS=bench
	@status=0; \
	for script in bench/client.py bench/bulk.py bench/load.py bench/pumping.py bench/cleanup.py; do \
		$(BIN)/python $$script || status=1; \
	done; \
	exit $$status

lint:
	$(MAKE) install EXTRAS=dev
	$(BIN)/ruff check textflow_django tests bench example_project
	$(BIN)/ruff format --check textflow_django tests bench example_project
	$(BIN)/lint-imports

typecheck:
	$(MAKE) install EXTRAS=dev
	$(BIN)/mypy

check: lint typecheck coverage

# Only what the demo needs (the package and its `demo` extra), not the test tools: a fresh
# clone's first `make demo` answers without installing Playwright, schemathesis or psycopg.
demo:
	@$(MAKE) --no-print-directory install EXTRAS=demo
	@PYTHON="$(abspath $(BIN))/python" PORT="$(or $(PORT),8000)" \
		EMULATOR_PORT="$(or $(EMULATOR_PORT),8025)" exec bash example_project/run-demo.sh

# The catalogs of every language under textflow_django/locale, extracted from the package and
# compiled; tests/test_translations.py runs the same makemessages options as its reference.
messages: $(STAMP)
	cd textflow_django && DJANGO_SETTINGS_MODULE= ../$(BIN)/django-admin makemessages --all \
		--add-location file --no-obsolete
	cd textflow_django && ../$(BIN)/django-admin compilemessages

clean:
	rm -rf .venv .venv-* build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
