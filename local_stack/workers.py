"""Celery workers of the local stack (`make up EXECUTOR=celery WORKERS=2`): Airflow's CeleryExecutor on one machine.

Each worker is its own `airflow celery worker` process group, started and stopped by PID like the other
services, with its own name and its own scratch folder (working directory and TMPDIR under
`.local/workers/<name>`), as separate machines would have: the pipeline passes nothing between tasks on local
disk (S3 keys and counts go through XCom, data through S3), and the tests check that.

Two workers on one machine share a hostname, so each worker's task processes report `<name>@<host>` as their
hostname (`[core] hostname_callable` = `worker_hostname` below), the name Celery gives the worker too; Airflow
records it per task instance (`task_instance.hostname`). The workers do not serve their logs over HTTP (two
would want the same port): they write them to the stack's shared log folder, where the API server reads them.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from local_stack import broker, processes
from local_stack.config import AIRFLOW_DB, DB_USER, ExecutorChoice, Ports, StackPaths

PREFIX = "celery-"
WORKER_NAME_VAR = "LOCAL_WORKER_NAME"


def worker_hostname() -> str:
    """`[core] hostname_callable` of the local workers: `<worker name>@<host>`, or the host alone elsewhere."""
    host = socket.getfqdn()
    name = os.environ.get(WORKER_NAME_VAR)
    return f"{name}@{host}" if name else host


def names(count: int) -> list[str]:
    return [f"worker-{i}" for i in range(1, count + 1)]


def concurrency(executor: ExecutorChoice, parallelism: int) -> int:
    """Task slots per worker: the executor's own, else the stack's parallelism shared out over the workers."""
    return executor.concurrency or max(1, parallelism // max(executor.workers, 1))


def celery_env(ports: Ports, executor: ExecutorChoice, parallelism: int) -> dict[str, str]:
    """The Airflow settings of the CeleryExecutor on the stack: Redis as broker, the metadata DB as result backend."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker.url(ports.redis),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg://{DB_USER}@127.0.0.1:{ports.postgres}/{AIRFLOW_DB}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency(executor, parallelism)),
        # A message a dead worker took is handed out again after this long (Airflow's default, said out loud).
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
    }


def scratch(paths: StackPaths, name: str) -> Path:
    return paths.workers / name


def start(paths: StackPaths, env: dict[str, str], executor: ExecutorChoice, timeout: float = 120) -> list[str]:
    """Start the executor's Celery workers (those not running) and wait until each is ready; returns their names."""
    airflow = str(Path(sys.executable).parent / "airflow")
    slots = env.get("AIRFLOW__CELERY__WORKER_CONCURRENCY", "1")
    started: dict[str, tuple[int, Path, int]] = {}
    for name in names(executor.workers):
        folder = scratch(paths, name)
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        log = paths.logs / f"{PREFIX}{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        worker_env = {
            **os.environ,
            **env,
            WORKER_NAME_VAR: name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            "TMPDIR": str(folder / "tmp"),
        }
        if processes.read_pid(paths.pids / f"{PREFIX}{name}.pid"):
            continue
        argv = [
            airflow,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            slots,
            "--skip-serve-logs",
        ]
        pid = processes.start(f"{PREFIX}{name}", argv, paths.pids, paths.logs, worker_env, folder)
        started[name] = (pid, log, offset)
    for name, (pid, log, offset) in started.items():
        _wait_ready(name, pid, log, offset, timeout)
    return names(executor.workers)


def _wait_ready(name: str, pid: int, log: Path, offset: int, timeout: float) -> None:
    """Celery logs `<name>@<host> ready.` once the worker consumes from the broker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            with log.open("rb") as fh:
                fh.seek(offset)
                if f"{name}@".encode() in (text := fh.read()) and b" ready." in text:
                    return
        if not processes.pid_alive(pid):
            break
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise processes.StackError(f"Celery worker {name} was not ready within {timeout:.0f}s\n{tail}")


def running(paths: StackPaths) -> list[str]:
    """The names of the workers whose process runs."""
    return sorted(
        p.stem.removeprefix(PREFIX) for p in paths.pids.glob(f"{PREFIX}*.pid") if processes.read_pid(p) is not None
    )


def stop(paths: StackPaths) -> list[str]:
    """Stop every worker this state folder started (warm shutdown, then SIGKILL after the timeout)."""
    return [p.stem for p in sorted(paths.pids.glob(f"{PREFIX}*.pid")) if processes.stop(p.stem, paths.pids)]


def kill(paths: StackPaths, name: str) -> int:
    """SIGKILL a worker's whole process group at once, its running tasks with it (a lost machine); returns its PID."""
    return processes.kill(f"{PREFIX}{name}", paths.pids)
