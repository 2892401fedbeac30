"""The real scheduler, DAG processor and triggerer (LocalExecutor, as `make up` runs them), started once for
this module.

A CSV uploaded to S3 starts a run through S3 -> SQS -> asset event within a bounded
wait; a backfill over three dates through the CLI loads each day; running it again,
and reprocessing it, leave the table unchanged. A load that changed the table updates its
asset, and that asset event runs the `marts` DAG (Cosmos), which builds the new day into the
marts: the DAG processor parses it with `dbt ls` and its Variable cache, as in production.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from include.etl.contract.model import load_contract
from include.etl.loading.load import prepare_tables
from local_stack import airflow, postgres
from local_stack.demo.sample_orders import generate
from local_stack.stack import LocalStack
from tests.integration.conftest import (
    HEADER,
    airflow_cli,
    metadata_db,
    purge_event_queues,
    table_checksum,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "orders_pipeline"
EVENT_WAIT_S = 180
BACKFILL_WAIT_S = 600
BACKFILLED = "raw/orders/dt=2026-06-0%"


@pytest.fixture(scope="module")
def scheduler(stack: LocalStack, warehouse_tables: None) -> Iterator[LocalStack]:
    with metadata_db(stack) as meta:  # marts runs that earlier tests' loads queued are not this module's
        meta.execute("delete from asset_dag_run_queue where target_dag_id = 'marts'")
    purge_event_queues(stack)
    env = {**stack.env, "AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS": "True"}  # production's setting
    airflow.start_services(stack.paths, stack.ports, env)
    try:
        wait_for(
            "the DAGs to be parsed",
            300,
            lambda: all(d in airflow.run(["dags", "list"], stack.env).stdout for d in (DAG_ID, "marts")),
            2,
        )
        yield stack  # no unpause: the local stack's DAGs are ready to run as `make up` starts them
    finally:
        airflow.stop_services(stack.paths)


@pytest.fixture(scope="module")
def warehouse_tables(stack: LocalStack) -> None:
    """The tables exist before the first run, so the tests can poll them."""
    with psycopg.connect(postgres.dsn(stack.ports.postgres)) as conn:
        for dataset in ("orders", "customers"):
            prepare_tables(conn, load_contract(dataset))


def _rows(warehouse: Any, pattern: str) -> int:
    return warehouse.execute("SELECT count(*) FROM analytics.orders WHERE order_id LIKE %s", (pattern,)).fetchone()[0]


def test_the_local_stacks_dags_are_not_paused(scheduler) -> None:
    with metadata_db(scheduler) as meta:
        paused = dict(meta.execute("SELECT dag_id, is_paused FROM dag WHERE dag_id LIKE '%\\_pipeline'").fetchall())
    assert paused == {"orders_pipeline": False, "customers_pipeline": False}


def _timeline(stack: LocalStack, since: float) -> list[tuple[str, float, float]]:
    """Where the time of the first event run after `since` (the upload) went: (step, start, end) in seconds."""
    with metadata_db(stack) as meta:
        run = meta.execute(
            "SELECT run_id, queued_at, start_date, end_date FROM dag_run WHERE dag_id = %s AND run_type = "
            "'asset_triggered' AND queued_at >= to_timestamp(%s) ORDER BY queued_at LIMIT 1",
            (DAG_ID, since),
        ).fetchone()
        if run is None:
            return []
        tasks = meta.execute(
            "SELECT task_id, min(start_date), max(end_date) FROM task_instance WHERE dag_id = %s AND run_id = %s "
            "GROUP BY task_id ORDER BY min(start_date)",
            (DAG_ID, run[0]),
        ).fetchall()
    origin = since
    steps = [("run queued (event seen)", 0.0, run[1].timestamp() - origin)]
    steps += [(t, s.timestamp() - origin, e.timestamp() - origin) for t, s, e in tasks if s and e]
    return steps


def _run_ended(stack: LocalStack, since: float) -> bool:
    with metadata_db(stack) as meta:
        row = meta.execute(
            "SELECT state FROM dag_run WHERE dag_id = %s AND run_type = 'asset_triggered' "
            "AND queued_at >= to_timestamp(%s) ORDER BY queued_at LIMIT 1",
            (DAG_ID, since),
        ).fetchone()
    return row is not None and row[0] in ("success", "failed")


def test_an_uploaded_file_starts_a_run_and_its_rows_arrive(scheduler, warehouse) -> None:
    s3 = scheduler.s3()
    latencies = []
    for n, day in enumerate(["2026-05-01", "2026-05-02", "2026-05-03"]):
        body = HEADER + "".join(f"EV{n}-{i},{day} 10:00,c,p,x,1,1.00,North\n" for i in range(50))
        uploaded = time.time()
        started = time.monotonic()
        s3.put_object(Bucket="raw", Key=f"raw/orders/dt={day}/upload.csv", Body=body.encode())
        wait_for(f"rows of {day}", EVENT_WAIT_S, lambda n=n: _rows(warehouse, f"EV{n}-%") == 50, 0.25)
        latencies.append(round(time.monotonic() - started, 1))
        wait_for("the run to end", EVENT_WAIT_S, lambda u=uploaded: _run_ended(scheduler, u), 0.5)
        print(f"\nupload {n + 1}, seconds after the upload (start, end):")
        for step, begin, end in _timeline(scheduler, uploaded):
            print(f"  {step:28} {begin:6.1f} {end:6.1f}")
    with metadata_db(scheduler) as meta:
        kinds = {r[0] for r in meta.execute("SELECT run_type FROM dag_run WHERE dag_id = %s", (DAG_ID,))}
    assert "asset_triggered" in kinds
    print(f"\nupload -> rows in PostgreSQL: median {statistics.median(latencies):.1f}s of {latencies}")


def test_each_dataset_has_its_own_queue_and_run(scheduler) -> None:
    s3 = scheduler.s3()
    body = "customer_id;full_name;updated_at\nCUST-7001;Eve;2026-05-04 10:00\n"
    s3.put_object(Bucket="raw", Key="raw/customers/dt=2026-05-04/crm.csv", Body=body.encode())
    with psycopg.connect(postgres.dsn(scheduler.ports.postgres), autocommit=True) as conn:
        wait_for(
            "the customer row",
            EVENT_WAIT_S,
            lambda: (
                conn.execute("SELECT count(*) FROM analytics.customers WHERE customer_id = 'CUST-7001'").fetchone()
                == (1,)
            ),
            0.5,
        )
    with metadata_db(scheduler) as meta:
        runs = meta.execute(
            "SELECT count(*) FROM dag_run WHERE dag_id = 'customers_pipeline' AND run_type = 'asset_triggered'"
        ).fetchone()
    assert runs[0] >= 1


def _backfill_states(stack: LocalStack, since: float) -> list[str]:
    with metadata_db(stack) as meta:
        rows = meta.execute(
            "SELECT state FROM dag_run WHERE dag_id = %s AND run_type = 'backfill' "
            "AND coalesce(end_date, start_date, queued_at) >= to_timestamp(%s)",
            (DAG_ID, since),
        ).fetchall()
    return [r[0] for r in rows]


def _no_backfill_running(stack: LocalStack) -> bool:
    """Airflow allows one running backfill per DAG; one that created no runs completes on a scheduler loop."""
    with metadata_db(stack) as meta:
        running = meta.execute(
            "SELECT count(*) FROM backfill WHERE dag_id = %s AND completed_at IS NULL", (DAG_ID,)
        ).fetchone()[0]
    return running == 0


def _backfill_run_count(stack: LocalStack) -> int:
    with metadata_db(stack) as meta:
        return meta.execute(
            "SELECT count(*) FROM dag_run WHERE dag_id = %s AND run_type = 'backfill'", (DAG_ID,)
        ).fetchone()[0]


def _backfill(stack: LocalStack, *extra: str) -> tuple[float, list[str]]:
    wait_for("the previous backfill to complete", 120, lambda: _no_backfill_running(stack), 1)
    since = time.time() - 1
    started = time.monotonic()
    airflow_cli(
        stack.env,
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        "2026-06-01",
        "--to-date",
        "2026-06-03",
        *extra,
    )

    def finished() -> list[str] | None:
        states = _backfill_states(stack, since)
        return states if states and all(s in ("success", "failed") for s in states) else None

    states = wait_for("the backfill runs", BACKFILL_WAIT_S, finished, 2)
    return time.monotonic() - started, states


def test_backfill_three_days_then_again_then_reprocess(scheduler, warehouse) -> None:
    days = ["2026-06-01", "2026-06-02", "2026-06-03"]
    sample = generate([date.fromisoformat(d) for d in days], files=2, rows_per_file=80)
    scheduler.seed({d: {f: b for f, b in files.items() if "legacy" not in f} for d, files in sample.items()})
    seconds, states = _backfill(scheduler)
    assert states == ["success"] * 3
    ledger = warehouse.execute(
        "SELECT count(*) FROM etl.orders_file_ledger WHERE source_key LIKE %s AND status = 'loaded'", (BACKFILLED,)
    ).fetchone()
    assert ledger == (6,)
    loaded = table_checksum(warehouse, BACKFILLED)
    print(f"\nthree-day backfill: {seconds:.1f}s wall")

    # The same backfill again: completed days are not rerun, nothing changes.
    wait_for("the backfill to complete", 120, lambda: _no_backfill_running(scheduler), 1)
    runs_before = _backfill_run_count(scheduler)
    airflow_cli(scheduler.env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", days[0], "--to-date", days[-1])
    wait_for("the empty backfill to complete", 120, lambda: _no_backfill_running(scheduler), 1)
    assert _backfill_run_count(scheduler) == runs_before  # no run was created
    assert table_checksum(warehouse, BACKFILLED) == loaded

    # Reprocess: every file of those days transformed and merged again, the days' runs at once and in
    # any order (the README's command); same rules, same table.
    seconds, states = _backfill(
        scheduler, "--reprocess-behavior", "completed", "--dag-run-conf", json.dumps({"reprocess": True})
    )
    assert states == ["success"] * 3
    assert table_checksum(warehouse, BACKFILLED) == loaded
    runs = warehouse.execute(
        "SELECT DISTINCT run_id FROM etl.orders_file_ledger WHERE source_key LIKE %s", (BACKFILLED,)
    ).fetchall()
    assert len(runs) == 3 and all(r[0].startswith("backfill__") for r in runs)


MARTS_DAY = date(2026, 9, 21)
MARTS_WAIT_S = 900


def _marts_runs(stack: LocalStack, since: float) -> list[tuple[str, str]]:
    with metadata_db(stack) as meta:
        return meta.execute(
            "select run_id, state from dag_run where dag_id = 'marts' and run_type = 'asset_triggered' "
            "and queued_at >= to_timestamp(%s) order by queued_at",
            (since,),
        ).fetchall()


def test_a_load_that_changed_the_table_runs_the_marts(scheduler: LocalStack) -> None:
    """Files land in S3, their event runs the orders pipeline, whose load updates the table's asset, and that
    asset event runs the `marts` DAG, which builds the new day's orders into the marts."""
    stack = scheduler
    since = time.time() - 1
    stack.seed(generate([MARTS_DAY], files=2, rows_per_file=100), "orders")  # S3 -> SQS -> the pipeline runs

    with psycopg.connect(postgres.dsn(stack.ports.postgres), autocommit=True) as wh:
        loaded = wait_for(
            "the day's orders",
            MARTS_WAIT_S,
            lambda: wh.execute("select count(*) from analytics.orders where order_date = %s", (MARTS_DAY,)).fetchone()[
                0
            ],
            2,
        )

        def built() -> bool:
            runs = _marts_runs(stack, since)
            assert all(state != "failed" for _, state in runs), runs
            if not runs or runs[-1][1] != "success":
                return False
            exists = wh.execute("select to_regclass('marts.fct_orders')").fetchone()[0]
            query = "select count(*) from marts.fct_orders where order_date = %s"
            return bool(exists) and wh.execute(query, (MARTS_DAY,)).fetchone()[0] == loaded

        wait_for("an asset-triggered marts run that built the day's orders", MARTS_WAIT_S, built, 5)
    with metadata_db(stack) as meta:
        run_id = _marts_runs(stack, since)[-1][0]
        tasks = dict(
            meta.execute(
                "select task_id, state from task_instance where dag_id = 'marts' and run_id = %s", (run_id,)
            ).fetchall()
        )
        consumed = {
            r[0]
            for r in meta.execute(
                "select a.name from dag_run d join dagrun_asset_event r on r.dag_run_id = d.id "
                "join asset_event e on e.id = r.event_id join asset a on a.id = e.asset_id "
                "where d.dag_id = 'marts' and d.run_id = %s",
                (run_id,),
            )
        }
    assert tasks["fct_orders.run"] == tasks["fct_orders.test"] == tasks["daily_revenue.run"] == "success"
    assert consumed <= {"warehouse.analytics.orders", "warehouse.analytics.customers"} and consumed


def _stack_pids(stack: LocalStack) -> set[int]:
    """Every process of the stack's services: their process groups (each is started in its own), PostgreSQL's too."""
    groups = {int(p.read_text()) for p in stack.paths.pids.glob("*.pid")}
    groups.add(int((stack.paths.pgdata / "postmaster.pid").read_text().split()[0]))
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # pgrp
            pids.add(int(stat.parent.name))
    return pids


def test_the_stack_listens_on_loopback_only_and_keeps_its_secrets_to_itself(scheduler: LocalStack) -> None:
    from local_stack.airflow import password_file

    pids = _stack_pids(scheduler)
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = []
    for line in listening:
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            ours.append(line.split()[3])
    ports = {int(address.rsplit(":", 1)[1]) for address in ours}
    p = scheduler.ports
    assert {p.postgres, p.s3, p.smtp, p.airflow} <= ports, ours
    assert all(a.startswith(("127.0.0.1:", "[::1]:")) for a in ours), ours
    secrets = [password_file(scheduler.paths), scheduler.paths.airflow_home / "fernet.key"]
    secrets += sorted(scheduler.paths.logs.glob("*.log"))
    modes = {str(f): oct(f.stat().st_mode & 0o777) for f in secrets}
    assert set(modes.values()) == {"0o600"}, modes
    assert "Password for user" not in (scheduler.paths.logs / "airflow-api-server.log").read_text()
