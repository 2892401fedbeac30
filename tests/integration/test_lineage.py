"""OpenLineage: a run reports its real inputs and outputs, named as OpenLineage's naming spec names them.

The DAG runs with the LocalExecutor through `airflow dags test --use-executor`, so each task is its own process
(in one process, as plain `dags test` runs them, Airflow's hook lineage collector carries one task's datasets
into the next task's events). The events go to a file transport, as on the local stack; the test reads them
and checks the graph against what the run really wrote: the ledger's keys, the objects in S3, the table.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from local_stack import airflow
from local_stack.demo.sample_orders import generate
from local_stack.stack import LocalStack
from tests.integration.conftest import fresh_database, isolated_env

pytestmark = pytest.mark.integration

DAG_ID = "orders_pipeline"
DAY = date(2026, 8, 3)
DATABASE = "lineage"
RAW, PROCESSED, REJECTED = "lineage/raw/orders", "lineage/processed/orders", "lineage/rejected/orders"

Dataset = tuple[str, str]  # (namespace, name)


def _names(datasets: list[dict[str, Any]]) -> set[Dataset]:
    return {(d["namespace"], d["name"]) for d in datasets}


@pytest.fixture(scope="module")
def run(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One run of a partition (two files with bad rows, one missing a required column); its events and ledger."""
    events_file: Path = tmp_path_factory.mktemp("lineage") / "events.jsonl"
    s3 = stack.s3()
    files = generate([DAY], files=2, rows_per_file=150, seed=8)[DAY.isoformat()]
    for name, body in files.items():
        s3.put_object(Bucket="raw", Key=f"{RAW}/dt={DAY}/{name}", Body=body)
    with fresh_database(stack, DATABASE) as dsn:
        env = isolated_env(stack, DATABASE, "lineage")
        env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        )
        try:
            airflow.start_services(stack.paths, stack.ports, env, services=("api-server",))
            conf = json.dumps({"day": DAY.isoformat()})
            result = airflow.run(["dags", "test", DAG_ID, "--use-executor", "--conf", conf], env)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        finally:
            airflow.stop_services(stack.paths)
        with psycopg.connect(dsn) as conn:
            ledger = conn.execute(
                "SELECT source_key, status, processed_key, rejected_key FROM etl.orders_file_ledger "
                "WHERE source_key LIKE %s",
                (f"{RAW}/%",),
            ).fetchall()
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
        yield {"events": events, "ledger": ledger, "files": files, "port": stack.ports.postgres}


def _completed(events: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"] == f"{DAG_ID}.{task}"]


def test_transforms_report_each_raw_object_and_what_they_wrote(run: dict[str, Any]) -> None:
    expected = {}
    for source, _status, processed, rejected in run["ledger"]:
        written = {("s3://processed", key) for key in (processed, rejected) if key}
        expected[("s3://raw", source)] = written
    assert len(expected) == len(run["files"]) == 3
    reported = {}
    for event in _completed(run["events"], "transform"):
        (raw,) = _names(event["inputs"])  # one file per mapped transform
        reported[raw] = _names(event["outputs"])
    assert reported == expected
    # The file without the required region column is rejected whole: rejected/ only, no Parquet.
    (legacy,) = [k for k in reported if k[1].endswith("legacy_export.csv")]
    assert reported[legacy] and all(name.startswith(f"{REJECTED}/dt={DAY}/") for _, name in reported[legacy])


def test_the_load_reports_the_processed_parquet_it_merged_into_the_table(run: dict[str, Any]) -> None:
    (load,) = _completed(run["events"], "load")
    loaded = {("s3://processed", processed) for _, status, processed, _ in run["ledger"] if status == "loaded"}
    assert len(loaded) == 2 and all(name.endswith(".csv.parquet") for _, name in loaded)
    assert _names(load["inputs"]) == loaded
    assert _names(load["outputs"]) == {(f"postgres://127.0.0.1:{run['port']}", f"{DATABASE}.analytics.orders")}


def test_the_graph_runs_from_raw_objects_to_the_table(run: dict[str, Any]) -> None:
    """Every raw object that loaded reaches the table through a dataset one task wrote and the next read."""
    written_by: dict[Dataset, set[str]] = defaultdict(set)
    read_by: dict[Dataset, set[str]] = defaultdict(set)
    for event in run["events"]:
        if event.get("eventType") != "COMPLETE" or "." not in event["job"]["name"]:
            continue
        task = event["job"]["name"].split(".", 1)[1]
        for d in _names(event.get("inputs", [])):
            read_by[d].add(task)
        for d in _names(event.get("outputs", [])):
            written_by[d].add(task)
    table = (f"postgres://127.0.0.1:{run['port']}", f"{DATABASE}.analytics.orders")
    assert written_by[table] == {"load"}
    for source, status, processed, _ in run["ledger"]:
        if status == "loaded":
            assert "transform" in read_by[("s3://raw", source)]
            assert written_by[("s3://processed", processed)] == {"transform"}
            assert {"load", "validation_report"} <= read_by[("s3://processed", processed)]


def test_tasks_that_touch_no_object_report_none(run: dict[str, Any]) -> None:
    """One task per process: no task's events carry another task's datasets."""
    for task in ("list_files", "table_changed", "notify"):
        events = _completed(run["events"], task)
        assert events, f"no COMPLETE event of {task}"
        assert all(not e.get("inputs") and not e.get("outputs") for e in events), task
