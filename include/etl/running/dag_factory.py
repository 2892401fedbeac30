"""Build a dataset's pipeline DAG from its contract: the same shape for every dataset.

```
list_files ─► transform[file] (mapped) ─┬─► load ─► table_changed ─► check_columns ─┐
                                        │                         └► check_table ───┼─► notify
                                        └─► validation_report (Great Expectations) ─┘
```

The DAG only wires tasks; their bodies are in `tasks.py`, the rules in the contract. Parsing the DAG
imports only what its shape needs (the contract, the settings, Airflow): each task imports the engine
(`tasks.py`: pyarrow, pandas, the S3 and PostgreSQL clients) when it runs, so a busy scheduler or DAG
processor never pays for it (`make bench` reports a parse of the DAG folder).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.etl.contract.model import Contract, ContractError, contract_paths, load_contract
from include.etl.contract.quality import ONE_ROW, column_checks, table_checks
from include.etl.loading.owners import collisions
from include.etl.names import dag_id
from include.etl.running.events import raw_files_asset, table_asset
from include.etl.running.notify import on_task_failure
from include.etl.settings import POSTGRES_CONN_ID, DatasetSettings, SettingsError

if TYPE_CHECKING:
    from include.etl.reading.storage import RawFile

START = datetime(2026, 1, 1, tzinfo=UTC)


def retry_args(settings: DatasetSettings) -> dict[str, Any]:
    """A task's retries: `task_retries` tries, backing off exponentially from `retry_delay_seconds` up to 10 min."""
    return {
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    }


def valid_contracts() -> tuple[list[Contract], list[str]]:
    """The contracts that can become a DAG, and what is wrong with the others (file, key, problem).

    One broken contract must not take the other datasets' DAGs down: `dags/pipelines.py` builds the
    valid ones, `dags/contract_errors.py` turns the problems into Airflow import errors. Two contracts
    that name the same table (or ledger, or duplicates table) are both refused (owners.collisions).
    """
    loaded: list[tuple[str, Contract]] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in contract_paths():
        if path.stem in seen:
            problems.append(f"{path}: dataset {path.stem!r} already has a contract file, {seen[path.stem].name}")
            continue
        seen[path.stem] = path
        try:
            contract = load_contract(path)
            DatasetSettings.from_environment(contract.dataset)  # the settings the DAG's shape is built from
        except (ContractError, SettingsError) as exc:
            problems.append(str(exc))
            continue
        loaded.append((str(path), contract))
    shared = collisions(loaded)
    for dataset in sorted(shared):
        problems += shared[dataset]
    return [c for _, c in loaded if c.dataset not in shared], problems


def build_pipeline(contract: Contract) -> Any:
    """The `<dataset>_pipeline` DAG of one contract."""
    from airflow.providers.common.sql.operators.sql import SQLTableCheckOperator
    from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, Param, dag, get_current_context, task

    settings = DatasetSettings.from_environment(contract.dataset)
    # Each scheduled run owns one day: its data interval is [day 00:00, next day 00:00) UTC.
    daily = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
    # With an SQS queue of the raw prefix's S3 notifications, new files also start a run at once.
    raw_files = raw_files_asset(contract.dataset, settings)
    default_args = {"owner": "data-engineering", **retry_args(settings), "on_failure_callback": on_task_failure}

    @dag(
        dag_id=dag_id(contract.dataset),
        schedule=AssetOrTimeSchedule(timetable=daily, assets=[raw_files]) if raw_files else daily,
        start_date=START,
        catchup=False,
        max_active_runs=4,
        default_args=default_args,
        params={
            "day": Param(None, type=["null", "string"], format="date", description="Partition to load (YYYY-MM-DD)"),
            "reprocess": Param(False, type="boolean", description="Load files again even if the ledger has them"),
            "retry_files": Param(
                [], type=["array", "string"], description='Parked or failed raw keys to try again ("all" for every one)'
            ),
            "skip_files": Param([], type=["array", "string"], description="Raw keys to stop trying (parked or open)"),
            "skip_reason": Param("", type="string", description="Why the skipped files are skipped (ledger)"),
        },
        tags=["etl", contract.dataset, "s3", "postgres"],
        doc_md=_doc(contract),
    )
    def pipeline() -> None:
        @task
        def list_files() -> list[list[RawFile]]:
            from include.etl.running import tasks

            return tasks.list_files(get_current_context(), contract)

        @task(map_index_template="{{ file_name }}")
        def transform(files: list[RawFile]) -> list[dict[str, Any]]:
            from include.etl.running import tasks
            from include.etl.running.batching import group_label

            context = get_current_context()
            context["file_name"] = group_label(files)  # type: ignore[typeddict-unknown-key]
            return tasks.transform(context, contract, files)

        @task(trigger_rule="all_done")
        def load(groups: list[list[RawFile]]) -> dict[str, Any]:
            from include.etl.running import tasks

            return tasks.load(get_current_context(), contract, groups)

        @task(trigger_rule="all_done")
        def validation_report(groups: list[list[RawFile]]) -> list[dict[str, Any]]:
            from include.etl.running import tasks

            return tasks.validation_report(get_current_context(), contract, groups)

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def table_changed(summary: dict[str, Any]) -> bool:
            from include.etl.running import tasks

            return tasks.table_changed(summary)

        @task(trigger_rule="none_failed")
        def notify(summary: dict[str, Any], report: list[dict[str, Any]]) -> None:
            from include.etl.running import tasks

            tasks.send_summary(get_current_context(), contract, summary, report)

        groups = list_files()
        transformed = transform.expand(files=groups)
        # (TaskFlow passes XComArgs; the tasks receive the values they resolve to.)
        summary, report = load(groups), validation_report(groups)  # type: ignore[arg-type]
        transformed >> [summary, report]
        checks = [
            SQLTableCheckOperator(
                task_id="check_columns",
                conn_id=POSTGRES_CONN_ID,
                table=ONE_ROW,
                checks=column_checks(contract),
            ),
            SQLTableCheckOperator(
                task_id="check_table",
                conn_id=POSTGRES_CONN_ID,
                table=ONE_ROW,
                checks=table_checks(contract),
                outlets=[table_asset(contract)],
            ),
        ]
        table_changed(summary) >> checks >> notify(summary, report)  # type: ignore[arg-type]

    return pipeline()


def _doc(contract: Contract) -> str:
    return (
        f"### {contract.dataset}: raw CSV in S3 → Parquet → `{contract.table}`\n\n"
        f"{contract.description}\n\n"
        f"Contract: `include/contracts/{contract.dataset}.yml` (key {', '.join(contract.key)}; rows sharing a key keep "
        f"the latest `{contract.latest_by}`). Ledger: `{contract.ledger_table}`.\n\n"
        "1. **list_files** lists the run's date partitions (`dt=YYYY-MM-DD`) and every partition with a file still "
        "to load, and records each new object version in the ledger.\n"
        "2. **transform** (one mapped task per file) applies the contract: Parquet to `processed/`, rejected rows "
        "with their line and reason to `rejected/`.\n"
        "3. **load** merges the processed files in one transaction, exactly once per file version; "
        "**validation_report** runs the Great Expectations suite derived from the contract beside it.\n"
        "4. **check_columns** / **check_table** check the table when the load changed it.\n"
        "5. **notify** emails the per-file reconciliation (read = loaded + rejected + duplicates).\n\n"
        "Params: `day` loads one partition; `reprocess` loads files again after a contract change; "
        '`retry_files` (keys, or "all") tries parked files again; `skip_files` + `skip_reason` gives them up.'
    )
