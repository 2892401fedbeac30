# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Ports: LOCAL_PG_PORT, LOCAL_S3_PORT, LOCAL_SMTP_PORT, LOCAL_AIRFLOW_PORT, LOCAL_REDIS_PORT;
# state: LOCAL_STATE_DIR (.local)
# (see local_stack/config.py).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DLT_VENV := .venv-dlt
INFRA_VENV := .venv-infra
DBT_VENV := .venv-dbt
export PYTHONPATH := $(CURDIR)

.PHONY: help venv dbt-venv dbt dashboard infra-venv infra-synth infra-check lock demo up down status psql test test-fast bench lint format clean

help:
	@echo "make demo   - run the whole pipeline end to end on the local stack"
	@echo "make test   - run the tests (starts its own servers)"
	@echo "make test-fast - the tests but the slow and infra ones, while working"
	@echo "make up     - start the local stack and Airflow (UI on :8080); make down stops it"
	@echo "              EXECUTOR=celery WORKERS=2: CeleryExecutor with Redis and two Celery workers"
	@echo "make psql   - psql on the warehouse (ARGS=\"-c 'select ...'\")"
	@echo "make bench  - the pipeline against bare COPY, to_sql, insert_rows and dlt (ROWS=2000000)"
	@echo "make lint   - ruff and mypy"
	@echo "make dbt     - build the dbt marts on the local stack (ARGS=\"build --select ...\")"
	@echo "make dashboard - the Streamlit dashboard on the local stack's marts"
	@echo "make infra-synth / infra-check - the AWS stack's CloudFormation template; cfn-lint and checkov on it"

# requirements-dev.txt holds the pins (Airflow 3.3.2 + requirements.txt + test tools);
# requirements-dev.lock is every transitive version, resolved for all platforms by `make lock`.
$(VENV)/.installed: requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements-dev.lock
	touch $@

venv: $(VENV)/.installed

# dlt (benchmarked against the pipeline) pins versions Airflow conflicts with: its own venv.
$(DLT_VENV)/.installed: benchmarks/requirements-dlt.txt | $(VENV)/.installed
	$(PYTHON) -m venv $(DLT_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(DLT_VENV)/bin/python -r benchmarks/requirements-dlt.txt
	touch $@

# dbt (the marts in dags/dbt/) pins versions Airflow conflicts with (protobuf, pathspec): its own venv, which
# Cosmos runs (DBT_VENV_PATH; the Dockerfile builds the same lock into the Astro image).
$(DBT_VENV)/.installed: requirements-dbt.lock | $(VENV)/.installed
	$(PYTHON) -m venv $(DBT_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(DBT_VENV)/bin/python -r requirements-dbt.lock
	touch $@

dbt-venv: $(DBT_VENV)/.installed

# The AWS CDK (synthesizes the CloudFormation template), cfn-lint and checkov pin versions Airflow conflicts
# with: their own venv. The CDK runs on Node.js (node on PATH).
$(INFRA_VENV)/.installed: infra/requirements.txt | $(VENV)/.installed
	$(PYTHON) -m venv $(INFRA_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(INFRA_VENV)/bin/python -r infra/requirements.txt
	touch $@

infra-venv: $(INFRA_VENV)/.installed

# The stack's template from include/contracts/*.yml (one queue per dataset) into infra/cdk.out/.
infra-synth: infra-venv
	$(INFRA_VENV)/bin/python -m infra.app

# cfn-lint and checkov on the synthesized template (the tests in tests/infra run them too).
infra-check: infra-synth
	$(INFRA_VENV)/bin/cfn-lint infra/cdk.out/*.template.json
	$(INFRA_VENV)/bin/checkov --skip-download --quiet --compact --framework cloudformation -d infra/cdk.out

lock: venv
	$(VENV)/bin/uv pip compile requirements-dev.txt --universal --python-version 3.11 --no-header \
		-o requirements-dev.lock
	$(VENV)/bin/uv pip compile benchmarks/requirements-dlt.in --universal --python-version 3.11 --no-header \
		-o benchmarks/requirements-dlt.txt
	$(VENV)/bin/uv pip compile infra/requirements.in --universal --python-version 3.11 --no-header \
		-o infra/requirements.txt
	$(VENV)/bin/uv pip compile requirements-dbt.in --universal --python-version 3.11 --no-header \
		-o requirements-dbt.lock
	UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip compile requirements-dbt.in --python-version 3.12 \
		--python-platform x86_64-manylinux_2_34 --only-binary :all: --no-header -o mwaa/requirements-dbt.txt
	$(PY) -m mwaa.requirements

demo: venv dbt-venv
	$(PY) -m local_stack demo $(if $(DATA),--data "$(DATA)") $(if $(DATE),--date "$(DATE)") \
		$(if $(DATASET),--dataset "$(DATASET)")

# EXECUTOR=celery [WORKERS=2]: Redis and Celery workers beside the scheduler (LocalExecutor by default).
up: venv
	$(PY) -m local_stack up --airflow $(if $(EXECUTOR),--executor $(EXECUTOR)) $(if $(WORKERS),--workers $(WORKERS))

down:
	@if [ -x $(PY) ]; then $(PY) -m local_stack down; else echo "nothing to stop"; fi

status: venv
	$(PY) -m local_stack status

psql: venv
	@psql_bin=$$(command -v psql || echo "$$($(PY) -c 'from local_stack.postgres import find_bin_dir; print(find_bin_dir())')/psql"); \
	eval "$$psql_bin \"$$($(PY) -c 'from local_stack.postgres import dsn; from local_stack.config import Ports; print(dsn(Ports.from_env().postgres))')\" $(ARGS)"

# dbt on the local stack's warehouse (the marts DAG runs the same project in Airflow): ARGS="build -s fct_orders+".
dbt: venv dbt-venv
	$(PY) -m local_stack.analytics dbt $(ARGS)

# The Streamlit dashboard on the local stack's marts (after make demo), read as the read-only role bi_reader.
dashboard: venv
	$(PY) -m local_stack.analytics dashboard

test: venv infra-venv dbt-venv
	$(PY) -m pytest $(PYTEST_ARGS)

# While working: everything but the `slow` tests (scheduler, Celery, demo) and tests/infra, in a few minutes.
test-fast: venv dbt-venv
	$(PY) -m pytest -m "not slow and not infra" $(PYTEST_ARGS)

# ROWS, FILES, REPEATS or any flag via BENCH_ARGS (see python -m benchmarks.bench --help).
bench: venv $(DLT_VENV)/.installed
	$(PY) -m benchmarks.bench $(if $(BENCH_ARGS),,--docs docs/performance.md) $(if $(ROWS),--rows $(ROWS)) $(if $(FILES),--files $(FILES)) \
		$(if $(REPEATS),--repeats $(REPEATS)) $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean: down
	rm -rf $${LOCAL_STATE_DIR:-.local}
