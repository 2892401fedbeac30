"""The merge's two ways of picking each key's winner leave the same tables.

Every staged row ranked (`staged_keys` unknown, or a retraction) and only the rows of keys staged more than
once ranked (the staged rows' key columns known) must give the same table, the same duplicates table and the
same counts, on a real PostgreSQL: loads of new keys, of keys the table holds, ties on `latest_by`, one and two
key columns.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from include.etl.contract.model import Contract, parse_contract
from include.etl.loading import staging
from include.etl.loading.load import prepare_tables
from include.etl.loading.merge import MergeResult, duplicate_keys, merge
from include.etl.names import SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED, table_ident
from tests.integration.conftest import fresh_database

pytestmark = pytest.mark.integration

TWO_KEYS = parse_contract(
    {
        "dataset": "visits",
        "table": "analytics.visits",
        "ledger_table": "etl.visits_ledger",
        "key": ["site", "visit_no"],
        "latest_by": "seen_at",
        "columns": {
            "site": {"type": "text", "required": True},
            "visit_no": {"type": "integer", "required": True},
            "seen_at": {"type": "timestamp", "required": True},
            "pages": {"type": "integer", "on_blank": None},
        },
    }
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def db(stack: Any) -> Iterator[psycopg.Connection]:
    with fresh_database(stack, "merge_test") as dsn, psycopg.connect(dsn) as conn:
        yield conn


def _batch(contract: Contract, rng: random.Random, load: int, files: int, rows: int, keys: int) -> pa.Table:
    """Staged rows of `files` files: keys drawn from `keys` values (so some repeat, within and across files),
    `latest_by` from a few values (so some tie), two files landing at the same second."""
    landed = [T0 + timedelta(seconds=rng.choice([0, 0, 5, 9])) for _ in range(files)]
    out: dict[str, list[Any]] = {name: [] for name in staging.stage_columns(contract)}
    for f in range(files):
        for line in range(2, rows + 2):
            k, quantity, price = rng.randrange(keys), rng.randrange(1, 9), rng.choice(["9.99", "10.00", "120.50"])
            order_ts = T0 + timedelta(hours=rng.randrange(3))
            values = {
                "order_id": f"O{k:05d}",
                "order_ts": order_ts,
                "customer_id": f"C{rng.randrange(50)}",
                "product_name": rng.choice(["Desk", "Lamp", "Chair"]),
                "category": rng.choice(["Office", "Home"]),
                "quantity": quantity,
                "unit_price": price,
                "region": rng.choice(["North", "South", "East", "West"]),
                "order_date": order_ts.date(),
                "total_price": str(quantity * Decimal(price)),
                "site": rng.choice(["a", "b", "c"]),
                "visit_no": k,
                "seen_at": T0 + timedelta(minutes=rng.randrange(3)),
                "pages": rng.choice([None, 1, 2, 3]),
                SOURCE_KEY: f"raw/dt=2026-03-0{load}/file_{f}.csv",
                SOURCE_LINE: line,
                SOURCE_MODIFIED: landed[f],
            }
            for name, column in out.items():
                column.append(values[name])
    return pa.table(out)


def _load(conn: psycopg.Connection, contract: Contract, rows: pa.Table, known_keys: bool) -> MergeResult:
    """One merge of `rows` through a staging table, as load_files runs it; with or without their key columns."""
    with conn.transaction(), conn.cursor() as cur:
        stage = staging.new_stage(cur, contract)
        cur.execute(stage.ddl)
        names = sql.SQL(", ").join(map(sql.Identifier, rows.schema.names))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage.name, names)) as copy:
            for row in rows.to_pylist():
                copy.write_row(list(row.values()))
        keys = [rows.select(list(contract.key))] if known_keys else None
        result = merge(cur, contract, stage.name, stage.columns, [], keys)
        staging.drop(cur, stage)
    return result


def _state(conn: psycopg.Connection, contract: Contract) -> tuple[list[Any], list[Any]]:
    """The table's rows and the duplicates table's rows, every staged column, in a fixed order."""
    cols = sql.SQL(", ").join(map(sql.Identifier, staging.stage_columns(contract)))
    table = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1, 2").format(cols, table_ident(contract.table)))
    dups = conn.execute(  # a file and line are one row
        sql.SQL("SELECT {} FROM {} ORDER BY {}, {}").format(
            cols, table_ident(contract.duplicates_table), sql.Identifier(SOURCE_KEY), sql.Identifier(SOURCE_LINE)
        )
    )
    return table.fetchall(), dups.fetchall()


def _reset(conn: psycopg.Connection, contract: Contract) -> None:
    for name in (contract.table, contract.duplicates_table):
        conn.execute(sql.SQL("TRUNCATE {}").format(table_ident(name)))
    conn.commit()


@pytest.mark.parametrize("contract_name", ["orders", "two keys"])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("files_sorted_by_key", [False, True])
def test_ranking_only_the_duplicated_keys_leaves_what_ranking_every_row_leaves(
    db, contract, contract_name, seed, files_sorted_by_key
):
    contract = TWO_KEYS if contract_name == "two keys" else contract
    prepare_tables(db, contract)
    rng = random.Random(seed)
    loads = [
        _batch(contract, rng, 1, files=3, rows=120, keys=150),  # new keys, repeated within and across files
        _batch(contract, rng, 2, files=2, rows=100, keys=200),  # keys the table holds, and new ones
        _batch(contract, rng, 3, files=1, rows=60, keys=400),  # one file: keys staged once, most already held
    ]
    if files_sorted_by_key:  # each file's rows in key order (no sort before the inserts), else in random order
        loads = [rows.sort_by([(SOURCE_KEY, "ascending"), *((k, "ascending") for k in contract.key)]) for rows in loads]
    states = {}
    for known_keys in (False, True):
        _reset(db, contract)
        steps = []
        for rows in loads:
            result = _load(db, contract, rows, known_keys)
            steps.append(
                (result.inserted, result.updated, result.kept_by_file, result.collapsed_by_file, _state(db, contract))
            )
        states[known_keys] = steps
    for every_row, duplicated_only in zip(states[False], states[True], strict=True):
        assert every_row == duplicated_only
    first_table, first_dups = states[True][0][4]
    assert first_dups, "the first load has keys staged more than once: its losers are in the duplicates table"
    # One row per key and file: each file's best row of a key (a file's other rows of it are counted, not kept).
    pairs = {
        (tuple(row[k] for k in contract.key), row[SOURCE_KEY])
        for row in loads[0].select([*contract.key, SOURCE_KEY]).to_pylist()
    }
    assert len(first_table) + len(first_dups) == len(pairs) < 360
    assert sum(states[True][0][3].values()) == 360 - len(pairs)
    assert states[True][1][1] > 0, "the second load updates rows the table holds"


def test_duplicate_keys_are_the_keys_staged_more_than_once() -> None:
    parts = [
        pa.table({"site": ["a", "a", "b"], "visit_no": [1, 2, 1]}),
        pa.table({"site": ["a", "c"], "visit_no": [1, 1]}),
    ]
    found = duplicate_keys(parts, ["site", "visit_no"])
    assert found is not None
    assert found.to_pylist() == [{"site": "a", "visit_no": 1}]
    none_twice = duplicate_keys([pa.table({"site": ["a", "b"], "visit_no": [1, 1]})], ["site", "visit_no"])
    assert none_twice is not None and none_twice.num_rows == 0
    assert duplicate_keys(None, ["site"]) is None  # unknown: every row is ranked
    clash = [pa.table({"site": ["a"]}), pa.table({"site": [1]})]  # files whose key types differ
    assert duplicate_keys(clash, ["site"]) is None


def test_files_sorted_by_key_count_as_ascending_runs() -> None:
    """Staged keys in ascending runs (a correction appended here and there) skip the sort before the inserts."""
    from include.etl.loading.merge import _ascending_runs

    sorted_file = [f"O{n:05d}" for n in range(200)] + ["O00007"]  # one re-sent order at the end
    assert _ascending_runs([pa.table({"k": sorted_file}), pa.table({"k": ["A", "B"]})], ["k"])
    shuffled = sorted_file[:]
    random.Random(0).shuffle(shuffled)
    assert not _ascending_runs([pa.table({"k": shuffled})], ["k"])
    assert not _ascending_runs([pa.table({"a": ["x"], "b": [1]})], ["a", "b"])  # two key columns: always sorted
