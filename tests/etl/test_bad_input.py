"""Bad input through transform_file: every file of tests/data/bad_input/ against cases.yml.

Each file is uploaded as is to in-process moto S3 and transformed with the orders contract.
Besides the outcome written in cases.yml, every readable file is checked against an
independent parse with Python's csv module: each non-blank record is loaded or rejected
exactly once at its physical line, blank lines are counted, and rejected rows keep their
original values.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from include.etl.contract.model import Contract, load_contract, parse_contract
from include.etl.contract.results import FileResult
from include.etl.contract.schema import output_schema
from include.etl.contract.transform import ZoneKeys, transform_file
from include.etl.reading import storage
from include.etl.settings import DatasetSettings
from tests.helpers import moto_s3

DATA = Path(__file__).resolve().parent.parent / "data" / "bad_input"
CASES: dict[str, Any] = yaml.safe_load((DATA / "cases.yml").read_text(encoding="utf-8"))
SETTINGS = DatasetSettings(dataset="orders", raw_bucket="raw", processed_bucket="processed")
DAY = "2026-01-02"
ORDERS = load_contract("orders")
LINEAGE = ["source_line", "reject_reason", "raw_record"]


def _case_params() -> Iterator[Any]:
    for case in CASES["cases"]:
        dialect = ",".join(f"{k}={v}" for k, v in case.get("csv", {}).items())
        yield pytest.param(case, id=f"{case['name']}[{dialect}]" if dialect else case["name"])


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with moto_s3(SETTINGS.raw_bucket, SETTINGS.processed_bucket) as client:
        yield client


def _contract(case: dict[str, Any]) -> Contract:
    """The orders contract, with the case's CSV dialect changes (validated like a contract file)."""
    dialect = {**case.get("csv", {}), **({"delimiter": case["delimiter"]} if "delimiter" in case else {})}
    if not dialect:
        return ORDERS
    doc = ORDERS.to_document()
    doc["csv"] = {**doc.get("csv", {}), **dialect}
    return parse_contract(doc)


def _put(s3: Any, name: str, body: bytes, day: str = DAY) -> storage.RawObject:
    prefix = storage.partition_prefix(SETTINGS.raw_prefix, day)
    s3.put_object(Bucket=SETTINGS.raw_bucket, Key=prefix + name, Body=body)
    objects, _ = storage.list_partition(s3, SETTINGS.raw_bucket, prefix)
    return next(o for o in objects if o.key == prefix + name)


def _get(s3: Any, key: str) -> bytes:
    return s3.get_object(Bucket=SETTINGS.processed_bucket, Key=key)["Body"].read()


def _keys(s3: Any) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=SETTINGS.processed_bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


# --- an independent reading of the raw file ---------------------------------------------


@dataclass
class Parsed:
    """The raw file as Python's csv module reads it: header, records by start line, blank lines."""

    header: list[str]
    records: dict[int, list[str]]
    blank_lines: int
    delimiter: str = ","


def _field(value: str) -> str:
    """A field read with surrogateescape, as text: UTF-8 where it is, cp1252 where it is not."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "backslashreplace")


def _parse(name: str, body: bytes, encoding: str, contract: Contract) -> Parsed:
    data = gzip.decompress(body) if name.lower().endswith(".gz") else body
    data = data.removeprefix(codecs.BOM_UTF8)
    text = data.decode(encoding, "surrogateescape")
    delimiter, offset = contract.csv.delimiter, 0
    if text.startswith("sep="):  # Excel's line naming the delimiter: not a record
        first, _, text = text.partition("\n")
        delimiter, offset = first.strip().removeprefix("sep=")[:1], 1
    prev_end = offset
    escape = contract.csv.escape_char
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, escapechar=escape, doublequote=not escape)
    header: list[str] | None = None
    records: dict[int, list[str]] = {}
    blank = 0
    for raw_row in reader:
        row = [_field(f) for f in raw_row]
        start, prev_end = prev_end + 1, offset + reader.line_num
        if not any(f.strip() for f in row):
            blank += 1
        elif header is None:
            header = row
        else:
            records[start] = row
    assert header is not None
    return Parsed(header, records, blank, delimiter)


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip())


def _plain(value: Any) -> Any:
    """Parquet values as cases.yml writes them: decimals and dates as strings."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _rejected_csv(s3: Any, key: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(_get(s3, key).decode("utf-8"), newline="")))
    return rows[0], rows[1:]


# --- the cases ----------------------------------------------------------------------------


def _assert_outcome(case: dict[str, Any], result: FileResult) -> None:
    got = {k: getattr(result, k) for k in ("status", "rows_read", "rows_clean", "rows_rejected")}
    assert got == {k: case[k] for k in got}
    for key in ("blank_lines", "encoding", "extra_columns", "reinterpreted", "notes", "warnings"):
        if key in case:
            assert getattr(result, key) == case[key], key
    if "reason" in case:
        assert case["reason"] in (result.reason or "")
    if case["status"] == "processed":
        assert result.reason is None
    else:
        assert result.reason
    # The promise: every row read is loaded or quarantined.
    assert result.rows_read == result.rows_clean + result.rows_rejected


def _assert_zone_objects(s3: Any, case: dict[str, Any], obj: storage.RawObject, result: FileResult) -> pa.Table:
    zone = ZoneKeys(obj.key, SETTINGS)
    processed_key = zone.processed
    rejected_key = zone.rejected_copy if case.get("unreadable") else zone.rejected_rows
    keys = _keys(s3)
    contract = _contract(case)
    if result.status == "processed":
        assert result.processed_key == processed_key
        assert processed_key in keys
        table = pq.read_table(io.BytesIO(_get(s3, processed_key)))
        assert table.schema.remove_metadata() == output_schema(contract)
        assert table.num_rows == result.rows_clean
    else:
        assert result.processed_key is None
        assert processed_key not in keys
        table = output_schema(contract).empty_table()
    if result.rows_rejected or result.reason:
        assert result.rejected_key == rejected_key
        assert rejected_key in keys
        head = s3.head_object(Bucket=SETTINGS.processed_bucket, Key=rejected_key)
        if result.reason:
            assert head["Metadata"]["reject-reason"] == result.reason.encode("ascii", "replace").decode()[:1024]
    else:
        assert result.rejected_key is None
        assert rejected_key not in keys
    return table


@pytest.mark.parametrize("case", _case_params())
def test_bad_input_file(s3: Any, case: dict[str, Any]) -> None:
    body = (DATA / case["name"]).read_bytes()
    contract = _contract(case)
    obj = _put(s3, case["name"], body)

    result = transform_file(s3, obj, contract, SETTINGS)

    _assert_outcome(case, result)
    table = _assert_zone_objects(s3, case, obj, result)
    if case.get("unreadable"):
        # Cannot be read as CSV at all: quarantined byte for byte, nothing read.
        assert (result.rows_read, result.rows_clean, result.rows_rejected) == (0, 0, 0)
        assert _get(s3, result.rejected_key) == body
        return

    parsed = _parse(case["name"], body, result.encoding, contract)
    assert result.blank_lines == parsed.blank_lines
    assert result.rows_read == len(parsed.records)
    clean = table.to_pylist()

    header, rejected = _rejected_csv(s3, result.rejected_key) if result.rejected_key else ([], [])
    if result.rejected_key:
        assert header[:3] == LINEAGE
        assert len(header) == 3 + len(parsed.header)
        # Every column of the rejected CSV can be read by name.
        assert len(set(header)) == len(header), f"duplicate column names: {header}"
        names = Counter(parsed.header)
        for raw_name, out_name in zip(parsed.header, header[3:], strict=True):
            if raw_name and names[raw_name] == 1:
                # A raw column named like a lineage column gets a suffix; the others keep their name.
                assert out_name == (f"{raw_name}_2" if raw_name in LINEAGE else raw_name)
    assert len(rejected) == result.rows_rejected

    # Each non-blank record is loaded or rejected exactly once, at its physical line.
    lines = [row["source_line"] for row in clean] + [int(row[0]) for row in rejected]
    assert sorted(lines) == sorted(parsed.records)
    assert all(row["source_key"] == obj.key for row in clean)

    for row in rejected:
        line, reason, raw_record, values = int(row[0]), row[1], row[2], row[3:]
        assert reason
        record = parsed.records[line]
        if raw_record and reason.startswith(("cannot decode the row", "the quoting breaks")):
            # Undecodable, or quoting that breaks: the raw record is kept, the columns stay empty.
            assert values == [""] * len(parsed.header)
        elif raw_record:
            # Malformed: the record is kept as CSV text, the columns stay empty.
            assert reason.startswith(f"expected {len(parsed.header)} fields, found {len(record)}")
            # (A quote left open at the end of the file keeps the last line end in the reference's field;
            # the raw record is kept without its line end.)
            expected = [*record[:-1], record[-1].rstrip("\r\n")]
            assert next(csv.reader(io.StringIO(raw_record, newline=""), delimiter=parsed.delimiter)) == expected
            assert values == [""] * len(parsed.header)
        else:
            assert values == record

    mapping = contract.map_headers(parsed.header)
    if "order_id" in mapping.index_of:
        for row in clean:
            assert row["order_id"] == _collapse(parsed.records[row["source_line"]][mapping.index_of["order_id"]])

    if "rejected" in case:
        by_line = {int(row[0]): row for row in rejected}
        assert sorted(by_line) == sorted(e["line"] for e in case["rejected"])
        for expected in case["rejected"]:
            row = by_line[expected["line"]]
            assert expected["reason_contains"] in row[1], expected["line"]
            if "raw_record" in expected:
                assert row[2] == expected["raw_record"]
            for name, value in expected.get("values", {}).items():
                assert row[header.index(name)] == value, (expected["line"], name)

    if "clean" in case:
        by_id = {row["order_id"]: row for row in clean}
        for order_id, values in case["clean"].items():
            assert order_id in by_id, order_id
            assert {k: _plain(by_id[order_id][k]) for k in values} == values


def test_non_csv_objects_are_reported_not_listed(s3: Any) -> None:
    day = "2026-02-01"
    prefix = storage.partition_prefix(SETTINGS.raw_prefix, day)
    csv_names = ["files_gzip.csv.gz", "files_upper_case_extension.CSV", "dialect_lf.csv"]
    other_names = [c["name"] for c in CASES["not_csv"]]
    for name in csv_names + other_names:
        s3.put_object(Bucket=SETTINGS.raw_bucket, Key=prefix + name, Body=(DATA / name).read_bytes())
    s3.put_object(Bucket=SETTINGS.raw_bucket, Key=prefix + "subfolder/", Body=b"")

    objects, others = storage.list_partition(s3, SETTINGS.raw_bucket, prefix)

    assert [o.key for o in objects] == sorted(prefix + n for n in csv_names)
    assert [o.key for o in others] == sorted([*(prefix + n for n in other_names), prefix + "subfolder/"])
    assert [o.gzipped for o in objects] == [o.key.endswith(".gz") for o in objects]


# --- a large file in small batches -------------------------------------------------------

LARGE_ROWS = 200_000
HEADER = "order_id,order_ts,customer_id,product_name,category,quantity,unit_price,region"


def _large_file(dirt: str) -> tuple[bytes, list[int], list[int], int]:
    """A ~13 MB CSV: every 4th row has quantity 0; `dirt` near the end forces a re-read.

    Returns the bytes, the lines of clean rows, the lines of rejected rows, and blank lines.
    """
    lines = [HEADER.encode()]
    clean: list[int] = []
    rejected: list[int] = []
    blank = 0
    for i in range(LARGE_ROWS):
        if i == LARGE_ROWS - 5:
            if dirt == "blank-and-malformed":
                lines += [b"", b"bad,row"]
                blank += 1
                rejected.append(len(lines))
            elif dirt == "cp1252":
                lines.append("X1,2026-01-02,C,Café,Books,1,1.00,West".encode("cp1252"))
                clean.append(len(lines))
        lines.append(b"O%d,2026-01-02 00:00:%02d,C%d,Item %d,Books,%d,1.%02d,West" % (i, i % 60, i, i, i % 4, i % 100))
        (rejected if i % 4 == 0 else clean).append(len(lines))
    return b"\n".join(lines) + b"\n", clean, rejected, blank


@pytest.mark.parametrize("dirt", ["none", "blank-and-malformed", "cp1252"])
def test_large_file_in_small_batches(s3: Any, dirt: str) -> None:
    body, clean_lines, rejected_lines, blank = _large_file(dirt)
    settings = SETTINGS.model_copy(update={"batch_bytes": 1 << 20})  # ~13 batches on the fast path
    obj = _put(s3, f"large_{dirt}.csv", body, day="2026-03-01")

    result = transform_file(s3, obj, ORDERS, settings)

    assert result.status == "processed"
    assert (result.rows_read, result.rows_clean, result.rows_rejected, result.blank_lines) == (
        len(clean_lines) + len(rejected_lines),
        len(clean_lines),
        len(rejected_lines),
        blank,
    )
    assert result.rows_read == result.rows_clean + result.rows_rejected
    assert result.encoding == "utf-8"
    assert result.reinterpreted == ({"rows decoded as cp1252": 1} if dirt == "cp1252" else {})
    table = pq.read_table(io.BytesIO(_get(s3, result.processed_key)), columns=["source_line", "product_name"])
    assert np.array_equal(table.column("source_line").to_numpy(), np.asarray(clean_lines))
    _, rejected = _rejected_csv(s3, result.rejected_key)
    assert sorted(int(r[0]) for r in rejected) == rejected_lines
    if dirt == "cp1252":
        assert "Café" in table.column("product_name").to_pylist()
