"""Staging: processed Parquet files COPYed into an unlogged staging table, several at once.

Binary COPY encoded from Arrow by pgpq where it has a wheel (Linux x86-64, macOS), CSV COPY
elsewhere (same values, about half the speed). Each file's rows get the LastModified of the
raw version they came from (`source_modified`), which orders rows of different files. A file
whose processed object no longer matches the version being loaded (another run transformed a
newer version since) is reported, not staged.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

try:  # Arrow -> PostgreSQL binary COPY; no wheel for Linux on ARM, where CSV COPY is used.
    import pgpq
except ImportError:  # pragma: no cover - depends on the platform
    pgpq = None  # type: ignore[assignment]

from include.etl.contract.model import Contract
from include.etl.contract.schema import pg_type
from include.etl.faults import describe, is_transient
from include.etl.names import SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED
from include.etl.reading import storage
from include.etl.reading.storage import ObjectChangedError, RawObject

log = logging.getLogger(__name__)

_COPY_BATCH_ROWS = 256_000
# The staged rows' key columns are kept for the merge's dedup up to this size (about 3M keys of 20 bytes; finding
# the duplicated ones takes about as much again); a bigger load ranks every row.
_KEYS_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class StageJob:
    """One processed file to stage: its key and the raw version it was made from."""

    processed_key: str
    source: RawObject


@dataclass(frozen=True)
class Stage:
    """The staging table of one load (created by `ddl`, in the ledger's schema)."""

    name: sql.Composable
    ddl: sql.Composable
    columns: list[str]
    key: list[str] = field(default_factory=list)


def stage_columns(contract: Contract) -> list[str]:
    """Columns staged per row: the processed file's columns plus the raw version's LastModified."""
    return [*contract.output_columns, SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED]


def new_stage(cur: Any, contract: Contract) -> Stage:
    """The staging table of this load (not yet created); drops the ones failed loads of this dataset left.

    Only a load holding the dataset's advisory lock creates one, so under the lock any other
    staging table of the dataset is a leftover.
    """
    schema = contract.etl_schema
    cur.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)",
        (schema, contract.stage_prefix),
    )
    for (leftover,) in cur.fetchall():
        if not leftover[len(contract.stage_prefix) :].isdigit():
            continue  # not a staging table (those end in a transaction id): never dropped
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, leftover)))
    cur.execute("SELECT pg_current_xact_id()::text")
    name = sql.Identifier(schema, contract.stage_prefix + cur.fetchone()[0])
    types = {c.name: pg_type(c) for c in contract.all_columns}
    types[SOURCE_KEY], types[SOURCE_LINE], types[SOURCE_MODIFIED] = "text", "bigint", "timestamptz"
    columns = stage_columns(contract)
    ddl = sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
        name, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in columns)
    )
    return Stage(name, ddl, columns, list(contract.key))


def autocommit(connect: Callable[[], Any], statement: sql.Composable) -> None:
    with connect() as conn:
        conn.autocommit = True
        conn.execute(statement)


@dataclass
class StageResult:
    """Rows staged; raw keys whose processed file was made from another version (stale), and whose
    COPY the database refused ({key: error}): those files are not loaded by this load. `keys`: the key
    columns of the staged rows (one table per COPY batch), for the merge to find the duplicated keys
    without sorting every row; None when they were not kept (over _KEYS_MAX_BYTES)."""

    rows: int = 0
    stale: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    keys: list[pa.Table] | None = field(default_factory=list)
    key_bytes: int = 0

    def add_keys(self, tables: Sequence[pa.Table] | None) -> None:
        if tables is None or self.keys is None:
            self.keys = None
            return
        self.keys.extend(tables)
        self.key_bytes += sum(t.nbytes for t in tables)
        if self.key_bytes > _KEYS_MAX_BYTES:
            self.keys = None

    def add(self, other: StageResult) -> None:
        self.rows += other.rows
        self.stale += other.stale
        self.failed.update(other.failed)
        self.add_keys(other.keys)


def copy_files(
    cur: Any,
    s3: Any,
    bucket: str,
    stage: Stage,
    jobs: Sequence[StageJob],
    connect: Callable[[], Any] | None,
    workers: int,
) -> StageResult:
    """COPY every job into the stage: over `workers` connections when `connect` is given, else on cur."""
    result = StageResult()
    if connect is not None and workers > 1 and len(jobs) > 1:
        pending: queue.SimpleQueue[StageJob] = queue.SimpleQueue()
        for job in jobs:
            pending.put(job)

        def work() -> StageResult:
            mine = StageResult()
            with connect() as conn, conn.cursor() as worker_cur:
                while True:
                    try:
                        job = pending.get_nowait()
                    except queue.Empty:
                        return mine
                    _copy_one(worker_cur, s3, bucket, stage, job, mine)

        count = min(workers, len(jobs))
        with ThreadPoolExecutor(count, thread_name_prefix="copy") as pool:
            for part in [f.result() for f in [pool.submit(work) for _ in range(count)]]:
                result.add(part)
    else:
        for job in jobs:
            _copy_one(cur, s3, bucket, stage, job, result)
    return result


def _copy_one(cur: Any, s3: Any, bucket: str, stage: Stage, job: StageJob, result: StageResult) -> None:
    """COPY one file in its own transaction (a savepoint inside the load's), so a refused file is left out alone."""
    try:
        with cur.connection.transaction():
            rows, keys = _copy_parquet(cur, s3, bucket, stage, job)
        result.rows += rows
        result.add_keys(keys)
    except ObjectChangedError:
        log.warning("%s: its processed file was made from another version; not loaded now", job.source.key)
        result.stale.append(job.source.key)
    except psycopg.Error as exc:
        if is_transient(exc):
            raise
        log.error("%s: the database refused its rows: %s", job.source.key, exc)
        result.failed[job.source.key] = "the database refused a value: " + describe(exc)


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


def _copy_from_arrow(target: sql.Composable, schema: pa.Schema) -> tuple[sql.Composed, Any]:
    """The COPY statement filling `target`'s columns named as `schema`'s, and the encoder of its batches."""
    copy_format, encoder = _encoder(schema)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        target, sql.SQL(", ").join(map(sql.Identifier, schema.names)), sql.SQL(copy_format)
    )
    return copy_sql, encoder


def _copy_parquet(cur: Any, s3: Any, bucket: str, stage: Stage, job: StageJob) -> tuple[int, list[pa.Table] | None]:
    """Stream one Parquet object, plus its source's LastModified, into the stage with COPY; its rows, and its
    key columns (one table per batch; None for a stage without a key)."""
    rows = 0
    keys: list[pa.Table] | None = [] if stage.key else None
    file_columns = stage.columns[:-1]
    modified = _timestamp(job.source.last_modified)
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        path = os.path.join(tmp, "part.parquet")
        storage.download_version(s3, bucket, job.processed_key, job.source, path)
        parquet = pq.ParquetFile(path)
        schema = pa.schema([parquet.schema_arrow.field(c) for c in file_columns]).append(
            pa.field(SOURCE_MODIFIED, pa.timestamp("us", tz="UTC"))
        )
        copy_sql, encoder = _copy_from_arrow(stage.name, schema)
        with cur.copy(copy_sql) as copy:
            copy.write(encoder.write_header())
            for batch in parquet.iter_batches(batch_size=_COPY_BATCH_ROWS, columns=file_columns):
                batch = batch.append_column(SOURCE_MODIFIED, pa.repeat(modified, batch.num_rows))
                copy.write(encoder.write_batch(batch))
                rows += batch.num_rows
                if keys is not None:
                    keys.append(pa.Table.from_batches([batch.select(stage.key)]))
            copy.write(encoder.finish())
    return rows, keys


def copy_arrow(cur: Any, target: sql.Composable, table: pa.Table) -> None:
    """COPY an Arrow table into `target` (its columns by name), in the staging's format (binary, else CSV)."""
    copy_sql, encoder = _copy_from_arrow(target, table.schema)
    with cur.copy(copy_sql) as copy:
        copy.write(encoder.write_header())
        for batch in table.to_batches(max_chunksize=_COPY_BATCH_ROWS):
            copy.write(encoder.write_batch(batch))
        copy.write(encoder.finish())


def _timestamp(moment: datetime) -> pa.Scalar:
    return pa.scalar(moment, pa.timestamp("us", tz="UTC"))


def drop(cur: Any, stage: Stage) -> None:
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage.name))
