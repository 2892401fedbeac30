"""Quality checks derived from a contract: which rules become checks, on quoted identifiers.

What the checks find on real tables (empty, good, broken) is in tests/integration/test_quality_checks.py.
"""

from __future__ import annotations

from include.etl.contract.model import Contract, parse_contract
from include.etl.contract.quality import column_checks, table_checks


def test_null_checks_only_on_columns_that_cannot_be_null(contract: Contract) -> None:
    checks = column_checks(contract)
    not_null = {name.removesuffix("_not_null") for name in checks if name.endswith("_not_null")}
    # customer_id and category have fill values: never NULL either.
    assert not_null == {c.name for c in contract.columns}
    nullable = parse_contract(
        {
            "dataset": "d",
            "table": "t",
            "key": "id",
            "columns": {"id": {"type": "text", "required": True}, "note": {"type": "text", "on_blank": None}},
        }
    )
    assert set(column_checks(nullable)) == {"key_is_unique", "id_not_null"}


def test_bounds_and_allowed_values_become_checks(contract: Contract) -> None:
    checks = column_checks(contract)
    assert {"quantity_min", "quantity_max", "unit_price_min", "order_ts_min", "order_ts_max", "region_allowed"} <= set(
        checks
    )
    assert checks["quantity_min"] == {
        "check_statement": 'NOT EXISTS (SELECT 1 FROM "analytics"."orders" WHERE "quantity" < 1)'
    }
    assert "TIMESTAMPTZ '2100-01-01T00:00:00+00:00'" in checks["order_ts_max"]["check_statement"]


def test_table_checks_reconcile_with_the_ledger(contract: Contract) -> None:
    checks = table_checks(contract)
    assert set(checks) == {
        "total_price_is_product",
        "rows_match_ledger",
        "rows_come_from_live_files",
        "duplicates_have_a_row",
    }
    assert checks["total_price_is_product"]["check_statement"] == (
        'NOT EXISTS (SELECT 1 FROM "analytics"."orders" WHERE "total_price" IS DISTINCT FROM "quantity" * "unit_price")'
    )
    assert '"etl"."orders_file_ledger"' in checks["rows_match_ledger"]["check_statement"]
    assert '"etl"."orders_duplicates"' in checks["rows_match_ledger"]["check_statement"]


def test_identifiers_and_literals_are_quoted() -> None:
    contract = parse_contract(
        {
            "dataset": "odd",
            "table": "Sales.Q1_Orders",
            "key": ["group", "select"],
            "columns": {
                "group": {"type": "text", "required": True},
                "select": {"type": "integer", "required": True, "min": 1},
                "zone": {"type": "text", "allowed": ["O'Hare", "Main"], "on_blank": None},
            },
        }
    )
    checks = column_checks(contract)
    assert checks["key_is_unique"]["check_statement"] == (
        'NOT EXISTS (SELECT 1 FROM "Sales"."Q1_Orders" GROUP BY "group", "select" HAVING count(*) > 1)'
    )
    assert checks["zone_allowed"]["check_statement"].endswith("\"zone\" NOT IN ('O''Hare', 'Main'))")
    assert checks["select_min"]["check_statement"].endswith('"select" < 1)')
