"""The task bodies of include/etl/running/tasks.py, called directly with a small fake task context (tests/task_run.py)
against the real PostgreSQL and moto's S3 server: what each task returns, pushes and records.

Each test has a warehouse database and raw/processed prefixes of its own (`isolated`, tests/conftest.py), so no
other test's open files are listed by its runs.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pytest

from include.etl.contract.model import Contract, load_contract
from include.etl.running import tasks
from local_stack.stack import LocalStack
from tests.integration.conftest import HEADER, html_body, mails
from tests.task_run import FakeDagRun, FakeTaskInstance, TaskRun, run_tasks

pytestmark = pytest.mark.integration

DAY = "2026-02-10"


@pytest.fixture
def orders() -> Contract:
    return load_contract("orders")


def _put(stack: LocalStack, prefix: str, name: str, body: str) -> str:
    key = f"{prefix}/raw/orders/dt={DAY}/{name}"
    stack.s3().put_object(Bucket="raw", Key=key, Body=body.encode())
    return key


def _row(order_id: str, product: str = "p") -> str:
    return f"{order_id},{DAY} 10:00,c,{product},x,1,1.00,North\n"


def _task_run(contract: Contract, **params: Any) -> TaskRun:
    """A run's context without running anything: for calling one task at a time."""
    from datetime import UTC, datetime

    from tests.task_run import DEFAULT_PARAMS

    conf = {**DEFAULT_PARAMS, "day": DAY, **params}
    return TaskRun(
        contract=contract,
        run_id="manual__test",
        dag_run=FakeDagRun("manual__test", "manual", datetime.now(UTC), conf),
        params=conf,
        data_interval_start=None,
        retries=3,
    )


def _context(run: TaskRun, task_id: str, map_index: int = -1, try_number: int = 1) -> dict[str, Any]:
    return run.context(FakeTaskInstance(run, task_id, map_index, try_number, run.retries))


def test_list_files_records_new_versions_returns_groups_and_pushes_the_listing(stack, isolated, orders) -> None:
    a = _put(stack, isolated.prefix, "a.csv", HEADER + _row("LF-1"))
    b = _put(stack, isolated.prefix, "b.csv", HEADER + _row("LF-2"))
    run = _task_run(orders)
    groups = tasks.list_files(_context(run, "list_files"), orders)
    assert [[f["key"] for f in g] for g in groups] == [[a], [b]]
    assert json.loads(run.xcom[("list_files", -1, "listing")]) == {
        "deleted": [],
        "listed": 2,
        "retried": [],
        "skipped": [],
        "ignored": [],
        "ignored_count": 0,
    }
    statuses = isolated.execute("SELECT source_key, status FROM etl.orders_file_ledger ORDER BY 1").fetchall()
    assert statuses == [(a, "pending"), (b, "pending")]
    # Listed again before a load: the same versions are still to do, nothing is recorded twice.
    assert tasks.list_files(_context(run, "list_files"), orders) == groups
    assert isolated.execute("SELECT count(*) FROM etl.orders_file_ledger").fetchone() == (2,)


def test_transform_returns_each_files_result_and_a_files_error_stays_the_files(
    stack, isolated, orders, monkeypatch
) -> None:
    _put(stack, isolated.prefix, "good.csv", HEADER + _row("TR-1") + "TR-2,not a date,c,p,x,1,1.00,North\n")
    _put(stack, isolated.prefix, "bug.csv", HEADER + _row("TR-3"))
    run = _task_run(orders)
    (good,), (bug,) = sorted(tasks.list_files(_context(run, "list_files"), orders), key=lambda g: g[0]["key"])[::-1]
    real = tasks.transform_file

    def fails_for_bug(s3: Any, obj: Any, *args: Any) -> Any:
        if obj.key.endswith("bug.csv"):
            raise ValueError("a bug this file triggers")
        return real(s3, obj, *args)

    monkeypatch.setattr("include.etl.running.tasks.transform_file", fails_for_bug)
    results = tasks.transform(_context(run, "transform", 0), orders, [good, bug])
    by_name = {r["source_key"].rsplit("/", 1)[1]: r for r in results}
    assert (by_name["good.csv"]["status"], by_name["good.csv"]["rows_clean"], by_name["good.csv"]["rows_rejected"]) == (
        "processed",
        1,
        1,
    )
    assert by_name["good.csv"]["processed_key"] == f"{isolated.prefix}/processed/orders/dt={DAY}/good.csv.parquet"
    assert (by_name["bug.csv"]["status"], by_name["bug.csv"]["error"]) == (
        "failed",
        "ValueError: a bug this file triggers",
    )


def test_transform_raises_a_transient_fault_for_airflow_to_retry_and_records_it_on_the_last_try(
    stack, isolated, orders, monkeypatch
) -> None:
    _put(stack, isolated.prefix, "flaky.csv", HEADER + _row("TF-1"))
    run = _task_run(orders)
    (group,) = tasks.list_files(_context(run, "list_files"), orders)

    def outage(*args: Any) -> Any:
        raise ConnectionError("simulated S3 outage")

    monkeypatch.setattr("include.etl.running.tasks.transform_file", outage)
    with pytest.raises(ConnectionError):
        tasks.transform(_context(run, "transform", 0, try_number=1), orders, group)
    (last,) = tasks.transform(_context(run, "transform", 0, try_number=run.retries + 1), orders, group)
    assert (last["status"], last["error"]) == ("failed", "ConnectionError: simulated S3 outage")


def test_load_records_a_killed_transforms_files_as_failed_with_its_log(stack, isolated, orders) -> None:
    """A transform that left no result (killed: out of memory, a timeout) fails its files, and the others load."""
    _put(stack, isolated.prefix, "a.csv", HEADER + _row("KT-1"))
    _put(stack, isolated.prefix, "b.csv", HEADER + _row("KT-2"))
    run = _task_run(orders)
    groups = tasks.list_files(_context(run, "list_files"), orders)
    run.xcom[("list_files", -1, "return_value")] = json.dumps(groups)
    value = tasks.transform(_context(run, "transform", 0), orders, groups[0])
    run.xcom[("transform", 0, "return_value")] = json.dumps(value)  # [1] was killed: no XCom
    summary = tasks.load(_context(run, "load"), orders, groups)
    by_name = {f["source_key"].rsplit("/", 1)[1]: f for f in summary["files"]}
    assert by_name["a.csv"]["status"] == "loaded"
    assert by_name["b.csv"]["status"] == "failed"
    assert "the transform task for b.csv ended without a result (killed" in by_name["b.csv"]["error"]
    assert "/dags/orders_pipeline/runs/manual__test/tasks/transform/mapped/1" in by_name["b.csv"]["error"]
    assert summary["table_changed"] is True and summary["day"] == DAY
    ids = isolated.execute("SELECT order_id FROM analytics.orders").fetchall()
    assert ids == [("KT-1",)]
    assert isolated.execute(
        "SELECT status, attempts FROM etl.orders_file_ledger WHERE source_key LIKE '%b.csv'"
    ).fetchone() == ("failed", 1)


def test_load_and_the_report_skip_when_nothing_was_listed(orders) -> None:
    run = _task_run(orders)
    for body in (tasks.load, tasks.validation_report):
        with pytest.raises(Exception, match="list_files failed: nothing to load") as caught:
            body(_context(run, body.__name__), orders, None)  # type: ignore[arg-type]
        assert type(caught.value).__name__ == "AirflowSkipException"


def test_validation_report_writes_a_report_beside_each_processed_file(stack, isolated, orders) -> None:
    _put(stack, isolated.prefix, "v.csv", HEADER + _row("VR-1"))
    run = run_tasks(orders, DAY)
    assert run.state == "success", run.errors
    (report,) = run.pulled("validation_report")
    assert (report["success"], report["rows"], report["failures"]) == (True, 1, [])
    stored = stack.s3().get_object(Bucket="processed", Key=report["report_key"])["Body"].read()
    assert json.loads(stored)["rows"] == 1
    assert report["report_key"] == f"{isolated.prefix}/processed/orders/dt={DAY}/v.csv.validation.json"


def test_the_table_checks_run_only_when_the_load_changed_the_table(stack, isolated, orders) -> None:
    from include.etl.running.dag_factory import build_pipeline

    _put(stack, isolated.prefix, "c.csv", HEADER + _row("TC-1"))
    first = run_tasks(orders, DAY)
    # The in-process run walks every task the DAG has (tests/dags checks the DAG's wiring and trigger rules).
    assert {label.split("[")[0] for label in first.states} == set(build_pipeline(orders).task_dict)
    assert (first.states["check_columns"], first.states["check_table"]) == ("success", "success")
    again = run_tasks(orders, DAY)
    assert again.summary is not None and tasks.table_changed(again.summary) is False
    assert (again.states["check_columns"], again.states["check_table"], again.state) == (
        "skipped",
        "skipped",
        "success",
    )


def test_send_summary_emails_the_run_and_fails_it_when_a_file_failed(stack, isolated, orders) -> None:
    run = _task_run(orders)
    failed = {"source_key": "raw/orders/dt=2026-02-10/x.csv", "status": "failed", "attempts": 1, "error": "boom"}
    summary = {"day": DAY, "files": [failed], "parked": [], "deleted": []}
    before = len(mails(stack.paths.mailbox))
    with pytest.raises(Exception, match="1 file\\(s\\) failed and are recorded in the ledger") as caught:
        tasks.send_summary(_context(run, "notify"), orders, summary, [])
    assert type(caught.value).__name__ == "AirflowFailException"
    (sent,) = mails(stack.paths.mailbox)[before:]
    assert sent["subject"] == f"[orders_pipeline] {DAY}: load FAILED for 1 file(s)"
    assert "attempt 1 of 3: boom" in html.unescape(html_body(sent))
