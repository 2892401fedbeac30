"""Helpers for tests against the real local stack."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest

from local_stack import postgres
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration


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
