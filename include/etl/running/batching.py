"""Spreading a partition's files over mapped transform tasks.

Airflow caps a mapped task at `[core] max_map_length` (1024) instances. Up to
`max_tasks` files each get their own task; beyond that, files are packed into
`max_tasks` groups of similar total size, so a partition of any size loads in one run
without raising Airflow's limit.
"""

from __future__ import annotations

import heapq

from include.etl.reading.storage import RawFile


def group_files(files: list[RawFile], max_tasks: int) -> list[list[RawFile]]:
    """Groups of files (by key order within a group), at most max_tasks of them."""
    if max_tasks < 1:
        raise ValueError("max_tasks must be at least 1")
    if len(files) <= max_tasks:
        return [[f] for f in files]
    heap = [(0, i) for i in range(max_tasks)]
    groups: list[list[RawFile]] = [[] for _ in range(max_tasks)]
    # Largest first onto the lightest group (LPT scheduling); ties broken by key for determinism.
    for f in sorted(files, key=lambda f: (-int(f["size"]), f["key"])):
        total, i = heapq.heappop(heap)
        groups[i].append(f)
        heapq.heappush(heap, (total + int(f["size"]), i))
    return sorted((sorted(g, key=lambda f: f["key"]) for g in groups if g), key=lambda g: g[0]["key"])


# Airflow keeps a mapped task's label in a column of 250 characters: a longer one fails the task every time.
LABEL_CHARS = 250


def group_label(group: list[RawFile]) -> str:
    """What the UI shows for a mapped task: its file's name, or the first name and a count; at most
    LABEL_CHARS characters (a long name keeps its start and end around an ellipsis)."""
    name = group[0]["key"].rsplit("/", 1)[-1]
    more = "" if len(group) == 1 else f" (+{len(group) - 1} more)"
    room = LABEL_CHARS - len(more)
    if len(name) > room:
        head = (room - 1) // 2
        name = name[:head] + "…" + name[len(name) - (room - 1 - head) :]
    return name + more
