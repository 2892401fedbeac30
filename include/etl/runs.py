"""Which date partition a DAG run owns."""

from __future__ import annotations

from datetime import date, datetime


def partition_day(requested: str | None, data_interval_start: datetime | None, run_after: datetime | None) -> str:
    """The run's day: the `day` param if given, else the start of its data interval.

    Scheduled runs use a daily CronDataIntervalTimetable, so a run's data interval is
    exactly the day it owns. Runs without an interval fall back to the day they run.
    """
    if requested:
        return date.fromisoformat(str(requested)).isoformat()
    moment = data_interval_start or run_after
    if moment is None:
        raise ValueError("cannot tell the run's day: no `day` param and no data interval")
    return moment.date().isoformat()
