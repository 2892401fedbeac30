"""The DAG's task bodies: Airflow glue around the plain modules (hooks, context, XCom).

Each function takes what Airflow hands a task and returns small, JSON-able dicts:
S3 keys and counts, never data.
"""

from __future__ import annotations

import logging
from typing import Any

from include.etl import load as load_module
from include.etl import notify as notify_module
from include.etl import storage
from include.etl import transform as transform_module
from include.etl.config import AWS_CONN_ID, POSTGRES_CONN_ID, SMTP_CONN_ID, PipelineSettings
from include.etl.contract import load_contract
from include.etl.ledger import loaded_versions
from include.etl.runs import partition_day
from include.etl.transform import FileResult

log = logging.getLogger(__name__)


def _s3() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def _pg() -> Any:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()


def run_day(context: Any) -> str:
    params = context.get("params") or {}
    dag_run = context["dag_run"]
    return partition_day(params.get("day"), context.get("data_interval_start"), getattr(dag_run, "run_after", None))


def list_new_files(context: Any) -> list[dict[str, Any]]:
    """The partition's CSV objects that the ledger has not loaded (all of them with reprocess)."""
    settings = PipelineSettings.from_airflow()
    day = run_day(context)
    objects, others = storage.list_partition(
        _s3(), settings.raw_bucket, storage.partition_prefix(settings.raw_prefix, day)
    )
    for key in others:
        log.warning("ignoring non-CSV object %s", key)
    if (context.get("params") or {}).get("reprocess"):
        new = objects
    else:
        with _pg() as conn, conn.cursor() as cur:
            load_module.ensure_tables(cur, load_contract(settings.contract), settings)
            conn.commit()
            done = loaded_versions(cur, settings.ledger_table, [o.key for o in objects])
        new = [o for o in objects if (o.key, o.etag) not in done]
    log.info("partition %s: %d CSV objects, %d new", day, len(objects), len(new))
    return [{"key": o.key, "etag": o.etag, "size": o.size} for o in new]


def transform(obj: dict[str, Any]) -> dict[str, Any]:
    settings = PipelineSettings.from_airflow()
    raw = storage.RawObject(obj["key"], obj["etag"], obj["size"])
    return transform_module.transform_file(_s3(), raw, load_contract(settings.contract), settings).to_dict()


def load(context: Any, files: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge every successfully transformed file; report the ones whose transform failed."""
    settings = PipelineSettings.from_airflow()
    ti = context["ti"]
    results: list[FileResult] = []
    failed: list[str] = []
    for index, obj in enumerate(files):
        value = ti.xcom_pull(task_ids="transform", map_indexes=index)
        if value is None:
            failed.append(obj["key"])
        else:
            results.append(FileResult(**value))
    reprocess = bool((context.get("params") or {}).get("reprocess"))
    with _pg() as conn:
        report = load_module.load_files(
            conn, _s3(), load_contract(settings.contract), settings, results, ti.run_id, reprocess=reprocess
        )
    return {**report.to_dict(), "failed_files": failed, "day": run_day(context)}


def notify(context: Any, report: dict[str, Any]) -> None:
    """Email the run summary; fail the run afterwards if any file failed."""
    from airflow.sdk.exceptions import AirflowFailException

    settings = PipelineSettings.from_airflow()
    ti = context["ti"]
    contract = load_contract(settings.contract)
    notify_module.send(
        SMTP_CONN_ID,
        settings.alert_emails,
        notify_module.summary_subject(ti.dag_id, report["day"], report),
        notify_module.render_summary_html(ti.dag_id, ti.run_id, report["day"], report, contract.table),
    )
    if report.get("failed_files"):
        raise AirflowFailException(f"files failed to transform: {', '.join(report['failed_files'])}")
