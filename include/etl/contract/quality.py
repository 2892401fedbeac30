"""Data-quality checks on the loaded table, derived from the contract.

Each check is one named SQL condition over the whole table, run by the common-sql provider's
SQLTableCheckOperator. The operator evaluates a condition once per row of its `table`, so the
checks run against a one-row relation (`ONE_ROW`) and carry their own subqueries: every check
is then meaningful on an empty table too (an empty table breaks no rule), and every identifier
is quoted (a column named `group`, a mixed-case table). Only NOT NULL columns get a null check.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import sql

from include.etl.contract.model import Column, Contract
from include.etl.names import SOURCE_KEY, table_ident

# The relation the check operators run their conditions against: exactly one row.
ONE_ROW = "(SELECT 1) AS one_row"


def _q(*parts: str) -> str:
    return sql.Identifier(*parts).as_string()


def _table(qualified: str) -> str:
    return table_ident(qualified).as_string()


def _literal(col: Column, value: Any) -> str:
    if col.type in ("integer", "decimal"):
        return str(Decimal(str(value)))
    if col.type == "date":
        return f"DATE '{date.fromisoformat(str(value)).isoformat()}'"
    if col.type == "timestamp":
        moment = datetime.fromisoformat(str(value))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(col.zone))
        return f"TIMESTAMPTZ '{moment.isoformat()}'"
    return sql.Literal(str(value)).as_string()


def _none(table: str, condition: str) -> dict[str, str]:
    return {"check_statement": f"NOT EXISTS (SELECT 1 FROM {table} WHERE {condition})"}


def column_checks(contract: Contract) -> dict[str, dict[str, str]]:
    """Per-column rules: NOT NULL columns hold no NULL, bounds, allowed values, lengths; the key is unique."""
    t = _table(contract.table)
    keys = ", ".join(_q(k) for k in contract.key)
    checks = {
        "key_is_unique": {"check_statement": f"NOT EXISTS (SELECT 1 FROM {t} GROUP BY {keys} HAVING count(*) > 1)"}
    }
    for col in contract.columns:
        c = _q(col.name)
        if not col.nullable:
            checks[f"{col.name}_not_null"] = _none(t, f"{c} IS NULL")
        if col.min is not None:
            checks[f"{col.name}_min"] = _none(t, f"{c} < {_literal(col, col.min)}")
        if col.max is not None:
            checks[f"{col.name}_max"] = _none(t, f"{c} > {_literal(col, col.max)}")
        if col.allowed:
            values = ", ".join(sql.Literal(v).as_string() for v in col.allowed)
            checks[f"{col.name}_allowed"] = _none(t, f"{c} NOT IN ({values})")
        if col.max_length is not None:
            checks[f"{col.name}_max_length"] = _none(t, f"length({c}) > {col.max_length}")
    return checks


def table_checks(contract: Contract) -> dict[str, dict[str, str]]:
    """Row rules (derived products) and the reconciliation of the table with the ledger."""
    t, d, ledger = _table(contract.table), _table(contract.duplicates_table), _table(contract.ledger_table)
    checks: dict[str, dict[str, str]] = {}
    for derived in contract.derived:
        if derived.product_of:
            product = " * ".join(_q(c) for c in derived.product_of)
            checks[f"{derived.name}_is_product"] = _none(t, f"{_q(derived.name)} IS DISTINCT FROM {product}")
    live = f"SELECT {_q(SOURCE_KEY)} FROM {ledger} WHERE status = 'loaded'"
    # Every live file version's best row of each of its keys is in the table or among the duplicates (a file's
    # other rows of a key are counted as duplicates, never kept; files loaded before that kept every clean row).
    checks["rows_match_ledger"] = {
        "check_statement": (
            f"(SELECT count(*) FROM {t}) + (SELECT count(*) FROM {d}) = "
            f"(SELECT coalesce(sum(coalesce(distinct_keys, rows_loaded + rows_duplicate)), 0) FROM {ledger} "
            "WHERE status = 'loaded')"
        )
    }
    checks["rows_come_from_live_files"] = _none(t, f"{_q(SOURCE_KEY)} NOT IN ({live})")
    match = " AND ".join(f"t.{_q(k)} = d.{_q(k)}" for k in contract.key)
    checks["duplicates_have_a_row"] = {
        "check_statement": f"NOT EXISTS (SELECT 1 FROM {d} d WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE {match}))"
    }
    return checks
