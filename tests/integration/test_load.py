"""The load against a real PostgreSQL and moto's S3 server: exactly once per file version.

COPY + merge, the precedence of rows, the duplicates table that lets a key fall back to its
next-best row, replaced / reprocessed / deleted / superseded versions, failures recorded and
parked, atomicity, concurrency, schema evolution and odd identifiers.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.etl.contract.evolution import SchemaEvolutionError
from include.etl.contract.model import Contract, parse_contract
from include.etl.contract.results import FileResult
from include.etl.contract.schema import output_schema
from include.etl.contract.transform import ZoneKeys, transform_file
from include.etl.loading import staging
from include.etl.loading.load import LoadReport, load_files
from include.etl.reading import storage
from include.etl.settings import DatasetSettings
from local_stack import postgres
from tests.integration.conftest import HEADER, fresh_database

pytestmark = pytest.mark.integration

SETTINGS = DatasetSettings(
    dataset="orders",
    raw_prefix="load-test/raw",
    processed_prefix="load-test/processed",
    rejected_prefix="load-test/rejected",
)
DAY = "2026-01-01"


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


def _next_second() -> None:
    """S3 keeps LastModified to the second: a later upload must land in a later second."""
    time.sleep(1.05 - time.time() % 1)


def _put(s3: Any, name: str, body: str | bytes, day: str = DAY) -> storage.RawObject:
    key = f"load-test/raw/dt={day}/{name}"
    s3.put_object(Bucket="raw", Key=key, Body=body.encode() if isinstance(body, str) else body)
    return next(o for o in storage.list_partition(s3, "raw", f"load-test/raw/dt={day}/")[0] if o.key == key)


def _put_and_transform(
    s3: Any, contract: Contract, name: str, body: str, day: str = DAY, settings: DatasetSettings = SETTINGS
) -> FileResult:
    return transform_file(s3, _put(s3, name, body, day), contract, settings)


def _connect(conn: psycopg.Connection) -> Any:
    """Another connection to the test database (the load's COPY workers)."""
    return lambda: psycopg.connect(conn.info.dsn)


def _staging_tables(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE '%\\_stage\\_%'")]


def _rows(conn: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    cur = conn.execute(
        "SELECT order_id, product_name, quantity, unit_price, total_price, source_key FROM analytics.orders"
    )
    return {r[0]: r[1:] for r in cur.fetchall()}


def _ledger(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT split_part(source_key, '/', 4), status, rows_read, rows_loaded, rows_rejected, rows_duplicate "
        "FROM etl.orders_file_ledger ORDER BY last_modified, source_key"
    ).fetchall()


def _reconciled(conn: psycopg.Connection) -> None:
    """Every live file version's best row of each of its keys is in the table or among the duplicates, once (its
    other rows of a key are counted as duplicates, never kept)."""
    table = conn.execute("SELECT count(*) FROM analytics.orders").fetchone()[0]
    dups = conn.execute("SELECT count(*) FROM etl.orders_duplicates").fetchone()[0]
    live = conn.execute(
        "SELECT coalesce(sum(distinct_keys), 0) FROM etl.orders_file_ledger WHERE status = 'loaded'"
    ).fetchone()[0]
    assert table + dups == live
    assert conn.execute(
        "SELECT count(*) FROM etl.orders_duplicates d WHERE NOT EXISTS "
        "(SELECT 1 FROM analytics.orders t WHERE t.order_id = d.order_id)"
    ).fetchone() == (0,)


# --- precedence -------------------------------------------------------------------------------


def test_a_key_keeps_its_latest_order_ts_then_the_file_that_landed_last_then_the_later_line(db, s3, contract) -> None:
    b = _put_and_transform(
        s3,
        contract,
        "b.csv",
        HEADER + "A,2026-01-01 12:00,c,new,x,2,1.50,North\nB,2026-01-01 10:00,c,b-landed-first,x,1,1.00,North\n",
    )
    _next_second()
    a = _put_and_transform(
        s3,
        contract,
        "a.csv",
        HEADER
        + "A,2026-01-01 10:00,c,old,x,1,1.00,North\n"  # loses to b.csv's later order_ts
        + "B,2026-01-01 10:00,c,a-landed-last,x,1,1.00,North\n"  # tie with b.csv: the file that landed last wins
        + "C,2026-01-01 10:00,c,first,x,1,1.00,North\n"
        + "C,2026-01-01 10:00,c,second,x,1,1.00,North\n"  # tie in one file: the later line wins
        + "D,2026-01-01 10:00,c,same,x,1,1.00,North\n"
        + "D,2026-01-01 10:00,c,same,x,1,1.00,North\n",  # exact duplicate
    )
    report = load_files(db, s3, contract, SETTINGS, [a, b], "run-1")
    rows = _rows(db)
    assert rows["A"][:4] == ("new", 2, Decimal("1.50"), Decimal("3.00"))
    assert rows["B"][0] == "a-landed-last"
    assert rows["C"][0] == "second"
    assert rows["D"][0] == "same"
    assert len(rows) == 4
    per_file = {f["source_key"].rsplit("/", 1)[-1]: f for f in report.files}
    assert (per_file["a.csv"]["rows_loaded"], per_file["a.csv"]["rows_duplicate"]) == (3, 3)
    assert (per_file["b.csv"]["rows_loaded"], per_file["b.csv"]["rows_duplicate"]) == (1, 1)
    # a.csv holds keys A, B, C, D (C and D twice: its first C and one D can never win, so they are not kept).
    assert (per_file["a.csv"]["distinct_keys"], per_file["b.csv"]["distinct_keys"]) == (4, 2)
    for f in report.files:
        assert f["rows_read"] == f["rows_loaded"] + f["rows_rejected"] + f["rows_duplicate"]
    _reconciled(db)


@pytest.mark.parametrize("order", ["ab", "ba", "a-b", "b-a"])
def test_the_table_does_not_depend_on_the_order_files_are_loaded_in(db, s3, contract, order) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "X,2026-01-01 10:00,c,a,x,1,1.00,North\n")
    _next_second()
    b = _put_and_transform(s3, contract, "b.csv", HEADER + "X,2026-01-01 10:00,c,b,x,1,1.00,North\n")
    files = {"a": a, "b": b}
    for i, batch in enumerate(order.split("-")):
        load_files(db, s3, contract, SETTINGS, [files[n] for n in batch], f"run-{i}")
    assert _rows(db)["X"][0] == "b"  # b.csv landed last, whichever run loaded it
    _reconciled(db)


# --- reruns, reprocess ---------------------------------------------------------------------


def test_reload_of_same_version_is_skipped_and_changes_nothing(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")
    before = db.execute("SELECT order_id, loaded_at FROM analytics.orders").fetchall()
    report = load_files(db, s3, contract, SETTINGS, [a], "run-2")
    assert report.skipped == [a.source_key]
    assert report.rows_staged == 0
    assert not report.table_changed
    assert db.execute("SELECT order_id, loaded_at FROM analytics.orders").fetchall() == before
    assert db.execute("SELECT run_id FROM etl.orders_file_ledger").fetchall() == [("run-1",)]


def test_reprocess_merges_again_without_writing_unchanged_rows(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")
    before = db.execute("SELECT xmin::text, loaded_at FROM analytics.orders").fetchall()
    report = load_files(db, s3, contract, SETTINGS, [a], "run-2", reprocess=True)
    assert report.rows_staged == 1
    assert (report.rows_inserted, report.rows_updated, report.rows_removed) == (0, 0, 0)
    assert db.execute("SELECT xmin::text, loaded_at FROM analytics.orders").fetchall() == before
    assert db.execute("SELECT status, run_id FROM etl.orders_file_ledger").fetchone() == ("loaded", "run-2")


def _stricter(contract: Contract) -> Contract:
    """The contract after a rule change: quantities above 5 are now rejected."""
    doc = contract.to_document()
    for col in doc["columns"]:
        if col["name"] == "quantity":
            col["max"] = 5
    return parse_contract(doc)


FILE_A = HEADER + "X,2026-01-01 10:00,c,p,x,2,1.00,North\nY,2026-01-01 10:00,c,p,x,9,1.00,North\n"
FILE_B = HEADER + "X,2026-01-01 12:00,c,p,x,7,1.00,North\nZ,2026-01-01 10:00,c,p,x,3,1.00,North\n"


def _content(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT order_id, quantity, source_key, source_line FROM analytics.orders ORDER BY order_id"
    ).fetchall()


@pytest.mark.parametrize("order", [["b", "a"], ["a", "b"], ["ab"]], ids=["newest-first", "oldest-first", "one-run"])
def test_reprocess_after_a_contract_change_equals_a_clean_load_in_any_order(db, s3, contract, order) -> None:
    old = {n: _put_and_transform(s3, contract, f"{n}.csv", body) for n, body in (("a", FILE_A), ("b", FILE_B))}
    load_files(db, s3, contract, SETTINGS, [old["a"]], "run-a")
    load_files(db, s3, contract, SETTINGS, [old["b"]], "run-b")
    assert [r[:2] for r in _content(db)] == [("X", 7), ("Y", 9), ("Z", 3)]

    strict = _stricter(contract)
    new = {n: transform_file(s3, r.raw, strict, SETTINGS) for n, r in old.items()}
    for names in order:
        load_files(db, s3, strict, SETTINGS, [new[n] for n in names], f"reprocess-{names}", reprocess=True)
    reprocessed = _content(db)
    _reconciled(db)

    db.execute("DROP SCHEMA analytics CASCADE")
    db.execute("DROP SCHEMA etl CASCADE")
    load_files(db, s3, strict, SETTINGS, [new["a"]], "clean-a")
    load_files(db, s3, strict, SETTINGS, [new["b"]], "clean-b")
    assert reprocessed == _content(db)
    # X: b.csv's quantity 7 is rejected now, so X falls back to a.csv's row; Y is rejected.
    assert [r[:2] for r in reprocessed] == [("X", 2), ("Z", 3)]


# --- new versions of a raw key ---------------------------------------------------------------


def test_a_new_version_replaces_the_rows_of_the_old_one(db, s3, contract) -> None:
    v1 = _put_and_transform(
        s3,
        contract,
        "a.csv",
        HEADER + "A,2026-01-01 10:00,c,v1,x,1,1.00,North\nB,2026-01-01 10:00,c,v1,x,1,1.00,North\n",
    )
    load_files(db, s3, contract, SETTINGS, [v1], "run-1")
    _next_second()
    v2 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 09:00,c,v2,x,1,1.00,North\n")
    report = load_files(db, s3, contract, SETTINGS, [v2], "run-2")
    # The newest version of a key is what the table holds for it, even with an earlier order_ts.
    assert _rows(db) == {"A": ("v2", 1, Decimal("1.00"), Decimal("1.00"), v2.source_key)}
    assert (report.rows_updated, report.rows_removed) == (1, 1)
    assert [r[1] for r in _ledger(db)] == ["superseded", "loaded"]
    _reconciled(db)


def test_a_row_the_new_version_drops_falls_back_to_another_files_row(db, s3, contract) -> None:
    """The bug seen: dropping a key from a.csv removed it although b.csv still held it."""
    a1 = _put_and_transform(s3, contract, "a.csv", HEADER + "K,2026-01-01 12:00,c,from-a,x,1,1.00,North\n")
    b = _put_and_transform(s3, contract, "b.csv", HEADER + "K,2026-01-01 10:00,c,from-b,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a1, b], "run-1")
    assert _rows(db)["K"][0] == "from-a"
    _next_second()
    a2 = _put_and_transform(s3, contract, "a.csv", HEADER + "L,2026-01-01 10:00,c,only-in-a2,x,1,1.00,North\n")
    report = load_files(db, s3, contract, SETTINGS, [a2], "run-2")
    assert {k: v[0] for k, v in _rows(db).items()} == {"K": "from-b", "L": "only-in-a2"}
    assert report.rows_removed == 0
    _reconciled(db)


def test_reuploading_earlier_bytes_brings_their_rows_back(db, s3, contract) -> None:
    body1 = HEADER + "A,2026-01-01 10:00,c,first,x,1,1.00,North\n"
    v1 = _put_and_transform(s3, contract, "a.csv", body1)
    load_files(db, s3, contract, SETTINGS, [v1], "run-1")
    _next_second()
    v2 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,second,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [v2], "run-2")
    _next_second()
    v3 = _put_and_transform(s3, contract, "a.csv", body1)  # the same bytes as v1: same ETag, a new version
    assert v3.etag == v1.etag and v3.last_modified != v1.last_modified
    load_files(db, s3, contract, SETTINGS, [v3], "run-3")
    assert _rows(db)["A"][0] == "first"
    assert [r[1] for r in _ledger(db)] == ["superseded", "superseded", "loaded"]


def test_a_replacement_rejected_whole_leaves_the_previous_version_loaded(db, s3, contract) -> None:
    v1 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,good,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [v1], "run-1")
    _next_second()
    v2 = _put_and_transform(s3, contract, "a.csv", "order_id,quantity\nA,2\n")
    report = load_files(db, s3, contract, SETTINGS, [v2], "run-2")
    assert report.files[0]["status"] == "rejected"
    assert "missing required column" in report.files[0]["reason"]
    assert _rows(db)["A"][0] == "good"
    assert [r[1] for r in _ledger(db)] == ["loaded", "rejected"]
    _reconciled(db)


def test_a_version_overwritten_before_its_load_is_superseded_and_the_newer_one_recorded(db, s3, contract) -> None:
    v1 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,v1,x,1,1.00,North\n")
    _next_second()
    v2_obj = _put(s3, "a.csv", HEADER + "A,2026-01-01 10:00,c,v2,x,1,1.00,North\n")
    report = load_files(db, s3, contract, SETTINGS, [v1], "run-a")  # the run that listed v1 loads late
    assert [f["status"] for f in report.files] == ["superseded"]
    assert "A" not in _rows(db)
    assert db.execute(
        "SELECT status FROM etl.orders_file_ledger WHERE etag = %s AND last_modified = %s",
        (v2_obj.etag, v2_obj.last_modified),
    ).fetchone() == ("pending",)  # the next run takes it up, whatever its partition's age


def test_an_older_version_loaded_after_a_newer_one_never_wins(db, s3, contract) -> None:
    """Two runs at once: one listed v1, the other v2; v2's run loads first."""
    v1 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,v1,x,1,1.00,North\n")
    _next_second()
    v2 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,v2,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [v2], "run-b")
    report = load_files(db, s3, contract, SETTINGS, [v1], "run-a")
    assert report.files[0]["status"] == "superseded"
    assert _rows(db)["A"][0] == "v2"
    assert db.execute("SELECT etag FROM etl.orders_file_ledger WHERE status = 'loaded'").fetchall() == [(v2.etag,)]


def test_a_processed_file_rewritten_from_another_version_is_not_loaded_under_this_one(db, s3, contract) -> None:
    v1 = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,v1,x,1,1.00,North\n")
    key = ZoneKeys(v1.source_key, SETTINGS).processed
    s3.copy_object(  # as if another run's transform of another version had just written it
        Bucket="processed",
        Key=key,
        CopySource={"Bucket": "processed", "Key": key},
        Metadata={"source-etag": "other", "source-last-modified": v1.last_modified},
        MetadataDirective="REPLACE",
    )
    report = load_files(db, s3, contract, SETTINGS, [v1], "run-1")
    assert report.files == []  # not loaded, not failed: still pending for the next run
    assert db.execute("SELECT count(*) FROM analytics.orders").fetchone() == (0,)


# --- deleted raw objects ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["keep", "remove"])
def test_a_deleted_raw_object_keeps_or_removes_its_rows_as_the_contract_says(db, s3, contract, mode) -> None:
    contract = contract.model_copy(update={"on_source_delete": mode})
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "K,2026-01-01 12:00,c,a,x,1,1.00,North\n")
    b = _put_and_transform(
        s3, contract, "b.csv", HEADER + "K,2026-01-01 10:00,c,b,x,1,1.00,North\nM,2026-01-01 10:00,c,b,x,1,1.00,North\n"
    )
    load_files(db, s3, contract, SETTINGS, [a, b], "run-1")
    s3.delete_object(Bucket="raw", Key=a.source_key)
    report = load_files(db, s3, contract, SETTINGS, [], "run-2", deleted=[a.source_key])
    rows = {k: v[0] for k, v in _rows(db).items()}
    if mode == "keep":
        assert rows == {"K": "a", "M": "b"}
        assert not report.table_changed
    else:
        assert rows == {"K": "b", "M": "b"}  # K falls back to b.csv's row
        status = db.execute("SELECT status FROM etl.orders_file_ledger WHERE source_key = %s", (a.source_key,))
        assert status.fetchone() == ("deleted",)
        _reconciled(db)


# --- failures --------------------------------------------------------------------------------


def test_failed_files_count_attempts_and_are_parked_after_the_last(db, s3, contract) -> None:
    obj = _put(s3, "bad.csv", HEADER)
    failed = FileResult.for_version(obj, status="failed", error="ValueError: boom")
    settings = SETTINGS.model_copy(update={"max_attempts": 3})
    for run in range(3):
        report = load_files(db, s3, contract, settings, [failed], f"run-{run}")
    assert report.files[0]["status"] == "parked" and report.files[0]["parked"]
    row = db.execute("SELECT status, attempts, last_error FROM etl.orders_file_ledger").fetchone()
    assert row == ("parked", 3, "ValueError: boom")


def test_a_value_the_database_refuses_fails_its_file_only(db, s3, contract) -> None:
    """Defense in depth: the transform rejects NUL characters, but if a processed file held one, COPY
    would refuse it. That file is failed and recorded; the others load."""
    good = _put_and_transform(s3, contract, "good.csv", HEADER + "G,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    bad = _put_and_transform(s3, contract, "nul.csv", HEADER + "N,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    table = pq.read_table(_download(s3, bad.processed_key))
    poisoned = table.set_column(3, "product_name", pa.array(["bad\x00byte"], pa.string())).cast(output_schema(contract))
    _upload_parquet(s3, poisoned, bad)
    for connect in (None, _connect(db)):
        db.execute("DROP SCHEMA IF EXISTS analytics CASCADE; DROP SCHEMA IF EXISTS etl CASCADE")
        db.commit()
        report = load_files(db, s3, contract, SETTINGS, [good, bad], "run-1", connect=connect)
        by_file = {f["source_key"].rsplit("/", 1)[-1]: f for f in report.files}
        assert by_file["good.csv"]["status"] == "loaded"
        assert by_file["nul.csv"]["status"] == "failed"
        assert "the database refused a value" in by_file["nul.csv"]["error"]
        assert sorted(_rows(db)) == ["G"]
        assert _staging_tables(db) == []


def _download(s3: Any, key: str) -> Any:
    import io

    return io.BytesIO(s3.get_object(Bucket="processed", Key=key)["Body"].read())


def _upload_parquet(s3: Any, table: pa.Table, result: FileResult) -> None:
    import io

    buf = io.BytesIO()
    pq.write_table(table, buf)
    s3.put_object(
        Bucket="processed", Key=result.processed_key, Body=buf.getvalue(), Metadata=storage.source_metadata(result.raw)
    )


def test_failure_mid_load_loads_nothing(db, s3, contract) -> None:
    base = _put_and_transform(s3, contract, "base.csv", HEADER + "Z,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [base], "run-0")
    good = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")

    def broken_current(key: str) -> Any:
        raise ConnectionResetError("S3 went away")

    with pytest.raises(ConnectionResetError):
        load_files(db, s3, contract, SETTINGS, [good], "run-1", connect=_connect(db), current=broken_current)
    db.rollback()
    assert db.execute("SELECT order_id FROM analytics.orders").fetchall() == [("Z",)]
    assert db.execute("SELECT source_key FROM etl.orders_file_ledger").fetchall() == [(base.source_key,)]
    assert _staging_tables(db) == []


def test_whole_file_rejection_is_recorded_in_ledger(db, s3, contract) -> None:
    bad = _put_and_transform(s3, contract, "bad.csv", "order_id,quantity\n1,2\n3,4\n")
    report = load_files(db, s3, contract, SETTINGS, [bad], "run-1")
    assert report.files[0]["status"] == "rejected"
    row = db.execute("SELECT status, reason, rows_read, rows_rejected FROM etl.orders_file_ledger").fetchone()
    assert row[0] == "rejected" and "missing required column" in row[1] and row[2:] == (2, 2)


# --- concurrency, staging, identifiers ---------------------------------------------------------


def test_copy_handles_text_that_needs_quoting(db, s3, contract) -> None:
    body = HEADER + 'A,2026-01-01 10:00,c,"Webcam, 1080p ""pro""",x,1,1.00,North\n'
    a = _put_and_transform(s3, contract, "q.csv", body)
    load_files(db, s3, contract, SETTINGS, [a], "run-1")
    assert _rows(db)["A"][0] == 'Webcam, 1080p "pro"'


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
    assert db.execute("SELECT count(*) FROM etl.orders_file_ledger").fetchone() == (4,)


def test_two_datasets_load_at_once_without_touching_each_others_state(db, s3, contract, stack) -> None:
    from include.etl.contract.model import load_contract

    customers = load_contract("customers")
    c_settings = DatasetSettings(
        dataset="customers", raw_prefix="load-test/raw", processed_prefix="load-test/processed-c",
        rejected_prefix="load-test/rejected-c",
    )  # fmt: skip
    o = _put_and_transform(s3, contract, "o.csv", HEADER + "O1,2026-01-01 10:00,CUST-0001,p,x,1,1.00,North\n")
    c = _put_and_transform(
        s3,
        customers,
        "c.csv",
        "customer_id;full_name;updated_at\nCUST-0001;Ann;2026-01-01 10:00\n",
        settings=c_settings,
    )
    dsn = postgres.dsn(stack.ports.postgres, "load_test")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:  # leftovers of a killed load of each dataset
        cur.execute("CREATE SCHEMA etl")
        cur.execute(
            "CREATE UNLOGGED TABLE etl.orders_stage_1 (x int); CREATE UNLOGGED TABLE etl.customers_stage_1 (x int)"
        )

    def run(job: tuple[Contract, DatasetSettings, FileResult]) -> Any:
        with psycopg.connect(dsn) as conn:
            return load_files(conn, stack.s3(), job[0], job[1], [job[2]], "run", connect=lambda: psycopg.connect(dsn))

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(run, [(contract, SETTINGS, o), (customers, c_settings, c)]))
    assert db.execute("SELECT count(*) FROM analytics.orders").fetchone() == (1,)
    assert db.execute("SELECT full_name FROM analytics.customers").fetchall() == [("Ann",)]
    assert db.execute("SELECT count(*) FROM etl.orders_file_ledger").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM etl.customers_file_ledger").fetchone() == (1,)
    assert _staging_tables(db) == []


def test_identifiers_are_quoted_so_odd_names_work(db, s3, contract) -> None:
    odd = contract.model_copy(update={"table": 'Sales Data."Orders"', "ledger_table": "Etl Ledger.File Ledger"})
    a = _put_and_transform(s3, contract, "q.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, odd, SETTINGS, [a], "run-1")
    schemas = {r[0] for r in db.execute("SELECT nspname FROM pg_namespace").fetchall()}
    assert {"Sales Data", "Etl Ledger"} <= schemas
    assert db.execute('SELECT order_id FROM "Sales Data"."""Orders"""').fetchall() == [("A",)]
    assert db.execute('SELECT count(*) FROM "Etl Ledger"."File Ledger"').fetchone() == (1,)


def test_binary_and_csv_copy_load_identical_values(db, s3, contract, monkeypatch) -> None:
    """pgpq's binary COPY and the CSV fallback (Linux on ARM) stage the same values."""
    body = (
        HEADER
        + 'A,2026-01-01T10:00:00+05:30,,"Caf\u00e9, ""d\u00e9j\u00e0"" vu",,3,"$1,234.56",North\n'
        + "B,01/02/2026 23:59:59,c,p,x,1,0.01,south\n"
        + "C,2026-01-03,c,  spaced   out ,x,+2,99999.99,EAST\n"
    )
    a = _put_and_transform(s3, contract, "formats.csv", body)
    columns = "order_id, order_ts, customer_id, product_name, category, quantity, unit_price, region, order_date"
    loaded = {}
    assert staging.pgpq is not None or platform.machine() not in ("x86_64", "AMD64")  # pgpq has an x86-64 wheel
    for encoder in (staging.pgpq, None):
        monkeypatch.setattr(staging, "pgpq", encoder)
        db.execute("DROP SCHEMA IF EXISTS analytics CASCADE; DROP SCHEMA IF EXISTS etl CASCADE")
        load_files(db, s3, contract, SETTINGS, [a], "run-1")
        loaded[encoder] = db.execute(
            f"SELECT {columns}, total_price, source_key, source_line, source_modified FROM analytics.orders ORDER BY 1"
        ).fetchall()
    binary, text = loaded[next(iter(loaded))], loaded[None]
    assert binary == text
    assert [r[0] for r in text] == ["A", "B", "C"]
    assert text[0][3] == 'Caf\u00e9, "d\u00e9j\u00e0" vu' and text[0][6] == Decimal("1234.56")
    assert str(text[0][1]) == "2026-01-01 04:30:00+00:00"
    assert text[0][-1] == a.raw.last_modified


def _files_sharing_keys(
    s3: Any, contract: Contract, name: str, files: int, rows: int, keys: int, step: int
) -> list[FileResult]:
    """`files` transformed files of `rows` rows each, their keys K0..K<keys-1> repeating within and across files."""
    return [
        _put_and_transform(
            s3,
            contract,
            f"{name}{i}.csv",
            HEADER
            + "".join(f"K{(i * step + j) % keys},2026-01-01 1{j % 10}:00,c,p{i},x,1,1.00,North\n" for j in range(rows)),
        )
        for i in range(files)
    ]


def _load_afresh(
    db: psycopg.Connection, s3: Any, contract: Contract, files: list[FileResult], connect: Any
) -> tuple[LoadReport, list[tuple[Any, ...]]]:
    """`files` loaded into new, empty tables; the load's report and the ledger's (file, loaded, duplicate) rows."""
    db.execute("DROP SCHEMA IF EXISTS analytics CASCADE; DROP SCHEMA IF EXISTS etl CASCADE")
    db.commit()  # the COPY connections must not wait on this one
    report = load_files(db, s3, contract, SETTINGS, files, "run-1", connect=connect)
    ledger = db.execute("SELECT source_key, rows_loaded, rows_duplicate FROM etl.orders_file_ledger ORDER BY 1")
    return report, ledger.fetchall()


def test_parallel_staging_loads_what_one_connection_loads(db, s3, contract) -> None:
    """Files COPYed over several connections give the same table, ledger and counts as over one."""
    files = _files_sharing_keys(s3, contract, "p", files=5, rows=15, keys=20, step=7)
    outcomes = []
    for connect in (None, _connect(db)):
        report, ledger = _load_afresh(db, s3, contract, files, connect)
        outcomes.append((_content(db), ledger, report.rows_staged, report.rows_inserted))
        assert _staging_tables(db) == []
        _reconciled(db)
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2] == 75 and outcomes[0][3] == 20


def test_a_load_too_big_to_keep_its_keys_ranks_every_row_and_loads_the_same(db, s3, contract, monkeypatch) -> None:
    """Over the cap on the staged keys held in memory, the merge ranks every staged row: same table and ledger."""
    files = _files_sharing_keys(s3, contract, "k", files=4, rows=10, keys=12, step=5)
    outcomes = []
    for cap in (staging._KEYS_MAX_BYTES, 0):
        monkeypatch.setattr(staging, "_KEYS_MAX_BYTES", cap)
        report, ledger = _load_afresh(db, s3, contract, files, _connect(db))
        dups = db.execute("SELECT source_key, source_line FROM etl.orders_duplicates ORDER BY 1, 2").fetchall()
        outcomes.append((_content(db), ledger, dups, report.rows_inserted))
        _reconciled(db)
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][3] == 12 and len(outcomes[0][2]) == 28


def test_a_staging_table_left_by_a_killed_load_is_dropped_by_the_next(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")
    db.execute("CREATE UNLOGGED TABLE etl.orders_stage_12345 (x int)")  # as a SIGKILLed load leaves it
    db.commit()
    b = _put_and_transform(s3, contract, "b.csv", HEADER + "B,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [b], "run-2", connect=_connect(db))
    assert _staging_tables(db) == []
    assert sorted(_rows(db)) == ["A", "B"]


# --- schema evolution ------------------------------------------------------------------------


def _evolved(contract: Contract, change: Any) -> Contract:
    doc = contract.to_document()
    change(doc)
    return parse_contract(doc)


def test_a_new_nullable_column_in_the_contract_is_added_by_the_next_load(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")

    def add_coupon(doc: dict[str, Any]) -> None:
        doc["columns"].append({"name": "coupon", "type": "text", "on_blank": None})

    evolved = _evolved(contract, add_coupon)
    b = _put_and_transform(
        s3, evolved, "b.csv", HEADER.rstrip("\n") + ",coupon\nB,2026-01-01 10:00,c,p,x,1,1.00,North,SAVE10\n"
    )
    report = load_files(db, s3, evolved, SETTINGS, [b], "run-2")
    assert report.schema_changes == ["added column coupon text"]
    assert db.execute("SELECT order_id, coupon FROM analytics.orders ORDER BY 1").fetchall() == [
        ("A", None),
        ("B", "SAVE10"),
    ]


def test_a_narrowed_scale_is_refused_before_anything_is_written(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.25,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")

    def narrow(doc: dict[str, Any]) -> None:
        for col in doc["columns"]:
            if col["name"] == "unit_price":
                col["scale"] = 1
        for d in doc["derived"]:
            if d["name"] == "total_price":
                d["scale"] = 1

    narrowed = _evolved(contract, narrow)
    b = _put_and_transform(s3, narrowed, "b.csv", HEADER + "B,2026-01-01 10:00,c,p,x,1,1.5,North\n")
    with pytest.raises(SchemaEvolutionError, match=r"unit_price would change from numeric\(12,2\) to numeric\(12,1\)"):
        load_files(db, s3, narrowed, SETTINGS, [b], "run-2")
    db.rollback()
    assert db.execute("SELECT order_id, unit_price FROM analytics.orders").fetchall() == [("A", Decimal("1.25"))]
    assert db.execute("SELECT count(*) FROM etl.orders_file_ledger").fetchone() == (1,)


def test_a_widened_type_and_a_relaxed_not_null_are_applied(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.25,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")

    def widen(doc: dict[str, Any]) -> None:
        for col in doc["columns"]:
            if col["name"] == "quantity":
                col["max"] = None  # integer -> bigint
            if col["name"] == "unit_price":
                col["precision"] = 16
        for d in doc["derived"]:
            if d["name"] == "total_price":
                d["precision"] = 18

    widened = _evolved(contract, widen)
    b = _put_and_transform(s3, widened, "b.csv", HEADER + "B,2026-01-01 10:00,c,p,x,3000000000,1.00,North\n")
    report = load_files(db, s3, widened, SETTINGS, [b], "run-2")
    assert "widened column quantity from integer to bigint" in report.schema_changes
    assert db.execute("SELECT quantity FROM analytics.orders WHERE order_id = 'B'").fetchone() == (3000000000,)


def test_a_frozen_schema_refuses_even_additive_changes(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.25,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")

    def add_and_freeze(doc: dict[str, Any]) -> None:
        doc["schema_evolution"] = "freeze"
        doc["columns"].append({"name": "coupon", "type": "text", "on_blank": None})

    frozen = _evolved(contract, add_and_freeze)
    with pytest.raises(SchemaEvolutionError, match="schema_evolution: freeze"):
        load_files(db, s3, frozen, SETTINGS, [], "run-2")


def _column(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["columns"] if c["name"] == name)


def test_a_new_column_with_a_fill_value_is_added_not_null_and_earlier_rows_hold_the_fill(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")

    def add_channel(doc: dict[str, Any]) -> None:
        doc["columns"].append({"name": "channel", "type": "text", "on_blank": "web"})

    evolved = _evolved(contract, add_channel)
    b = _put_and_transform(
        s3, evolved, "b.csv", HEADER.rstrip("\n") + ",channel\nB,2026-01-01 10:00,c,p,x,1,1.00,North,store\n"
    )
    report = load_files(db, s3, evolved, SETTINGS, [b], "run-2")
    assert report.schema_changes == ["added column channel text NOT NULL; rows loaded before hold 'web'"]
    c = _put_and_transform(s3, evolved, "c.csv", HEADER + "C,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    report = load_files(db, s3, evolved, SETTINGS, [c], "run-3")  # the next load: nothing left to change
    assert report.schema_changes == []
    rows = db.execute("SELECT order_id, channel FROM analytics.orders ORDER BY 1").fetchall()
    assert rows == [("A", "web"), ("B", "store"), ("C", "web")]
    notnull = db.execute(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'analytics.orders'::regclass AND attname = 'channel'"
    ).fetchone()
    assert notnull == (True,)


def test_a_new_column_that_may_not_be_blank_is_refused_on_a_table_with_rows(db, s3, contract) -> None:
    a = _put_and_transform(s3, contract, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, contract, SETTINGS, [a], "run-1")

    def add_required(doc: dict[str, Any]) -> None:
        doc["columns"].append({"name": "channel", "type": "text", "required": True, "on_blank": "reject"})

    evolved = _evolved(contract, add_required)
    with pytest.raises(SchemaEvolutionError, match=r"column channel is new and may not be blank, but 1 loaded row"):
        load_files(db, s3, evolved, SETTINGS, [], "run-2")
    db.rollback()
    columns = db.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'channel'"
    ).fetchone()
    assert columns == (0,)  # nothing was half-applied


def test_bounds_that_fit_32_bits_keep_a_bigint_column_and_the_load_goes_on(db, s3, contract) -> None:
    def unbounded(doc: dict[str, Any]) -> None:
        _column(doc, "quantity")["max"] = None  # bigint

    wide = _evolved(contract, unbounded)
    a = _put_and_transform(s3, wide, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,3000000000,1.00,North\n")
    load_files(db, s3, wide, SETTINGS, [a], "run-1")

    def bounded(doc: dict[str, Any]) -> None:
        _column(doc, "quantity")["max"] = 1000  # would be integer

    narrow = _evolved(contract, bounded)
    b = _put_and_transform(s3, narrow, "b.csv", HEADER + "B,2026-01-01 10:00,c,p,x,7,1.00,North\n")
    load_files(db, s3, narrow, SETTINGS, [b], "run-2")
    assert db.execute("SELECT order_id, quantity FROM analytics.orders ORDER BY 1").fetchall() == [
        ("A", 3000000000),
        ("B", 7),
    ]
    kind = db.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'analytics.orders'::regclass AND attname = 'quantity'"
    ).fetchone()
    assert kind == ("bigint",)


def test_a_column_made_not_null_is_applied_when_no_row_is_null_and_refused_otherwise(db, s3, contract) -> None:
    def optional_customer(doc: dict[str, Any]) -> None:
        _column(doc, "customer_id")["on_blank"] = None

    nullable = _evolved(contract, optional_customer)
    a = _put_and_transform(s3, nullable, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.00,North\n")
    load_files(db, s3, nullable, SETTINGS, [a], "run-1")
    report = load_files(db, s3, contract, SETTINGS, [], "run-2")  # back to `guest` for blanks: NOT NULL
    assert "column customer_id is now NOT NULL (no loaded row holds NULL in it)" in report.schema_changes

    db.execute("ALTER TABLE analytics.orders ALTER COLUMN customer_id DROP NOT NULL")
    db.execute("ALTER TABLE etl.orders_duplicates ALTER COLUMN customer_id DROP NOT NULL")
    b = _put_and_transform(s3, nullable, "b.csv", HEADER + "B,2026-01-01 10:00,,p,x,1,1.00,North\n")
    load_files(db, s3, nullable, SETTINGS, [b], "run-3")
    with pytest.raises(
        SchemaEvolutionError, match=r"customer_id would become NOT NULL, but 1 loaded row\(s\) hold NULL"
    ):
        load_files(db, s3, contract, SETTINGS, [], "run-4")


def test_a_frozen_schema_refuses_a_column_the_contract_dropped(db, s3, contract) -> None:
    def add_coupon(doc: dict[str, Any]) -> None:
        doc["columns"].append({"name": "coupon", "type": "text", "on_blank": None})

    with_coupon = _evolved(contract, add_coupon)
    a = _put_and_transform(s3, with_coupon, "a.csv", HEADER + "A,2026-01-01 10:00,c,p,x,1,1.25,North\n")
    load_files(db, s3, with_coupon, SETTINGS, [a], "run-1")

    def freeze(doc: dict[str, Any]) -> None:
        doc["schema_evolution"] = "freeze"

    frozen = _evolved(contract, freeze)  # without coupon
    with pytest.raises(SchemaEvolutionError, match=r"column coupon \(text\) is no longer in the contract"):
        load_files(db, s3, frozen, SETTINGS, [], "run-2")
