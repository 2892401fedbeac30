"""Schema evolution: the contract's columns applied to the table before a load writes anything.

In the spirit of dlt's schema contracts. With `schema_evolution: evolve` (the default),
additive changes are applied by the load and reported: a new column (nullable: the rows loaded
before hold NULL; with a fill value: they hold the fill value, as a file without the column
would give; NOT NULL without one: only on an empty table), a wider type (integer -> bigint,
more digits in a numeric without fewer decimals), a NOT NULL column the contract now lets be
blank, a column the contract now makes NOT NULL where no loaded row holds NULL, and a column the
contract no longer has (kept, NULL in new rows). A table type wider than the contract's (bigint
where bounds now fit integer) is kept. Changes that would lose or reinterpret data already
loaded (a narrower scale, another type, NOT NULL over NULLs, another key) stop the load with
SchemaEvolutionError before anything is written; `freeze` stops it on any difference. The
docs/contracts.md ("Changing a contract") gives the migration path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from include.etl.contract.model import Contract
from include.etl.contract.schema import table_columns
from include.etl.names import schema_of, table_ident

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
    fills = {c.name: c.fill_value for c in contract.columns if not c.nullable and not c.rejects_blank}
    problems: list[str] = []
    changes: list[Change] = []
    kept: list[str] = []  # differences left as they are (a difference all the same under `freeze`)
    ident = table_ident(qualified)
    if key:
        pk = primary_key(cur, qualified)
        if pk and pk != tuple(contract.key):
            problems.append(f"the key changed from ({', '.join(pk)}) to ({', '.join(contract.key)})")
    for name, kind, notnull in wanted:
        col = sql.Identifier(name)
        if name not in current:
            changes.append(_added(cur, qualified, name, kind, notnull, fills, problems))
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
            elif _widens(kind, old_kind):  # the table's type holds every value the contract's does
                kept.append(f"column {name} keeps its wider type {old_kind} (the contract's is {kind})")
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
            nulls = _count(cur, qualified, sql.SQL("{} IS NULL").format(col))
            if nulls:
                problems.append(
                    f"column {name} would become NOT NULL, but {nulls} loaded row(s) hold NULL in it"
                    + (f" (fill them with {fills[name]!r} first)" if name in fills else "")
                )
            else:
                changes.append(
                    Change(
                        qualified,
                        f"column {name} is now NOT NULL (no loaded row holds NULL in it)",
                        sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(ident, col),
                    )
                )
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
        else:
            kept.append(f"column {name} ({old_kind}) is no longer in the contract: kept, NULL in new rows")
    if contract.schema_evolution == "freeze":
        problems += [f"{d} (schema_evolution: freeze)" for d in [c.description for c in changes] + kept]
    if problems:
        raise SchemaEvolutionError(
            f"{qualified} no longer matches the contract of {contract.dataset!r}: "
            + "; ".join(problems)
            + ". Nothing was loaded. To apply it, migrate the table yourself (see docs/contracts.md, "
            "'Changing a contract'), or drop the table and reprocess the files with the new contract."
        )
    return changes


def _added(
    cur: Any, qualified: str, name: str, kind: str, notnull: bool, fills: dict[str, Any], problems: list[str]
) -> Change:
    """A new column: nullable; NOT NULL with its fill value in the rows loaded before; or NOT NULL on an
    empty table. A NOT NULL column without a fill value cannot be added to rows that exist (a problem)."""
    ident, col = table_ident(qualified), sql.Identifier(name)
    add = sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(ident, col, sql.SQL(kind))
    if not notnull:
        return Change(qualified, f"added column {name} {kind}", add)
    if name in fills:
        fill = fills[name]
        ddl = sql.SQL("{} NOT NULL DEFAULT {}; ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(
            add, sql.Literal(fill), ident, col
        )
        return Change(qualified, f"added column {name} {kind} NOT NULL; rows loaded before hold {fill!r}", ddl)
    rows = _count(cur, qualified, sql.SQL("true"))
    if rows:
        problems.append(
            f"column {name} is new and may not be blank, but {rows} loaded row(s) have no value for it "
            "(give it on_blank: a fill value, or null)"
        )
    return Change(qualified, f"added column {name} {kind} NOT NULL", sql.SQL("{} NOT NULL").format(add))


def _count(cur: Any, qualified: str, condition: sql.Composable) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table_ident(qualified), condition))
    return int(cur.fetchone()[0])


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
