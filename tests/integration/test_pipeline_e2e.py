"""End to end through Airflow (`dag.test()`) against the real local servers.

Dirty sample orders and customers go from moto's S3 server through their DAGs into PostgreSQL;
the emails land in the SMTP sink's mailbox. Retries: transient faults are retried, errors that
repeat are recorded against their file on the first try.
"""

from __future__ import annotations

import html
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from include.etl.contract import transform as transform_module
from include.etl.contract.model import load_contract
from include.etl.running.lineage import forget_collected
from local_stack import postgres
from local_stack.config import AIRFLOW_DB, PROJECT_ROOT
from local_stack.demo.sample_customers import generate as generate_customers
from local_stack.demo.sample_orders import generate
from local_stack.stack import LocalStack
from tests.integration.conftest import HEADER, html_body, mails, table_checksum
from tests.task_run import run_tasks

pytestmark = pytest.mark.integration

DAYS = [date(2026, 3, 1), date(2026, 3, 2)]


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    # The pipelines' DAG file only: the marts DAG's parse (Cosmos runs `dbt ls`) is tested in tests/dags.
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "pipelines.py"))
    assert not bag.import_errors
    return bag


@pytest.fixture(scope="module")
def dag(dagbag: Any) -> Any:
    return dagbag.dags["orders_pipeline"]


def run(dag: Any, day: str, **conf: Any) -> str:
    return str(run_dag(dag, day, **conf).state)


# dag.test() runs tasks in this process, where a run's conf leaks into the DAG's params for the next
# run: every run passes every param.
DEFAULTS = {"day": None, "reprocess": False, "retry_files": [], "skip_files": [], "skip_reason": ""}


def run_dag(dag: Any, day: str, **conf: Any) -> Any:
    forget_collected()  # the lineage earlier tasks of this process reported
    return dag.test(run_conf={**DEFAULTS, "day": day, **conf})


def _ledger(warehouse: Any, day: str, dataset: str = "orders") -> dict[str, tuple[Any, ...]]:
    rows = warehouse.execute(
        f"SELECT source_key, status, rows_read, rows_loaded, rows_rejected, rows_duplicate, reason "
        f"FROM etl.{dataset}_file_ledger WHERE source_key LIKE %s AND status <> 'superseded'",
        (f"raw/{dataset}/dt={day}/%",),
    ).fetchall()
    return {r[0].rsplit("/", 1)[-1]: r[1:] for r in rows}


def _tries(stack: LocalStack, run_id: str, task_id: str) -> list[int]:
    with psycopg.connect(postgres.dsn(stack.ports.postgres, AIRFLOW_DB)) as meta:
        rows = meta.execute(
            "SELECT try_number FROM task_instance WHERE run_id = %s AND task_id = %s ORDER BY map_index",
            (run_id, task_id),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture(scope="module")
def two_days(stack: LocalStack, dag: Any) -> dict[str, Any]:
    """Seed the sample plus one hand-written file, run the DAG for two dates."""
    files = generate(DAYS, files=3, rows_per_file=60)
    files[DAYS[0].isoformat()]["handwritten.csv"] = (
        HEADER
        + 'HW-1,2026-03-01T10:00:00+02:00,,  Desk   Lamp ,home & GARDEN,3,"$1,234.50",north\n'
        + "HW-2,03/01/2026 13:45,C9,Mug,,2,0.10,WEST\n"
        + "HW-3,garbage,C9,Mug,,2,0.10,WEST\n"
        + "HW-4,2026-03-01 09:00,C9,Big order,,2,150000.00,West\n"  # an outlier: warned about, loaded
    ).encode()
    stack.seed(files)
    runs = {day: run_dag(dag, day) for day in files}
    tasks = {day: {ti.task_id: str(ti.state) for ti in r.get_task_instances()} for day, r in runs.items()}
    return {"files": files, "states": {day: str(r.state) for day, r in runs.items()}, "tasks": tasks}


def test_both_runs_succeed_and_every_file_is_reconciled(two_days, warehouse) -> None:
    assert set(two_days["states"].values()) == {"success"}
    for tasks in two_days["tasks"].values():  # rows were loaded: the table checks ran and passed
        assert tasks["check_columns"] == tasks["check_table"] == tasks["validation_report"] == "success"
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
    assert [r[0] for r in rows] == ["HW-1", "HW-2", "HW-4"]
    hw1, hw2, hw4 = rows
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
    assert hw4[7] == Decimal("150000.00")  # one outlier row is a warning, never a quarantined file
    total = warehouse.execute("SELECT count(*), count(DISTINCT order_id) FROM analytics.orders").fetchone()
    assert total[0] == total[1] > 300


def test_missing_column_file_is_rejected_and_others_load(two_days, warehouse, stack) -> None:
    day = DAYS[0].isoformat()
    legacy = next(name for name in two_days["files"][day] if "legacy" in name)
    status, read, loaded, rejected, _, reason = _ledger(warehouse, day)[legacy]
    assert (status, loaded, rejected) == ("rejected", 0, read)
    assert reason == "missing required column(s): region"
    key = f"rejected/orders/dt={day}/{legacy}.rejected.csv"
    obj = stack.s3().get_object(Bucket="processed", Key=key)
    assert obj["Metadata"]["reject-reason"] == reason
    assert obj["Body"].read().decode().count("missing required column(s): region") == read
    others = [v for k, v in _ledger(warehouse, day).items() if k != legacy]
    assert others and all(v[0] == "loaded" and v[2] > 0 for v in others)


def test_processed_parquet_rejected_rows_and_validation_report_in_s3(two_days, stack, tmp_path) -> None:
    s3 = stack.s3()
    day = DAYS[0].isoformat()
    key = f"processed/orders/dt={day}/handwritten.csv.parquet"
    s3.download_file("processed", key, str(tmp_path / "p.parquet"))
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column("order_id").to_pylist() == ["HW-1", "HW-2", "HW-4"]
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.row_group(0).column(0).compression == "ZSTD"
    rejected = s3.get_object(Bucket="processed", Key=f"rejected/orders/dt={day}/handwritten.csv.rejected.csv")
    lines = rejected["Body"].read().decode().splitlines()
    assert lines[1].startswith('4,"order_ts \'garbage\' is not a recognised date/time",,"HW-3","garbage"')
    report_key = f"processed/orders/dt={day}/handwritten.csv.validation.json"
    report = json.loads(s3.get_object(Bucket="processed", Key=report_key)["Body"].read())
    # The warn-level price rule is reported, and does not make the file fail its suite.
    assert (report["success"], report["rows"]) == (True, 3)
    assert [(f["expectation"], f["column"], f["severity"], f["unexpected_count"]) for f in report["failures"]] == [
        ("expect_column_values_to_be_between", "unit_price", "warn", 1)
    ]


def test_success_email_has_the_per_file_summary(two_days, stack) -> None:
    summaries = [m for m in mails(stack.paths.mailbox) if "load succeeded" in m["subject"]]
    subjects = {m["subject"] for m in summaries}
    for day in two_days["files"]:
        assert f"[orders_pipeline] {day}: load succeeded" in subjects
    body = html_body(next(m for m in summaries if DAYS[0].isoformat() in m["subject"]))
    assert "handwritten.csv" in body
    assert "missing required column(s): region" in body
    assert "Totals: read" in body
    assert "warning: column_values_to_be_between (unit_price) max=100000: 1 of 3 row(s) do not meet it" in body
    assert "of 4 processed file(s) met the contract&#x27;s suite" in body
    assert summaries[0]["to"] == "data-team@example.com"


def test_rerun_changes_nothing(two_days, dag, warehouse, stack) -> None:
    before = table_checksum(warehouse)
    ledger_before = warehouse.execute("SELECT count(*) FROM etl.orders_file_ledger").fetchone()
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
    assert warehouse.execute("SELECT count(*) FROM etl.orders_file_ledger").fetchone() == ledger_before
    assert len(mails(stack.paths.mailbox)) == mails_before + len(two_days["files"])


def test_a_transient_fault_is_retried_and_recorded_if_it_outlasts_the_retries(
    stack, dag, warehouse, monkeypatch
) -> None:
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

    def outage(s3: Any, obj: Any, *args: Any) -> Any:
        if obj.key.endswith("flaky.csv"):
            raise ConnectionError("simulated S3 outage for flaky.csv")
        return real(s3, obj, *args)

    monkeypatch.setattr("include.etl.running.tasks.transform_file", outage)
    dag_run = run_dag(dag, day)
    assert str(dag_run.state) == "failed"
    assert sorted(_tries(stack, dag_run.run_id, "transform")) == [1, 4]  # good.csv once, flaky.csv 1 + 3 retries
    ledger = _ledger(warehouse, day)
    assert ledger["good.csv"][0] == "loaded"
    assert ledger["flaky.csv"][0] == "failed"
    error = warehouse.execute(
        "SELECT attempts, last_error FROM etl.orders_file_ledger WHERE source_key LIKE '%flaky.csv'"
    ).fetchone()
    assert error == (1, "ConnectionError: simulated S3 outage for flaky.csv")
    summary = [
        m for m in mails(stack.paths.mailbox) if m["subject"] == f"[orders_pipeline] {day}: load FAILED for 1 file(s)"
    ]
    assert summary and "attempt 1 of 3: ConnectionError: simulated S3 outage" in html_body(summary[-1])

    monkeypatch.setattr("include.etl.running.tasks.transform_file", real)
    assert run(dag, day) == "success"
    assert {k: v[0] for k, v in _ledger(warehouse, day).items()} == {"good.csv": "loaded", "flaky.csv": "loaded"}
    loaded = warehouse.execute("SELECT order_id FROM analytics.orders WHERE order_id LIKE 'F-%' ORDER BY 1").fetchall()
    assert loaded == [("F-1",), ("F-2",)]


def test_an_error_that_repeats_costs_one_attempt_and_does_not_hold_the_run(stack, dag, warehouse, monkeypatch) -> None:
    """The crash seen over HTTP S3 cost four tries and minutes; a deterministic error costs one."""
    day = "2026-03-06"
    stack.seed({day: {"bug.csv": (HEADER + "B-1,2026-03-06 10:00,c,p,x,1,1.00,North\n").encode()}})
    real = transform_module.transform_file

    def bug(s3: Any, obj: Any, *args: Any) -> Any:
        raise ValueError("I/O operation on closed file.")

    monkeypatch.setattr("include.etl.running.tasks.transform_file", bug)
    dag_run = run_dag(dag, day)
    assert str(dag_run.state) == "failed"
    assert _tries(stack, dag_run.run_id, "transform") == [1]
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["transform"] == "success"  # the task records the file's error and ends
    assert states["notify"] == "failed"  # after the summary went out
    assert _ledger(warehouse, day)["bug.csv"][0] == "failed"
    monkeypatch.setattr("include.etl.running.tasks.transform_file", real)


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
    assert len(_tries(stack, dag_run.run_id, "transform")) == 3


def test_customers_load_through_their_own_tasks_table_and_ledger(stack, warehouse) -> None:
    day = "2026-03-03"
    files = generate_customers([date(2026, 3, 3)], customers=40)
    files[day]["customers_fix.csv"] = (
        "Kundennummer;Name;E-Mail;Land;Newsletter;Limit;Points;Geaendert\n"
        "CUST-9001;  Zoë  Weber ;zoe@example.de;de;ja;1234.50;7;02.03.2026 23:30\n"
        "CUST-9002;Ben;ben@example;DE;nein;10;1;2026-03-02 12:00\n"  # not a mail address: rejected
        "CUST-9003;Ida;;AT;maybe;10;1;2026-10-25 02:30\n"  # not a boolean; a time that happens twice
    ).encode()
    stack.seed(files, dataset="customers")
    dag_run = run_tasks(load_contract("customers"), day)
    assert str(dag_run.state) == "success"
    row = warehouse.execute(
        "SELECT full_name, country, marketing_opt_in, loyalty_points, updated_at, updated_date "
        "FROM analytics.customers WHERE customer_id = 'CUST-9001'"
    ).fetchone()
    assert row[:4] == ("Zoë Weber", "DE", True, 7)
    # 23:30 in Berlin (CET, UTC+1) is 22:30 UTC, and the date is Berlin's.
    assert row[4].isoformat() == "2026-03-02T22:30:00+00:00"
    assert row[5] == date(2026, 3, 2)
    ledger = _ledger(warehouse, day, "customers")
    assert set(ledger) == {"customers_20260303.csv", "customers_fix.csv"}
    rejected = (
        stack.s3()
        .get_object(Bucket="processed", Key=f"rejected/customers/dt={day}/customers_fix.csv.rejected.csv")["Body"]
        .read()
        .decode()
    )
    assert "email 'ben@example' does not match" in rejected
    assert "marketing_opt_in 'maybe' is not a boolean" in rejected
    assert "updated_at '2026-10-25 02:30' happens twice in Europe/Berlin (clocks went back)" in rejected
    assert warehouse.execute(
        "SELECT count(*) FROM etl.orders_file_ledger WHERE source_key LIKE 'raw/customers/%'"
    ).fetchone() == (0,)


def test_two_datasets_run_at_once(stack) -> None:
    """Both pipelines at the same moment, in two threads: each loads its own files into its own tables."""
    day = "2026-03-04"
    stack.seed({day: {"o.csv": (HEADER + "AT-1,2026-03-04 10:00,CUST-0001,p,x,1,1.00,North\n").encode()}})
    stack.seed(generate_customers([date(2026, 3, 4)], customers=20), dataset="customers")
    contracts = [load_contract(d) for d in ("orders", "customers")]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda c: run_tasks(c, day), contracts))
    assert [r.state for r in runs] == ["success", "success"], [r.errors for r in runs]
    with psycopg.connect(postgres.dsn(stack.ports.postgres)) as conn:
        assert conn.execute("SELECT count(*) FROM analytics.orders WHERE order_id = 'AT-1'").fetchone() == (1,)
        loaded = conn.execute(
            "SELECT count(*) FROM etl.customers_file_ledger WHERE source_key LIKE %s AND status = 'loaded'",
            (f"raw/customers/dt={day}/%",),
        ).fetchone()
        assert loaded == (1,)
        stages = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_stage\\_%'").fetchone()
        assert stages == (0,)


CORPUS = [
    "shape_wrong_field_count.csv",
    "dialect_quoted_fields_exact_path.csv",
    "shape_truncated_short_row.csv",
    "dialect_multiline_header.csv",
    "encoding_cp1252.csv",
    "encoding_cp1252_undefined_byte.csv",
    "encoding_utf16.csv",
    "files_gzip.csv.gz",
    "files_binary_renamed.csv",
    "shape_empty.csv",
    "shape_missing_required_column.csv",
    "values_prices.csv",
    "values_timestamps.csv",
    # CSV as people's tools write it (issue 14)
    "encoding_mixed_rows_cp1252.csv",
    "dialect_excel_sep_line.csv",
    "dialect_backslash_escaped_quotes.csv",
    "dialect_lone_cr.csv",
    "shape_long_field_and_malformed_row.csv",
    "values_decimal_spellings.csv",
    "values_date_and_time_columns.csv",
    "values_invisible_characters.csv",
]


def test_the_bad_input_corpus_through_the_tasks(stack, warehouse) -> None:
    """A representative part of tests/data/bad_input/ through the pipeline's tasks over HTTP S3: the run succeeds
    and every file ends as its case says (the crash over HTTP once failed the run and held it in retries)."""
    import yaml

    data = PROJECT_ROOT / "tests" / "data" / "bad_input"
    every_case = yaml.safe_load((data / "cases.yml").read_text(encoding="utf-8"))["cases"]
    cases = {c["name"]: c for c in every_case if "csv" not in c}  # the orders contract as it is
    day = "2026-03-08"
    stack.seed({day: {name: (data / name).read_bytes() for name in CORPUS}})
    dag_run = run_tasks(load_contract("orders"), day)
    assert str(dag_run.state) == "success"
    assert set(dag_run.tries.values()) == {1}
    ledger = _ledger(warehouse, day)
    assert set(ledger) == set(CORPUS)
    for name in CORPUS:
        case = cases[name]
        status, read, loaded, rejected, dups, _ = ledger[name]
        assert status == {"processed": "loaded", "rejected": "rejected"}[case["status"]], name
        assert (read, loaded + dups, rejected) == (case["rows_read"], case["rows_clean"], case["rows_rejected"]), name
    # Every value read another way than plain is counted per file in the ledger and in the summary email.
    counted = dict(
        warehouse.execute(
            "SELECT split_part(source_key, '/', -1), reinterpreted FROM etl.orders_file_ledger "
            "WHERE source_key LIKE %s AND status <> 'superseded'",
            (f"raw/orders/dt={day}/%",),
        ).fetchall()
    )
    for name in CORPUS:
        if cases[name]["status"] == "processed":
            assert counted[name] == cases[name].get("reinterpreted", {}), name
    assert counted["encoding_mixed_rows_cp1252.csv"] == {"rows decoded as cp1252": 1}
    assert counted["values_date_and_time_columns.csv"] == {"order_ts built from order_date + order_time": 2}
    summary = next(m for m in mails(stack.paths.mailbox) if m["subject"] == f"[orders_pipeline] {day}: load succeeded")
    body = html.unescape(html_body(summary))
    assert "reinterpreted: 1 rows decoded as cp1252" in body
    assert "reinterpreted: 2 order_ts built from order_date + order_time" in body
