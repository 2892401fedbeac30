"""No two contracts write the same table: refused when the DAGs are parsed, and again at load time against the
owner each table records in PostgreSQL (include/etl/loading/owners.py), on the real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from include.etl.contract.model import load_contract
from include.etl.loading.owners import OwnershipError
from local_stack.config import PROJECT_ROOT
from local_stack.stack import LocalStack
from tests.integration.conftest import HEADER
from tests.task_run import run_tasks

pytestmark = pytest.mark.integration

DAY = "2026-02-11"


def _promo(folder: Path, **names: str) -> Path:
    """A careless contract: the orders contract under another dataset name, with the given table names."""
    doc = load_contract("orders").to_document()
    doc.update(dataset="promo", table="analytics.promo", ledger_table="etl.promo_file_ledger")
    doc.pop("description", None)
    doc.update(names)
    path = folder / "promo.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _orders_rows(db: Any) -> list[tuple[Any, ...]]:
    return db.execute("SELECT * FROM analytics.orders ORDER BY order_id").fetchall()


@pytest.mark.parametrize(
    ("names", "shared"),
    [
        ({"table": "analytics.orders"}, True),
        ({"ledger_table": "etl.orders_file_ledger"}, True),
        ({"table": "etl.orders_duplicates"}, True),
        ({"table": "etl.orders_stage_42"}, False),  # named like an orders staging table, which orders' loads drop
    ],
    ids=["table", "ledger", "duplicates", "staging-name"],
)
def test_a_contract_naming_another_datasets_table_is_refused_when_the_dags_are_parsed(
    contracts_folder: Path, names: dict[str, str], shared: bool
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from include.etl.running.dag_factory import valid_contracts

    _promo(contracts_folder, **names)
    contracts, problems = valid_contracts()
    built = {c.dataset for c in contracts}
    assert "promo" not in built and "customers" in built
    text = "\n".join(problems)
    assert "promo.yml" in text and next(iter(names.values())) in text
    # Both sides of a shared table are refused: nothing tells which is right.
    assert ("orders" not in built) == shared
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "contract_errors.py"))
    (error,) = bag.import_errors.values()
    assert "promo.yml" in error and "name another one" in error


def test_a_load_never_writes_a_table_another_dataset_owns(stack: LocalStack, isolated: Any, contracts_folder) -> None:
    orders = load_contract("orders")
    stack.s3().put_object(
        Bucket="raw",
        Key=f"{isolated.prefix}/raw/orders/dt={DAY}/a.csv",
        Body=(HEADER + f"OW-1,{DAY} 10:00,c,Lamp,x,2,5.00,North\n").encode(),
    )
    assert run_tasks(orders, DAY).state == "success"
    before = _orders_rows(isolated)
    comment = isolated.execute("SELECT obj_description('analytics.orders'::regclass, 'pg_class')").fetchone()[0]
    assert comment.startswith("csv-etl owner: orders")

    promo = load_contract(_promo(contracts_folder, table="analytics.orders"))
    stack.s3().put_object(
        Bucket="raw",
        Key=f"raw/promo/dt={DAY}/p.csv",
        Body=(HEADER + f"OW-1,{DAY} 11:00,c,Promo,x,,,North\n").encode(),
    )
    run = run_tasks(promo, DAY)
    assert run.state == "failed"
    assert isinstance(run.errors["load"].__cause__, OwnershipError)
    assert "analytics.orders belongs to dataset 'orders'" in str(run.errors["load"])
    assert _orders_rows(isolated) == before  # not a value, not a NOT NULL changed
    notnull = isolated.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'analytics' AND table_name = 'orders' "
        "AND is_nullable = 'NO'"
    ).fetchone()[0]
    assert notnull >= 8

    # Its ledger pointed at the orders ledger: the listing refuses it before writing a row.
    sneaky = load_contract(_promo(contracts_folder, ledger_table="etl.orders_file_ledger"))
    ledger_before = isolated.execute("SELECT count(*) FROM etl.orders_file_ledger").fetchone()
    run = run_tasks(sneaky, DAY)
    assert run.states["list_files"] == "failed"
    assert "etl.orders_file_ledger belongs to dataset 'orders'" in str(run.errors["list_files"])
    assert isolated.execute("SELECT count(*) FROM etl.orders_file_ledger").fetchone() == ledger_before


def test_tables_made_before_owners_were_recorded_are_adopted_only_by_their_own_dataset(
    stack: LocalStack, isolated: Any, contracts_folder
) -> None:
    orders = load_contract("orders")
    stack.s3().put_object(
        Bucket="raw",
        Key=f"{isolated.prefix}/raw/orders/dt={DAY}/a.csv",
        Body=(HEADER + f"AD-1,{DAY} 10:00,c,Lamp,x,2,5.00,North\n").encode(),
    )
    assert run_tasks(orders, DAY).state == "success"
    for table in ("analytics.orders", "etl.orders_duplicates", "etl.orders_file_ledger"):  # as an older version left
        isolated.execute(f"COMMENT ON TABLE {table} IS NULL")
    promo = load_contract(_promo(contracts_folder, table="analytics.orders"))
    stack.s3().put_object(
        Bucket="raw", Key=f"raw/promo/dt={DAY}/p.csv", Body=(HEADER + f"AD-9,{DAY} 11:00,c,P,x,1,1,N\n").encode()
    )
    run = run_tasks(promo, DAY)
    assert "analytics.orders exists, holds rows and names no owner" in str(run.errors["load"])
    assert [r[0] for r in isolated.execute("SELECT order_id FROM analytics.orders")] == ["AD-1"]
    # The orders pipeline's own next load adopts them (its ledger records loaded files).
    assert run_tasks(orders, DAY).state == "success"
    owners = isolated.execute(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.oid = ANY(ARRAY["
        "'analytics.orders'::regclass, 'etl.orders_duplicates'::regclass, 'etl.orders_file_ledger'::regclass])"
    ).fetchall()
    assert all(o[0].startswith("csv-etl owner: orders") for o in owners)


def test_a_load_drops_only_its_own_leftover_staging_tables(stack: LocalStack, isolated: Any) -> None:
    isolated.execute("CREATE SCHEMA IF NOT EXISTS etl")
    isolated.execute("CREATE TABLE etl.orders_stage_archive (x int)")  # someone's table, named alike
    isolated.execute("CREATE UNLOGGED TABLE etl.orders_stage_123 (x int)")  # a failed load's leftover
    stack.s3().put_object(
        Bucket="raw",
        Key=f"{isolated.prefix}/raw/orders/dt={DAY}/a.csv",
        Body=(HEADER + f"ST-1,{DAY} 10:00,c,Lamp,x,2,5.00,North\n").encode(),
    )
    assert run_tasks(load_contract("orders"), DAY).state == "success"
    left = isolated.execute(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE 'orders_stage%' ORDER BY 1"
    ).fetchall()
    assert left == [("orders_stage_archive",)]
