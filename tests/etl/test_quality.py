"""Data-quality check arguments derived from the orders contract."""

from __future__ import annotations

import pytest

from include.etl.contract import Contract, parse_contract
from include.etl.quality import column_checks, table_checks


def test_column_checks_key_is_unique_and_not_null(contract: Contract) -> None:
    checks = column_checks(contract)
    assert checks["order_id"] == {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}}


def test_column_checks_cover_every_column_with_a_null_check(contract: Contract) -> None:
    checks = column_checks(contract)
    assert set(checks) == {c.name for c in contract.columns}
    assert all(entry["null_check"] == {"equal_to": 0} for entry in checks.values())
    assert [name for name, entry in checks.items() if "unique_check" in entry] == ["order_id"]


@pytest.mark.parametrize(
    ("column", "minimum"),
    [("quantity", 1.0), ("unit_price", 0.0)],
)
def test_column_checks_numeric_minimums(contract: Contract, column: str, minimum: float) -> None:
    assert column_checks(contract)[column]["min"] == {"geq_to": minimum}


@pytest.mark.parametrize("column", ["order_id", "order_ts", "customer_id", "product_name", "category", "region"])
def test_column_checks_no_minimum_on_non_numeric(contract: Contract, column: str) -> None:
    assert "min" not in column_checks(contract)[column]


def test_table_checks_statements(contract: Contract) -> None:
    checks = table_checks(contract, "etl.file_ledger")
    assert checks == {
        "total_price_is_product": {"check_statement": '"total_price" = "quantity" * "unit_price"'},
        "region_allowed": {"check_statement": "\"region\" IN ('North', 'South', 'East', 'West', 'Central')"},
        "row_count_matches_ledger": {
            "check_statement": (
                '(SELECT count(*) FROM "analytics"."orders") = '
                '(SELECT COALESCE(sum(rows_inserted), 0) FROM "etl"."file_ledger")'
            )
        },
    }


def test_table_checks_quote_identifiers_and_literals() -> None:
    contract = parse_contract(
        {
            "dataset": "odd",
            "table": "Sales.Q1 Orders",
            "key": "Order Id",
            "columns": {
                "Order Id": {"type": "text"},
                "qty": {"type": "integer", "min": 1},
                "price": {"type": "decimal", "min": 0},
                "zone": {"type": "text", "allowed": ["O'Hare", "Main"]},
            },
            "derived": {"Line Total": {"type": "decimal", "product_of": ["qty", "price"]}},
        }
    )
    checks = table_checks(contract, "public.ledger")
    assert checks["Line Total_is_product"] == {"check_statement": '"Line Total" = "qty" * "price"'}
    assert checks["zone_allowed"] == {"check_statement": "\"zone\" IN ('O''Hare', 'Main')"}
    assert checks["row_count_matches_ledger"]["check_statement"] == (
        '(SELECT count(*) FROM "Sales"."Q1 Orders") = (SELECT COALESCE(sum(rows_inserted), 0) FROM "public"."ledger")'
    )
    assert column_checks(contract)["Order Id"]["unique_check"] == {"equal_to": 0}
