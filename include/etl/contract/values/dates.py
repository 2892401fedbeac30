"""Date and timestamp values: the contract's formats, values two formats read differently, the file's
own day/month evidence, time zones across daylight saving time."""

from __future__ import annotations

import collections
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract.model import (
    Column,
)
from include.etl.contract.values.common import Context, first_reason, reason_where

# pandas' ISO8601 parser also takes "2026" or "20260102"; a timestamp must at least spell out a date.
ISO_DATE_PREFIX = r"^\d{4}-\d{1,2}-\d{1,2}"


ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


# An explicit offset or Z after the time of day: the value names its own instant. (After a time only: the
# "-15" ending "2026-01-15" is the day, not an offset.)
OFFSET = r"\d:\d{2}(:\d{2}([.,]\d+)?)?\s?(Z|z|[+-]\d{2}(:?\d{2})?)$"


# strptime directives that read digits only (some, like %d, also a space before one digit).
_NUMERIC_DIRECTIVES = frozenset("dmyYHIMSfjUWwuVG")


def _literals(fmt: str) -> collections.Counter[str] | None:
    """The characters other than digits and spaces any text `fmt` reads must hold (its literals, %% a '%';
    letters in either case), or None if a directive may read other characters (%b, %p, %z...)."""
    found: collections.Counter[str] = collections.Counter()
    i = 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            if fmt[i + 1] == "%":
                found["%"] += 1
            elif fmt[i + 1] not in _NUMERIC_DIRECTIVES:
                return None
            i += 2
            continue
        if not fmt[i].isspace() and not fmt[i].isdigit():
            found[fmt[i].casefold()] += 1  # formats are matched ignoring case
        i += 1
    return found


def _may_read_alike(fmt: str, other: str) -> bool:
    """Whether one text could be read by both formats. Not when both read only digits in their directives and
    their literals differ ("%m/%d/%Y" and "%m/%d/%Y %H:%M": a text has one colon or none), so the check for two
    readings of one value skips pairs that cannot have any."""
    mine, theirs = _literals(fmt), _literals(other)
    return mine is None or theirs is None or mine == theirs


def parse_formats(
    series: pd.Series, formats: tuple[str, ...], iso_shaped: pd.Series, utc: bool
) -> tuple[pd.Series, pd.Series]:
    """Values parsed by the first format that reads them (NaT where none does), and where another of the
    formats reads the same text as another moment (03/05/2026 with both %m/%d/%Y and %d/%m/%Y)."""
    dtype = "datetime64[us, UTC]" if utc else "datetime64[us]"
    parsed = pd.Series(pd.NaT, index=series.index, dtype=dtype)
    ambiguous = pd.Series(False, index=series.index)
    todo = series.notna()
    by: list[tuple[str, pd.Series]] = []
    for fmt in formats:
        candidates = todo & iso_shaped if fmt == "ISO8601" else todo
        if not candidates.any():
            continue
        attempt = pd.to_datetime(series[candidates], format=fmt, errors="coerce", utc=utc).astype(dtype)
        parsed[candidates] = attempt
        if fmt != "ISO8601":
            by.append((fmt, attempt.dropna()))
        todo &= parsed.isna()
    others = [f for f in formats if f != "ISO8601"]
    for fmt, got in by:  # ISO 8601 says which part is which; other formats may not
        for other in (f for f in others if f != fmt and _may_read_alike(fmt, f)):
            again = pd.to_datetime(series[got.index], format=other, errors="coerce", utc=utc).astype(dtype)
            ambiguous[got.index] |= again.notna() & (again != got)
    return parsed, ambiguous


def clean_timestamp(col: Column, present: pa.Array, raw: pa.Array, ctx: Context) -> tuple[pa.Array, pa.Array]:
    """Timestamps to UTC: values with an offset name their instant; naive ones are in the column's zone."""
    zone = ctx.contract.zone_of(col)
    formats = col.formats or ("ISO8601",)
    series = pd.Series(present.to_pandas(types_mapper=pd.ArrowDtype), dtype="string")
    iso_shaped = series_mask(pc.match_substring_regex(present, ISO_DATE_PREFIX), series.index)
    two_readings = pd.Series(False, index=series.index)
    if zone == "UTC":
        parsed, two_readings = parse_formats(series, formats, iso_shaped, utc=True)
        gap = ambiguous = pd.Series(False, index=series.index)
    else:
        has_offset = series_mask(pc.match_substring_regex(present, OFFSET), series.index)
        parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]")
        aware = series.where(has_offset)
        parsed[has_offset], two_readings[has_offset] = parse_formats(
            aware[has_offset], formats, iso_shaped[has_offset], utc=True
        )
        naive = series.where(~has_offset)
        local, two_readings[~has_offset] = parse_formats(
            naive[~has_offset], formats, iso_shaped[~has_offset], utc=False
        )
        strict = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        summer = local.dt.tz_localize(zone, ambiguous=np.ones(len(local), dtype=bool), nonexistent="NaT")
        gap = pd.Series(False, index=series.index)
        ambiguous = pd.Series(False, index=series.index)
        gap[~has_offset] = local.notna() & summer.isna()
        ambiguous[~has_offset] = local.notna() & strict.isna() & summer.notna()
        parsed[~has_offset] = strict.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    values = pa.Array.from_pandas(parsed, type=pa.timestamp("us", tz="UTC"))
    unparsed = pc.and_(pc.and_(pc.is_valid(present), pc.is_null(values)), pa.array(~(gap | ambiguous).to_numpy()))
    reasons = [
        day_month_order(col, formats, series, parsed, ctx, raw),
        two_readings_reason(col, two_readings, raw),
        reason_where(unparsed, f"{col.name} '{{v}}' is not a recognised date/time", raw),
        reason_where(gap.to_numpy(), f"{col.name} '{{v}}' does not exist in {zone} (clocks went forward)", raw),
        reason_where(
            ambiguous.to_numpy(),
            f"{col.name} '{{v}}' happens twice in {zone} (clocks went back): give it an offset",
            raw,
        ),
    ]
    for bound, op, word in ((col.min, pc.less, "before"), (col.max, pc.greater, "after")):
        if bound is not None:
            limit = datetime.fromisoformat(str(bound))
            limit = limit if limit.tzinfo else limit.replace(tzinfo=ZoneInfo(zone))
            reasons.append(
                reason_where(op(values, pa.scalar(limit, values.type)), f"{col.name} '{{v}}' is {word} {bound}", raw)
            )
    reason = first_reason(*reasons)
    return pc.if_else(pc.is_null(reason), values, pa.scalar(None, values.type)), reason


def clean_date(col: Column, present: pa.Array, raw: pa.Array, ctx: Context) -> tuple[pa.Array, pa.Array]:
    """Dates: ISO (YYYY-MM-DD) by default, or the column's formats, in order."""
    series = pd.Series(present.to_pandas(types_mapper=pd.ArrowDtype), dtype="string")
    two_readings = pd.Series(False, index=series.index)
    if col.formats:
        iso_shaped = series_mask(pc.match_substring_regex(present, ISO_DATE), series.index)
        parsed, two_readings = parse_formats(series, col.formats, iso_shaped, utc=False)
    else:
        iso = series_mask(pc.match_substring_regex(present, ISO_DATE), series.index)
        parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us]")
        parsed[iso] = pd.to_datetime(series[iso], format="%Y-%m-%d", errors="coerce").astype("datetime64[us]")
    has_time = parsed.notna() & (parsed != parsed.dt.normalize())
    timestamps = pa.Array.from_pandas(parsed.dt.normalize(), type=pa.timestamp("us"))
    values = pc.cast(timestamps, pa.date32())
    unparsed = pc.and_(pc.is_valid(present), pc.is_null(values))
    reasons = [
        day_month_order(col, col.formats, series, parsed, ctx, raw),
        two_readings_reason(col, two_readings, raw),
        reason_where(unparsed, f"{col.name} '{{v}}' is not a recognised date", raw),
        reason_where(has_time.to_numpy(), f"{col.name} '{{v}}' has a time of day: a date column would drop it", raw),
    ]
    for bound, op, word in ((col.min, pc.less, "before"), (col.max, pc.greater, "after")):
        if bound is not None:
            limit = pa.scalar(date.fromisoformat(str(bound)), pa.date32())
            reasons.append(reason_where(op(values, limit), f"{col.name} '{{v}}' is {word} {bound}", raw))
    reason = first_reason(*reasons)
    return pc.if_else(pc.is_null(reason), values, pa.scalar(None, values.type)), reason


def _swapped(fmt: str) -> str | None:
    """The format with day and month the other way round, or None if it does not read both as numbers."""
    if fmt == "ISO8601" or "%m" not in fmt or "%d" not in fmt:
        return None
    return fmt.replace("%m", "\0").replace("%d", "%m").replace("\0", "%d")


def day_month_order(
    col: Column, formats: tuple[str, ...], series: pd.Series, parsed: pd.Series, ctx: Context, raw: pa.Array
) -> pa.Array:
    """Reasons for values the file's own evidence says are not what the contract's formats read.

    A value that none of the formats reads but that reads with day and month swapped (13/03/2026 under
    %m/%d/%Y) proves the file writes them the other way round; from then on (the whole file: it is cleaned again
    when the evidence comes after such values) its ambiguous values (01/03/2026, both ways a date) are rejected,
    never read the contract's way. The evidence values themselves are not recognised dates, with a hint.
    """
    swaps = [(fmt, other) for fmt in formats if (other := _swapped(fmt))]
    n = len(series)
    if not swaps:
        return pa.nulls(n, pa.string())
    utc = str(parsed.dtype).endswith("UTC]")
    unread = series.notna() & parsed.isna()
    proof = pd.Series(False, index=series.index)
    for _, other in swaps:
        if unread.any():
            proof |= unread & pd.to_datetime(series.where(unread), format=other, errors="coerce", utc=utc).notna()
    state = ctx.state
    if proof.any() and col.name not in state.proven_swapped:
        state.proven_swapped[col.name] = str(series[proof].iloc[0])
        state.notes.append(
            f"{col.name}: values like {state.proven_swapped[col.name]!r} show the file writes day and month the "
            f"other way round than the contract's formats ({', '.join(formats)}): values that read both ways are "
            "rejected, not guessed"
        )
    both = pd.Series(False, index=series.index)
    read = parsed.notna()
    for _, other in swaps:
        if read.any():
            again = pd.to_datetime(series.where(read), format=other, errors="coerce", utc=utc)
            both |= read & again.notna() & (again != parsed)
    hint = reason_where(
        proof.to_numpy(),
        f"{col.name} '{{v}}' is not a recognised date/time: it reads with day and month the other way round than "
        f"the contract's formats ({', '.join(formats)})",
        raw,
    )
    if col.name not in state.proven_swapped:
        state.read_ambiguous[col.name] = state.read_ambiguous.get(col.name, 0) + int(both.sum())
        return hint
    example = state.proven_swapped[col.name]
    guessed = reason_where(
        both.to_numpy(),
        f"{col.name} '{{v}}' reads both ways, and this file writes day and month the other way round than the "
        f"contract's formats (as in {example!r}): not guessed",
        raw,
    )
    return first_reason(hint, guessed)


def two_readings_reason(col: Column, ambiguous: pd.Series, raw: pa.Array) -> pa.Array:
    message = f"{col.name} '{{v}}' reads as different dates in the contract's formats ({', '.join(col.formats)})"
    return reason_where(ambiguous.to_numpy(), message, raw)


def series_mask(mask: pa.Array, index: pd.Index) -> pd.Series:
    return pd.Series(mask.fill_null(False).to_numpy(zero_copy_only=False), index=index)
