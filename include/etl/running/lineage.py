"""Lineage: the datasets each task really read and wrote, reported to Airflow's hook lineage collector.

The pipeline reads and writes through raw boto3 and psycopg clients (streamed reads, uploads, COPY), which
report nothing themselves, so the tasks report what they touched here:

- `transform`: the raw objects it read -> the processed Parquet, the rejected rows (or the rejected copy of an
  unreadable file) and a quarantined file's Parquet it wrote;
- `validation_report`: the processed Parquet it validated -> the validation report beside it;
- `load`: the processed Parquet it merged -> the table.

With the OpenLineage provider installed and configured, its listener turns them into the task's OpenLineage
events, with the names OpenLineage's naming spec gives: an S3 object is namespace `s3://<bucket>`, name `<key>`;
the table is namespace `postgres://<host>:<port>`, name `<database>.<schema>.<table>`. Without a lineage reader
(no OpenLineage) the collector drops everything, and lineage never fails a task.

Airflow's collector keeps at most `[lineage] max_assets_per_collector` (100) inputs and as many outputs per task
process: past that, the objects are reported as their folders (`s3://processed/processed/orders/dt=2026-11-24`).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from include.etl.contract.results import FileResult
from include.etl.settings import DatasetSettings

log = logging.getLogger(__name__)
DEFAULT_LIMIT = 100  # Airflow's [lineage] max_assets_per_collector


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    def folder(self) -> S3Object:
        return S3Object(self.bucket, posixpath.dirname(self.key) or "/")


@dataclass(frozen=True)
class Table:
    """A PostgreSQL table as OpenLineage names it: the server, the database, `schema.table`."""

    host: str
    port: int
    database: str
    table: str  # schema.table

    @property
    def schema_and_name(self) -> tuple[str, str]:
        schema, _, name = self.table.rpartition(".")
        return schema or "public", name


@dataclass
class Lineage:
    """What one task read (inputs) and wrote (outputs)."""

    inputs: list[S3Object | Table] = field(default_factory=list)
    outputs: list[S3Object | Table] = field(default_factory=list)


def transformed(results: Sequence[FileResult], settings: DatasetSettings) -> Lineage:
    """The transform's lineage: each raw version it read, each object it wrote for it."""
    from include.etl.contract.transform import ZoneKeys

    lineage = Lineage()
    for r in results:
        if r.status not in ("processed", "rejected"):  # superseded or failed: nothing was read to the end
            continue
        lineage.inputs.append(S3Object(settings.raw_bucket, r.source_key))
        written = [r.processed_key, r.rejected_key]
        if r.quarantined:
            written.append(ZoneKeys(r.source_key, settings).quarantined)
        lineage.outputs += [S3Object(settings.processed_bucket, key) for key in written if key]
    return lineage


def validated(reports: Iterable[dict[str, Any]], results: Sequence[FileResult], settings: DatasetSettings) -> Lineage:
    """The validation's lineage: each processed file it read -> the report it stored beside it."""
    processed = {r.source_key: r.processed_key for r in results if r.processed_key}
    lineage = Lineage()
    for report in reports:
        source, written = processed.get(report.get("source_key") or ""), report.get("report_key")
        if source and written:
            lineage.inputs.append(S3Object(settings.processed_bucket, source))
            lineage.outputs.append(S3Object(settings.processed_bucket, written))
    return lineage


def loaded(files: Iterable[dict[str, Any]], settings: DatasetSettings, table: Table, changed: bool) -> Lineage:
    """The load's lineage: the processed Parquet of every file it merged -> the table (when it wrote any)."""
    inputs: list[S3Object | Table] = [
        S3Object(settings.processed_bucket, f["processed_key"])
        for f in files
        if f.get("status") == "loaded" and f.get("processed_key")
    ]
    return Lineage(inputs, [table] if inputs or changed else [])


def table_of(hook: Any, conn_id: str, table: str) -> Table:
    """The table on the server an Airflow connection points at (host, port, database in `schema`)."""
    conn = hook.get_connection(conn_id)
    return Table(conn.host or "localhost", int(conn.port or 5432), conn.schema or "postgres", table)


def collapse(datasets: Sequence[S3Object | Table], limit: int) -> list[S3Object | Table]:
    """The datasets, once each; S3 objects as their folders when there are more than `limit`."""
    unique = list(dict.fromkeys(datasets))
    if len(unique) <= limit:
        return unique
    return list(dict.fromkeys(d.folder() if isinstance(d, S3Object) else d for d in unique))


def _asset(dataset: S3Object | Table) -> tuple[str, dict[str, Any]]:
    """The asset factory's scheme and arguments (the amazon and postgres providers register them)."""
    if isinstance(dataset, S3Object):
        return "s3", {"bucket": dataset.bucket, "key": dataset.key}
    schema, name = dataset.schema_and_name
    kwargs = {"host": dataset.host, "port": dataset.port, "database": dataset.database}
    return "postgres", {**kwargs, "schema": schema, "table": name}


def report(build: Callable[[], Lineage], s3_hook: Any, postgres_hook: Any = None) -> None:
    """Hand a task's datasets (`build()`) to the hook lineage collector, each with the hook it was reached through."""
    try:
        from airflow.configuration import conf
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        lineage = build()
        collector = get_hook_lineage_collector()
        limit = conf.getint("lineage", "max_assets_per_collector", fallback=DEFAULT_LIMIT)
        for datasets, add in (
            (lineage.inputs, collector.add_input_asset),
            (lineage.outputs, collector.add_output_asset),
        ):
            for dataset in collapse(datasets, limit):
                scheme, kwargs = _asset(dataset)
                add(context=s3_hook if scheme == "s3" else postgres_hook or s3_hook, scheme=scheme, asset_kwargs=kwargs)
    except Exception:  # lineage is a report: it never fails the data's task
        log.warning("could not report lineage", exc_info=True)


def forget_collected() -> None:
    """Empty Airflow's hook lineage collector, as a new task process starts with it empty.

    There is one collector per process. Where several tasks run in one process (`dag.test()`, `airflow dags test`,
    several runs in a row), what earlier tasks reported stays in it, and every later task's lineage events carry
    it again (and hash it again: a run took three to four times as long after a few hundred tasks). Call it
    before each run there.
    """
    from airflow.sdk.lineage import get_hook_lineage_collector

    collector = get_hook_lineage_collector()
    for collected in ("_inputs", "_outputs", "_input_counts", "_output_counts", "_extra", "_extra_counts"):
        getattr(collector, collected, {}).clear()
