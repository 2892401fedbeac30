"""dlt (dlthub.com) against the pipeline: run by `.venv-dlt/bin/python`, dlt's own venv.

`python -m benchmarks.dlt_methods NAME CONFIG_JSON` prints one JSON line, as
benchmarks.methods does. dlt's pins conflict with Airflow's, so nothing here imports
Airflow: only dlt and the project's Airflow-free modules (contract, csv_reader,
cleaning, storage: pyarrow, pandas, pyyaml). Setup that is not part of the measured
path happens before the clock.

dlt runs with its defaults: Arrow tables are extracted to Parquet, normalized to
gzipped CSV (PostgreSQL's default, insert_values, is for Python rows) and COPYed into a
staging schema; the merge then delete-inserts into the target, keeping one row per
key. One normalize worker (dlt's default; NORMALIZE__WORKERS in the environment
overrides it): dlt extracts one file per table, so a second worker only adds memory.
dlt's working files go under the bench output folder, and telemetry is off.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from include.etl.contract.cleaning import clean_batch
from include.etl.contract.model import load_contract
from include.etl.contract.schema import output_schema
from include.etl.names import SOURCE_MODIFIED
from include.etl.reading.csv_reader import CsvFormatError, open_raw, read_csv
from include.etl.reading.storage import RAW_SUFFIXES, partition_prefix

CONTRACT = load_contract("orders")
KEY = CONTRACT.key[0]  # the orders contract has a one-column key
# What local_stack/s3.py uses for moto (any key is accepted).
S3_KEY, S3_REGION = "local", "us-east-1"


@contextmanager
def _dlt_context(cfg: dict[str, Any], name: str) -> Iterator[None]:
    """dlt with a fresh working folder under the bench output folder and telemetry off.

    dlt keeps pipelines' working folders in DLT_DATA_DIR and reads (and, even with
    telemetry off, writes an anonymous id to) its global folder, ~/.dlt or /var/dlt for
    root: a run context rooted in the working folder keeps all of that in there.
    """
    work = Path(cfg["clean_csv"]).parent / "dlt" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.update(
        {
            "DLT_DATA_DIR": str(work / "data"),
            "DLT_PROJECT_DIR": str(work),  # where dlt looks for .dlt/config.toml: none
            "RUNTIME__DLTHUB_TELEMETRY": "false",
        }
    )
    from dlt.common.runtime.run_context import RunContext, switched_run_context

    context = RunContext(str(work))
    context._global_dir = str(work / "global")  # the instance hook dlt provides for this
    with switched_run_context(context):
        yield


def _credentials(dsn: str) -> Any:
    from dlt.destinations.impl.postgres.configuration import PostgresCredentials

    url = urlsplit(dsn)
    creds = PostgresCredentials()
    creds.database = url.path.lstrip("/")
    creds.username = url.username
    # dlt requires a password; the local server trusts loopback connections and ignores it.
    creds.password = url.password or "unused"  # pragma: allowlist secret
    creds.host = url.hostname
    creds.port = url.port or 5432
    return creds


def _pipeline(cfg: dict[str, Any], dataset: str) -> Any:
    """A pipeline into a dataset (PostgreSQL schema) dropped first, with its staging dataset."""
    import dlt

    _sql(cfg["dsn"], f"DROP SCHEMA IF EXISTS {dataset} CASCADE", f"DROP SCHEMA IF EXISTS {dataset}_staging CASCADE")
    return dlt.pipeline(
        pipeline_name=dataset,
        destination=dlt.destinations.postgres(credentials=_credentials(cfg["dsn"])),
        dataset_name=dataset,
    )


def _sql(dsn: str, *statements: str) -> Any:
    """Run statements in one transaction; the first value of the last one's first row."""
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        return cur.fetchone()[0] if cur.description else None


def _file_formats(info: Any) -> list[str]:
    """The loader file formats of the load's table jobs (dlt's own state tables excluded)."""
    return sorted(
        {
            job.job_file_info.file_format
            for package in info.load_packages
            for job in package.jobs["completed_jobs"]
            if not job.job_file_info.table_name.startswith("_dlt")
        }
    )


def _steps(pipeline: Any) -> dict[str, float]:
    """Seconds of the run's extract, normalize and load steps."""
    return {
        f"{step.step}_seconds": round((step.finished_at - step.started_at).total_seconds(), 3)
        for step in pipeline.last_trace.steps
        if step.step in ("extract", "normalize", "load")
    }


def _clean_rows(cfg: dict[str, Any]) -> pa.Table:
    """bench.py's clean.csv (header-less, CLEAN_COLUMNS; COPY's NULL is an unquoted empty field) as Arrow."""
    schema = output_schema(CONTRACT).append(pa.field(SOURCE_MODIFIED, pa.timestamp("us", tz="UTC")))
    return pacsv.read_csv(
        cfg["clean_csv"],
        read_options=pacsv.ReadOptions(column_names=schema.names),
        convert_options=pacsv.ConvertOptions(
            column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    ).cast(schema)


def dlt_arrow(cfg: dict[str, Any]) -> dict[str, Any]:
    """dlt loading the already-clean rows (one Arrow table) with merge on the key."""
    table = _clean_rows(cfg)
    with _dlt_context(cfg, "dlt_arrow"):
        import dlt

        pipeline = _pipeline(cfg, "bench_dlt_arrow")
        orders = dlt.resource(table, name="orders", write_disposition="merge", primary_key=KEY)
        started = time.perf_counter()
        info = pipeline.run(orders)
        seconds = time.perf_counter() - started
        loaded = _sql(cfg["dsn"], "SELECT count(*) FROM bench_dlt_arrow.orders")
        if loaded != table.num_rows:
            raise RuntimeError(f"dlt_arrow loaded {loaded:,} rows, expected {table.num_rows:,}")
        return {
            "rows": table.num_rows,
            "unit": "clean rows",
            "seconds": seconds,
            **_steps(pipeline),
            "rows_differing_from_ours": _differing(cfg["dsn"], "bench_dlt_arrow.orders"),
            "file_formats": _file_formats(info),
        }


def _source_key(file_url: str) -> str:
    """`s3://raw/bench/raw/orders/...csv` -> the S3 key, as the pipeline records it."""
    return urlsplit(file_url).path.lstrip("/")


def dlt_csv(cfg: dict[str, Any]) -> dict[str, Any]:
    """dlt's filesystem source over all the raw CSVs in S3, cleaned by the project's code, merged on the key.

    Each file is read and cleaned as the pipeline's transform does (csv_reader.read_csv,
    cleaning.clean_batch) in a dlt transformer yielding Arrow tables; rejected rows are
    dropped (the pipeline also writes them to S3). All files, not the subset: at about
    half the pipeline's rate it is far from the slow paths.
    """
    with _dlt_context(cfg, "dlt_csv"):
        return _dlt_csv(cfg)


def _dlt_csv(cfg: dict[str, Any]) -> dict[str, Any]:
    import dlt
    from dlt.sources.credentials import AwsCredentials
    from dlt.sources.filesystem import filesystem

    credentials = AwsCredentials()
    credentials.aws_access_key_id = S3_KEY
    credentials.aws_secret_access_key = S3_KEY  # pragma: allowlist secret (moto accepts any key)
    credentials.region_name = S3_REGION
    credentials.endpoint_url = f"http://127.0.0.1:{cfg['s3_port']}"
    bucket_url = f"s3://raw/{partition_prefix(cfg['raw_prefix'], cfg['day'])}"
    stats = {"raw_rows": 0, "files": 0}
    keys: list[pa.Array] = []

    @dlt.transformer(
        name="orders",
        write_disposition="merge",
        primary_key=KEY,
        # Of a load's rows sharing a key keep the latest (the contract's latest_by); dlt sorts
        # by one column, the pipeline breaks ties by file, then line.
        columns={CONTRACT.latest_by: {"dedup_sort": "desc"}},
    )
    def cleaned_orders(items: list[Any]) -> Any:
        for item in items:
            if not item["file_name"].lower().endswith(RAW_SUFFIXES):
                continue
            key = _source_key(item["file_url"])
            opener = open_raw(
                lambda item=item: item.open(mode="rb", compression="disable"), key.lower().endswith(".gz")
            )
            try:
                stream = read_csv(opener, CONTRACT.csv, 16 << 20)
            except CsvFormatError:
                continue  # the pipeline rejects an unreadable file whole
            stats["files"] += 1
            mapping = CONTRACT.map_headers(stream.header)
            for batch in stream.batches:
                stats["raw_rows"] += batch.num_rows + len(batch.malformed)
                if mapping.missing:
                    continue  # a file without a required column is rejected whole
                clean = clean_batch(batch, stream.header, mapping, CONTRACT, key).clean
                keys.append(clean.column(KEY))
                yield clean

    pipeline = _pipeline(cfg, "bench_dlt_csv")
    files = filesystem(bucket_url=bucket_url, credentials=credentials, file_glob="*")
    started = time.perf_counter()
    info = pipeline.run(files | cleaned_orders)
    seconds = time.perf_counter() - started
    expected = pc.count_distinct(pa.chunked_array(keys, pa.string())).as_py() if keys else 0
    loaded = _sql(cfg["dsn"], "SELECT count(*) FROM bench_dlt_csv.orders")
    if loaded != expected:
        raise RuntimeError(f"dlt_csv loaded {loaded:,} rows, expected {expected:,} distinct keys")
    source = _sql(cfg["dsn"], "SELECT count(*) FROM bench_source.orders")
    if loaded != source:
        raise RuntimeError(f"dlt_csv loaded {loaded:,} rows, the pipeline {source:,}")
    return {
        "rows": stats["raw_rows"],
        "unit": "raw rows",
        "seconds": seconds,
        "files": stats["files"],
        **_steps(pipeline),
        "rows_loaded": loaded,
        "rows_differing_from_ours": _differing(cfg["dsn"], "bench_dlt_csv.orders"),
        "file_formats": _file_formats(info),
    }


def _differing(dsn: str, table: str) -> int:
    """Rows of the pipeline's table (bench_source.orders) that the table lacks or holds with other values."""
    columns = [c for c in CONTRACT.output_columns if c != KEY]
    s = ", ".join(f"s.{c}" for c in columns)
    d = ", ".join(f"d.{c}" for c in columns)
    return _sql(
        dsn,
        f"SELECT count(*) FROM bench_source.orders s LEFT JOIN {table} d USING ({KEY}) "
        f"WHERE d.{KEY} IS NULL OR ({s}) IS DISTINCT FROM ({d})",
    )


METHODS = {"dlt_arrow": dlt_arrow, "dlt_csv": dlt_csv}  # bench.py's DLT_METHODS

if __name__ == "__main__":
    print(json.dumps(METHODS[sys.argv[1]](json.loads(sys.argv[2]))))
