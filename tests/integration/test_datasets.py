"""Datasets as data: every type a contract accepts round-trips to PostgreSQL, and a new dataset is one
contract file (plus its CSVs): its DAG, table and ledger follow."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from include.etl.contract.model import load_contract, parse_contract
from include.etl.contract.transform import transform_file
from include.etl.loading.load import load_files
from include.etl.reading import storage
from include.etl.settings import DatasetSettings
from local_stack.config import PROJECT_ROOT
from tests.integration.conftest import fresh_database
from tests.task_run import run_tasks

pytestmark = pytest.mark.integration

EVERY_TYPE = {
    "dataset": "every_type",
    "table": "typed.every_type",
    "ledger_table": "typed.every_type_ledger",
    "key": "id",
    "latest_by": "seen_at",
    "timezone": "Europe/Paris",
    "columns": {
        "id": {"type": "text", "required": True},
        "small": {"type": "integer", "min": 0, "max": 100, "on_blank": None},
        "big": {"type": "integer", "on_blank": None},
        "price": {"type": "decimal", "precision": 9, "scale": 3, "on_blank": None},
        "flag": {"type": "boolean", "on_blank": None},
        "born": {"type": "date", "on_blank": None},
        "seen_at": {"type": "timestamp", "required": True},
    },
    "derived": {
        "seen_on": {"type": "date", "from": "seen_at"},
        "amount": {"type": "decimal", "precision": 20, "scale": 3, "product_of": ["big", "price"]},
    },
}
CSV = (
    "id,small,big,price,flag,born,seen_at\n"
    "a,7,9000000000,12.345,true,2026-02-28,2026-03-29 03:30\n"
    "b,,,,,,2026-12-31 23:30\n"
)


def test_every_accepted_type_round_trips_to_postgresql(stack: Any) -> None:
    contract = parse_contract(EVERY_TYPE)
    settings = DatasetSettings(dataset="every_type", raw_prefix="typed/raw", processed_prefix="typed/processed")
    s3 = stack.s3()
    s3.put_object(Bucket="raw", Key="typed/raw/dt=2026-01-01/t.csv", Body=CSV.encode())
    (obj,), _ = storage.list_partition(s3, "raw", "typed/raw/dt=2026-01-01/")
    result = transform_file(s3, obj, contract, settings)
    assert (result.rows_clean, result.rows_rejected) == (2, 0)
    with fresh_database(stack, "types_test") as dsn, psycopg.connect(dsn) as conn:
        load_files(conn, s3, contract, settings, [result], "run-1")
        rows = conn.execute(
            "SELECT id, small, big, price, flag, born, seen_at, seen_on, amount FROM typed.every_type ORDER BY id"
        ).fetchall()
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'typed' "
                "AND table_name = 'every_type'"
            ).fetchall()
        )
    assert rows == [
        (
            "a",
            7,
            9_000_000_000,
            Decimal("12.345"),
            True,
            date(2026, 2, 28),
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST, just after the clocks went forward
            date(2026, 3, 29),
            Decimal("111105000000.000"),
        ),
        ("b", None, None, None, None, None, datetime(2026, 12, 31, 22, 30, tzinfo=UTC), date(2026, 12, 31), None),
    ]
    assert {k: types[k] for k in ("small", "big", "price", "flag", "born", "seen_at", "seen_on")} == {
        "small": "integer",
        "big": "bigint",
        "price": "numeric",
        "flag": "boolean",
        "born": "date",
        "seen_at": "timestamp with time zone",
        "seen_on": "date",
    }


PRODUCTS = {
    "dataset": "products",
    "description": "The product catalogue.",
    "table": "analytics.products",
    "key": "sku",
    "columns": {
        "sku": {"type": "text", "required": True, "aliases": ["article number"]},
        "product_name": {"type": "text", "required": True},
        "list_price": {"type": "decimal", "precision": 10, "scale": 2, "min": 0, "required": True},
        "active": {"type": "boolean", "on_blank": True},
    },
}


def test_a_third_dataset_is_one_contract_file_and_its_csv(stack: Any, contracts_folder: Path) -> None:
    """What the README's "Add a dataset" walks through: a contract file, a CSV in raw/<dataset>/, a run."""
    from airflow.dag_processing.dagbag import DagBag

    (contracts_folder / "products.yml").write_text(yaml.safe_dump(PRODUCTS), encoding="utf-8")
    stack.seed(
        {"2026-05-10": {"catalogue.csv": b"Article Number,product_name,list_price,active\nSKU-1,Desk Lamp,19.90,\n"}},
        dataset="products",
    )
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "pipelines.py"))
    assert not bag.import_errors
    assert "products_pipeline" in bag.dags  # its DAG; its tasks run here in process (tests/task_run.py)
    run = run_tasks(load_contract(contracts_folder / "products.yml"), "2026-05-10")
    assert str(run.state) == "success"
    with psycopg.connect(stack_dsn(stack)) as conn:
        assert conn.execute("SELECT sku, product_name, list_price, active FROM analytics.products").fetchall() == [
            ("SKU-1", "Desk Lamp", Decimal("19.90"), True)
        ]
        ledger = conn.execute("SELECT source_key, status FROM etl.products_file_ledger").fetchall()
    assert ledger == [("raw/products/dt=2026-05-10/catalogue.csv", "loaded")]


def stack_dsn(stack: Any) -> str:
    from local_stack import postgres

    return postgres.dsn(stack.ports.postgres)
