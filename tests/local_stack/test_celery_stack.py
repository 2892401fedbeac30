"""Local stack, CeleryExecutor: the Redis broker (the machine's and the wheel's), the settings, worker names.

The workers themselves run DAGs in tests/integration/test_celery.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from local_stack import airflow, broker, processes, workers
from local_stack.config import ExecutorChoice, Ports, StackPaths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_cli(binary: Path, port: int, *command: str) -> str:
    cli = binary.with_name("redis-cli")
    result = subprocess.run([str(cli), "-p", str(port), *command], capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.parametrize("source", ["wheel", "machine"])
def test_redis_starts_answers_and_stops_by_pid(tmp_path: Path, source: str) -> None:
    binary = broker.wheel_server() if source == "wheel" else broker.machine_server()
    if binary is None:
        pytest.skip(f"no {source} redis-server here")  # the wheel is in the lock for Linux x86-64 only
    paths, port = StackPaths(tmp_path), _free_port()
    paths.make()
    assert broker.start(paths, port, binary) == binary
    try:
        assert broker.ping(port)
        # A real server: it keeps what a client puts in it (what the Celery queues are made of).
        _redis_cli(binary, port, "LPUSH", "queue", "a-task")
        assert _redis_cli(binary, port, "LRANGE", "queue", "0", "-1") == "a-task"
        assert broker.version(binary)[0].isdigit()
    finally:
        assert broker.stop(paths)
    assert not broker.ping(port) and not processes.port_open(port)


def test_the_wheel_is_the_fallback_when_the_machine_has_no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker, "machine_server", lambda: None)
    wheel = broker.wheel_server()
    if wheel is None:
        with pytest.raises(processes.StackError, match="no redis-server found"):
            broker.find_server()
    else:
        assert broker.find_server() == wheel


def test_celery_settings_point_at_the_stacks_redis_and_metadata_db(tmp_path: Path) -> None:
    ports = Ports(postgres=15432, s3=19000, smtp=11025, airflow=18080, redis=16379)
    local = airflow.environment(StackPaths(tmp_path), ports)
    assert local["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor" and "AIRFLOW__CELERY__BROKER_URL" not in local
    env = airflow.environment(StackPaths(tmp_path), ports, ExecutorChoice.celery(workers=2))
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:16379/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg://etl@127.0.0.1:15432/airflow"
    # The stack's task slots are shared out over the workers.
    assert int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) * 2 == int(env["AIRFLOW__CORE__PARALLELISM"])


def test_the_executor_up_started_is_what_down_and_env_see(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    paths.make()
    assert ExecutorChoice.load(paths) == ExecutorChoice()
    ExecutorChoice.celery(workers=3, concurrency=2).save(paths)
    assert ExecutorChoice.load(paths) == ExecutorChoice("celery", 3, 2)
    assert json.loads(paths.executor_file.read_text())["kind"] == "celery"
    with pytest.raises(ValueError, match="at least one worker"):
        ExecutorChoice.celery(workers=0)
    with pytest.raises(ValueError, match="executor must be one of"):
        ExecutorChoice("kubernetes")


def test_each_worker_reports_its_own_name_as_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.WORKER_NAME_VAR, "worker-2")
    assert workers.worker_hostname() == f"worker-2@{socket.getfqdn()}"
    monkeypatch.delenv(workers.WORKER_NAME_VAR)
    assert workers.worker_hostname() == socket.getfqdn()
    assert workers.names(2) == ["worker-1", "worker-2"]
