"""Merge staged rows into the table, keeping every clean row of the live file versions.

The table holds, per key, the row with the highest precedence among the clean rows of the
live (loaded) file versions: the latest `latest_by`, then the file that landed last (S3
LastModified), then the later file key, then the later line. Every other such row is kept in
the dataset's duplicates table. So when a file is replaced, reprocessed or (if the contract
says so) deleted, its rows are taken out of both, and each key it held falls back to the best
remaining row: the result depends only on which versions are live, never on the order runs,
retries and events came in.

A rerun writes nothing: rows are only updated when a winning row differs from the stored one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from include.etl.contract import Contract
from include.etl.schema import LOADED_AT, SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED, table_ident

IS_NEW = "etl_is_new"  # etl_latest: the table has no row with this key
WINS = "etl_wins"  # etl_latest: the staged winner replaces the table's row (or there is none)
STALE = "etl_stale"  # etl_latest: the table's row comes from a retracted file version
RANK = "etl_rank"  # etl_latest: the staged row's place among its key's staged rows (1: the best)


@dataclass
class MergeResult:
    """What the merge changed, and each loaded file's rows that are now the table's."""

    inserted: int = 0
    updated: int = 0
    removed: int = 0
    kept_by_file: dict[str, int] = field(default_factory=dict)
    removed_by_file: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # dedup (pick each key's winner), merge (write)


def precedence(contract: Contract) -> tuple[str, ...]:
    """The order of row versions of one key, highest last: latest_by, landing time, file, line."""
    return (contract.latest_by, SOURCE_MODIFIED, SOURCE_KEY, SOURCE_LINE)


def _tuple(names: Sequence[str], alias: str) -> sql.Composed:
    return sql.SQL("({})").format(sql.SQL(", ").join(sql.SQL(alias + ".{}").format(sql.Identifier(n)) for n in names))


def _key_match(contract: Contract, left: str, right: str) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL(f"{left}.{{0}} = {right}.{{0}}").format(sql.Identifier(k)) for k in contract.key
    )


def merge(
    cur: Any, contract: Contract, stage: sql.Composable, columns: list[str], retract: Sequence[str]
) -> MergeResult:
    """Merge the staged rows; rows of the `retract` file keys (replaced, reprocessed, deleted) are taken out first."""
    table = table_ident(contract.table)
    dups = table_ident(contract.duplicates_table)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    keys = sql.SQL(", ").join(map(sql.Identifier, contract.key))
    prec = precedence(contract)
    args = {"retract": list(retract)}
    fmt = {
        "table": table,
        "dups": dups,
        "stage": stage,
        "cols": cols,
        "keys": keys,
        "sk": sql.Identifier(SOURCE_KEY),
        "is_new": sql.Identifier(IS_NEW),
        "wins": sql.Identifier(WINS),
        "stale": sql.Identifier(STALE),
        "rank": sql.Identifier(RANK),
        "loaded_at": sql.Identifier(LOADED_AT),
        "t_cols": sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns),
        "l_cols": sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(c)) for c in columns),
        "d_cols": sql.SQL(", ").join(sql.SQL("d.{}").format(sql.Identifier(c)) for c in columns),
        "lt": _key_match(contract, "l", "t"),
        "dt": _key_match(contract, "d", "t"),
        "l_prec": _tuple(prec, "l"),
        "t_prec": _tuple(prec, "t"),
        "desc": sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(n)) for n in prec),
        "first_key": sql.Identifier(contract.key[0]),
    }
    result = MergeResult()
    clock = time.perf_counter()
    if retract:
        # Keys whose table row comes from a retracted file fall back to their best other row:
        # those rows leave the duplicates table and compete with the staged rows.
        cur.execute(
            sql.SQL(
                "INSERT INTO {stage} ({cols}) SELECT {d_cols} FROM {dups} d JOIN {table} t ON {dt} "
                "WHERE t.{sk} = ANY(%(retract)s) AND d.{sk} <> ALL(%(retract)s)"
            ).format(**fmt),
            args,
        )
        cur.execute(
            sql.SQL("DELETE FROM {dups} d USING {table} t WHERE {dt} AND t.{sk} = ANY(%(retract)s)").format(**fmt),
            args,
        )
        cur.execute(sql.SQL("DELETE FROM {dups} WHERE {sk} = ANY(%(retract)s)").format(**fmt), args)
    # ON COMMIT DROP only fires at the outermost commit; inside a caller's transaction, clean up here.
    cur.execute("DROP TABLE IF EXISTS pg_temp.etl_latest")
    # Every staged row ranked within its key in one sort (the precedence is a total order: file and line are
    # unique), and compared with the table's row.
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE etl_latest ON COMMIT DROP AS "
            "SELECT l.*, t.{first_key} IS NULL AS {is_new}, "
            "coalesce(t.{sk} = ANY(%(retract)s), false) AS {stale}, "
            "t.{first_key} IS NULL OR t.{sk} = ANY(%(retract)s) OR {l_prec} > {t_prec} AS {wins} "
            "FROM (SELECT {cols}, row_number() OVER (PARTITION BY {keys} ORDER BY {desc}) AS {rank} "
            "FROM {stage}) l "
            "LEFT JOIN {table} t ON {lt}"
        ).format(**fmt),
        args,
    )
    # Staged rows that lost to another staged row of their key: out of etl_latest, into the duplicates.
    cur.execute(
        sql.SQL(
            "WITH losers AS (DELETE FROM etl_latest WHERE {rank} > 1 RETURNING {cols}) "
            "INSERT INTO {dups} ({cols}) SELECT {cols} FROM losers"
        ).format(**fmt)
    )
    result.seconds["dedup"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    # Per file: its rows that are now the table's, and its rows whose key the table already holds.
    cur.execute(
        sql.SQL(
            "SELECT {sk}, count(*) FILTER (WHERE {wins}), count(*) FILTER (WHERE NOT {is_new}) "
            "FROM etl_latest GROUP BY 1"
        ).format(**fmt)
    )
    per_file = cur.fetchall()
    result.kept_by_file = {k: int(kept) for k, kept, _ in per_file if kept}
    if any(existing for _, _, existing in per_file):  # else only new keys (a first load, new data): inserts only
        result.updated = _merge_existing(cur, contract, columns, fmt)
    cur.execute(
        sql.SQL(
            "INSERT INTO {table} ({cols}, {loaded_at}) SELECT {l_cols}, now() FROM etl_latest l WHERE l.{is_new}"
        ).format(**fmt)
    )
    result.inserted = cur.rowcount
    if retract:
        # Keys only retracted files held, with no row left anywhere: gone from the table.
        cur.execute(
            sql.SQL(
                "WITH gone AS (DELETE FROM {table} t WHERE t.{sk} = ANY(%(retract)s) "
                "AND NOT EXISTS (SELECT 1 FROM etl_latest l WHERE {lt}) RETURNING t.{sk}) "
                "SELECT {sk}, count(*) FROM gone GROUP BY 1"
            ).format(**fmt),
            args,
        )
        result.removed_by_file = {k: int(n) for k, n in cur.fetchall()}
        result.removed = sum(result.removed_by_file.values())
    result.seconds["merge"] = round(time.perf_counter() - clock, 3)
    return result


def _merge_existing(cur: Any, contract: Contract, columns: list[str], fmt: dict[str, Any]) -> int:
    """For keys the table holds: staged winners that lose to the table's row, and table rows a staged winner
    displaces, go to the duplicates table; changed winners update the table. Returns the rows updated."""
    cur.execute(
        sql.SQL("INSERT INTO {dups} ({cols}) SELECT {l_cols} FROM etl_latest l WHERE NOT l.{wins}").format(**fmt)
    )
    cur.execute(
        sql.SQL(
            "INSERT INTO {dups} ({cols}) SELECT {t_cols} FROM {table} t JOIN etl_latest l ON {lt} "
            "WHERE NOT l.{is_new} AND l.{wins} AND NOT l.{stale}"
        ).format(**fmt)
    )
    non_key = [c for c in columns if c not in contract.key]
    cur.execute(
        sql.SQL(
            """
            WITH updated AS (
                UPDATE {table} AS t SET {updates}, {loaded_at} = now()
                FROM etl_latest l
                WHERE {lt} AND NOT l.{is_new} AND l.{wins} AND ({old}) IS DISTINCT FROM ({new})
                RETURNING t.{sk}
            )
            SELECT count(*) FROM updated
            """
        ).format(
            updates=sql.SQL(", ").join(sql.SQL("{0} = l.{0}").format(sql.Identifier(c)) for c in non_key),
            old=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in non_key),
            new=sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(c)) for c in non_key),
            **fmt,
        )
    )
    return int(cur.fetchone()[0])
