"""
### Orders: raw CSV in S3 → cleaned Parquet → PostgreSQL

Each run owns one date partition (`raw/orders/dt=YYYY-MM-DD/`):

1. **list_new_files** lists the partition's CSV objects and keeps those whose
   key + ETag the ledger has not loaded yet (scheduled and event runs also look back a
   few days for late files).
2. **transform** (one mapped task per file, or per group of files in big partitions) applies the data contract
   (`include/contracts/orders.yml`), writes Parquet to `processed/` and rejected rows,
   with line number and reason, to `rejected/`.
3. **validate** runs the Great Expectations suite (`include/contracts/orders.expectations.json`)
   on each processed file, stores the report beside it and quarantines a file that fails.
4. **load** COPYs every processed file into staging and merges it into
   `analytics.orders` with the ledger, in one transaction.
5. **check_columns** / **check_table** run data-quality checks on the table, when
   **table_changed** says the load inserted, updated or removed rows (a run without new
   files leaves the table as the last checked run did).
6. **notify** emails the per-file reconciliation (read = loaded + rejected + duplicates).

Runs: daily (each run owns one day), when files land (S3 → SQS → asset event, if
`ORDERS_EVENTS_QUEUE_URL` is set), and as backfills. Params: `day` (YYYY-MM-DD) loads
that partition only; `reprocess` loads files again even if the ledger has them (after a
contract change).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.common.sql.operators.sql import SQLColumnCheckOperator, SQLTableCheckOperator
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, Param, dag, get_current_context, task

from include.etl import pipeline
from include.etl.batching import group_label
from include.etl.config import DATASET, POSTGRES_CONN_ID, PipelineSettings
from include.etl.contract import load_contract
from include.etl.events import raw_files_asset
from include.etl.notify import on_task_failure
from include.etl.quality import column_checks, table_checks

CONTRACT = load_contract(DATASET)
DEFAULTS = PipelineSettings()

# Each scheduled run owns one day: its data interval is [day 00:00, next day 00:00) UTC.
DAILY = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
# With an SQS queue of S3 notifications configured, new files also start a run at once.
RAW_FILES = raw_files_asset()
SCHEDULE = AssetOrTimeSchedule(timetable=DAILY, assets=[RAW_FILES]) if RAW_FILES else DAILY

default_args = {
    "owner": "data-engineering",
    "retries": int(os.environ.get("ORDERS_TASK_RETRIES", "3")),
    "retry_delay": timedelta(seconds=float(os.environ.get("ORDERS_RETRY_DELAY_SECONDS", "30"))),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "on_failure_callback": on_task_failure,
}


@dag(
    dag_id="orders_pipeline",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=4,
    default_args=default_args,
    params={
        "day": Param(None, type=["null", "string"], format="date", description="Partition to load (YYYY-MM-DD)"),
        "reprocess": Param(False, type="boolean", description="Load files again even if already in the ledger"),
    },
    tags=["etl", "orders", "s3", "postgres"],
    doc_md=__doc__,
)
def orders_pipeline() -> None:
    @task
    def list_new_files() -> list[list[dict[str, Any]]]:
        return pipeline.list_new_files(get_current_context())

    @task(map_index_template="{{ file_name }}")
    def transform(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        context = get_current_context()
        context["file_name"] = group_label(files)  # type: ignore[typeddict-unknown-key]
        return pipeline.transform(files)

    @task(trigger_rule="all_done")
    def validate(groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
        return pipeline.validate(get_current_context(), groups)

    @task
    def load(validated: dict[str, Any]) -> dict[str, Any]:
        return pipeline.load(get_current_context(), validated)

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def table_changed(report: dict[str, Any]) -> bool:
        return pipeline.table_changed(report)

    @task(trigger_rule="none_failed")
    def notify(report: dict[str, Any]) -> None:
        pipeline.notify(get_current_context(), report)

    groups = list_new_files()
    validated = validate(groups)
    groups >> transform.expand(files=groups) >> validated
    report = load(validated)

    checks = [
        SQLColumnCheckOperator(
            task_id="check_columns",
            conn_id=POSTGRES_CONN_ID,
            table=CONTRACT.table,
            column_mapping=column_checks(CONTRACT),
        ),
        SQLTableCheckOperator(
            task_id="check_table",
            conn_id=POSTGRES_CONN_ID,
            table=CONTRACT.table,
            checks=table_checks(CONTRACT, DEFAULTS.ledger_table),
        ),
    ]
    table_changed(report) >> checks >> notify(report)


orders_pipeline()
