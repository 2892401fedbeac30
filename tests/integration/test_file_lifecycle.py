"""The life of raw files, through the pipeline's tasks on the real servers (moto's S3 server, PostgreSQL).

Each case asserts the table, the ledger and the summary email against the semantics the README
states: a raw key's newest version is the one whose rows the table holds, whatever the order of
runs; a replacement rejected whole leaves the previous version loaded; a deleted object keeps
its rows (or loses them, if the contract says `remove`); an overwrite during a run is picked up
by the next run; a file that keeps failing is taken up again whatever its partition's age until
it is parked; outputs of colliding names never overwrite each other.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from include.etl.contract import transform as transform_module
from include.etl.contract.model import Contract, load_contract
from local_stack.stack import LocalStack
from tests.integration.conftest import HEADER, html_body, mails
from tests.task_run import TaskRun, run_tasks

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dag() -> Contract:
    """The orders pipeline, whose tasks each test runs in this process (tests/task_run.py)."""
    return load_contract("orders")


def _run(contract: Contract, day: str | None = None, logical_date: datetime | None = None, **conf: Any) -> TaskRun:
    return run_tasks(contract, day, logical_date=logical_date, **conf)


def _next_second() -> None:
    """S3 keeps LastModified to the second: a later upload must land in a later second."""
    time.sleep(1.05 - time.time() % 1)


def _row(order_id: str, product: str, ts: str = "2026-04-01 10:00", qty: int = 1) -> str:
    return f"{order_id},{ts},c,{product},x,{qty},1.00,North\n"


def _put(stack: LocalStack, day: str, name: str, body: str | bytes) -> str:
    key = f"raw/orders/dt={day}/{name}"
    stack.s3().put_object(Bucket="raw", Key=key, Body=body.encode() if isinstance(body, str) else body)
    return key


def _table(warehouse: Any, prefix: str) -> dict[str, tuple[str, str]]:
    rows = warehouse.execute(
        "SELECT order_id, product_name, source_key FROM analytics.orders WHERE order_id LIKE %s", (f"{prefix}%",)
    ).fetchall()
    return {r[0]: (r[1], r[2].rsplit("/", 1)[-1]) for r in rows}


def _ledger(warehouse: Any, day: str) -> list[tuple[str, str]]:
    rows = warehouse.execute(
        "SELECT split_part(source_key, '/', 4), status FROM etl.orders_file_ledger WHERE source_key LIKE %s "
        "ORDER BY first_seen_at, last_modified, source_key",
        (f"raw/orders/dt={day}/%",),
    ).fetchall()
    return [(name, status) for name, status in rows]


def _summary(stack: LocalStack, day: str) -> str:
    found = [m for m in mails(stack.paths.mailbox) if m["subject"].startswith(f"[orders_pipeline] {day}: ")]
    assert found, f"no summary for {day}"
    return html_body(found[-1])


def test_an_overwritten_file_replaces_its_rows_and_a_dropped_key_falls_back(stack, dag, warehouse) -> None:
    day = "2026-04-01"
    _put(stack, day, "other.csv", HEADER + _row("OW-2", "from-other", ts="2026-04-01 08:00"))
    _put(stack, day, "a.csv", HEADER + _row("OW-1", "v1") + _row("OW-2", "a-v1", ts="2026-04-01 09:00"))
    assert str(_run(dag, day).state) == "success"
    assert _table(warehouse, "OW-") == {"OW-1": ("v1", "a.csv"), "OW-2": ("a-v1", "a.csv")}
    _next_second()
    _put(stack, day, "a.csv", HEADER + _row("OW-1", "v2") + _row("OW-3", "v2"))  # OW-2 no longer in a.csv
    assert str(_run(dag, day).state) == "success"
    # OW-2 is still held by other.csv: it falls back to that row instead of disappearing.
    assert _table(warehouse, "OW-") == {
        "OW-1": ("v2", "a.csv"),
        "OW-2": ("from-other", "other.csv"),
        "OW-3": ("v2", "a.csv"),
    }
    assert _ledger(warehouse, day) == [("a.csv", "superseded"), ("other.csv", "loaded"), ("a.csv", "loaded")]
    assert "a.csv" in _summary(stack, day)


def test_reuploading_earlier_bytes_makes_them_the_newest_version_again(stack, dag, warehouse) -> None:
    day = "2026-04-02"
    first = HEADER + _row("RU-1", "first")
    _put(stack, day, "a.csv", first)
    _run(dag, day)
    _next_second()
    _put(stack, day, "a.csv", HEADER + _row("RU-1", "second"))
    _run(dag, day)
    _next_second()
    _put(stack, day, "a.csv", first)  # the bytes that were loaded before: the same ETag, a newer upload
    assert str(_run(dag, day).state) == "success"
    assert _table(warehouse, "RU-") == {"RU-1": ("first", "a.csv")}
    assert [s for _, s in _ledger(warehouse, day)] == ["superseded", "superseded", "loaded"]


def test_a_replacement_rejected_whole_leaves_the_previous_version_in_place(stack, dag, warehouse) -> None:
    day = "2026-04-03"
    _put(stack, day, "a.csv", HEADER + _row("RW-1", "good"))
    _run(dag, day)
    _next_second()
    _put(stack, day, "a.csv", "order_id,order_ts,product_name\nRW-1,2026-04-03 10:00,broken\n")
    assert str(_run(dag, day).state) == "success"
    assert _table(warehouse, "RW-") == {"RW-1": ("good", "a.csv")}
    assert _ledger(warehouse, day) == [("a.csv", "loaded"), ("a.csv", "rejected")]
    body = _summary(stack, day)
    assert "missing required column(s)" in body
    assert "the previous version of this file, if any, stays loaded" in body


def test_a_deleted_file_keeps_its_rows_by_default(stack, dag, warehouse) -> None:
    day = "2026-04-04"
    key = _put(stack, day, "a.csv", HEADER + _row("DK-1", "kept"))
    _run(dag, day)
    stack.s3().delete_object(Bucket="raw", Key=key)
    assert str(_run(dag, day).state) == "success"
    assert _table(warehouse, "DK-") == {"DK-1": ("kept", "a.csv")}
    deleted = warehouse.execute(
        "SELECT status, deleted_at IS NOT NULL FROM etl.orders_file_ledger WHERE source_key = %s", (key,)
    ).fetchone()
    assert deleted == ("loaded", True)
    assert "Raw objects deleted from S3: their rows are kept (on_source_delete: keep)." in _text(_summary(stack, day))
    # The next run of the day does not report the same deletion again.
    assert str(_run(dag, day).state) == "success"
    assert "deleted from S3" not in _text(_summary(stack, day))
    assert _table(warehouse, "DK-") == {"DK-1": ("kept", "a.csv")}


def test_skip_files_needs_the_keys_to_give_up_on(stack, dag) -> None:
    dag_run = _run(dag, "2026-04-05", skip_files="all", skip_reason="everything")
    assert str(dag_run.state) == "failed"
    alert = next(
        m for m in reversed(mails(stack.paths.mailbox)) if m["subject"] == "[orders_pipeline] task list_files failed"
    )
    assert 'skip_files takes the raw keys to give up on, not "all"' in html.unescape(html_body(alert))


def test_a_deleted_file_loses_its_rows_when_the_contract_says_remove(stack, warehouse, contracts_folder) -> None:
    """A dataset whose contract says `on_source_delete: remove`: a contract file beside the shipped ones."""
    import yaml

    doc = load_contract("orders").to_document()
    doc.update(dataset="orders_rm", table="analytics.orders_rm", ledger_table="etl.orders_rm_file_ledger")
    doc["on_source_delete"] = "remove"
    (contracts_folder / "orders_rm.yml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    removable = load_contract(contracts_folder / "orders_rm.yml")
    day = "2026-04-05"
    s3 = stack.s3()
    for name, body in (("a.csv", _row("RM-1", "from-a", ts="2026-04-05 12:00")), ("b.csv", _row("RM-1", "from-b"))):
        s3.put_object(Bucket="raw", Key=f"raw/orders_rm/dt={day}/{name}", Body=(HEADER + body).encode())
    assert str(_run(removable, day).state) == "success"
    s3.delete_object(Bucket="raw", Key=f"raw/orders_rm/dt={day}/a.csv")
    assert str(_run(removable, day).state) == "success"
    rows = warehouse.execute("SELECT order_id, product_name FROM analytics.orders_rm").fetchall()
    assert rows == [("RM-1", "from-b")]  # a.csv's row is gone; the key falls back to b.csv's
    statuses = dict(
        warehouse.execute("SELECT split_part(source_key, '/', 4), status FROM etl.orders_rm_file_ledger").fetchall()
    )
    assert statuses == {"a.csv": "deleted", "b.csv": "loaded"}


def test_an_overwrite_during_the_transform_is_picked_up_by_the_next_run(stack, dag, warehouse, monkeypatch) -> None:
    day = "2026-04-06"
    _put(stack, day, "a.csv", HEADER + _row("DT-1", "v1"))
    real = transform_module.transform_file

    def overwritten_first(s3: Any, obj: Any, *args: Any) -> Any:
        _next_second()
        _put(stack, day, "a.csv", HEADER + _row("DT-1", "v2"))  # lands after the listing, before the read
        return real(s3, obj, *args)

    monkeypatch.setattr("include.etl.running.tasks.transform_file", overwritten_first)
    assert str(_run(dag, day).state) == "success"  # not failed, not retried
    assert _table(warehouse, "DT-") == {}
    assert _ledger(warehouse, day) == [("a.csv", "superseded"), ("a.csv", "pending")]
    monkeypatch.setattr("include.etl.running.tasks.transform_file", real)
    assert str(_run(dag, day).state) == "success"
    assert _table(warehouse, "DT-") == {"DT-1": ("v2", "a.csv")}
    assert [s for _, s in _ledger(warehouse, day)] == ["superseded", "loaded"]


def test_two_runs_interleaved_with_an_overwrite_leave_the_newest_version(stack, dag, warehouse, monkeypatch) -> None:
    """Run A lists and transforms v1; meanwhile v2 lands and run B loads it; then A loads."""
    day = "2026-04-07"
    _put(stack, day, "a.csv", HEADER + _row("IL-1", "v1"))
    real = transform_module.transform_file

    def then_run_b(s3: Any, obj: Any, *args: Any) -> Any:
        result = real(s3, obj, *args)  # A has read v1
        monkeypatch.setattr("include.etl.running.tasks.transform_file", real)  # run B transforms as usual
        _next_second()
        _put(stack, day, "a.csv", HEADER + _row("IL-1", "v2"))
        b = _run(dag, day)
        assert b.state == "success", b.errors
        return result

    monkeypatch.setattr("include.etl.running.tasks.transform_file", then_run_b)
    assert str(_run(dag, day).state) == "success"
    assert _table(warehouse, "IL-") == {"IL-1": ("v2", "a.csv")}
    assert _ledger(warehouse, day) == [("a.csv", "superseded"), ("a.csv", "loaded")]
    assert "a newer version of the object arrived before this one was loaded" in _summary(stack, day)


def test_a_file_failing_past_the_lookback_window_is_retried_then_parked_then_retried_by_hand(
    stack, dag, warehouse, monkeypatch
) -> None:
    day = "2026-04-08"
    key = _put(stack, day, "stubborn.csv", HEADER + _row("PK-1", "finally"))
    real = transform_module.transform_file

    def fails(s3: Any, obj: Any, *args: Any) -> Any:
        if obj.key == key:
            raise ValueError("a bug this file triggers")
        return real(s3, obj, *args)

    monkeypatch.setattr("include.etl.running.tasks.transform_file", fails)
    before = len(mails(stack.paths.mailbox))
    # Runs of later days (no `day` param: as scheduled runs list), well past the 3-day lookback.
    # A manual run at midnight owns the day before it (its data interval): 04-08, then 04-15 and 04-20.
    for n, later in enumerate(("2026-04-09", "2026-04-16", "2026-04-21")):
        run = _run(dag, logical_date=datetime.fromisoformat(later).replace(tzinfo=UTC))
        assert str(run.state) == "failed"
        attempts, status = warehouse.execute(
            "SELECT attempts, status FROM etl.orders_file_ledger WHERE source_key = %s", (key,)
        ).fetchone()
        assert (attempts, status) == (n + 1, "parked" if n == 2 else "failed")
    subjects = [m["subject"] for m in mails(stack.paths.mailbox)[before:]]
    assert "[orders_pipeline] 1 file(s) parked after repeated failures: action needed" in subjects
    # A parked file is no longer taken up, and every summary lists it until someone acts.
    run = _run(dag, logical_date=datetime(2026, 4, 26, tzinfo=UTC))
    assert str(run.state) == "success"
    assert warehouse.execute(
        "SELECT attempts FROM etl.orders_file_ledger WHERE source_key = %s", (key,)
    ).fetchone() == (3,)
    latest = html_body(mails(stack.paths.mailbox)[-1])
    assert "parked file(s) wait for you" in latest and key in latest and "retry_files" in latest
    # Fixed: retried by hand, it loads.
    monkeypatch.setattr("include.etl.running.tasks.transform_file", real)
    run = _run(dag, logical_date=datetime(2026, 4, 27, tzinfo=UTC), retry_files=[key])
    assert str(run.state) == "success"
    assert _table(warehouse, "PK-") == {"PK-1": ("finally", "stubborn.csv")}
    assert warehouse.execute("SELECT status FROM etl.orders_file_ledger WHERE source_key = %s", (key,)).fetchone() == (
        "loaded",
    )


def test_a_parked_file_can_be_skipped_with_a_reason(stack, dag, warehouse, monkeypatch) -> None:
    day = "2026-04-09"
    key = _put(stack, day, "junk.csv", HEADER + _row("SK-1", "never"))
    monkeypatch.setenv("AIRFLOW_VAR_ORDERS_MAX_ATTEMPTS", "1")

    def fails(s3: Any, obj: Any, *args: Any) -> Any:
        raise ValueError("cannot be read by this version of the code")

    monkeypatch.setattr("include.etl.running.tasks.transform_file", fails)
    assert str(_run(dag, day).state) == "failed"
    status = warehouse.execute("SELECT status FROM etl.orders_file_ledger WHERE source_key = %s", (key,)).fetchone()
    assert status == ("parked",)
    run = _run(dag, day, skip_files=[key], skip_reason="known-bad export")
    assert str(run.state) == "success"
    status, reason = warehouse.execute(
        "SELECT status, reason FROM etl.orders_file_ledger WHERE source_key = %s", (key,)
    ).fetchone()
    assert status == "skipped" and reason.startswith("known-bad export (run manual__")
    assert _table(warehouse, "SK-") == {}
    assert key not in _summary(stack, day)  # no longer parked: not listed as waiting


def test_colliding_names_each_get_their_own_outputs_and_rows(stack, dag, warehouse) -> None:
    import gzip

    day = "2026-04-10"
    _put(stack, day, "a.csv", HEADER + _row("CN-1", "lower"))
    _put(stack, day, "a.CSV", HEADER + _row("CN-2", "upper"))
    _put(stack, day, "a.csv.gz", gzip.compress((HEADER + _row("CN-3", "gzip")).encode(), mtime=0))
    assert str(_run(dag, day).state) == "success"
    assert _table(warehouse, "CN-") == {
        "CN-1": ("lower", "a.csv"),
        "CN-2": ("upper", "a.CSV"),
        "CN-3": ("gzip", "a.csv.gz"),
    }
    counts = warehouse.execute(
        "SELECT split_part(source_key, '/', 4), status, rows_loaded, rows_duplicate FROM etl.orders_file_ledger "
        "WHERE source_key LIKE %s ORDER BY 1",
        (f"raw/orders/dt={day}/%",),
    ).fetchall()
    assert counts == [("a.CSV", "loaded", 1, 0), ("a.csv", "loaded", 1, 0), ("a.csv.gz", "loaded", 1, 0)]
    keys = {
        o["Key"].rsplit("/", 1)[-1]
        for o in stack.s3().list_objects_v2(Bucket="processed", Prefix=f"processed/orders/dt={day}/")["Contents"]
    }
    assert {"a.csv.parquet", "a.CSV.parquet", "a.csv.gz.parquet"} <= keys


def _text(html: str) -> str:
    import re
    from html import unescape

    return unescape(re.sub(r"<[^>]+>", "", html))
