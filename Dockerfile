# Astro Runtime 3.3-8 ships Apache Airflow 3.3.2, the version pinned for local
# development in requirements-dev.txt (checked against Astronomer's runtime release
# catalog; see README "Deploying"). requirements.txt adds what the image lacks.
FROM astrocrpublic.azurecr.io/runtime:3.3-8

# dbt in its own virtualenv (its pins conflict with Airflow's), from the same lock as `make dbt-venv`
# (requirements-dbt.lock: wheels for Python 3.14, the runtime's default, on amd64 and arm64). The marts DAG runs
# $DBT_VENV_PATH/bin/dbt through Cosmos. PIP_CONSTRAINT is cleared: the image's constraints are Airflow's.
ENV DBT_VENV_PATH=/usr/local/airflow/dbt_venv \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False
COPY requirements-dbt.lock /tmp/requirements-dbt.lock
RUN python -m venv "${DBT_VENV_PATH}" \
    && PIP_CONSTRAINT="" "${DBT_VENV_PATH}/bin/pip" install --no-cache-dir --only-binary :all: \
        -r /tmp/requirements-dbt.lock
