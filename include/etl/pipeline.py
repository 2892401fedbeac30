"""The DAG's task bodies: Airflow glue around the plain modules (hooks, context, XCom).

Each function takes what Airflow hands a task and returns small, JSON-able values:
S3 keys and counts, never data.
"""

from __future__ import annotations

import logging
from typing import Any

from include.etl import load as load_module
from include.etl import notify as notify_module
from include.etl import storage
from include.etl import transform as transform_module
from include.etl.batching import group_files
from include.etl.config import AWS_CONN_ID, DATASET, POSTGRES_CONN_ID, SMTP_CONN_ID, PipelineSettings
from include.etl.contract import load_contract
from include.etl.events import keys_from_asset_events, partitions_of
from include.etl.ledger import loaded_versions
from include.etl.runs import partition_day, partitions_to_list
from include.etl.transform import FileResult

log = logging.getLogger(__name__)


def _s3() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def _pg() -> Any:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()


def _params(context: Any) -> dict[str, Any]:
    return dict(context.get("params") or {})


def run_day(context: Any) -> str:
    dag_run = context["dag_run"]
    return partition_day(_params(context).get("day"), context.get("data_interval_start"), dag_run.run_after)


def run_partitions(context: Any, settings: PipelineSettings) -> list[str]:
    """The partitions this run lists: its day, plus event-named and lookback days where it applies."""
    run_type = context["dag_run"].run_type
    events = [e for evs in (context.get("triggering_asset_events") or {}).values() for e in evs]
    event_days = partitions_of(keys_from_asset_events(events), settings.raw_prefix)
    return partitions_to_list(
        run_day(context),
        str(getattr(run_type, "value", run_type)),
        _params(context).get("day"),
        event_days,
        settings.lookback_days,
    )


def list_new_files(context: Any) -> list[list[dict[str, Any]]]:
    """The new CSV objects of the run's partitions, grouped for the mapped transform."""
    settings = PipelineSettings.from_airflow()
    s3 = _s3()
    objects: list[storage.RawObject] = []
    for day in run_partitions(context, settings):
        found, others = storage.list_partition(
            s3, settings.raw_bucket, storage.partition_prefix(settings.raw_prefix, day)
        )
        objects += found
        for key in others:
            log.warning("ignoring non-CSV object %s", key)
    if _params(context).get("reprocess"):
        new = objects
    else:
        with _pg() as conn, conn.cursor() as cur:
            load_module.ensure_tables(cur, load_contract(DATASET), settings)
            conn.commit()
            done = loaded_versions(cur, settings.ledger_table, [o.key for o in objects])
        new = [o for o in objects if (o.key, o.etag) not in done]
    groups = group_files([{"key": o.key, "etag": o.etag, "size": o.size} for o in new], settings.max_mapped_tasks)
    log.info("%d CSV objects listed, %d new, in %d transform task(s)", len(objects), len(new), len(groups))
    return groups


def transform(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Transform each file of a group, one after the other."""
    settings = PipelineSettings.from_airflow()
    contract, s3 = load_contract(DATASET), _s3()
    return [
        transform_module.transform_file(
            s3, storage.RawObject(f["key"], f["etag"], f["size"]), contract, settings
        ).to_dict()
        for f in files
    ]


def validate(context: Any, groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Collect the transform results and validate each processed file with the GX suite."""
    from include.etl.validation import SuiteValidator, validate_processed

    settings = PipelineSettings.from_airflow()
    ti = context["ti"]
    results: list[FileResult] = []
    failed: list[str] = []
    for index, group in enumerate(groups):
        value = ti.xcom_pull(task_ids="transform", map_indexes=index)
        if value is None:
            failed += [f["key"] for f in group]
        else:
            results += [FileResult(**r) for r in value]
    processed = [r for r in results if r.status == "processed"]
    if processed:
        validator, s3 = SuiteValidator.for_dataset(DATASET), _s3()
        for r in processed:
            validate_processed(s3, r, validator, settings)
            if r.status != "processed":
                log.warning("%s quarantined: %s", r.source_key, r.reason)
    return {"results": [r.to_dict() for r in results], "failed_files": failed}


def load(context: Any, validated: dict[str, Any]) -> dict[str, Any]:
    """Merge every file that passed transform and validation, in one transaction."""
    settings = PipelineSettings.from_airflow()
    results = [FileResult(**r) for r in validated["results"]]
    with _pg() as conn:
        report = load_module.load_files(
            conn,
            _s3(),
            load_contract(DATASET),
            settings,
            results,
            context["ti"].run_id,
            reprocess=bool(_params(context).get("reprocess")),
            connect=_pg,
        )
    log.info(
        "load: %s rows staged, %s inserted, %s updated; seconds %s",
        report.rows_staged,
        report.rows_inserted,
        report.rows_updated,
        report.seconds,
    )
    return {**report.to_dict(), "failed_files": validated["failed_files"], "day": run_day(context)}


def table_changed(report: dict[str, Any]) -> bool:
    """Whether the load inserted, updated or removed rows (else the table checks are skipped)."""
    return bool(report.get("rows_inserted") or report.get("rows_updated") or report.get("rows_removed"))


def notify(context: Any, report: dict[str, Any]) -> None:
    """Email the run summary; fail the run afterwards if any file failed."""
    from airflow.sdk.exceptions import AirflowFailException

    settings = PipelineSettings.from_airflow()
    ti = context["ti"]
    contract = load_contract(DATASET)
    notify_module.send(
        SMTP_CONN_ID,
        settings.alert_emails,
        notify_module.summary_subject(ti.dag_id, report["day"], report),
        notify_module.render_summary_html(ti.dag_id, ti.run_id, report["day"], report, contract.table),
    )
    if report.get("failed_files"):
        raise AirflowFailException(f"files failed to transform: {', '.join(report['failed_files'])}")
