"""The file ledger: which raw object versions (key + ETag) were loaded, with their counts.

A file is in the ledger only if its rows were merged in the same transaction, so
"not in the ledger" means "still to load": retries and reruns skip what is there and
pick up whatever failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql


@dataclass(frozen=True)
class LedgerEntry:
    """One loaded (or whole-file rejected) raw object version."""

    source_key: str
    etag: str
    status: str
    reason: str | None
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    rows_duplicate: int
    rows_inserted: int
    processed_key: str | None
    rejected_key: str | None
    run_id: str


def table_ident(qualified: str) -> sql.Identifier:
    """`schema.table` as a safely quoted identifier."""
    return sql.Identifier(*qualified.split(".", 1))


def ensure_ledger(cur: Any, ledger_table: str) -> None:
    """Create the ledger table (and its schema) if missing."""
    if "." in ledger_table:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ledger_table.split(".")[0])))
    cur.execute(
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                source_key     text        NOT NULL,
                etag           text        NOT NULL,
                status         text        NOT NULL CHECK (status IN ('loaded', 'rejected')),
                reason         text,
                rows_read      bigint      NOT NULL,
                rows_loaded    bigint      NOT NULL,
                rows_rejected  bigint      NOT NULL,
                rows_duplicate bigint      NOT NULL,
                rows_inserted  bigint      NOT NULL,
                processed_key  text,
                rejected_key   text,
                run_id         text        NOT NULL,
                loaded_at      timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (source_key, etag),
                CHECK (rows_read = rows_loaded + rows_rejected + rows_duplicate)
            )
            """
        ).format(table_ident(ledger_table))
    )


def loaded_versions(cur: Any, ledger_table: str, keys: Sequence[str]) -> set[tuple[str, str]]:
    """The (key, etag) pairs the ledger holds for these raw keys."""
    if not keys:
        return set()
    cur.execute(
        sql.SQL("SELECT source_key, etag FROM {} WHERE source_key = ANY(%s)").format(table_ident(ledger_table)),
        (list(keys),),
    )
    return {(k, e) for k, e in cur.fetchall()}


def record(cur: Any, ledger_table: str, entries: Iterable[LedgerEntry]) -> None:
    """Insert entries; a reprocessed version replaces its counts and keeps its insert tally."""
    rows = [
        (
            e.source_key,
            e.etag,
            e.status,
            e.reason,
            e.rows_read,
            e.rows_loaded,
            e.rows_rejected,
            e.rows_duplicate,
            e.rows_inserted,
            e.processed_key,
            e.rejected_key,
            e.run_id,
        )
        for e in entries
    ]
    if not rows:
        return
    cur.executemany(
        sql.SQL(
            """
            INSERT INTO {t} AS l (source_key, etag, status, reason, rows_read, rows_loaded, rows_rejected,
                                  rows_duplicate, rows_inserted, processed_key, rejected_key, run_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (source_key, etag) DO UPDATE SET
                status = EXCLUDED.status, reason = EXCLUDED.reason, rows_read = EXCLUDED.rows_read,
                rows_loaded = EXCLUDED.rows_loaded, rows_rejected = EXCLUDED.rows_rejected,
                rows_duplicate = EXCLUDED.rows_duplicate,
                rows_inserted = l.rows_inserted + EXCLUDED.rows_inserted,
                processed_key = EXCLUDED.processed_key, rejected_key = EXCLUDED.rejected_key,
                run_id = EXCLUDED.run_id, loaded_at = now()
            """
        ).format(t=table_ident(ledger_table)),
        rows,
    )
