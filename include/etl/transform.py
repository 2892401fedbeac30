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


@dataclass
class FileResult:
    """What happened to one raw file; small enough for XCom."""

    source_key: str
    etag: str
    processed_key: str | None = None
    rejected_key: str | None = None
    status: str = "processed"  # processed | rejected (whole file)
    reason: str | None = None
    rows_read: int = 0
    rows_clean: int = 0
    rows_rejected: int = 0
    blank_lines: int = 0
    encoding: str | None = None
    extra_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def transform_file(s3: Any, obj: storage.RawObject, contract: Contract, settings: PipelineSettings) -> FileResult:
    """Clean one raw object into its processed and rejected objects."""
    processed_key = storage.zone_key(obj.key, settings.raw_prefix, settings.processed_prefix, ".parquet")
    rejected_key = storage.zone_key(obj.key, settings.raw_prefix, settings.rejected_prefix, ".csv")
    result = FileResult(source_key=obj.key, etag=obj.etag)
    opener = open_raw(lambda: storage.open_object(s3, settings.raw_bucket, obj.key, obj.etag), obj.gzipped)

    with tempfile.TemporaryDirectory(prefix="transform-") as tmp:
        parquet_path = os.path.join(tmp, "clean.parquet")
        rejected_path = os.path.join(tmp, "rejected.csv")
        try:
            stream = read_csv(opener, contract.csv, settings.batch_bytes)
        except CsvFormatError as exc:
            result.status, result.reason = "rejected", str(exc)
            _write_rejected_placeholder(rejected_path, str(exc))
            storage.upload(
                s3, rejected_path, settings.processed_bucket, rejected_key, "text/csv", _reason_metadata(str(exc))
            )
            result.rejected_key = rejected_key
            storage.delete(s3, settings.processed_bucket, processed_key)
            return result

        mapping = contract.map_headers(stream.header)
        result.encoding = stream.encoding
        result.extra_columns = list(mapping.extra)
        file_reason = f"missing required column(s): {', '.join(mapping.missing)}" if mapping.missing else None

        rejected_writer: pacsv.CSVWriter | None = None

        def write_rejected(table: pa.Table) -> None:
            nonlocal rejected_writer
            if table.num_rows == 0:
                return
            if rejected_writer is None:
                rejected_writer = pacsv.CSVWriter(rejected_path, rejected_schema(stream.header))
            rejected_writer.write_table(table)
            result.rows_rejected += table.num_rows

        with pq.ParquetWriter(parquet_path, output_schema(contract), compression=PARQUET_COMPRESSION) as writer:
            for batch in stream.batches:
                result.rows_read += batch.num_rows
                if file_reason:
                    write_rejected(whole_file_rejected(batch, stream.header, file_reason))
                    continue
                cleaned = clean_batch(batch, stream.header, mapping, contract, obj.key)
                writer.write_table(cleaned.clean)
                result.rows_clean += cleaned.clean.num_rows
                write_rejected(cleaned.rejected)
        if stream.malformed:
            rows = stream.malformed
            result.rows_read += len(rows)
            write_rejected(
                malformed_table(stream.header, [r.line for r in rows], [r.text for r in rows], [r.reason for r in rows])
            )
        result.blank_lines = stream.blank_lines
        if rejected_writer is not None:
            rejected_writer.close()

        if file_reason:
            result.status, result.reason = "rejected", file_reason
            if rejected_writer is None:
                _write_rejected_placeholder(rejected_path, file_reason, stream.header)
            storage.delete(s3, settings.processed_bucket, processed_key)
        else:
            storage.upload(s3, parquet_path, settings.processed_bucket, processed_key, "application/vnd.apache.parquet")
            result.processed_key = processed_key

        if result.rows_rejected or file_reason:
            metadata = _reason_metadata(file_reason) if file_reason else None
            storage.upload(s3, rejected_path, settings.processed_bucket, rejected_key, "text/csv", metadata)
            result.rejected_key = rejected_key
        else:
            storage.delete(s3, settings.processed_bucket, rejected_key)
    return result


def _reason_metadata(reason: str) -> dict[str, Any]:
    # S3 user metadata must be ASCII.
    return {"Metadata": {"reject-reason": reason.encode("ascii", "replace").decode()[:1024]}}


def _write_rejected_placeholder(path: str, reason: str, header: list[str] | None = None) -> None:
    """A rejected file with no rows: the header only (the reason is in the object's metadata)."""
    pacsv.write_csv(pa.Table.from_pylist([], schema=rejected_schema(header or [])), path)
