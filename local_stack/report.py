"""The demo's printed summary: per-file reconciliation, table counts, objects, emails."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

import psycopg

from local_stack import postgres
from local_stack.config import BUCKETS


def _ledger_rows(conn: psycopg.Connection, days: list[str]) -> list[tuple[Any, ...]]:
    return conn.execute(
        """
        SELECT source_key, status, rows_read, rows_loaded, rows_rejected, rows_duplicate, reason
        FROM etl.file_ledger
        WHERE source_key LIKE ANY(%s)
        ORDER BY source_key
        """,
        ([f"raw/orders/dt={d}/%" for d in days],),
    ).fetchall()


def print_summary(stack: Any, days: list[str], log: Path) -> None:
    with psycopg.connect(postgres.dsn(stack.ports.postgres)) as conn:
        rows = _ledger_rows(conn, days)
        orders = conn.execute("SELECT count(*), count(DISTINCT order_date) FROM analytics.orders").fetchone()
        ledger = conn.execute("SELECT count(*) FROM etl.file_ledger").fetchone()
    print("\nPer file (from the ledger etl.file_ledger): read = loaded + rejected + duplicates")
    print(f"  {'file':58} {'status':9} {'read':>6} {'loaded':>6} {'rejected':>8} {'dups':>5}")
    for key, status, read, loaded, rejected, dups, reason in rows:
        print(f"  {key:58} {status:9} {read:6} {loaded:6} {rejected:8} {dups:5}")
        if reason:
            print(f"      reason: {reason}")
    if rows:
        t = [sum(r[i] for r in rows) for i in range(2, 6)]
        print(f"  {'total':58} {'':9} {t[0]:6} {t[1]:6} {t[2]:8} {t[3]:5}")
    print(
        f"\nTables: analytics.orders has {orders[0]} rows over {orders[1]} order dates; "
        f"etl.file_ledger has {ledger[0]} files."
    )
    client = stack.s3()
    bucket = BUCKETS[1]
    for zone in ("processed", "rejected"):
        keys = [
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{zone}/orders/")
            for o in page.get("Contents", [])
        ]
        example = keys[0] if keys else "-"
        print(f"{zone.capitalize():9} objects: {len(keys)} in s3://{bucket}/{zone}/orders/ (e.g. {example})")
    mails = sorted(stack.paths.mailbox.glob("*.eml"))
    print(f"Emails:   {len(mails)} in {stack.paths.mailbox}")
    for path in mails[-len(days) :]:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        print(f"  {path.name}: {msg['subject']}")
    p = stack.ports
    print(f"\nDAG run logs: {log}")
    query = "select region, count(*), sum(total_price) from analytics.orders group by 1"
    print(f"Query the tables:  make psql ARGS=\"-c '{query}'\"")
    print(
        f"S3 endpoint:       http://127.0.0.1:{p.s3} (any access key), e.g. "
        f"aws --endpoint-url http://127.0.0.1:{p.s3} s3 ls s3://{bucket}/ --recursive"
    )
    print("Airflow UI:        make up   |   stop everything: make down")
