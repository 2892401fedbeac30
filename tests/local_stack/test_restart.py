"""`make down` then `make up`: what the ledger says is loaded is still in the local S3, as the same versions; and
when a stack's S3 was reset anyway, `make up` says what was lost and the way out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from local_stack import postgres
from local_stack.config import PROJECT_ROOT, Ports, StackPaths
from local_stack.stack import LocalStack, lost_objects
from tests.local_stack.test_demo import _user_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "raw/orders/dt=2026-02-16/kept.csv"


def _local_stack(env: dict[str, str], *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "local_stack", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run.stdout


@pytest.fixture
def user_stack() -> Iterator[tuple[dict[str, str], LocalStack]]:
    with _user_stack() as env:
        ports = Ports(
            postgres=int(env["LOCAL_PG_PORT"]),
            s3=int(env["LOCAL_S3_PORT"]),
            smtp=int(env["LOCAL_SMTP_PORT"]),
            airflow=int(env["LOCAL_AIRFLOW_PORT"]),
            redis=0,
        )
        yield env, LocalStack(Path(env["LOCAL_STATE_DIR"]), ports)


def _record_loaded(stack: LocalStack, head: dict[str, Any]) -> None:
    """The ledger row of a loaded version, as a load writes it."""
    from include.etl.loading import ledger
    from include.etl.reading.storage import RawObject

    obj = RawObject(KEY, head["ETag"].strip('"'), int(head["ContentLength"]), head["LastModified"])
    with psycopg.connect(postgres.dsn(stack.ports.postgres)) as conn, conn.cursor() as cur:
        ledger.ensure_ledger(cur, "etl.orders_file_ledger")
        ledger.record(
            cur, "etl.orders_file_ledger", [ledger.Outcome(KEY, obj.etag, obj.last_modified, "loaded", "r")], 3
        )


def test_down_and_up_keep_every_object_as_the_same_version(user_stack) -> None:
    env, stack = user_stack
    _local_stack(env, "up")
    s3 = stack.s3()
    s3.put_object(Bucket="raw", Key=KEY, Body=b"order_id\n1\n", Metadata={"note": "kept"})
    before = s3.head_object(Bucket="raw", Key=KEY)
    _record_loaded(stack, before)
    _local_stack(env, "down")
    out = _local_stack(env, "up")
    after = stack.s3().head_object(Bucket="raw", Key=KEY)
    assert (after["ETag"], after["LastModified"], after["Metadata"]) == (
        before["ETag"],
        before["LastModified"],
        {"note": "kept"},
    )
    assert stack.s3().get_object(Bucket="raw", Key=KEY)["Body"].read() == b"order_id\n1\n"
    assert lost_objects(stack) == {} and "WARNING" not in out

    # A state folder whose S3 was reset (as every one was before the S3 kept its objects): `up` says so.
    _local_stack(env, "down")
    shutil.rmtree(StackPaths(Path(env["LOCAL_STATE_DIR"])).s3_state)
    out = _local_stack(env, "up")
    assert lost_objects(stack) == {"orders": [KEY]}
    assert "WARNING: 1 raw file(s) the ledgers record as loaded are not in the local S3 any more" in out
    assert f"orders: 1, e.g. {KEY}" in out and "make clean && make demo" in out
