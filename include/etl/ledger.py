"""The file ledger: which raw object versions (key + ETag) were loaded, with their counts.

A file is in the ledger only if its rows were merged in the same transaction, so
"not in the ledger" means "still to load": retries and reruns skip what is there and
pick up whatever failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
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
    load_seq: int


def table_ident(qualified: str) -> sql.Identifier:
    """`schema.table` as a safely quoted identifier."""
    return sql.Identifier(*qualified.split(".", 1))


def schema_of(qualified: str) -> str:
    """The schema of `schema.table` (`public` when unqualified)."""
    return qualified.split(".", 1)[0] if "." in qualified else "public"


def _sequence(ledger_table: str) -> sql.Identifier:
    return sql.Identifier(schema_of(ledger_table), "load_seq")


def ensure_ledger(cur: Any, ledger_table: str) -> None:
    """Create the ledger table, its schema and the load sequence if missing."""
    if "." in ledger_table:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ledger_table.split(".")[0])))
    cur.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {}").format(_sequence(ledger_table)))
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
                load_seq       bigint      NOT NULL,
                loaded_at      timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (source_key, etag),
                CHECK (rows_read = rows_loaded + rows_rejected + rows_duplicate)
            )
            """
        ).format(table_ident(ledger_table))
    )


def next_load_seq(cur: Any, ledger_table: str) -> int:
    cur.execute(sql.SQL("SELECT nextval('{}')").format(sql.SQL(_sequence(ledger_table).as_string(cur))))
    return int(cur.fetchone()[0])


def loaded_versions(cur: Any, ledger_table: str, keys: Sequence[str]) -> dict[tuple[str, str], int]:
    """{(key, etag): load_seq} for the versions of these raw keys the ledger holds."""
    if not keys:
        return {}
    cur.execute(
        sql.SQL("SELECT source_key, etag, load_seq FROM {} WHERE source_key = ANY(%s)").format(
            table_ident(ledger_table)
        ),
        (list(keys),),
    )
    return {(k, e): seq for k, e, seq in cur.fetchall()}


def record(cur: Any, ledger_table: str, entries: Iterable[LedgerEntry]) -> None:
    """Insert entries; a reprocessed version keeps its load_seq and adds to its insert tally."""
    rows = [astuple(e) for e in entries]
    if not rows:
        return
    names = [f.name for f in fields(LedgerEntry)]
    replaced = [n for n in names if n not in ("source_key", "etag", "rows_inserted", "load_seq")]
    cur.executemany(
        sql.SQL(
            """
            INSERT INTO {t} AS l ({cols}) VALUES ({values})
            ON CONFLICT (source_key, etag) DO UPDATE SET {updates},
                rows_inserted = l.rows_inserted + EXCLUDED.rows_inserted, loaded_at = now()
            """
        ).format(
            t=table_ident(ledger_table),
            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            values=sql.SQL(", ").join(sql.Placeholder() * len(names)),
            updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in replaced),
        ),
        rows,
    )
