"""Helpers for tests against the real local stack."""

from __future__ import annotations

import email
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from local_stack import airflow, postgres
from local_stack.config import AIRFLOW_DB, DB_USER, ExecutorChoice
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration
T = TypeVar("T")

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


def wait_for(what: str, timeout: float, check: Callable[[], T], interval: float = 0.5) -> T:
    """Polls `check` every `interval` seconds until it returns something truthy, which it returns; fails the
    test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def metadata_db(stack: LocalStack) -> psycopg.Connection:
    """Airflow's metadata database on the stack's PostgreSQL (autocommit)."""
    return psycopg.connect(postgres.dsn(stack.ports.postgres, AIRFLOW_DB), autocommit=True)


def airflow_cli(env: dict[str, str], *args: str) -> str:
    """An `airflow` command in `env`; its stdout, or the test fails with its output."""
    result = airflow.run(list(args), env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def purge_event_queues(stack: LocalStack) -> None:
    """Empties every dataset's SQS queue of S3 notifications: what the earlier tests uploaded is not news to a
    scheduler a test starts (its triggerer would otherwise start runs for a backlog of old uploads first)."""
    from local_stack import s3
    from local_stack.config import datasets

    sqs = s3.client(stack.ports.s3, "sqs")
    for dataset in datasets():
        url = s3.events_queue_url(stack.ports.s3, dataset)
        waiting = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        print(f"{dataset}: {waiting['Attributes']['ApproximateNumberOfMessages']} notifications purged")
        sqs.purge_queue(QueueUrl=url)


def isolated_env(
    stack: LocalStack, database: str, prefix: str, executor: ExecutorChoice | None = None
) -> dict[str, str]:
    """The stack's Airflow environment with the orders pipeline on prefixes and a warehouse database of its own
    (`<prefix>/raw/orders`, ...), and no runs started by S3 events."""
    env = airflow.environment(stack.paths, stack.ports, executor)
    warehouse = json.loads(env["AIRFLOW_CONN_WAREHOUSE"])
    warehouse["schema"] = database
    env.update(
        {
            "AIRFLOW_CONN_WAREHOUSE": json.dumps(warehouse),
            "AIRFLOW_VAR_ORDERS_RAW_PREFIX": f"{prefix}/raw/orders",
            "AIRFLOW_VAR_ORDERS_PROCESSED_PREFIX": f"{prefix}/processed/orders",
            "AIRFLOW_VAR_ORDERS_REJECTED_PREFIX": f"{prefix}/rejected/orders",
            "AIRFLOW_VAR_ORDERS_EVENTS_QUEUE_URL": "",
            "AIRFLOW_VAR_CUSTOMERS_EVENTS_QUEUE_URL": "",
        }
    )
    return env


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
