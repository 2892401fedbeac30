"""Merge staged rows into the table, keeping every clean row of the live file versions.

The table holds, per key, the row with the highest precedence among the clean rows of the
live (loaded) file versions: the latest `latest_by`, then the file that landed last (S3
LastModified), then the later file key, then the later line. The best row of each other file
holding the key is kept in the dataset's duplicates table (a file's other rows of a key can never
win while it is live, and leave with it: they are counted, not kept, so a file of a million copies
of one row costs one row there). So when a file is replaced, reprocessed or (if the contract
says so) deleted, its rows are taken out of both, and each key it held falls back to the best
remaining row: the result depends only on which versions are live, never on the order runs,
retries and events came in.

A rerun writes nothing: rows are only updated when a winning row differs from the stored one.

Picking each key's winner sorts the staged rows. When the load knows the staged rows' key columns (it
reads them as it stages the files), only the rows of keys staged more than once are sorted and ranked:
a load without duplicates sorts nothing. Both ways leave the same tables (tests/integration/test_merge.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from include.etl.contract.model import Contract
from include.etl.loading import staging
from include.etl.names import LOADED_AT, SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED, table_ident

IS_NEW = "etl_is_new"  # etl_latest: the table has no row with this key
WINS = "etl_wins"  # etl_latest: the staged winner replaces the table's row (or there is none)
STALE = "etl_stale"  # etl_latest: the table's row comes from a retracted file version
RANK = "etl_rank"  # etl_latest: the staged row's place among its key's staged rows (1: the best)
FILE_RANK = "etl_file_rank"  # its place among the staged rows of its key from its own file


@dataclass
class MergeResult:
    """What the merge changed, and each loaded file's rows that are now the table's."""

    inserted: int = 0
    updated: int = 0
    removed: int = 0
    kept_by_file: dict[str, int] = field(default_factory=dict)
    # Per file: its rows that lost to a better row of their key in the same file (counted, never kept).
    collapsed_by_file: dict[str, int] = field(default_factory=dict)
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


def duplicate_keys(staged_keys: Sequence[pa.Table] | None, key: Sequence[str]) -> pa.Table | None:
    """The key values more than one staged row holds: one column per key column, one row per such key.

    `staged_keys` are the key columns of every staged row (staging.StageResult.keys). None if they are
    unknown or cannot be combined (files whose key types differ): the merge then ranks every row. Found by
    sorting the keys and comparing neighbours: about twice the keys' bytes at the peak (a hash table
    takes five to eight times).
    """
    if staged_keys is None:
        return None
    try:
        keys = pa.concat_tables(staged_keys).select(list(key)) if staged_keys else None
        if keys is None or keys.num_rows < 2:
            return pa.table({k: pa.array([], pa.null()) for k in key})
        ordered = keys.take(pc.sort_indices(keys, sort_keys=[(k, "ascending") for k in key]))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    later, earlier = ordered.slice(1), ordered.slice(0, ordered.num_rows - 1)
    same = functools.reduce(pc.and_, (pc.equal(later[k], earlier[k]) for k in key))
    return later.filter(same).group_by(list(key)).aggregate([])


def _ascending_runs(staged_keys: Sequence[pa.Table], key: Sequence[str]) -> bool:
    """Whether the staged batches hold their (one-column) keys in ascending runs, as files sorted by key do: at
    most one step down in 64 (a few corrections appended to a sorted file still count)."""
    if len(key) != 1:
        return False
    rows = steps_down = 0
    for part in staged_keys:
        column = part.column(key[0])
        if len(column) > 1:
            rows += len(column)
            steps_down += pc.sum(pc.greater(column.slice(0, len(column) - 1), column.slice(1))).as_py() or 0
    return steps_down * 64 <= rows


def merge(
    cur: Any,
    contract: Contract,
    stage: sql.Composable,
    columns: list[str],
    retract: Sequence[str],
    staged_keys: Sequence[pa.Table] | None = None,
) -> MergeResult:
    """Merge the staged rows; rows of the `retract` file keys (replaced, reprocessed, deleted) are taken out first.

    With `staged_keys` (the key columns of every staged row) and nothing to retract, only the rows of keys
    staged more than once are ranked (or none: no sort at all); otherwise every staged row is.
    """
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
        "file_rank": sql.Identifier(FILE_RANK),
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
    # How a staged winner compares with the table's row of its key (t: none if the key is new).
    fmt["compared"] = sql.SQL(
        "t.{first_key} IS NULL AS {is_new}, coalesce(t.{sk} = ANY(%(retract)s), false) AS {stale}, "
        "t.{first_key} IS NULL OR t.{sk} = ANY(%(retract)s) OR {l_prec} > {t_prec} AS {wins}"
    ).format(**fmt)
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
    cur.execute("DROP TABLE IF EXISTS pg_temp.etl_latest, pg_temp.etl_ranked, pg_temp.etl_duplicate_keys")
    duplicated = None if retract else duplicate_keys(staged_keys, contract.key)
    if staged_keys is None or duplicated is None:
        result.collapsed_by_file = _rank_every_row(cur, fmt, args)
    else:
        # etl_latest in key order, unless the staged rows come in ascending runs (files sorted by key): the inserts
        # into the table's key index are then local, as after the full sort (in random order they cost twice as much).
        in_key_order = _ascending_runs(staged_keys, contract.key)
        order = sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(k)) for k in contract.key)
        fmt["key_order"] = sql.SQL("") if in_key_order else sql.SQL(" ORDER BY {}").format(order)
        result.collapsed_by_file = _rank_duplicated_keys(cur, contract, fmt, args, duplicated)
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


def _rank_every_row(cur: Any, fmt: dict[str, Any], args: dict[str, Any]) -> dict[str, int]:
    """etl_latest: each key's best staged row, compared with the table's row; the others to the duplicates."""
    # Every staged row ranked within its key in one sort (the precedence is a total order: file and line are
    # unique), and compared with the table's row.
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE etl_latest ON COMMIT DROP AS "
            "SELECT l.*, {compared} FROM (SELECT {cols}, row_number() OVER (PARTITION BY {keys} ORDER BY {desc}) "
            "AS {rank}, row_number() OVER (PARTITION BY {keys}, {sk} ORDER BY {desc}) AS {file_rank} FROM {stage}) l "
            "LEFT JOIN {table} t ON {lt}"
        ).format(**fmt),
        args,
    )
    collapsed = _collapsed_by_file(cur, "etl_latest", fmt)
    # Staged rows that lost to another staged row of their key: out of etl_latest; each other file's best one into
    # the duplicates.
    cur.execute(
        sql.SQL(
            "WITH losers AS (DELETE FROM etl_latest WHERE {rank} > 1 RETURNING {cols}, {file_rank}) "
            "INSERT INTO {dups} ({cols}) SELECT {cols} FROM losers WHERE {file_rank} = 1"
        ).format(**fmt)
    )
    return collapsed


def _collapsed_by_file(cur: Any, ranked: str, fmt: dict[str, Any]) -> dict[str, int]:
    """Per source key, the rows of a ranked temp table that are not their file's best row for their key."""
    query = sql.SQL("SELECT {sk}, count(*) FROM {ranked} WHERE {file_rank} > 1 GROUP BY 1")
    cur.execute(query.format(ranked=sql.Identifier(ranked), **fmt))
    return {k: int(n) for k, n in cur.fetchall()}


def _rank_duplicated_keys(
    cur: Any, contract: Contract, fmt: dict[str, Any], args: dict[str, Any], duplicated: pa.Table
) -> dict[str, int]:
    """etl_latest as `_rank_every_row` makes it, with only the rows of the duplicated keys sorted and ranked."""
    if not duplicated.num_rows:  # every staged key is staged once: every staged row is its key's best
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE etl_latest ON COMMIT DROP AS "
                "SELECT l.*, {compared} FROM (SELECT {cols} FROM {stage}) l LEFT JOIN {table} t ON {lt}{key_order}"
            ).format(**fmt),
            args,
        )
        return {}
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE etl_duplicate_keys ON COMMIT DROP AS SELECT {keys} FROM {stage} WITH NO DATA"
        ).format(**fmt)
    )
    staging.copy_arrow(cur, sql.Identifier("etl_duplicate_keys"), duplicated)
    cur.execute("ANALYZE etl_duplicate_keys")
    duplicated_key = sql.SQL("EXISTS (SELECT 1 FROM etl_duplicate_keys d WHERE {})").format(
        _key_match(contract, "d", "s")
    )
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE etl_ranked ON COMMIT DROP AS "
            "SELECT {cols}, row_number() OVER (PARTITION BY {keys} ORDER BY {desc}) AS {rank}, "
            "row_number() OVER (PARTITION BY {keys}, {sk} ORDER BY {desc}) AS {file_rank} "
            "FROM {stage} s WHERE {duplicated}"
        ).format(duplicated=duplicated_key, **fmt)
    )
    cur.execute(
        sql.SQL(
            "INSERT INTO {dups} ({cols}) SELECT {cols} FROM etl_ranked WHERE {rank} > 1 AND {file_rank} = 1"
        ).format(**fmt)
    )
    collapsed = _collapsed_by_file(cur, "etl_ranked", fmt)
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE etl_latest ON COMMIT DROP AS "
            "SELECT l.*, {compared} FROM (SELECT {cols} FROM {stage} s WHERE NOT {duplicated} "
            "UNION ALL SELECT {cols} FROM etl_ranked WHERE {rank} = 1) l LEFT JOIN {table} t ON {lt}{key_order}"
        ).format(duplicated=duplicated_key, **fmt),
        args,
    )
    return collapsed


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
