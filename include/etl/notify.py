"""Emails: the run summary (per-file reconciliation) and the task-failure alert.

Rendering is plain functions over small dicts, so it is tested without a server;
sending goes through the smtp provider's SmtpHook and the `smtp_default` connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

_FILE_COLUMNS = (
    ("file", "File"),
    ("status", "Status"),
    ("rows_read", "Read"),
    ("rows_loaded", "Loaded"),
    ("rows_rejected", "Rejected"),
    ("rows_duplicate", "Duplicates"),
    ("note", "Note"),
)


def summary_subject(dag_id: str, day: str, report: dict[str, Any]) -> str:
    failed = report.get("failed_files") or []
    state = f"FAILED for {len(failed)} file(s)" if failed else "succeeded"
    return f"[{dag_id}] {day}: load {state}"


def _file_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for f in report.get("files", []):
        note = f.get("reason") or ""
        if f.get("extra_columns"):
            note = (note + "; " if note else "") + "ignored columns: " + ", ".join(f["extra_columns"])
        rows.append({**f, "file": f["source_key"], "note": note})
    for key in report.get("failed_files", []):
        rows.append({"file": key, "status": "failed", "note": "transform failed after retries; retried next run"})
    for key in report.get("skipped", []):
        rows.append({"file": key, "status": "already loaded", "note": "skipped (in ledger)"})
    return rows


def totals(report: dict[str, Any]) -> dict[str, int]:
    files = report.get("files", [])
    return {
        k: sum(int(f.get(k) or 0) for f in files)
        for k in ("rows_read", "rows_loaded", "rows_rejected", "rows_duplicate")
    }


def validation_line(report: dict[str, Any]) -> str:
    """One line on the Great Expectations results of the run's files."""
    files = report.get("files", [])
    passed = sum(1 for f in files if f.get("validation_key") and f.get("status") == "loaded")
    failed = [f["source_key"] for f in files if (f.get("reason") or "").startswith("failed expectations")]
    line = f"Data validation (Great Expectations): {passed} file(s) passed, {len(failed)} quarantined"
    return line + (": " + ", ".join(failed) if failed else "") + "."


def render_summary_html(dag_id: str, run_id: str, day: str, report: dict[str, Any], table: str) -> str:
    """HTML body of the run summary email."""
    head = "".join(f"<th>{escape(title)}</th>" for _, title in _FILE_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{escape(str(row.get(k, '') if row.get(k) is not None else ''))}</td>" for k, _ in _FILE_COLUMNS)
        + "</tr>"
        for row in _file_rows(report)
    )
    t = totals(report)
    failed = report.get("failed_files") or []
    status = (
        f"<p style='color:#b00'><b>{len(failed)} file(s) failed</b>: {escape(', '.join(failed))}</p>" if failed else ""
    )
    return (
        f"<h2>{escape(dag_id)}: partition {escape(day)}</h2>"
        f"<p>Run <code>{escape(run_id)}</code> into <code>{escape(table)}</code>.</p>"
        f"{status}"
        f"<p>Totals: read {t['rows_read']}, loaded {t['rows_loaded']}, rejected {t['rows_rejected']}, "
        f"duplicates {t['rows_duplicate']}; new rows {report.get('rows_inserted', 0)}, "
        f"updated rows {report.get('rows_updated', 0)}.</p>"
        f"<p>{escape(validation_line(report))}</p>"
        f"<table border='1' cellpadding='4' cellspacing='0'><tr>{head}</tr>{body}</table>"
    )


def render_failure_html(dag_id: str, task_label: str, run_id: str, error: str, log_url: str | None) -> str:
    link = f"<p><a href='{escape(log_url)}'>Task log</a></p>" if log_url else ""
    return (
        f"<h2>{escape(dag_id)}: task {escape(task_label)} failed</h2>"
        f"<p>Run <code>{escape(run_id)}</code>.</p><pre>{escape(error)}</pre>{link}"
    )


def send(conn_id: str, to: Sequence[str], subject: str, html: str) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(to=list(to), subject=subject, html_content=html)


def on_task_failure(context: dict[str, Any]) -> None:
    """Task failure callback: email which task (and which file, for a mapped task) failed, and why."""
    from include.etl.config import SMTP_CONN_ID, PipelineSettings

    ti = context["ti"]
    label = ti.task_id
    rendered = getattr(ti, "rendered_map_index", None)
    if rendered or getattr(ti, "map_index", -1) >= 0:
        label = f"{ti.task_id}[{rendered or ti.map_index}]"
    error = context.get("exception")
    settings = PipelineSettings.from_airflow()
    send(
        SMTP_CONN_ID,
        settings.alert_emails,
        f"[{ti.dag_id}] task {label} failed",
        render_failure_html(
            ti.dag_id, label, ti.run_id, f"{type(error).__name__}: {error}", getattr(ti, "log_url", None)
        ),
    )
