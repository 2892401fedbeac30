"""The table checks on a real PostgreSQL: meaningful on an empty table, quiet on a good one, loud on a bad one.

Run through the common-sql SQLTableCheckOperator the DAG uses, on the `warehouse` connection.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from include.etl.contract.model import parse_contract
from include.etl.contract.quality import ONE_ROW, column_checks, table_checks
from include.etl.loading.load import prepare_tables
from local_stack import postgres

pytestmark = pytest.mark.integration

# A contract with awkward names: a column called "group", a mixed-case table, a nullable column.
ODD = parse_contract(
    {
        "dataset": "odd",
        "table": "Odd Schema.Odd_Table",
        "ledger_table": "Odd Etl.ledger",
        "key": "group",
        "latest_by": "group",
        "columns": {
            "group": {"type": "text", "required": True},
            "qty": {"type": "integer", "required": True, "min": 1, "max": 10},
            "price": {"type": "decimal", "precision": 8, "scale": 2, "on_blank": None},
            "zone": {"type": "text", "allowed": ["O'Hare", "Main"], "on_blank": None},
        },
        "derived": {"total": {"type": "decimal", "precision": 12, "scale": 2, "product_of": ["qty", "price"]}},
    }
)


def _check(checks: dict[str, dict[str, str]]) -> list[str]:
    """Run the checks as the DAG does; the names of the failing ones."""
    from airflow.providers.common.sql.operators.sql import SQLTableCheckOperator

    check = SQLTableCheckOperator(task_id="check", conn_id="warehouse", table=ONE_ROW, checks=checks)
    try:
        check.execute(context={})
    except Exception:
        return sorted(name for name, check in checks.items() if not check.get("success"))
    return []


@pytest.fixture
def odd(stack: Any) -> Any:
    dsn = postgres.dsn(stack.ports.postgres)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('DROP SCHEMA IF EXISTS "Odd Schema" CASCADE; DROP SCHEMA IF EXISTS "Odd Etl" CASCADE')
    with psycopg.connect(dsn) as conn:
        prepare_tables(conn, ODD)
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn
        conn.execute('DROP SCHEMA IF EXISTS "Odd Schema" CASCADE; DROP SCHEMA IF EXISTS "Odd Etl" CASCADE')


def _insert(conn: Any, group: str, qty: int, price: str | None, zone: str | None, total: str | None) -> None:
    conn.execute(
        'INSERT INTO "Odd Schema"."Odd_Table" ("group", qty, price, zone, total, source_key, source_line, '
        "source_modified) VALUES (%s, %s, %s, %s, %s, 'raw/odd/a.csv', 2, now())",
        (group, qty, price, zone, total),
    )
    conn.execute(
        'INSERT INTO "Odd Etl".ledger (source_key, etag, last_modified, status, rows_read, rows_loaded) '
        "VALUES ('raw/odd/a.csv', 'e', now(), 'loaded', 0, 0) ON CONFLICT DO NOTHING"
    )
    conn.execute('UPDATE "Odd Etl".ledger SET rows_read = rows_read + 1, rows_loaded = rows_loaded + 1')


def test_an_empty_table_breaks_no_rule(odd) -> None:
    assert _check(column_checks(ODD)) == []
    assert _check(table_checks(ODD)) == []


def test_good_rows_pass_including_null_in_a_nullable_column(odd) -> None:
    _insert(odd, "a", 2, "1.50", "O'Hare", "3.00")
    _insert(odd, "b", 1, None, None, None)  # a NULL factor gives a NULL product: not a violation
    assert _check(column_checks(ODD)) == []
    assert _check(table_checks(ODD)) == []


def test_each_broken_rule_is_named(odd) -> None:
    _insert(odd, "a", 11, "1.50", "Elsewhere", "99.00")
    assert _check(column_checks(ODD)) == ["qty_max", "zone_allowed"]
    assert _check(table_checks(ODD)) == ["total_is_product"]


def test_rows_the_ledger_does_not_account_for_fail_the_reconciliation(odd) -> None:
    _insert(odd, "a", 2, "1.50", None, "3.00")
    odd.execute('UPDATE "Odd Etl".ledger SET rows_read = 5, rows_loaded = 5')
    assert _check(table_checks(ODD)) == ["rows_match_ledger"]
    odd.execute("UPDATE \"Odd Etl\".ledger SET rows_read = 1, rows_loaded = 1, status = 'superseded'")
    assert _check(table_checks(ODD)) == ["rows_come_from_live_files", "rows_match_ledger"]
