"""Load a run's processed files into the warehouse: one transaction, exactly once per file version.

Under the dataset's advisory lock the load re-reads the ledger and asks S3 which version each
key holds now, then decides per file: a version another run already loaded is skipped; one
that is no longer the key's newest (overwritten since it was listed) is superseded, and the
newest is recorded as pending for the next run; a replacement rejected whole leaves the
previous version's rows live. The rest are COPYed into staging and merged (`merge.py`), the
rows of the versions they replace are retracted, and every file's outcome goes into the
ledger in the same transaction. A failure loads nothing; the retry starts over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import sql

from include.etl.contract import evolution
from include.etl.contract.model import Contract
from include.etl.contract.results import FileResult
from include.etl.contract.schema import table_columns
from include.etl.loading import ledger, owners, staging
from include.etl.loading.merge import MergeResult, merge
from include.etl.names import schema_of, table_ident
from include.etl.reading import storage
from include.etl.reading.storage import RawObject
from include.etl.settings import DatasetSettings

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What the load did, per file and in total; small enough for XCom."""

    files: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already loaded by another run
    rows_staged: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_removed: int = 0
    schema_changes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per phase: stage, dedup, merge

    @property
    def table_changed(self) -> bool:
        return bool(self.rows_inserted or self.rows_updated or self.rows_removed or self.schema_changes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "table_changed": self.table_changed}


def ensure_tables(cur: Any, contract: Contract) -> list[str]:
    """Create the table, the duplicates table and the ledger, or evolve them to the contract.

    Returns the changes applied; raises evolution.SchemaEvolutionError for incompatible ones, and
    owners.OwnershipError (before any change) when one of the tables belongs to another dataset.
    """
    made = owners.check(cur, contract)
    changes: list[evolution.Change] = []
    for qualified, key in ((contract.table, True), (contract.duplicates_table, False)):
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema_of(qualified))))
        existing = evolution.existing_columns(cur, qualified)
        if existing is None:
            _create(cur, contract, qualified, key)
        else:
            changes += evolution.plan(cur, contract, qualified, key)
    evolution.apply(cur, changes)
    ledger.ensure_ledger(cur, contract.ledger_table)
    for table, what in made:
        owners.mark(cur, table, contract.dataset, what)
    return [c.description for c in changes if c.table == contract.table]


def _create(cur: Any, contract: Contract, qualified: str, key: bool) -> None:
    cols = [
        sql.SQL("{} {}{}{}").format(
            sql.Identifier(name),
            sql.SQL(kind),
            sql.SQL(" NOT NULL") if notnull else sql.SQL(""),
            sql.SQL(" DEFAULT now()") if name == "loaded_at" else sql.SQL(""),
        )
        for name, kind, notnull in table_columns(contract)
    ]
    keys = sql.SQL(", ").join(map(sql.Identifier, contract.key))
    if key:
        cols.append(sql.SQL("PRIMARY KEY ({})").format(keys))
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table_ident(qualified), sql.SQL(", ").join(cols)))
    if not key:
        name = qualified.split(".", 1)[-1]
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(f"{name}_key"), table_ident(qualified), keys
            )
        )


def lock(cur: Any, contract: Contract) -> None:
    """Serialize loads of one dataset's table (released at commit or rollback)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (contract.table,))


def prepare_tables(conn: Any, contract: Contract) -> list[str]:
    """ensure_tables in a short transaction of its own, one at a time across datasets.

    CREATE SCHEMA / TABLE IF NOT EXISTS are not safe when two sessions run them at once (two
    datasets in one schema), so they take a database-wide advisory lock, for a moment only.
    """
    with conn.transaction(), conn.cursor() as cur:
        ledger.ddl_lock(cur)
        return ensure_tables(cur, contract)


def load_files(
    conn: Any,
    s3: Any,
    contract: Contract,
    settings: DatasetSettings,
    results: Sequence[FileResult],
    run_id: str,
    *,
    reprocess: bool = False,
    deleted: Sequence[str] = (),
    connect: Callable[[], Any] | None = None,
    current: Callable[[str], RawObject | None] | None = None,
) -> LoadReport:
    """Merge the files of `results` into the table and record every outcome in the ledger, atomically.

    `deleted`: raw keys listing found gone; with `on_source_delete: remove` their rows are
    retracted. `connect` opens another connection to the same database: with it, up to
    `settings.copy_workers` connections COPY files into staging at once. `current(key)` gives
    the key's current S3 version (default: a HEAD request on the raw bucket).
    """
    job = LoadJob(
        contract,
        settings,
        s3,
        tuple(results),
        run_id,
        reprocess,
        tuple(deleted),
        connect,
        current or (lambda key: storage.head(s3, settings.raw_bucket, key)),
    )
    shared: list[staging.Stage] = []  # committed by other connections: dropped here on failure
    if connect is not None:  # they create the staging table in this schema: it must exist for them
        staging.autocommit(
            connect, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(contract.etl_schema))
        )
    schema_changes = prepare_tables(conn, contract)
    try:
        with conn.transaction(), conn.cursor() as cur:
            report = _load(cur, job, shared)
    except BaseException:
        for stage in shared:
            try:
                staging.autocommit(connect, sql.SQL("DROP TABLE IF EXISTS {}").format(stage.name))  # type: ignore[arg-type]
            except Exception:  # the next load of the dataset drops it (staging.new_stage)
                log.warning("could not drop staging table %s", stage.name, exc_info=True)
        raise
    report.schema_changes = schema_changes
    return report


@dataclass(frozen=True)
class LoadJob:
    """One load: the files it merges, the dataset's contract and settings, the clients, the run."""

    contract: Contract
    settings: DatasetSettings
    s3: Any  # a boto3 S3 client
    results: Sequence[FileResult]
    run_id: str
    reprocess: bool
    deleted: Sequence[str]  # raw keys listing found gone
    connect: Callable[[], Any] | None  # another connection to the database, for parallel COPY
    current: Callable[[str], RawObject | None]  # a key's current S3 version


@dataclass
class _Plan:
    outcomes: list[ledger.Outcome] = field(default_factory=list)
    jobs: list[tuple[FileResult, staging.StageJob]] = field(default_factory=list)
    retract: list[str] = field(default_factory=list)
    expected: list[RawObject] = field(default_factory=list)  # newer versions seen: pending for the next run
    skipped: list[str] = field(default_factory=list)  # another run got there first


def _load(cur: Any, job: LoadJob, shared: list[staging.Stage]) -> LoadReport:
    """The load in the caller's transaction; staging tables other connections committed are added to `shared`
    (for the caller to drop should the transaction fail)."""
    contract, settings, run_id, connect = job.contract, job.settings, job.run_id, job.connect
    lock(cur, contract)
    plan = _decide(cur, job)
    report = LoadReport(skipped=plan.skipped)
    clock = time.perf_counter()
    merged = MergeResult()
    if plan.jobs or plan.retract:
        stage = staging.new_stage(cur, contract)
        jobs = [stage_job for _, stage_job in plan.jobs]
        parallel = connect is not None and settings.copy_workers > 1 and len(jobs) > 1
        if parallel:
            shared.append(stage)
            staging.autocommit(connect, stage.ddl)  # type: ignore[arg-type]
        else:
            cur.execute(stage.ddl)
        staged = staging.copy_files(
            cur, job.s3, settings.processed_bucket, stage, jobs, connect if parallel else None, settings.copy_workers
        )
        report.rows_staged = staged.rows
        report.seconds["stage"] = round(time.perf_counter() - clock, 3)
        loadable = []
        for result, stage_job in plan.jobs:
            if stage_job.source.key in staged.failed:
                plan.outcomes.append(_outcome(result, run_id, "failed", error=staged.failed[stage_job.source.key]))
            elif stage_job.source.key in staged.stale:
                log.info("%s stays pending: its processed file is being rewritten by another run", result.source_key)
            else:
                loadable.append(result)
        stale_or_failed = set(staged.stale) | set(staged.failed)
        retract = [k for k in plan.retract if k not in stale_or_failed]
        merged = merge(cur, contract, stage.name, stage.columns, retract, staged.keys)
        staging.drop(cur, stage)
        report.seconds.update(merged.seconds)
        for result in loadable:
            kept = merged.kept_by_file.get(result.source_key, 0)
            distinct = result.rows_clean - merged.collapsed_by_file.get(result.source_key, 0)
            plan.outcomes.append(
                _outcome(
                    result,
                    run_id,
                    "loaded",
                    rows_loaded=kept,
                    rows_duplicate=result.rows_clean - kept,
                    distinct_keys=distinct,
                )
            )
    report.rows_inserted, report.rows_updated, report.rows_removed = merged.inserted, merged.updated, merged.removed
    for obj in plan.expected:
        ledger.expect_version(
            cur, contract.ledger_table, obj, run_id, "seen when an older version was loaded", settings.raw_prefix
        )
    ledger.record(cur, contract.ledger_table, plan.outcomes, settings.max_attempts, settings.raw_prefix)
    if job.deleted and contract.on_source_delete == "remove":
        gone = set(job.deleted)
        ledger.mark_deleted(cur, contract.ledger_table, [k for k in plan.retract if k in gone], remove=True)
    report.files = [_file_report(o, merged) for o in plan.outcomes]
    return report


def _decide(cur: Any, job: LoadJob) -> _Plan:
    """What to do with each file, under the lock, against the ledger and S3 as they are now."""
    contract, results, run_id, reprocess, deleted, current = (
        job.contract,
        job.results,
        job.run_id,
        job.reprocess,
        job.deleted,
        job.current,
    )
    plan = _Plan()
    keys = [r.source_key for r in results] + list(deleted)
    known = {(r.source_key, r.etag, r.last_modified): r for r in ledger.rows_for(cur, contract.ledger_table, keys)}
    live = {r.source_key: r for r in known.values() if r.status == "loaded"}
    for result in results:
        version = result.raw
        row = known.get((version.key, version.etag, version.last_modified))
        if result.status == "failed":
            plan.outcomes.append(_outcome(result, run_id, "failed", error=result.error))
            continue
        if row is not None and row.status in ("loaded", "rejected", "skipped", "deleted") and not reprocess:
            plan.skipped.append(version.key)
            continue
        now = current(version.key)
        newer = now is not None and not now.same_version(version)
        older_than_live = version.key in live and live[version.key].last_modified > version.last_modified
        if result.status == "superseded" or newer or older_than_live:
            reason = result.reason or "a newer version of the object arrived before this one was loaded"
            plan.outcomes.append(_outcome(result, run_id, "superseded", reason=reason))
            if now is not None and newer:
                plan.expected.append(now)
            continue
        if now is None and contract.on_source_delete == "remove":
            plan.outcomes.append(
                _outcome(result, run_id, "deleted", reason="the object was deleted before it was loaded")
            )
            continue
        is_live = (
            version.key in live
            and live[version.key].etag == version.etag
            and (live[version.key].last_modified == version.last_modified)
        )
        if result.status == "rejected":
            plan.outcomes.append(_outcome(result, run_id, "rejected"))
            if is_live and reprocess:
                plan.retract.append(version.key)  # the live version itself fails the new rules
            continue
        plan.jobs.append((result, staging.StageJob(result.processed_key or "", version)))
        if version.key in live:
            plan.retract.append(version.key)  # the replaced (or reprocessed) version's rows go
    if contract.on_source_delete == "remove":
        for key in deleted:
            if key in live and key not in plan.retract and current(key) is None:
                plan.retract.append(key)
    return plan


def _outcome(result: FileResult, run_id: str, status: ledger.Status, **changes: Any) -> ledger.Outcome:
    return ledger.Outcome(
        source_key=result.source_key,
        etag=result.etag,
        last_modified=result.raw.last_modified,
        status=status,
        run_id=run_id,
        size_bytes=result.size,
        version_id=result.version_id,
        reason=changes.pop("reason", result.reason),
        quarantined=result.quarantined,
        error=changes.pop("error", None),
        rows_read=result.rows_read if status in ("loaded", "rejected") else 0,
        rows_rejected=result.rows_rejected if status in ("loaded", "rejected") else 0,
        blank_lines=result.blank_lines,
        encoding=result.encoding,
        reinterpreted=dict(result.reinterpreted),
        notes=list(result.notes),
        warnings=list(result.warnings),
        processed_key=result.processed_key,
        rejected_key=result.rejected_key,
        validation_key=result.validation_key,
        **changes,
    )


def _file_report(o: ledger.Outcome, merged: MergeResult) -> dict[str, Any]:
    entry = asdict(o)
    entry["last_modified"] = o.last_modified.isoformat()
    entry["rows_removed"] = merged.removed_by_file.get(o.source_key, 0)
    return entry
