"""Astro-style DAG integrity: every DAG imports, is tagged, retries at least twice, has docs."""

from __future__ import annotations

import pytest
from airflow.dag_processing.dagbag import DagBag

from local_stack.config import PROJECT_ROOT


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def test_no_import_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert "orders_pipeline" in dagbag.dags


def test_every_dag_is_tagged_documented_and_retried(dagbag: DagBag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no documentation"
        assert dag.default_args.get("retries", 0) >= 2, f"{dag_id} must retry tasks at least twice"


def test_orders_pipeline_shape(dagbag: DagBag) -> None:
    dag = dagbag.dags["orders_pipeline"]
    assert set(dag.task_dict) == {
        "list_new_files",
        "transform",
        "validate",
        "load",
        "table_changed",
        "check_columns",
        "check_table",
        "notify",
    }
    assert dag.task_dict["transform"].downstream_task_ids == {"validate"}
    assert dag.task_dict["validate"].trigger_rule == "all_done"
    assert dag.task_dict["validate"].downstream_task_ids == {"load"}
    assert dag.task_dict["table_changed"].downstream_task_ids == {"check_columns", "check_table"}
    assert dag.task_dict["notify"].upstream_task_ids == {"check_columns", "check_table", "load"}
    assert dag.task_dict["notify"].trigger_rule == "none_failed"  # runs when the checks are skipped
