"""Email rendering: the run summary (per-file reconciliation), the parked-file alert and the failure alert."""

from __future__ import annotations

import re
from html import unescape
from types import SimpleNamespace
from typing import Any

import pytest

from include.etl.contract.model import Contract
from include.etl.running.notify import (
    describe_failure,
    render_failure_html,
    render_parked_html,
    render_summary_html,
    summary_subject,
    task_files,
    totals,
)
from include.etl.settings import DatasetSettings

DAG = "orders_pipeline"
DAY = "2026-01-02"
RUN = "manual__2026-01-03T00:00:00+00:00"
SETTINGS = DatasetSettings(dataset="orders", max_attempts=3)


def _file(key: str, read: int, loaded: int, rejected: int, duplicate: int, **extra: Any) -> dict[str, Any]:
    return {
        "source_key": f"raw/orders/dt={DAY}/{key}",
        "status": "loaded",
        "rows_read": read,
        "rows_loaded": loaded,
        "rows_rejected": rejected,
        "rows_duplicate": duplicate,
        **extra,
    }


SUMMARY: dict[str, Any] = {
    "day": DAY,
    "files": [
        _file(
            "orders_01.csv",
            200,
            190,
            7,
            3,
            extra_columns=["notes", "gift"],
            reinterpreted={"rows decoded as cp1252": 4},
        ),
        _file(
            "orders_02.csv", 150, 150, 0, 0, warnings=["values_to_be_between (unit_price) max=100000: 1 of 150 rows"]
        ),
        _file("legacy.csv", 20, 0, 20, 0, status="rejected", reason="missing required column(s): region"),
        _file("broken.csv", 0, 0, 0, 0, status="failed", attempts=1, error="ValueError: boom"),
        _file("stuck.csv", 0, 0, 0, 0, status="parked", attempts=3, error="ValueError: again", parked=True),
        _file("old.csv", 0, 0, 0, 0, status="superseded", reason="a newer version of the object arrived"),
    ],
    "skipped": [f"raw/orders/dt={DAY}/orders_00.csv"],
    "rows_inserted": 180,
    "rows_updated": 10,
    "rows_removed": 2,
    "parked": [f"raw/orders/dt={DAY}/stuck.csv", "raw/orders/dt=2025-12-01/ancient.csv"],
    "deleted": [f"raw/orders/dt={DAY}/gone.csv"],
    "on_source_delete": "keep",
    "schema_changes": ["added column coupon text"],
}
GX = [
    {"source_key": f"raw/orders/dt={DAY}/orders_01.csv", "success": True, "failures": [], "report_key": "r1"},
    {
        "source_key": f"raw/orders/dt={DAY}/orders_02.csv",
        "success": False,
        "failures": [
            {"expectation": "expect_column_values_to_be_between", "column": "unit_price", "unexpected_count": 1}
        ],
        "report_key": "processed/orders/dt=2026-01-02/orders_02.csv.validation.json",
    },
]


def _rows(html: str) -> list[list[str]]:
    """The summary table as text cells, header row included."""
    return [
        [unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", tr)] for tr in re.findall(r"<tr>(.*?)</tr>", html)
    ]


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


def _html(contract: Contract, summary: dict[str, Any] = SUMMARY, gx: list[dict[str, Any]] = GX) -> str:
    return render_summary_html(DAG, RUN, summary, contract, SETTINGS, gx)


def test_summary_table_has_a_row_per_file_with_counts_and_notes(contract: Contract) -> None:
    rows = _rows(_html(contract))
    assert rows[0] == ["File", "Status", "Read", "Loaded", "Rejected", "Duplicates", "Note"]
    by_file = {r[0].rsplit("/", 1)[-1]: r for r in rows[1:]}
    assert by_file["orders_01.csv"][1:6] == ["loaded", "200", "190", "7", "3"]
    assert "reinterpreted: 4 rows decoded as cp1252" in by_file["orders_01.csv"][6]
    assert "ignored columns: notes, gift" in by_file["orders_01.csv"][6]
    assert "warning: values_to_be_between (unit_price)" in by_file["orders_02.csv"][6]
    assert by_file["legacy.csv"][1] == "rejected (whole file)"
    assert "missing required column(s): region" in by_file["legacy.csv"][6]
    assert "the previous version of this file, if any, stays loaded" in by_file["legacy.csv"][6]
    assert by_file["broken.csv"][1] == "failed"
    assert by_file["broken.csv"][6] == "attempt 1 of 3: ValueError: boom; the next run tries it again"
    assert by_file["stuck.csv"][1] == "PARKED"
    assert "attempt 3 of 3: ValueError: again; parked: retry or skip it" in by_file["stuck.csv"][6]
    assert by_file["old.csv"][1] == "superseded"
    assert by_file["orders_00.csv"][1:] == ["already loaded", "", "", "", "", "another run loaded this version"]


def test_summary_totals_changes_deletions_validation_and_parked_files(contract: Contract) -> None:
    text = _text(_html(contract))
    assert "Totals: read 370, loaded 340, rejected 27, duplicates 3" in text
    assert "new rows 180, updated rows 10, removed rows 2" in text
    assert "2 file(s) failed: raw/orders/dt=2026-01-02/broken.csv, raw/orders/dt=2026-01-02/stuck.csv" in text
    assert "Schema changes applied to analytics.orders (from the contract):added column coupon text" in text
    assert "Raw objects deleted from S3: their rows are kept (on_source_delete: keep)." in text
    assert "Great Expectations: 1 of 2 processed file(s) met the contract's suite." in text
    assert "orders_02.csv: expect_column_values_to_be_between(unit_price): 1 unexpected" in text
    # Every run lists every parked file, with the commands to retry or skip it.
    assert "2 parked file(s) wait for you" in text
    assert "raw/orders/dt=2025-12-01/ancient.csv" in text
    assert 'airflow dags trigger orders_pipeline -c \'{"retry_files": [' in text
    assert '"skip_files": [' in text


def test_summary_without_failures_has_no_failure_banner(contract: Contract) -> None:
    calm = {"day": DAY, "files": [SUMMARY["files"][1]]}
    html = _html(contract, calm, [])
    assert "failed" not in _text(html)
    assert "parked" not in _text(html)
    assert "no processed file to validate in this run" in _text(html)


def test_summary_of_an_empty_run(contract: Contract) -> None:
    text = _text(_html(contract, {"day": DAY}, []))
    assert "Totals: read 0, loaded 0, rejected 0, duplicates 0; new rows 0, updated rows 0, removed rows 0" in text


def test_summary_escapes_file_names_and_reasons(contract: Contract) -> None:
    summary = {"day": DAY, "files": [_file("<b>x</b>.csv", 1, 0, 1, 0, status="rejected", reason="<script>")]}
    html = _html(contract, summary, [])
    assert "<script>" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize(
    ("summary", "subject"),
    [
        ({"files": []}, "[orders_pipeline] 2026-01-02: load succeeded"),
        (
            {"files": [{"source_key": "a", "status": "failed"}]},
            "[orders_pipeline] 2026-01-02: load FAILED for 1 file(s)",
        ),
        (
            {"files": [{"source_key": "a", "status": "parked"}], "parked": ["a"]},
            "[orders_pipeline] 2026-01-02: load FAILED for 1 file(s); 1 file(s) parked",
        ),
        ({"files": [], "parked": ["a", "b"]}, "[orders_pipeline] 2026-01-02: load succeeded; 2 file(s) parked"),
    ],
)
def test_summary_subject(summary: dict[str, Any], subject: str) -> None:
    assert summary_subject(DAG, DAY, summary) == subject


def test_totals_count_loaded_and_rejected_files_only() -> None:
    assert totals(SUMMARY) == {"rows_read": 370, "rows_loaded": 340, "rows_rejected": 27, "rows_duplicate": 3}


def test_parked_alert_names_files_errors_and_what_to_do() -> None:
    parked = [f for f in SUMMARY["files"] if f.get("parked")]
    text = _text(render_parked_html(DAG, RUN, parked, SETTINGS))
    assert "parked these files after 3 failed attempts" in text
    assert "raw/orders/dt=2026-01-02/stuck.csv: failed 3 time(s); last error: ValueError: again" in text
    assert "retry_files" in text and "skip_files" in text


def test_failure_alert_names_the_files_and_links_the_log() -> None:
    html = render_failure_html(
        DAG, "transform[a.csv (+1 more)]", RUN, "ValueError: <bad>", ["k1", "k2"], "http://x/log?a=1&b=2"
    )
    text = _text(html)
    assert "task transform[a.csv (+1 more)] failed" in text
    assert "ValueError: <bad>" in text and "<bad>" not in html
    assert "File(s) of this task:k1k2" in text
    assert "href='http://x/log?a=1&amp;b=2'" in html
    assert "href" not in render_failure_html(DAG, "load", RUN, "boom", [], None)


def test_a_killed_task_is_described_not_as_nonetype() -> None:
    ti = SimpleNamespace(state="failed")
    text = describe_failure({"ti": ti, "exception": None})
    assert "NoneType" not in text
    assert "killed" in text and "Last state: failed" in text
    assert describe_failure({"exception": ValueError("x")}) == "ValueError: x"


def test_task_files_of_a_mapped_transform() -> None:
    groups = [[{"key": "a.csv"}], [{"key": "b.csv"}, {"key": "c.csv"}]]
    ti = SimpleNamespace(map_index=1, xcom_pull=lambda task_ids: groups)
    assert task_files({"ti": ti}) == ["b.csv", "c.csv"]
    assert task_files({"ti": SimpleNamespace(map_index=-1)}) == []

    def broken(task_ids: str) -> Any:
        raise RuntimeError("no xcom here")

    assert task_files({"ti": SimpleNamespace(map_index=0, xcom_pull=broken)}) == []
