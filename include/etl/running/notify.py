"""Emails: the run summary (per-file reconciliation), the parked-file alert and the task-failure alert.

Rendering is plain functions over small dicts, so it is tested without a server; sending goes
through the smtp provider's SmtpHook and the `smtp_default` connection.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from html import escape
from typing import Any

from include.etl.contract.model import Contract
from include.etl.settings import DatasetSettings

_FILE_COLUMNS = (
    ("file", "File"),
    ("status", "Status"),
    ("rows_read", "Read"),
    ("rows_loaded", "Loaded"),
    ("rows_rejected", "Rejected"),
    ("rows_duplicate", "Duplicates"),
    ("note", "Note"),
)
_STATUS = {
    "loaded": "loaded",
    "rejected": "rejected (whole file)",
    "superseded": "superseded",
    "failed": "failed",
    "parked": "PARKED",
    "deleted": "deleted",
}


def _failed(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in summary.get("files", []) if f.get("status") in ("failed", "parked")]


def summary_subject(dag_id: str, day: str, summary: dict[str, Any]) -> str:
    failed = _failed(summary)
    state = f"FAILED for {len(failed)} file(s)" if failed else "succeeded"
    parked = summary.get("parked") or []
    tail = f"; {len(parked)} file(s) parked" if parked else ""
    return f"[{dag_id}] {day}: load {state}{tail}"


def parked_subject(dag_id: str, parked: Sequence[dict[str, Any]]) -> str:
    return f"[{dag_id}] {len(parked)} file(s) parked after repeated failures: action needed"


def trigger_command(dag_id: str, conf: dict[str, Any]) -> str:
    """The `airflow dags trigger` command line for a run conf, quoted for a POSIX shell: pasted, it passes
    the conf as written, whatever the keys hold (quotes, `$(...)`, spaces, non-ASCII)."""
    return shlex.join(["airflow", "dags", "trigger", dag_id, "-c", json.dumps(conf, ensure_ascii=False)])


def retry_command(dag_id: str, keys: Sequence[str]) -> str:
    return trigger_command(dag_id, {"retry_files": list(keys)})


def skip_command(dag_id: str, keys: Sequence[str]) -> str:
    return trigger_command(dag_id, {"skip_files": list(keys), "skip_reason": "why"})


def _note(f: dict[str, Any], settings: DatasetSettings | None) -> str:
    parts: list[str] = []
    status = f.get("status")
    if status in ("failed", "parked"):
        limit = settings.max_attempts if settings else "?"
        parts.append(f"attempt {f.get('attempts')} of {limit}: {f.get('error') or ''}")
        parts.append("parked: retry or skip it (below)" if status == "parked" else "the next run tries it again")
    elif f.get("reason"):
        parts.append(str(f["reason"]))
    if status == "rejected" and not f.get("quarantined"):
        parts.append("the previous version of this file, if any, stays loaded")
    if f.get("reinterpreted"):
        parts.append("reinterpreted: " + ", ".join(f"{n} {k}" for k, n in sorted(f["reinterpreted"].items())))
    for note in f.get("notes") or []:
        parts.append(str(note))
    for warning in f.get("warnings") or []:
        parts.append("warning: " + str(warning))
    if f.get("extra_columns"):
        parts.append("ignored columns: " + ", ".join(f["extra_columns"]))
    if f.get("rows_removed"):
        parts.append(f"{f['rows_removed']} row(s) of its previous version are no longer held by any file: removed")
    return "; ".join(p for p in parts if p)


def file_rows(summary: dict[str, Any], settings: DatasetSettings | None = None) -> list[dict[str, Any]]:
    rows = [
        {
            **f,
            "file": f["source_key"],
            "status": _STATUS.get(f.get("status", ""), f.get("status")),
            "note": _note(f, settings),
        }
        for f in summary.get("files", [])
    ]
    for key in summary.get("skipped", []):
        rows.append({"file": key, "status": "already loaded", "note": "another run loaded this version"})
    return rows


def totals(summary: dict[str, Any]) -> dict[str, int]:
    files = [f for f in summary.get("files", []) if f.get("status") in ("loaded", "rejected")]
    return {
        k: sum(int(f.get(k) or 0) for f in files)
        for k in ("rows_read", "rows_loaded", "rows_rejected", "rows_duplicate")
    }


def validation_lines(gx: Sequence[dict[str, Any]]) -> list[str]:
    """What the Great Expectations reports said, one line per file that did not meet its suite."""
    if not gx:
        return ["Great Expectations: no processed file to validate in this run."]
    unmet = [r for r in gx if not r.get("success")]
    lines = [f"Great Expectations: {len(gx) - len(unmet)} of {len(gx)} processed file(s) met the contract's suite."]
    for r in unmet:
        failures = ", ".join(
            f"{f['expectation']}({f.get('column') or ''}): {f['unexpected_count']} unexpected" for f in r["failures"]
        )
        lines.append(f"{r['source_key']}: {failures} (report: {r.get('report_key')})")
    return lines


def render_summary_html(
    dag_id: str,
    run_id: str,
    summary: dict[str, Any],
    contract: Contract,
    settings: DatasetSettings,
    gx: Sequence[dict[str, Any]] = (),
) -> str:
    """HTML body of the run summary email."""
    head = "".join(f"<th>{escape(title)}</th>" for _, title in _FILE_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{escape(str(row.get(k, '') if row.get(k) is not None else ''))}</td>" for k, _ in _FILE_COLUMNS)
        + "</tr>"
        for row in file_rows(summary, settings)
    )
    t = totals(summary)
    failed = _failed(summary)
    parts = [
        f"<h2>{escape(dag_id)}: partition {escape(summary.get('day', ''))}</h2>",
        f"<p>Run <code>{escape(run_id)}</code> into <code>{escape(contract.table)}</code>.</p>",
    ]
    if failed:
        names = ", ".join(f["source_key"] for f in failed)
        parts.append(f"<p style='color:#b00'><b>{len(failed)} file(s) failed</b>: {escape(names)}</p>")
    parts.append(
        f"<p>Totals: read {t['rows_read']}, loaded {t['rows_loaded']}, rejected {t['rows_rejected']}, "
        f"duplicates {t['rows_duplicate']}; new rows {summary.get('rows_inserted', 0)}, "
        f"updated rows {summary.get('rows_updated', 0)}, removed rows {summary.get('rows_removed', 0)}.</p>"
    )
    parts += [f"<p>{escape(line)}</p>" for line in validation_lines(gx)]
    if summary.get("schema_changes"):
        items = "".join(f"<li>{escape(c)}</li>" for c in summary["schema_changes"])
        parts.append(
            f"<p><b>Schema changes applied to {escape(contract.table)}</b> (from the contract):</p><ul>{items}</ul>"
        )
    if summary.get("deleted"):
        kept = summary.get("on_source_delete", "keep") == "keep"
        what = (
            "their rows are kept (on_source_delete: keep)"
            if kept
            else "their rows were removed (on_source_delete: remove)"
        )
        items = "".join(f"<li>{escape(k)}</li>" for k in summary["deleted"])
        parts.append(f"<p><b>Raw objects deleted from S3</b>: {what}.</p><ul>{items}</ul>")
    parts.append(f"<table border='1' cellpadding='4' cellspacing='0'><tr>{head}</tr>{body}</table>")
    parts.append(_ignored_html(summary))
    parts.append(_parked_html(dag_id, summary.get("parked") or []))
    return "".join(parts)


def _ignored_html(summary: dict[str, Any]) -> str:
    """Objects under the raw prefix this run found and does not read, with why (recorded in the ledger)."""
    ignored = summary.get("ignored") or []
    if not ignored:
        return ""
    count = int(summary.get("ignored_count") or len(ignored))
    items = "".join(f"<li><code>{escape(i['key'])}</code>: {escape(i['reason'])}</li>" for i in ignored)
    more = f"<p>... and {count - len(ignored)} more (the ledger has them all).</p>" if count > len(ignored) else ""
    return (
        f"<p><b>{count} object(s) under the raw prefix are not read</b> (recorded in the ledger as ignored; "
        f"move or rename them to load them):</p><ul>{items}</ul>{more}"
    )


def _parked_html(dag_id: str, parked: Sequence[str]) -> str:
    if not parked:
        return ""
    items = "".join(f"<li>{escape(k)}</li>" for k in parked)
    return (
        f"<h3 style='color:#b00'>{len(parked)} parked file(s) wait for you</h3><ul>{items}</ul>"
        "<p>No run takes them up until you retry them (after fixing the cause) or skip them. From the Airflow UI, "
        "trigger the DAG with this configuration, or from a shell:</p>"
        f"<pre>{escape(retry_command(dag_id, parked))}\n{escape(skip_command(dag_id, parked))}</pre>"
        '<p>(<code>"retry_files": "all"</code> retries every parked file.)</p>'
    )


def render_parked_html(dag_id: str, run_id: str, parked: Sequence[dict[str, Any]], settings: DatasetSettings) -> str:
    items = "".join(
        f"<li><code>{escape(f['source_key'])}</code>: failed {f.get('attempts')} time(s); last error: "
        f"{escape(str(f.get('error') or ''))}</li>"
        for f in parked
    )
    keys = [f["source_key"] for f in parked]
    return (
        f"<h2>{escape(dag_id)}: file(s) parked</h2><p>Run <code>{escape(run_id)}</code> parked these files after "
        f"{settings.max_attempts} failed attempts:</p><ul>{items}</ul>" + _parked_html(dag_id, keys)
    )


def render_failure_html(
    dag_id: str, task_label: str, run_id: str, error: str, files: Sequence[str], log_url: str | None
) -> str:
    link = f"<p>Log: <a href='{escape(log_url)}'>{escape(log_url)}</a></p>" if log_url else ""
    listed = "".join(f"<li>{escape(f)}</li>" for f in files)
    files_html = f"<p>File(s) of this task:</p><ul>{listed}</ul>" if files else ""
    return (
        f"<h2>{escape(dag_id)}: task {escape(task_label)} failed</h2>"
        f"<p>Run <code>{escape(run_id)}</code>.</p><pre>{escape(error)}</pre>{files_html}{link}"
    )


def send(conn_id: str, to: Sequence[str], subject: str, html: str) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(to=list(to), subject=subject, html_content=html)


def describe_failure(context: dict[str, Any]) -> str:
    """What went wrong, also when the task raised nothing (killed, out of memory, timed out)."""
    error = context.get("exception")
    if error is None:
        ti = context.get("ti")
        state = getattr(ti, "state", None)
        return (
            "The task ended without raising an error: it was killed (out of memory, SIGKILL), missed its "
            f"heartbeat or timed out. Last state: {state}. The task log shows its last lines."
        )
    return f"{type(error).__name__}: {error}"


def task_files(context: dict[str, Any]) -> list[str]:
    """The raw keys a (mapped transform) task was given, if it was given any."""
    ti = context.get("ti")
    map_index = getattr(ti, "map_index", -1)
    if ti is None or map_index is None or map_index < 0:
        return []
    try:
        groups = ti.xcom_pull(task_ids="list_files")
        return [f["key"] for f in groups[map_index]]
    except Exception:  # the alert must go out even if XCom cannot be read here
        return []


def on_task_failure(context: dict[str, Any]) -> None:
    """Task failure callback: email which task failed, for which file(s), why, and where its log is."""
    from include.etl.settings import SMTP_CONN_ID

    ti = context["ti"]
    label = ti.task_id
    rendered = getattr(ti, "rendered_map_index", None)
    if rendered or (getattr(ti, "map_index", -1) or -1) >= 0:
        label = f"{ti.task_id}[{rendered or ti.map_index}]"
    dataset = ti.dag_id.removesuffix("_pipeline")
    settings = DatasetSettings.from_airflow(dataset)
    send(
        SMTP_CONN_ID,
        settings.alert_emails,
        f"[{ti.dag_id}] task {label} failed",
        render_failure_html(
            ti.dag_id, label, ti.run_id, describe_failure(context), task_files(context), getattr(ti, "log_url", None)
        ),
    )
