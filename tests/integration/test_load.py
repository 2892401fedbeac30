"""The load against a real PostgreSQL: COPY + merge, dedup rules, ledger, atomicity."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from include.etl import storage
from include.etl.config import PipelineSettings
from include.etl.load import load_files
from include.etl.transform import FileResult, transform_file
from local_stack import postgres
from tests.integration.conftest import HEADER, fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture
def db(stack: Any) -> Iterator[psycopg.Connection]:
    """A fresh, empty database for each test."""
    with fresh_database(stack, "load_test") as dsn, psycopg.connect(dsn) as conn:
        yield conn


@pytest.fixture
def s3(stack: Any) -> Any:
    client = stack.s3()
    for bucket in ("raw", "processed"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="load-test/"):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
    return client


SETTINGS = PipelineSettings(
    raw_prefix="load-test/raw", processed_prefix="load-test/processed", rejected_prefix="load-test/rejected"
)


def _put_and_transform(s3: Any, contract: Any, name: str, body: str, day: str = "2026-01-01") -> FileResult:
    key = f"load-test/raw/dt={day}/{name}"
    s3.put_object(Bucket="raw", Key=key, Body=body.encode())
    obj = next(o for o in storage.list_partition(s3, "raw", f"load-test/raw/dt={day}/")[0] if o.key == key)
    return transform_file(s3, obj, contract, SETTINGS)


def _connect(conn: psycopg.Connection) -> Any:
    """Another connection to the test database (the load's COPY workers)."""
    return lambda: psycopg.connect(conn.info.dsn)


def _staging_tables(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'load_stage%'")]


def _rows(conn: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    cur = conn.execute(
        "SELECT order_id, product_name, quantity, unit_price, total_price, source_key FROM analytics.orders"
    )
    return {r[0]: r[1:] for r in cur.fetchall()}


def test_merge_keeps_latest_order_ts_then_later_file_then_later_line(db, s3, contract) -> None:
    a = _put_and_transform(
        s3,
        contract,
        "a.csv",
        HEADER
        + "A,2026-01-01 10:00,c,old,x,1,1.00,North\n"  # superseded by b.csv's later order_ts
        + "B,2026-01-01 10:00,c,a-line2,x,1,1.00,North\n"  # tie with b.csv: the later file wins
        + "C,2026-01-01 10:00,c,first,x,1,1.00,North\n"
        + "C,2026-01-01 10:00,c,second,x,1,1.00,North\n"  # tie in one file: the later line wins
        + "D,2026-01-01 10:00,c,same,x,1,1.00,North\n"
        + "D,2026-01-01 10:00,c,same,x,1,1.00,North\n",  # exact duplicate
    )
    b = _put_and_transform(
        s3,
        contract,
        "b.csv",
        HEADER + "A,2026-01-01 12:00,c,new,x,2,1.50,North\nB,2026-01-01 10:00,c,b-line2,x,1,1.00,North\n",
    )
    report = load_files(db, s3, contract, SETTINGS, [a, b], "run-1")
    rows = _rows(db)
    assert rows["A"][:4] == ("new", 2, Decimal("1.50"), Decimal("3.00"))
    assert rows["B"][0] == "b-line2"
    assert rows["C"][0] == "second"
    assert rows["D"][0] == "same"
    assert len(rows) == 4
    per_file = {f["source_key"].rsplit("/", 1)[-1]: f for f in report.files}
    # a.csv: 6 read, A and B lost to b.csv, C and D each once -> 2 loaded, 4 duplicates.
    assert (per_file["a.csv"]["rows_loaded"], per_file["a.csv"]["rows_duplicate"]) == (2, 4)
    assert (per_file["b.csv"]["rows_loaded"], per_file["b.csv"]["rows_duplicate"]) == (2, 0)
    for f in report.files:
        assert f["rows_read"] == f["rows_loaded"] + f["rows_rejected"] + f["rows_duplicate"]
    ledger = db.execute("SELECT count(*), sum(rows_inserted) FROM etl.file_ledger").fetchone()
    assert ledger == (2, 4)


def test_reload_of_same_files_is_skipped_and_changes_nothing(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")
    before = db.execute("SELECT order_id, loaded_at FROM analytics.orders").fetchall()
    report = load_files(db, s3, contract, SETTINGS, [a], "run-2")
    assert report.skipped == [a.source_key]
    assert report.rows_staged == 0
    assert db.execute("SELECT order_id, loaded_at FROM analytics.orders").fetchall() == before
    assert db.execute("SELECT run_id FROM etl.file_ledger").fetchall() == [("run-1",)]


def test_reprocess_merges_again_without_changing_unchanged_rows(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")
    before = db.execute("SELECT loaded_at FROM analytics.orders").fetchall()
    report = load_files(db, s3, contract, SETTINGS, [a], "run-2", reprocess=True)
    assert report.rows_staged == 1
    assert (report.rows_inserted, report.rows_updated) == (0, 0)
    assert db.execute("SELECT loaded_at FROM analytics.orders").fetchall() == before
    assert db.execute("SELECT rows_inserted, run_id FROM etl.file_ledger").fetchone() == (1, "run-2")


def test_a_changed_file_version_is_loaded_and_later_load_wins(db, s3, contract) -> None:
    v1 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,v1,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [v1], "run-1")
    v2 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 09:00,c,v2,x,1,1.00,North\n")
    assert v2.etag != v1.etag
    report = load_files(db, s3, contract, SETTINGS, [v2], "run-2")
    assert report.rows_updated == 1
    assert _rows(db)["A"][0] == "v2"  # across runs, the most recent load wins
    assert db.execute("SELECT count(*) FROM etl.file_ledger").fetchone() == (2,)


def test_failure_mid_load_loads_nothing(db, s3, contract) -> None:
    base = _put_and_transform(s3, contract, "base.csv", HEADER + "Z,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [base], "run-0")
    good = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    missing = FileResult(
        **{
            **good.to_dict(),
            "source_key": "load-test/raw/dt=2026-01-01/gone.csv",
            "processed_key": "load-test/processed/dt=2026-01-01/gone.parquet",
        }
    )
    with pytest.raises(ClientError, match=r"404|Not Found|NoSuchKey"):
        load_files(db, s3, contract, SETTINGS, [good, missing], "run-1", connect=_connect(db))
    db.rollback()
    assert db.execute("SELECT order_id FROM analytics.orders").fetchall() == [("Z",)]
    assert db.execute("SELECT source_key FROM etl.file_ledger").fetchall() == [(base.source_key,)]
    assert _staging_tables(db) == []  # committed by the COPY connections, dropped after the failure


def test_whole_file_rejection_is_recorded_in_ledger(db, s3, contract) -> None:
    bad = _put_and_transform(s3, contract, "bad.csv", "order_id,quantity\n1,2\n3,4\n")
    report = load_files(db, s3, contract, SETTINGS, [bad], "run-1")
    assert report.files[0]["status"] == "rejected"
    row = db.execute("SELECT status, reason, rows_read, rows_rejected FROM etl.file_ledger").fetchone()
    assert row[0] == "rejected" and "missing required column" in row[1] and row[2:] == (2, 2)


def test_copy_handles_text_that_needs_quoting(db, s3, contract) -> None:
    body = HEADER + 'A,2026-01-01 10:00,c,"Webcam, 1080p ""pro""",x,1,1.00,North\n'
    a = _put_and_transform(s3, contract, "q.csv", body)
    load_files(db, s3, contract, SETTINGS, [a], "run-1")
    assert _rows(db)["A"][0] == 'Webcam, 1080p "pro"'


def _stricter(contract: Any) -> Any:
    """The contract after a rule change: quantities above 5 are now rejected."""
    columns = tuple(replace(c, max=5) if c.name == "quantity" else c for c in contract.columns)
    return replace(contract, columns=columns)


def _content(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT order_id, quantity, source_key, source_line FROM analytics.orders ORDER BY order_id"
    ).fetchall()


FILE_A = HEADER + "X,2026-01-01 10:00,c,p,x,2,1.00,North\nY,2026-01-01 10:00,c,p,x,9,1.00,North\n"
FILE_B = HEADER + "X,2026-01-01 12:00,c,p,x,7,1.00,North\nZ,2026-01-01 10:00,c,p,x,3,1.00,North\n"


@pytest.mark.parametrize("order", [["b", "a"], ["ab"]], ids=["latest-day-first", "one-run"])
def test_reprocess_after_a_contract_change_equals_a_clean_load(db, s3, contract, order) -> None:
    old = {n: _put_and_transform(s3, contract, f"{n}.csv", body) for n, body in (("a", FILE_A), ("b", FILE_B))}
    load_files(db, s3, contract, SETTINGS, [old["a"]], "run-a")
    load_files(db, s3, contract, SETTINGS, [old["b"]], "run-b")
    assert [r[:2] for r in _content(db)] == [("X", 7), ("Y", 9), ("Z", 3)]

    strict = _stricter(contract)
    new = {n: transform_file(s3, storage.RawObject(r.source_key, r.etag, 0), strict, SETTINGS) for n, r in old.items()}
    for names in order:
        load_files(db, s3, strict, SETTINGS, [new[n] for n in names], f"reprocess-{names}", reprocess=True)
    reprocessed = _content(db)
    inserted = db.execute("SELECT sum(rows_inserted) FROM etl.file_ledger").fetchone()[0]

    db.execute("DROP SCHEMA analytics CASCADE")
    db.execute("DROP SCHEMA etl CASCADE")
    load_files(db, s3, strict, SETTINGS, [new["a"]], "clean-a")
    load_files(db, s3, strict, SETTINGS, [new["b"]], "clean-b")
    assert reprocessed == _content(db)
    assert [r[:2] for r in reprocessed] == [("X", 2), ("Z", 3)]
    assert inserted == len(reprocessed)  # the ledger still reconciles with the table


def test_concurrent_loads_of_the_same_files_load_each_once(db, s3, contract, stack) -> None:
    files = [
        _put_and_transform(s3, contract, f"c{i}.csv", HEADER + f"C{i},2026-01-01 10:00,c,p,x,1,1.00,North\n")
        for i in range(4)
    ]
    load_files(db, s3, contract, SETTINGS, files[:1], "setup")  # tables exist before the race
    dsn = postgres.dsn(stack.ports.postgres, "load_test")

    def run(name: str) -> Any:
        with psycopg.connect(dsn) as conn:
            return load_files(conn, stack.s3(), contract, SETTINGS, files, name, connect=lambda: psycopg.connect(dsn))

    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(run, ["event-run", "scheduled-run"]))
    loaded = sorted(f["source_key"] for r in reports for f in r.files)
    assert loaded == sorted(f.source_key for f in files[1:])  # each new file loaded by exactly one run
    assert db.execute("SELECT count(*), count(DISTINCT order_id) FROM analytics.orders").fetchone() == (4, 4)
    assert db.execute("SELECT count(*) FROM etl.file_ledger").fetchone() == (4,)


def test_identifiers_are_quoted_so_odd_names_work(db, s3, contract) -> None:
    odd = replace(contract, table='sales data."Orders"; drop table x')
    a = _put_and_transform(s3, contract, "q.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    odd_settings = replace(SETTINGS, ledger_table="etl ledger.file ledger")
    load_files(db, s3, odd, odd_settings, [a], "run-1")
    schemas = {r[0] for r in db.execute("SELECT nspname FROM pg_namespace").fetchall()}
    assert {"sales data", "etl ledger"} <= schemas
    rows = db.execute('SELECT order_id FROM "sales data"."""Orders""; drop table x"').fetchall()
    assert rows == [("A",)]
    assert db.execute('SELECT count(*) FROM "etl ledger"."file ledger"').fetchone() == (1,)


def test_binary_and_csv_copy_load_identical_values(db, s3, contract, monkeypatch) -> None:
    """pgpq's binary COPY and the CSV fallback (Linux on ARM) stage the same values."""
    from include.etl import load

    body = (
        HEADER
        + 'A,2026-01-01T10:00:00+05:30,,"Caf\u00e9, ""d\u00e9j\u00e0"" vu",,3,"$1,234.56",North\n'
        + "B,01/02/2026 23:59:59,c,p,x,1,0.01,south\n"
        + "C,2026-01-03,c,  spaced   out ,x,+2,99999.99,EAST\n"
    )
    a = _put_and_transform(s3, contract, "formats.csv", body)
    columns = "order_id, order_ts, customer_id, product_name, category, quantity, unit_price, region, order_date"
    loaded = {}
    assert load.pgpq is not None or platform.machine() not in ("x86_64", "AMD64")  # pgpq has an x86-64 wheel
    for encoder in (load.pgpq, None):
        monkeypatch.setattr(load, "pgpq", encoder)
        db.execute("DROP SCHEMA IF EXISTS analytics CASCADE; DROP SCHEMA IF EXISTS etl CASCADE")
        load_files(db, s3, contract, SETTINGS, [a], "run-1")
        loaded[encoder] = db.execute(
            f"SELECT {columns}, total_price, source_key, source_line FROM analytics.orders ORDER BY 1"
        ).fetchall()
    binary, text = loaded[next(iter(loaded))], loaded[None]
    assert binary == text
    assert [r[0] for r in text] == ["A", "B", "C"]
    assert text[0][3] == 'Caf\u00e9, "d\u00e9j\u00e0" vu' and text[0][6] == Decimal("1234.56")
    assert str(text[0][1]) == "2026-01-01 04:30:00+00:00"


def test_parallel_staging_loads_what_one_connection_loads(db, s3, contract) -> None:
    """Files COPYed over several connections give the same table, ledger and counts as over one."""
    files = [
        _put_and_transform(
            s3,
            contract,
            f"p{i}.csv",
            HEADER + "".join(f"K{(i * 7 + j) % 20},2026-01-01 1{j % 10}:00,c,p{i},x,1,1.00,North\n" for j in range(15)),
        )
        for i in range(5)
    ]
    outcomes = []
    for connect in (None, _connect(db)):
        db.execute("DROP SCHEMA IF EXISTS analytics CASCADE; DROP SCHEMA IF EXISTS etl CASCADE")
        db.commit()  # the COPY connections must not wait on this one
        report = load_files(db, s3, contract, SETTINGS, files, "run-1", connect=connect)
        ledger = db.execute(
            "SELECT source_key, rows_loaded, rows_duplicate, rows_inserted FROM etl.file_ledger ORDER BY 1"
        )
        outcomes.append((_content(db), ledger.fetchall(), report.rows_staged, report.rows_inserted))
        assert _staging_tables(db) == []
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2] == 75 and outcomes[0][3] == 20


def test_a_staging_table_left_by_a_killed_load_is_dropped_by_the_next(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")
    db.execute("CREATE UNLOGGED TABLE etl.load_stage_12345 (x int)")  # as a SIGKILLed load leaves it
    db.commit()
    b = _put_and_transform(s3, contract, "b.csv", HEADER + "B,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [b], "run-2", connect=_connect(db))
    assert _staging_tables(db) == []
    assert sorted(_rows(db)) == ["A", "B"]
