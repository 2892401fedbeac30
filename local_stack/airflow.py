"""Airflow on the local stack: environment, metadata DB migration and the four services.

`AIRFLOW_HOME` is `.local/airflow`; the metadata DB is the `airflow` database of the
local PostgreSQL (so the LocalExecutor runs tasks in parallel); connections and
variables come from `airflow_settings.yaml` via local_stack.settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from local_stack import processes, s3, settings
from local_stack.config import AIRFLOW_DB, DB_USER, PROJECT_ROOT, Ports, StackPaths

SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


def environment(paths: StackPaths, ports: Ports) -> dict[str, str]:
    """The full environment for Airflow commands and for DAG tests on the local stack."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "AIRFLOW_HOME": str(paths.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(max(2, os.cpu_count() or 2) * 2),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg://{DB_USER}@127.0.0.1:{ports.postgres}/{AIRFLOW_DB}"
        ),
        "AIRFLOW__API__PORT": str(ports.airflow),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{ports.airflow}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{ports.airflow}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(paths.logs / "airflow"),
        "ORDERS_EVENTS_QUEUE_URL": s3.events_queue_url(ports.s3),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    env.update(settings.airflow_env(ports))
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


def start_services(paths: StackPaths, ports: Ports, env: dict[str, str], services: tuple[str, ...] = SERVICES) -> None:
    """Start Airflow services (all four by default) and wait for the API server."""
    airflow = str(Path(sys.executable).parent / "airflow")
    full_env = {**os.environ, **env}
    for service in services:
        argv = [airflow, service] + (["--port", str(ports.airflow)] if service == "api-server" else [])
        processes.start(f"airflow-{service}", argv, paths.pids, paths.logs, env=full_env, cwd=PROJECT_ROOT)
    processes.wait_for_port(ports.airflow, 120, "Airflow API server", paths.logs / "airflow-api-server.log")


def stop_services(paths: StackPaths) -> list[str]:
    return [s for s in SERVICES if processes.stop(f"airflow-{s}", paths.pids)]


def admin_password(paths: StackPaths) -> str | None:
    generated = paths.airflow_home / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(generated.read_text()).get("admin")
    except (OSError, ValueError):
        return None
