"""Schema evolution: the contract's columns applied to the table before a load writes anything.

In the spirit of dlt's schema contracts. With `schema_evolution: evolve` (the default),
additive changes are applied by the load and reported: a new column (added nullable, so the
rows already loaded keep theirs as NULL), a wider type (integer -> bigint, more digits in a
numeric without fewer decimals), a NOT NULL column the contract now allows to be blank, and a
column the contract no longer has (kept, NULL in new rows). Changes that would lose or
reinterpret data already loaded (a narrower type or scale, another type, a nullable column
made NOT NULL, another key) stop the load with SchemaEvolutionError before anything is
written; `freeze` stops it on any difference. The README gives the migration path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from include.etl.contract import Contract
from include.etl.schema import schema_of, table_columns, table_ident

_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")


class SchemaEvolutionError(Exception):
    """The contract changed the table in a way that cannot be applied to the rows already loaded."""


@dataclass(frozen=True)
class Change:
    """One additive change to a table, and the DDL that applies it."""

    table: str
    description: str
    ddl: sql.Composable


def existing_columns(cur: Any, qualified: str) -> dict[str, tuple[str, bool]] | None:
    """{column: (type as in DDL, NOT NULL)} of a table, or None if it does not exist."""
    cur.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (schema_of(qualified), qualified.split(".", 1)[-1]),
    )
    rows = cur.fetchall()
    if not rows:
        return None
    return {name: (_normalize(kind), notnull) for name, kind, notnull in rows}


def primary_key(cur: Any, qualified: str) -> tuple[str, ...]:
    cur.execute(
        """
        SELECT a.attname FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = %s::regclass AND i.indisprimary
        ORDER BY array_position(i.indkey, a.attnum)
        """,
        (table_ident(qualified).as_string(cur),),
    )
    return tuple(r[0] for r in cur.fetchall())


def _normalize(kind: str) -> str:
    return {
        "timestamp with time zone": "timestamptz",
        "character varying": "text",
    }.get(kind, kind.replace(", ", ","))


def plan(cur: Any, contract: Contract, qualified: str, key: bool) -> list[Change]:
    """The changes that bring an existing table to the contract; raises SchemaEvolutionError.

    `key`: the table carries the contract's key as its primary key (the loaded table, not the
    duplicates table).
    """
    current = existing_columns(cur, qualified)
    if current is None:
        return []
    wanted = table_columns(contract)
    problems: list[str] = []
    changes: list[Change] = []
    ident = table_ident(qualified)
    if key:
        pk = primary_key(cur, qualified)
        if pk and pk != tuple(contract.key):
            problems.append(f"the key changed from ({', '.join(pk)}) to ({', '.join(contract.key)})")
    for name, kind, notnull in wanted:
        col = sql.Identifier(name)
        if name not in current:
            changes.append(
                Change(
                    qualified,
                    f"added column {name} {kind}",
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(ident, col, sql.SQL(kind)),
                )
            )
            continue
        old_kind, old_notnull = current[name]
        if old_kind != kind:
            if _widens(old_kind, kind):
                changes.append(
                    Change(
                        qualified,
                        f"widened column {name} from {old_kind} to {kind}",
                        sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(ident, col, sql.SQL(kind)),
                    )
                )
            else:
                problems.append(f"column {name} would change from {old_kind} to {kind}, which can change loaded values")
        if old_notnull and not notnull:
            changes.append(
                Change(
                    qualified,
                    f"column {name} may now be NULL",
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(ident, col),
                )
            )
        elif notnull and not old_notnull:
            problems.append(f"column {name} would become NOT NULL, but loaded rows may hold NULL")
    names = {n for n, _, _ in wanted}
    for name, (old_kind, old_notnull) in current.items():
        if name in names:
            continue
        if old_notnull:
            changes.append(
                Change(
                    qualified,
                    f"column {name} ({old_kind}) is no longer in the contract: kept, NULL in new rows",
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(ident, sql.Identifier(name)),
                )
            )
    if contract.schema_evolution == "freeze" and changes:
        problems += [f"{c.description} (schema_evolution: freeze)" for c in changes]
    if problems:
        raise SchemaEvolutionError(
            f"{qualified} no longer matches the contract of {contract.dataset!r}: "
            + "; ".join(problems)
            + ". Nothing was loaded. To apply it, migrate the table yourself (see the README, "
            "'Changing a contract'), or drop the table and reprocess the files with the new contract."
        )
    return changes


def _widens(old: str, new: str) -> bool:
    if (old, new) == ("integer", "bigint"):
        return True
    a, b = _NUMERIC.match(old), _NUMERIC.match(new)
    if a and b:
        (p1, s1), (p2, s2) = map(int, a.groups()), map(int, b.groups())
        return s2 >= s1 and p2 - s2 >= p1 - s1
    if a and new == "numeric":
        return True
    return (
        old in ("integer", "bigint")
        and b is not None
        and int(b.group(1)) - int(b.group(2)) >= (10 if old == "integer" else 19)
    )


def apply(cur: Any, changes: list[Change]) -> None:
    for change in changes:
        cur.execute(change.ddl)
