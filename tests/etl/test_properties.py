"""Property tests: generated dirty CSVs through read_csv + clean_batch, and through transform_file.

Each generated file mixes valid rows with every kind of dirt: header aliases in any case with
stray whitespace and in any column order, optional and extra columns, quoted fields with
commas, quotes and newlines, blank lines, CRLF or LF, a missing final newline, rows with the
wrong number of fields, and values drawn from labelled pools of valid and invalid timestamps,
prices, quantities, regions, blanks and null strings (plus free text). The generator knows
where every record starts and what every labelled value must become, so the tests check:

- nothing raises; rows read == clean + rejected + malformed;
- each non-blank record comes out exactly once (clean, rejected or malformed) at its physical
  line, blank lines are counted and never rows;
- every clean row satisfies the contract, and rows made only of labelled values are clean or
  rejected exactly as the labels say, with the expected clean values;
- every rejected row has a reason naming each bad column, a line inside the file, and its
  original values.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.etl.contract.cleaning import SOURCE_LINE, clean_batch
from include.etl.contract.model import load_contract
from include.etl.contract.transform import transform_file
from include.etl.reading import storage
from include.etl.reading.csv_reader import read_csv
from include.etl.settings import DatasetSettings
from tests.helpers import moto_s3

ORDERS = load_contract("orders")
COLUMNS = [c.name for c in ORDERS.columns]
REQUIRED = set(ORDERS.required_columns)
REGIONS = set(ORDERS.column("region").allowed)
FILLS = {c.name: c.on_blank for c in ORDERS.columns if not c.rejects_blank}
MAX_TOTAL = Decimal(10) ** 12  # total_price is numeric(14,2)
EXTRA_HEADERS = ["notes", "Internal Code", "promo"]

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REJECT = _Sentinel("REJECT")  # the value must reject the row
UNKNOWN = _Sentinel("UNKNOWN")  # free text: only the invariants apply


def _ts(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# Labelled pools: (raw text, value it must become or REJECT).
VALID: dict[str, list[tuple[str, Any]]] = {
    "order_id": [
        ("A-1", "A-1"),
        ("  B 2 ", "B 2"),
        ("Ünï-3", "Ünï-3"),
        ("x,y", "x,y"),
        ('q"uote', 'q"uote'),
        ("multi\nline", "multi line"),
    ],
    "order_ts": [
        ("2026-01-02T03:04:05Z", _ts(2026, 1, 2, 3, 4, 5)),
        ("2026-01-02T03:04:05.250Z", _ts(2026, 1, 2, 3, 4, 5, 250_000)),
        ("2026-01-02T01:00:00+05:30", _ts(2026, 1, 1, 19, 30)),
        ("2026-01-01T22:00:00-05:00", _ts(2026, 1, 2, 3)),
        ("2026-01-02 03:04:05", _ts(2026, 1, 2, 3, 4, 5)),
        ("2026-01-02 03:04", _ts(2026, 1, 2, 3, 4)),
        ("2026-01-02T03:04:05", _ts(2026, 1, 2, 3, 4, 5)),
        ("2026-01-02", _ts(2026, 1, 2)),
        (" 2026-01-02 ", _ts(2026, 1, 2)),
        ("01/02/2026", _ts(2026, 1, 2)),
        ("01/02/2026 13:45", _ts(2026, 1, 2, 13, 45)),
        ("12/31/2026 13:45:59", _ts(2026, 12, 31, 13, 45, 59)),
        ("1970-01-01", _ts(1970, 1, 1)),
        ("2100-01-01", _ts(2100, 1, 1)),
    ],
    "customer_id": [
        ("C1", "C1"),
        ("  C  2 ", "C 2"),
        ("Zoë", "Zoë"),
        ("", "guest"),
        ("   ", "guest"),
        ("NULL", "guest"),
        ("N/A", "guest"),
        ("None", "guest"),
        ("-", "guest"),
    ],
    "product_name": [
        ("Pen", "Pen"),
        ("  Wireless   Mouse ", "Wireless Mouse"),
        ("Webcam, 1080p", "Webcam, 1080p"),
        ('The "Best" Pen', 'The "Best" Pen'),
        ("Multi\nline", "Multi line"),
        ("Multi\r\nline", "Multi line"),
        ("Desk\tLamp", "Desk Lamp"),
        ("Café Crème", "Café Crème"),
    ],
    "category": [
        ("Electronics", "Electronics"),
        (" electronics ", "Electronics"),
        ("HOME & GARDEN", "Home & Garden"),
        ("home  &  garden", "Home & Garden"),
        ("kitchen stuff", "Kitchen Stuff"),
        ("books", "Books"),
        ("", "Uncategorized"),
        ("null", "Uncategorized"),
        ("NA", "Uncategorized"),
    ],
    "quantity": [
        ("1", 1),
        ("3", 3),
        (" 4 ", 4),
        ("+2", 2),
        ("3.0", 3),
        ("007", 7),
        ("2147483647", 2147483647),
    ],
    "unit_price": [
        ("1.50", Decimal("1.50")),
        # One currency per file (the orders contract names none: a file's first one is its prices'); the mix
        # of currencies in one file is tested in test_cleaning and the mutation oracle.
        ("$12.50", Decimal("12.50")),
        ("USD 3.5", Decimal("3.50")),
        ("$1,234.50", Decimal("1234.50")),
        ("12.50\u00a0USD", Decimal("12.50")),
        ("1,234.50", Decimal("1234.50")),
        ("0", Decimal("0.00")),
        ("1.2300", Decimal("1.23")),
        ("9999999999.99", Decimal("9999999999.99")),
        ("00001.50", Decimal("1.50")),
    ],
    "region": [
        ("North", "North"),
        (" south ", "South"),
        ("EAST", "East"),
        ("west", "West"),
        ("Central", "Central"),
        ("\u00a0West\u3000", "West"),
    ],
}
INVALID: dict[str, list[str]] = {
    "order_id": ["", "   ", "NULL", "N/A", "-"],
    "order_ts": [
        "31/12/2026",
        "2026-02-30",
        "yesterday",
        "1900-01-01",
        "2999-01-01",
        "2026-13-01",
        "2100-01-01T00:00:01",
        "",
        "NULL",
        "null",
    ],
    "customer_id": [],
    "product_name": ["", " ", "null", "NA", "-"],
    "category": [],
    "quantity": ["0", "-1", "2.5", "abc", "", "NULL", "99999999999999999999", "2147483648", "1,00", "1e3"],
    "unit_price": ["3,00", "-5.00", "1.234", "abc", "", "None", "1e30", "1" + "0" * 30, "12,34,567", "10000000000.00"],
    "region": ["Mars", "", "NA", "Nord", "North-East", "-", "n/a"],
}
FREE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"), max_size=12)
EXTRA_VALUES = ["", "gift", "x,y", 'say "hi"', "two\nlines", "  "]


@dataclass(frozen=True)
class Record:
    """One generated record: its fields, the labelled expectations of a data row, and for
    blank lines the text written verbatim."""

    fields: list[str]
    expected: dict[str, Any] = field(default_factory=dict)  # column -> value | REJECT | UNKNOWN
    verbatim: str | None = None

    @property
    def blank(self) -> bool:
        return not any(f.strip() for f in self.fields)


@dataclass
class DirtyFile:
    data: bytes
    text: str
    encoding: str
    header: list[str]
    positions: dict[str, int]  # contract column -> header index
    records: dict[int, Record]  # start line -> non-blank record
    blank_lines: int
    total_lines: int
    batch_bytes: int


# --- strategies ---------------------------------------------------------------------------


@st.composite
def _header_cell(draw: st.DrawFn, column: str) -> str:
    spellings = [column, *ORDERS.column(column).aliases] if column in COLUMNS else [column]
    name = draw(st.sampled_from(spellings))
    name = draw(st.sampled_from([str.lower, str.upper, str.title, str]))(name)
    if draw(st.booleans()):
        name = name.replace("_", " ")
    pad = st.sampled_from(["", " ", "  ", "\t"])
    return draw(pad) + name + draw(pad)


@st.composite
def _value(draw: st.DrawFn, column: str) -> tuple[str, Any]:
    choices = ["valid"] * 5 + (["invalid"] if INVALID[column] else [])
    if column in ("product_name", "customer_id", "order_id"):
        choices.append("free")
    kind = draw(st.sampled_from(choices))
    if kind == "valid":
        return draw(st.sampled_from(VALID[column]))
    if kind == "invalid":
        return draw(st.sampled_from(INVALID[column])), REJECT
    return draw(FREE_TEXT), UNKNOWN


@st.composite
def _data_record(draw: st.DrawFn, names: list[str]) -> Record:
    fields: list[str] = []
    expected: dict[str, Any] = {}
    for name in names:
        if name in COLUMNS:
            raw, value = draw(_value(name))
            expected[name] = value
        else:
            raw = draw(st.sampled_from(EXTRA_VALUES))
        fields.append(raw)
    return Record(fields, expected)


# Structural dirt per file: none (pyarrow reads it), only blank rows with every field
# (pyarrow still reads it and must drop them), or any (the csv module re-reads it).
RECORD_KINDS = {
    "none": ["data"],
    "full-width-blanks": ["data"] * 4 + ["full-width-blank"],
    "any": ["data"] * 6 + ["short", "long", "blank", "full-width-blank"],
}


@st.composite
def _record(draw: st.DrawFn, names: list[str], dirt: str) -> Record:
    kind = draw(st.sampled_from(RECORD_KINDS[dirt]))
    commas = "," * (len(names) - 1)
    if kind in ("blank", "full-width-blank"):
        pool = ["", "  ", "\t ", '""', ",,", ' , ,"  "'] if kind == "blank" else []
        pool += [commas, " " + commas, "\u00a0" + commas, '""' + commas, commas + "\t"]
        text = draw(st.sampled_from(pool))
        return Record(next(csv.reader([text]), []), verbatim=text)
    record = draw(_data_record(names))
    if kind == "short":
        return Record(record.fields[: draw(st.integers(1, len(names) - 1))])
    if kind == "long":
        return Record(record.fields + draw(st.lists(st.sampled_from(EXTRA_VALUES), min_size=1, max_size=3)))
    return record


def _field_text(value: str, quote: bool) -> str:
    if quote or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _valid_utf8_beyond_ascii(raw: bytes) -> bool:
    if raw.isascii():
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _fallback_rows(f: DirtyFile) -> int:
    """Rows of the right width whose bytes are not all ASCII, when the file is cp1252."""
    if f.encoding != "cp1252":
        return 0
    width = len(f.header)
    return sum(1 for r in f.records.values() if len(r.fields) == width and not "".join(r.fields).isascii())


@st.composite
def dirty_files(draw: st.DrawFn, max_rows: int = 25) -> DirtyFile:
    optional = [c for c in COLUMNS if c not in REQUIRED]
    names = [c for c in COLUMNS if c not in optional or draw(st.booleans())]
    names += draw(st.lists(st.sampled_from(EXTRA_HEADERS), max_size=2, unique=True))
    names = list(draw(st.permutations(names)))
    header = [draw(_header_cell(n)) for n in names]
    dirt = draw(st.sampled_from(sorted(RECORD_KINDS)))
    records = draw(st.lists(_record(names, dirt), max_size=max_rows))
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    final_newline = draw(st.booleans())
    quote_all = draw(st.booleans())

    lines = [
        r.verbatim
        if r.verbatim is not None
        else ",".join(_field_text(v, quote_all or draw(st.booleans())) for v in r.fields)
        for r in records
    ]
    if not final_newline and lines and lines[-1] == "":
        records, lines = records[:-1], lines[:-1]  # an empty last line without a line end does not exist

    text = ",".join(_field_text(h, quote_all) for h in header)
    by_line: dict[int, Record] = {}
    blank = 0
    for record, line in zip(records, lines, strict=True):
        text += terminator
        start = text.count("\n") + 1
        text += line
        if record.blank:
            blank += 1
        else:
            by_line[start] = record
    if final_newline:
        text += terminator
    total_lines = text.count("\n") + (0 if text.endswith("\n") else 1)

    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]))
    data = text.encode("utf-8-sig" if encoding == "utf-8-sig" else "utf-8")
    if encoding == "cp1252":
        try:
            data = text.encode("cp1252")
            data.decode("utf-8")
        except UnicodeEncodeError:  # not representable in cp1252
            encoding, data = "utf-8", text.encode("utf-8")
        except UnicodeDecodeError:  # a real cp1252 file, invalid as UTF-8
            if any(_valid_utf8_beyond_ascii(f.encode("cp1252")) for r in records for f in r.fields):
                # A value whose cp1252 bytes are also valid UTF-8 ("Ã©") is read as UTF-8, by design.
                encoding, data = "utf-8", text.encode("utf-8")
        else:  # also valid UTF-8 (e.g. ASCII): it is read as UTF-8
            encoding, data = "utf-8", text.encode("utf-8")
    batch_bytes = draw(st.sampled_from([256, 4096, 1 << 20]))
    return DirtyFile(
        data=data,
        text=text,
        encoding="utf-8" if encoding == "utf-8-sig" else encoding,
        header=header,
        positions={n: i for i, n in enumerate(names) if n in COLUMNS},
        records=by_line,
        blank_lines=blank,
        total_lines=total_lines,
        batch_bytes=batch_bytes,
    )


# --- what every outcome must satisfy ------------------------------------------------------


def _assert_meets_contract(row: dict[str, Any]) -> None:
    """A clean row as the contract promises it."""
    quantity, price = row["quantity"], row["unit_price"]
    assert isinstance(quantity, int) and 1 <= quantity <= 2**31 - 1
    assert isinstance(price, Decimal) and price >= 0 and price.as_tuple().exponent == -2
    assert row["total_price"] == quantity * price  # exactly, as Decimal
    assert row["region"] in REGIONS
    for name in ("order_id", "product_name", "category", "customer_id"):
        value = row[name]
        assert value, name
        assert value == value.strip() and "  " not in value and "\n" not in value, (name, value)
    ts = row["order_ts"]
    assert ts.utcoffset().total_seconds() == 0
    assert _ts(1970, 1, 1) <= ts <= _ts(2100, 1, 1)
    assert row["order_date"] == ts.astimezone(UTC).date()


def _expected_outcome(record: Record) -> tuple[str, dict[str, Any]]:
    """('clean', values) | ('rejected', {bad columns}) | ('unknown', {}) from the labels."""
    expected = {c: FILLS[c] for c in COLUMNS if c not in record.expected}
    expected.update(record.expected)
    bad = {c for c, v in expected.items() if v is REJECT}
    if bad:
        return "rejected", dict.fromkeys(bad)
    if any(v is UNKNOWN for v in expected.values()):
        return "unknown", {}
    total = expected["quantity"] * expected["unit_price"]
    if total >= MAX_TOTAL:
        return "rejected", {"total_price": None}
    expected["total_price"] = total
    expected["order_date"] = expected["order_ts"].date()
    return "clean", expected


def _check_outcome(
    f: DirtyFile,
    clean_rows: list[dict[str, Any]],
    rejected_rows: list[tuple[int, str, list[str]]],
    malformed: list[tuple[int, str, str]],
) -> None:
    """Check one file's clean, rejected and malformed rows against what was generated."""
    width = len(f.header)
    # Each non-blank record exactly once, at its physical line.
    lines = [r[SOURCE_LINE] for r in clean_rows] + [r[0] for r in rejected_rows] + [m[0] for m in malformed]
    assert sorted(lines) == sorted(f.records)
    assert all(1 <= line <= f.total_lines for line in lines)

    for line, text, reason in malformed:
        fields = f.records[line].fields
        assert len(fields) != width
        assert reason == f"expected {width} fields, found {len(fields)}"
        assert next(csv.reader(io.StringIO(text, newline=""))) == fields

    outcome = {line: _expected_outcome(r) for line, r in f.records.items() if len(r.fields) == width}
    for line, reason, values in rejected_rows:
        assert reason
        assert values == f.records[line].fields  # original values, untouched
        status, bad = outcome[line]
        assert status != "clean", (line, reason)
        for column in bad:
            assert column in reason, (column, reason)
    for row in clean_rows:
        _assert_meets_contract(row)
        status, expected = outcome[row[SOURCE_LINE]]
        assert status != "rejected", (row[SOURCE_LINE], row)
        if status == "clean":
            assert {k: row[k] for k in expected} == expected


def _read_and_clean(
    f: DirtyFile,
) -> tuple[Any, list[dict[str, Any]], list[tuple[int, str, list[str]]], list[tuple[int, str, str]]]:
    stream = read_csv(lambda: io.BytesIO(f.data), ORDERS.csv, f.batch_bytes)
    mapping = ORDERS.map_headers(stream.header)
    clean_rows: list[dict[str, Any]] = []
    rejected_rows: list[tuple[int, str, list[str]]] = []
    malformed: list[tuple[int, str, str]] = []
    rows_read = 0
    for batch in stream.batches:
        rows_read += batch.num_rows
        malformed += [(m.line, m.text, m.reason) for m in batch.malformed]
        out = clean_batch(batch, stream.header, mapping, ORDERS, "raw/orders/dt=2026-01-02/prop.csv")
        clean_rows += out.clean.to_pylist()
        columns = [c.to_pylist() for c in out.rejected.columns]
        for i in range(out.rejected.num_rows):
            rejected_rows.append((columns[0][i], columns[1][i], [c[i] for c in columns[3:]]))
    assert rows_read == len(clean_rows) + len(rejected_rows)
    return stream, clean_rows, rejected_rows, malformed


# --- the properties -----------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(f=dirty_files())
def test_read_and_clean_account_for_every_record(f: DirtyFile) -> None:
    stream, clean_rows, rejected_rows, malformed = _read_and_clean(f)

    assert stream.header == f.header
    assert stream.encoding == "utf-8"
    assert stream.stats.fallback_rows == _fallback_rows(f)
    mapping = ORDERS.map_headers(stream.header)
    assert mapping.missing == ()
    assert mapping.index_of == f.positions
    assert stream.stats.blank_lines == f.blank_lines
    _check_outcome(f, clean_rows, rejected_rows, malformed)


@PROPERTY_SETTINGS
@given(f=dirty_files(max_rows=8))
def test_fast_and_exact_paths_agree(f: DirtyFile) -> None:
    """The same rows whether pyarrow reads the file or a malformed last line sends it to the csv module."""
    _, clean_fast, rejected_fast, malformed_fast = _read_and_clean(f)
    sep = b"" if f.data.endswith(b"\n") else b"\n"
    # A malformed last row that is not valid UTF-8 sends the file to the exact path (its byte é
    # is decoded with the fallback, cp1252).
    forced = DirtyFile(**{**f.__dict__, "data": f.data + sep + b"x\xe9\n"})
    stream, clean_exact, rejected_exact, malformed_exact = _read_and_clean(forced)
    assert stream.stats.path == "exact"
    assert malformed_exact[-1][1:] == ("xé", f"expected {len(f.header)} fields, found 1")
    assert clean_exact == clean_fast
    assert rejected_exact == rejected_fast
    assert malformed_exact[:-1] == malformed_fast


# transform_file end to end: fewer examples, each one a real (moto) upload, transform and read-back.

_SETTINGS = DatasetSettings(dataset="orders", raw_bucket="raw", processed_bucket="processed")
_names = (f"prop_{i}.csv" for i in itertools.count())


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with moto_s3(_SETTINGS.raw_bucket, _SETTINGS.processed_bucket) as client:
        yield client


@settings(PROPERTY_SETTINGS, max_examples=15)
@given(f=dirty_files(max_rows=15))
def test_transform_file_loads_or_quarantines_every_record(s3: Any, f: DirtyFile) -> None:
    prefix = storage.partition_prefix(_SETTINGS.raw_prefix, "2026-01-02")
    key = prefix + next(_names)
    s3.put_object(Bucket=_SETTINGS.raw_bucket, Key=key, Body=f.data)
    obj = next(o for o in storage.list_partition(s3, _SETTINGS.raw_bucket, prefix)[0] if o.key == key)
    settings_ = _SETTINGS.model_copy(update={"batch_bytes": f.batch_bytes})

    result = transform_file(s3, obj, ORDERS, settings_)

    assert result.status == "processed"
    assert result.rows_read == result.rows_clean + result.rows_rejected == len(f.records)
    assert result.blank_lines == f.blank_lines
    assert result.encoding == "utf-8"
    fallback = _fallback_rows(f)
    assert result.reinterpreted == ({"rows decoded as cp1252": fallback} if fallback else {})
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket="processed", Key=result.processed_key)["Body"].read()))
    clean_rows = table.to_pylist()
    assert len(clean_rows) == result.rows_clean
    rejected_rows: list[tuple[int, str, list[str]]] = []
    malformed: list[tuple[int, str, str]] = []
    if result.rejected_key:
        body = s3.get_object(Bucket="processed", Key=result.rejected_key)["Body"].read().decode("utf-8")
        rows = list(csv.reader(io.StringIO(body, newline="")))
        assert rows[0][:3] == ["source_line", "reject_reason", "raw_record"]
        for row in rows[1:]:
            if row[2]:
                malformed.append((int(row[0]), row[2], row[1]))
            else:
                rejected_rows.append((int(row[0]), row[1], row[3:]))
    assert len(rejected_rows) + len(malformed) == result.rows_rejected
    _check_outcome(f, clean_rows, rejected_rows, malformed)
