"""The real scheduler, DAG processor and triggerer (LocalExecutor, as `make up` runs them): files land in S3, their
event runs the orders pipeline, whose load updates the table's asset, and that asset event runs the `marts` DAG,
which builds the new day's orders into the marts. The DAG processor parses the Cosmos DAG with `dbt ls` and its
Variable cache, as in production."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date

import psycopg
import pytest

from include.etl.contract import load_contract
from include.etl.load import prepare_tables
from local_stack import airflow, postgres
from local_stack.sample_orders import generate as generate_orders
from local_stack.stack import LocalStack
from tests.integration.conftest import metadata_db, purge_event_queues, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = date(2026, 9, 21)
DAGS = ("orders_pipeline", "marts")
WAIT_S = 900


@pytest.fixture(scope="module")
def scheduler(stack: LocalStack) -> Iterator[LocalStack]:
    with psycopg.connect(postgres.dsn(stack.ports.postgres)) as conn:  # the marts' sources exist from the start
        for dataset in ("orders", "customers"):
            prepare_tables(conn, load_contract(dataset))
    with metadata_db(stack) as meta:  # marts runs that earlier tests' loads queued are not this test's
        meta.execute("delete from asset_dag_run_queue where target_dag_id = 'marts'")
    purge_event_queues(stack)
    env = {**stack.env, "AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS": "True"}  # production's setting
    airflow.start_services(stack.paths, stack.ports, env)
    try:
        wait_for(
            "the DAGs to be parsed",
            300,
            lambda: all(d in airflow.run(["dags", "list"], stack.env).stdout for d in DAGS),
            3,
        )
        yield stack
    finally:
        airflow.stop_services(stack.paths)


def _parsed(stack: LocalStack) -> bool:
    listed = airflow.run(["dags", "list"], stack.env).stdout
    return all(dag_id in listed for dag_id in DAGS)


def _marts_runs(stack: LocalStack, since: float) -> list[tuple[str, str]]:
    with metadata_db(stack) as meta:
        return meta.execute(
            "select run_id, state from dag_run where dag_id = 'marts' and run_type = 'asset_triggered' "
            "and queued_at >= to_timestamp(%s) order by queued_at",
            (since,),
        ).fetchall()


def test_a_load_that_changed_the_table_runs_the_marts(scheduler: LocalStack) -> None:
    stack = scheduler
    since = time.time() - 1
    stack.seed(generate_orders([DAY], files=2, rows_per_file=100), "orders")  # S3 -> SQS -> the pipeline runs

    with psycopg.connect(postgres.dsn(stack.ports.postgres), autocommit=True) as wh:
        loaded = wait_for(
            "the day's orders",
            WAIT_S,
            lambda: wh.execute("select count(*) from analytics.orders where order_date = %s", (DAY,)).fetchone()[0],
            2,
        )

        def built() -> bool:
            runs = _marts_runs(stack, since)
            assert all(state != "failed" for _, state in runs), runs
            if not runs or runs[-1][1] != "success":
                return False
            exists = wh.execute("select to_regclass('marts.fct_orders')").fetchone()[0]
            query = "select count(*) from marts.fct_orders where order_date = %s"
            return bool(exists) and wh.execute(query, (DAY,)).fetchone()[0] == loaded

        wait_for("an asset-triggered marts run that built the day's orders", WAIT_S, built, 5)
    with metadata_db(stack) as meta:
        run_id = _marts_runs(stack, since)[-1][0]
        tasks = dict(
            meta.execute(
                "select task_id, state from task_instance where dag_id = 'marts' and run_id = %s", (run_id,)
            ).fetchall()
        )
        consumed = {
            r[0]
            for r in meta.execute(
                "select a.name from dag_run d join dagrun_asset_event r on r.dag_run_id = d.id "
                "join asset_event e on e.id = r.event_id join asset a on a.id = e.asset_id "
                "where d.dag_id = 'marts' and d.run_id = %s",
                (run_id,),
            )
        }
    assert tasks["fct_orders.run"] == tasks["fct_orders.test"] == tasks["daily_revenue.run"] == "success"
    assert consumed <= {"warehouse.analytics.orders", "warehouse.analytics.customers"} and consumed
