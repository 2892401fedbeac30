"""The analytics layer on the local stack: dbt builds the marts, Streamlit shows them.

    python -m local_stack.analytics dbt [dbt arguments]   # make dbt ARGS="build -s fct_orders+"
    python -m local_stack.analytics dashboard              # make dashboard

dbt runs from its own virtualenv (`DBT_VENV_PATH`, default `.venv-dbt`) with the project's `profiles.yml`, pointed
at the stack's PostgreSQL by environment variables; in Airflow the `marts` DAG runs the same project with Cosmos.
The dashboard connects as the read-only role `bi_reader`, which the dbt build creates.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from include.analytics.marts import dbt_executable
from local_stack.config import DB_USER, PROJECT_ROOT, WAREHOUSE_DB, Ports

DBT_PROJECT = PROJECT_ROOT / "dags" / "dbt" / "shop"
DASHBOARD_APP = PROJECT_ROOT / "dashboard" / "app.py"
BI_ROLE = "bi_reader"


def dbt_env(ports: Ports, dbname: str = WAREHOUSE_DB) -> dict[str, str]:
    """The variables the project's profiles.yml reads, for the stack's warehouse."""
    return {
        "DBT_HOST": "127.0.0.1",
        "DBT_PORT": str(ports.postgres),
        "DBT_USER": DB_USER,
        "DBT_DBNAME": dbname,
        "DBT_PROFILES_DIR": str(DBT_PROJECT),
    }


def run_dbt(
    args: Sequence[str], ports: Ports, dbname: str = WAREHOUSE_DB, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    """`dbt <args>` on the dbt project, against the stack's warehouse (or another database of it)."""
    dbt = dbt_executable()
    if not dbt.exists():
        raise SystemExit(f"no dbt at {dbt}: run `make dbt-venv` (or set DBT_VENV_PATH)")
    return subprocess.run(
        [str(dbt), *args],
        cwd=DBT_PROJECT,
        env={**os.environ, **dbt_env(ports, dbname)},
        capture_output=capture,
        text=True,
    )


def dashboard_url(ports: Ports, dbname: str = WAREHOUSE_DB) -> str:
    """The dashboard's database URL on the local stack: the read-only role, trust authentication."""
    return f"postgresql+psycopg://{BI_ROLE}@127.0.0.1:{ports.postgres}/{dbname}"


def dashboard_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(DASHBOARD_APP),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def _dbt(args: argparse.Namespace) -> int:
    started = time.monotonic()
    code = run_dbt(args.dbt_args or ["build"], Ports.from_env()).returncode
    print(f"dbt {' '.join(args.dbt_args or ['build'])}: exit {code} in {time.monotonic() - started:.1f}s")
    return code


def _dashboard(args: argparse.Namespace) -> int:
    ports = Ports.from_env()
    env = {**os.environ, "DASHBOARD_DATABASE_URL": os.environ.get("DASHBOARD_DATABASE_URL") or dashboard_url(ports)}
    print(f"Dashboard: http://localhost:{ports.dashboard}  (reads the marts as {BI_ROLE}; Ctrl-C stops it)")
    try:
        return subprocess.run(dashboard_command(ports.dashboard), env=env, cwd=Path(DASHBOARD_APP).parent).returncode
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack.analytics", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dbt = sub.add_parser("dbt", help="dbt on the local stack's warehouse (default: build)")
    dbt.add_argument("dbt_args", nargs=argparse.REMAINDER)
    sub.add_parser("dashboard", help="the Streamlit dashboard on the local stack's marts")
    args = parser.parse_args(argv)
    return {"dbt": _dbt, "dashboard": _dashboard}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
