"""Seven kinds of CSV quirk that once changed values silently, each through transform_file over the moto server.

Each test uploads a small file as a user's tool would write it and checks what a user sees: the loaded values,
the rejected rows with their reasons, and the file's counts (`rows_read = clean + rejected`).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq
import pytest

from include.etl.contract.model import Contract, load_contract, parse_contract
from include.etl.contract.results import FileResult
from include.etl.contract.transform import transform_file
from include.etl.reading import storage
from include.etl.settings import DatasetSettings
from tests.helpers import moto_s3

SETTINGS = DatasetSettings(dataset="orders", raw_bucket="raw", processed_bucket="processed")
ORDERS = load_contract("orders")
HEADER = "order_id,order_ts,customer_id,product_name,category,quantity,unit_price,region"


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with moto_s3(SETTINGS.raw_bucket, SETTINGS.processed_bucket) as client:
        yield client


def _run(
    s3: Any, name: str, body: bytes, contract: Contract = ORDERS, settings: DatasetSettings = SETTINGS
) -> tuple[FileResult, dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Transform one uploaded file: (result, clean rows by order_id, rejected rows as the rejected CSV has them)."""
    prefix = storage.partition_prefix(settings.raw_prefix, "2026-03-31")
    s3.put_object(Bucket=settings.raw_bucket, Key=prefix + name, Body=body)
    objects, _ = storage.list_partition(s3, settings.raw_bucket, prefix)
    result = transform_file(s3, next(o for o in objects if o.key == prefix + name), contract, settings)
    clean: dict[str, dict[str, Any]] = {}
    if result.processed_key:
        body_ = s3.get_object(Bucket=settings.processed_bucket, Key=result.processed_key)["Body"].read()
        clean = {r["order_id"]: r for r in pq.read_table(io.BytesIO(body_)).to_pylist()}
    rejected: list[dict[str, str]] = []
    if result.rows_rejected:  # (an unreadable file's rejected object is its copy, not rows)
        text = s3.get_object(Bucket=settings.processed_bucket, Key=result.rejected_key)["Body"].read().decode()
        rejected = list(csv.DictReader(io.StringIO(text, newline="")))
    assert result.rows_read == result.rows_clean + result.rows_rejected
    assert len(rejected) == result.rows_rejected
    return result, clean, rejected


def _with(**columns: dict[str, Any]) -> Contract:
    doc = ORDERS.to_document()
    for column in doc["columns"]:
        column.update(columns.get(column["name"], {}))
    return parse_contract(doc)


def _reasons(rejected: list[dict[str, str]]) -> dict[int, str]:
    return {int(r["source_line"]): r["reject_reason"] for r in rejected}


# 1. A file whose structure changes inside it ---------------------------------------------------------------


def test_two_exports_joined_are_read_each_by_its_own_header(s3: Any) -> None:
    body = (
        f"{HEADER}\n"
        "A1,2026-03-01T10:00:00Z,C1,Lamp,Home & Garden,2,5.00,North\n"
        f"{HEADER}\n"  # the same header again: not data
        "A2,2026-03-01T11:00:00Z,C2,Pen,Books,1,1.50,South\n"
        # The second export writes its columns in another order: quantity/unit_price and product/category swapped.
        "order_id,order_ts,customer_id,category,product_name,unit_price,quantity,region\n"
        "B1,2026-03-02T10:00:00Z,C3,Toys,Kite,7.25,3,East\n"
        "B2,2026-03-02T11:00:00Z,C4,Books,Atlas,20.00,1,West\n"
    ).encode()
    result, clean, rejected = _run(s3, "joined.csv", body)
    assert result.status == "processed" and rejected == []
    assert (result.rows_read, result.rows_clean) == (4, 4)
    assert (clean["B1"]["product_name"], clean["B1"]["category"]) == ("Kite", "Toys")
    assert (clean["B1"]["quantity"], clean["B1"]["unit_price"]) == (3, Decimal("7.25"))
    assert (clean["B2"]["quantity"], clean["B2"]["unit_price"]) == (1, Decimal("20.00"))
    assert clean["A2"]["unit_price"] == Decimal("1.50")
    assert "line 3 repeats the header (two exports joined?): taken out, not read as data" in result.notes
    assert any(n.startswith("line 5 is a header again with the columns in another order") for n in result.notes)


def test_a_header_with_other_columns_mid_file_rejects_the_rows_after_it_with_the_change(s3: Any) -> None:
    body = (
        f"{HEADER}\n"
        "A1,2026-03-01T10:00:00Z,C1,Lamp,Home & Garden,2,5.00,North\n"
        "order_id,order_ts,customer_id,product_name,category,quantity,price_each,area\n"
        "B1,2026-03-02T10:00:00Z,C3,Kite,Toys,3,7.25,East\n"
    ).encode()
    _, clean, rejected = _run(s3, "other_header.csv", body)
    assert set(clean) == {"A1"}
    assert list(_reasons(rejected)) == [4]
    assert "the header changes at line 3" in rejected[0]["reject_reason"]
    assert rejected[0]["order_id"] == "B1"


# 2. Unicode normalization -----------------------------------------------------------------------------------


def test_text_in_nfd_is_stored_in_nfc_and_title_case_keeps_accents_with_their_letter(s3: Any) -> None:
    nfc, nfd = "épicerie fine", unicodedata.normalize("NFD", "épicerie fine")
    assert nfc != nfd
    body = (
        f"{HEADER}\n"
        f"N1,2026-03-01T10:00:00Z,C1,Crème brûlée,{nfc},1,5.00,North\n"
        f"N2,2026-03-01T10:00:00Z,C1,{unicodedata.normalize('NFD', 'Crème brûlée')},{nfd},1,5.00,North\n"
    ).encode()
    result, clean, rejected = _run(s3, "nfd.csv", body)
    assert rejected == []
    assert clean["N1"]["category"] == clean["N2"]["category"] == "Épicerie Fine"
    assert clean["N1"]["product_name"] == clean["N2"]["product_name"] == "Crème brûlée"
    assert result.reinterpreted["category text put in Unicode's composed form (NFC)"] == 1
    assert result.reinterpreted["product_name text put in Unicode's composed form (NFC)"] == 1


# 3. A unit that differs inside a column ------------------------------------------------------------------


def test_amounts_in_another_currency_than_the_files_first_are_rejected_naming_it(s3: Any) -> None:
    prices = ["$20.00", "€20.00", "¥2000", "£15.00", "20.00 USD"]
    rows = [f'P{i},2026-03-01T10:00:00Z,C1,Lamp,Books,1,"{p}",North' for i, p in enumerate(prices)]
    result, clean, rejected = _run(s3, "currencies.csv", "\n".join([HEADER, *rows, ""]).encode())
    assert {k: v["unit_price"] for k, v in clean.items()} == {"P0": Decimal("20.00"), "P4": Decimal("20.00")}
    reasons = _reasons(rejected)
    assert reasons[3] == (
        "unit_price '€20.00' is in € (EUR), not $ (the currency of this file's first unit_price amount)"
    )
    assert "'¥2000' is in ¥, not $" in reasons[4]
    assert "'£15.00' is in £ (GBP), not $" in reasons[5]
    assert any("unit_price: amounts in $" in n for n in result.notes)


def test_a_declared_currency_reads_its_sign_and_code_anywhere_and_rejects_others(s3: Any) -> None:
    contract = _with(unit_price={"currency": "EUR"})
    prices = ["12.50 EUR", "EUR 12.50", "12.50\u00a0€", "€12.50", "12.50", "$12.50", "(€12.50)"]
    rows = [f'E{i},2026-03-01T10:00:00Z,C1,Lamp,Books,1,"{p}",North' for i, p in enumerate(prices)]
    _, clean, rejected = _run(s3, "euros.csv", "\n".join([HEADER, *rows, ""]).encode(), contract)
    assert {k: v["unit_price"] for k, v in clean.items()} == {f"E{i}": Decimal("12.50") for i in range(5)}
    reasons = _reasons(rejected)
    assert reasons[7] == "unit_price '$12.50' is in $, not EUR (the column's currency)"
    assert "accounting negative" in reasons[8]  # not silently read as 12.50


# 4. A stray NUL byte ------------------------------------------------------------------------------------------


def test_a_stray_nul_rejects_its_row_not_the_file(s3: Any) -> None:
    body = (
        f"{HEADER}\n"
        "Z1,2026-03-01T10:00:00Z,C1,Lamp,Books,1,5.00,North\n"
        "Z2,2026-03-01T10:00:00Z,C1,La\x00mp,Books,1,5.00,North\n"
        "Z3,2026-03-01T10:00:00Z,C1,Pen,Books,1,1.00,South\n"
    ).encode()
    result, clean, rejected = _run(s3, "nul.csv", body)
    assert result.status == "processed" and set(clean) == {"Z1", "Z3"}
    assert "NUL" in _reasons(rejected)[3]


def test_utf16_without_a_byte_order_mark_is_still_rejected_whole_with_a_hint(s3: Any) -> None:
    body = f"{HEADER}\nZ1,2026-03-01T10:00:00Z,C1,Lamp,Books,1,5.00,North\n".encode("utf-16-le")
    result, clean, _ = _run(s3, "utf16.csv", body)
    assert result.status == "rejected" and clean == {}
    assert "Declare `encoding: utf-16-le`" in (result.reason or "")


# 5. The file's own evidence ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_bytes", [16 << 20, 1 << 16], ids=["one batch", "evidence in a later batch"])
def test_a_file_that_proves_day_first_never_has_its_ambiguous_dates_read_month_first(s3: Any, batch_bytes: int) -> None:
    filler = [f"F{i},2026-03-{1 + i % 28:02d}T10:00:00Z,C1,{'x' * 200},Books,1,1.00,North" for i in range(400)]
    rows = [
        "D1,01/03/2026,C1,Lamp,Books,1,5.00,North",  # 1 March (day first) or 3 January (the contract's way)?
        *filler,  # ~90 KB: with 64 KiB batches the evidence comes in a later batch than D1
        "D2,13/03/2026,C1,Lamp,Books,1,5.00,North",
        "D3,25/03/2026,C1,Lamp,Books,1,5.00,North",
        "D4,2026-03-05T10:00:00Z,C1,Lamp,Books,1,5.00,North",
    ]
    settings = SETTINGS.model_copy(update={"batch_bytes": batch_bytes})
    result, clean, rejected = _run(s3, "day_first.csv", "\n".join([HEADER, *rows, ""]).encode(), settings=settings)
    assert "D1" not in clean and "D4" in clean and len(clean) == 401
    reasons = _reasons(rejected)
    assert reasons[2].startswith("order_ts '01/03/2026' reads both ways, and this file writes day and month the other")
    assert "'13/03/2026' is not a recognised date/time: it reads with day and month the other way round" in reasons[403]
    assert any("values like '13/03/2026' show the file writes day and month" in n for n in result.notes)


@pytest.mark.parametrize("batch_bytes", [16 << 20, 1 << 16], ids=["one batch", "evidence in a later batch"])
def test_a_file_that_proves_a_decimal_comma_never_has_its_ambiguous_amounts_read_as_thousands(
    s3: Any, batch_bytes: int
) -> None:
    filler = [f"F{i},2026-03-01T10:00:00Z,C1,{'x' * 200},Books,1,1.00,North" for i in range(400)]
    rows = [
        'M1,2026-03-01T10:00:00Z,C1,Lamp,Books,1,"29,850",North',  # 29850 or 29.850?
        'M2,2026-03-01T10:00:00Z,C1,Lamp,Books,1,"1,234.50",North',  # thousands, unambiguous
        *filler,
        'M3,2026-03-01T10:00:00Z,C1,Lamp,Books,1,"12,50",North',  # a decimal comma: this file writes them
        'M4,2026-03-01T10:00:00Z,C1,Lamp,Books,1,"0,020",North',  # no thousands grouping starts with 0
    ]
    settings = SETTINGS.model_copy(update={"batch_bytes": batch_bytes})
    result, clean, rejected = _run(s3, "comma.csv", "\n".join([HEADER, *rows, ""]).encode(), settings=settings)
    assert clean["M2"]["unit_price"] == Decimal("1234.50")
    assert not {"M1", "M3", "M4"} & set(clean)
    reasons = _reasons(rejected)
    assert reasons[2] == (
        "unit_price '29,850' reads both ways, and this file writes ',' as its decimal mark (as in '12,50'): not guessed"
    )
    assert reasons[404].startswith("unit_price '12,50' is not a number")
    assert reasons[405].startswith("unit_price '0,020' is not a number")
    assert any("values like '12,50' show the file writes ',' as its decimal mark" in n for n in result.notes)


# 6. A headerless file ------------------------------------------------------------------------------------------


def test_a_file_without_its_header_line_says_so_and_rejects_every_line(s3: Any) -> None:
    body = b"H1,2026-03-01T10:00:00Z,C1,Lamp,Books,2,5.00,North\nH2,2026-03-01T11:00:00Z,C2,Pen,Books,1,1.50,South\n"
    result, clean, rejected = _run(s3, "part-0002.csv", body)
    assert result.status == "rejected" and clean == {}
    assert "line 1 reads as data ('2026-03-01T10:00:00Z', '2', '5.00'): the file has no header line?" in (
        result.reason or ""
    )
    assert result.rows_read == 2
    assert sorted(_reasons(rejected)) == [1, 2]
    first = next(r for r in rejected if r["source_line"] == "1")
    assert list(first.values())[3:] == body.decode().splitlines()[0].split(",")


# 7. Spreadsheet formula wrappers --------------------------------------------------------------------------------


def test_values_forced_to_text_by_a_spreadsheet_formula_are_read_as_the_text_they_wrap(s3: Any) -> None:
    body = (
        f"{HEADER}\n"
        '"=""W-1""",2026-03-01T10:00:00Z,"=""00042""",Lamp,Books,"=""3""",5.00,North\n'
        "W-2,2026-03-01T10:00:00Z,00043,Pen,Books,1,1.00,South\n"
    ).encode()
    result, clean, rejected = _run(s3, "formulas.csv", body)
    assert rejected == []
    assert clean["W-1"]["customer_id"] == "00042" and clean["W-1"]["quantity"] == 3
    assert clean["W-2"]["customer_id"] == "00043"
    assert result.reinterpreted['order_id values unwrapped from a spreadsheet formula (="...")'] == 1
    assert result.reinterpreted['customer_id values unwrapped from a spreadsheet formula (="...")'] == 1
