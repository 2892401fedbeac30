"""Transform one raw object version: apply the contract, write Parquet and rejected rows.

Reads exactly the listed version as a stream (memory bounded by the batch size), writes clean
rows to `processed/.../<file name>.parquet` (zstd) and rejected rows, with their line number
and reason, to `rejected/.../<file name>.rejected.csv`; every output keeps the whole raw file
name, so `a.csv`, `a.CSV` and `a.csv.gz` never share one, and carries the raw version it was
made from in its metadata. A file that breaks the contract as a whole is rejected (unreadable
ones are copied to `rejected/` byte for byte, named and typed as what they are); a file that
falls short of a `quarantine_file` expectation has its Parquet set aside in `rejected/`.
Outputs are written whole (S3 PUTs are atomic), and the same input always gives the same bytes.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from include.etl.contract.cleaning import clean_batch, malformed_table, whole_file_rejected
from include.etl.contract.expectations import describe_expectation, file_expectations
from include.etl.contract.file_headers import HeaderWatch, reads_as_data, reordered
from include.etl.contract.model import INVISIBLE, Contract, HeaderMapping, RowCountBetween
from include.etl.contract.results import FileResult
from include.etl.contract.schema import output_schema, rejected_schema
from include.etl.contract.values.common import FileState, visible
from include.etl.names import SOURCE_LINE
from include.etl.reading import storage
from include.etl.reading.csv_reader import CsvFormatError, ReadLimits, open_raw, read_csv
from include.etl.reading.storage import ObjectChangedError, RawObject
from include.etl.settings import DatasetSettings

PARQUET_COMPRESSION = "zstd"
PARQUET_TYPE = "application/vnd.apache.parquet"
_PARQUET = "clean.parquet"
_REJECTED = "rejected.csv"


class ZoneKeys:
    """Where the outputs of one raw key go: unique per raw key (the raw file name is kept whole)."""

    def __init__(self, raw_key: str, settings: DatasetSettings) -> None:
        raw, processed, rejected = settings.raw_prefix, settings.processed_prefix, settings.rejected_prefix
        self.processed = storage.zone_key(raw_key, raw, processed, ".parquet")
        self.report = storage.zone_key(raw_key, raw, processed, ".validation.json")
        self.rejected_rows = storage.zone_key(raw_key, raw, rejected, ".rejected.csv")
        self.rejected_copy = storage.zone_key(raw_key, raw, rejected)  # an unreadable file, as is
        self.quarantined = storage.zone_key(raw_key, raw, rejected, ".parquet")


def transform_file(s3: Any, obj: RawObject, contract: Contract, settings: DatasetSettings) -> FileResult:
    """Clean one raw object version into its processed and rejected objects.

    Raises only for faults (S3 unreachable, ...); what the data does wrong is in the result.
    """
    keys = ZoneKeys(obj.key, settings)
    version: dict[str, str | None] = {}

    def open_body() -> Any:
        body, version_id = storage.open_version(s3, settings.raw_bucket, obj)
        version.setdefault("id", version_id)
        return body

    limits = ReadLimits(settings.max_field_bytes, settings.max_decompressed_bytes, settings.max_compression_ratio)
    opener = open_raw(open_body, obj.gzipped, limits)
    with tempfile.TemporaryDirectory(prefix="transform-") as tmp:
        try:
            state = FileState()
            result, unmet = _clean_to_files(opener, obj, contract, settings, tmp, limits, state)
            if state.clean_again:  # a later batch proved what earlier batches' values mean: read them all again
                result, unmet = _clean_to_files(opener, obj, contract, settings, tmp, limits, state.seeded())
        except ObjectChangedError:
            return FileResult.for_version(
                obj, status="superseded", reason="the object changed or was deleted after it was listed"
            )
        except CsvFormatError as exc:
            result = _reject_unreadable(s3, obj, settings, keys, str(exc))
        else:
            _judge_expectations(result, contract, unmet)
            if _newer_output_exists(s3, settings, keys, obj):
                return FileResult.for_version(
                    obj, status="superseded", reason="a newer version of the object was transformed meanwhile"
                )
            _publish(s3, result, settings, keys, obj, tmp)
        result.version_id = version.get("id")
    return result


def _clean_to_files(
    opener: Any,
    obj: RawObject,
    contract: Contract,
    settings: DatasetSettings,
    tmp: str,
    limits: ReadLimits,
    file_state: FileState,
) -> tuple[FileResult, list[tuple[int, int]]]:
    """Stream the CSV through the contract into tmp/clean.parquet and tmp/rejected.csv (replacing them).

    `file_state` gathers what the file's values show across batches (and starts from what an earlier pass
    showed). Also returns, per file-level expectation, (clean rows that do not meet it, rows evaluated).
    """
    result = FileResult.for_version(obj)
    for name in (_PARQUET, _REJECTED):  # an earlier pass's outputs
        if os.path.exists(os.path.join(tmp, name)):
            os.remove(os.path.join(tmp, name))
    stream = read_csv(opener, contract.csv, settings.batch_bytes, limits)
    mapping = contract.map_headers(stream.header)
    result.extra_columns = list(mapping.extra)
    result.notes = list(stream.notes) + [
        f"header {visible(h)!r} has characters a person cannot see: they were ignored to match it"
        for h in stream.header
        if re.search(INVISIBLE, h)
    ]
    first_line_is_data = reads_as_data(contract, stream.header) if mapping.missing else []
    if mapping.missing:
        result.status, result.reason = "rejected", f"missing required column(s): {', '.join(mapping.missing)}"
        if first_line_is_data:
            result.reason += (
                f"; line {stream.header_lines} reads as data ({', '.join(repr(v) for v in first_line_is_data[:4])}): "
                "the file has no header line? (it is among the rejected rows)"
            )

    rejected_writer: pacsv.CSVWriter | None = None

    def write_rejected(table: pa.Table) -> None:
        nonlocal rejected_writer
        if rejected_writer is None:
            rejected_writer = pacsv.CSVWriter(os.path.join(tmp, _REJECTED), rejected_schema(stream.header))
        rejected_writer.write_table(table)
        result.rows_rejected += table.num_rows

    if first_line_is_data:  # the line taken for a header is a row of the file: rejected with the rest
        result.rows_read += 1
        line = pa.Table.from_arrays(
            [pa.array([stream.header_lines], pa.int64()), pa.array([result.reason]), pa.nulls(1, pa.string())]
            + [pa.array([h], pa.string()) for h in stream.header],
            schema=rejected_schema(stream.header),
        )
        write_rejected(line)
    expectations = file_expectations(contract)
    unmet = [[0, 0] for _ in expectations]
    time_seen: set[str] = set()
    schema = output_schema(contract)
    watch = HeaderWatch(contract, stream.header)
    with pq.ParquetWriter(os.path.join(tmp, _PARQUET), schema, compression=PARQUET_COMPRESSION) as writer:
        for whole in stream.batches:
            for segment in watch.split(whole):
                batch = segment.batch
                result.rows_read += batch.num_rows + len(batch.malformed)
                rows = batch.malformed
                rejected = [
                    malformed_table(
                        stream.header, [r.line for r in rows], [r.text for r in rows], [r.reason for r in rows]
                    )
                ]
                if result.reason or segment.rejected:
                    rejected.append(whole_file_rejected(batch, stream.header, result.reason or segment.rejected or ""))
                else:
                    ordered = reordered(batch, segment.order) if segment.order else batch
                    cleaned = clean_batch(ordered, stream.header, mapping, contract, obj.key, file_state)
                    writer.write_table(cleaned.clean)
                    result.rows_clean += cleaned.clean.num_rows
                    rejected.append(cleaned.rejected)
                    for counts, (batch_unmet, evaluated) in zip(unmet, cleaned.unmet, strict=True):
                        counts[0] += batch_unmet
                        counts[1] += evaluated
                    for kind, count in cleaned.reinterpreted.items():
                        result.reinterpreted[kind] = result.reinterpreted.get(kind, 0) + count
                    time_seen |= cleaned.time_seen
                merged = pa.concat_tables(rejected)
                if merged.num_rows:
                    write_rejected(merged.sort_by([(SOURCE_LINE, "ascending")]))
    result.notes += watch.notes + file_state.notes
    if result.reason and rejected_writer is None:
        write_rejected(pa.Table.from_pylist([], schema=rejected_schema(stream.header)))  # header only: no rows
    if rejected_writer is not None:
        rejected_writer.close()
    result.blank_lines = stream.stats.blank_lines
    result.encoding = stream.encoding
    if stream.stats.fallback_rows:
        result.reinterpreted[f"rows decoded as {contract.csv.fallback_encoding}"] = stream.stats.fallback_rows
    if stream.stats.escapes:
        result.reinterpreted[f"escape characters ({contract.csv.escape_char}) read"] = stream.stats.escapes
    if result.rows_clean:
        result.warnings += _dates_without_their_time(contract, stream.header, mapping, time_seen)
    return result, [(u, e) for u, e in unmet]


# Header words of a column that holds the time of day (English, German, French, Spanish, Dutch).
_TIME_HEADER = re.compile(r"(^|\b|_)(time|hour|uhrzeit|zeit|heure|hora|tijd)(\b|_|$)", re.I)


def _dates_without_their_time(
    contract: Contract, header: list[str], mapping: HeaderMapping, time_seen: set[str]
) -> list[str]:
    """Timestamp columns that held dates only (loaded as midnight) while a column named like a time was ignored."""
    ignored = [h for h in mapping.extra if _TIME_HEADER.search(h.strip())]
    if not ignored:
        return []
    return [
        f"{col.name} holds dates only (loaded as midnight) while column(s) {', '.join(repr(h) for h in ignored)} "
        "look like its time of day and were ignored: declare them in the contract (parts: time)"
        for col in contract.columns
        if col.type == "timestamp" and col.name in mapping.index_of and col.name not in time_seen
    ]


def _judge_expectations(result: FileResult, contract: Contract, unmet_counts: list[tuple[int, int]]) -> None:
    """quarantine_file and warn expectations, on the file's clean rows."""
    if result.status != "processed":
        return
    quarantine: list[str] = []
    for e, (unmet, evaluated) in zip(file_expectations(contract), unmet_counts, strict=True):
        if isinstance(e, RowCountBetween):
            rows = result.rows_clean
            low = e.min_value is not None and rows < e.min_value
            high = e.max_value is not None and rows > e.max_value
            if not (low or high):
                continue
            text = f"{describe_expectation(e)}: the file has {rows} clean row(s)"
        else:
            share = 1.0 if evaluated == 0 else (evaluated - unmet) / evaluated
            if share >= e.mostly:
                continue
            text = (
                f"{describe_expectation(e)}: {unmet} of {evaluated} row(s) do not meet it "
                f"({share:.1%} do; the contract asks for {e.mostly:.0%})"
            )
        if e.description:
            text += f" - {e.description}"
        (quarantine if e.severity == "quarantine_file" else result.warnings).append(text)
    if quarantine:
        result.status, result.quarantined = "rejected", True
        result.reason = "quarantined: " + "; ".join(quarantine)


def _newer_output_exists(s3: Any, settings: DatasetSettings, keys: ZoneKeys, obj: RawObject) -> bool:
    """Whether the key's processed object was made from a newer raw version (a later run got there first)."""
    try:
        meta = s3.head_object(Bucket=settings.processed_bucket, Key=keys.processed).get("Metadata") or {}
    except Exception:  # no object yet (or not readable): nothing newer to protect
        return False
    made_from = meta.get(storage.SOURCE_MODIFIED)
    return made_from is not None and datetime.fromisoformat(made_from) > obj.last_modified


def _publish(s3: Any, result: FileResult, settings: DatasetSettings, keys: ZoneKeys, obj: RawObject, tmp: str) -> None:
    """Upload the outputs and remove the outputs an earlier version of the key left that no longer apply."""
    bucket = settings.processed_bucket
    made_from = {"Metadata": storage.source_metadata(obj)}
    extra = {**made_from, **settings.put_args}
    parquet = os.path.join(tmp, _PARQUET)
    stale: list[str] = []
    if result.status == "processed":
        storage.upload(s3, parquet, bucket, keys.processed, PARQUET_TYPE, extra)
        result.processed_key = keys.processed
        stale += [keys.quarantined, keys.rejected_copy]
    elif result.quarantined:
        storage.upload(s3, parquet, bucket, keys.quarantined, PARQUET_TYPE, _with_reason(extra, result.reason))
    # A rejected file leaves the processed object alone: it belongs to the version still loaded.
    if result.rows_rejected or result.reason:
        rejected_extra = _with_reason(extra, result.reason) if result.reason else extra
        storage.upload(s3, os.path.join(tmp, _REJECTED), bucket, keys.rejected_rows, "text/csv", rejected_extra)
        result.rejected_key = keys.rejected_rows
    elif result.status == "processed":
        stale.append(keys.rejected_rows)
    storage.delete_many(s3, bucket, stale)  # one request


def _reject_unreadable(s3: Any, obj: RawObject, settings: DatasetSettings, keys: ZoneKeys, reason: str) -> FileResult:
    """A file that cannot be read as CSV is copied to rejected/ as is, typed by its bytes, with the reason."""
    content_type = storage.sniff_content_type(storage.first_bytes(s3, settings.raw_bucket, obj.key), obj.key)
    extra = _with_reason({"Metadata": storage.source_metadata(obj), **settings.put_args}, reason)
    extra["ContentType"] = content_type
    storage.copy(s3, settings.raw_bucket, obj.key, settings.processed_bucket, keys.rejected_copy, extra)
    storage.delete(s3, settings.processed_bucket, keys.rejected_rows)
    return FileResult.for_version(obj, rejected_key=keys.rejected_copy, status="rejected", reason=reason)


def _with_reason(extra: dict[str, Any], reason: str | None) -> dict[str, Any]:
    # S3 user metadata must be ASCII.
    text = (reason or "").encode("ascii", "replace").decode()[:1024]
    return {**extra, "Metadata": {**extra.get("Metadata", {}), "reject-reason": text}}
