"""read_csv: encodings, dialects, quoting, blank and malformed lines, exact line numbers."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass

import pytest

from include.etl.contract.model import CsvDialect
from include.etl.reading.csv_reader import CsvFormatError, MalformedRow, ReadStats, open_raw, read_csv

DIALECT = CsvDialect(delimiter=",", encoding="utf-8", fallback_encoding="cp1252", null_values=("",))


@dataclass
class Read:
    header: list[str]
    encoding: str
    rows: list[list[str]]
    lines: list[int]
    malformed: list[MalformedRow]
    blank_lines: int
    batches: int
    stats: ReadStats
    fallback_lines: list[int]


class _HttpLikeBody:
    """What botocore hands back over HTTP: read(n) only, and `closed` once the end is reached
    (urllib3 releases the connection), which io.TextIOWrapper takes for a closed file."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        chunk = self._buf.read(n)
        if not chunk or (n < 0 or len(chunk) < n):
            self.closed = True
        return chunk

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> _HttpLikeBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _opener(data: bytes):
    return lambda: _HttpLikeBody(data)


def _read(data: bytes, dialect: CsvDialect = DIALECT, batch_bytes: int = 16 << 20, gzipped: bool = False) -> Read:
    opener = open_raw(_opener(gzip.compress(data, mtime=0) if gzipped else data), gzipped)
    stream = read_csv(opener, dialect, batch_bytes)
    batches = list(stream.batches)
    rows: list[list[str]] = []
    lines: list[int] = []
    malformed: list[MalformedRow] = []
    fallback: list[int] = []
    for b in batches:
        assert len(b.columns) == len(stream.header)
        rows += [[c[i].as_py() for c in b.columns] for i in range(b.num_rows)]
        lines += [int(n) for n in b.lines]
        malformed += b.malformed
        if b.fallback is not None:
            fallback += [int(n) for n in b.lines[b.fallback]]
    return Read(
        stream.header,
        stream.encoding,
        rows,
        lines,
        malformed,
        stream.stats.blank_lines,
        len(batches),
        stream.stats,
        fallback,
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"a,b\n1,2\n3,4\n", id="LF"),
        pytest.param(b"a,b\r\n1,2\r\n3,4\r\n", id="CRLF"),
        pytest.param(b"a,b\n1,2\n3,4", id="LF-no-final-newline"),
        pytest.param(b"a,b\r\n1,2\r\n3,4", id="CRLF-no-final-newline"),
        pytest.param(b"\xef\xbb\xbfa,b\n1,2\n3,4\n", id="UTF-8-BOM"),
        pytest.param(b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4", id="BOM-CRLF-no-final-newline"),
    ],
)
def test_line_endings_and_bom(data: bytes) -> None:
    read = _read(data)
    assert read.header == ["a", "b"]
    assert read.encoding == "utf-8"
    assert read.rows == [["1", "2"], ["3", "4"]]
    assert read.lines == [2, 3]
    assert read.malformed == []
    assert read.blank_lines == 0


def test_a_cp1252_row_is_decoded_with_the_fallback_and_counted() -> None:
    data = "name,city\ncafé,Zürich\n".encode("cp1252")
    read = _read(data)
    assert read.encoding == "utf-8"
    assert read.rows == [["café", "Zürich"]]
    assert read.stats.fallback_rows == 1
    assert read.fallback_lines == [2]


def test_one_cp1252_row_leaves_the_other_utf8_rows_alone() -> None:
    """No mojibake: only the row that is not UTF-8 goes through the fallback."""
    data = b"name,city\n" + "Café,Zürich\n".encode() + b"Jalape\xf1o,Quer\xe9taro\n" + "Crème,Brûlée\n".encode()
    read = _read(data)
    assert read.rows == [["Café", "Zürich"], ["Jalapeño", "Querétaro"], ["Crème", "Brûlée"]]
    assert read.fallback_lines == [3]
    assert read.stats.fallback_rows == 1


def test_valid_utf8_inside_a_value_stays_utf8_next_to_a_stray_byte() -> None:
    """Only the invalid byte is decoded with the fallback; 'ā' (C4 81) is not blamed for its 0x81."""
    data = b"name,n\n" + "Tāne ".encode() + b"\xf1,1\n"
    read = _read(data)
    assert read.rows == [["Tāne ñ", "1"]]
    assert read.malformed == []


def test_a_byte_valid_in_neither_encoding_rejects_its_row_at_the_right_position() -> None:
    data = b"name,n\n" + "Tāne".encode() + b"\x81x,1\nok,2\n"
    read = _read(data)
    assert read.rows == [["ok", "2"]]
    assert read.malformed == [
        MalformedRow(
            2,
            "Tāne\\x81x,1",
            "cannot decode the row: field 1 (name): byte 0x81 at byte 6 is not valid utf-8 nor cp1252",
        )
    ]


def test_utf8_accents_stay_utf8() -> None:
    read = _read("name,city\ncafé,Zürich\n".encode())
    assert read.encoding == "utf-8"
    assert read.rows == [["café", "Zürich"]]


def test_cp1252_byte_beyond_the_header_probe_is_decoded_in_its_row_only() -> None:
    body = b"".join(b"%06d,x\n" % i for i in range(10_000))  # ~90 KB, more than the 64 KB probe
    data = b"a,b\n" + body + "café,1\n".encode("cp1252")
    read = _read(data, batch_bytes=1 << 14)
    assert read.encoding == "utf-8"
    assert len(read.rows) == 10_001
    assert read.rows[-1] == ["café", "1"]
    assert read.lines == list(range(2, 10_003))
    assert read.fallback_lines == [10_002]
    assert read.stats.path == "fast"


def test_invalid_utf8_without_fallback_rejects_the_row() -> None:
    dialect = CsvDialect(encoding="utf-8", fallback_encoding=None)
    read = _read("a,b\ncafé,1\nok,2\n".encode("cp1252"), dialect)
    assert read.rows == [["ok", "2"]]
    assert [(m.line, m.reason) for m in read.malformed] == [
        (2, "cannot decode the row: field 1 (a): byte 0xe9 at byte 4 is not valid utf-8 (no fallback_encoding)")
    ]


def test_an_undecodable_header_rejects_the_file() -> None:
    with pytest.raises(CsvFormatError, match=r"cannot decode the header: byte 0x81"):
        _read(b"a\x81,b\n1,2\n")


@pytest.mark.parametrize(
    ("data", "delimiter", "header", "rows"),
    [
        (b"a;b\n1,5;2\n", ";", ["a", "b"], [["1,5", "2"]]),
        (b"a|b|c\nx|y|z\n", "|", ["a", "b", "c"], [["x", "y", "z"]]),
        (b"a\tb\n1\t2\n", "\t", ["a", "b"], [["1", "2"]]),
    ],
)
def test_other_delimiters(data: bytes, delimiter: str, header: list[str], rows: list[list[str]]) -> None:
    read = _read(data, CsvDialect(delimiter=delimiter))
    assert read.header == header
    assert read.rows == rows
    assert read.lines == [2]


def test_quoted_fields_commas_doubled_quotes_and_newlines() -> None:
    data = b'a,b\n"x, y","say ""hi"""\n"multi\nline",2\n5,6\n"three\nline\nvalue",7\n8,9\n'
    read = _read(data)
    assert read.rows == [
        ["x, y", 'say "hi"'],
        ["multi\nline", "2"],
        ["5", "6"],
        ["three\nline\nvalue", "7"],
        ["8", "9"],
    ]
    assert read.lines == [2, 3, 5, 6, 9]
    assert read.malformed == []


def test_quoted_header_with_newline_shifts_line_numbers() -> None:
    read = _read(b'"first\ncolumn",b\n1,2\n3,4\n')
    assert read.header == ["first\ncolumn", "b"]
    assert read.rows == [["1", "2"], ["3", "4"]]
    assert read.lines == [3, 4]


@pytest.mark.parametrize(
    ("data", "lines", "blank"),
    [
        pytest.param(b"a,b\n1,2\n\n3,4\n\n\n5,6\n", [2, 4, 7], 3, id="LF"),
        pytest.param(b"a,b\r\n1,2\r\n\r\n3,4\r\n", [2, 4], 1, id="CRLF"),
        pytest.param(b"a,b\n\n1,2\n", [3], 1, id="after-header"),
        pytest.param(b"a,b\n1,2\n\n\n", [2], 2, id="trailing"),
        pytest.param(b"a,b\n1,2\n,\n3,4\n", [2, 4], 1, id="only-delimiters"),
    ],
)
def test_blank_lines_are_counted_not_returned(data: bytes, lines: list[int], blank: int) -> None:
    read = _read(data)
    assert read.lines == lines
    assert all(any(v for v in row) for row in read.rows)
    assert read.blank_lines == blank


def test_malformed_rows_reported_with_exact_lines() -> None:
    data = b"a,b\n1,2\n1,2,3\n4\n5,6\n"
    read = _read(data)
    assert read.rows == [["1", "2"], ["5", "6"]]
    assert read.lines == [2, 5]
    assert read.malformed == [
        MalformedRow(3, "1,2,3", "expected 2 fields, found 3"),
        MalformedRow(4, "4", "expected 2 fields, found 1"),
    ]


def test_malformed_rows_after_multiline_field_keep_exact_lines() -> None:
    data = b'a,b\n"m\nl",2\n1,2,3\n7,8\n\n"p\nq\nr"\n9,10\n'
    read = _read(data)
    assert read.rows == [["m\nl", "2"], ["7", "8"], ["9", "10"]]
    assert read.lines == [2, 5, 10]
    assert [(m.line, m.reason) for m in read.malformed] == [
        (4, "expected 2 fields, found 3"),
        (7, "expected 2 fields, found 1"),
    ]
    assert read.blank_lines == 1


@pytest.mark.parametrize(
    ("data", "text"),
    [
        pytest.param(b'a,b\n"x, y",2,"z"\n1,2\n', '"x, y",2,"z"', id="comma"),
        pytest.param(b'a,b\n"say ""hi""",2,3\n', '"say ""hi""",2,3', id="quote"),
        pytest.param(b'a,b\n1,"x\ny",3\n', '1,"x\ny",3', id="newline"),
    ],
)
def test_malformed_row_text_is_a_faithful_csv_record(data: bytes, text: str) -> None:
    read = _read(data)
    assert [m.text for m in read.malformed] == [text]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n\n\t\r\n", id="whitespace-only"),
        pytest.param(b"\xef\xbb\xbf", id="BOM-only"),
        pytest.param(b"\xef\xbb\xbf\r\n", id="BOM-newline"),
        pytest.param(b",,\n \t\n", id="blank-header"),
    ],
)
def test_no_header_raises(data: bytes) -> None:
    with pytest.raises(CsvFormatError, match="empty file: no header row"):
        read_csv(_opener(data), DIALECT, 1 << 20)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"a,b\n", id="LF"),
        pytest.param(b"a,b\r\n", id="CRLF"),
        pytest.param(b"a,b", id="no-final-newline"),
    ],
)
def test_header_only_gives_zero_rows(data: bytes) -> None:
    read = _read(data)
    assert read.header == ["a", "b"]
    assert read.rows == []
    assert read.malformed == []


def test_gzip_is_decompressed() -> None:
    read = _read(b"a,b\r\n1,2\r\n\r\n3,4\r\n", gzipped=True)
    assert read.header == ["a", "b"]
    assert read.rows == [["1", "2"], ["3", "4"]]
    assert read.lines == [2, 4]


def test_open_raw_without_gzip_returns_the_opener() -> None:
    opener = _opener(b"a\n")
    assert open_raw(opener, gzipped=False) is opener


def _numbered(n: int, multiline_every: int = 0, blank_every: int = 0) -> tuple[bytes, list[int]]:
    """A file of n records, some spanning two lines or blank; and the expected row lines."""
    out, lines, line = [b"id,v\n"], [], 2
    for i in range(n):
        if blank_every and i % blank_every == 0:
            out.append(b"\n")
            line += 1
        elif multiline_every and i % multiline_every == 0:
            out.append(b'%d,"two\nlines"\n' % i)
            lines.append(line)
            line += 2
        else:
            out.append(b"%d,v%d\n" % (i, i))
            lines.append(line)
            line += 1
    return b"".join(out), lines


@pytest.mark.parametrize(
    ("multiline_every", "blank_every"),
    [(0, 0), (7, 0), (0, 5), (3, 11)],
)
def test_small_batches_keep_exact_line_numbers(multiline_every: int, blank_every: int) -> None:
    data, expected = _numbered(60, multiline_every, blank_every)
    read = _read(data, batch_bytes=64)
    assert read.batches > 1
    assert read.lines == expected
    assert [r[0] for r in read.rows] == [str(i) for i in range(60) if not (blank_every and i % blank_every == 0)]
    assert read.blank_lines == (len(range(0, 60, blank_every)) if blank_every else 0)


def test_small_batches_with_late_malformed_row_keep_every_row_once() -> None:
    records = [b"%d,%d\n" % (i, i) for i in range(40)]
    records[3] = b"\n"
    records[30] = b"1,2,3\n"
    read = _read(b"a,b\n" + b"".join(records), batch_bytes=64)
    expected_lines = [i + 2 for i in range(40) if i not in (3, 30)]
    assert read.lines == expected_lines
    assert [r[0] for r in read.rows] == [str(i) for i in range(40) if i not in (3, 30)]
    assert read.malformed == [MalformedRow(32, "1,2,3", "expected 2 fields, found 3")]
    assert read.blank_lines == 1


def test_values_are_not_trimmed_or_nulled_by_the_reader() -> None:
    read = _read(b"a,b,c\n  x  ,NULL,\n")
    assert read.rows == [["  x  ", "NULL", ""]]


def test_batches_hold_about_batch_bytes_though_read_in_smaller_blocks() -> None:
    """pyarrow parses 1 MiB blocks (bounded read-ahead); they are joined back to batch_bytes."""
    data, expected = _numbered(300_000, 0, 0)
    read = _read(data, batch_bytes=2 << 20)
    assert 1 < read.batches <= len(data) // (2 << 20) + 1
    assert read.lines == expected


def test_malformed_rows_are_rejected_in_place_without_reading_the_file_again() -> None:
    data = b"a,b\n1,2\n" + b"x,y\n" * 1000 + b"1,2,3\n" + b"x,y\n" * 1000 + b"4\n5,6\n"
    read = _read(data, batch_bytes=1 << 12)
    assert read.stats.path == "fast"
    assert [(m.line, m.text) for m in read.malformed] == [(1003, "1,2,3"), (2004, "4")]
    assert len(read.rows) == 2002
    assert read.lines == [2, *range(3, 1003), *range(1004, 2004), 2005]


def test_a_malformed_row_that_is_not_utf8_sends_the_rest_to_the_exact_path() -> None:
    data = b"a,b\n1,2\nJalape\xf1o,2,3\n" + "Café,4\n".encode() + b"\xf1,5\n"
    read = _read(data)
    assert read.stats.path == "exact"
    assert read.rows == [["1", "2"], ["Café", "4"], ["ñ", "5"]]
    assert read.lines == [2, 4, 5]
    assert read.malformed == [MalformedRow(3, "Jalapeño,2,3", "expected 2 fields, found 3")]
    assert read.fallback_lines == [5]


def test_a_cp1252_contract_with_an_undefined_byte_rejects_only_that_row() -> None:
    dialect = CsvDialect(encoding="cp1252", fallback_encoding=None)
    read = _read(b"a,b\ncaf\xe9,1\nx\x81y,2\nok,3\n", dialect)
    assert read.rows == [["café", "1"], ["ok", "3"]]
    assert [(m.line, m.text) for m in read.malformed] == [(3, "x\\x81y,2")]
    assert "byte 0x81 at byte 2 is not valid cp1252" in read.malformed[0].reason


def test_utf16_with_a_byte_order_mark_is_read_as_utf16() -> None:
    data = "name,city\r\ncafé,Zürich\r\n".encode("utf-16")
    read = _read(data)
    assert read.encoding == "utf-16"
    assert read.header == ["name", "city"]
    assert read.rows == [["café", "Zürich"]]
    assert read.lines == [2]


@pytest.mark.parametrize(
    ("data", "rows", "lines"),
    [
        pytest.param(b"a,b\r1,2\r3,4\r", [["1", "2"], ["3", "4"]], [2, 3], id="lone-CR"),
        pytest.param(b'a,b\n"x\ry",2\n3,4\n', [["x\ry", "2"], ["3", "4"]], [2, 4], id="CR-in-quotes"),
        pytest.param(b'a,b\r\n"x\r\ny\rz",2\r\n3,4\r\n', [["x\r\ny\rz", "2"], ["3", "4"]], [2, 5], id="mixed"),
    ],
)
def test_a_lone_cr_ends_a_line_as_the_exact_reader_counts_it(data: bytes, rows: list, lines: list[int]) -> None:
    read = _read(data)
    assert read.rows == rows
    assert read.lines == lines


def test_malformed_row_after_a_lone_cr_keeps_its_line() -> None:
    read = _read(b'a,b\n"x\ry",2\n1,2,3\n')
    assert [m.line for m in read.malformed] == [4]


@pytest.mark.parametrize("first_line", [b"sep=;", b'"sep=;"', b"sep=;  "])
def test_excel_sep_line_names_the_delimiter_and_is_skipped(first_line: bytes) -> None:
    read = _read(first_line + b"\r\na;b\r\n1,5;2\r\n", CsvDialect(delimiter=","))
    assert read.header == ["a", "b"]
    assert read.rows == [["1,5", "2"]]
    assert read.lines == [3]


@pytest.mark.parametrize("size", [200_000, 3 << 20])
def test_long_fields_are_read_next_to_a_malformed_row(size: int) -> None:
    long = "z" * size
    data = f'a,b\n1,2\n"{long}",3\nbad\n4,5\n'.encode()
    read = _read(data, batch_bytes=1 << 20)
    assert [r[0] for r in read.rows] == ["1", long, "4"]
    assert read.lines == [2, 3, 5]
    assert [m.line for m in read.malformed] == [4]


def test_a_row_longer_than_the_largest_block_continues_on_the_exact_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from include.etl.reading import csv_reader

    monkeypatch.setattr(csv_reader, "_MAX_BLOCK_BYTES", 1 << 20)
    long = "y" * (3 << 20)
    data = f'a,b\n1,2\n"{long}",3\nbad\n4,5\n'.encode()
    read = _read(data, batch_bytes=1 << 20)
    assert read.stats.path == "exact"
    assert [r[0] for r in read.rows] == ["1", long, "4"]
    assert read.lines == [2, 3, 5]
    assert [(m.line, m.reason) for m in read.malformed] == [(4, "expected 2 fields, found 1")]


def test_escape_char_reads_backslash_escaped_quotes() -> None:
    dialect = CsvDialect(escape_char="\\", double_quote=False)
    read = _read(b'a,b\n"Monitor 27\\" IPS",2\n', dialect)
    assert read.rows == [['Monitor 27" IPS', "2"]]
