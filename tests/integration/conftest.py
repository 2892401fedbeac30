"""Helpers for tests against the real local stack."""

from __future__ import annotations

import contextlib
import email
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from local_stack import postgres
from local_stack.config import DB_USER
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

# The orders contract's own column names, as the first line of a raw CSV.
HEADER = "order_id,order_ts,customer_id,product_name,category,quantity,unit_price,region\n"


@contextmanager
def fresh_database(stack: LocalStack, name: str) -> Iterator[str]:
    """An empty database on the stack's PostgreSQL for one test; yields its DSN, drops it after."""
    admin_dsn = postgres.dsn(stack.ports.postgres, "postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(DB_USER)))
    try:
        yield postgres.dsn(stack.ports.postgres, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def contracts_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A contracts folder holding the shipped contracts, that ETL_CONTRACTS_DIR points at; a test adds its own.

    The DAGs of the added contracts reach the metadata database when a test runs them (`dag.test()`); they are
    deleted from it afterwards, so a later test (the scheduler's) sees the shipped DAGs only.
    """
    from airflow.api.common.delete_dag import delete_dag
    from airflow.exceptions import DagNotFound

    from include.etl.contract import contract_paths, load_contract
    from include.etl.dag_factory import dag_id

    folder = tmp_path / "contracts"
    folder.mkdir()
    shipped = set()
    for path in contract_paths():
        shutil.copy(path, folder / path.name)
        shipped.add(path.stem)
    monkeypatch.setenv("ETL_CONTRACTS_DIR", str(folder))
    yield folder
    for path in contract_paths(folder):
        if path.stem not in shipped:
            with contextlib.suppress(DagNotFound):  # the test failed before its DAG ran
                delete_dag(dag_id(load_contract(path).dataset), keep_records_in_log=False)


@pytest.fixture
def warehouse(stack: LocalStack) -> Any:
    with psycopg.connect(postgres.dsn(stack.ports.postgres), autocommit=True) as conn:
        yield conn


def mails(mailbox: Path) -> list[EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in sorted(mailbox.glob("*.eml"))
    ]


def html_body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html", "plain"))
    assert part is not None
    return part.get_content()


def table_checksum(conn: Any, source_like: str = "%") -> tuple[int, str]:
    """Row count and an md5 over every column of analytics.orders' rows (from matching files), in key order."""
    row = conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY order_id), '')) "
        "FROM analytics.orders t WHERE source_key LIKE %s",
        (source_like,),
    )
    return row.fetchone()
