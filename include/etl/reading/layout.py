"""The raw zone's layout, and every object under a dataset's raw prefix that is not in it.

Files are read from `<raw prefix>/dt=YYYY-MM-DD/` (a day that exists), named `*.csv` or `*.csv.gz`
(in that folder or below it). Every other object under the prefix is *ignored*, and said so: the
listing records it in the ledger (status `ignored`, with the reason), the run's summary names it and
the dashboard lists it. Nothing under the prefix is passed over in silence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from include.etl.reading.storage import RAW_SUFFIXES

if TYPE_CHECKING:
    from include.etl.reading.storage import RawObject

_FOLDER = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


_ANY_FOLDER = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})/")


def partition_day(key: str, raw_prefix: str | None = None) -> str | None:
    """The day of the partition folder a key is in (`<raw prefix>/dt=YYYY-MM-DD/...`; without a prefix, its first
    `dt=` folder), None if it is in none or the day does not exist."""
    if raw_prefix is None:
        found = _ANY_FOLDER.search(key)
    else:
        prefix = raw_prefix.strip("/") + "/"
        folder, slash, _ = key[len(prefix) :].partition("/") if key.startswith(prefix) else ("", "", "")
        found = _FOLDER.match(folder) if slash else None
    if not found:
        return None
    try:
        return date.fromisoformat(found.group(1)).isoformat()
    except ValueError:
        return None


def not_a_csv(key: str) -> str | None:
    """Why an object of a partition folder is not read, or None if it is a CSV file."""
    if key.endswith("/"):
        return "a folder marker (a zero-byte key ending in /), not a file"
    if key.lower().endswith(RAW_SUFFIXES):
        return None
    name = key.rsplit("/", 1)[-1]
    kind = f"a .{name.rsplit('.', 1)[-1]} file" if "." in name else "a file without an extension"
    return f"not a CSV ({kind}): only .csv and .csv.gz files are read"


@dataclass
class Layout:
    """What the top of a raw prefix holds: the partition days found, and the objects outside any partition."""

    days: list[str] = field(default_factory=list)
    ignored: list[tuple[RawObject, str]] = field(default_factory=list)


def scan(s3: Any, bucket: str, raw_prefix: str) -> Layout:
    """The partition folders directly under the raw prefix, and every object that is in none (with the reason):
    objects directly under the prefix, and everything in a folder that is not `dt=` a real day.

    One listing of the prefix's top level (S3 groups the folders), plus a listing of each misplaced folder.
    """
    from include.etl.reading.storage import object_version

    prefix = raw_prefix.strip("/") + "/"
    expected = f"files go in {prefix}dt=YYYY-MM-DD/"
    layout = Layout()
    folders: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        for obj in page.get("Contents", []):
            if obj["Key"] != prefix:  # the prefix's own folder marker
                layout.ignored.append((object_version(obj), f"not in a partition folder: {expected}"))
    for folder in folders:
        name = folder[len(prefix) : -1]
        found = _FOLDER.match(name)
        if found:
            try:
                layout.days.append(date.fromisoformat(found.group(1)).isoformat())
                continue
            except ValueError:
                reason = f"{name} is not a day that exists: {expected}"
        else:
            reason = f"in folder {name!r}, not a partition folder: {expected}"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            layout.ignored += [(object_version(obj), reason) for obj in page.get("Contents", [])]
    layout.days.sort()
    return layout
