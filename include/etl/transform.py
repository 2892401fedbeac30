"""Transform one raw CSV object: apply the contract, write Parquet and rejected rows.

Reads the object as a stream (memory bounded by the batch size), writes clean rows
to `processed/.../<file>.parquet` (zstd) and rejected rows, with their line number
and reason, to `rejected/.../<file>.csv`. Output objects are written whole (S3 PUTs
are atomic), so a killed task never leaves a partial object behind, and the same
input always gives the same bytes.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from include.etl import storage
from include.etl.cleaning import (
    clean_batch,
    malformed_table,
    output_schema,
    rejected_schema,
    whole_file_rejected,
)
from include.etl.config import PipelineSettings
from include.etl.contract import Contract
from include.etl.csv_reader import CsvFormatError, open_raw, read_csv

PARQUET_COMPRESSION = "zstd"
SOURCE_LINE_SORT = [("source_line", "ascending")]
_PARQUET = "clean.parquet"
_REJECTED = "rejected.csv"


@dataclass
class FileResult:
    """What happened to one raw file; small enough for XCom."""

    source_key: str
    etag: str
    processed_key: str | None = None
    rejected_key: str | None = None
    validation_key: str | None = None
    status: str = "processed"  # processed | rejected (whole file)
    reason: str | None = None
    rows_read: int = 0
    rows_clean: int = 0
    rows_rejected: int = 0
    blank_lines: int = 0
    encoding: str | None = None
    extra_columns: list[str] = field(default_factory=list)
    # Values read differently from their raw bytes, counted by kind ("rows decoded as cp1252": 3).
    reinterpreted: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def transform_file(s3: Any, obj: storage.RawObject, contract: Contract, settings: PipelineSettings) -> FileResult:
    """Clean one raw object into its processed and rejected objects."""
    keys = _ZoneKeys(
        processed=storage.zone_key(obj.key, settings.raw_prefix, settings.processed_prefix, ".parquet"),
        rejected=storage.zone_key(obj.key, settings.raw_prefix, settings.rejected_prefix, ".csv"),
    )
    opener = open_raw(lambda: storage.open_object(s3, settings.raw_bucket, obj.key, obj.etag), obj.gzipped)
    with tempfile.TemporaryDirectory(prefix="transform-") as tmp:
        try:
            result = _clean_to_files(opener, obj, contract, settings, tmp)
        except CsvFormatError as exc:
            return _reject_unreadable(s3, obj, settings, keys, str(exc))
        _publish(s3, result, settings, keys, tmp)
    return result


@dataclass(frozen=True)
class _ZoneKeys:
    processed: str
    rejected: str


def _clean_to_files(
    opener: Any, obj: storage.RawObject, contract: Contract, settings: PipelineSettings, tmp: str
) -> FileResult:
    """Stream the CSV through the contract into tmp/clean.parquet and tmp/rejected.csv."""
    result = FileResult(source_key=obj.key, etag=obj.etag)
    stream = read_csv(opener, contract.csv, settings.batch_bytes)
    mapping = contract.map_headers(stream.header)
    result.extra_columns = list(mapping.extra)
    if mapping.missing:
        result.status, result.reason = "rejected", f"missing required column(s): {', '.join(mapping.missing)}"

    rejected_writer: pacsv.CSVWriter | None = None

    def write_rejected(table: pa.Table) -> None:
        nonlocal rejected_writer
        if rejected_writer is None:
            rejected_writer = pacsv.CSVWriter(os.path.join(tmp, _REJECTED), rejected_schema(stream.header))
        rejected_writer.write_table(table)
        result.rows_rejected += table.num_rows

    schema = output_schema(contract)
    with pq.ParquetWriter(os.path.join(tmp, _PARQUET), schema, compression=PARQUET_COMPRESSION) as writer:
        for batch in stream.batches:
            result.rows_read += batch.num_rows + len(batch.malformed)
            rows = batch.malformed
            rejected = [
                malformed_table(stream.header, [r.line for r in rows], [r.text for r in rows], [r.reason for r in rows])
            ]
            if result.reason:
                rejected.append(whole_file_rejected(batch, stream.header, result.reason))
            else:
                cleaned = clean_batch(batch, stream.header, mapping, contract, obj.key)
                writer.write_table(cleaned.clean)
                result.rows_clean += cleaned.clean.num_rows
                rejected.append(cleaned.rejected)
            merged = pa.concat_tables(rejected)
            if merged.num_rows:
                write_rejected(merged.sort_by(SOURCE_LINE_SORT))
    if result.reason and rejected_writer is None:
        write_rejected(pa.Table.from_pylist([], schema=rejected_schema(stream.header)))  # header only: no rows
    if rejected_writer is not None:
        rejected_writer.close()
    result.blank_lines = stream.stats.blank_lines
    result.encoding = stream.encoding
    if stream.stats.fallback_rows:
        result.reinterpreted[f"rows decoded as {contract.csv.fallback_encoding}"] = stream.stats.fallback_rows
    return result


def _publish(s3: Any, result: FileResult, settings: PipelineSettings, keys: _ZoneKeys, tmp: str) -> None:
    """Upload the outputs and remove outputs a previous version of the file left behind."""
    bucket = settings.processed_bucket
    if result.status == "processed":
        storage.upload(
            s3, os.path.join(tmp, _PARQUET), bucket, keys.processed, "application/vnd.apache.parquet", settings.put_args
        )
        result.processed_key = keys.processed
    else:
        storage.delete(s3, bucket, keys.processed)
    if result.rows_rejected or result.reason:
        metadata = _reason_metadata(result.reason) if result.reason else {}
        storage.upload(
            s3, os.path.join(tmp, _REJECTED), bucket, keys.rejected, "text/csv", {**metadata, **settings.put_args}
        )
        result.rejected_key = keys.rejected
    else:
        storage.delete(s3, bucket, keys.rejected)


def _reject_unreadable(
    s3: Any, obj: storage.RawObject, settings: PipelineSettings, keys: _ZoneKeys, reason: str
) -> FileResult:
    """A file that cannot be read as CSV is copied to rejected/ as is, with the reason in its metadata."""
    storage.copy(
        s3,
        settings.raw_bucket,
        obj.key,
        settings.processed_bucket,
        keys.rejected,
        {**_reason_metadata(reason), **settings.put_args},
    )
    storage.delete(s3, settings.processed_bucket, keys.processed)
    return FileResult(source_key=obj.key, etag=obj.etag, rejected_key=keys.rejected, status="rejected", reason=reason)


def _reason_metadata(reason: str) -> dict[str, Any]:
    # S3 user metadata must be ASCII.
    return {"Metadata": {"reject-reason": reason.encode("ascii", "replace").decode()[:1024]}}
