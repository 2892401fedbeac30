"""The analytics layer against the real local servers: a warehouse database of its own, loaded by the pipeline.

`shop` is a warehouse database for this package's tests (not the shared `warehouse` one, so no other test's rows
or marts change what these tests see) that the pipelines load (their tasks in process, tests/task_run.py, with the
`warehouse` connection pointed at it, for this package only) and dbt builds. Days: 2026-09-14 and 2026-09-15, used
by no other test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
import pytest

from include.etl.contract.model import load_contract
from local_stack import analytics, postgres
from local_stack.demo.sample_customers import generate as generate_customers
from local_stack.demo.sample_orders import generate as generate_orders
from local_stack.stack import LocalStack
from tests.integration.conftest import fresh_database
from tests.task_run import run_tasks

DAYS = [date(2026, 9, 14), date(2026, 9, 15)]


@dataclass
class Warehouse:
    """A database of the test stack that the pipeline loads and dbt builds."""

    stack: LocalStack
    dbname: str
    load: Callable[[date], dict[str, str]]

    @property
    def dsn(self) -> str:
        return postgres.dsn(self.stack.ports.postgres, self.dbname)

    def connect(self, user: str | None = None) -> psycopg.Connection:
        dsn = self.dsn if user is None else self.dsn.replace("://etl@", f"://{user}@")
        return psycopg.connect(dsn, autocommit=True)

    def dbt(self, *args: str) -> str:
        """dbt on this database; fails the test with dbt's output when dbt fails."""
        result = analytics.run_dbt(list(args), self.stack.ports, dbname=self.dbname, capture=True)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        return result.stdout

    def scalar(self, query: str, *params: Any) -> Any:
        with self.connect() as conn:
            return conn.execute(query, params).fetchone()[0]


def use_database(dbname: str) -> dict[str, str]:
    """The environment that points the `warehouse` connection at another database of the stack."""
    conn = json.loads(os.environ["AIRFLOW_CONN_WAREHOUSE"])
    return {"AIRFLOW_CONN_WAREHOUSE": json.dumps({**conn, "schema": dbname})}


@pytest.fixture(scope="package")
def shop(stack: LocalStack) -> Iterator[Warehouse]:
    """The `shop` database, empty; `shop.load(day)` runs the orders and customers pipelines for a day of sample
    data."""
    pipelines = {dataset: load_contract(dataset) for dataset in ("orders", "customers")}
    seeded: set[date] = set()

    def load(day: date) -> dict[str, str]:
        if day not in seeded:
            stack.seed(generate_orders([day], files=2, rows_per_file=120), "orders")
            stack.seed(generate_customers([day], customers=60), "customers")
            seeded.add(day)
        return {dataset: run_tasks(contract, day.isoformat()).state for dataset, contract in pipelines.items()}

    with fresh_database(stack, "shop"), pytest.MonkeyPatch.context() as patch:
        for key, value in use_database("shop").items():
            patch.setenv(key, value)
        yield Warehouse(stack, "shop", load)


@dataclass
class Builds:
    """Day 1 loaded, dbt build; day 2 loaded, dbt build again: what each build left."""

    shop: Warehouse
    outputs: list[str]
    run_results: list[dict[str, Any]]  # target/run_results.json of each build
    fct_built: list[dict[str, Any]]  # order_id -> built_at after each build
    daily_built: list[dict[tuple[Any, ...], Any]]  # (order_date, region, category) -> built_at after each build
    last_loaded: list[Any]  # max(loaded_at) of analytics.orders at each build


def _snapshot(shop: Warehouse) -> tuple[dict[str, Any], dict[tuple[Any, ...], Any], Any]:
    with shop.connect() as conn:
        fct = dict(conn.execute("select order_id, built_at from marts.fct_orders").fetchall())
        daily = {
            tuple(r[:3]): r[3]
            for r in conn.execute("select order_date, region, category, built_at from marts.daily_revenue")
        }
        loaded = conn.execute("select max(loaded_at) from analytics.orders").fetchone()[0]
    return fct, daily, loaded


@pytest.fixture(scope="package")
def builds(shop: Warehouse) -> Builds:
    result = Builds(shop, [], [], [], [], [])
    for day in DAYS:
        assert shop.load(day) == {"orders": "success", "customers": "success"}
        result.outputs.append(shop.dbt("build"))
        result.run_results.append(json.loads((analytics.DBT_PROJECT / "target" / "run_results.json").read_text()))
        fct, daily, loaded = _snapshot(shop)
        result.fct_built.append(fct)
        result.daily_built.append(daily)
        result.last_loaded.append(loaded)
    return result
