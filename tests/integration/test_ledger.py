"""The file ledger (include/etl/loading/ledger.py) against the real PostgreSQL.

Each test has a ledger of its own (a unique schema in a database for this module), and asserts
on the ledger's rows: a version's status, attempts, reason and last error as listing
(`observe`), loads (`record`), operators (`retry`, `skip`) and deletions (`mark_deleted`) leave
them. How list_files and load_files drive these through the DAG is in test_file_lifecycle.py and
test_load.py.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from include.etl.loading import ledger
from include.etl.names import schema_of, table_ident
from include.etl.reading.storage import RawObject
from tests.integration.conftest import fresh_database

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
DAY = "2026-01-01"


@pytest.fixture(scope="module")
def ledger_db(stack: Any) -> Iterator[str]:
    with fresh_database(stack, "ledger_test") as dsn:
        yield dsn


@pytest.fixture
def conn(ledger_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(ledger_db, autocommit=True) as conn:
        yield conn


@pytest.fixture
def cur(conn: psycopg.Connection) -> Iterator[psycopg.Cursor]:
    with conn.cursor() as cur:
        yield cur


def _unique_table() -> str:
    return f"ledger_{uuid.uuid4().hex[:12]}.file_ledger"


def _drop(conn: psycopg.Connection, table: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema_of(table))))


@pytest.fixture
def table(conn: psycopg.Connection, cur: psycopg.Cursor) -> Iterator[str]:
    """A new, empty ledger in a schema of its own."""
    name = _unique_table()
    ledger.ddl_lock(cur)
    ledger.ensure_ledger(cur, name)
    yield name
    _drop(conn, name)


def _obj(name: str, etag: str = "e1", at: datetime = T0, day: str = DAY, size: int = 100) -> RawObject:
    return RawObject(f"raw/orders/dt={day}/{name}", etag, size, at)


def _state(cur: psycopg.Cursor, table: str) -> dict[tuple[str, str, datetime], tuple[Any, ...]]:
    """{(key, etag, last_modified): (status, attempts, reason, last_error, run_id)} read straight from the table."""
    cur.execute(
        sql.SQL("SELECT source_key, etag, last_modified, status, attempts, reason, last_error, run_id FROM {}").format(
            table_ident(table)
        )
    )
    return {(r[0], r[1], r[2]): r[3:] for r in cur.fetchall()}


def _row(cur: psycopg.Cursor, table: str, obj: RawObject) -> tuple[Any, ...]:
    """(status, attempts, reason, last_error, run_id) of one version."""
    return _state(cur, table)[(obj.key, obj.etag, obj.last_modified)]


def _status(cur: psycopg.Cursor, table: str, obj: RawObject) -> str:
    return _row(cur, table, obj)[0]


def _keys(objs: list[RawObject]) -> list[str]:
    return [o.key for o in objs]


def _record(cur: psycopg.Cursor, table: str, obj: RawObject, status: ledger.Status, **values: Any) -> ledger.Outcome:
    """Record what a load did with one version, as load_files does, and return the outcome record() filled in."""
    if status in ("loaded", "rejected") and "rows_read" not in values:
        values = {"rows_read": 3, "rows_loaded" if status == "loaded" else "rows_rejected": 3, **values}
    max_attempts = values.pop("max_attempts", 3)
    outcome = ledger.Outcome(
        obj.key, obj.etag, obj.last_modified, status, values.pop("run_id", "run-load"), size_bytes=obj.size, **values
    )
    ledger.record(cur, table, [outcome], max_attempts)
    return outcome


def _fail(cur: psycopg.Cursor, table: str, obj: RawObject, times: int, max_attempts: int = 3) -> ledger.Outcome:
    outcome = None
    for attempt in range(1, times + 1):
        outcome = _record(cur, table, obj, "failed", error=f"ValueError: try {attempt}", max_attempts=max_attempts)
    assert outcome is not None
    return outcome


# --- ensure_ledger ---------------------------------------------------------------------------------


def _indexes(cur: psycopg.Cursor, table: str) -> list[str]:
    cur.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s ORDER BY 1",
        (schema_of(table), table.split(".", 1)[1]),
    )
    return [r[0] for r in cur.fetchall()]


def test_ensure_ledger_twice_changes_nothing_and_keeps_the_rows(cur: psycopg.Cursor, table: str) -> None:
    ledger.observe(cur, table, [_obj("a.csv"), _obj("b.csv")], "run-1")
    before = (_state(cur, table), _indexes(cur, table))
    for _ in range(2):
        ledger.ddl_lock(cur)
        ledger.ensure_ledger(cur, table)
    assert (_state(cur, table), _indexes(cur, table)) == before
    assert before[1] == ["file_ledger_live", "file_ledger_open", "file_ledger_pkey"]


def test_ensure_ledger_from_two_sessions_at_once_under_ddl_lock(ledger_db: str, conn: psycopg.Connection) -> None:
    """Two runs starting together (a scheduled and an event run) both create the missing ledger and its schema."""
    for _ in range(3):
        name = _unique_table()
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def create(
            name: str = name, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors
        ) -> None:
            try:
                with psycopg.connect(ledger_db) as session, session.transaction(), session.cursor() as c:
                    barrier.wait(timeout=10)
                    ledger.ddl_lock(c)
                    ledger.ensure_ledger(c, name)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        try:
            assert errors == []
            with conn.cursor() as c:
                assert _indexes(c, name) == ["file_ledger_live", "file_ledger_open", "file_ledger_pkey"]
                ledger.observe(c, name, [_obj("a.csv")], "run-1")
                assert [s[0] for s in _state(c, name).values()] == ["pending"]
        finally:
            _drop(conn, name)


def test_ensure_ledger_does_not_wait_for_a_load_writing_to_the_ledger(
    ledger_db: str, cur: psycopg.Cursor, table: str
) -> None:
    """list_files calls ensure_ledger while another run's load may hold the ledger in an open transaction."""
    with psycopg.connect(ledger_db) as load, load.transaction(), load.cursor() as load_cur:
        ledger.observe(load_cur, table, [_obj("a.csv")], "run-load")  # rows written, not committed
        cur.execute("SET lock_timeout = '2s'")
        try:
            ledger.ddl_lock(cur)
            ledger.ensure_ledger(cur, table)  # LockNotAvailable if it took a lock the load's writes conflict with
        finally:
            cur.execute("RESET lock_timeout")
    assert [s[0] for s in _state(cur, table).values()] == ["pending"]


# --- observe: what listing takes up ------------------------------------------------------------


def test_a_first_listing_records_every_version_as_pending_and_takes_them_all_up(
    cur: psycopg.Cursor, table: str
) -> None:
    listed = [_obj("a.csv"), _obj("b.csv.gz", etag="e2", size=7), _obj("c.csv", day="2025-12-31")]
    seen = ledger.observe(cur, table, listed, "run-1")
    assert (seen.todo, seen.done, seen.parked) == (listed, [], [])
    assert _state(cur, table) == {(o.key, o.etag, o.last_modified): ("pending", 0, None, None, "run-1") for o in listed}
    cur.execute(sql.SQL("SELECT source_key, size_bytes FROM {} ORDER BY 1").format(table_ident(table)))
    assert cur.fetchall() == sorted((o.key, o.size) for o in listed)


def test_listing_again_takes_up_open_versions_only(cur: psycopg.Cursor, table: str) -> None:
    loaded, rejected, skipped, failed, pending, parked = (
        _obj(n) for n in ("loaded.csv", "rejected.csv", "skipped.csv", "failed.csv", "pending.csv", "parked.csv")
    )
    listed = [loaded, rejected, skipped, failed, pending, parked]
    ledger.observe(cur, table, listed, "run-1")
    _record(cur, table, loaded, "loaded")
    _record(cur, table, rejected, "rejected", reason="missing required column(s): region")
    ledger.skip(cur, table, [skipped.key], "vendor resends it", "run-op")
    _fail(cur, table, failed, 1)
    _fail(cur, table, parked, 3)
    before = _state(cur, table)

    seen = ledger.observe(cur, table, listed, "run-2")

    assert _keys(seen.todo) == [failed.key, pending.key]
    assert _keys(seen.done) == [loaded.key, rejected.key, skipped.key]
    assert _keys(seen.parked) == [parked.key]
    assert _state(cur, table) == before  # listing the same versions again writes nothing


@pytest.mark.parametrize(
    ("etag", "later"),
    [("e2", timedelta(hours=1)), ("e1", timedelta(hours=1)), ("e2", timedelta(0))],
    ids=["new-bytes", "same-bytes-uploaded-again", "new-etag-same-second"],
)
def test_a_newer_version_is_taken_up_and_the_loaded_one_stays_until_a_load_supersedes_it(
    cur: psycopg.Cursor, table: str, etag: str, later: timedelta
) -> None:
    v1 = _obj("a.csv", etag="e1", at=T0)
    v2 = _obj("a.csv", etag=etag, at=T0 + later)
    ledger.observe(cur, table, [v1], "run-1")
    _record(cur, table, v1, "loaded", run_id="run-1")

    seen = ledger.observe(cur, table, [v2], "run-2")

    assert (seen.todo, seen.done, seen.parked) == ([v2], [], [])
    assert _status(cur, table, v1) == "loaded"  # its rows are still the table's until v2 is loaded
    assert _status(cur, table, v2) == "pending"
    assert ledger.live(cur, table, [v1.key])[v1.key].version == (v1.etag, v1.last_modified)

    _record(cur, table, v2, "loaded", run_id="run-2")

    assert _row(cur, table, v1)[:3] == ("superseded", 0, "replaced by a newer version")
    assert _status(cur, table, v2) == "loaded"
    assert ledger.live(cur, table, [v1.key])[v1.key].version == (v2.etag, v2.last_modified)
    assert [r.status for r in ledger.rows_for(cur, table, [v1.key])].count("loaded") == 1


@pytest.mark.parametrize("old_status", ["pending", "failed", "parked"])
def test_older_versions_that_never_loaded_are_superseded_by_a_newer_listing(
    cur: psycopg.Cursor, table: str, old_status: str
) -> None:
    v1 = _obj("a.csv", etag="e1", at=T0)
    v2 = _obj("a.csv", etag="e2", at=T0 + timedelta(minutes=5))
    ledger.observe(cur, table, [v1], "run-1")
    if old_status != "pending":
        _fail(cur, table, v1, 1 if old_status == "failed" else 3)
    assert _status(cur, table, v1) == old_status

    seen = ledger.observe(cur, table, [v2], "run-2")

    assert (seen.todo, seen.parked) == ([v2], [])
    status, _, reason, _, _ = _row(cur, table, v1)
    assert (status, reason) == ("superseded", "a newer version of the object was listed")
    assert _status(cur, table, v2) == "pending"


def test_a_superseded_version_listed_again_is_the_newest_and_is_taken_up(cur: psycopg.Cursor, table: str) -> None:
    v1 = _obj("a.csv", etag="e1", at=T0)
    v2 = _obj("a.csv", etag="e2", at=T0 + timedelta(minutes=5))
    ledger.observe(cur, table, [v1], "run-1")
    ledger.observe(cur, table, [v2], "run-2")
    assert _status(cur, table, v1) == "superseded"

    seen = ledger.observe(cur, table, [v1], "run-3")

    assert seen.todo == [v1]
    assert _row(cur, table, v1)[0] == "pending" and _row(cur, table, v1)[4] == "run-3"
    assert _status(cur, table, v2) == "superseded"


def test_reprocess_takes_up_loaded_and_rejected_versions_again(cur: psycopg.Cursor, table: str) -> None:
    loaded, rejected, skipped, parked, pending = (
        _obj(n) for n in ("loaded.csv", "rejected.csv", "skipped.csv", "parked.csv", "pending.csv")
    )
    listed = [loaded, rejected, skipped, parked, pending]
    ledger.observe(cur, table, listed, "run-1")
    _record(cur, table, loaded, "loaded")
    _record(cur, table, rejected, "rejected", reason="empty file")
    ledger.skip(cur, table, [skipped.key], "not wanted", "run-op")
    _fail(cur, table, parked, 3)

    seen = ledger.observe(cur, table, listed, "run-2", reprocess=True)

    assert _keys(seen.todo) == [loaded.key, rejected.key, pending.key]
    assert _keys(seen.done) == [skipped.key]
    assert _keys(seen.parked) == [parked.key]
    assert _status(cur, table, loaded) == "loaded"  # still live until the reprocessing load records it


def test_expect_version_records_a_newer_version_seen_by_a_load_as_pending(cur: psycopg.Cursor, table: str) -> None:
    v1 = _obj("a.csv", etag="e1", at=T0)
    v2 = _obj("a.csv", etag="e2", at=T0 + timedelta(minutes=1))
    ledger.observe(cur, table, [v1], "run-1")
    ledger.expect_version(cur, table, v2, "run-1", "seen when an older version was loaded")
    assert _row(cur, table, v2) == ("pending", 0, "seen when an older version was loaded", None, "run-1")
    assert ledger.observe(cur, table, [v2], "run-2").todo == [v2]


# --- failures, parking, retry and skip ------------------------------------------------------------


def test_failed_attempts_are_counted_and_the_version_is_parked_after_max_attempts(
    cur: psycopg.Cursor, table: str
) -> None:
    a = _obj("a.csv")
    ledger.observe(cur, table, [a], "run-1")
    expected = {1: ("failed", False), 2: ("failed", False), 3: ("parked", True)}
    for attempt, (status, parked) in expected.items():
        outcome = _record(cur, table, a, "failed", error=f"ValueError: try {attempt}", run_id=f"run-{attempt}")
        assert (outcome.status, outcome.attempts, outcome.parked) == (status, attempt, parked)
        assert _row(cur, table, a) == (status, attempt, None, f"ValueError: try {attempt}", f"run-{attempt}")
        seen = ledger.observe(cur, table, [a], f"run-{attempt}-list")
        assert (seen.todo, seen.parked) == (([], [a]) if parked else ([a], []))
    assert ledger.open_partitions(cur, table) == []  # a parked file does not pull its partition into runs


def test_a_load_after_failures_clears_the_attempts_and_the_error(cur: psycopg.Cursor, table: str) -> None:
    a = _obj("a.csv")
    ledger.observe(cur, table, [a], "run-1")
    _fail(cur, table, a, 2)
    _record(cur, table, a, "loaded", run_id="run-3")
    assert _row(cur, table, a) == ("loaded", 0, None, None, "run-3")


def _parked_failed_loaded(cur: psycopg.Cursor, table: str) -> tuple[RawObject, RawObject, RawObject, RawObject]:
    parked_a, failed_b, parked_c, loaded_d = (
        _obj(n, day=d)
        for n, d in (("a.csv", "2025-11-01"), ("b.csv", "2025-11-02"), ("c.csv", "2025-11-03"), ("d.csv", DAY))
    )
    ledger.observe(cur, table, [parked_a, failed_b, parked_c, loaded_d], "run-1")
    _fail(cur, table, parked_a, 3)
    _fail(cur, table, failed_b, 1)
    _fail(cur, table, parked_c, 3)
    _record(cur, table, loaded_d, "loaded")
    return parked_a, failed_b, parked_c, loaded_d


def test_retry_by_key_puts_those_parked_or_failed_versions_back_to_pending(cur: psycopg.Cursor, table: str) -> None:
    a, b, c, d = _parked_failed_loaded(cur, table)

    retried = ledger.retry(cur, table, [b.key, d.key, a.key, "raw/orders/dt=2026-01-01/unknown.csv"])

    assert retried == sorted([a.key, b.key])
    assert _row(cur, table, a)[:2] == ("pending", 0)
    assert _row(cur, table, a)[3] == "ValueError: try 3"  # the last error stays for the record
    assert _row(cur, table, b)[:2] == ("pending", 0)
    assert _row(cur, table, c)[:2] == ("parked", 3)
    assert _row(cur, table, d)[:2] == ("loaded", 0)
    seen = ledger.observe(cur, table, [a, b, c, d], "run-2")
    assert (_keys(seen.todo), _keys(seen.parked), _keys(seen.done)) == ([a.key, b.key], [c.key], [d.key])
    # Back to the full count of attempts before it is parked again.
    assert _fail(cur, table, a, 2).status == "failed"


def test_retry_all_puts_every_parked_and_failed_version_back(cur: psycopg.Cursor, table: str) -> None:
    a, b, c, d = _parked_failed_loaded(cur, table)

    assert ledger.retry(cur, table, None) == [a.key, b.key, c.key]

    assert {o.key: _row(cur, table, o)[:2] for o in (a, b, c, d)} == {
        a.key: ("pending", 0),
        b.key: ("pending", 0),
        c.key: ("pending", 0),
        d.key: ("loaded", 0),
    }
    assert ledger.open_partitions(cur, table) == [
        "raw/orders/dt=2025-11-01/",
        "raw/orders/dt=2025-11-02/",
        "raw/orders/dt=2025-11-03/",
    ]


def test_retry_of_no_keys_retries_nothing(cur: psycopg.Cursor, table: str) -> None:
    _parked_failed_loaded(cur, table)
    before = _state(cur, table)
    assert ledger.retry(cur, table, []) == []
    assert _state(cur, table) == before


def test_skip_gives_up_open_and_parked_versions_with_the_reason(cur: psycopg.Cursor, table: str) -> None:
    a, b, c, d = _parked_failed_loaded(cur, table)
    pending_e = _obj("e.csv")
    d2 = _obj("d.csv", etag="e2", at=T0 + timedelta(hours=1))  # a newer version of the loaded d.csv
    ledger.observe(cur, table, [pending_e, d2], "run-2")

    skipped = ledger.skip(cur, table, [a.key, b.key, d.key, pending_e.key], "vendor resends it", "run-op")

    assert skipped == sorted([a.key, b.key, d2.key, pending_e.key])
    for obj in (a, b, d2, pending_e):
        assert _row(cur, table, obj)[0::2] == ("skipped", "vendor resends it", "run-op")
    assert _status(cur, table, c) == "parked"  # not named
    assert _status(cur, table, d) == "loaded"  # the live version of a skipped key stays live
    seen = ledger.observe(cur, table, [a, b, c, d2, pending_e], "run-3")
    assert (_keys(seen.todo), _keys(seen.parked)) == ([], [c.key])
    assert _keys(seen.done) == [a.key, b.key, d2.key, pending_e.key]


# --- partitions and deletions -------------------------------------------------------------------


def test_open_partitions_are_the_folders_of_pending_and_failed_versions(cur: psycopg.Cursor, table: str) -> None:
    objs = {
        "pending": _obj("a.csv", day="2025-10-01"),
        "pending-same-day": _obj("b.csv", day="2025-10-01"),
        "failed": _obj("c.csv", day="2025-10-02"),
        "parked": _obj("d.csv", day="2025-10-03"),
        "loaded": _obj("e.csv", day="2025-10-04"),
        "rejected": _obj("f.csv", day="2025-10-05"),
    }
    ledger.observe(cur, table, list(objs.values()), "run-1")
    _fail(cur, table, objs["failed"], 1)
    _fail(cur, table, objs["parked"], 3)
    _record(cur, table, objs["loaded"], "loaded")
    _record(cur, table, objs["rejected"], "rejected", reason="empty file")

    assert ledger.open_partitions(cur, table) == ["raw/orders/dt=2025-10-01/", "raw/orders/dt=2025-10-02/"]


def test_live_under_lists_the_loaded_versions_of_a_partition(cur: psycopg.Cursor, table: str) -> None:
    a, b, pending_c = _obj("a.csv"), _obj("b.csv"), _obj("c.csv")
    a2 = _obj("a.csv", etag="e2", at=T0 + timedelta(hours=1))
    other_day = _obj("a.csv", day="2026-01-02")
    ledger.observe(cur, table, [a, b, pending_c, other_day], "run-1")
    for obj in (a, b, other_day):
        _record(cur, table, obj, "loaded")
    ledger.observe(cur, table, [a2], "run-2")
    _record(cur, table, a2, "loaded")

    live = ledger.live_under(cur, table, f"raw/orders/dt={DAY}/")

    assert sorted((r.source_key, r.version) for r in live) == [
        (a2.key, (a2.etag, a2.last_modified)),
        (b.key, (b.etag, b.last_modified)),
    ]
    assert {r.status for r in live} == {"loaded"}


@pytest.mark.parametrize("on_source_delete", ["keep", "remove"])
def test_a_deleted_object_keeps_or_loses_its_live_version_as_the_contract_says(
    cur: psycopg.Cursor, table: str, on_source_delete: str
) -> None:
    a, b = _obj("a.csv"), _obj("b.csv")
    pending_c = _obj("c.csv")
    ledger.observe(cur, table, [a, b, pending_c], "run-1")
    _record(cur, table, a, "loaded")
    _record(cur, table, b, "loaded")
    prefix = f"raw/orders/dt={DAY}/"
    gone = [r.source_key for r in ledger.live_under(cur, table, prefix) if r.source_key != b.key]  # as list_files does

    # keep: list_files marks them; remove: the load marks the keys whose rows it retracted.
    ledger.mark_deleted(cur, table, [*gone, pending_c.key], remove=on_source_delete == "remove")

    first = ledger.rows_for(cur, table, [a.key])[0]
    assert first.deleted_at is not None
    assert _status(cur, table, b) == "loaded" and ledger.rows_for(cur, table, [b.key])[0].deleted_at is None
    assert _status(cur, table, pending_c) == "pending"  # only a loaded version is the object's rows
    if on_source_delete == "keep":
        assert first.status == "loaded"  # its rows stay in the table
        assert sorted(r.source_key for r in ledger.live_under(cur, table, prefix)) == [a.key, b.key]
        ledger.mark_deleted(cur, table, [a.key], remove=False)  # the next run finds it gone again
        assert ledger.rows_for(cur, table, [a.key])[0].deleted_at == first.deleted_at
    else:
        assert first.status == "deleted"
        assert [r.source_key for r in ledger.live_under(cur, table, prefix)] == [b.key]
        assert ledger.live(cur, table, [a.key]) == {}
        assert _keys(ledger.observe(cur, table, [a], "run-2").done) == [a.key]


def test_marking_no_keys_deleted_changes_nothing(cur: psycopg.Cursor, table: str) -> None:
    a = _obj("a.csv")
    ledger.observe(cur, table, [a], "run-1")
    _record(cur, table, a, "loaded")
    ledger.mark_deleted(cur, table, [], remove=True)
    assert ledger.rows_for(cur, table, [a.key])[0].deleted_at is None
    assert _status(cur, table, a) == "loaded"


# --- a failed reprocess -----------------------------------------------------------------------


def test_a_failed_reprocess_leaves_the_loaded_version_live(cur: psycopg.Cursor, table: str) -> None:
    a = _obj("a.csv")
    ledger.observe(cur, table, [a], "run-1")
    _record(cur, table, a, "loaded", run_id="run-1")
    assert ledger.observe(cur, table, [a], "run-2", reprocess=True).todo == [a]

    _record(cur, table, a, "failed", error="ValueError: boom", run_id="run-2", max_attempts=1)  # as the load does

    assert ledger.live(cur, table, [a.key])[a.key].version == (a.etag, a.last_modified)
    # Still loaded (its rows are the table's), never parked, and the error is on record.
    assert _row(cur, table, a) == ("loaded", 0, None, "ValueError: boom", "run-2")
