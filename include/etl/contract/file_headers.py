"""A file's header line where it is not what it should be.

A header line again in the middle of a file (two exports joined into one): such a line is not data. It is taken
out of the rows (noted in the file's result, not counted as read), and the rows after it are read by it: when it
names the file's columns in another order, their values are put back in the first header's order before cleaning;
when it names other columns, the rows after it are rejected with a reason naming the change. Never are they read
by the first header's positions.

No header line at all (a split part without it): the first line is data. `reads_as_data` says so, for the file's
reason; the line is then rejected with the file's rows, never taken as a header silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract.model import Contract, normalize_header
from include.etl.reading.csv_reader import RawBatch


@dataclass
class Segment:
    """Rows of a batch read under one header: `order[i]` is the position of the first header's column i in
    these rows (None: in order), or `rejected` the reason none of them can be read."""

    batch: RawBatch
    order: list[int] | None = None
    rejected: str | None = None


class HeaderWatch:
    """Follows a file's header through its batches (one per file, in order)."""

    def __init__(self, contract: Contract, header: list[str]) -> None:
        self.header = header
        self.first = [normalize_header(h) for h in header]
        spellings = {normalize_header(s) for c in contract.columns for s in (c.name, *c.aliases)}
        self.spellings = spellings | set(self.first)
        self.order: list[int] | None = None
        self.rejected: str | None = None
        self.notes: list[str] = []

    def _is_header(self, cells: list[str]) -> bool:
        names = [normalize_header(c) for c in cells]
        filled = [n for n in names if n]
        return len(filled) >= max(2, len(names) // 2) and all(n in self.spellings for n in filled)

    def split(self, batch: RawBatch) -> list[Segment]:
        """The batch's rows in segments, each read under the header in effect for it; header rows taken out."""
        if batch.num_rows == 0 or not batch.columns:
            return [Segment(batch, self.order, self.rejected)]
        first = pc.replace_substring_regex(pc.utf8_lower(pc.utf8_trim_whitespace(batch.columns[0])), r"[_\s]+", " ")
        candidates = np.flatnonzero(
            pc.is_in(first, value_set=pa.array(sorted(self.spellings), pa.string())).fill_null(False).to_numpy(False)
        )
        headers = [int(i) for i in candidates if self._is_header([_text(c[int(i)].as_py()) for c in batch.columns])]
        if not headers:
            return [Segment(batch, self.order, self.rejected)]
        segments = []
        start = 0
        for row in headers:
            segments.append(Segment(_rows(batch, start, row, first_part=start == 0), self.order, self.rejected))
            self._follow([_text(c[row].as_py()) for c in batch.columns], int(batch.lines[row]))
            start = row + 1
        segments.append(Segment(_rows(batch, start, batch.num_rows, first_part=False), self.order, self.rejected))
        return [s for s in segments if s.batch.num_rows or s.batch.malformed]

    def _follow(self, cells: list[str], line: int) -> None:
        names = [normalize_header(c) for c in cells]
        if names == self.first:
            self.notes.append(f"line {line} repeats the header (two exports joined?): taken out, not read as data")
            self.order, self.rejected = None, None
            return
        if sorted(names) == sorted(self.first) and len(set(names)) == len(names):
            self.order = [names.index(n) for n in self.first]
            self.rejected = None
            self.notes.append(
                f"line {line} is a header again with the columns in another order (two exports joined?): the "
                "rows after it are read by it"
            )
            return
        self.order = None
        self.rejected = (
            f"the header changes at line {line} to {', '.join(cells)} (other columns than the first header's): "
            "the rows after it are not read"
        )
        self.notes.append(self.rejected)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _rows(batch: RawBatch, start: int, stop: int, first_part: bool) -> RawBatch:
    """Rows [start, stop) of a batch; the rows malformed in reading stay with its first part."""
    return replace(
        batch,
        columns=[c.slice(start, stop - start) for c in batch.columns],
        lines=batch.lines[start:stop],
        malformed=list(batch.malformed) if first_part else [],
        fallback=None if batch.fallback is None else batch.fallback[start:stop],
        blank_lines=batch.blank_lines if first_part else 0,
    )


def reordered(batch: RawBatch, order: list[int]) -> RawBatch:
    """The batch's columns put back in the first header's order."""
    return replace(batch, columns=[batch.columns[i] for i in order])


# A value, not a column name: a number (with sign, currency, separators) or a date or time.
_DATA_LIKE = re.compile(r"[+-]?[$€£¥]?\s*\d[\d,.\s]*%?|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T].*)?|\d{1,2}:\d{2}(:\d{2})?")


def reads_as_data(contract: Contract, header: list[str]) -> list[str]:
    """The header's cells that read as values, when none of its cells names a contract column (a file whose first
    line is data: the header is missing); else []."""
    spellings = {normalize_header(s) for c in contract.columns for s in (c.name, *c.aliases)}
    if any(normalize_header(h) in spellings for h in header):
        return []
    return [h for h in header if _DATA_LIKE.fullmatch(h.strip())]
