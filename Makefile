# DWH Helper — every command creates the virtual environment and installs on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/dags:$(CURDIR)

.PHONY: demo test test-unit lint format bench api run migrate clean install

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv >/dev/null 2>&1 || true
	@if [ -x $(BIN)/uv ]; then \
		$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.txt; \
	else \
		$(BIN)/python -m pip install -q -r requirements.txt; \
	fi
	@touch $@

## demo: the whole pipeline on this machine, nothing configured
demo: install
	$(BIN)/python -m dwh_helper.demo

## test: the whole test suite (starts PostgreSQL and S3 itself)
test: install
	$(BIN)/python -m pytest

## test-unit: only the fast tests of pure code
test-unit: install
	$(BIN)/python -m pytest -m unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: the benchmark scripts (minutes; numbers go to docs/benchmarks.md)
bench: install
	$(BIN)/python bench/bench_repository.py

## migrate: apply the DWH schema to the database in DB_* / .env
migrate: install
	$(BIN)/python -m dwh_helper.dwh migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .demo
