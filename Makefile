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

.PHONY: help install test test-matrix fuzz bench demo lint typecheck clean

help:
	@echo "make demo    run the example project on http://127.0.0.1:8000/ (no TextFlow account needed)"
	@echo "make test    install everything into $(VENV) and run the whole test suite"
	@echo "make fuzz    fuzz the API (FUZZ_EXAMPLES=10000 for a longer run) and property tests"
	@echo "make bench   run the benchmarks under bench/ and print their figures"
	@echo "make lint    ruff; make typecheck: mypy --strict"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]" $(if $(DJANGO),"$(DJANGO)")
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m django --version
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The newest Django on a newer Python, in a venv of its own.
test-matrix:
	$(MAKE) test PYTHON="$(PYTHON312)" VENV=.venv-django61 DJANGO="Django>=6.1,<6.2"

FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	TEXTFLOW_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/test_fuzz_api.py tests/test_properties.py $(PYTEST_ARGS)

# Every benchmark runs and prints its figures; the target fails if any missed its goal.
bench:
	$(MAKE) install EXTRAS=bench
	@status=0; \
	for script in bench/client.py bench/bulk.py bench/load.py; do \
		$(BIN)/python $$script || status=1; \
	done; \
	exit $$status

lint:
	$(MAKE) install EXTRAS=dev
	$(BIN)/ruff check textflow_django tests bench

typecheck:
	$(MAKE) install EXTRAS=dev
	$(BIN)/mypy

demo: $(STAMP)
	@PYTHON="$(abspath $(BIN))/python" PORT="$(or $(PORT),8000)" \
		EMULATOR_PORT="$(or $(EMULATOR_PORT),8025)" exec bash example_project/run-demo.sh

clean:
	rm -rf .venv .venv-* build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
