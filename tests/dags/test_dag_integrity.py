"""Astro-style DAG integrity: every DAG imports, is tagged, retries at least twice, has docs."""

from __future__ import annotations

import json
import os
import shutil

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


@pytest.mark.parametrize("dataset", ["orders", "customers"])
def test_every_contract_has_its_pipeline_of_the_same_shape(dagbag: DagBag, dataset: str) -> None:
    dag = dagbag.dags[f"{dataset}_pipeline"]
    assert set(dag.task_dict) == {
        "list_files",
        "transform",
        "load",
        "validation_report",
        "table_changed",
        "check_columns",
        "check_table",
        "notify",
    }
    assert dag.task_dict["transform"].downstream_task_ids == {"load", "validation_report"}
    assert dag.task_dict["load"].trigger_rule == "all_done"  # a failed transform's files are recorded
    assert dag.task_dict["validation_report"].downstream_task_ids == {"notify"}  # beside the load, not before it
    assert dag.task_dict["table_changed"].downstream_task_ids == {"check_columns", "check_table"}
    assert dag.task_dict["notify"].upstream_task_ids == {"check_columns", "check_table", "load", "validation_report"}
    assert dag.task_dict["notify"].trigger_rule == "none_failed"  # runs when the checks are skipped
    assert dataset in dag.tags
    assert [o.name for o in dag.task_dict["check_table"].outlets] == [f"warehouse.analytics.{dataset}"]


def test_a_broken_contract_is_an_import_error_and_the_other_datasets_keep_their_dags(tmp_path) -> None:
    import subprocess
    import sys

    from local_stack.config import PROJECT_ROOT as ROOT

    contracts = tmp_path / "contracts"
    contracts.mkdir()
    text = (ROOT / "include" / "contracts" / "orders.yml").read_text(encoding="utf-8")
    (contracts / "orders.yml").write_text(text.replace("required: true", "requird: true", 1), encoding="utf-8")
    # A contract spelled .yaml is a contract too (not silently ignored).
    shutil.copy(ROOT / "include" / "contracts" / "customers.yml", contracts / "customers.yaml")
    code = (
        "import json; from airflow.dag_processing.dagbag import DagBag; "
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r}); "
        "print(json.dumps({'dags': sorted(bag.dag_ids), 'errors': {k.rsplit('/', 1)[-1]: v "
        "for k, v in bag.import_errors.items()}}))"
    )
    env = {**os.environ, "ETL_CONTRACTS_DIR": str(contracts)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found["dags"] == ["customers_pipeline", "marts"]  # the marts rebuild on the valid datasets' loads
    assert list(found["errors"]) == ["contract_errors.py"]
    assert (
        "orders.yml: columns.order_id.requird: unknown key 'requird' (did you mean 'required'?)"
        in (found["errors"]["contract_errors.py"])
    )
