"""Helpers for tests against the real local stack."""

from __future__ import annotations

import email
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
