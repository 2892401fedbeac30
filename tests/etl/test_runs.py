"""partition_day: which date partition a DAG run owns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.etl.running.runs import partition_day, partitions_to_list

START = datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
AFTER = datetime(2026, 1, 3, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("requested", "interval_start", "run_after", "day"),
    [
        pytest.param("2025-12-31", START, AFTER, "2025-12-31", id="param-wins"),
        pytest.param("2025-12-31", None, None, "2025-12-31", id="param-alone"),
        pytest.param(None, START, AFTER, "2026-01-02", id="data-interval-start"),
        pytest.param("", START, AFTER, "2026-01-02", id="empty-param-ignored"),
        pytest.param(None, datetime(2026, 1, 2, 23, 59, 59, tzinfo=UTC), None, "2026-01-02", id="end-of-day"),
        pytest.param(None, None, AFTER, "2026-01-03", id="fallback-run-after"),
    ],
)
def test_partition_day(
    requested: str | None, interval_start: datetime | None, run_after: datetime | None, day: str
) -> None:
    assert partition_day(requested, interval_start, run_after) == day


@pytest.mark.parametrize("requested", ["2026-13-01", "2026-02-30", "yesterday", "01/02/2026"])
def test_invalid_requested_day_raises(requested: str) -> None:
    with pytest.raises(ValueError, match=r"Invalid isoformat string|month must be|day is out of range"):
        partition_day(requested, START, AFTER)


def test_no_day_at_all_raises() -> None:
    with pytest.raises(ValueError, match="cannot tell the run's day"):
        partition_day(None, None, None)


@pytest.mark.parametrize(
    ("run_type", "requested", "events", "lookback", "expected"),
    [
        pytest.param("scheduled", None, [], 2, ["2026-01-08", "2026-01-09", "2026-01-10"], id="scheduled-lookback"),
        pytest.param("asset_triggered", None, ["2025-12-01"], 0, ["2025-12-01", "2026-01-10"], id="event-old-day"),
        pytest.param("asset_triggered", None, ["2026-01-10"], 1, ["2026-01-09", "2026-01-10"], id="event-dedup"),
        pytest.param("backfill", None, ["2025-12-01"], 3, ["2026-01-10"], id="backfill-own-day"),
        pytest.param("manual", "2026-01-10", ["2025-12-01"], 3, ["2026-01-10"], id="day-param-only"),
    ],
)
def test_partitions_to_list(run_type, requested, events, lookback, expected) -> None:
    assert partitions_to_list("2026-01-10", run_type, requested, events, lookback) == expected
