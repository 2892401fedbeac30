"""Email rendering: the run summary (per-file reconciliation) and the failure alert."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest

from include.etl.notify import render_failure_html, render_summary_html, summary_subject, totals

DAG = "orders_pipeline"
DAY = "2026-01-02"
RUN = "manual__2026-01-03T00:00:00+00:00"
TABLE = "analytics.orders"


def _file(key: str, read: int, loaded: int, rejected: int, duplicate: int, **extra: Any) -> dict[str, Any]:
    return {
        "source_key": key,
        "status": "processed",
        "rows_read": read,
        "rows_loaded": loaded,
        "rows_rejected": rejected,
        "rows_duplicate": duplicate,
        **extra,
    }


REPORT: dict[str, Any] = {
    "files": [
        _file("raw/orders/dt=2026-01-02/orders_01.csv", 200, 190, 7, 3, extra_columns=["notes", "gift"]),
        _file("raw/orders/dt=2026-01-02/orders_02.csv", 150, 150, 0, 0),
        _file(
            "raw/orders/dt=2026-01-02/legacy.csv",
            20,
            0,
            20,
            0,
            status="rejected",
            reason="missing required column(s): region",
        ),
    ],
    "failed_files": ["raw/orders/dt=2026-01-02/broken.csv"],
    "skipped": ["raw/orders/dt=2026-01-02/orders_00.csv"],
    "rows_inserted": 180,
    "rows_updated": 10,
}


def _rows(html: str) -> list[list[str]]:
    """The summary table as text cells, header row included."""
    return [
        [unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", tr)] for tr in re.findall(r"<tr>(.*?)</tr>", html)
    ]


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


def test_summary_table_has_a_row_per_file_with_counts() -> None:
    rows = _rows(render_summary_html(DAG, RUN, DAY, REPORT, TABLE))
    assert rows == [
        ["File", "Status", "Read", "Loaded", "Rejected", "Duplicates", "Note"],
        ["raw/orders/dt=2026-01-02/orders_01.csv", "processed", "200", "190", "7", "3", "ignored columns: notes, gift"],
        ["raw/orders/dt=2026-01-02/orders_02.csv", "processed", "150", "150", "0", "0", ""],
        [
            "raw/orders/dt=2026-01-02/legacy.csv",
            "rejected",
            "20",
            "0",
            "20",
            "0",
            "missing required column(s): region",
        ],
        [
            "raw/orders/dt=2026-01-02/broken.csv",
            "failed",
            "",
            "",
            "",
            "",
            "transform failed after retries; retried next run",
        ],
        ["raw/orders/dt=2026-01-02/orders_00.csv", "already loaded", "", "", "", "", "skipped (in ledger)"],
    ]


def test_summary_has_totals_run_day_and_failed_files() -> None:
    text = _text(render_summary_html(DAG, RUN, DAY, REPORT, TABLE))
    assert f"{DAG}: partition {DAY}" in text
    assert f"Run {RUN} into {TABLE}." in text
    assert "1 file(s) failed: raw/orders/dt=2026-01-02/broken.csv" in text
    assert "Totals: read 370, loaded 340, rejected 27, duplicates 3; new rows 180, updated rows 10." in text


def test_summary_without_failures_has_no_failure_banner() -> None:
    report = {**REPORT, "failed_files": []}
    text = _text(render_summary_html(DAG, RUN, DAY, report, TABLE))
    assert "failed" not in text


def test_summary_of_empty_report() -> None:
    html = render_summary_html(DAG, RUN, DAY, {}, TABLE)
    assert _rows(html) == [["File", "Status", "Read", "Loaded", "Rejected", "Duplicates", "Note"]]
    assert "Totals: read 0, loaded 0, rejected 0, duplicates 0; new rows 0, updated rows 0." in _text(html)


def test_summary_escapes_file_names_and_reasons() -> None:
    report = {"files": [_file("raw/<b>x</b>.csv", 1, 0, 1, 0, reason="bad & <worse>")]}
    html = render_summary_html(DAG, RUN, DAY, report, TABLE)
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "bad &amp; &lt;worse&gt;" in html


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([], {"rows_read": 0, "rows_loaded": 0, "rows_rejected": 0, "rows_duplicate": 0}),
        (REPORT["files"], {"rows_read": 370, "rows_loaded": 340, "rows_rejected": 27, "rows_duplicate": 3}),
        (
            [{"rows_read": 5, "rows_loaded": None}],
            {"rows_read": 5, "rows_loaded": 0, "rows_rejected": 0, "rows_duplicate": 0},
        ),
    ],
)
def test_totals(files: list[dict], expected: dict[str, int]) -> None:
    assert totals({"files": files}) == expected


@pytest.mark.parametrize(
    ("failed", "subject"),
    [
        ([], f"[{DAG}] {DAY}: load succeeded"),
        (None, f"[{DAG}] {DAY}: load succeeded"),
        (["a.csv"], f"[{DAG}] {DAY}: load FAILED for 1 file(s)"),
        (["a.csv", "b.csv"], f"[{DAG}] {DAY}: load FAILED for 2 file(s)"),
    ],
)
def test_summary_subject(failed: list[str] | None, subject: str) -> None:
    assert summary_subject(DAG, DAY, {"files": [], "failed_files": failed}) == subject


def test_failure_html_escapes_error_and_links_log() -> None:
    error = "ValueError: <script>alert('x')</script> & more"
    html = render_failure_html(DAG, "transform[orders_01.csv]", RUN, error, "http://airflow/log?a=1&b=2")
    assert "<script>" not in html
    assert "<pre>ValueError: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more</pre>" in html
    assert "<a href='http://airflow/log?a=1&amp;b=2'>Task log</a>" in html
    text = _text(html)
    assert f"{DAG}: task transform[orders_01.csv] failed" in text
    assert RUN in text


def test_failure_html_without_log_url_has_no_link() -> None:
    html = render_failure_html(DAG, "load", RUN, "boom", None)
    assert "<a " not in html
    assert "<pre>boom</pre>" in html
