"""Load processed Parquet files into the warehouse: one transaction, COPY, then merge.

All files of a run are COPYed into an unlogged staging table, several files at once
over `copy_workers` connections (binary COPY encoded from Arrow by pgpq where it has
a wheel, CSV otherwise), deduplicated (latest `latest_by` wins; ties: later file,
later line), merged on the contract's key (new keys by a plain INSERT, existing ones
by a guarded UPDATE) and recorded in the ledger in the same transaction. A failure
loads nothing; a retry or rerun skips file versions the ledger already holds. A
transaction-scoped advisory lock serializes concurrent loads of the same table, so
two runs never load one file twice.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

try:  # Arrow -> PostgreSQL binary COPY; no wheel for Linux on ARM, where CSV COPY is used.
    import pgpq
except ImportError:  # pragma: no cover - depends on the platform
    pgpq = None

from include.etl import ledger
from include.etl.cleaning import SOURCE_KEY, SOURCE_LINE
from include.etl.config import PipelineSettings
from include.etl.contract import Contract
from include.etl.ledger import LedgerEntry, schema_of, table_ident
from include.etl.transform import FileResult

log = logging.getLogger(__name__)

LOADED_AT = "loaded_at"
LOAD_SEQ = "load_seq"
IS_NEW = "etl_is_new"  # etl_latest only: the table has no row with this key yet
_STAGE_PREFIX = "load_stage_"  # + the loading transaction's id, in the ledger's schema
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
    seconds: dict[str, float] = field(default_factory=dict)  # per phase: stage, dedup, merge

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "skipped": self.skipped,
            "rows_staged": self.rows_staged,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "rows_removed": self.rows_removed,
            "seconds": self.seconds,
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
    connect: Callable[[], Any] | None = None,
) -> LoadReport:
    """Merge the processed files of `results` into the table and the ledger, atomically.

    Every load gets a new, higher `load_seq`; a row is replaced only by one with a higher
    (load_seq, latest_by, source_key, source_line), so the most recent load wins. With
    `reprocess`, files already in the ledger are merged again under their original
    load_seq (the table ends as if history had run with the new rules), and rows those
    files no longer produce are removed.

    `connect` opens another connection to the same database: with it, up to
    `settings.copy_workers` connections COPY files into staging at once.
    """
    report = LoadReport()
    shared_stages: list[sql.Composable] = []  # committed by other connections: dropped here on failure
    if connect is not None:  # they create the staging table in this schema: it must exist for them
        _autocommit(
            connect, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema_of(settings.ledger_table)))
        )
    try:
        with conn.transaction(), conn.cursor() as cur:
            _load(cur, s3, contract, settings, results, run_id, reprocess, connect, report, shared_stages)
    except BaseException:
        for stage in shared_stages:
            try:
                _autocommit(connect, sql.SQL("DROP TABLE IF EXISTS {}").format(stage))  # type: ignore[arg-type]
            except Exception:  # the next load drops it (see _stage_table)
                log.warning("could not drop staging table %s", stage, exc_info=True)
        raise
    return report


def _load(
    cur: Any,
    s3: Any,
    contract: Contract,
    settings: PipelineSettings,
    results: Sequence[FileResult],
    run_id: str,
    reprocess: bool,
    connect: Callable[[], Any] | None,
    report: LoadReport,
    shared_stages: list[sql.Composable],
) -> None:
    """load_files inside its transaction; a staging table other connections create goes in shared_stages."""
    ensure_tables(cur, contract, settings)
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (contract.table,))
    done = ledger.loaded_versions(cur, settings.ledger_table, [r.source_key for r in results])
    todo = [r for r in results if reprocess or (r.source_key, r.etag) not in done]
    report.skipped = sorted(r.source_key for r in results if r not in todo)
    if not todo:
        return
    run_seq = ledger.next_load_seq(cur, settings.ledger_table)
    seq_of = {r.source_key: done.get((r.source_key, r.etag), run_seq) for r in todo}
    loadable = [r for r in todo if r.status == "processed" and r.processed_key]

    columns = [*contract.output_columns, SOURCE_KEY, SOURCE_LINE]
    clock = time.perf_counter()
    stage = _stage_table(cur, contract, settings, columns)
    jobs = [(r.processed_key, seq_of[r.source_key]) for r in loadable]
    shared = connect is not None and settings.copy_workers > 1 and len(jobs) > 1
    if shared:
        shared_stages.append(stage.name)
        _autocommit(connect, stage.ddl)
        report.rows_staged = _copy_parallel(connect, s3, settings, stage.name, columns, jobs)
    else:
        cur.execute(stage.ddl)
        for key, seq in jobs:
            report.rows_staged += _copy_parquet(cur, s3, settings.processed_bucket, key, seq, stage.name, columns)
    report.seconds["stage"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    _pick_latest(cur, contract, stage.name, [*columns, LOAD_SEQ])
    report.seconds["dedup"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    loaded_before = {k for k, _ in done}
    removed = _remove_vanished(cur, contract, [r.source_key for r in todo if r.source_key in loaded_before])
    per_file = _merge(cur, contract, [*columns, LOAD_SEQ]) if loadable else {}
    report.seconds["merge"] = round(time.perf_counter() - clock, 3)

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
    cur.execute(sql.SQL("DROP TABLE {}").format(stage.name))


@dataclass(frozen=True)
class _Stage:
    name: sql.Composable
    ddl: sql.Composable


def _stage_table(cur: Any, contract: Contract, settings: PipelineSettings, columns: list[str]) -> _Stage:
    """The staging table of this load (not yet created); drops those that failed loads left.

    Only a load holding the advisory lock creates one, so under the lock any other is a leftover.
    """
    schema = schema_of(settings.ledger_table)
    cur.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)", (schema, _STAGE_PREFIX)
    )
    for (leftover,) in cur.fetchall():
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, leftover)))
    # ON COMMIT DROP only fires at the outermost commit; inside a caller's transaction, clean up here.
    cur.execute("DROP TABLE IF EXISTS pg_temp.etl_latest")
    cur.execute("SELECT pg_current_xact_id()::text")
    name = sql.Identifier(schema, _STAGE_PREFIX + cur.fetchone()[0])
    types = {c.name: _pg_type(c) for c in (*contract.columns, *contract.derived)}
    types[SOURCE_KEY], types[SOURCE_LINE], types[LOAD_SEQ] = "text", "bigint", "bigint"
    ddl = sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
        name,
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in [*columns, LOAD_SEQ]),
    )
    return _Stage(name, ddl)


def _autocommit(connect: Callable[[], Any], statement: sql.Composable) -> None:
    with connect() as conn:
        conn.autocommit = True
        conn.execute(statement)


def _copy_parallel(
    connect: Callable[[], Any],
    s3: Any,
    settings: PipelineSettings,
    stage: sql.Composable,
    columns: list[str],
    jobs: list[tuple[str, int]],
) -> int:
    """COPY the (processed key, load_seq) jobs into the committed stage over copy_workers connections."""
    pending: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
    for job in jobs:
        pending.put(job)

    def work() -> int:
        rows = 0
        with connect() as conn, conn.cursor() as cur:
            while True:
                try:
                    key, seq = pending.get_nowait()
                except queue.Empty:
                    return rows
                rows += _copy_parquet(cur, s3, settings.processed_bucket, key, seq, stage, columns)

    workers = min(settings.copy_workers, len(jobs))
    with ThreadPoolExecutor(workers, thread_name_prefix="copy") as pool:
        futures = [pool.submit(work) for _ in range(workers)]
        return sum(f.result() for f in futures)


def _precedence(contract: Contract) -> tuple[str, ...]:
    """The precedence of a row version: load, then latest_by, then file, then line."""
    return (LOAD_SEQ, contract.latest_by, SOURCE_KEY, SOURCE_LINE)


def _order(contract: Contract, prefix: str = "") -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL(prefix + "{}").format(sql.Identifier(n)) for n in _precedence(contract))


def _pick_latest(cur: Any, contract: Contract, stage: sql.Composable, columns: list[str]) -> None:
    """etl_latest: one row per key from staging (the highest precedence), flagged new or not."""
    key = sql.Identifier(contract.key)
    desc = sql.SQL(", ").join(sql.SQL("{} DESC NULLS LAST").format(sql.Identifier(n)) for n in _precedence(contract))
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE etl_latest ON COMMIT DROP AS "
            "SELECT l.*, t.{key} IS NULL AS {is_new} "
            "FROM (SELECT DISTINCT ON ({key}) {cols} FROM {stage} ORDER BY {key}, {desc}) l "
            "LEFT JOIN {table} t ON t.{key} = l.{key}"
        ).format(
            key=key,
            is_new=sql.Identifier(IS_NEW),
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            desc=desc,
            stage=stage,
            table=table_ident(contract.table),
        )
    )


def _remove_vanished(cur: Any, contract: Contract, reprocessed: list[str]) -> dict[str, int]:
    """Delete rows of reprocessed files that they no longer win with; {source_key: rows removed}.

    A removed row whose key is still in etl_latest (won by another row) becomes new again.
    """
    if not reprocessed:
        return {}
    cur.execute(
        sql.SQL(
            """
            WITH gone AS (
                DELETE FROM {table} t WHERE t.{sk} = ANY(%s) AND NOT EXISTS (
                    SELECT 1 FROM etl_latest l WHERE l.{key} = t.{key} AND l.{sk} = t.{sk}
                )
                RETURNING t.{key}, t.{sk}
            ), renewed AS (
                UPDATE etl_latest l SET {is_new} = true FROM gone g WHERE l.{key} = g.{key}
            )
            SELECT {sk}, count(*) FROM gone GROUP BY 1
            """
        ).format(
            table=table_ident(contract.table),
            sk=sql.Identifier(SOURCE_KEY),
            key=sql.Identifier(contract.key),
            is_new=sql.Identifier(IS_NEW),
        ),
        (reprocessed,),
    )
    return dict(cur.fetchall())


class _CsvEncoder:
    """CSV COPY data, with pgpq's encoder interface: the fallback where pgpq has no wheel."""

    def write_header(self) -> bytes:
        return b""

    def write_batch(self, batch: pa.RecordBatch) -> bytes:
        buf = io.BytesIO()
        pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
        return buf.getvalue()

    def finish(self) -> bytes:
        return b""


def _encoder(schema: pa.Schema) -> tuple[str, Any]:
    """The COPY format and an encoder of Arrow batches into it: binary (pgpq), else CSV."""
    if pgpq is None:
        return "csv", _CsvEncoder()
    return "binary", pgpq.ArrowToPostgresBinaryEncoder(schema)


def _copy_parquet(
    cur: Any, s3: Any, bucket: str, key: str, load_seq: int, stage: sql.Composable, columns: list[str]
) -> int:
    """Stream one Parquet object, plus its load_seq, into the staging table with COPY; returns its rows."""
    rows = 0
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        path = os.path.join(tmp, "part.parquet")
        s3.download_file(bucket, key, path)
        parquet = pq.ParquetFile(path)
        schema = pa.schema([parquet.schema_arrow.field(c) for c in columns]).append(pa.field(LOAD_SEQ, pa.int64()))
        copy_format, encoder = _encoder(schema)
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
            stage, sql.SQL(", ").join(map(sql.Identifier, schema.names)), sql.SQL(copy_format)
        )
        with cur.copy(copy_sql) as copy:
            copy.write(encoder.write_header())
            for batch in parquet.iter_batches(batch_size=_COPY_BATCH_ROWS, columns=columns):
                batch = batch.append_column(LOAD_SEQ, pa.array(np.full(batch.num_rows, load_seq, dtype=np.int64)))
                copy.write(encoder.write_batch(batch))
                rows += batch.num_rows
            copy.write(encoder.finish())
    return rows


def _merge(cur: Any, contract: Contract, columns: list[str]) -> dict[str, tuple[int, int, int]]:
    """Merge etl_latest into the table; returns {source_key: (rows kept, inserted, updated)}.

    New keys go in with a plain INSERT (no per-row conflict check: the advisory lock keeps
    other loads out); existing rows are updated only by a row of higher precedence that
    differs from them, so a rerun that changes nothing writes nothing.
    """
    sk, is_new = sql.Identifier(SOURCE_KEY), sql.Identifier(IS_NEW)
    cur.execute(
        sql.SQL("SELECT {sk}, count(*), count(*) FILTER (WHERE {is_new}) FROM etl_latest GROUP BY 1").format(
            sk=sk, is_new=is_new
        )
    )
    counts = {row[0]: row[1:] for row in cur.fetchall()}
    table, cols = table_ident(contract.table), sql.SQL(", ").join(map(sql.Identifier, columns))
    loaded_at = sql.Identifier(LOADED_AT)
    cur.execute(
        sql.SQL("INSERT INTO {table} ({cols}, {loaded_at}) SELECT {cols}, now() FROM etl_latest WHERE {is_new}").format(
            table=table, cols=cols, loaded_at=loaded_at, is_new=is_new
        )
    )
    non_key = [c for c in columns if c != contract.key]
    cur.execute(
        sql.SQL(
            """
            WITH updated AS (
                UPDATE {table} AS t SET {updates}, {loaded_at} = now()
                FROM etl_latest l
                WHERE NOT l.{is_new} AND t.{key} = l.{key}
                  AND ({new_order}) >= ({old_order}) AND ({old}) IS DISTINCT FROM ({new})
                RETURNING t.{sk}
            )
            SELECT {sk}, count(*) FROM updated GROUP BY 1
            """
        ).format(
            table=table,
            updates=sql.SQL(", ").join(sql.SQL("{0} = l.{0}").format(sql.Identifier(c)) for c in non_key),
            loaded_at=loaded_at,
            is_new=is_new,
            key=sql.Identifier(contract.key),
            new_order=_order(contract, "l."),
            old_order=_order(contract, "t."),
            old=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in non_key),
            new=sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(c)) for c in non_key),
            sk=sk,
        )
    )
    updated = dict(cur.fetchall())
    return {key: (kept, inserted, updated.get(key, 0)) for key, (kept, inserted) in counts.items()}
