"""One registry of how contract columns are stored: Arrow types in Parquet, PostgreSQL types in
the warehouse, the lineage columns the pipeline adds, and qualified table names.

The transform writes `output_schema(contract)`; the load creates and evolves tables with
`pg_type`; nothing else maps a contract type to a storage type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from psycopg import sql

if TYPE_CHECKING:
    from include.etl.contract import Column, Contract, Derived

# Lineage: which raw object (key and its LastModified) and which physical line a row came
# from, and when it was last written to the table.
SOURCE_KEY = "source_key"
SOURCE_LINE = "source_line"
SOURCE_MODIFIED = "source_modified"
LOADED_AT = "loaded_at"
LINEAGE_COLUMNS = (SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED, LOADED_AT)
# Columns of rejected-row files before the raw file's own columns.
REJECT_REASON = "reject_reason"
RAW_RECORD = "raw_record"
REJECTED_LEAD = (SOURCE_LINE, REJECT_REASON, RAW_RECORD)


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


def unique_names(header: list[str]) -> list[str]:
    """Header names made unique (`a`, `a` -> `a`, `a_2`) so they can be table columns."""
    seen: dict[str, int] = {}
    out = []
    for h in header:
        name = h or "unnamed"
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def table_ident(qualified: str) -> sql.Identifier:
    """`schema.table` (or `table`, in `public`) as a safely quoted identifier."""
    return sql.Identifier(schema_of(qualified), qualified.split(".", 1)[-1])


def schema_of(qualified: str) -> str:
    """The schema of `schema.table` (`public` when unqualified)."""
    return qualified.split(".", 1)[0] if "." in qualified else "public"


def sibling(qualified: str, name: str) -> str:
    """A table named `name` in the same schema as `qualified`."""
    return f"{schema_of(qualified)}.{name}"
