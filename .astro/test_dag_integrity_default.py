"""Test the validity of all DAGs (run by `astro dev parse` / `astro dev pytest`).

Connections, variables and environment variables that a DAG reads at parse time are
patched, so a DAG that only fails for lack of them in the test container still parses.
"""

import logging
import os
from contextlib import contextmanager

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.models import Connection, Variable
from airflow.sdk.bases.hook import BaseHook


def basehook_get_connection_monkeypatch(key: str, *args, **kwargs):
    print(f"Attempted to fetch connection during parse returning an empty Connection object for {key}")
    return Connection(key)


BaseHook.get_connection = basehook_get_connection_monkeypatch

# Cosmos (the marts DAG) would look for its `dbt ls` cache in the mocked Variables below: parse with dbt ls itself.
os.environ["AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS"] = "False"

_no_default = object()


def variable_get_monkeypatch(key: str, default=_no_default, *args, **kwargs):
    print(f"Attempted to get Variable value during parse, returning a mocked value for {key}")
    return default if default is not _no_default else "NON_DEFAULT_MOCKED_VARIABLE_VALUE"


Variable.get = variable_get_monkeypatch


@contextmanager
def suppress_logging(namespace):
    logger = logging.getLogger(namespace)
    old_value = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = old_value


def get_import_errors():
    """(relative path, error or "No import errors") for every DAG file."""
    with suppress_logging("airflow"):
        dag_bag = DagBag()

        def strip_path_prefix(path):
            return os.path.relpath(path, os.environ.get("AIRFLOW_HOME"))

        result = [(strip_path_prefix(k), v.strip()) for k, v in dag_bag.import_errors.items()]
        result += [
            (strip_path_prefix(dag.fileloc), "No import errors")
            for dag in dag_bag.dags.values()
            if dag.fileloc not in dag_bag.import_errors
        ]
        return result


@pytest.mark.parametrize("rel_path, rv", get_import_errors(), ids=[x[0] for x in get_import_errors()])
def test_file_imports(rel_path, rv):
    """Test for import errors on a file."""
    exceptions = []
    if os.path.exists(".astro/dag_integrity_exceptions.txt"):
        with open(".astro/dag_integrity_exceptions.txt") as f:
            exceptions = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if rv != "No import errors" and rel_path not in exceptions:
        raise Exception(f"{rel_path} failed to import with message \n {rv}")
