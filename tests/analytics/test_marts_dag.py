"""The `marts` DAG: Cosmos renders every dbt model and its tests as tasks, scheduled on the loaded tables' assets;
it runs dbt from its own venv; a failing dbt test fails its task and sends the failure alert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from include.analytics.alerts import on_dbt_failure
from include.analytics.marts import build_marts_dag, dbt_executable
from include.etl.contract.model import load_contract
from include.etl.loading.load import prepare_tables
from local_stack import postgres
from local_stack.analytics import DBT_PROJECT
from local_stack.config import PROJECT_ROOT
from local_stack.stack import LocalStack
from tests.analytics.conftest import Builds, use_database
from tests.integration.conftest import fresh_database, mails

MODELS = [
    "stg_orders",
    "stg_customers",
    "stg_file_ledger",
    "fct_orders",
    "daily_revenue",
    "customer_metrics",
    "product_performance",
    "dq_files",
    "dq_daily",
    "dq_rejection_reasons",
    "load_freshness",
]


@pytest.fixture(scope="module")
def dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert not bag.import_errors
    return bag.dags["marts"]


def test_each_model_and_its_tests_are_tasks_in_dbt_order(dag: Any) -> None:
    for model in MODELS:
        assert dag.task_dict[f"{model}.run"].downstream_task_ids == {f"{model}.test"}
    assert "stg_orders.test" in dag.task_dict["fct_orders.run"].upstream_task_ids
    assert "fct_orders.test" in dag.task_dict["daily_revenue.run"].upstream_task_ids
    assert not dag.task_dict["stg_orders.run"].upstream_task_ids  # no source tasks: they would only warn
    # Tests of two models run once both are built.
    assert {"daily_revenue.test", "fct_orders.test"} <= dag.task_dict[
        "daily_revenue_matches_fct_orders_test"
    ].upstream_task_ids


def test_scheduled_on_the_loaded_tables_and_alerting_on_failure(dag: Any) -> None:
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"
    assert {a.name for a in condition.objects} == {"warehouse.analytics.orders", "warehouse.analytics.customers"}
    assert dag.max_active_runs == 1 and dag.max_active_tasks == 2  # never two builds at once; loads keep slots
    assert {t.priority_weight for t in dag.tasks} == {1} and {str(t.weight_rule) for t in dag.tasks} == {"absolute"}
    assert dag.default_args["on_failure_callback"] is on_dbt_failure
    assert dag.default_args["retries"] >= 2
    assert dbt_executable().exists()
    assert dag.task_dict["fct_orders.run"].dbt_executable_path == str(dbt_executable())


def serialized(dag: Any) -> Any:
    """A DAG built here (not found in dags/) written to the metadata DB, as dag.test() needs in Airflow 3.3."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "tests" / "analytics" / "no_dags_here"))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


@pytest.mark.integration
def test_the_dag_builds_a_model_and_its_tests(builds: Builds) -> None:
    """A run of part of the DAG (the order fact and its tests) against the loaded `shop` database."""
    run = serialized(build_marts_dag(DBT_PROJECT, dag_id="marts_fct", select=["fct_orders"])).test()
    assert str(run.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {
        "fct_orders.run": "success",
        "fct_orders.test": "success",
        # the tests of the fact with another model (detached: they run once both are built)
        "daily_revenue_matches_fct_orders_test": "success",
        "relationships_fct_orders_customer_id__customer_id__ref_customer_metrics__test": "success",
    }


@pytest.fixture
def broken(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A warehouse whose orders break a dbt test (a region the contract does not allow), no retries."""
    with fresh_database(stack, "shop_broken") as dsn:
        with psycopg.connect(dsn) as conn:
            for dataset in ("orders", "customers"):
                prepare_tables(conn, load_contract(dataset))
            conn.execute(
                "insert into analytics.orders (order_id, order_ts, customer_id, product_name, category, quantity, "
                "unit_price, region, order_date, total_price, source_key, source_line, source_modified) values "
                "('B-1', '2026-09-20 10:00+00', 'guest', 'Lamp', 'Books', 1, 9.99, 'Atlantis', '2026-09-20', 9.99, "
                "'raw/orders/dt=2026-09-20/x.csv', 2, now())"
            )
        for key, value in use_database("shop_broken").items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AIRFLOW_VAR_MARTS_BROKEN_TASK_RETRIES", "0")
        yield dsn


@pytest.mark.integration
def test_a_failing_dbt_test_fails_its_task_and_alerts(broken: str, stack: LocalStack) -> None:
    before = len(mails(stack.paths.mailbox))
    run = serialized(build_marts_dag(DBT_PROJECT, dag_id="marts_broken", select=["stg_orders"])).test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    assert states["stg_orders.run"] == "success"
    assert states["stg_orders.test"] == "failed"
    alerts = [m for m in mails(stack.paths.mailbox)[before:] if "stg_orders.test" in m["subject"]]
    assert [m["subject"] for m in alerts] == ["[marts_broken] task stg_orders.test failed"]
    body = alerts[0].get_body(preferencelist=("html",)).get_content()
    assert "What dbt reported:" in body and "FAIL test.shop.accepted_values_stg_orders_region" in body, body
    assert "Got 1 result, configured to fail if != 0" in body
    with psycopg.connect(postgres.dsn(stack.ports.postgres, "shop_broken")) as conn:  # the model itself was built
        assert conn.execute("select region from staging.stg_orders").fetchall() == [("Atlantis",)]


def test_the_mwaa_bundle_ships_the_dbt_project_without_dbts_output() -> None:
    from mwaa import bundle

    keys = {key for _, key in bundle.files()}
    assert {"dags/marts.py", "dags/dbt/shop/dbt_project.yml", "dags/dbt/shop/models/marts/fct_orders.sql"} <= keys
    assert not [k for k in keys if "/target/" in k or "/logs/" in k]
    assert "dbt/" in (bundle.HERE / "airflowignore").read_text().splitlines()


def test_the_dag_processor_does_not_skip_the_cosmos_dag_file() -> None:
    """In safe mode the DAG processor only imports files whose text mentions airflow and a DAG."""
    from airflow.utils.file import might_contain_dag_via_default_heuristic

    assert might_contain_dag_via_default_heuristic(str(PROJECT_ROOT / "dags" / "marts.py"))
