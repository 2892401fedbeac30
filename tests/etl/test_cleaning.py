"""clean_batch: every rule of the orders contract, one table per column."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from include.etl.contract.cleaning import CleanBatch, clean_batch
from include.etl.contract.model import Contract
from include.etl.contract.schema import output_schema, rejected_schema
from include.etl.names import REJECT_REASON, SOURCE_KEY, SOURCE_LINE
from include.etl.reading.csv_reader import RawBatch

HEADER = ["order_id", "order_ts", "customer_id", "product_name", "category", "quantity", "unit_price", "region"]
VALID = {
    "order_id": "ORD-1",
    "order_ts": "2026-01-02 03:04:05",
    "customer_id": "CUST-0001",
    "product_name": "Wireless Mouse",
    "category": "Electronics",
    "quantity": "3",
    "unit_price": "12.50",
    "region": "North",
}
SOURCE = "raw/orders/dt=2026-01-02/orders_01.csv"
REGIONS = "North, South, East, West, Central"


def _batch(rows: list[list[str]], lines: list[int] | None = None) -> RawBatch:
    width = len(rows[0]) if rows else len(HEADER)
    columns = [pa.array([r[i] for r in rows], pa.string()) for i in range(width)]
    numbers = lines if lines is not None else list(range(2, 2 + len(rows)))
    return RawBatch(columns, np.asarray(numbers, dtype=np.int64))


def _clean(contract: Contract, rows: list[dict[str, str]], header: list[str] = HEADER, lines=None) -> CleanBatch:
    batch = _batch([[r[h] for h in header] for r in rows], lines)
    return clean_batch(batch, header, contract.map_headers(header), contract, SOURCE)


def _row(**changes: str) -> dict[str, str]:
    return {**VALID, **changes}


def _one(contract: Contract, **changes: str) -> tuple[dict | None, str | None]:
    """Clean one row: (clean row or None, reject reason or None)."""
    out = _clean(contract, [_row(**changes)])
    assert out.clean.num_rows + out.rejected.num_rows == 1
    clean = out.clean.to_pylist()[0] if out.clean.num_rows else None
    reason = out.rejected.column(REJECT_REASON)[0].as_py() if out.rejected.num_rows else None
    return clean, reason


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- order_ts / order_date -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2026-01-02T03:04:05", _utc(2026, 1, 2, 3, 4, 5), id="iso-naive"),
        pytest.param("2026-01-02T03:04:05Z", _utc(2026, 1, 2, 3, 4, 5), id="iso-Z"),
        pytest.param("2026-01-02T03:04:05+02:00", _utc(2026, 1, 2, 1, 4, 5), id="iso-plus-two"),
        pytest.param("2026-01-02T03:04:05-05:00", _utc(2026, 1, 2, 8, 4, 5), id="iso-minus-five"),
        pytest.param("2026-01-02T03:04:05.250Z", _utc(2026, 1, 2, 3, 4, 5, 250000), id="iso-fraction"),
        pytest.param("2026-01-02 03:04", _utc(2026, 1, 2, 3, 4), id="ymd-hm"),
        pytest.param("2026-01-02 03:04:05", _utc(2026, 1, 2, 3, 4, 5), id="ymd-hms"),
        pytest.param("2026-01-02", _utc(2026, 1, 2), id="ymd"),
        pytest.param("01/02/2026", _utc(2026, 1, 2), id="mdy"),
        pytest.param("01/02/2026 03:04", _utc(2026, 1, 2, 3, 4), id="mdy-hm"),
        pytest.param("01/02/2026 03:04:05", _utc(2026, 1, 2, 3, 4, 5), id="mdy-hms"),
        pytest.param("12/31/2026 23:59:59", _utc(2026, 12, 31, 23, 59, 59), id="mdy-not-dmy"),
        pytest.param("  2026-01-02 03:04:05  ", _utc(2026, 1, 2, 3, 4, 5), id="padded"),
        pytest.param("1970-01-01", _utc(1970, 1, 1), id="lower-bound-inclusive"),
        pytest.param("2100-01-01", _utc(2100, 1, 1), id="upper-bound-inclusive"),
    ],
)
def test_order_ts_accepted_formats_are_utc(contract: Contract, raw: str, expected: datetime) -> None:
    clean, reason = _one(contract, order_ts=raw)
    assert reason is None
    assert clean["order_ts"] == expected
    assert clean["order_ts"].utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("garbage", "order_ts 'garbage' is not a recognised date/time"),
        ("yesterday", "order_ts 'yesterday' is not a recognised date/time"),
        ("2026-13-45 10:00", "order_ts '2026-13-45 10:00' is not a recognised date/time"),
        ("2026-02-30", "order_ts '2026-02-30' is not a recognised date/time"),
        (
            "31/12/2026",
            "order_ts '31/12/2026' is not a recognised date/time: it reads with day and month the other way round "
            "than the contract's formats (ISO8601, %m/%d/%Y %H:%M:%S, %m/%d/%Y %H:%M, %m/%d/%Y)",
        ),
        ("1969-12-31 23:59:59", "order_ts '1969-12-31 23:59:59' is before 1970-01-01"),
        ("12/31/1969", "order_ts '12/31/1969' is before 1970-01-01"),
        ("0001-01-01", "order_ts '0001-01-01' is before 1970-01-01"),
        ("2100-01-01 00:00:01", "order_ts '2100-01-01 00:00:01' is after 2100-01-01"),
        ("9999-12-31", "order_ts '9999-12-31' is after 2100-01-01"),
        ("", "order_ts is blank"),
        ("NULL", "order_ts is blank"),
    ],
)
def test_order_ts_rejected(contract: Contract, raw: str, reason: str) -> None:
    assert _one(contract, order_ts=raw) == (None, reason)


def test_order_ts_formats_mixed_in_one_batch_parse_like_single_rows(contract: Contract) -> None:
    raws = [
        "01/02/2026 03:04:05",
        "2026-01-02T03:04:05Z",
        "garbage",
        "2026-01-02T05:04:05+02:00",
        "01/02/2026",
        "2026-01-02 03:04",
        "1969-01-01",
    ]
    out = _clean(contract, [_row(order_id=f"O{i}", order_ts=r) for i, r in enumerate(raws)])
    assert out.clean.column("order_id").to_pylist() == ["O0", "O1", "O3", "O4", "O5"]
    assert out.clean.column("order_ts").to_pylist() == [
        _utc(2026, 1, 2, 3, 4, 5),
        _utc(2026, 1, 2, 3, 4, 5),
        _utc(2026, 1, 2, 3, 4, 5),
        _utc(2026, 1, 2),
        _utc(2026, 1, 2, 3, 4),
    ]
    assert out.rejected.column(REJECT_REASON).to_pylist() == [
        "order_ts 'garbage' is not a recognised date/time",
        "order_ts '1969-01-01' is before 1970-01-01",
    ]


@pytest.mark.parametrize(
    ("raw", "day"),
    [
        ("2026-01-02 03:04:05", date(2026, 1, 2)),
        ("2026-01-02T23:30:00-02:00", date(2026, 1, 3)),
        ("2026-01-02T00:30:00+02:00", date(2026, 1, 1)),
        ("12/31/2026 23:59:59", date(2026, 12, 31)),
    ],
)
def test_order_date_is_the_utc_day(contract: Contract, raw: str, day: date) -> None:
    clean, reason = _one(contract, order_ts=raw)
    assert reason is None
    assert clean["order_date"] == day


# --- text columns -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CUST-0042", "CUST-0042"),
        ("  CUST 42  ", "CUST 42"),
        ("", "guest"),
        ("   ", "guest"),
        ("NULL", "guest"),
        ("null", "guest"),
        ("N/A", "guest"),
        ("n/a", "guest"),
        (" - ", "guest"),
    ],
)
def test_customer_id_blank_becomes_guest(contract: Contract, raw: str, expected: str) -> None:
    clean, reason = _one(contract, customer_id=raw)
    assert reason is None
    assert clean["customer_id"] == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Wireless Mouse", "Wireless Mouse"),
        ("  Wireless Mouse  ", "Wireless Mouse"),
        ("Wireless   Mouse", "Wireless Mouse"),
        ("Wireless\tMouse", "Wireless Mouse"),
        ("Webcam, 1080p", "Webcam, 1080p"),
    ],
)
def test_product_name_trimmed_and_collapsed(contract: Contract, raw: str, expected: str) -> None:
    clean, reason = _one(contract, product_name=raw)
    assert reason is None
    assert clean["product_name"] == expected


@pytest.mark.parametrize("raw", ["", "   ", "NULL", "N/A", "-"])
def test_product_name_blank_rejected(contract: Contract, raw: str) -> None:
    assert _one(contract, product_name=raw) == (None, "product_name is blank")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Electronics", "Electronics"),
        ("electronics", "Electronics"),
        (" ELECTRONICS ", "Electronics"),
        ("home  &  garden", "Home & Garden"),
        ("HOME & GARDEN", "Home & Garden"),
        ("garden tools", "Garden Tools"),
        ("sporting GOODS", "Sporting Goods"),
        ("", "Uncategorized"),
        ("  ", "Uncategorized"),
        ("N/A", "Uncategorized"),
    ],
)
def test_category_canonical_spelling(contract: Contract, raw: str, expected: str) -> None:
    clean, reason = _one(contract, category=raw)
    assert reason is None
    assert clean["category"] == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("North", "North"), ("north", "North"), (" SOUTH ", "South"), ("eAsT", "East"), ("central", "Central")],
)
def test_region_case_insensitive_canonical(contract: Contract, raw: str, expected: str) -> None:
    clean, reason = _one(contract, region=raw)
    assert reason is None
    assert clean["region"] == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("Mars", f"region 'Mars' is not one of {REGIONS}"),
        ("north-east", f"region 'north-east' is not one of {REGIONS}"),
        (" Mars ", f"region ' Mars ' is not one of {REGIONS}"),
        ("", "region is blank"),
    ],
)
def test_region_not_allowed_rejected(contract: Contract, raw: str, reason: str) -> None:
    assert _one(contract, region=raw) == (None, reason)


@pytest.mark.parametrize("raw", ["", "  ", "NULL"])
def test_order_id_blank_rejected(contract: Contract, raw: str) -> None:
    assert _one(contract, order_id=raw) == (None, "order_id is blank")


# --- quantity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3", 3),
        (" 3 ", 3),
        ("3.0", 3),
        ("3.00", 3),
        ("0003", 3),
        ("1", 1),
        ("2147483647", 2147483647),
        pytest.param("+3", 3),
    ],
)
def test_quantity_accepted(contract: Contract, raw: str, expected: int) -> None:
    clean, reason = _one(contract, quantity=raw)
    assert reason is None
    assert clean["quantity"] == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("0", "quantity 0 is below 1"),
        ("-1", "quantity -1 is below 1"),
        ("abc", "quantity 'abc' is not a whole number"),
        ("1.5", "quantity '1.5' is not a whole number"),
        ("1e3", "quantity '1e3' is in scientific notation, which is not read as a number here"),
        ("99999999999", "quantity 99999999999 is above 2147483647"),
        ("2147483648", "quantity 2147483648 is above 2147483647"),
        ("", "quantity is blank"),
        ("N/A", "quantity is blank"),
    ],
)
def test_quantity_rejected(contract: Contract, raw: str, reason: str) -> None:
    assert _one(contract, quantity=raw) == (None, reason)


# --- unit_price -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$1,234.50", Decimal("1234.50")),
        ("1,234.50", Decimal("1234.50")),
        ("$ 12", Decimal("12.00")),
        ("12.5", Decimal("12.50")),
        ("12.340", Decimal("12.34")),
        ("0", Decimal("0.00")),
        ("0.10", Decimal("0.10")),
        ("+1.00", Decimal("1.00")),
        ("9999999999.99", Decimal("9999999999.99")),
    ],
)
def test_unit_price_accepted_exactly(contract: Contract, raw: str, expected: Decimal) -> None:
    clean, reason = _one(contract, unit_price=raw)
    assert reason is None
    assert isinstance(clean["unit_price"], Decimal)
    assert clean["unit_price"] == expected
    assert clean["unit_price"].as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("-1", "unit_price -1.00 is below 0"),
        ("-5.00", "unit_price -5.00 is below 0"),
        ("abc", "unit_price 'abc' is not a number"),
        ("free", "unit_price 'free' is not a number"),
        ("12.345", "unit_price '12.345' has more than 2 decimal places"),
        ("12345678901.00", "unit_price '12345678901.00' is too large for numeric(12,2)"),
        ("", "unit_price is blank"),
    ],
)
def test_unit_price_rejected(contract: Contract, raw: str, reason: str) -> None:
    assert _one(contract, unit_price=raw) == (None, reason)


# --- total_price ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "price", "total"),
    [
        ("3", "0.10", Decimal("0.30")),
        ("3", "12.5", Decimal("37.50")),
        ("7", "0.01", Decimal("0.07")),
        ("3", "1234567890.11", Decimal("3703703670.33")),
        ("1000000", "999999.99", Decimal("999999990000.00")),
        ("99999999", "9999.99", Decimal("999998990000.01")),
        ("5", "0", Decimal("0.00")),
    ],
)
def test_total_price_is_exact_product(contract: Contract, quantity: str, price: str, total: Decimal) -> None:
    clean, reason = _one(contract, quantity=quantity, unit_price=price)
    assert reason is None
    assert clean["total_price"] == total
    assert clean["total_price"] == clean["quantity"] * clean["unit_price"]


def test_total_price_too_large_is_rejected(contract: Contract) -> None:
    assert _one(contract, quantity="100000000", unit_price="10000.00") == (
        None,
        "total_price 1000000000000.00 is too large for numeric(14,2)",
    )


# --- rows as a whole --------------------------------------------------------------


def test_all_reasons_of_a_row_are_joined_in_column_order(contract: Contract) -> None:
    row = {
        "order_id": "",
        "order_ts": "garbage",
        "customer_id": "",
        "product_name": " ",
        "category": "",
        "quantity": "0",
        "unit_price": "-1",
        "region": "Mars",
    }
    _, reason = _one(contract, **row)
    assert reason == (
        "order_id is blank; order_ts 'garbage' is not a recognised date/time; product_name is blank; "
        f"quantity 0 is below 1; unit_price -1.00 is below 0; region 'Mars' is not one of {REGIONS}"
    )


def test_rejected_rows_keep_raw_values_and_line_numbers(contract: Contract) -> None:
    rows = [
        _row(order_id="A"),
        _row(order_id=" B ", quantity=" abc ", region=" mars "),
        _row(order_id="C"),
        _row(order_id="D", unit_price="$12.345", customer_id="NULL"),
    ]
    out = _clean(contract, rows, lines=[2, 5, 6, 10])
    assert out.rejected.schema == rejected_schema(HEADER)
    assert out.rejected.to_pylist() == [
        {
            SOURCE_LINE: 5,
            REJECT_REASON: f"quantity ' abc ' is not a whole number; region ' mars ' is not one of {REGIONS}",
            "raw_record": None,
            **rows[1],
        },
        {
            SOURCE_LINE: 10,
            REJECT_REASON: "unit_price '$12.345' has more than 2 decimal places",
            "raw_record": None,
            **rows[3],
        },
    ]


def test_clean_rows_carry_source_key_and_line(contract: Contract) -> None:
    rows = [_row(order_id="A"), _row(order_id="B", region="Mars"), _row(order_id="C"), _row(order_id="D")]
    out = _clean(contract, rows, lines=[2, 4, 7, 8])
    assert out.clean.schema == output_schema(contract)
    assert out.clean.column("order_id").to_pylist() == ["A", "C", "D"]
    assert out.clean.column(SOURCE_LINE).to_pylist() == [2, 7, 8]
    assert out.clean.column(SOURCE_KEY).to_pylist() == [SOURCE] * 3


def test_clean_row_has_every_output_column_typed(contract: Contract) -> None:
    clean, reason = _one(
        contract,
        order_ts="2026-01-02T03:04:05Z",
        customer_id="",
        product_name=" wireless  mouse ",
        category="electronics",
        quantity="2",
        unit_price="$1,000.05",
        region="west",
    )
    assert reason is None
    assert clean == {
        "order_id": "ORD-1",
        "order_ts": _utc(2026, 1, 2, 3, 4, 5),
        "customer_id": "guest",
        "product_name": "wireless mouse",
        "category": "Electronics",
        "quantity": 2,
        "unit_price": Decimal("1000.05"),
        "region": "West",
        "order_date": date(2026, 1, 2),
        "total_price": Decimal("2000.10"),
        SOURCE_KEY: SOURCE,
        SOURCE_LINE: 2,
    }


def test_header_aliases_and_positions_are_followed(contract: Contract) -> None:
    header = ["REGION", "notes", "Price", "qty", "Product", " Order ID ", "Timestamp"]
    raw = ["south", "gift", "2.50", "4", "Desk Lamp", "X-1", "01/02/2026"]
    batch = _batch([raw])
    out = clean_batch(batch, header, contract.map_headers(header), contract, SOURCE)
    assert out.rejected.num_rows == 0
    (row,) = out.clean.to_pylist()
    assert (row["order_id"], row["product_name"], row["quantity"], row["unit_price"], row["region"]) == (
        "X-1",
        "Desk Lamp",
        4,
        Decimal("2.50"),
        "South",
    )
    # Optional columns absent from the file get their fill values.
    assert (row["customer_id"], row["category"]) == ("guest", "Uncategorized")
    assert row["total_price"] == Decimal("10.00")


def test_empty_batch_gives_empty_tables(contract: Contract) -> None:
    out = clean_batch(_batch([]), HEADER, contract.map_headers(HEADER), contract, SOURCE)
    assert out.clean.num_rows == 0
    assert out.rejected.num_rows == 0
    assert out.clean.schema == output_schema(contract)


@pytest.mark.parametrize(
    ("field", "raw", "reason"),
    [
        pytest.param("unit_price", "3 4", "unit_price '3 4' is not a number", id="space-inside-price"),
        pytest.param("unit_price", "$", "unit_price '$' is not a number", id="currency-sign-only"),
        pytest.param("order_ts", "2026", "order_ts '2026' is not a recognised date/time", id="year-only"),
        pytest.param("order_ts", "20260102", "order_ts '20260102' is not a recognised date/time", id="compact-date"),
    ],
)
def test_lenient_parses_are_rejected(contract: Contract, field: str, raw: str, reason: str) -> None:
    clean, rejected = _one(contract, **{field: raw})
    assert clean is None
    assert rejected == reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("$ 12.50", Decimal("12.50"), id="sign-space"),
        pytest.param("12.50 €", Decimal("12.50"), id="trailing-euro"),
        pytest.param("-$0", Decimal("0.00"), id="signed-zero"),
    ],
)
def test_currency_signs_with_spaces_are_accepted(contract: Contract, raw: str, expected: Decimal) -> None:
    clean, rejected = _one(contract, unit_price=raw)
    assert rejected is None
    assert clean["unit_price"] == expected


def test_title_casing_keeps_contractions_lower_case(contract: Contract) -> None:
    clean, _ = _one(contract, category="men's  wear")
    assert clean["category"] == "Men's Wear"
