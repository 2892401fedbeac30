"""Streaming CSV reading: batches of raw text fields with the physical line each record starts on.

The fast path is pyarrow's streaming CSV reader (C++, memory bounded by the block size). It
reads every field as bytes, so one row in another encoding cannot spoil the file: a column
whose bytes are valid UTF-8 is used as is (checked in C++); in a value that is not, only the
invalid bytes are decoded with the contract's `fallback_encoding` (the row is counted), and a
value whose bytes are valid in neither gets its row rejected with the field and the position
of the first such byte. Records with the wrong number of fields come from pyarrow's
invalid-row handler with their record number and raw text and are rejected in place, in the
same batch, without reading the file again.

A file the fast path cannot read exactly (a malformed row that is itself not valid UTF-8, a
row longer than the largest block, a primary encoding other than UTF-8 with a byte it does not
define) continues on the exact path (Python's csv module, without its field size limit) after
the records already handed out. Both paths count line ends the same way: `\\r\\n`, `\\n` and a
lone `\\r` each end a line. Memory stays bounded by the batch size on both.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from include.etl.reading.value_bytes import may_contain

Opener = Callable[[], BinaryIO]

# pyarrow's streaming reader reads ahead of the consumer: small blocks keep that bounded, and
# _rebatched joins them back into batches of about batch_bytes.
_READ_BLOCK_BYTES = 1 << 20
# pyarrow cannot read a record longer than a block ("straddles two block boundaries"): the block
# grows up to this size, then the file continues on the exact path.
_MAX_BLOCK_BYTES = 64 << 20
_EXACT_BATCH_ROWS = 50_000
_HEADER_PROBE_BYTES = 1 << 16
_MAX_HEADER_BYTES = 16 << 20
# A file that fails to decompress part way is rejected whole.
_UNREADABLE = (EOFError, gzip.BadGzipFile, zlib.error)
_LINE_END = re.compile(r"\r\n|\r|\n")
# Excel writes `sep=;` as the first line to name the delimiter (and reads it back).
_EXCEL_SEP = re.compile(r'^"?sep=(?P<sep>[^\r\n"])"?[ \t]*$')
# A byte-order mark says which Unicode encoding the file is in (UTF-32 before UTF-16: FF FE 00 00).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SURROGATES = re.compile("[\udc80-\udcff]+")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class Dialect(Protocol):
    """What the reader needs from a contract's CSV dialect."""

    @property
    def delimiter(self) -> str: ...
    @property
    def quote_char(self) -> str: ...
    @property
    def escape_char(self) -> str | None: ...
    @property
    def double_quote(self) -> bool: ...
    @property
    def encoding(self) -> str: ...
    @property
    def fallback_encoding(self) -> str | None: ...


class CsvFormatError(ValueError):
    """The file cannot be read as CSV at all (no header, undecodable header, not decompressible)."""


@dataclass(frozen=True)
class MalformedRow:
    """A record rejected in reading: wrong number of fields, or bytes in no allowed encoding."""

    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class RawBatch:
    """Raw string columns positionally matching the header, each row's line, and rows rejected in reading.

    `fallback` flags the rows in which bytes were decoded with the fallback encoding (None: none).
    `records_end` is the number of data records read up to the end of this batch (blank and
    malformed ones included); `blank_lines` the blank records among them.
    """

    columns: list[pa.Array]
    lines: np.ndarray
    malformed: list[MalformedRow] = field(default_factory=list)
    fallback: np.ndarray | None = None
    records_end: int = 0
    blank_lines: int = 0

    @property
    def num_rows(self) -> int:
        return len(self.lines)

    @property
    def fallback_rows(self) -> int:
        return 0 if self.fallback is None else int(self.fallback.sum())


@dataclass
class ReadStats:
    """What reading a file saw besides its records (complete once the batches are consumed)."""

    blank_lines: int = 0
    # Rows with bytes that were not valid in the file's encoding, decoded with the fallback.
    fallback_rows: int = 0
    # "fast" (pyarrow), or "exact" once a record sent the rest of the file to Python's csv module.
    path: str = "fast"
    # Escape characters read (the contract's escape_char, e.g. backslashes before quotes), when it has one.
    escapes: int = 0


@dataclass
class CsvStream:
    """An open CSV file: its header and dialect as found in the file, and the batches still to read."""

    header: list[str]
    encoding: str
    delimiter: str
    header_lines: int
    batches: Iterator[RawBatch]
    stats: ReadStats
    # How the file said to read it, where that differs from the contract (a `sep=` line, a BOM).
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReadLimits:
    """What one file may cost to read; past a limit the file is rejected whole with the numbers (CsvFormatError).

    The dataset's settings (`<dataset>_max_field_bytes`, ...) set them; the defaults are safe for a worker of a few
    GB. A field (or a line of the file) longer than `max_field_bytes` would have to be held whole; a `.gz` file
    that decompresses past `max_decompressed_bytes`, or past `ratio_after_bytes` at more than
    `max_compression_ratio` times its compressed size, is a compression bomb or nothing a CSV export makes.
    """

    max_field_bytes: int = 16 << 20
    max_decompressed_bytes: int = 32 << 30
    max_compression_ratio: int = 200
    ratio_after_bytes: int = 64 << 20


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


class _RawStream(io.RawIOBase):
    """io.RawIOBase over any object with read(n); closed when we close it, not when it reaches its end."""

    def __init__(self, body: BinaryIO) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


class _CountingReader(_RawStream):
    """Counts the bytes read from a (compressed) source."""

    def __init__(self, body: BinaryIO) -> None:
        super().__init__(body)
        self.count = 0

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = super().readinto(buffer)
        self.count += n
        return n


class _BoundedGzip(io.RawIOBase):
    """A gzip stream that stops (CsvFormatError) past the decompressed size or ratio its limits allow."""

    def __init__(self, body: BinaryIO, limits: ReadLimits) -> None:
        self._compressed = _CountingReader(body)
        self._gzip = gzip.GzipFile(fileobj=io.BufferedReader(self._compressed), mode="rb")
        self._limits = limits
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._gzip.readinto(buffer)
        self.count += n
        limits = self._limits
        if self.count > limits.max_decompressed_bytes:
            raise CsvFormatError(
                f"the file decompresses to more than {_mib(limits.max_decompressed_bytes)} "
                "(max_decompressed_bytes): it is rejected whole"
            )
        ratio = self.count / max(self._compressed.count, 1)
        if self.count > limits.ratio_after_bytes and ratio > limits.max_compression_ratio:
            raise CsvFormatError(
                f"the file decompresses {ratio:,.0f} times its size ({_mib(self._compressed.count)} to more than "
                f"{_mib(self.count)}; max_compression_ratio {limits.max_compression_ratio}): a compression bomb, "
                "rejected whole"
            )
        return n

    def close(self) -> None:
        try:
            self._gzip.close()
            self._compressed.close()
        finally:
            super().close()


def open_raw(opener: Opener, gzipped: bool, limits: ReadLimits | None = None) -> Opener:
    """Wrap an opener so it yields decompressed bytes for `.gz` objects, within `limits`."""
    if not gzipped:
        return opener
    bounds = limits or ReadLimits()
    return lambda: io.BufferedReader(_BoundedGzip(opener(), bounds))


def read_csv(opener: Opener, dialect: Dialect, batch_bytes: int, limits: ReadLimits | None = None) -> CsvStream:
    """Open a CSV for streaming; raises CsvFormatError if it has no readable header.

    The batches are read lazily; reading them raises CsvFormatError for a file that stops
    decompressing part way, or that goes past `limits` (a field or line longer than
    `max_field_bytes`). `opener` is called again for each pass over the file.
    """
    head = _read_head(opener, dialect)
    stream = CsvStream(
        header=head.header,
        encoding=head.encoding,
        delimiter=head.delimiter,
        header_lines=head.header_lines,
        batches=iter(()),
        stats=ReadStats(blank_lines=head.blank_before),
        notes=head.notes,
    )
    stream.batches = _Reader(opener, dialect, stream, batch_bytes, limits or ReadLimits()).batches()
    return stream


# --- decoding ------------------------------------------------------------------------------------


def is_utf8(encoding: str) -> bool:
    return encoding.replace("-", "").replace("_", "").lower() in {"utf8", "utf8sig"}


def _codec(encoding: str) -> str:
    return "utf-8" if is_utf8(encoding) else encoding


class _UndecodableError(ValueError):
    """A value with a byte that neither the file's encoding nor the fallback defines."""

    def __init__(self, byte: int, position: int, what: str) -> None:
        super().__init__(f"byte {byte:#04x} at byte {position} is not valid {what}")
        self.byte, self.position, self.what = byte, position, what


def _fix(value: str, encoding: str, fallback: str | None) -> tuple[str, bool]:
    """A value decoded with surrogateescape, its undecodable bytes decoded with the fallback.

    Valid text stays as it is; only the runs of bytes that were not valid in `encoding` are
    decoded with `fallback`. Returns (text, whether the fallback was used); raises _UndecodableError.
    """
    if _SURROGATES.search(value) is None:
        return value, False
    codec = _codec(encoding)
    out: list[str] = []
    done = 0
    for run in _SURROGATES.finditer(value):
        out.append(value[done : run.start()])
        raw = run.group().encode(codec, "surrogateescape")
        if not fallback:
            raise _UndecodableError(
                raw[0], _byte_position(value, run.start(), codec), f"{encoding} (no fallback_encoding)"
            )
        try:
            out.append(raw.decode(fallback))
        except UnicodeDecodeError as exc:
            position = _byte_position(value, run.start(), codec) + exc.start
            raise _UndecodableError(raw[exc.start], position, f"{encoding} nor {fallback}") from None
        done = run.end()
    out.append(value[done:])
    return "".join(out), True


def _byte_position(value: str, index: int, codec: str) -> int:
    """1-based byte offset in the raw field of the character at `index`."""
    return len(value[:index].encode(codec, "surrogateescape")) + 1


def escape_invalid(value: str) -> str:
    """A surrogateescape-decoded value with its undecodable bytes shown as \\xNN."""
    return _SURROGATES.sub(lambda m: "".join(f"\\x{ord(c) - 0xDC00:02x}" for c in m.group()), value)


# --- the head of the file --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    header: list[str]
    header_lines: int
    blank_before: int
    delimiter: str
    encoding: str
    notes: list[str]


# Signatures of binary formats people save with a .csv name by mistake.
_SIGNATURES = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx or .ods spreadsheet is one)"),
    (b"\xd0\xcf\x11\xe0", "an OLE2 document (an .xls spreadsheet is one)"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\x1f\x8b", "gzip-compressed data (name it .csv.gz)"),
    (b"PAR1", "a Parquet file"),
)


def _binary(probe: bytes) -> str | None:
    """Why the probe is not text, or None; decided on evidence, not on one byte.

    A known binary signature; UTF-16 without a byte-order mark (a NUL in most even or most odd bytes, as every
    ASCII character has in it); or bytes that are mostly not text (NULs and other control bytes). A stray NUL in
    a text file is none of these: its file is read, and the rows holding it are rejected (PostgreSQL stores no
    NUL in text).
    """
    for signature, what in _SIGNATURES:
        if probe.startswith(signature):
            return f"the file is not text: it starts like {what}"
    nul = probe.find(b"\x00")
    if nul < 0:
        return None
    sample = probe[:4096]
    pairs = len(sample) // 2
    if pairs >= 4:
        even, odd = sample[0 : pairs * 2 : 2].count(0), sample[1 : pairs * 2 : 2].count(0)
        if max(even, odd) >= 0.4 * pairs:
            return (
                f"the file is not text in its encoding: a NUL in {max(even, odd)} of its first {pairs} byte pairs "
                "(UTF-16 without a byte-order mark? Declare `encoding: utf-16-le` or `utf-16-be` in the contract)"
            )
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    if control > 0.1 * len(sample):
        return f"the file is not text: {control} of its first {len(sample)} bytes are NULs or control bytes"
    return None


def _read_head(opener: Opener, dialect: Dialect) -> _Head:
    """Header row, physical lines up to its end, delimiter and encoding, from the first bytes."""
    size = _HEADER_PROBE_BYTES
    while True:
        try:
            with opener() as fh:
                probe = fh.read(size)
        except _UNREADABLE as exc:
            raise _unreadable(exc) from exc
        complete = len(probe) < size
        head = _parse_head(probe, complete, dialect)
        if head is not None:
            return head
        if complete or size >= _MAX_HEADER_BYTES:
            raise CsvFormatError("no complete header row in the first 16 MiB")
        size *= 4


def _parse_head(probe: bytes, complete: bool, dialect: Dialect) -> _Head | None:
    """The head of the file, or None if the probe ends before the header does."""
    encoding, notes = dialect.encoding, []
    for bom, name in _BOMS:
        if probe.startswith(bom):
            if not (is_utf8(name) and is_utf8(encoding)):
                notes.append(f"byte-order mark: read as {name} (the contract says {encoding})")
                encoding = name
            break
    text = _decode_probe(probe, encoding)
    if not text.strip():
        raise CsvFormatError("empty file: no header row")
    if not encoding.lower().startswith("utf-16") and not encoding.lower().startswith("utf-32"):
        binary = _binary(probe)
        if binary:
            raise CsvFormatError(binary)
    delimiter, lines_before = dialect.delimiter, 0
    first_end = _LINE_END.search(text)
    first_line = text[: first_end.start()] if first_end else text
    sep = _EXCEL_SEP.match(first_line)
    if sep and (first_end or complete):
        delimiter, lines_before = sep.group("sep"), 1
        notes.append(f"first line {first_line.strip()!r} names the delimiter {delimiter!r} (Excel): used, then skipped")
        text = text[first_end.end() :] if first_end else ""
    terminated = len(_LINE_END.findall(text))
    reader = csv.reader(io.StringIO(text, newline=""), **_csv_args(dialect, delimiter))
    blank_before = 0
    for row in reader:
        if not any(h.strip() for h in row):
            blank_before += 1
            continue
        if not complete and terminated < reader.line_num:
            return None  # the header's last line may go on after the probe
        try:
            header = [_fix(h, encoding, dialect.fallback_encoding)[0] for h in row]
        except _UndecodableError as exc:
            raise CsvFormatError(f"cannot decode the header: {exc}") from None
        return _Head(header, lines_before + reader.line_num, blank_before, delimiter, encoding, notes)
    if complete:
        raise CsvFormatError("empty file: no header row")
    return None


def _decode_probe(probe: bytes, encoding: str) -> str:
    if is_utf8(encoding):
        return probe.removeprefix(codecs.BOM_UTF8).decode("utf-8", "surrogateescape")
    return codecs.getincrementaldecoder(encoding)(errors="surrogateescape").decode(probe)


def _csv_args(dialect: Dialect, delimiter: str) -> dict[str, Any]:
    return {
        "delimiter": delimiter,
        "quotechar": dialect.quote_char,
        "escapechar": dialect.escape_char,
        "doublequote": dialect.double_quote,
        "strict": False,
    }


def _unreadable(exc: Exception) -> CsvFormatError:
    return CsvFormatError(f"cannot read the file: {type(exc).__name__}: {exc}")


# --- the records --------------------------------------------------------------------------------


class _RestartError(Exception):
    """The fast path cannot go on exactly from here."""

    def __init__(self, reason: str, bigger_block: bool = False) -> None:
        super().__init__(reason)
        self.bigger_block = bigger_block


class _Reader:
    """Reads the data records of one file: fast path first, the exact path after a record it cannot read."""

    def __init__(
        self, opener: Opener, dialect: Dialect, stream: CsvStream, batch_bytes: int, limits: ReadLimits
    ) -> None:
        self.opener = opener
        self.limits = limits
        self.dialect = dialect
        self.stream = stream
        self.batch_bytes = batch_bytes
        self.width = len(stream.header)
        self.utf8 = is_utf8(stream.encoding)
        self.records_done = 0  # records handed to the consumer: a restart skips them
        self.escapes = 0

    def batches(self) -> Iterator[RawBatch]:
        block = min(self.batch_bytes, _READ_BLOCK_BYTES)
        try:
            while True:
                try:
                    yield from self._handed_out(self._fast(block))
                    return
                except _RestartError as exc:
                    # A record longer than twice the field limit goes to the exact path, which stops at the limit.
                    largest = min(_MAX_BLOCK_BYTES, max(_READ_BLOCK_BYTES, 2 * self.limits.max_field_bytes))
                    if not (exc.bigger_block and block < largest):
                        break
                    block = min(block * 4, largest)
            self.stream.stats.path = "exact"
            yield from self._handed_out(self._exact())
        except _UNREADABLE as exc:
            raise _unreadable(exc) from exc

    def _handed_out(self, batches: Iterator[RawBatch]) -> Iterator[RawBatch]:
        for batch in _rebatched(batches, self.batch_bytes):
            self._within_limits(batch)
            batch = self._broken_quoting_rejected(batch)
            self.records_done = batch.records_end
            self.stream.stats.blank_lines += batch.blank_lines
            self.stream.stats.fallback_rows += batch.fallback_rows
            yield batch
        self.stream.stats.escapes = self.escapes

    def _within_limits(self, batch: RawBatch) -> None:
        """A field longer than max_field_bytes rejects the file (the exact path stops at one; the fast path reads
        records up to its largest block, and must give the same answer)."""
        limit = self.limits.max_field_bytes
        for index, col in enumerate(batch.columns):
            if len(col) == 0:
                continue
            sizes = pc.binary_length(col)
            if (pc.max(sizes).as_py() or 0) > limit:
                row = int(pc.index(pc.greater(sizes, limit), True).as_py())
                raise _too_long(f"{self._field(index)}", int(batch.lines[row]), limit)

    def _opened(self) -> BinaryIO:
        """The file from its start; counts the escape characters read when the dialect has one."""
        self.escapes = 0
        source = self.opener()
        if not self.dialect.escape_char:
            return source
        return _EscapeCounter(source, self.dialect.escape_char.encode(), self)  # type: ignore[return-value]

    # --- quoting that breaks ---

    def _broken_quoting_rejected(self, batch: RawBatch) -> RawBatch:
        """Rows whose quoting breaks, rejected with their raw text instead of stored mangled.

        Without an escape_char, `"Monitor 27\\" IPS"` (a backslash-escaped quote, as MySQL and PHP write
        them) reads as `Monitor 27\\ IPS"`, and a quote escaped that way at the end of a field swallows
        the rest of the line and the next one. Both parsers do so silently: rows with a backslash before
        a quote in a value are checked against their raw text, strictly, and rejected if it breaks.
        """
        if self.dialect.escape_char or not batch.num_rows:
            return batch
        quote = re.escape(self.dialect.quote_char)
        flagged = np.zeros(batch.num_rows, dtype=bool)
        for col in batch.columns:
            if not may_contain(col, b"\\"):  # no backslash: nothing to check (fast path)
                continue
            flagged |= (
                pc.match_substring_regex(col, rf"\\[^{quote}]*{quote}").fill_null(False).to_numpy(zero_copy_only=False)
            )
        if not flagged.any():
            return batch
        rows = np.flatnonzero(flagged)
        spans = {
            int(batch.lines[i]): 1 + sum(_text_line_breaks(c[i].as_py() or "") for c in batch.columns) for i in rows
        }
        raw = self._raw_records(spans)
        broken = [i for i in rows if not _strict_ok(raw[int(batch.lines[i])], self.dialect, self.stream.delimiter)]
        if not broken:
            return batch
        reason = (
            "the quoting breaks: a quote is followed by more text (a backslash-escaped quote, as MySQL and PHP "
            "write them?); if the file escapes quotes with a backslash, set csv.escape_char in the contract"
        )
        malformed = batch.malformed + [
            MalformedRow(int(batch.lines[i]), raw[int(batch.lines[i])], reason) for i in broken
        ]
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[broken] = False
        mask = pa.array(keep)
        return RawBatch(
            [pc.filter(c, mask) for c in batch.columns],
            batch.lines[keep],
            sorted(malformed, key=lambda m: m.line),
            None if batch.fallback is None else batch.fallback[keep],
            batch.records_end,
            batch.blank_lines,
        )

    def _raw_records(self, spans: dict[int, int]) -> dict[int, str]:
        """The raw text of records by their first line and line count (one more read of the file's start)."""
        wanted: dict[int, list[str]] = {line: [] for line in spans}
        last = max(line + span - 1 for line, span in spans.items())
        codec = _codec(self.stream.encoding)
        with self.opener() as raw:
            text = io.TextIOWrapper(_buffered(raw), encoding=codec, errors="surrogateescape", newline="")
            for number, line in enumerate(text, start=1):
                for start, parts in wanted.items():
                    if start <= number < start + spans[start]:
                        parts.append(line)
                if number >= last:
                    break
        return {start: escape_invalid("".join(parts)).rstrip("\r\n") for start, parts in wanted.items()}

    # --- fast path ---

    def _fast(self, block_size: int) -> Iterator[RawBatch]:
        names = [f"c{i}" for i in range(self.width)]
        invalid = _InvalidRows(self.stream.header_lines)
        kind = pa.binary() if self.utf8 else pa.string()
        source = self._opened()
        try:
            try:
                reader = pacsv.open_csv(
                    source,
                    read_options=pacsv.ReadOptions(
                        block_size=block_size,
                        skip_rows=self.stream.header_lines,
                        column_names=names,
                        encoding="utf8" if self.utf8 else self.stream.encoding,
                        use_threads=False,  # invalid rows have record numbers only when read single-threaded
                    ),
                    parse_options=pacsv.ParseOptions(
                        delimiter=self.stream.delimiter,
                        quote_char=self.dialect.quote_char,
                        escape_char=self.dialect.escape_char or False,
                        double_quote=self.dialect.double_quote,
                        newlines_in_values=True,
                        ignore_empty_lines=False,
                        invalid_row_handler=invalid,
                    ),
                    convert_options=pacsv.ConvertOptions(
                        column_types=dict.fromkeys(names, kind),
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                        check_utf8=False,
                    ),
                )
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                raise invalid.restart(exc) from exc
            records = _RecordCounter(self.stream.header_lines + 1)
            while True:
                try:
                    record_batch = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                    raise invalid.restart(exc) from exc
                bad_at, texts = invalid.take_before(records.next, record_batch.num_rows)
                yield self._fast_batch(list(record_batch.columns), bad_at, texts, records)
            if invalid.rows:  # after the last good row
                bad_at, texts = invalid.take_before(records.next, 0, everything=True)
                empty = [pa.array([], kind) for _ in range(self.width)]
                yield self._fast_batch(empty, bad_at, texts, records)
        finally:
            source.close()

    def _fast_batch(
        self, columns: list[pa.Array], bad_at: list[int], texts: list[str], records: _RecordCounter
    ) -> RawBatch:
        """Good rows (columns) and malformed records (texts at record numbers bad_at), in file order."""
        n = len(columns[0]) if columns else 0
        total = n + len(texts)
        numbers = np.arange(records.next, records.next + total)
        is_bad = np.isin(numbers, np.asarray(bad_at, dtype=np.int64))
        spans = np.ones(total, dtype=np.int64)
        good_breaks = np.zeros(n, dtype=np.int64)
        for col in columns:
            good_breaks += _line_breaks(col)
        spans[~is_bad] += good_breaks
        spans[is_bad] += np.asarray([_text_line_breaks(t) for t in texts], dtype=np.int64)
        starts = records.take(spans)
        keep = numbers >= self.records_done  # after a restart, records already handed out are skipped
        good_keep = keep[~is_bad]
        good_lines = starts[~is_bad]
        blank_lines = 0
        malformed: list[MalformedRow] = []
        for line, text, kept in zip(starts[is_bad], texts, keep[is_bad], strict=True):
            if not kept:
                continue
            if _blank_text(text, self.stream.delimiter, self.dialect.quote_char):
                blank_lines += 1
            else:
                malformed.append(self._wrong_width(int(line), text))
        if not good_keep.all():
            mask = pa.array(good_keep)
            columns = [pc.filter(c, mask) for c in columns]
            good_lines = good_lines[good_keep]
        return self._decoded(columns, good_lines, malformed, records.next, blank_lines)

    def _wrong_width(self, line: int, text: str) -> MalformedRow:
        args = _csv_args(self.dialect, self.stream.delimiter)
        found = len(next(csv.reader(io.StringIO(text, newline=""), **args), []))
        reason = f"expected {self.width} fields, found {found}"
        if not self.dialect.escape_char and "\\" + self.dialect.quote_char in text:
            reason += " (a backslash before a quote: if the file escapes quotes so, set csv.escape_char)"
        return MalformedRow(line, text, reason)

    def _decoded(
        self, columns: list[pa.Array], lines: np.ndarray, malformed: list[MalformedRow], records_end: int, blank: int
    ) -> RawBatch:
        """Text columns without blank rows: binary columns decoded (the fallback per value, or the row rejected)."""
        n = len(lines)
        fallback = np.zeros(n, dtype=bool)
        undecodable: dict[int, str] = {}
        raw_columns = columns
        if self.utf8:
            decoded = []
            for i, col in enumerate(columns):
                try:
                    decoded.append(pc.cast(col, pa.string()))  # validates UTF-8 in C++
                except pa.ArrowInvalid:
                    decoded.append(self._decode_slow(col, i, fallback, undecodable))
            columns = decoded
        blank_mask = _blank_mask(columns, n)
        if undecodable:
            blank_mask[list(undecodable)] = False
        drop = blank_mask.copy()
        for row, reason in undecodable.items():
            drop[row] = True
            text = self.stream.delimiter.join(_escaped_bytes(c[row].as_py()) for c in raw_columns)
            malformed.append(MalformedRow(int(lines[row]), text, f"cannot decode the row: {reason}"))
        if drop.any():
            keep = pa.array(~drop)
            columns = [pc.filter(c, keep) for c in columns]
            lines, fallback = lines[~drop], fallback[~drop]
        malformed.sort(key=lambda m: m.line)
        return RawBatch(
            columns,
            lines.astype(np.int64),
            malformed,
            fallback if fallback.any() else None,
            records_end,
            blank + int(blank_mask.sum()),
        )

    def _decode_slow(self, col: pa.Array, index: int, fallback: np.ndarray, undecodable: dict[int, str]) -> pa.Array:
        """A binary column that is not all valid UTF-8, value by value; surrogates mark undecodable rows."""
        values: list[str] = []
        for row, raw in enumerate(col.to_pylist()):
            text = raw.decode("utf-8", "surrogateescape")
            try:
                fixed, used = _fix(text, self.stream.encoding, self.dialect.fallback_encoding)
            except _UndecodableError as exc:
                undecodable.setdefault(row, f"{self._field(index)}: {exc}")
                values.append(text)
                continue
            fallback[row] |= used
            values.append(fixed)
        # Surrogates cannot be stored as UTF-8: such values are replaced; the caller rejects their rows.
        return pa.array([v if row not in undecodable else "" for row, v in enumerate(values)], pa.string())

    def _field(self, index: int) -> str:
        name = self.stream.header[index] if index < len(self.stream.header) else ""
        return f"field {index + 1} ({name})" if name else f"field {index + 1}"

    # --- exact path ---

    def _exact(self) -> Iterator[RawBatch]:
        codec = _codec(self.stream.encoding)
        # The csv module holds a field whole (up to its limit) and a line whole: both bounded by max_field_bytes.
        csv.field_size_limit(self.limits.max_field_bytes)
        with self._opened() as raw:
            text = io.TextIOWrapper(_buffered(raw), encoding=codec, errors="surrogateescape", newline="")
            reader = csv.reader(
                _bounded_lines(text, self.limits.max_field_bytes), **_csv_args(self.dialect, self.stream.delimiter)
            )
            while reader.line_num < self.stream.header_lines:
                if next(reader, None) is None:
                    return
            end = reader.line_num
            rows: list[list[str]] = []
            lines: list[int] = []
            fallback: list[bool] = []
            malformed: list[MalformedRow] = []
            blank = record = 0
            for row in _exact_rows(reader):
                start, end = end + 1, reader.line_num
                record += 1
                if record <= self.records_done:
                    continue
                if not any(self._display(f).strip() for f in row):
                    blank += 1
                elif len(row) != self.width:
                    fields = [escape_invalid(self._display(f)) for f in row]
                    reason = f"expected {self.width} fields, found {len(row)}"
                    malformed.append(MalformedRow(start, _to_csv_line(fields, self.stream.delimiter), reason))
                else:
                    try:
                        fixed = [self._exact_field(f, i) for i, f in enumerate(row)]
                    except _UndecodableError as exc:
                        fields = [escape_invalid(f) for f in row]
                        malformed.append(
                            MalformedRow(
                                start, _to_csv_line(fields, self.stream.delimiter), f"cannot decode the row: {exc}"
                            )
                        )
                    else:
                        rows.append([f for f, _ in fixed])
                        lines.append(start)
                        fallback.append(any(used for _, used in fixed))
                if len(rows) + len(malformed) + blank >= _EXACT_BATCH_ROWS:
                    yield self._exact_batch(rows, lines, fallback, malformed, record, blank)
                    rows, lines, fallback, malformed, blank = [], [], [], [], 0
            if rows or malformed or blank:
                yield self._exact_batch(rows, lines, fallback, malformed, record, blank)

    def _exact_field(self, value: str, index: int) -> tuple[str, bool]:
        try:
            return _fix(value, self.stream.encoding, self.dialect.fallback_encoding)
        except _UndecodableError as exc:
            raise _UndecodableError(exc.byte, exc.position, f"{exc.what}, in {self._field(index)}") from None

    def _display(self, value: str) -> str:
        try:
            return _fix(value, self.stream.encoding, self.dialect.fallback_encoding)[0]
        except _UndecodableError:
            return value

    def _exact_batch(
        self,
        rows: list[list[str]],
        lines: list[int],
        fallback: list[bool],
        malformed: list[MalformedRow],
        records_end: int,
        blank: int,
    ) -> RawBatch:
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in range(self.width)]
        flags = np.asarray(fallback, dtype=bool)
        return RawBatch(
            [pa.array(c, pa.string()) for c in cols],
            np.asarray(lines, dtype=np.int64),
            list(malformed),
            flags if flags.any() else None,
            records_end,
            blank,
        )


class _InvalidRows:
    """pyarrow's invalid-row handler: keeps each malformed record's text by its record number."""

    def __init__(self, skipped_lines: int) -> None:
        self.skipped_lines = skipped_lines
        self.rows: dict[int, str] = {}  # record number (0 = the first data record) -> raw text
        self.failure: str | None = None

    def __call__(self, row: pacsv.InvalidRow) -> str:
        # (A malformed row that is not valid UTF-8 never gets here: pyarrow fails to make it a str.)
        if row.number is None:
            self.failure = "no record number for a malformed row"
            return "error"
        self.rows[row.number - self.skipped_lines - 1] = row.text
        return "skip"

    def take_before(self, first: int, good_rows: int, everything: bool = False) -> tuple[list[int], list[str]]:
        """The malformed records that come before and among the next `good_rows` good records.

        Good records take the record numbers from `first` on that no malformed record has.
        """
        if everything:
            numbers = sorted(self.rows)
        else:
            window = 0
            while True:
                inside = sum(1 for i in self.rows if i < first + good_rows + window)
                if inside == window:
                    break
                window = inside
            numbers = sorted(i for i in self.rows if i < first + good_rows + window)
        return numbers, [self.rows.pop(i) for i in numbers]

    def restart(self, exc: Exception) -> _RestartError:
        if "straddl" in str(exc):
            return _RestartError(str(exc), bigger_block=True)
        return _RestartError(self.failure or str(exc))


class _EscapeCounter:
    """A file-like object that counts the escape characters read through it."""

    def __init__(self, source: BinaryIO, escape: bytes, reader: _Reader) -> None:
        self._source, self._escape, self._reader = source, escape, reader

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self._reader.escapes += data.count(self._escape)
        return data

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return bool(getattr(self._source, "closed", False))

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> _EscapeCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _strict_ok(text: str, dialect: Dialect, delimiter: str) -> bool:
    """Whether a record's raw text parses under strict CSV quoting rules."""
    args = {**_csv_args(dialect, delimiter), "strict": True}
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), **args))
    except csv.Error:
        return False
    return len(rows) == 1


class _RecordCounter:
    """The next data record number and the physical line it starts on, advanced batch by batch."""

    def __init__(self, first_line: int) -> None:
        self.next = 0
        self.line = first_line

    def take(self, spans: np.ndarray) -> np.ndarray:
        """Start lines of the next len(spans) records, spanning `spans` lines each."""
        starts = self.line + np.concatenate(([0], np.cumsum(spans)[:-1])) if len(spans) else spans
        self.next += len(spans)
        self.line += int(spans.sum())
        return starts


def _exact_rows(reader: Any) -> Iterator[list[str]]:
    try:
        yield from reader
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise _too_long("a field", reader.line_num, csv.field_size_limit()) from exc
        raise CsvFormatError(f"cannot parse CSV: {exc}") from exc


def _too_long(what: str, line: int, limit: int) -> CsvFormatError:
    return CsvFormatError(
        f"{what} at line {line} is longer than {_mib(limit)} (max_field_bytes): the file is rejected whole "
        "rather than held in memory (raise the dataset's max_field_bytes to read it)"
    )


def _bounded_lines(text: io.TextIOBase, limit: int) -> Iterator[str]:
    """The lines of a text stream, none longer than `limit` characters (CsvFormatError instead)."""
    number = 0
    while line := text.readline(limit + 1):
        number += 1
        if len(line) > limit:
            raise _too_long("a line", number, limit)
        yield line


def _escaped_bytes(raw: bytes | str | None) -> str:
    if isinstance(raw, bytes):
        return escape_invalid(raw.decode("utf-8", "surrogateescape"))
    return raw or ""


def _buffered(raw: BinaryIO) -> BinaryIO:
    """A file object TextIOWrapper can rely on (botocore's streaming body over HTTP is not one)."""
    if isinstance(raw, io.BufferedIOBase):
        return raw
    return io.BufferedReader(_RawStream(raw))


def _line_breaks(col: pa.Array) -> np.ndarray:
    """Line ends inside each value: \\r\\n, \\n and a lone \\r count one each."""
    if not may_contain(col, b"\n", b"\r"):
        return np.zeros(len(col), dtype=np.int64)
    breaks = pc.count_substring(col, "\n").to_numpy(zero_copy_only=False).astype(np.int64)
    if len(col) and pc.any(pc.match_substring(col, "\r")).as_py():
        breaks += pc.count_substring(col, "\r").to_numpy(zero_copy_only=False)
        breaks -= pc.count_substring(col, "\r\n").to_numpy(zero_copy_only=False)
    return np.asarray(breaks, dtype=np.int64)


def _text_line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _blank_text(text: str, delimiter: str, quote: str) -> bool:
    return not text.replace(delimiter, "").replace(quote, "").strip()


def _blank_mask(columns: list[pa.Array], n: int) -> np.ndarray:
    """Rows whose every field is empty or whitespace (blank lines)."""
    mask = np.ones(n, dtype=bool)
    for col in columns:
        if not mask.any():
            break
        mask &= pc.equal(pc.binary_length(pc.utf8_trim_whitespace(col)), 0).to_numpy(zero_copy_only=False)
    return mask


def _rebatched(batches: Iterator[RawBatch], batch_bytes: int) -> Iterator[RawBatch]:
    """Join consecutive batches until they hold about batch_bytes of text."""
    pending: list[RawBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += sum(c.nbytes for c in batch.columns) + sum(len(m.text) for m in batch.malformed)
        if size >= batch_bytes:
            yield _concat(pending)
            pending, size = [], 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[RawBatch]) -> RawBatch:
    if len(batches) == 1:
        return batches[0]
    width = len(batches[0].columns)
    columns = [pa.concat_arrays([b.columns[i] for b in batches]) for i in range(width)]
    fallback = None
    if any(b.fallback is not None for b in batches):
        fallback = np.concatenate(
            [b.fallback if b.fallback is not None else np.zeros(b.num_rows, bool) for b in batches]
        )
    return RawBatch(
        columns,
        np.concatenate([b.lines for b in batches]),
        [m for b in batches for m in b.malformed],
        fallback,
        batches[-1].records_end,
        sum(b.blank_lines for b in batches),
    )


def _to_csv_line(row: list[str], delimiter: str) -> str:
    """The record as CSV text (quoted as needed), without a line end."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerow(row)
    return out.getvalue()[:-2]
