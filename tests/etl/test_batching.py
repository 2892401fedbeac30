"""Spreading files over mapped tasks without exceeding Airflow's map limit."""

from __future__ import annotations

import pytest

from include.etl.running.batching import group_files, group_label


def _files(sizes: list[int]) -> list[dict]:
    return [{"key": f"raw/orders/dt=2026-01-01/f{i:04d}.csv", "etag": str(i), "size": s} for i, s in enumerate(sizes)]


def test_one_task_per_file_up_to_the_cap() -> None:
    files = _files([10, 20, 30])
    assert group_files(files, 3) == [[f] for f in files]


@pytest.mark.parametrize(("count", "cap"), [(2000, 256), (1025, 1024), (7, 2), (10, 1)])
def test_more_files_than_the_cap_are_grouped_and_none_is_lost(count: int, cap: int) -> None:
    files = _files([(i * 7919) % 1000 + 1 for i in range(count)])
    groups = group_files(files, cap)
    assert len(groups) == cap
    flat = [f for g in groups for f in g]
    assert sorted(f["key"] for f in flat) == sorted(f["key"] for f in files)
    assert len(flat) == len(files)


def test_groups_have_similar_total_sizes_and_are_deterministic() -> None:
    files = _files([1000, 900, 800, 100, 100, 100, 100, 100, 100, 100])
    groups = group_files(files, 3)
    totals = sorted(sum(f["size"] for f in g) for g in groups)
    assert totals[-1] - totals[0] <= 200
    assert group_files(list(reversed(files)), 3) == groups


def test_group_label_names_the_file_or_the_first_and_a_count() -> None:
    files = _files([1, 2, 3])
    assert group_label(files[:1]) == "f0000.csv"
    assert group_label(files) == "f0000.csv (+2 more)"


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        group_files(_files([1]), 0)
