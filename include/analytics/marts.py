"""The `marts` DAG: the dbt project in `dags/dbt/shop`, rendered by Cosmos, after every load that changed a table.

Why it is built this way:

- **Data-aware schedule.** It runs on the assets the pipelines' `check_table` tasks update
  (`warehouse.analytics.orders | warehouse.analytics.customers`): an asset event means a load changed the table
  and its checks passed, so the marts are rebuilt exactly when there is something new, and never on data that
  failed its checks. Events that arrive while a run is going are batched into the next run (max_active_runs=1,
  so two incremental builds never overlap). The loads keep priority over the marts for worker slots.
- **Each dbt model and its tests are tasks** (Cosmos, `TestBehavior.AFTER_EACH`): a failed test fails its task
  and skips only the models built on that model; the UI shows which model or test failed; a retry reruns
  one model, not the project.
- **Alerts like the pipelines'**, naming the dbt test or model that failed and dbt's message
  (`include/analytics/alerts.py`; the pipelines' alert only sees "dbt command failed"). Settings under the DAG
  id, as a dataset's: Variable `marts_alert_emails` (default data-team@example.com),
  `AIRFLOW_VAR_MARTS_TASK_RETRIES`, `AIRFLOW_VAR_MARTS_RETRY_DELAY_SECONDS` (include/etl/settings.py).
- **dbt in its own virtualenv** (`DBT_VENV_PATH`, default the repo's `.venv-dbt`; `/usr/local/airflow/dbt_venv`
  in the Astro image and on MWAA): dbt's pins conflict with Airflow's. Cosmos's local execution mode with
  `dbt_executable_path` is its recommended setup for that.
- **Parsed with `dbt ls`** (`LoadMode.DBT_LS`, Cosmos caches the result until the project changes): the DAG has
  exactly the nodes, tests and selectors dbt sees, with no manifest to keep in sync.
- **Credentials from the Airflow connection `warehouse`** (Cosmos's Postgres profile mapping, `sslmode` from its
  extra): the project's `profiles.yml` is only for dbt on the command line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from functools import reduce
from operator import or_
from pathlib import Path
from typing import Any

from include.analytics.alerts import keep_failures, on_dbt_failure
from include.etl.running.dag_factory import retry_args, valid_contracts
from include.etl.running.events import table_asset
from include.etl.settings import POSTGRES_CONN_ID, DatasetSettings

DAG_ID = "marts"
# The loaded tables the dbt project reads (its sources); their asset events start a build.
SOURCE_DATASETS = ("orders", "customers")
PROFILE = "shop"
TARGET_SCHEMA = "marts"
REPO_ROOT = Path(__file__).resolve().parents[2]


def dbt_venv() -> Path:
    """Where dbt's virtualenv is: `DBT_VENV_PATH`, else the repository's `.venv-dbt` (built by `make dbt-venv`)."""
    return Path(os.environ.get("DBT_VENV_PATH") or REPO_ROOT / ".venv-dbt")


def dbt_executable() -> Path:
    return dbt_venv() / "bin" / "dbt"


def source_assets(datasets: Sequence[str] = SOURCE_DATASETS) -> Any:
    """The assets of the loaded tables, any of which starts a run: `orders | customers`.

    Only valid contracts count: a broken one is an import error of dags/contract_errors.py and must not take
    the marts down with it (they rebuild on the other tables' loads meanwhile). None if no source is valid.
    """
    contracts, _ = valid_contracts()
    assets = [table_asset(c) for c in contracts if c.dataset in datasets]
    return reduce(or_, assets) if assets else None


def build_marts_dag(project_dir: Path, dag_id: str = DAG_ID, select: Sequence[str] = ()) -> Any:
    """The Cosmos DbtDag of the dbt project at `project_dir` (`select`: a subset of nodes, dbt syntax)."""
    from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, SourceRenderingBehavior, TestBehavior
    from cosmos.profiles import PostgresUserPasswordProfileMapping

    settings = DatasetSettings.from_environment(dag_id)
    executable = str(dbt_executable())
    return DbtDag(
        dag_id=dag_id,
        project_config=ProjectConfig(dbt_project_path=project_dir, install_dbt_deps=False),
        profile_config=ProfileConfig(
            profile_name=PROFILE,
            target_name="airflow",
            profile_mapping=PostgresUserPasswordProfileMapping(
                conn_id=POSTGRES_CONN_ID, profile_args={"schema": TARGET_SCHEMA}
            ),
        ),
        # A subprocess of the venv's dbt (DBT_RUNNER would import dbt into Airflow's own environment).
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=executable,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_LS,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=executable,
            test_behavior=TestBehavior.AFTER_EACH,
            # No source tasks: each task is a dbt start-up (seconds), and the sources' freshness only warns (a late
            # dataset must not stop the marts); `dbt source freshness` and the dashboard show it.
            source_rendering_behavior=SourceRenderingBehavior.NONE,
            # A test of two models (a relationship, a reconciliation) runs once both are built.
            should_detach_multiple_parents_tests=True,
            select=list(select),
        ),
        schedule=source_assets(),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        # Loads come first: the marts take at most two worker slots, and their tasks yield to any waiting task of
        # higher priority (a pipeline's tasks weigh at least 1 plus their downstream tasks).
        max_active_tasks=2,
        default_args={
            "owner": "analytics",
            "priority_weight": 1,
            "weight_rule": "absolute",
            **retry_args(settings),
            "on_failure_callback": on_dbt_failure,
        },
        # After each dbt command, what failed goes to XCom for the alert (the project copy is then deleted).
        operator_args={"callback": keep_failures},
        tags=["analytics", "dbt", "marts"],
        doc_md=__doc__,
    )
