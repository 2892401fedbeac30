"""The demo's printed summary: per-file reconciliation per dataset, tables, objects, emails."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from include.etl.contract.model import load_contract
from include.etl.names import table_ident
from local_stack import postgres
from local_stack.config import BUCKETS


def _ledger_rows(
    conn: psycopg.Connection, ledger: str, table: str, prefix: str, days: list[str]
) -> list[tuple[Any, ...]]:
    """The newest version of each raw key of the days, with the rows the table holds from it now."""
    return conn.execute(
        sql.SQL(
            """
            SELECT l.source_key, l.status, l.rows_read, l.rows_loaded, l.rows_rejected, l.rows_duplicate,
                   CASE WHEN l.status = 'loaded' THEN coalesce(t.live, 0) ELSE 0 END, l.reason, l.reinterpreted::text
            FROM (SELECT DISTINCT ON (source_key) * FROM {ledger}
                  WHERE source_key LIKE ANY(%s) ORDER BY source_key, last_modified DESC, first_seen_at DESC) l
            LEFT JOIN (SELECT source_key, count(*) AS live FROM {table} GROUP BY 1) t USING (source_key)
            ORDER BY l.source_key
            """
        ).format(ledger=table_ident(ledger), table=table_ident(table)),
        ([f"{prefix}/dt={d}/%" for d in days],),
    ).fetchall()


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table_ident(table))).fetchone()
    return int(row[0]) if row else 0


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def print_summary(stack: Any, days_by_dataset: dict[str, list[str]], log: Path) -> None:
    client = stack.s3()
    with psycopg.connect(postgres.dsn(stack.ports.postgres)) as conn:
        for dataset, days in days_by_dataset.items():
            contract = load_contract(dataset)
            rows = _ledger_rows(conn, contract.ledger_table, contract.table, f"raw/{dataset}", days)
            count = _count(conn, contract.table)
            files = _count(conn, contract.ledger_table)
            print(
                f"\n{dataset}: per file, from the ledger {contract.ledger_table} (read = loaded + rejected + dups "
                "when the file was loaded; 'in table': its rows the table holds now, after later files)"
            )
            print(f"  {'file':60} {'status':10} {'read':>6} {'loaded':>6} {'rejected':>8} {'dups':>5} {'in table':>8}")
            for key, status, read, loaded, rejected, dups, live, reason, reinterpreted in rows:
                print(f"  {key:60} {status:10} {read:6} {loaded:6} {rejected:8} {dups:5} {live:8}")
                if reason:
                    print(f"      reason: {reason}")
                if reinterpreted and reinterpreted != "{}":
                    print(f"      reinterpreted: {reinterpreted}")
            if rows:
                t = [sum(r[i] for r in rows) for i in range(2, 7)]
                print(f"  {'total':60} {'':10} {t[0]:6} {t[1]:6} {t[2]:8} {t[3]:5} {t[4]:8}")
            print(f"  Table {contract.table} has {count} rows; {contract.ledger_table} has {files} file versions.")
            bucket = BUCKETS[1]
            for zone in ("processed", "rejected"):
                keys = _keys(client, bucket, f"{zone}/{dataset}/")
                example = keys[0] if keys else "-"
                print(
                    f"  {zone.capitalize():9} objects: {len(keys)} in s3://{bucket}/{zone}/{dataset}/ (e.g. {example})"
                )
    mails = sorted(stack.paths.mailbox.glob("*.eml"))
    print(f"\nEmails: {len(mails)} in {stack.paths.mailbox}")
    for path in mails[-sum(len(d) for d in days_by_dataset.values()) :]:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        print(f"  {path.name}: {msg['subject']}")
    p = stack.ports
    print(f"\nDAG run logs: {log}")
    query = (
        "select c.segment, count(*), sum(o.total_price) "
        "from analytics.orders o join analytics.customers c using (customer_id) group by 1"
    )
    print(f"Query the tables:  make psql ARGS=\"-c '{query}'\"")
    print(
        f"S3 endpoint:       http://127.0.0.1:{p.s3} (any access key), e.g. "
        f"aws --endpoint-url http://127.0.0.1:{p.s3} s3 ls s3://{BUCKETS[1]}/ --recursive"
    )
    print("Airflow UI:        make up   |   stop everything: make down")
