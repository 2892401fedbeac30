"""A pipeline's tasks run in this process, in the DAG's order, with a small fake task context.

Airflow's provider tests call an operator's `execute` with a plain context, and dagster's call an asset with a
built context; this does the same for the task bodies of `include/etl/running/tasks.py`: no scheduler, no metadata
database, no DAG run, a fraction of a second of Airflow per task. What the DAG itself adds (its wiring, trigger
rules, mapping, Airflow's retries and callbacks) is tested by the few whole-DAG runs in
`tests/integration/test_pipeline_e2e.py`, `tests/dags/` and the scheduler tests.

`run_tasks(contract, day)` walks the tasks as the DAG wires them (`include/etl/running/dag_factory.py`):

    list_files -> transform[group] ... -> load -> table_changed -> check_columns, check_table -> notify
                                       \\-> validation_report ------------------------------------/

with the DAG's trigger rules (load and validation_report run when the transforms are done, whatever their
state; notify runs when nothing upstream failed), its retries of transient faults (the DAG's `task_retries`)
and its failure callback (the alert email). XCom values go through JSON, as Airflow stores them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from include.etl.contract.model import Contract

# What a run's params are when the run does not set them (the DAG's Param defaults).
DEFAULT_PARAMS: dict[str, Any] = {
    "day": None,
    "reprocess": False,
    "retry_files": [],
    "skip_files": [],
    "skip_reason": "",
}


@dataclass
class FakeDagRun:
    run_id: str
    run_type: str
    run_after: datetime
    conf: dict[str, Any]


@dataclass
class FakeTaskInstance:
    """What the task bodies use of Airflow's task instance: ids, tries and XCom (kept in the run)."""

    run: TaskRun
    task_id: str
    map_index: int = -1
    try_number: int = 1
    max_tries: int = 0
    state: str = "running"

    @property
    def dag_id(self) -> str:
        return self.run.dag_id

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def rendered_map_index(self) -> str | None:
        return None

    @property
    def log_url(self) -> str:
        return f"http://localhost:8080/dags/{self.dag_id}/runs/{self.run_id}/tasks/{self.task_id}"

    def xcom_push(self, key: str, value: Any) -> None:
        self.run.xcom[(self.task_id, self.map_index, key)] = json.dumps(value)

    def xcom_pull(self, task_ids: str, key: str = "return_value", map_indexes: int | None = None) -> Any:
        stored = self.run.xcom.get((task_ids, -1 if map_indexes is None else map_indexes, key))
        return None if stored is None else json.loads(stored)


@dataclass
class TaskRun:
    """One run of a pipeline's tasks: each task's state, its error, XCom and the load's summary."""

    contract: Contract
    run_id: str
    dag_run: FakeDagRun
    params: dict[str, Any]
    data_interval_start: datetime | None
    retries: int
    xcom: dict[tuple[str, int, str], str] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)

    @property
    def dag_id(self) -> str:
        from include.etl.names import dag_id

        return dag_id(self.contract.dataset)

    @property
    def state(self) -> str:
        """As Airflow ends a DAG run: failed when a task failed (or could not run because one did)."""
        return "failed" if {"failed", "upstream_failed"} & set(self.states.values()) else "success"

    @property
    def summary(self) -> dict[str, Any] | None:
        return self.pulled("load")

    def pulled(self, task_id: str, map_index: int = -1) -> Any:
        stored = self.xcom.get((task_id, map_index, "return_value"))
        return None if stored is None else json.loads(stored)

    def context(self, ti: FakeTaskInstance) -> dict[str, Any]:
        return {
            "ti": ti,
            "task_instance": ti,
            "dag_run": self.dag_run,
            "run_id": self.run_id,
            "params": dict(self.params),
            "data_interval_start": self.data_interval_start,
            "triggering_asset_events": {},
        }

    def call(self, task_id: str, body: Callable[[dict[str, Any]], Any], map_index: int = -1) -> Any:
        """Run one task as Airflow would: retried on a transient fault, the failure callback on failure."""
        from include.etl.faults import is_transient
        from include.etl.running.lineage import forget_collected
        from include.etl.running.notify import on_task_failure

        label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        forget_collected()  # as in a task process of its own
        for try_number in range(1, self.retries + 2):
            ti = FakeTaskInstance(self, task_id, map_index, try_number, self.retries)
            self.tries[label] = try_number
            try:
                value = body(self.context(ti))
            except Exception as exc:
                kind = type(exc).__name__
                if kind == "AirflowSkipException":
                    self.states[label] = "skipped"
                    return None
                if kind != "AirflowFailException" and is_transient(exc) and try_number <= self.retries:
                    continue
                self.states[label], self.errors[label] = "failed", exc
                ti.state = "failed"
                on_task_failure({**self.context(ti), "exception": exc})
                return None
            self.states[label] = "success"
            if value is not None:
                self.xcom[(task_id, map_index, "return_value")] = json.dumps(value)
            return value
        raise AssertionError("unreachable")


def run_tasks(
    contract: Contract,
    day: str | None = None,
    *,
    logical_date: datetime | None = None,
    run_type: str = "manual",
    **params: Any,
) -> TaskRun:
    """Run the pipeline of `contract` for `day` (or, without one, as a run at `logical_date` lists), in process.

    A manual run at midnight owns the day before it, as the DAG's daily timetable infers its data interval.
    """
    from airflow.timetables.interval import CronDataIntervalTimetable
    from pendulum import instance

    from include.etl.running import tasks
    from include.etl.running.dag_factory import build_pipeline
    from include.etl.settings import DatasetSettings

    moment = logical_date or datetime.now(UTC)
    interval = CronDataIntervalTimetable("0 0 * * *", timezone="UTC").infer_manual_data_interval(
        run_after=instance(moment)
    )
    run_id = f"{run_type}__{moment.isoformat()}"
    conf = {**DEFAULT_PARAMS, "day": day, **params}
    run = TaskRun(
        contract=contract,
        run_id=run_id,
        dag_run=FakeDagRun(run_id, run_type, moment, conf),
        params=conf,
        data_interval_start=interval.start,
        retries=DatasetSettings.from_environment(contract.dataset).task_retries,
    )

    groups = run.call("list_files", lambda ctx: tasks.list_files(ctx, contract))
    if run.states["list_files"] != "success":
        run.states.update(transform="upstream_failed", validation_report="skipped", load="skipped")
        run.states.update(notify="upstream_failed")
        return run
    for index, group in enumerate(groups):
        run.call("transform", lambda ctx, group=group: tasks.transform(ctx, contract, group), index)
    summary = run.call("load", lambda ctx: tasks.load(ctx, contract, groups))
    report = run.call("validation_report", lambda ctx: tasks.validation_report(ctx, contract, groups))
    if run.states["load"] != "success":
        run.states.update(table_changed="upstream_failed", check_columns="upstream_failed")
        run.states.update(check_table="upstream_failed", notify="upstream_failed")
        return run
    if tasks.table_changed(summary):
        run.states["table_changed"] = "success"
        dag = build_pipeline(contract)
        for check in ("check_columns", "check_table"):
            run.call(check, dag.get_task(check).execute)
    else:
        run.states.update(table_changed="success", check_columns="skipped", check_table="skipped")
    if {"failed", "upstream_failed"} & {run.states[t] for t in ("check_columns", "check_table", "validation_report")}:
        run.states["notify"] = "upstream_failed"
        return run
    run.call("notify", lambda ctx: tasks.send_summary(ctx, contract, summary, report))
    return run
