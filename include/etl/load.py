"""Load processed Parquet files into the warehouse: one transaction, COPY, then merge.

All files of a run are COPYed into a temporary staging table, deduplicated (latest
`latest_by` wins; ties: later file, later line), upserted on the contract's key and
recorded in the ledger in the same transaction. A failure loads nothing; a retry or
rerun skips file versions the ledger already holds. A transaction-scoped advisory
lock serializes concurrent loads of the same table, so two runs never load one file
twice.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from include.etl import ledger
from include.etl.cleaning import SOURCE_KEY, SOURCE_LINE
from include.etl.config import PipelineSettings
from include.etl.contract import Contract
from include.etl.ledger import LedgerEntry, table_ident
from include.etl.transform import FileResult

LOADED_AT = "loaded_at"
LOAD_SEQ = "load_seq"
_COPY_BATCH_ROWS = 256_000


@dataclass
class LoadReport:
    """What the load did, per file and in total; small enough for XCom."""

    files: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows_staged: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "skipped": self.skipped,
            "rows_staged": self.rows_staged,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "rows_removed": self.rows_removed,
        }


def _pg_type(column: Any) -> str:
    return {
        "text": "text",
        "timestamp": "timestamptz",
        "integer": "integer",
        "decimal": f"numeric({column.precision},{column.scale})",
        "date": "date",
    }[column.type]


def ensure_tables(cur: Any, contract: Contract, settings: PipelineSettings) -> None:
    """Create the target schema, table and the ledger if they do not exist."""
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(contract.schema_name)))
    cols = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name),
            sql.SQL(_pg_type(c)),
            sql.SQL(" NOT NULL") if c.rejects_blank or c.name == contract.key else sql.SQL(""),
        )
        for c in contract.columns
    ]
    cols += [sql.SQL("{} {}").format(sql.Identifier(d.name), sql.SQL(_pg_type(d))) for d in contract.derived]
    cols += [
        sql.SQL("{} text NOT NULL").format(sql.Identifier(SOURCE_KEY)),
        sql.SQL("{} bigint NOT NULL").format(sql.Identifier(SOURCE_LINE)),
        sql.SQL("{} bigint NOT NULL").format(sql.Identifier(LOAD_SEQ)),
        sql.SQL("{} timestamptz NOT NULL DEFAULT now()").format(sql.Identifier(LOADED_AT)),
        sql.SQL("PRIMARY KEY ({})").format(sql.Identifier(contract.key)),
    ]
    cur.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table_ident(contract.table), sql.SQL(", ").join(cols))
    )
    ledger.ensure_ledger(cur, settings.ledger_table)


def load_files(
    conn: Any,
    s3: Any,
    contract: Contract,
    settings: PipelineSettings,
    results: Sequence[FileResult],
    run_id: str,
    reprocess: bool = False,
) -> LoadReport:
    """Merge the processed files of `results` into the table and the ledger, atomically.

    Every load gets a new, higher `load_seq`; a row is replaced only by one with a higher
    (load_seq, latest_by, source_key, source_line), so the most recent load wins. With
    `reprocess`, files already in the ledger are merged again under their original
    load_seq (the table ends as if history had run with the new rules), and rows those
    files no longer produce are removed.
    """
    report = LoadReport()
    with conn.transaction(), conn.cursor() as cur:
        ensure_tables(cur, contract, settings)
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (contract.table,))
        done = ledger.loaded_versions(cur, settings.ledger_table, [r.source_key for r in results])
        todo = [r for r in results if reprocess or (r.source_key, r.etag) not in done]
        report.skipped = sorted(r.source_key for r in results if r not in todo)
        if not todo:
            return report
        run_seq = ledger.next_load_seq(cur, settings.ledger_table)
        seq_of = {r.source_key: done.get((r.source_key, r.etag), run_seq) for r in todo}
        loadable = [r for r in todo if r.status == "processed" and r.processed_key]

        columns = [*contract.output_columns, SOURCE_KEY, SOURCE_LINE]
        _create_staging(cur, contract, columns)
        for r in loadable:
            cur.execute(
                sql.SQL("ALTER TABLE etl_stage ALTER COLUMN load_seq SET DEFAULT {}").format(seq_of[r.source_key])
            )
            report.rows_staged += _copy_parquet(cur, s3, settings.processed_bucket, r.processed_key, columns)
        _pick_latest(cur, contract, [*columns, LOAD_SEQ])
        removed = _remove_vanished(cur, contract, [r.source_key for r in todo if r.source_key in {k for k, _ in done}])
        per_file = _merge(cur, contract, [*columns, LOAD_SEQ]) if loadable else {}

        entries = []
        for r in todo:
            kept, inserted, updated = per_file.get(r.source_key, (0, 0, 0))
            entry = LedgerEntry(
                source_key=r.source_key,
                etag=r.etag,
                status="loaded" if r in loadable else "rejected",
                reason=r.reason,
                rows_read=r.rows_read,
                rows_loaded=kept,
                rows_rejected=r.rows_rejected,
                rows_duplicate=r.rows_clean - kept,
                rows_inserted=inserted - removed.get(r.source_key, 0),
                processed_key=r.processed_key,
                rejected_key=r.rejected_key,
                run_id=run_id,
                load_seq=seq_of[r.source_key],
            )
            entries.append(entry)
            report.files.append({**r.to_dict(), **entry.__dict__})
            report.rows_inserted += inserted
            report.rows_updated += updated
        report.rows_removed = sum(removed.values())
        ledger.record(cur, settings.ledger_table, entries)
    return report


def _create_staging(cur: Any, contract: Contract, columns: list[str]) -> None:
    types = {c.name: _pg_type(c) for c in (*contract.columns, *contract.derived)}
    types[SOURCE_KEY], types[SOURCE_LINE], types[LOAD_SEQ] = "text", "bigint", "bigint"
    # ON COMMIT DROP only fires at the outermost commit; inside a caller's transaction, clean up here.
    cur.execute("DROP TABLE IF EXISTS pg_temp.etl_stage, pg_temp.etl_latest")
    cur.execute(
        sql.SQL("CREATE TEMP TABLE etl_stage ({}) ON COMMIT DROP").format(
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in [*columns, LOAD_SEQ]
            )
        )
    )


def _precedence(contract: Contract) -> tuple[str, ...]:
    """The precedence of a row version: load, then latest_by, then file, then line."""
    return (LOAD_SEQ, contract.latest_by, SOURCE_KEY, SOURCE_LINE)


def _order(contract: Contract, prefix: str = "") -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL(prefix + "{}").format(sql.Identifier(n)) for n in _precedence(contract))


def _pick_latest(cur: Any, contract: Contract, columns: list[str]) -> None:
    """etl_latest: one row per key from staging, the one with the highest precedence."""
    key = sql.Identifier(contract.key)
    desc = sql.SQL(", ").join(sql.SQL("{} DESC NULLS LAST").format(sql.Identifier(n)) for n in _precedence(contract))
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE etl_latest ON COMMIT DROP AS "
            "SELECT DISTINCT ON ({key}) {cols} FROM etl_stage ORDER BY {key}, {desc}"
        ).format(key=key, cols=sql.SQL(", ").join(map(sql.Identifier, columns)), desc=desc)
    )


def _remove_vanished(cur: Any, contract: Contract, reprocessed: list[str]) -> dict[str, int]:
    """Delete rows of reprocessed files that they no longer win with; {source_key: rows removed}."""
    if not reprocessed:
        return {}
    cur.execute(
        sql.SQL(
            """
            WITH gone AS (
                DELETE FROM {table} t WHERE t.{sk} = ANY(%s) AND NOT EXISTS (
                    SELECT 1 FROM etl_latest l WHERE l.{key} = t.{key} AND l.{sk} = t.{sk}
                )
                RETURNING t.{sk}
            )
            SELECT {sk}, count(*) FROM gone GROUP BY 1
            """
        ).format(table=table_ident(contract.table), sk=sql.Identifier(SOURCE_KEY), key=sql.Identifier(contract.key)),
        (reprocessed,),
    )
    return dict(cur.fetchall())


def _copy_parquet(cur: Any, s3: Any, bucket: str, key: str, columns: list[str]) -> int:
    """Stream one Parquet object into the staging table with COPY; returns its row count."""
    copy_sql = sql.SQL("COPY etl_stage ({}) FROM STDIN (FORMAT csv)").format(
        sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    rows = 0
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        path = os.path.join(tmp, "part.parquet")
        s3.download_file(bucket, key, path)
        parquet = pq.ParquetFile(path)
        with cur.copy(copy_sql) as copy:
            for batch in parquet.iter_batches(batch_size=_COPY_BATCH_ROWS, columns=columns):
                buf = io.BytesIO()
                pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                copy.write(buf.getbuffer())
                rows += batch.num_rows
    return rows


def _merge(cur: Any, contract: Contract, columns: list[str]) -> dict[str, tuple[int, int, int]]:
    """Upsert etl_latest into the table; returns {source_key: (rows kept, inserted, updated)}."""
    cur.execute(sql.SQL("SELECT {sk}, count(*) FROM etl_latest GROUP BY 1").format(sk=sql.Identifier(SOURCE_KEY)))
    kept = dict(cur.fetchall())
    non_key = [c for c in columns if c != contract.key]
    cur.execute(
        sql.SQL(
            """
            WITH merged AS (
                INSERT INTO {table} AS t ({cols}, {loaded_at})
                SELECT {cols}, now() FROM etl_latest
                ON CONFLICT ({key}) DO UPDATE SET {updates}, {loaded_at} = EXCLUDED.{loaded_at}
                WHERE ({new_order}) >= ({old_order}) AND ({old}) IS DISTINCT FROM ({new})
                RETURNING t.{sk}, (xmax = 0) AS inserted
            )
            SELECT {sk}, count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
            FROM merged GROUP BY 1
            """
        ).format(
            table=table_ident(contract.table),
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            loaded_at=sql.Identifier(LOADED_AT),
            key=sql.Identifier(contract.key),
            updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in non_key),
            new_order=_order(contract, "EXCLUDED."),
            old_order=_order(contract, "t."),
            old=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in non_key),
            new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in non_key),
            sk=sql.Identifier(SOURCE_KEY),
        )
    )
    changed = {sk: (ins, upd) for sk, ins, upd in cur.fetchall()}
    return {sk: (n, *changed.get(sk, (0, 0))) for sk, n in kept.items()}
