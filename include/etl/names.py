"""Names every part of the pipeline shares: each dataset's DAG id, the lineage columns it adds to each row, the
columns of rejected-row files, and qualified table names (`schema.table`) as safely quoted identifiers.

A leaf: it imports nothing of the pipeline, so the contract model, the storage types and the loaders can all
import it.
"""

from __future__ import annotations

from psycopg import sql

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


def dag_id(dataset: str) -> str:
    """The id of a dataset's DAG: `<dataset>_pipeline`."""
    return f"{dataset}_pipeline"


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
