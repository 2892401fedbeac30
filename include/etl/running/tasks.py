"""The pipeline's task bodies: Airflow glue around the plain modules (hooks, context, XCom).

Only this module and the DAG factory touch Airflow. Each function takes what Airflow hands a
task and returns small, JSON-able values: S3 keys and counts, never data.

Retries: a transient fault (network, throttling, a restarted database) raises, and Airflow
retries the task with backoff. Any other error is recorded against the file it happened to
(one attempt in the ledger) on the first try, and the run goes on with the other files; only a
transient fault that outlasts every retry is recorded the same way on the last try.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from include.etl.contract.model import Contract
from include.etl.contract.results import FileResult
from include.etl.contract.transform import transform_file
from include.etl.faults import describe, is_transient
from include.etl.loading import ledger, owners
from include.etl.loading.load import LoadReport, load_files
from include.etl.reading import layout, storage
from include.etl.reading.storage import RawFile, RawObject
from include.etl.running import lineage, notify
from include.etl.running.batching import group_files, group_label
from include.etl.running.events import keys_from_asset_events, partitions_of
from include.etl.running.runs import partition_day, partitions_to_list
from include.etl.settings import AWS_CONN_ID, POSTGRES_CONN_ID, SMTP_CONN_ID, DatasetSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def s3_hook() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID)


def s3_client() -> Any:
    return s3_hook().get_conn()


def pg_hook() -> Any:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=POSTGRES_CONN_ID)


def pg_connect() -> Any:
    return pg_hook().get_conn()


def _params(context: Any) -> dict[str, Any]:
    return dict(context.get("params") or {})


def _fail(message: str) -> Exception:
    """An error that fails the task at once: retrying it would only repeat it."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


def fail_fast(body: Callable[..., T]) -> Callable[..., T]:
    """Let transient faults raise (Airflow retries them); fail the task at once on any other error."""

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return body(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc) or type(exc).__name__ in ("AirflowFailException", "AirflowSkipException"):
                raise
            raise _fail(f"{body.__name__}: {describe(exc)}") from exc

    return run


def run_day(context: Any) -> str:
    dag_run = context["dag_run"]
    return partition_day(_params(context).get("day"), context.get("data_interval_start"), dag_run.run_after)


def _run_prefixes(context: Any, settings: DatasetSettings) -> list[str]:
    """The partition folders this run lists: its day, plus event-named and lookback days where it applies."""
    run_type = context["dag_run"].run_type
    events = [e for evs in (context.get("triggering_asset_events") or {}).values() for e in evs]
    event_days = partitions_of(keys_from_asset_events(events), settings.raw_prefix)
    days = partitions_to_list(
        run_day(context),
        str(getattr(run_type, "value", run_type)),
        _params(context).get("day"),
        event_days,
        settings.lookback_days,
    )
    return [storage.partition_prefix(settings.raw_prefix, day) for day in days]


def _owns_only_its_day(context: Any) -> bool:
    run_type = context["dag_run"].run_type
    return bool(_params(context).get("day")) or str(getattr(run_type, "value", run_type)) == "backfill"


def _keys_param(value: Any) -> list[str] | None:
    """A `retry_files` / `skip_files` param: a list of keys, one key, or "all" (None)."""
    if value in (None, "", []):
        return []
    if value == "all":
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


LISTING = "listing"  # XCom key of what list_files found besides the file groups
IGNORED_SHOWN = 100  # newly ignored objects named in XCom and the summary (all are in the ledger)


@fail_fast
def list_files(context: Any, contract: Contract) -> list[list[RawFile]]:
    """List the run's partitions (and every partition with a file still to load), record what is new.

    Every object under the raw prefix that is not read (outside the `dt=YYYY-MM-DD/` layout, an impossible day,
    not a CSV) is recorded in the ledger as `ignored` with its reason, once per version.

    Returns the file groups for the mapped transform; pushes {"deleted": keys gone from S3,
    "listed": count, "retried" / "skipped": keys an operator asked for, "ignored": the objects
    recorded as ignored now (at most IGNORED_SHOWN, {"key", "reason"}), "ignored_count"} as XCom `listing`.
    """
    settings = DatasetSettings.from_airflow(contract.dataset)
    params = _params(context)
    run_id = context["dag_run"].run_id
    s3 = s3_client()
    with pg_connect() as conn, conn.cursor() as cur:
        ledger.ddl_lock(cur)
        made = owners.check(cur, contract, ["ledger"])  # another dataset's ledger is never written
        ledger.ensure_ledger(cur, contract.ledger_table)
        for table, what in made:
            owners.mark(cur, table, contract.dataset, what)
        conn.commit()
        retried = skipped = []
        if (retry := _keys_param(params.get("retry_files"))) != []:
            retried = ledger.retry(cur, contract.ledger_table, retry)
        skip = _keys_param(params.get("skip_files"))
        if skip is None:
            raise _fail('skip_files takes the raw keys to give up on, not "all": list them (see the parked alert)')
        if skip:
            reason = str(params.get("skip_reason") or "skipped by an operator")
            skipped = ledger.skip(cur, contract.ledger_table, skip, f"{reason} (run {run_id})", run_id)
        prefixes = _run_prefixes(context, settings)
        if not _owns_only_its_day(context) or retried:
            prefixes = sorted(set(prefixes) | set(ledger.open_partitions(cur, contract.ledger_table)))
        listed: dict[str, RawObject] = {}
        deleted: list[str] = []
        ignored = layout.scan(s3, settings.raw_bucket, settings.raw_prefix).ignored
        for prefix in prefixes:
            found, others = storage.list_partition(s3, settings.raw_bucket, prefix)
            ignored += [(o, layout.not_a_csv(o.key) or "not read") for o in others]
            listed.update({o.key: o for o in found})
            present = {o.key for o in found}
            # (A key kept after its deletion is reported once, not by every run that lists its partition.)
            deleted += [
                r.source_key
                for r in ledger.live_under(cur, contract.ledger_table, prefix)
                if r.source_key not in present and (r.deleted_at is None or contract.on_source_delete == "remove")
            ]
        seen = ledger.observe(
            cur,
            contract.ledger_table,
            list(listed.values()),
            run_id,
            bool(params.get("reprocess")),
            settings.raw_prefix,
        )
        newly_ignored = ledger.ignore(cur, contract.ledger_table, ignored, run_id)
        if deleted and contract.on_source_delete == "keep":
            ledger.mark_deleted(cur, contract.ledger_table, deleted, remove=False)
        conn.commit()
    groups = group_files([o.to_dict() for o in seen.todo], settings.max_mapped_tasks)
    log.info(
        "%d CSV objects listed in %d folder(s): %d to load, %d done before, %d parked, %d deleted from S3, "
        "%d ignored (%d of them new)",
        len(listed),
        len(prefixes),
        len(seen.todo),
        len(seen.done),
        len(seen.parked),
        len(deleted),
        len(ignored),
        len(newly_ignored),
    )
    for entry in newly_ignored:
        log.warning("ignored %s: %s", entry["key"], entry["reason"])
    listing = {
        "deleted": sorted(deleted),
        "listed": len(listed),
        "retried": retried,
        "skipped": skipped,
        "ignored": newly_ignored[:IGNORED_SHOWN],
        "ignored_count": len(newly_ignored),
    }
    context["ti"].xcom_push(key=LISTING, value=listing)
    return groups


def _listing(context: Any) -> dict[str, Any]:
    return context["ti"].xcom_pull(task_ids="list_files", key=LISTING) or {}


def transform(context: Any, contract: Contract, files: list[RawFile]) -> list[dict[str, Any]]:
    """Transform each file of a group; an error that is not transient is the file's, not the task's."""
    settings = DatasetSettings.from_airflow(contract.dataset)
    ti = context["ti"]
    last_try = ti.try_number > ti.max_tries
    hook = s3_hook()
    s3 = hook.get_conn()
    results: list[FileResult] = []
    for f in files:
        obj = RawObject.from_dict(f)
        try:
            result = transform_file(s3, obj, contract, settings)
        except Exception as exc:
            if is_transient(exc) and not last_try:
                raise  # Airflow retries the task
            log.exception("%s: transform failed", obj.key)
            result = FileResult.for_version(obj, status="failed", error=describe(exc))
        results.append(result)
    lineage.report(lambda: lineage.transformed(results, settings), hook)
    return [r.to_dict() for r in results]


def _transform_results(context: Any, groups: list[list[RawFile]] | None) -> list[FileResult]:
    """Every mapped transform's results; the files of a transform that left none are failed."""
    if groups is None:  # list_files failed: nothing was listed, so there is nothing to load
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("list_files failed: nothing to load")
    ti = context["ti"]
    results: list[FileResult] = []
    for index, group in enumerate(groups):
        value = ti.xcom_pull(task_ids="transform", map_indexes=index)
        if value is None:
            error = (
                f"the transform task for {group_label(group)} ended without a result (killed: out of memory, "
                f"a timeout or an operator?); its log: {_log_url(ti, 'transform', index)}"
            )
            results += [FileResult.for_version(RawObject.from_dict(f), status="failed", error=error) for f in group]
        else:
            results += [FileResult.from_dict(r) for r in value]
    return results


def _log_url(ti: Any, task_id: str, map_index: int) -> str:
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    return f"{base}/dags/{ti.dag_id}/runs/{quote(ti.run_id)}/tasks/{task_id}/mapped/{map_index}"


@fail_fast
def load(context: Any, contract: Contract, groups: list[list[RawFile]]) -> dict[str, Any]:
    """Merge every file that transformed, and record every file's outcome, in one transaction."""
    settings = DatasetSettings.from_airflow(contract.dataset)
    results = _transform_results(context, groups)
    listing = _listing(context)
    warehouse, s3 = pg_hook(), s3_hook()
    with warehouse.get_conn() as conn:
        report = load_files(
            conn,
            s3.get_conn(),
            contract,
            settings,
            results,
            context["dag_run"].run_id,
            reprocess=bool(_params(context).get("reprocess")),
            deleted=listing.get("deleted", []),
            connect=warehouse.get_conn,
        )
    log.info(
        "load: %s rows staged, %s inserted, %s updated, %s removed; seconds %s",
        report.rows_staged,
        report.rows_inserted,
        report.rows_updated,
        report.rows_removed,
        report.seconds,
    )
    for change in report.schema_changes:
        log.warning("schema change applied to %s: %s", contract.table, change)

    def loaded() -> lineage.Lineage:  # built inside report(), where a failure is logged, never raised
        table = lineage.table_of(warehouse, POSTGRES_CONN_ID, contract.table)
        return lineage.loaded(report.files, settings, table, report.table_changed)

    lineage.report(loaded, s3, warehouse)
    return _summary(context, contract, report, listing)


def _summary(context: Any, contract: Contract, report: LoadReport, listing: dict[str, Any]) -> dict[str, Any]:
    with pg_connect() as conn, conn.cursor() as cur:
        parked = [r.source_key for r in ledger.by_status(cur, contract.ledger_table, ("parked",))]
    return {
        **report.to_dict(),
        "day": run_day(context),
        "parked": parked,
        "deleted": listing.get("deleted", []),
        "retried": listing.get("retried", []),
        "skipped_by_operator": listing.get("skipped", []),
        "ignored": listing.get("ignored", []),
        "ignored_count": listing.get("ignored_count", 0),
        "on_source_delete": contract.on_source_delete,
    }


def table_changed(summary: dict[str, Any]) -> bool:
    """Whether the load changed the table (else the table checks are skipped)."""
    return bool(summary.get("table_changed"))


@fail_fast
def validation_report(context: Any, contract: Contract, groups: list[list[RawFile]]) -> list[dict[str, Any]]:
    """Run the contract's Great Expectations suite on each processed file and store its report beside it."""
    from include.etl.contract.validation import SuiteValidator, validate_processed

    settings = DatasetSettings.from_airflow(contract.dataset)
    processed = [r for r in _transform_results(context, groups) if r.status == "processed" and r.processed_key]
    if not processed:
        return []
    validator, hook = SuiteValidator.for_contract(contract), s3_hook()
    s3 = hook.get_conn()
    reports = [validate_processed(s3, r, validator, settings) for r in processed]
    lineage.report(lambda: lineage.validated(reports, processed, settings), hook)
    return reports


@fail_fast
def send_summary(context: Any, contract: Contract, summary: dict[str, Any], gx: list[dict[str, Any]] | None) -> None:
    """Email the run summary (and an alert for newly parked files); fail the run if a file failed."""
    settings = DatasetSettings.from_airflow(contract.dataset)
    ti = context["ti"]
    notify.send(
        SMTP_CONN_ID,
        settings.alert_emails,
        notify.summary_subject(ti.dag_id, summary["day"], summary),
        notify.render_summary_html(ti.dag_id, ti.run_id, summary, contract, settings, gx or []),
    )
    newly_parked = [f for f in summary.get("files", []) if f.get("parked")]
    if newly_parked:
        notify.send(
            SMTP_CONN_ID,
            settings.alert_emails,
            notify.parked_subject(ti.dag_id, newly_parked),
            notify.render_parked_html(ti.dag_id, ti.run_id, newly_parked, settings),
        )
    failed = [f["source_key"] for f in summary.get("files", []) if f.get("status") in ("failed", "parked")]
    if failed:
        raise _fail(f"{len(failed)} file(s) failed and are recorded in the ledger: {', '.join(failed)}")
