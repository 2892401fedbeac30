"""End to end through Airflow (`dag.test()`) against the real local servers.

Two dates of dirty sample orders go from moto's S3 server through the DAG into
PostgreSQL; the email lands in the SMTP sink's mailbox.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from include.etl import transform as transform_module
from local_stack import postgres
from local_stack.config import AIRFLOW_DB
from local_stack.sample_orders import generate
from local_stack.stack import LocalStack
from tests.integration.conftest import HEADER, html_body, mails, table_checksum

pytestmark = pytest.mark.integration

DAYS = [date(2026, 3, 1), date(2026, 3, 2)]


@pytest.fixture(scope="module")
def dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from local_stack.config import PROJECT_ROOT

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert not bag.import_errors
    return bag.dags["orders_pipeline"]


def run(dag: Any, day: str, **conf: Any) -> str:
    return str(run_dag(dag, day, **conf).state)


def run_dag(dag: Any, day: str, **conf: Any) -> Any:
    return dag.test(run_conf={"day": day, **conf})


def _ledger(warehouse: Any, day: str) -> dict[str, tuple[Any, ...]]:
    rows = warehouse.execute(
        "SELECT source_key, status, rows_read, rows_loaded, rows_rejected, rows_duplicate, reason "
        "FROM etl.file_ledger WHERE source_key LIKE %s",
        (f"raw/orders/dt={day}/%",),
    ).fetchall()
    return {r[0].rsplit("/", 1)[-1]: r[1:] for r in rows}


@pytest.fixture(scope="module")
def two_days(stack: LocalStack, dag: Any) -> dict[str, Any]:
    """Seed the sample plus one hand-written file, run the DAG for two dates."""
    files = generate(DAYS, files=3, rows_per_file=60)
    files[DAYS[0].isoformat()]["handwritten.csv"] = (
        HEADER
        + 'HW-1,2026-03-01T10:00:00+02:00,,  Desk   Lamp ,home & GARDEN,3,"$1,234.50",north\n'
        + "HW-2,03/01/2026 13:45,C9,Mug,,2,0.10,WEST\n"
        + "HW-3,garbage,C9,Mug,,2,0.10,WEST\n"
    ).encode()
    stack.seed(files)
    runs = {day: run_dag(dag, day) for day in files}
    tasks = {day: {ti.task_id: str(ti.state) for ti in r.get_task_instances()} for day, r in runs.items()}
    return {"files": files, "states": {day: str(r.state) for day, r in runs.items()}, "tasks": tasks}


def test_both_runs_succeed_and_every_file_is_reconciled(two_days, warehouse) -> None:
    assert set(two_days["states"].values()) == {"success"}
    for tasks in two_days["tasks"].values():  # rows were loaded: the table checks ran and passed
        assert tasks["check_columns"] == tasks["check_table"] == "success"
    for day, named in two_days["files"].items():
        ledger = _ledger(warehouse, day)
        assert set(ledger) == set(named)
        for status, read, loaded, rejected, dups, _ in ledger.values():
            assert read == loaded + rejected + dups
            assert read > 0
            assert status in {"loaded", "rejected"}


def test_rows_and_values_in_postgres(two_days, warehouse) -> None:
    rows = warehouse.execute(
        "SELECT order_id, order_ts, order_date, customer_id, product_name, category, quantity, unit_price, "
        "total_price, region, source_key FROM analytics.orders WHERE order_id LIKE 'HW-%' ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == ["HW-1", "HW-2"]
    hw1, hw2 = rows
    assert hw1[1].isoformat() == "2026-03-01T08:00:00+00:00"
    assert hw1[2] == date(2026, 3, 1)
    assert hw1[3:] == (
        "guest",
        "Desk Lamp",
        "Home & Garden",
        3,
        Decimal("1234.50"),
        Decimal("3703.50"),
        "North",
        "raw/orders/dt=2026-03-01/handwritten.csv",
    )
    assert hw2[1].isoformat() == "2026-03-01T13:45:00+00:00"
    assert hw2[5:10] == ("Uncategorized", 2, Decimal("0.10"), Decimal("0.20"), "West")
    total = warehouse.execute("SELECT count(*), count(DISTINCT order_id) FROM analytics.orders").fetchone()
    ledger_total = warehouse.execute("SELECT sum(rows_inserted) FROM etl.file_ledger").fetchone()[0]
    assert total[0] == total[1] == ledger_total > 300


def test_missing_column_file_is_quarantined_and_others_load(two_days, warehouse, stack) -> None:
    day = DAYS[0].isoformat()
    legacy = next(name for name in two_days["files"][day] if "legacy" in name)
    status, read, loaded, rejected, _, reason = _ledger(warehouse, day)[legacy]
    assert (status, loaded, rejected) == ("rejected", 0, read)
    assert reason == "missing required column(s): region"
    key = f"rejected/orders/dt={day}/{legacy}"
    obj = stack.s3().get_object(Bucket="processed", Key=key)
    assert obj["Metadata"]["reject-reason"] == reason
    assert obj["Body"].read().decode().count("missing required column(s): region") == read
    others = [v for k, v in _ledger(warehouse, day).items() if k != legacy]
    assert others and all(v[0] == "loaded" and v[2] > 0 for v in others)


def test_processed_parquet_and_rejected_rows_in_s3(two_days, stack, tmp_path) -> None:
    s3 = stack.s3()
    day = DAYS[0].isoformat()
    key = f"processed/orders/dt={day}/handwritten.parquet"
    s3.download_file("processed", key, str(tmp_path / "p.parquet"))
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column("order_id").to_pylist() == ["HW-1", "HW-2"]
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.row_group(0).column(0).compression == "ZSTD"
    rejected = s3.get_object(Bucket="processed", Key=f"rejected/orders/dt={day}/handwritten.csv")["Body"].read()
    lines = rejected.decode().splitlines()
    assert lines[1].startswith('4,"order_ts \'garbage\' is not a recognised date/time",,"HW-3","garbage"')


def test_success_email_has_the_per_file_summary(two_days, stack) -> None:
    summaries = [m for m in mails(stack.paths.mailbox) if "load succeeded" in m["subject"]]
    subjects = {m["subject"] for m in summaries}
    for day in two_days["files"]:
        assert f"[orders_pipeline] {day}: load succeeded" in subjects
    body = html_body(next(m for m in summaries if DAYS[0].isoformat() in m["subject"]))
    assert "handwritten.csv" in body
    assert "missing required column(s): region" in body
    assert "Totals: read" in body
    assert summaries[0]["to"] == "data-team@example.com"


def test_rerun_changes_nothing(two_days, dag, warehouse, stack) -> None:
    before = table_checksum(warehouse)
    ledger_before = warehouse.execute("SELECT count(*) FROM etl.file_ledger").fetchone()
    mails_before = len(mails(stack.paths.mailbox))
    for day in two_days["files"]:
        dag_run = run_dag(dag, day)
        assert str(dag_run.state) == "success"
        states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
        # nothing changed: the table checks are skipped, the summary still goes out
        assert states["table_changed"] == "success"
        assert states["check_columns"] == states["check_table"] == "skipped"
        assert states["notify"] == "success"
    assert table_checksum(warehouse) == before
    assert warehouse.execute("SELECT count(*) FROM etl.file_ledger").fetchone() == ledger_before
    assert len(mails(stack.paths.mailbox)) == mails_before + len(two_days["files"])


def test_failed_file_is_loaded_by_the_next_run(stack, dag, warehouse, monkeypatch) -> None:
    day = "2026-03-05"
    stack.seed(
        {
            day: {
                "good.csv": (HEADER + "F-1,2026-03-05 10:00,c,p,x,1,1.00,North\n").encode(),
                "flaky.csv": (HEADER + "F-2,2026-03-05 10:00,c,p,x,1,1.00,North\n").encode(),
            }
        }
    )
    real = transform_module.transform_file

    def broken(s3: Any, obj: Any, *args: Any) -> Any:
        if obj.key.endswith("flaky.csv"):
            raise ConnectionError("simulated S3 outage for flaky.csv")
        return real(s3, obj, *args)

    monkeypatch.setattr(transform_module, "transform_file", broken)
    assert run(dag, day) == "failed"
    assert set(_ledger(warehouse, day)) == {"good.csv"}
    loaded = warehouse.execute("SELECT order_id FROM analytics.orders WHERE order_id LIKE 'F-%'").fetchall()
    assert loaded == [("F-1",)]
    messages = mails(stack.paths.mailbox)
    alert = [m for m in messages if m["subject"] == "[orders_pipeline] task transform[flaky.csv] failed"]
    assert alert and "simulated S3 outage for flaky.csv" in html_body(alert[-1])
    summary = [m for m in messages if m["subject"] == f"[orders_pipeline] {day}: load FAILED for 1 file(s)"]
    assert summary and "flaky.csv" in html_body(summary[-1])

    monkeypatch.setattr(transform_module, "transform_file", real)
    assert run(dag, day) == "success"
    assert set(_ledger(warehouse, day)) == {"good.csv", "flaky.csv"}
    loaded = warehouse.execute("SELECT order_id FROM analytics.orders WHERE order_id LIKE 'F-%' ORDER BY 1").fetchall()
    assert loaded == [("F-1",), ("F-2",)]


def test_partition_with_more_files_than_the_map_cap_loads_completely(stack, dag, warehouse, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_ORDERS_MAX_MAPPED_TASKS", "3")
    day = "2026-03-07"
    names = [f"part_{i:02d}.csv" for i in range(8)]
    stack.seed({day: {n: (HEADER + f"G-{n},2026-03-07 10:00,c,p,x,1,1.00,North\n").encode() for n in names}})
    dag_run = run_dag(dag, day)
    assert str(dag_run.state) == "success"
    assert set(_ledger(warehouse, day)) == set(names)
    count = warehouse.execute("SELECT count(*) FROM analytics.orders WHERE order_id LIKE 'G-part_%'").fetchone()
    assert count == (8,)
    with psycopg.connect(postgres.dsn(stack.ports.postgres, AIRFLOW_DB)) as meta:
        mapped = meta.execute(
            "SELECT count(*) FROM task_instance WHERE run_id = %s AND task_id = 'transform'", (dag_run.run_id,)
        ).fetchone()
    assert mapped == (3,)


def test_a_file_failing_an_expectation_is_quarantined_with_its_report(stack, dag, warehouse) -> None:
    day = "2026-03-09"
    stack.seed(
        {
            day: {
                "fine.csv": (HEADER + "V-1,2026-03-09 10:00,c,p,x,1,10.00,North\n").encode(),
                # Valid under the contract, but above the suite's unit_price bound of 100000.
                "suspicious.csv": (HEADER + "V-2,2026-03-09 10:00,c,p,x,1,250000.00,North\n").encode(),
            }
        }
    )
    assert run(dag, day) == "success"
    ledger = _ledger(warehouse, day)
    assert ledger["fine.csv"][:2] == ("loaded", 1)
    status, read, loaded, rejected, _, reason = ledger["suspicious.csv"]
    assert (status, read, loaded, rejected) == ("rejected", 1, 0, 1)
    assert reason == "failed expectations: expect_column_values_to_be_between(unit_price): 1 unexpected"
    ids = warehouse.execute("SELECT order_id FROM analytics.orders WHERE order_id LIKE 'V-%'").fetchall()
    assert ids == [("V-1",)]
    s3 = stack.s3()
    passed = json.loads(
        s3.get_object(Bucket="processed", Key=f"processed/orders/dt={day}/fine.validation.json")["Body"].read()
    )
    assert (passed["success"], passed["rows"]) == (True, 1)
    report = json.loads(
        s3.get_object(Bucket="processed", Key=f"rejected/orders/dt={day}/suspicious.validation.json")["Body"].read()
    )
    assert report["success"] is False and report["failures"][0]["examples"] == ["250000.0"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="processed", Prefix=f"rejected/orders/dt={day}/")["Contents"]}
    assert f"rejected/orders/dt={day}/suspicious.parquet" in keys
    summary = [m for m in mails(stack.paths.mailbox) if m["subject"] == f"[orders_pipeline] {day}: load succeeded"]
    body = html_body(summary[-1])
    assert "Data validation (Great Expectations): 1 file(s) passed, 1 quarantined" in body
