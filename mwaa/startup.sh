#!/bin/bash
# MWAA startup script: MWAA runs it on every container (scheduler, worker, web server) before Airflow starts.
# `python -m mwaa.bundle` renders it: the settings block comes from the stack's outputs, the dbt lock from
# mwaa/requirements-dbt.txt. Exported variables reach every Airflow process (tasks included).
# No `set -e`/`set -u`: MWAA's wrapper sources this script and then records the environment, and those options
# would leak into it; failures are handled where they happen.

# --- Airflow Variables as environment variables (AIRFLOW_VAR_<DATASET>_<SETTING>) --------------------------
# Settings read at DAG parse time (the events queue URL) must be here: the DAG processor reads them from the
# environment only. Any Variable set in Secrets Manager (<prefix>/variables/<name>) takes precedence over these.
# @SETTINGS@

# --- Lineage (a later issue) --------------------------------------------------------------------------------
# The OpenLineage transport goes in the MWAA configuration option `openlineage.transport` (infra/app.py
# --openlineage-transport); a transport that needs a secret reads it from Secrets Manager, not from here.

# --- dbt in its own virtualenv ------------------------------------------------------------------------------
# dbt cannot be installed in Airflow's environment on MWAA (its pins conflict with Airflow's constraints), so
# astronomer-cosmos runs it from this venv (ExecutionConfig(dbt_executable_path=$DBT_VENV_PATH/bin/dbt)). Only
# the scheduler (which parses the dbt project) and the workers (which run it) need it. About a minute per
# container start; MWAA allows a startup script 5 minutes.
export DBT_VENV_PATH="${AIRFLOW_HOME:-/usr/local/airflow}/dbt_venv"
if [[ "${MWAA_AIRFLOW_COMPONENT:-}" == "scheduler" || "${MWAA_AIRFLOW_COMPONENT:-}" == "worker" ]]; then
  if [[ ! -x "${DBT_VENV_PATH}/bin/dbt" ]]; then
    dbt_requirements="$(mktemp)"
    cat > "${dbt_requirements}" <<'DBT_REQUIREMENTS'
@DBT_REQUIREMENTS@
DBT_REQUIREMENTS
    if python3 -m venv "${DBT_VENV_PATH}" && PIP_USER=false "${DBT_VENV_PATH}/bin/pip" install --quiet --disable-pip-version-check \
        --no-cache-dir --no-deps --only-binary :all: -r "${dbt_requirements}"; then
      "${DBT_VENV_PATH}/bin/dbt" --version
    else
      echo "ERROR: building the dbt venv failed; dbt tasks will fail until the next container start" >&2
      rm -rf "${DBT_VENV_PATH}"  # no half-built venv: the next start tries again
    fi
    rm -f "${dbt_requirements}"
  fi
fi
