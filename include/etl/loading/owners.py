"""Which dataset owns which table: no two contracts may write the same table, ledger or duplicates table.

Two checks, because the two places can disagree (contracts of two deployments, one warehouse):

- `collisions(contracts)`, when the DAGs are parsed: every table a contract names (its table, its ledger,
  its duplicates table) against every other contract's, and against the names of their staging tables. Both
  contracts of a collision are refused (their problem is an import error of `dags/contract_errors.py`): at parse
  time nothing tells which one is right.
- `claim(cur, contract, ...)`, in the load and the listing, under the DDL lock: each table records its owner in
  its PostgreSQL comment (`csv-etl owner: <dataset>`); a table another dataset owns is never written, and the
  load fails with the owner's name. A table made before owners were recorded is taken by the first dataset that
  finds it empty, or whose own ledger has loaded files into it (its own earlier loads).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from psycopg import sql

from include.etl.contract.model import Contract
from include.etl.names import schema_of, table_ident

_OWNER = re.compile(r"^csv-etl owner: ([a-z][a-z0-9_]*)")


class OwnershipError(ValueError):
    """A table the contract names belongs to another dataset (or to nobody the pipeline knows)."""


def owned_tables(contract: Contract) -> dict[str, str]:
    """{qualified table name: what it is} for every table the dataset's loads write."""
    return {  # the ledger first: whether the others may be adopted depends on it
        contract.ledger_table: "ledger",
        contract.table: "table",
        contract.duplicates_table: "duplicates table",
    }


def _is_stage_name(qualified: str, other: Contract) -> bool:
    """Whether a table name is one of `other`'s staging tables (which its loads drop as leftovers)."""
    schema, name = schema_of(qualified), qualified.split(".", 1)[-1]
    return (
        schema == other.etl_schema and name.startswith(other.stage_prefix) and name[len(other.stage_prefix) :].isdigit()
    )


def collisions(contracts: Iterable[tuple[str, Contract]]) -> dict[str, list[str]]:
    """{dataset: its problems} for contracts that share a table with another one; `contracts` are (file, contract)."""
    named = list(contracts)
    problems: dict[str, list[str]] = {}
    claimed: dict[str, tuple[str, str, str]] = {}  # table -> (dataset, what, file)
    for path, contract in named:
        for table, what in owned_tables(contract).items():
            if table in claimed and claimed[table][0] != contract.dataset:
                other, other_what, other_path = claimed[table]
                message = (
                    f"{path}: its {what} {table} is also the {other_what} of dataset {other!r} ({other_path}); "
                    "two contracts never share a table: name another one"
                )
                problems.setdefault(contract.dataset, []).append(message)
                problems.setdefault(other, []).append(
                    f"{other_path}: its {other_what} {table} is also the {what} of dataset "
                    f"{contract.dataset!r} ({path}); two contracts never share a table: name another one"
                )
            else:
                claimed.setdefault(table, (contract.dataset, what, path))
            for _, rival in named:
                if rival.dataset != contract.dataset and _is_stage_name(table, rival):
                    problems.setdefault(contract.dataset, []).append(
                        f"{path}: its {what} {table} is named like a staging table of dataset {rival.dataset!r}, "
                        "whose loads drop such tables: name another one"
                    )
    return problems


def owner_comment(dataset: str, what: str) -> str:
    return f"csv-etl owner: {dataset} (the {what} of this dataset's pipeline; no other dataset writes it)"


def owner_of(cur: Any, qualified: str) -> tuple[bool, str | None]:
    """(whether the table exists, the dataset its comment names or None)."""
    cur.execute(
        "SELECT c.oid IS NOT NULL, obj_description(c.oid, 'pg_class') FROM (SELECT to_regclass(%s) AS oid) c",
        (table_ident(qualified).as_string(cur),),
    )
    exists, comment = cur.fetchone()
    found = _OWNER.match(comment or "")
    return bool(exists), found.group(1) if found else None


def mark(cur: Any, qualified: str, dataset: str, what: str) -> None:
    """Record the owner of a table this dataset made (or adopted)."""
    cur.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(table_ident(qualified), sql.Literal(owner_comment(dataset, what)))
    )


def claim(cur: Any, qualified: str, dataset: str, what: str, adopt: Callable[[], bool]) -> bool:
    """Make sure this dataset may write `qualified`: it owns it, or it is new, or it may adopt it. Returns
    whether the table exists.

    A table without an owner (made before owners were recorded, or by hand) is adopted when `adopt()` says so (it
    is empty, or this dataset's own files are in it); else OwnershipError. Call under the DDL lock.
    """
    exists, owner = owner_of(cur, qualified)
    if not exists or owner == dataset:
        return exists
    if owner is not None:
        raise OwnershipError(
            f"{qualified} belongs to dataset {owner!r} (its table comment): dataset {dataset!r} may not write it as "
            f"its {what}; name another table in include/contracts/{dataset}.yml"
        )
    if not adopt():
        raise OwnershipError(
            f"{qualified} exists, holds rows and names no owner: dataset {dataset!r} does not write it as its {what}. "
            f"If it is this dataset's, say so: COMMENT ON TABLE {qualified} IS '{owner_comment(dataset, what)}'"
        )
    mark(cur, qualified, dataset, what)
    return True


def _is_empty(cur: Any, qualified: str) -> bool:
    cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table_ident(qualified)))
    return bool(cur.fetchone()[0])


def _loaded_into(cur: Any, contract: Contract) -> bool:
    """Whether this dataset's ledger (already its own) records loaded files."""
    exists, _ = owner_of(cur, contract.ledger_table)
    if not exists:
        return False
    cur.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE status IN ('loaded', 'superseded', 'deleted'))").format(
            table_ident(contract.ledger_table)
        )
    )
    return bool(cur.fetchone()[0])


def check(cur: Any, contract: Contract, whats: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """Claim the dataset's tables (all, or those of `whats`: "table", "ledger", "duplicates table") before it
    writes them; returns the (table, what) that do not exist yet, to `mark` once made. Raises OwnershipError.

    A ledger without an owner is adopted when it is empty or has the dataset's default name
    (`etl.<dataset>_file_ledger`); the table and the duplicates table when empty or when the dataset's ledger
    records loaded files (its own loads made them before owners were recorded).
    """
    wanted = set(whats) if whats is not None else None
    missing = []
    default_ledger = f"etl.{contract.dataset}_file_ledger"
    for table, what in owned_tables(contract).items():
        if wanted is not None and what not in wanted:
            continue
        if what == "ledger":

            def adopt(table: str = table) -> bool:
                return table == default_ledger or _is_empty(cur, table)
        else:

            def adopt(table: str = table) -> bool:
                return _is_empty(cur, table) or _loaded_into(cur, contract)

        if not claim(cur, table, contract.dataset, what, adopt):
            missing.append((table, what))
    return missing
