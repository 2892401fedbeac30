"""clean_batch for every column type a contract accepts, source time zones, and values PostgreSQL refuses.

(The orders contract's own rules are in test_cleaning.py.)
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from include.etl.contract.cleaning import MAX_KEY_BYTES, clean_batch
from include.etl.contract.model import Contract, parse_contract
from include.etl.contract.values import dates
from include.etl.names import REJECT_REASON
from include.etl.reading.csv_reader import RawBatch


def _contract(columns: dict[str, Any], **top: Any) -> Contract:
    doc = {
        "dataset": "t",
        "table": "s.t",
        "key": "id",
        "columns": {"id": {"type": "text", "required": True}, **columns},
    }
    return parse_contract({**doc, **top})


def _clean(contract: Contract, rows: list[dict[str, str]]) -> tuple[list[dict[str, Any]], list[str]]:
    header = list(rows[0])
    batch = RawBatch([pa.array([r[h] for r in rows], pa.string()) for h in header], np.arange(2, 2 + len(rows)))
    out = clean_batch(batch, header, contract.map_headers(header), contract, "raw/t/a.csv")
    return out.clean.to_pylist(), out.rejected.column(REJECT_REASON).to_pylist()


def _value(contract: Contract, column: str, raw: str) -> tuple[Any, str | None]:
    clean, reasons = _clean(contract, [{"id": "1", column: raw}])
    return (clean[0][column], None) if clean else (None, reasons[0])


# --- integer -------------------------------------------------------------------------------

BIG = _contract({"n": {"type": "integer", "on_blank": None}})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3000000000", 3_000_000_000),
        ("-9223372036854775807", -9_223_372_036_854_775_807),
        ("9223372036854775807", 9_223_372_036_854_775_807),
        ("+0007", 7),
        ("42.000", 42),
    ],
)
def test_integers_without_bounds_are_64_bit(raw: str, expected: int) -> None:
    assert _value(BIG, "n", raw) == (expected, None)


@pytest.mark.parametrize("raw", ["9223372036854775808", "12345678901234567890"])
def test_an_integer_beyond_64_bits_is_a_rejected_row_not_a_failed_file(raw: str) -> None:
    assert _value(BIG, "n", raw) == (None, f"n '{raw}' is beyond the 64-bit integer range")


def test_a_blank_integer_with_on_blank_null_is_null() -> None:
    assert _value(BIG, "n", "") == (None, None)
    clean, _ = _clean(BIG, [{"id": "1", "n": ""}])
    assert clean[0]["n"] is None


# --- decimal spellings ----------------------------------------------------------------------

AMOUNT = {"amount": {"type": "decimal", "precision": 12, "scale": 2, "required": True}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (".99", Decimal("0.99")),
        ("-.5", Decimal("-0.50")),
        ("1.", Decimal("1.00")),
        ("+3", Decimal("3.00")),
        ("$.25", Decimal("0.25")),
        ("-$1,234.50", Decimal("-1234.50")),
        ("1 234.50", Decimal("1234.50")),
    ],
)
def test_decimal_spellings_people_write_are_read_exactly(raw: str, expected: Decimal) -> None:
    assert _value(_contract(AMOUNT), "amount", raw) == (expected, None)


def test_an_accounting_negative_is_rejected_unless_the_contract_reads_them() -> None:
    value, reason = _value(_contract(AMOUNT), "amount", "(12.00)")
    assert value is None
    assert "amount '(12.00)' is an accounting negative: set csv.accounting_negatives: true" in reason

    reads_them = _contract(AMOUNT, csv={"accounting_negatives": True})
    assert _value(reads_them, "amount", "(12.00)") == (Decimal("-12.00"), None)
    assert _value(reads_them, "amount", "($1,234.50)") == (Decimal("-1234.50"), None)
    # Still one sign only: a negative in parentheses is not read twice.
    assert _value(reads_them, "amount", "(-12.00)")[0] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1 234,50", Decimal("1234.50")), ("1.234,50", Decimal("1234.50")), (",5", Decimal("0.50"))],
)
def test_a_comma_decimal_contract_reads_european_spellings(raw: str, expected: Decimal) -> None:
    contract = _contract(AMOUNT, csv={"delimiter": ";", "decimal_separator": ","})
    assert _value(contract, "amount", raw) == (expected, None)


@pytest.mark.parametrize("raw", ["1.5", "1.50", "12.5", "1,234.50"])
def test_a_point_under_a_comma_decimal_contract_is_rejected_not_guessed(raw: str) -> None:
    contract = _contract(AMOUNT, csv={"delimiter": ";", "decimal_separator": ","})
    value, reason = _value(contract, "amount", raw)
    assert value is None
    assert f"amount '{raw}' is not a number (the contract's decimal separator is ',', not '.')" in reason
    assert _value(contract, "amount", "1.500") == (Decimal("1500.00"), None)  # thousands, in a group of three


@pytest.mark.parametrize(
    ("dialect", "raws", "expected"),
    [
        (
            {"accounting_negatives": True},
            ["12.50", "$1,234.50", "", "(3.00)", "7", "1e3", "-.5"],
            ["12.50", "1234.50", None, "-3.00", "7.00", "amount '1e3' is in scientific notation", "-0.50"],
        ),
        (
            {"delimiter": ";", "decimal_separator": ","},
            ["12,50", "1.234,50", "1.5", "7", "€ 3,25"],
            ["12.50", "1234.50", "amount '1.5' is not a number", "7.00", "3.25"],
        ),
    ],
)
def test_plain_and_spelled_numbers_in_one_batch_each_read_as_alone(
    dialect: dict[str, Any], raws: list[str], expected: list[str | None]
) -> None:
    contract = _contract({"amount": {"type": "decimal", "precision": 12, "scale": 2, "on_blank": None}}, csv=dialect)
    header = ["id", "amount"]
    batch = RawBatch(
        [pa.array([str(i) for i in range(len(raws))]), pa.array(raws, pa.string())], np.arange(2, 2 + len(raws))
    )
    out = clean_batch(batch, header, contract.map_headers(header), contract, "raw/t/a.csv")
    values = {r["id"]: r["amount"] for r in out.clean.to_pylist()}
    rejected = out.rejected.to_pydict()
    reasons = dict(zip(rejected["id"], rejected[REJECT_REASON], strict=True))
    for i, want in enumerate(expected):
        if want is None or want[0].isdigit() or want[0] == "-":
            assert values[str(i)] == (None if want is None else Decimal(want)), raws[i]
        else:
            assert want in reasons[str(i)], raws[i]
    if dialect.get("accounting_negatives"):
        assert out.reinterpreted == {"amount accounting negatives (12.00) read as -12.00": 1}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1e3", "amount '1e3' is in scientific notation"),
        ("1,5", "amount '1,5' is not a number (the contract's decimal separator is '.', not ',')"),
        ("1,23,456.00", "amount '1,23,456.00' is not a number"),
    ],
)
def test_spellings_with_two_readings_are_rejected_with_what_to_do(raw: str, reason: str) -> None:
    value, got = _value(_contract(AMOUNT), "amount", raw)
    assert value is None
    assert reason in got


# --- boolean -------------------------------------------------------------------------------

FLAG = _contract(
    {
        "f": {
            "type": "boolean",
            "on_blank": False,
            "true_values": ["yes", "ja", "1"],
            "false_values": ["no", "nein", "0"],
        }
    }
)


@pytest.mark.parametrize(
    ("raw", "expected"), [("yes", True), ("JA", True), (" 1 ", True), ("Nein", False), ("", False)]
)
def test_booleans_in_the_contracts_spellings(raw: str, expected: bool) -> None:
    assert _value(FLAG, "f", raw) == (expected, None)


def test_an_unknown_boolean_spelling_is_rejected_with_the_accepted_ones() -> None:
    assert _value(FLAG, "f", "maybe") == (None, "f 'maybe' is not a boolean (true: yes, ja, 1; false: no, nein, 0)")


# --- date ----------------------------------------------------------------------------------

DAY = _contract({"d": {"type": "date", "formats": ["%Y-%m-%d", "%d.%m.%Y"], "min": "2000-01-01", "on_blank": None}})


@pytest.mark.parametrize(("raw", "expected"), [("2026-03-05", date(2026, 3, 5)), ("05.03.2026", date(2026, 3, 5))])
def test_dates_in_the_contracts_formats(raw: str, expected: date) -> None:
    assert _value(DAY, "d", raw) == (expected, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("03/05/2026", "d '03/05/2026' is not a recognised date"),
        ("2026-02-30", "d '2026-02-30' is not a recognised date"),
        ("1999-12-31", "d '1999-12-31' is before 2000-01-01"),
    ],
)
def test_dates_that_do_not_parse_or_fit_are_rejected(raw: str, reason: str) -> None:
    assert _value(DAY, "d", raw) == (None, reason)


def test_a_date_column_never_drops_a_time_of_day_silently() -> None:
    plain = _contract({"d": {"type": "date", "formats": ["%Y-%m-%d %H:%M"], "on_blank": None}})
    assert _value(plain, "d", "2026-03-05 00:00") == (date(2026, 3, 5), None)
    assert _value(plain, "d", "2026-03-05 14:30") == (
        None,
        "d '2026-03-05 14:30' has a time of day: a date column would drop it",
    )


def test_a_day_and_month_that_two_of_the_formats_read_differently_are_rejected_not_guessed() -> None:
    both = _contract({"d": {"type": "date", "formats": ["%m/%d/%Y", "%d/%m/%Y"], "on_blank": None}})
    value, reason = _value(both, "d", "03/05/2026")
    assert value is None
    assert "d '03/05/2026' reads as different dates in the contract's formats (%m/%d/%Y, %d/%m/%Y)" in reason
    assert _value(both, "d", "13/05/2026") == (date(2026, 5, 13), None)  # only day-first reads it
    assert _value(both, "d", "05/05/2026") == (date(2026, 5, 5), None)  # both read the same day

    stamps = _contract({"t": {"type": "timestamp", "formats": ["%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M"], "on_blank": None}})
    assert "reads as different dates" in _value(stamps, "t", "03/05/2026 10:00")[1]
    assert _value(stamps, "t", "25/12/2026 10:00") == (datetime(2026, 12, 25, 10, tzinfo=UTC), None)


@pytest.mark.parametrize(
    ("fmt", "other", "alike"),
    [
        ("%m/%d/%Y", "%d/%m/%Y", True),  # the same literals: one text, two days
        ("%Y-%m-%dT%H:%M", "%Y-%m-%dt%M:%H", True),  # literals are matched ignoring case
        ("%d %b %Y", "%m %d %Y", True),  # %b reads letters: not ruled out
        ("%m/%d/%Y", "%m/%d/%Y %H:%M", False),  # a colon or none
        ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", False),
        ("%d.%m.%Y", "%m/%d/%Y", False),
    ],
)
def test_format_pairs_that_no_text_fits_both_of_are_not_compared(fmt: str, other: str, alike: bool) -> None:
    assert dates._may_read_alike(fmt, other) is alike


def test_formats_that_cannot_read_one_text_alike_read_each_value_once() -> None:
    stamps = _contract(
        {"t": {"type": "timestamp", "formats": ["%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y"], "on_blank": None}}
    )
    assert _value(stamps, "t", "03/05/2026 10:00") == (datetime(2026, 3, 5, 10, tzinfo=UTC), None)
    assert _value(stamps, "t", "03/05/2026") == (datetime(2026, 3, 5, tzinfo=UTC), None)


# --- timestamps in a source time zone ----------------------------------------------------------

BERLIN = _contract(
    {"ts": {"type": "timestamp", "required": True, "formats": ["ISO8601", "%d.%m.%Y %H:%M"]}},
    timezone="Europe/Berlin",
    derived={"day": {"type": "date", "from": "ts"}},
)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "instant", "day"),
    [
        pytest.param("2026-01-15 22:30", _utc(2026, 1, 15, 21, 30), date(2026, 1, 15), id="winter-CET"),
        pytest.param("2026-07-15 22:30", _utc(2026, 7, 15, 20, 30), date(2026, 7, 15), id="summer-CEST"),
        pytest.param("15.01.2026 00:30", _utc(2026, 1, 14, 23, 30), date(2026, 1, 15), id="local-date-kept"),
        pytest.param("2026-03-29 01:59", _utc(2026, 3, 29, 0, 59), date(2026, 3, 29), id="before-spring-forward"),
        pytest.param("2026-03-29 03:00", _utc(2026, 3, 29, 1, 0), date(2026, 3, 29), id="after-spring-forward"),
        pytest.param("2026-10-25 01:59", _utc(2026, 10, 24, 23, 59), date(2026, 10, 25), id="before-fall-back"),
        pytest.param("2026-10-25 03:00", _utc(2026, 10, 25, 2, 0), date(2026, 10, 25), id="after-fall-back"),
        pytest.param("2026-10-25T02:30:00+02:00", _utc(2026, 10, 25, 0, 30), date(2026, 10, 25), id="offset-first"),
        pytest.param("2026-10-25T02:30:00+01:00", _utc(2026, 10, 25, 1, 30), date(2026, 10, 25), id="offset-second"),
        pytest.param("2026-01-15T22:30:00Z", _utc(2026, 1, 15, 22, 30), date(2026, 1, 15), id="explicit-utc"),
        # A date alone is local midnight: its "-15" is the day, not an offset of -15 hours.
        pytest.param("2026-01-15", _utc(2026, 1, 14, 23, 0), date(2026, 1, 15), id="date-only-local-midnight"),
        pytest.param("2026-07-01", _utc(2026, 6, 30, 22, 0), date(2026, 7, 1), id="date-only-summer"),
    ],
)
def test_naive_timestamps_are_in_the_declared_zone_across_daylight_saving(
    raw: str, instant: datetime, day: date
) -> None:
    clean, reasons = _clean(BERLIN, [{"id": "1", "ts": raw}])
    assert reasons == []
    assert (clean[0]["ts"], clean[0]["day"]) == (instant, day)


def test_22_30_local_and_22_30_with_an_offset_are_different_instants_but_each_is_right() -> None:
    new_york = _contract({"ts": {"type": "timestamp", "required": True}}, timezone="America/New_York")
    local, _ = _clean(new_york, [{"id": "1", "ts": "2026-01-15 22:30"}])
    assert local[0]["ts"] == _utc(2026, 1, 16, 3, 30)  # 22:30 EST is 03:30 UTC the next day
    offset, _ = _clean(new_york, [{"id": "1", "ts": "2026-01-15T22:30-05:00"}])
    assert offset[0]["ts"] == local[0]["ts"]
    midnight, _ = _clean(new_york, [{"id": "1", "ts": "2026-01-15"}])
    assert midnight[0]["ts"] == _utc(2026, 1, 15, 5, 0)  # local midnight, not 2026-01-15 00:00 at UTC-15


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2026-03-29 02:30", "ts '2026-03-29 02:30' does not exist in Europe/Berlin (clocks went forward)"),
        (
            "2026-10-25 02:30",
            "ts '2026-10-25 02:30' happens twice in Europe/Berlin (clocks went back): give it an offset",
        ),
    ],
)
def test_local_times_the_clock_skips_or_repeats_are_rejected_not_guessed(raw: str, reason: str) -> None:
    assert _clean(BERLIN, [{"id": "1", "ts": raw}]) == ([], [reason])


def test_a_column_zone_overrides_the_datasets() -> None:
    mixed = _contract(
        {"ts": {"type": "timestamp", "required": True, "timezone": "Asia/Tokyo"}}, timezone="Europe/Berlin"
    )
    clean, _ = _clean(mixed, [{"id": "1", "ts": "2026-01-15 09:00"}])
    assert clean[0]["ts"] == _utc(2026, 1, 15, 0, 0)


# --- values PostgreSQL cannot store -----------------------------------------------------------


def test_a_nul_character_rejects_its_row_with_a_reason() -> None:
    text = _contract({"note": {"type": "text", "on_blank": None}})
    clean, reasons = _clean(text, [{"id": "1", "note": "a\x00b"}, {"id": "2", "note": "fine"}])
    assert [r["id"] for r in clean] == ["2"]
    assert reasons == ["note contains a NUL character (0x00), which PostgreSQL cannot store"]


def test_a_key_too_long_for_the_index_rejects_its_row() -> None:
    clean, reasons = _clean(_contract({}), [{"id": "k" * (MAX_KEY_BYTES + 1)}, {"id": "ok"}])
    assert [r["id"] for r in clean] == ["ok"]
    assert reasons == [f"id is longer than {MAX_KEY_BYTES} bytes, too long for the table's key index"]


# --- the contract's row expectations -----------------------------------------------------------


def test_a_reject_row_expectation_names_the_rule_a_row_broke() -> None:
    mail = _contract(
        {"email": {"type": "text", "on_blank": None}},
        expectations=[
            {"expectation": "expect_column_values_to_match_regex", "column": "email", "regex": r"^[^@\s]+@[^@\s]+$"}
        ],
    )
    clean, reasons = _clean(
        mail, [{"id": "1", "email": "a@b.c"}, {"id": "2", "email": "nope"}, {"id": "3", "email": ""}]
    )
    assert [r["id"] for r in clean] == ["1", "3"]  # NULL meets a regex rule (GX semantics)
    assert reasons == [r"email 'nope' does not match ^[^@\s]+@[^@\s]+$ (expect_column_values_to_match_regex)"]


def test_file_level_expectations_are_counted_on_clean_rows_not_applied_to_rows() -> None:
    price = _contract(
        {"price": {"type": "decimal", "precision": 10, "scale": 2, "required": True}},
        expectations=[
            {
                "expectation": "expect_column_values_to_be_between",
                "column": "price",
                "max_value": 100,
                "severity": "warn",
            }
        ],
    )
    header = ["id", "price"]
    rows = [["1", "5.00"], ["2", "150000.00"], ["3", "bad"]]
    batch = RawBatch([pa.array([r[i] for r in rows], pa.string()) for i in range(2)], np.arange(2, 5))
    out = clean_batch(batch, header, price.map_headers(header), price, "raw/t/a.csv")
    assert out.clean.column("price").to_pylist() == [Decimal("5.00"), Decimal("150000.00")]  # the outlier loads
    assert out.unmet == [(1, 2)]  # 1 of 2 clean rows above 100
