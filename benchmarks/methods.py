"""One benchmark method per function, each run in its own process by bench.py.

`python -m benchmarks.methods NAME CONFIG_JSON` prints one JSON line: rows, seconds and
what the rows are. Setup that is not part of the measured path happens before the clock.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from include.etl.contract.cleaning import clean_batch
from include.etl.contract.model import load_contract
from include.etl.contract.results import FileResult
from include.etl.contract.transform import transform_file
from include.etl.loading.load import load_files, prepare_tables
from include.etl.names import SOURCE_KEY, SOURCE_LINE, SOURCE_MODIFIED, table_ident
from include.etl.reading import storage
from include.etl.reading.csv_reader import RawBatch
from include.etl.settings import DatasetSettings
from local_stack.s3 import client

CONTRACT = load_contract("orders")
KEY = CONTRACT.key[0]
COLUMNS = [*CONTRACT.output_columns, SOURCE_KEY, SOURCE_LINE]


def settings(cfg: dict[str, Any]) -> DatasetSettings:
    return DatasetSettings(
        dataset="orders",
        raw_prefix=cfg["raw_prefix"],
        processed_prefix=cfg["processed_prefix"],
        rejected_prefix=cfg["rejected_prefix"],
    )


def raw_objects(cfg: dict[str, Any]) -> list[storage.RawObject]:
    return storage.list_partition(
        client(cfg["s3_port"]), "raw", storage.partition_prefix(cfg["raw_prefix"], cfg["day"])
    )[0]


def _transform_one(args: tuple[dict[str, Any], storage.RawFile]) -> dict[str, Any]:
    cfg, raw = args
    result = transform_file(client(cfg["s3_port"]), storage.RawObject.from_dict(raw), CONTRACT, settings(cfg))
    return result.to_dict()


def ours(cfg: dict[str, Any]) -> dict[str, Any]:
    """The DAG's own code path: transform files in parallel (as mapped tasks), then one load."""
    objects = raw_objects(cfg)
    started = time.perf_counter()
    with ProcessPoolExecutor(cfg["workers"]) as pool:
        results = list(pool.map(_transform_one, [(cfg, o.to_dict()) for o in objects]))
    transformed = time.perf_counter()
    with psycopg.connect(cfg["dsn"]) as conn:
        report = load_files(
            conn,
            client(cfg["s3_port"]),
            CONTRACT,
            settings(cfg),
            [FileResult.from_dict(r) for r in results],
            "bench",
            connect=lambda: psycopg.connect(cfg["dsn"]),
        )
        seconds = time.perf_counter() - started
        checksum = table_checksum(conn)
    return {
        "rows": sum(r["rows_read"] for r in results),
        "unit": "raw rows",
        "seconds": seconds,
        "transform_seconds": transformed - started,
        "load_seconds": seconds - (transformed - started),
        "rows_loaded": sum(f["rows_loaded"] for f in report.files),
        "load_phase_seconds": report.seconds,
        "table_checksum": checksum,
    }


def table_checksum(conn: psycopg.Connection) -> str:
    """md5 of the loaded rows in key order (every column but the upload and load times)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    query = sql.SQL("SELECT md5(string_agg(md5(row({})::text), '' ORDER BY {})) FROM {}").format(
        cols, sql.Identifier(KEY), table_ident(CONTRACT.table)
    )
    return conn.execute(query).fetchone()[0]


def _empty_table(conn: psycopg.Connection, schema: str) -> str:
    table = f"{schema}.orders"
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.commit()
    prepare_tables(conn, CONTRACT.model_copy(update={"table": table, "ledger_table": f"{schema}.ledger"}))
    return table


def copy_limit(cfg: dict[str, Any]) -> dict[str, Any]:
    """Bare COPY FROM STDIN of the already-clean rows into an identical, empty keyed table."""
    with psycopg.connect(cfg["dsn"]) as conn:
        table = _empty_table(conn, "bench_copy")
        cols = [*COLUMNS, SOURCE_MODIFIED]
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            table_ident(table), sql.SQL(", ").join(map(sql.Identifier, cols))
        )
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(copy_sql) as copy, open(cfg["clean_csv"], "rb") as fh:
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
        conn.commit()
        seconds = time.perf_counter() - started
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table_ident(table))).fetchone()[0]
    return {"rows": rows, "unit": "clean rows", "seconds": seconds}


def _subset(cfg: dict[str, Any]) -> list[storage.RawObject]:
    chosen, rows = [], 0
    for o in raw_objects(cfg):
        if rows >= cfg["subset_rows"]:
            break
        chosen.append(o)
        rows += cfg["rows_per_file"]
    return chosen


def to_sql(cfg: dict[str, Any]) -> dict[str, Any]:
    """The tutorial path: pandas read_csv + the same cleaning + DataFrame.to_sql (a subset)."""
    import pandas as pd
    from sqlalchemy import create_engine

    with psycopg.connect(cfg["dsn"]) as conn:
        _empty_table(conn, "bench_tosql")
    engine = create_engine(cfg["dsn"].replace("postgresql://", "postgresql+psycopg://"))
    s3 = client(cfg["s3_port"])
    started = time.perf_counter()
    rows, frames = 0, []
    for o in _subset(cfg):
        df = pd.read_csv(
            io.BytesIO(s3.get_object(Bucket="raw", Key=o.key)["Body"].read()), dtype=str, keep_default_na=False
        )
        rows += len(df)
        header = list(df.columns)
        arrays = [pa.array(df[c], pa.string()) for c in header]  # Arrow-backed pandas strings come chunked
        columns = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
        batch = RawBatch(columns, pa.array(range(2, len(df) + 2)).to_numpy())
        cleaned = clean_batch(batch, header, CONTRACT.map_headers(header), CONTRACT, o.key)
        frames.append(cleaned.clean.to_pandas())
    frame = pd.concat(frames).drop_duplicates(subset=[KEY], keep="last")
    for column in ("unit_price", "total_price"):  # Decimal objects would be bound as text
        frame[column] = frame[column].astype(float)
    frame[SOURCE_MODIFIED] = pd.Timestamp("2026-01-15", tz="UTC")
    frame.to_sql("orders", engine, schema="bench_tosql", if_exists="append", index=False, chunksize=10_000)
    return {"rows": rows, "unit": "raw rows", "seconds": time.perf_counter() - started}


def insert_rows(cfg: dict[str, Any]) -> dict[str, Any]:
    """Airflow's S3ToSqlOperator path: DbApiHook.insert_rows in 1,000-row commits (a subset)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    with psycopg.connect(cfg["dsn"]) as conn:
        table = _empty_table(conn, "bench_insert")
        cur = conn.execute(
            sql.SQL("SELECT {} FROM bench_source.orders LIMIT %s").format(
                sql.SQL(", ").join(map(sql.Identifier, [*COLUMNS, SOURCE_MODIFIED]))
            ),
            (cfg["subset_rows"],),
        )
        rows = cur.fetchall()
    hook = PostgresHook(postgres_conn_id="bench")
    started = time.perf_counter()
    hook.insert_rows(table, rows, target_fields=[*COLUMNS, SOURCE_MODIFIED], commit_every=1000)
    return {"rows": len(rows), "unit": "clean rows", "seconds": time.perf_counter() - started}


def _dags_test(cfg: dict[str, Any], airflow_env: dict[str, str]) -> float:
    """One `airflow dags test --use-executor` of the bench day; its wall seconds."""
    env = {**os.environ, **airflow_env}
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    started = time.perf_counter()
    result = subprocess.run(
        [airflow, "dags", "test", "orders_pipeline", "--use-executor", "--conf", json.dumps({"day": cfg["day"]})],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    return seconds


def _task_stats(cfg: dict[str, Any]) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per task of the latest run: instances, how many were skipped, median seconds running, when the first
    instance started and the last ended (seconds after the run started); and the transform instances per host
    (with the CeleryExecutor: per worker)."""
    dsn = cfg["airflow_env"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg://", "postgresql://")
    latest = "(SELECT run_id FROM dag_run WHERE dag_id = 'orders_pipeline' ORDER BY id DESC LIMIT 1)"
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"""
            SELECT ti.task_id, count(*), count(*) FILTER (WHERE ti.state = 'skipped'),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ti.end_date - ti.start_date)),
                   extract(epoch FROM min(ti.start_date) - min(r.start_date)),
                   extract(epoch FROM max(ti.end_date) - min(r.start_date))
            FROM task_instance ti JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id
            WHERE ti.run_id = {latest} AND ti.start_date IS NOT NULL
            GROUP BY ti.task_id
            """
        ).fetchall()
        hosts = conn.execute(
            f"SELECT hostname, count(*) FROM task_instance WHERE run_id = {latest} AND task_id = 'transform' "
            "AND hostname IS NOT NULL AND hostname <> '' GROUP BY hostname"
        ).fetchall()
    stats = {
        t: {
            "instances": n,
            "skipped": skipped,
            "median_s": round(run or 0, 2),
            "first_start_s": round(float(first or 0), 2),
            "last_end_s": round(float(last or 0), 2),
        }
        for t, n, skipped, run, first, last in rows
    }
    return stats, {host: n for host, n in hosts}


def dag(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same through Airflow: `airflow dags test --use-executor` (LocalExecutor, parallelism = cores).

    Then the same day again, which finds no new file: the no-op run.
    """
    return _dag_runs(cfg, cfg["airflow_env"])


def dag_celery(cfg: dict[str, Any]) -> dict[str, Any]:
    """`dag` on the CeleryExecutor: Redis as broker, the bench's Celery workers (as many task slots in all as
    the LocalExecutor's parallelism), each task sent through the broker to a worker."""
    return _dag_runs(cfg, cfg["celery_env"])


def _dag_runs(cfg: dict[str, Any], airflow_env: dict[str, str]) -> dict[str, Any]:
    seconds = _dags_test(cfg, airflow_env)
    tasks, hosts = _task_stats(cfg)
    noop_seconds = _dags_test(cfg, airflow_env)
    with psycopg.connect(cfg["dsn"]) as conn:
        rows, files = conn.execute(
            "SELECT coalesce(sum(rows_read), 0), count(*) FROM etl.orders_file_ledger WHERE status = 'loaded'"
        ).fetchone()
        checksum = table_checksum(conn)
    return {
        "rows": int(rows),
        "unit": "raw rows",
        "seconds": seconds,
        "files": files,
        "table_checksum": checksum,
        "tasks": tasks,
        "transforms_per_host": hosts,
        "noop_seconds": noop_seconds,
        "noop_tasks": _task_stats(cfg)[0],
    }


def transform_memory(cfg: dict[str, Any]) -> dict[str, Any]:
    """One file through the transform alone (for peak RSS against file size)."""
    o = next(o for o in raw_objects(cfg) if o.key.endswith(cfg["file"]))
    started = time.perf_counter()
    result = _transform_one((cfg, o.to_dict()))
    return {"rows": result["rows_read"], "unit": "raw rows", "seconds": time.perf_counter() - started}


METHODS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ours": ours,
    "copy_limit": copy_limit,
    "to_sql": to_sql,
    "insert_rows": insert_rows,
    "dag": dag,
    "dag_celery": dag_celery,
    "transform_memory": transform_memory,
}

if __name__ == "__main__":
    print(json.dumps(METHODS[sys.argv[1]](json.loads(sys.argv[2]))))
