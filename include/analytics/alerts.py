"""The marts DAG's failure alert: which dbt model or test failed and why, not only that dbt exited with 1.

Cosmos runs each dbt command in a temporary copy of the project and, on failure, raises "dbt command failed";
what failed is in that copy's `target/run_results.json`, gone once the task ends. So `keep_failures`, a Cosmos
callback that runs after dbt and before the failure is raised, pushes the failed (and warned) nodes to XCom,
and `on_dbt_failure`, the task failure callback, adds them to the pipelines' alert email (same rendering, same
recipients: the Variable `<dag_id>_alert_emails`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from include.etl.running.notify import describe_failure, render_failure_html, send
from include.etl.settings import SMTP_CONN_ID, DatasetSettings

XCOM_KEY = "dbt_failures"
_REPORTED = ("fail", "error", "warn", "runtime error")


def dbt_failures(run_results: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of a dbt run_results.json that failed, errored or warned: node, status, message, failures."""
    return [
        {
            "node": r.get("unique_id", "?"),
            "status": str(r.get("status")),
            "message": (r.get("message") or "").strip(),
            "failures": r.get("failures"),
        }
        for r in run_results.get("results", [])
        if str(r.get("status")).lower() in _REPORTED
    ]


def keep_failures(project_dir: str, context: Any = None, **_: Any) -> None:
    """Cosmos callback: push what failed in this dbt command to XCom, for the failure alert."""
    path = Path(project_dir) / "target" / "run_results.json"
    if context is None or not path.exists():
        return
    failures = dbt_failures(json.loads(path.read_text()))
    if failures:
        context["ti"].xcom_push(key=XCOM_KEY, value=failures)


def failure_lines(failures: list[dict[str, Any]]) -> list[str]:
    return [f"{f['status'].upper()} {f['node']}: {f['message']}" for f in failures]


def on_dbt_failure(context: dict[str, Any]) -> None:
    """Task failure callback: email which task failed, which dbt nodes failed in it and why, and the log."""
    ti = context["ti"]
    error = describe_failure(context)
    try:
        failures = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_KEY) or []
    except Exception:  # the alert must go out even if XCom cannot be read here
        failures = []
    if failures:
        error += "\n\nWhat dbt reported:\n" + "\n".join(failure_lines(failures))
    settings = DatasetSettings.from_airflow(ti.dag_id)
    send(
        SMTP_CONN_ID,
        settings.alert_emails,
        f"[{ti.dag_id}] task {ti.task_id} failed",
        render_failure_html(ti.dag_id, ti.task_id, ti.run_id, error, [], getattr(ti, "log_url", None)),
    )
