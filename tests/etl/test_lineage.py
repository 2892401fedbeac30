"""Lineage: which datasets each task reports, and the names OpenLineage gives them (through Airflow's collector)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from include.etl.contract.results import FileResult
from include.etl.reading.storage import RawObject
from include.etl.running import lineage
from include.etl.running.lineage import Lineage, S3Object, Table
from include.etl.settings import DatasetSettings

SETTINGS = DatasetSettings(dataset="orders")
DAY = "raw/orders/dt=2026-11-24"


def _result(name: str, **values: Any) -> FileResult:
    obj = RawObject(f"{DAY}/{name}", "etag", 10, datetime(2026, 11, 24, tzinfo=UTC))
    return FileResult.for_version(obj, **values)


def test_a_transform_reports_what_it_read_and_every_object_it_wrote() -> None:
    results = [
        _result("a.csv", processed_key="processed/orders/dt=2026-11-24/a.csv.parquet"),
        _result(
            "b.csv",
            processed_key="processed/orders/dt=2026-11-24/b.csv.parquet",
            rejected_key="rejected/orders/dt=2026-11-24/b.csv.rejected.csv",
        ),
        _result("c.csv", status="rejected", rejected_key="rejected/orders/dt=2026-11-24/c.csv"),
        _result(
            "d.csv",
            status="rejected",
            quarantined=True,
            rejected_key="rejected/orders/dt=2026-11-24/d.csv.rejected.csv",
        ),
        _result("e.csv", status="superseded"),  # changed while read: nothing read to the end, nothing written
        _result("f.csv", status="failed", error="boom"),
    ]
    got = lineage.transformed(results, SETTINGS)
    assert [i.key for i in got.inputs] == [f"{DAY}/{n}.csv" for n in "abcd"]
    assert {o.key for o in got.outputs} == {
        "processed/orders/dt=2026-11-24/a.csv.parquet",
        "processed/orders/dt=2026-11-24/b.csv.parquet",
        "rejected/orders/dt=2026-11-24/b.csv.rejected.csv",
        "rejected/orders/dt=2026-11-24/c.csv",
        "rejected/orders/dt=2026-11-24/d.csv.rejected.csv",
        "rejected/orders/dt=2026-11-24/d.csv.parquet",  # the quarantined file's Parquet
    }
    assert {o.bucket for o in got.outputs} == {"processed"}


def test_the_load_reports_the_parquet_of_loaded_files_and_the_table_it_wrote() -> None:
    table = Table("db.example.com", 5432, "warehouse", "analytics.orders")
    files = [
        {"status": "loaded", "processed_key": "processed/orders/dt=2026-11-24/a.csv.parquet"},
        {"status": "rejected", "processed_key": None},
        {"status": "failed", "processed_key": "processed/orders/dt=2026-11-24/c.csv.parquet"},
    ]
    got = lineage.loaded(files, SETTINGS, table, changed=True)
    assert got.inputs == [S3Object("processed", "processed/orders/dt=2026-11-24/a.csv.parquet")]
    assert got.outputs == [table]
    # A no-op load read nothing and wrote nothing; a deletion alone still wrote the table.
    assert lineage.loaded([], SETTINGS, table, changed=False) == Lineage()
    assert lineage.loaded([], SETTINGS, table, changed=True).outputs == [table]


def test_past_the_collectors_limit_objects_are_reported_as_their_folders() -> None:
    objects = [
        S3Object("processed", f"processed/orders/dt=2026-11-{d}/f{n}.parquet") for d in (24, 25) for n in range(3)
    ]
    assert lineage.collapse(objects + objects[:2], 10) == objects
    assert lineage.collapse(objects, 5) == [
        S3Object("processed", "processed/orders/dt=2026-11-24"),
        S3Object("processed", "processed/orders/dt=2026-11-25"),
    ]


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Airflow's own hook lineage collector (as with a lineage reader such as OpenLineage registered)."""
    from airflow.sdk.lineage import HookLineageCollector

    collected = HookLineageCollector()
    monkeypatch.setattr("airflow.providers.common.compat.lineage.hook.get_hook_lineage_collector", lambda: collected)
    return collected


def test_reported_datasets_get_openlineage_names(collector: Any) -> None:
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    s3_hook, pg_hook = object(), object()
    table = Table("db.example.com", 6432, "warehouse", "analytics.orders")
    raw = S3Object("raw", f"{DAY}/orders 1.csv")
    lineage.report(lambda: Lineage([raw], [table]), s3_hook, pg_hook)
    (given,), (taken,) = collector.collected_assets.inputs, collector.collected_assets.outputs
    assert given.context is s3_hook and taken.context is pg_hook
    source, target = translate_airflow_asset(given.asset, s3_hook), translate_airflow_asset(taken.asset, pg_hook)
    assert (source.namespace, source.name) == ("s3://raw", f"{DAY}/orders 1.csv")
    assert (target.namespace, target.name) == ("postgres://db.example.com:6432", "warehouse.analytics.orders")


def test_lineage_never_fails_the_task(collector: Any, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Lineage:
        raise RuntimeError("no connection")

    lineage.report(broken, object())
    assert "could not report lineage" in caplog.text
    assert not collector.has_collected
