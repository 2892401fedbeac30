"""Streaming CSV reading: record batches of raw strings with their source line numbers.

The fast path is pyarrow's streaming CSV reader (multi-threaded C++, memory bounded by
the block size). pyarrow cannot say where a row with the wrong number of fields sat in
the file, so a file that has such rows is re-read on an exact path (Python's csv
module) that keeps every record's line number. A file that is not valid in the
contract's encoding is re-read in its fallback encoding, and the choice is reported.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from include.etl.contract import CsvDialect

Opener = Callable[[], BinaryIO]

DEFAULT_BATCH_BYTES = 16 << 20
# pyarrow's streaming reader reads up to 32 blocks ahead of the consumer: small blocks keep
# that bounded (32 MiB), and _rebatched joins them back into batches of batch_bytes.
_READ_BLOCK_BYTES = 1 << 20
_EXACT_BATCH_ROWS = 50_000
# A file that fails to decode or decompress part way is rejected whole.
_UNREADABLE = (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error)
_HEADER_PROBE_BYTES = 1 << 16


class CsvFormatError(ValueError):
    """The file cannot be read as CSV at all (no header, undecodable text)."""


@dataclass(frozen=True)
class MalformedRow:
    """A record whose field count differs from the header's."""

    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class RawBatch:
    """Raw string columns, positionally matching the header, plus each row's line number."""

    columns: list[pa.Array]
    lines: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.lines)


@dataclass
class CsvStream:
    """An open CSV file: header, chosen encoding, and the batches still to read."""

    header: list[str]
    encoding: str
    batches: Iterator[RawBatch]
    malformed: list[MalformedRow] = field(default_factory=list)
    blank_lines: int = 0
    header_lines: int = 1


class _RestartExactError(Exception):
    """The fast path met a malformed row: re-read the file on the exact path."""


def open_raw(opener: Callable[[], BinaryIO], gzipped: bool) -> Opener:
    """Wrap an opener so it yields decompressed bytes for `.gz` objects."""
    if not gzipped:
        return opener
    return lambda: gzip.GzipFile(fileobj=opener(), mode="rb")  # type: ignore[return-value]


def _decode_header(probe: bytes, dialect: CsvDialect, encoding: str) -> tuple[list[str], int]:
    """The header row and the number of blank lines before it."""
    probe = probe.removeprefix(codecs.BOM_UTF8)  # also when the rest turns out to be cp1252
    text = codecs.getincrementaldecoder(_python_encoding(encoding))(errors="replace").decode(probe)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=dialect.delimiter)
    for row in reader:
        if any(h.strip() for h in row):
            return row, reader.line_num - 1 - sum(h.count("\n") for h in row)
    raise CsvFormatError("empty file: no header row")


def _probe(opener: Opener) -> bytes:
    with opener() as fh:
        return fh.read(_HEADER_PROBE_BYTES)


def _choose_encoding(probe: bytes, complete: bool, dialect: CsvDialect) -> str:
    """The contract's encoding if the probe decodes in it, else its fallback."""
    try:
        codecs.getincrementaldecoder(dialect.encoding)().decode(probe, final=complete)
        return dialect.encoding
    except UnicodeDecodeError:
        if dialect.fallback_encoding:
            return dialect.fallback_encoding
        raise CsvFormatError(
            f"file is not valid {dialect.encoding} and the contract has no fallback_encoding"
        ) from None


def read_csv(opener: Opener, dialect: CsvDialect, batch_bytes: int = DEFAULT_BATCH_BYTES) -> CsvStream:
    """Open a CSV for streaming; raises CsvFormatError if it has no readable header."""
    try:
        probe = _probe(opener)
    except _UNREADABLE as exc:
        raise _unreadable(exc, dialect.encoding) from exc
    if not probe.strip(b"\r\n\t \xef\xbb\xbf"):
        raise CsvFormatError("empty file: no header row")
    encoding = _choose_encoding(probe, len(probe) < _HEADER_PROBE_BYTES, dialect)
    header, blank_before = _decode_header(probe, dialect, encoding)
    stream = CsvStream(header=header, encoding=encoding, batches=iter(()))
    stream.header_lines = blank_before + 1 + sum(h.count("\n") for h in header)
    stream.batches = _readable(_batches(opener, dialect, encoding, stream, batch_bytes), stream)
    return stream


def _readable(batches: Iterator[RawBatch], stream: CsvStream) -> Iterator[RawBatch]:
    """Turn decoding and decompression failures into CsvFormatError (the file is rejected whole)."""
    try:
        yield from batches
    except _UNREADABLE as exc:
        raise _unreadable(exc, stream.encoding) from exc


def _unreadable(exc: Exception, encoding: str) -> CsvFormatError:
    if isinstance(exc, UnicodeDecodeError):
        return CsvFormatError(f"file is not valid {encoding}: {exc.reason} (byte {exc.object[exc.start]:#04x})")
    return CsvFormatError(f"cannot read the file: {type(exc).__name__}: {exc}")


def _batches(
    opener: Opener, dialect: CsvDialect, encoding: str, stream: CsvStream, batch_bytes: int
) -> Iterator[RawBatch]:
    emitted = 0
    try:
        if stream.header_lines > 1:
            raise _RestartExactError()  # pyarrow skips the header by physical line or record, not both
        for batch in _rebatched(_fast_batches(opener, dialect, encoding, stream, batch_bytes), batch_bytes):
            emitted += batch.num_rows
            yield batch
        return
    except _RestartExactError:
        pass
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            if not dialect.fallback_encoding or encoding == dialect.fallback_encoding:
                raise CsvFormatError(f"file is not valid {encoding}: {exc}") from exc
            # Invalid UTF-8 beyond the probe: the whole file is read in the fallback encoding.
            encoding = dialect.fallback_encoding
            stream.encoding = encoding
        # Anything else pyarrow cannot parse is read on the exact path.
    # Re-read on the exact path, skipping rows the fast path already gave out.
    stream.malformed.clear()
    stream.blank_lines = 0
    skipped = 0
    for batch in _exact_batches(opener, dialect, encoding, stream):
        if skipped + batch.num_rows <= emitted:
            skipped += batch.num_rows
            continue
        if skipped < emitted:
            cut = emitted - skipped
            batch = RawBatch([c.slice(cut) for c in batch.columns], batch.lines[cut:])
            skipped = emitted
        yield batch


def _fast_batches(
    opener: Opener, dialect: CsvDialect, encoding: str, stream: CsvStream, batch_bytes: int
) -> Iterator[RawBatch]:
    width = len(stream.header)
    names = [f"c{i}" for i in range(width)]

    malformed_seen: list[bool] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed_seen.append(True)
        return "error"  # any malformed row sends the file to the exact path

    def next_batch(read: Callable[[], pa.RecordBatch]) -> pa.RecordBatch:
        try:
            return read()
        except pa.ArrowInvalid as exc:
            if malformed_seen:
                raise _RestartExactError() from exc
            raise

    reader = next_batch(
        lambda: pacsv.open_csv(
            opener(),
            read_options=pacsv.ReadOptions(
                block_size=min(batch_bytes, _READ_BLOCK_BYTES),
                skip_rows=1,
                column_names=names,
                encoding=_arrow_encoding(encoding),
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=dialect.delimiter,
                newlines_in_values=True,
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    )
    next_line = stream.header_lines + 1
    while True:
        try:
            record_batch = next_batch(reader.read_next_batch)
        except StopIteration:
            return
        columns = list(record_batch.columns)
        n = record_batch.num_rows
        extra = np.zeros(n, dtype=np.int64)
        for col in columns:
            extra += pc.count_substring(col, "\n").to_numpy(zero_copy_only=False)
        # A row starts on the line after the previous row ended.
        spans = 1 + extra
        starts = next_line + np.concatenate(([0], np.cumsum(spans)[:-1])) if n else np.empty(0, np.int64)
        next_line += int(spans.sum())
        blank = _blank_mask(columns)
        if blank is not None:
            stream.blank_lines += int(blank.sum())
            keep = pa.array(~blank)
            columns = [pc.filter(c, keep) for c in columns]
            starts = starts[~blank]
        yield RawBatch(columns, starts.astype(np.int64))


def _rebatched(batches: Iterator[RawBatch], batch_bytes: int) -> Iterator[RawBatch]:
    """Join consecutive batches until they hold about batch_bytes of text."""
    pending: list[RawBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += sum(c.nbytes for c in batch.columns)
        if size >= batch_bytes:
            yield _concat(pending)
            pending, size = [], 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[RawBatch]) -> RawBatch:
    if len(batches) == 1:
        return batches[0]
    columns = [pa.concat_arrays([b.columns[i] for b in batches]) for i in range(len(batches[0].columns))]
    return RawBatch(columns, np.concatenate([b.lines for b in batches]))


def _blank_mask(columns: list[pa.Array]) -> np.ndarray | None:
    """Rows whose every field is empty (blank lines); None when there are none."""
    mask = None
    for col in columns:
        empty = pc.equal(pc.binary_length(pc.utf8_trim_whitespace(col)), 0)
        mask = empty if mask is None else pc.and_(mask, empty)
    if mask is None or not pc.any(mask).as_py():
        return None
    return mask.to_numpy(zero_copy_only=False)


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("-", "").replace("_", "").lower() in {"utf8", "utf8sig"}


def _arrow_encoding(encoding: str) -> str:
    return "utf8" if _is_utf8(encoding) else encoding


def _python_encoding(encoding: str) -> str:
    """utf-8-sig so a byte-order mark never leaks into the first header."""
    return "utf-8-sig" if _is_utf8(encoding) else encoding


def _exact_batches(opener: Opener, dialect: CsvDialect, encoding: str, stream: CsvStream) -> Iterator[RawBatch]:
    width = len(stream.header)
    with opener() as raw:
        text = io.TextIOWrapper(raw, encoding=_python_encoding(encoding), newline="")
        reader = csv.reader(text, delimiter=dialect.delimiter)
        while not any(field.strip() for field in next(reader)):  # blank lines, then the header
            stream.blank_lines += 1
        rows: list[list[str]] = []
        lines: list[int] = []
        prev_end = reader.line_num
        for row in _decoded(reader, encoding):
            start, prev_end = prev_end + 1, reader.line_num
            if not any(field.strip() for field in row):
                stream.blank_lines += 1
                continue
            if len(row) != width:
                stream.malformed.append(
                    MalformedRow(
                        start, _to_csv_line(row, dialect.delimiter), f"expected {width} fields, found {len(row)}"
                    )
                )
                continue
            rows.append(row)
            lines.append(start)
            if len(rows) >= _EXACT_BATCH_ROWS:
                yield _to_batch(rows, lines, width)
                rows, lines = [], []
        if rows:
            yield _to_batch(rows, lines, width)


def _decoded(reader: Iterator[list[str]], encoding: str) -> Iterator[list[str]]:
    try:
        yield from reader
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"file is not valid {encoding}: {exc}") from exc
    except csv.Error as exc:
        raise CsvFormatError(f"cannot parse CSV: {exc}") from exc


def _to_batch(rows: list[list[str]], lines: list[int], width: int) -> RawBatch:
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in range(width)]
    return RawBatch([pa.array(c, pa.string()) for c in cols], np.asarray(lines, dtype=np.int64))


def _to_csv_line(row: list[str], delimiter: str) -> str:
    """The record as CSV text (quoted as needed), without a line end."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerow(row)
    return out.getvalue()[:-2]
