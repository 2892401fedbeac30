"""The same DAG on the CeleryExecutor: Redis as broker, two Celery workers, the real scheduler.

Proves what `make up EXECUTOR=celery WORKERS=2` promises: the mapped transforms of one partition run on both
workers (each task instance records its worker's name), the load reads what the other worker wrote through S3
(nothing passes on a worker's local disk), and the table is exactly the one the same tasks make of the same
files in one process (tests/task_run.py; the LocalExecutor's runs are tested in test_scheduler.py). A worker
killed in the middle of a transform (SIGKILL of its process group, as a lost machine) leaves a task whose
heartbeat stops: the scheduler fails that try, the retry runs on the other worker, and the table is still
exactly right.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from include.etl.contract.model import load_contract
from include.etl.names import SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED
from local_stack import airflow, broker, workers
from local_stack.config import ExecutorChoice
from local_stack.demo.sample_orders import generate_day
from local_stack.stack import LocalStack
from tests.integration.conftest import airflow_cli, fresh_database, isolated_env, metadata_db, wait_for
from tests.task_run import run_tasks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "orders_pipeline"
RAW, PROCESSED, REJECTED = "celery/raw/orders", "celery/processed/orders", "celery/rejected/orders"
MANY = date(2026, 7, 1)  # a partition of many small files: spread over both workers
KILLED = date(2026, 7, 2)  # a large file (and a few small ones): its worker is killed mid-transform
FILES = 8
BIG_ROWS = 250_000
RUN_WAIT_S = 900
EXECUTOR = ExecutorChoice.celery(workers=2, concurrency=1)


def _env(stack: LocalStack, database: str, executor: ExecutorChoice | None) -> dict[str, str]:
    """The stack's Airflow environment on its own prefixes and warehouse database, without event runs."""
    env = isolated_env(stack, database, "celery", executor)
    # A task whose worker is gone stops heartbeating: fail it (and retry it) after 30 s, not 5 min.
    env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = "30"
    env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL"] = "5"
    if executor is None:  # the reference: LocalExecutor with as many slots as the two workers have
        env["AIRFLOW__CORE__PARALLELISM"] = str(EXECUTOR.workers * EXECUTOR.concurrency)
    return env


def _seed(stack: LocalStack) -> dict[date, int]:
    s3 = stack.s3()
    many = generate_day(MANY, files=FILES, rows_per_file=200, seed=3)
    killed = generate_day(KILLED, files=3, rows_per_file=200, seed=5)
    big = next(iter(generate_day(KILLED, files=1, rows_per_file=BIG_ROWS, seed=6).values()))
    killed["orders_big.csv"] = big.replace(b"ORD-", b"BIG-")  # its own keys
    for day, files in ((MANY, many), (KILLED, killed)):
        for name, body in files.items():
            s3.put_object(Bucket="raw", Key=f"{RAW}/dt={day}/{name}", Body=body)
    return {MANY: len(many), KILLED: len(killed)}


def checksum(conn: psycopg.Connection, day: date) -> tuple[int, str]:
    """Rows and an md5 of every row of a day's files in key order (every column but the load time)."""
    contract = load_contract("orders")
    columns = [*contract.output_columns, SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED]
    query = sql.SQL("SELECT count(*), md5(string_agg(md5(row({})::text), '' ORDER BY {})) FROM {} WHERE {} LIKE %s")
    table = sql.Identifier(*contract.table.split("."))
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    row = conn.execute(
        query.format(cols, sql.Identifier(contract.key[0]), table, sql.Identifier(SOURCE_KEY)), (f"{RAW}/dt={day}/%",)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def _ledger(conn: psycopg.Connection, day: date) -> dict[str, tuple[str, int]]:
    rows = conn.execute(
        "SELECT source_key, status, rows_loaded FROM etl.orders_file_ledger WHERE source_key LIKE %s",
        (f"{RAW}/dt={day}/%",),
    ).fetchall()
    return {key.rsplit("/", 1)[1]: (status, loaded) for key, status, loaded in rows}


@pytest.fixture(scope="module")
def databases(stack: LocalStack) -> Iterator[dict[str, str]]:
    """One warehouse database for the LocalExecutor reference run, one for the Celery run."""
    with fresh_database(stack, "celery_reference") as reference, fresh_database(stack, "celery_run") as run:
        yield {"reference": reference, "celery": run}


@pytest.fixture(scope="module")
def api_server(stack: LocalStack) -> Iterator[None]:
    """The API server (tasks reach Airflow through its execution API); every service stopped at the end."""
    try:
        airflow.start_services(stack.paths, stack.ports, _env(stack, "celery_reference", None), ("api-server",))
        yield
    finally:
        airflow.stop_services(stack.paths)
        workers.stop(stack.paths)
        broker.stop(stack.paths)


@pytest.fixture(scope="module")
def reference(stack: LocalStack, databases: dict[str, str]) -> dict[date, tuple[int, str]]:
    """Seed both partitions; load each into the reference database with the pipeline's tasks in one process
    (tests/task_run.py); their checksums."""
    files = _seed(stack)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _env(stack, "celery_reference", None).items():
            if name.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_")):
                patch.setenv(name, value)
        for day in files:
            run = run_tasks(load_contract("orders"), day.isoformat())
            assert run.state == "success", run.errors
    with psycopg.connect(databases["reference"], autocommit=True) as conn:
        for day, count in files.items():
            assert [s for s, _ in _ledger(conn, day).values()] == ["loaded"] * count
        return {day: checksum(conn, day) for day in files}


@pytest.fixture(scope="module")
def celery(stack: LocalStack, reference: dict[date, tuple[int, str]], api_server: None) -> Iterator[dict[str, str]]:
    """Redis, two Celery workers, the scheduler and the DAG processor (beside the reference's API server)."""
    env = _env(stack, "celery_run", EXECUTOR)
    try:
        broker.start(stack.paths, stack.ports.redis)
        workers.start(stack.paths, env, EXECUTOR)
        airflow.start_services(stack.paths, stack.ports, env, services=("scheduler", "dag-processor"))
        wait_for(
            "the DAGs to be parsed", 180, lambda: "customers_pipeline" in airflow.run(["dags", "list"], env).stdout, 2
        )
        airflow_cli(env, "dags", "pause", "customers_pipeline")  # only the runs under test
        yield env
    finally:
        airflow.run(["dags", "unpause", "customers_pipeline"], env)


def _trigger(stack: LocalStack, env: dict[str, str], day: date) -> str:
    run_id = f"celery-{day}-{time.time_ns()}"
    airflow_cli(env, "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps({"day": day.isoformat()}))
    return run_id


def _run_state(stack: LocalStack, run_id: str) -> str | None:
    with metadata_db(stack) as meta:
        row = meta.execute("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id)).fetchone()
    return row[0] if row and row[0] in ("success", "failed") else None


def _task_instances(stack: LocalStack, run_id: str) -> list[dict[str, Any]]:
    with metadata_db(stack) as meta, meta.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT task_id, map_index, rendered_map_index, state, hostname, try_number FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        ).fetchall()


def _map_index_of(stack: LocalStack, run_id: str, name: str) -> int | None:
    """The transform map index of a file, from list_files' groups (its label is rendered only when it ends)."""
    with metadata_db(stack) as meta:
        row = meta.execute(
            "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = 'list_files' "
            "AND key = 'return_value'",
            (DAG_ID, run_id),
        ).fetchone()
    if row is None:
        return None
    groups = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    return next((i for i, group in enumerate(groups) if any(f["key"].endswith(f"/{name}") for f in group)), None)


def _worker(hostname: str) -> str:
    return hostname.split("@", 1)[0]


def test_mapped_transforms_run_on_both_workers_and_the_table_equals_one_process_runs(
    stack: LocalStack, celery: dict[str, str], reference: dict[date, tuple[int, str]], databases: dict[str, str]
) -> None:
    run_id, started = _trigger(stack, celery, MANY), time.monotonic()
    assert wait_for("the run to end", RUN_WAIT_S, lambda: _run_state(stack, run_id), 1) == "success"
    tis = _task_instances(stack, run_id)
    transforms = [t for t in tis if t["task_id"] == "transform"]
    assert len(transforms) == FILES and {t["state"] for t in transforms} == {"success"}
    on = {_worker(t["hostname"]) for t in transforms}
    assert on == {"worker-1", "worker-2"}, f"the transforms ran on {on}"
    per_worker = {w: sum(_worker(t["hostname"]) == w for t in transforms) for w in sorted(on)}
    print(f"\nCelery run of {MANY}: {time.monotonic() - started:.0f}s; transforms per worker: {per_worker}")

    # Nothing passes on local disk: the load ran on one worker and merged every file, also those the other
    # worker transformed (each worker has its own working directory and TMPDIR: .local/workers/<name>).
    (load,) = [t for t in tis if t["task_id"] == "load"]
    elsewhere = [t["rendered_map_index"] for t in transforms if _worker(t["hostname"]) != _worker(load["hostname"])]
    assert elsewhere
    with psycopg.connect(databases["celery"], autocommit=True) as conn:
        ledger = _ledger(conn, MANY)
        assert all(ledger[name][0] == "loaded" and ledger[name][1] > 0 for name in elsewhere)
        assert checksum(conn, MANY) == reference[MANY]


def test_a_killed_workers_task_is_retried_on_the_other_and_the_table_is_still_exact(
    stack: LocalStack, celery: dict[str, str], reference: dict[date, tuple[int, str]], databases: dict[str, str]
) -> None:
    def big_transform_running() -> dict[str, Any] | None:
        index = _map_index_of(stack, run_id, "orders_big.csv")
        return next(
            (
                t
                for t in _task_instances(stack, run_id)
                if t["task_id"] == "transform" and t["map_index"] == index and t["state"] == "running" and t["hostname"]
            ),
            None,
        )

    assert set(workers.running(stack.paths)) == {"worker-1", "worker-2"}
    run_id = _trigger(stack, celery, KILLED)
    victim_ti = wait_for("the large file's transform to start", 300, big_transform_running, 0.1)
    victim = _worker(victim_ti["hostname"])
    assert workers.kill(stack.paths, victim)
    assert workers.running(stack.paths) == sorted({"worker-1", "worker-2"} - {victim})
    print(f"\nkilled {victim} while it ran the transform of orders_big.csv (try {victim_ti['try_number']})")

    assert wait_for("the run to end", RUN_WAIT_S, lambda: _run_state(stack, run_id), 1) == "success"
    (big,) = [t for t in _task_instances(stack, run_id) if t["rendered_map_index"] == "orders_big.csv"]
    assert big["state"] == "success" and big["try_number"] == victim_ti["try_number"] + 1
    assert _worker(big["hostname"]) != victim
    with metadata_db(stack) as meta:
        tries = meta.execute(
            "SELECT try_number, hostname FROM task_instance_history WHERE dag_id = %s AND run_id = %s "
            "AND task_id = 'transform' AND map_index = %s",
            (DAG_ID, run_id, big["map_index"]),
        ).fetchall()
    assert (victim_ti["try_number"], victim_ti["hostname"]) in tries
    with psycopg.connect(databases["celery"], autocommit=True) as conn:
        ledger = _ledger(conn, KILLED)
        assert {status for status, _ in ledger.values()} == {"loaded"} and len(ledger) == 4
        assert ledger["orders_big.csv"][1] > BIG_ROWS * 0.9
        assert checksum(conn, KILLED) == reference[KILLED]
