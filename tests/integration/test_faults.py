"""Faults: the tables and the ledger stay correct once retries or the next run complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pyarrow.parquet as pq
import pytest
from airflow import settings as airflow_settings
from botocore.config import Config

from include.etl.contract.transform import ZoneKeys, transform_file
from include.etl.loading import staging
from include.etl.loading.load import load_files
from include.etl.reading import storage
from include.etl.settings import DatasetSettings
from local_stack import airflow, postgres
from local_stack.config import PROJECT_ROOT
from local_stack.settings import read_settings
from local_stack.stack import LocalStack
from tests.integration.conftest import HEADER, fresh_database, table_checksum
from tests.integration.faulty_proxy import FaultyProxy

pytestmark = pytest.mark.integration


def _body(prefix: str, rows: int) -> bytes:
    return (HEADER + "".join(f"{prefix}-{i},2026-01-01 10:00,c,p,x,1,1.00,North\n" for i in range(rows))).encode()


@pytest.fixture
def fault_db(stack: LocalStack) -> Iterator[str]:
    """A fresh database; yields its DSN."""
    with fresh_database(stack, "fault_test") as dsn:
        yield dsn


def _settings(tag: str) -> DatasetSettings:
    return DatasetSettings(
        dataset="orders",
        raw_prefix=f"faults/{tag}/raw",
        processed_prefix=f"faults/{tag}/processed",
        rejected_prefix=f"faults/{tag}/rej",
    )


def _seed(stack: LocalStack, settings: DatasetSettings, files: dict[str, bytes]) -> list[storage.RawObject]:
    s3 = stack.s3()
    for name, body in files.items():
        s3.put_object(Bucket="raw", Key=f"{settings.raw_prefix}/dt=2026-01-01/{name}", Body=body)
    return storage.list_partition(s3, "raw", storage.partition_prefix(settings.raw_prefix, "2026-01-01"))[0]


def _transformed(stack: LocalStack, contract: Any, settings: DatasetSettings, files: dict[str, bytes]) -> list[Any]:
    return [transform_file(stack.s3(), o, contract, settings) for o in _seed(stack, settings, files)]


def _counts(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT order_id) FROM analytics.orders").fetchone()
        files = conn.execute("SELECT count(*) FROM etl.orders_file_ledger WHERE status = 'loaded'").fetchone()[0]
    return rows[0], rows[1], files


def _forget_dead_airflow_connections() -> None:
    """A restart also closes this process's Airflow metadata connections, which later in-process dag.test()
    runs would pick up dead (an Airflow process would be restarted too). The first rollback of a dead
    connection fails and invalidates it; then the session and the pool can be let go."""
    for _ in range(3):
        try:
            airflow_settings.Session.remove()
            break
        except Exception:  # the dead connection's rollback; it is invalidated by now
            continue
    airflow_settings.engine.dispose()


@pytest.mark.parametrize("fault", ["connection-killed", "server-restarted"])
def test_postgres_lost_mid_load_loads_nothing_then_the_retry_loads_everything_once(
    stack, contract, fault_db, monkeypatch, fault
) -> None:
    settings = _settings(fault)
    results = _transformed(stack, contract, settings, {f"f{i}.csv": _body(f"P{i}", 100) for i in range(3)})
    real_copy = staging._copy_parquet
    calls = []

    def copy_then_lose_the_server(cur: Any, *args: Any) -> int:
        calls.append(1)
        if len(calls) == 2:  # the second file: the first one is already staged
            if fault == "connection-killed":
                with psycopg.connect(postgres.dsn(stack.ports.postgres, "postgres"), autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (cur.connection.info.backend_pid,))
            else:
                postgres.stop(stack.paths)
                postgres.start(stack.paths, stack.ports.postgres)
                _forget_dead_airflow_connections()
        return real_copy(cur, *args)

    monkeypatch.setattr(staging, "_copy_parquet", copy_then_lose_the_server)
    with pytest.raises(psycopg.OperationalError), psycopg.connect(fault_db) as conn:
        load_files(conn, stack.s3(), contract, settings, results, "attempt-1")
    assert _counts(fault_db) == (0, 0, 0)  # nothing committed but the empty tables

    monkeypatch.setattr(staging, "_copy_parquet", real_copy)  # the task's retry
    with psycopg.connect(fault_db) as conn:
        report = load_files(conn, stack.s3(), contract, settings, results, "attempt-2")
    assert report.rows_inserted == 300
    assert _counts(fault_db) == (300, 300, 3)


def test_s3_throttling_5xx_and_timeouts_are_retried(stack, contract, fault_db) -> None:
    settings = _settings("s3-faults")
    files = {f"s{i}.csv": _body(f"S{i}", 50) for i in range(6)}
    _seed(stack, settings, files)
    aws = next(c for c in read_settings()["connections"] if c["conn_id"] == "aws_default")
    config_kwargs = {**aws["conn_extra"]["config_kwargs"], "read_timeout": 1, "connect_timeout": 1}
    with FaultyProxy(stack.ports.s3, every=3, stall_seconds=2) as proxy:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{proxy.port}",
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # pragma: allowlist secret
            config=Config(**config_kwargs),
        )
        objects, _ = storage.list_partition(s3, "raw", storage.partition_prefix(settings.raw_prefix, "2026-01-01"))
        results = [transform_file(s3, o, contract, settings) for o in objects]
        with psycopg.connect(fault_db) as conn:
            load_files(conn, s3, contract, settings, results, "run-1")
    assert set(proxy.injected) == {"throttle", "internal", "stall"}
    assert sum(proxy.injected.values()) >= 10
    assert [o.key.rsplit("/", 1)[-1] for o in objects] == sorted(files)
    assert all(r.status == "processed" and r.rows_clean == 50 for r in results)
    assert _counts(fault_db) == (300, 300, 6)


def test_the_aws_connection_retries_with_backoff(stack) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    config = S3Hook(aws_conn_id="aws_default").get_conn().meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 11}  # botocore: 1 call + 10 retries
    assert (config.connect_timeout, config.read_timeout) == (10, 60)


_TRANSFORM = textwrap.dedent(
    """
    import sys
    from include.etl.reading import storage
    from include.etl.contract.model import load_contract
    from include.etl.settings import DatasetSettings
    from include.etl.contract.transform import transform_file
    from local_stack.s3 import client
    port, prefix, key = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = DatasetSettings(dataset="orders", raw_prefix=prefix + "/raw", processed_prefix=prefix + "/processed",
                               rejected_prefix=prefix + "/rej", batch_bytes=1 << 20)
    s3 = client(int(port))
    print("started", flush=True)
    transform_file(s3, storage.head(s3, "raw", key), load_contract("orders"), settings)
    """
)


def test_a_transform_killed_mid_write_never_leaves_a_partial_parquet(stack, contract, tmp_path) -> None:
    settings = _settings("killed")
    big = {"big.csv": _body("K", 400_000)}
    obj = _seed(stack, settings, big)[0]
    s3 = stack.s3()
    processed_key = ZoneKeys(obj.key, settings).processed
    argv = [sys.executable, "-c", _TRANSFORM, str(stack.ports.s3), "faults/killed", obj.key]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    complete = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert complete.returncode == 0, complete.stderr[-2000:]
    reference = s3.get_object(Bucket="processed", Key=processed_key)["Body"].read()
    outcomes = []
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        s3.delete_object(Bucket="processed", Key=processed_key)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            body = s3.get_object(Bucket="processed", Key=processed_key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            outcomes.append("absent")
            continue
        assert body == reference  # present only whole
        outcomes.append("complete")
    assert "absent" in outcomes
    path = tmp_path / "ref.parquet"
    path.write_bytes(reference)
    assert pq.ParquetFile(path).metadata.num_rows == 400_000


def _dags_test(stack: LocalStack, day: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(airflow.Path(sys.executable).parent / "airflow"),
            "dags",
            "test",
            "orders_pipeline",
            "--conf",
            f'{{"day": "{day}"}}',
        ],
        env={**os.environ, **stack.env},
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )


def _day_rows(warehouse: Any, day: str) -> tuple[int, int, int]:
    rows = warehouse.execute(
        "SELECT count(*), count(DISTINCT order_id) FROM analytics.orders WHERE source_key LIKE %s",
        (f"raw/orders/dt={day}/%",),
    ).fetchone()
    files = warehouse.execute(
        "SELECT count(*) FROM etl.orders_file_ledger WHERE source_key LIKE %s AND status = 'loaded'",
        (f"raw/orders/dt={day}/%",),
    ).fetchone()[0]
    return rows[0], rows[1], files


def test_a_killed_run_then_a_rerun_loads_everything_once(stack, warehouse) -> None:
    day = "2026-07-01"
    stack.seed({day: {f"k{i}.csv": _body(f"KR{i}", 200) for i in range(4)}})
    proc = _dags_test(stack, day)
    time.sleep(12)  # mid-run: Airflow is up and tasks are running
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = _dags_test(stack, day)
    assert rerun.wait(timeout=300) == 0
    assert _day_rows(warehouse, day) == (800, 800, 4)


def test_the_same_day_triggered_twice_at_once_loads_each_file_once(stack, warehouse) -> None:
    day = "2026-07-02"
    stack.seed({day: {f"t{i}.csv": _body(f"TW{i}", 200) for i in range(4)}})
    before = table_checksum(warehouse, "raw/orders/dt=2026-07-01/%")
    runs = [_dags_test(stack, day), _dags_test(stack, day)]
    assert [r.wait(timeout=300) for r in runs] == [0, 0]
    assert _day_rows(warehouse, day) == (800, 800, 4)
    assert table_checksum(warehouse, "raw/orders/dt=2026-07-01/%") == before
