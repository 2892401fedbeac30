"""One registry of how contract columns are stored: Arrow types in Parquet, PostgreSQL types in
the warehouse (the names of the lineage columns and tables are in `names.py`).

The transform writes `output_schema(contract)`; the load creates and evolves tables with
`pg_type`; nothing else maps a contract type to a storage type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from include.etl.names import LOADED_AT, REJECTED_LEAD, SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED, unique_names

if TYPE_CHECKING:
    from include.etl.contract.model import Column, Contract, Derived


def arrow_type(column: Column | Derived) -> pa.DataType:
    """The Arrow type a contract column is stored as in processed Parquet."""
    if column.type == "integer":
        return pa.int64() if column.wide_integer else pa.int32()
    if column.type == "decimal":
        return pa.decimal128(column.precision, column.scale)
    return {
        "text": pa.string(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }[column.type]


def pg_type(column: Column | Derived) -> str:
    """The PostgreSQL type of a contract column."""
    if column.type == "integer":
        return "bigint" if column.wide_integer else "integer"
    if column.type == "decimal":
        return f"numeric({column.precision},{column.scale})"
    return {"text": "text", "boolean": "boolean", "date": "date", "timestamp": "timestamptz"}[column.type]


def output_schema(contract: Contract) -> pa.Schema:
    """Schema of processed Parquet files: contract columns, derived columns, source key and line."""
    fields = [pa.field(c.name, arrow_type(c), nullable=c.nullable) for c in contract.columns]
    fields += [pa.field(d.name, arrow_type(d)) for d in contract.derived]
    fields += [pa.field(SOURCE_KEY, pa.string(), nullable=False), pa.field(SOURCE_LINE, pa.int64(), nullable=False)]
    return pa.schema(fields)


def table_columns(contract: Contract) -> list[tuple[str, str, bool]]:
    """(name, PostgreSQL type, NOT NULL) of the loaded table, lineage included, in table order."""
    cols = [(c.name, pg_type(c), not c.nullable) for c in contract.columns]
    cols += [(d.name, pg_type(d), False) for d in contract.derived]
    cols += [
        (SOURCE_KEY, "text", True),
        (SOURCE_LINE, "bigint", True),
        (SOURCE_MODIFIED, "timestamptz", True),
        (LOADED_AT, "timestamptz", True),
    ]
    return cols


def rejected_schema(header: list[str]) -> pa.Schema:
    """Schema of rejected-row files: line, reason, the raw record if unreadable, then the file's columns."""
    # Unique across our own columns too: a re-dropped rejected file has them in its header.
    names = unique_names([*REJECTED_LEAD, *header])
    return pa.schema([pa.field(n, pa.int64() if n == SOURCE_LINE else pa.string()) for n in names])
