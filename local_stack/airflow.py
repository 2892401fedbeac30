"""Airflow on the local stack: environment, metadata DB migration and the four services.

`AIRFLOW_HOME` is `.local/airflow`; the metadata DB is the `airflow` database of the
local PostgreSQL (so the LocalExecutor runs tasks in parallel); connections and
variables come from `airflow_settings.yaml` via local_stack.settings. With the
CeleryExecutor (local_stack.workers) the same services queue tasks on Redis for the
Celery workers. Every task run writes its OpenLineage events to `.local/lineage/`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from local_stack import processes, s3, settings, workers
from local_stack.config import AIRFLOW_DB, DB_USER, PROJECT_ROOT, ExecutorChoice, Ports, StackPaths, datasets

LINEAGE_NAMESPACE = "csv-etl-local"

SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


def fernet_key(paths: StackPaths) -> str:
    """The stack's key for encrypting connections and trigger arguments in the metadata DB.

    Generated once per state folder, so every Airflow process of the stack (services, `dags test`,
    tests) reads what the others wrote.
    """
    path = paths.airflow_home / "fernet.key"
    if not path.exists():
        from cryptography.fernet import Fernet

        # A state folder made before this file existed: keep the key Airflow wrote into airflow.cfg.
        cfg = paths.airflow_home / "airflow.cfg"
        found = re.search(r"^fernet_key\s*=\s*(\S+)\s*$", cfg.read_text(), re.M) if cfg.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(found.group(1) if found else Fernet.generate_key().decode(), encoding="ascii")
        path.chmod(0o600)
    return path.read_text(encoding="ascii").strip()


def lineage_env(paths: StackPaths) -> dict[str, str]:
    """OpenLineage to a file: one JSON event per line, appended by every task process of the stack."""
    transport = {"type": "file", "log_file_path": str(paths.lineage), "append": True}
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": LINEAGE_NAMESPACE,
    }


def environment(paths: StackPaths, ports: Ports, executor: ExecutorChoice | None = None) -> dict[str, str]:
    """The full environment for Airflow commands and for DAG tests on the local stack."""
    venv_bin = str(Path(sys.executable).parent)
    parallelism = max(2, os.cpu_count() or 2) * 2
    env = {
        "AIRFLOW__CORE__FERNET_KEY": fernet_key(paths),
        "AIRFLOW_HOME": str(paths.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The local stack's DAGs are ready to run: an upload starts a run without unpausing first.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        # A task's supervisor can miss its process's exit by a hair (the sockets close first), then waits for
        # its next heartbeat tick before freeing the slot: up to 5 s (the default) after about one task in
        # five here. 1 s bounds that; the price is one heartbeat request per running task per second.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg://{DB_USER}@127.0.0.1:{ports.postgres}/{AIRFLOW_DB}"
        ),
        "AIRFLOW__API__PORT": str(ports.airflow),
        # Every server of the stack listens on loopback unless asked (LOCAL_AIRFLOW_HOST=0.0.0.0 shares the UI).
        "AIRFLOW__API__HOST": os.environ.get("LOCAL_AIRFLOW_HOST", "127.0.0.1"),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        # The admin's password: written by the stack (0600), so Airflow neither makes one nor prints it to its log.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file(paths)),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{ports.airflow}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{ports.airflow}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(paths.logs / "airflow"),
        # Cosmos (the marts DAG) reports usage to its vendor unless told not to; the local stack is offline.
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "PYTHONPATH": str(PROJECT_ROOT),
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    for dataset in datasets():  # one SQS queue of S3 notifications per dataset (a parse-time setting)
        env[f"AIRFLOW_VAR_{dataset.upper()}_EVENTS_QUEUE_URL"] = s3.events_queue_url(ports.s3, dataset)
    env.update(settings.airflow_env(ports))
    env.update(lineage_env(paths))
    if executor is not None and executor.is_celery:
        env.update(workers.celery_env(ports, executor, parallelism))
    return env


def run(args: list[str], env: dict[str, str], capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an `airflow` CLI command with the local environment."""
    airflow = str(Path(sys.executable).parent / "airflow")
    return subprocess.run(
        [airflow, *args], env={**os.environ, **env}, capture_output=capture, text=True, cwd=PROJECT_ROOT
    )


def migrate(env: dict[str, str]) -> None:
    result = run(["db", "migrate"], env)
    if result.returncode != 0:
        raise processes.StackError(f"airflow db migrate failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


# Airflow's scheduler and triggerer serve task logs to other machines on every interface; on one machine the API
# server reads the log files themselves.
_OWN_FLAGS = {"scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}


def start_services(paths: StackPaths, ports: Ports, env: dict[str, str], services: tuple[str, ...] = SERVICES) -> None:
    """Start Airflow services (all four by default) and wait for the API server."""
    airflow = str(Path(sys.executable).parent / "airflow")
    full_env = {**os.environ, **env}
    if "api-server" in services:
        ensure_admin_password(paths)
    for service in services:
        argv = [airflow, service, *_OWN_FLAGS.get(service, [])]
        argv += ["--port", str(ports.airflow)] if service == "api-server" else []
        processes.start(f"airflow-{service}", argv, paths.pids, paths.logs, env=full_env, cwd=PROJECT_ROOT)
    processes.wait_for_port(ports.airflow, 120, "Airflow API server", paths.logs / "airflow-api-server.log")


def stop_services(paths: StackPaths) -> list[str]:
    return [s for s in SERVICES if processes.stop(f"airflow-{s}", paths.pids)]


def password_file(paths: StackPaths) -> Path:
    return paths.airflow_home / "simple_auth_manager_passwords.json.generated"


def ensure_admin_password(paths: StackPaths) -> str:
    """The admin's password of the local Airflow UI, made once per state folder in a file only its owner reads."""
    path = password_file(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    password = admin_password(paths)
    if password is None:
        password = secrets.token_urlsafe(18)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"admin": password}) + "\n")
    path.chmod(0o600)
    return password


def admin_password(paths: StackPaths) -> str | None:
    try:
        password = json.loads(password_file(paths).read_text()).get("admin")
        return None if password is None else str(password)
    except (OSError, ValueError):
        return None
