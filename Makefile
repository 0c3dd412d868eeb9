# DWH Helper — every command creates the virtual environment and installs on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The repository root is on the path for `api` and for `devtools` (sandboxes, demo): neither
# is part of the shipped `dwh-helper` package, which is plugins/ only.
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/dags:$(CURDIR)

.PHONY: demo test test-unit test-production lint format bench api run migrate clean install

# `make run DAY=2024-03-02`: the three DAGs against the real services configured in .env
DAY ?= $(shell $(PYTHON) -c "import datetime as d; print(d.date.today() - d.timedelta(days=1))")
AIRFLOW_LOCAL := AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False

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
	$(BIN)/python -m devtools.demo

## test: the whole test suite (starts PostgreSQL and S3 itself)
test: install
	$(BIN)/python -m pytest

## test-production: only the production-shaped test (api-server, scheduler, dag-processor,
## triggerer and two Celery workers on a fakeredis broker; a few minutes)
test-production: install
	$(BIN)/python -m pytest -m production

## test-unit: only the fast tests of pure code
test-unit: install
	$(BIN)/python -m pytest -m unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## api: the companion API on http://127.0.0.1:8000 against local services and demo tokens
api: install
	$(BIN)/python -m devtools.demo api

## run: amplitude_events, appmetrica_events and user_properties for DAY with the .env credentials
run: install
	@test -f .env || { echo "No .env: cp .env.example .env and fill in the real credentials"; exit 2; }
	set -a && . ./.env && set +a && export $(AIRFLOW_LOCAL) && \
	$(BIN)/airflow db migrate >/dev/null && \
	$(BIN)/airflow dags test amplitude_events $(DAY) -c '{"start": "$(DAY)", "end": "$(DAY)"}' && \
	$(BIN)/airflow dags test appmetrica_events $(DAY) -c '{"start": "$(DAY)", "end": "$(DAY)"}' && \
	$(BIN)/airflow dags test user_properties $(DAY)

## bench: the benchmark scripts (minutes; numbers go to docs/benchmarks.md)
bench: install
	$(BIN)/python bench/bench_repository.py
	$(BIN)/python bench/bench_amplitude_load.py
	$(BIN)/python bench/bench_appmetrica_load.py
	$(BIN)/python bench/bench_user_properties.py
	$(BIN)/python bench/bench_api.py

## migrate: apply the DWH schema to the database in DB_* / .env
migrate: install
	$(BIN)/python -m dwh_helper.dwh migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .airflow bench/out
