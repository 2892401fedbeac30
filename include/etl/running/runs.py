"""Which date partitions a DAG run lists."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta


def partition_day(requested: str | None, data_interval_start: datetime | None, run_after: datetime | None) -> str:
    """The run's own day: the `day` param if given, else the start of its data interval.

    Scheduled and backfill runs use a daily CronDataIntervalTimetable, so a run's data
    interval is exactly the day it owns. Runs without an interval use the day they run.
    """
    if requested:
        return date.fromisoformat(str(requested)).isoformat()
    moment = data_interval_start or run_after
    if moment is None:
        raise ValueError("cannot tell the run's day: no `day` param and no data interval")
    return moment.date().isoformat()


def partitions_to_list(
    own_day: str, run_type: str, requested: str | None, event_days: Iterable[str], lookback_days: int
) -> list[str]:
    """Partitions a run lists, oldest first.

    A backfill run, or any run given a `day`, lists exactly that day. Scheduled and
    event-triggered runs also list the days named by events and the `lookback_days`
    before their own day, so files that land late in an old partition are still loaded.
    """
    if requested or run_type == "backfill":
        return [own_day]
    day = date.fromisoformat(own_day)
    days = {(day - timedelta(days=n)).isoformat() for n in range(lookback_days + 1)}
    return sorted(days | set(event_days))
