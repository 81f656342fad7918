# Analemma: `make run` serves the embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test venv dev-venv services bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): requirements.txt sdk/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(STAMP)
dev-venv: $(DEV_STAMP)

## Embedded default, no server to install: SQLite, blobs and the task queue in ./var. Migrates,
## makes the admin (its login printed the first time only) and the demo (ANALEMMA_DEMO=false: none),
## then runs the web server, a Celery worker and Celery beat in this terminal; Ctrl-C stops all three.
run: $(STAMP)
	$(BIN)/python manage.py run_local --address $${ANALEMMA_BIND:-127.0.0.1:8000}

## Whole suite: the service tests on SQLite first, then everything on a real PostgreSQL and a
## real S3-protocol server, both started on loopback by the test setup. TEST_WORKERS processes
## share the tests (pytest-xdist), each with servers of its own; much of the suite waits on
## subprocesses, browsers and sockets, so three keep two cores busy. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
test: $(DEV_STAMP)
	scripts/ensure-services.sh
	ANALEMMA_TEST_DB=sqlite $(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests/statebag
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

## Style, types and the import graph's contracts (pyproject.toml).
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(DEV_STAMP)
	$(BIN)/python bench/statebag_workload.py --quick
	$(BIN)/python bench/compression.py --train ../shared/corpus/tau-airline-dev --eval ../shared/corpus/tau-airline-dev

clean:
	rm -rf $(VENV) var .pytest_cache
