"""Data-quality checks on the loaded table, derived from the contract.

Returned as the arguments of the common-sql provider's SQLColumnCheckOperator and
SQLTableCheckOperator, so the DAG only wires them.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from include.etl.contract import Contract


def _literal(value: str) -> str:
    return sql.Literal(value).as_string()


def _ident(*parts: str) -> str:
    return sql.Identifier(*parts).as_string()


def column_checks(contract: Contract) -> dict[str, dict[str, Any]]:
    """Column checks: key present and unique, non-blank columns present, numeric bounds."""
    checks: dict[str, dict[str, Any]] = {
        contract.key: {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}},
    }
    for col in contract.columns:
        entry = checks.setdefault(col.name, {})
        entry.setdefault("null_check", {"equal_to": 0})
        if col.type in ("integer", "decimal") and col.min is not None:
            entry["min"] = {"geq_to": float(col.min)}
    return checks


def table_checks(contract: Contract, ledger_table: str) -> dict[str, dict[str, Any]]:
    """Row-level rules (derived products, allowed values) and the ledger reconciliation."""
    checks: dict[str, dict[str, Any]] = {}
    for d in contract.derived:
        if d.product_of:
            product = " * ".join(_ident(c) for c in d.product_of)
            checks[f"{d.name}_is_product"] = {"check_statement": f"{_ident(d.name)} = {product}"}
    for col in contract.columns:
        if col.allowed:
            values = ", ".join(_literal(v) for v in col.allowed)
            checks[f"{col.name}_allowed"] = {"check_statement": f"{_ident(col.name)} IN ({values})"}
    ledger = _ident(*ledger_table.split(".", 1))
    table = _ident(*contract.table.split(".", 1))
    checks["row_count_matches_ledger"] = {
        "check_statement": (f"(SELECT count(*) FROM {table}) = (SELECT COALESCE(sum(rows_inserted), 0) FROM {ledger})")
    }
    return checks
