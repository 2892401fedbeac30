"""Apply a data contract to one batch of raw strings: typed values or a reason per row.

Every rule is vectorized (pyarrow compute; pandas for date and time formats). Each column has
a cleaner for its type that yields typed values and, per row, a rejection reason or null; the
contract's `reject_row` expectations add theirs; a row with any reason is rejected with all of
them and its original values. A value PostgreSQL could not store (a NUL character, a key too
long for its index) is a rejected row here, so the load never fails on data. File-level
expectations (`quarantine_file`, `warn`) are counted on the clean rows for the transform to judge.

One rule for what people's tools write: read a value as meant where the file says enough to be
sure (a currency sign, thousands separators in groups of three, a declared comma decimal, a
non-breaking space); otherwise reject the row with a reason that shows the problem, invisible
characters included, and never guess (an invisible character, an accounting negative the
contract does not declare, a date two formats read differently). Every value read differently
from its raw text is counted per file (`CleanBatch.reinterpreted`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract.expectations import as_type, describe_unmet, file_expectations, unmet_mask
from include.etl.contract.model import (
    INVISIBLE,
    ROW_EXPECTATIONS,
    Column,
    Contract,
    Derived,
    HeaderMapping,
    NotNull,
)
from include.etl.contract.schema import arrow_type, output_schema, rejected_schema
from include.etl.contract.values.common import Context, FileState, matches_beyond_ascii, reason_where, visible
from include.etl.contract.values.dates import clean_date, clean_timestamp
from include.etl.contract.values.numbers import clean_boolean, clean_decimal, clean_integer
from include.etl.contract.values.text import clean_text, unwrapped_formulas
from include.etl.names import SOURCE_KEY, SOURCE_LINE
from include.etl.reading.csv_reader import RawBatch
from include.etl.reading.value_bytes import may_contain

# PostgreSQL's btree indexes hold at most ~2700 bytes per entry: a longer key cannot be stored.
MAX_KEY_BYTES = 2000


@dataclass(frozen=True)
class CleanBatch:
    """The outcome of cleaning one batch: clean rows, rejected rows, file-level expectation counts.

    `unmet[i]` is (rows that do not meet file-level expectation i, rows it was evaluated on), in
    the order of `file_expectations(contract)`. `reinterpreted` counts the clean rows with a value
    read differently from its raw text, by kind. `time_seen` names the timestamp columns that had a
    time of day in some raw value.
    """

    clean: pa.Table
    rejected: pa.Table
    unmet: list[tuple[int, int]] = field(default_factory=list)
    reinterpreted: dict[str, int] = field(default_factory=dict)
    time_seen: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Result:
    values: pa.Array
    reason: pa.Array  # string, null where the value is fine


def clean_batch(
    batch: RawBatch,
    header: list[str],
    mapping: HeaderMapping,
    contract: Contract,
    source_key: str,
    state: FileState | None = None,
) -> CleanBatch:
    """Clean one batch of raw rows against the contract; `state` carries what earlier batches of the file showed."""
    n = batch.num_rows
    ctx = Context(contract, state if state is not None else FileState())
    results: dict[str, _Result] = {}
    extra_reasons: list[pa.Array] = []
    time_seen: set[str] = set()
    for col in contract.columns:
        if col.name in mapping.index_of:
            raw = batch.columns[mapping.index_of[col.name]]
        elif col.name in mapping.parts:
            raw, part_reason = _joined_parts(col, batch, header, mapping.parts[col.name], contract, ctx)
            extra_reasons.append(part_reason)
        else:
            raw = pa.nulls(n, pa.string()).fill_null("")
        if col.type == "timestamp" and n and pc.any(pc.match_substring(raw, ":")).as_py():
            time_seen.add(col.name)
        results[col.name] = _clean_column(col, raw, ctx)
    for d in contract.derived:
        results[d.name] = _derive(d, results, contract)
    reasons = [r.reason for r in results.values()] + extra_reasons
    for e in contract.expectations:
        if e.severity == "reject_row" and isinstance(e, ROW_EXPECTATIONS):
            unmet = unmet_mask(e, results[e.column].values)
            reasons.append(reason_where(unmet, describe_unmet(e, "{v}"), results[e.column].values))

    bad = np.zeros(n, dtype=bool)
    for r in reasons:
        bad |= r.is_valid().to_numpy(zero_copy_only=False)
    good = pa.array(~bad)

    clean_cols = {name: pc.filter(r.values, good) for name, r in results.items()}
    kept = int((~bad).sum())
    clean_cols[SOURCE_KEY] = pa.array([source_key] * kept, pa.string())
    clean_cols[SOURCE_LINE] = pa.array(batch.lines[~bad], pa.int64())
    clean = pa.Table.from_pydict(clean_cols, schema=output_schema(contract))

    bad_idx = np.flatnonzero(bad)
    taken = pa.array(bad_idx)
    per_rule = [r.take(taken).to_pylist() for r in reasons if r.null_count < len(r)]
    reason_text = [visible("; ".join(t for t in texts if t is not None)) for texts in zip(*per_rule, strict=True)]
    rejected = _rejected_table(header, [c.take(taken) for c in batch.columns], batch.lines[bad_idx], reason_text)
    unmet_counts = []
    for e in file_expectations(contract):
        if isinstance(e, ROW_EXPECTATIONS):
            values = clean.column(e.column).combine_chunks()
            evaluated = len(values) if isinstance(e, NotNull) else len(values) - values.null_count
            unmet_counts.append((int(pc.sum(unmet_mask(e, values)).as_py() or 0), evaluated))
        else:
            unmet_counts.append((0, kept))  # row counts are judged on the whole file
    reinterpreted = {kind: int(pc.sum(pc.and_(mask, good)).as_py() or 0) for kind, mask in ctx.reinterpreted.items()}
    return CleanBatch(clean, rejected, unmet_counts, {k: v for k, v in reinterpreted.items() if v}, time_seen)


def _joined_parts(
    col: Column, batch: RawBatch, header: list[str], parts: tuple[int, int], contract: Contract, ctx: Context
) -> tuple[pa.Array, pa.Array]:
    """A timestamp written as a date column and a time column, joined; a blank time part is a reason."""
    day, time_of_day = (pc.utf8_trim_whitespace(batch.columns[i]) for i in parts)
    nulls = pa.array(list(contract.csv.null_values), pa.string())
    blank_day, blank_time = (pc.is_in(v, value_set=nulls) for v in (day, time_of_day))
    joined = pc.if_else(blank_time, day, pc.binary_join_element_wise(day, time_of_day, " "))
    missing_time = pc.and_(blank_time, pc.invert(blank_day))
    reason = reason_where(missing_time, f"{col.name}: the time part ({header[parts[1]]}) is blank")
    ctx.note(f"{col.name} built from {header[parts[0]]} + {header[parts[1]]}", pc.invert(blank_day))
    return joined, reason


def _rejected_table(header: list[str], columns: list[pa.Array], lines: np.ndarray, reasons: list[str]) -> pa.Table:
    schema = rejected_schema(header)
    n = len(lines)
    arrays = [pa.array(lines, pa.int64()), pa.array(reasons, pa.string()), pa.nulls(n, pa.string()), *columns]
    return pa.Table.from_arrays(arrays, schema=schema)


def malformed_table(header: list[str], lines: list[int], texts: list[str], reasons: list[str]) -> pa.Table:
    """Rejected rows for records that could not be split into the header's fields (or decoded)."""
    schema = rejected_schema(header)
    n = len(lines)
    arrays = [pa.array(lines, pa.int64()), pa.array(reasons, pa.string()), pa.array(texts, pa.string())]
    arrays += [pa.nulls(n, pa.string()) for _ in header]
    return pa.Table.from_arrays(arrays, schema=schema)


def whole_file_rejected(batch: RawBatch, header: list[str], reason: str) -> pa.Table:
    """Every row of a batch rejected with one file-level reason."""
    return _rejected_table(header, batch.columns, batch.lines, [reason] * batch.num_rows)


# --- expectations on typed values ------------------------------------------------------------


# --- column rules -------------------------------------------------------------------


Cleaner = Callable[[Column, pa.Array, pa.Array, Context], tuple[pa.Array, pa.Array]]


def _clean_column(col: Column, raw: pa.Array, ctx: Context) -> _Result:
    contract = ctx.contract
    raw = unwrapped_formulas(col, raw, ctx)
    trimmed = pc.utf8_trim_whitespace(raw)
    blank = pc.is_in(trimmed, value_set=pa.array(list(contract.csv.null_values), pa.string()))
    blank_np = blank.to_numpy(zero_copy_only=False)
    blank_reason = reason_where(blank, f"{col.name} is blank") if col.rejects_blank else pa.nulls(len(raw), pa.string())
    present = pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
    values, reason = CLEANERS[col.type](col, present, raw, ctx)
    invisible = matches_beyond_ascii(raw, INVISIBLE)
    if invisible is not None:
        # Never guess what a hidden character means: show it and reject the row.
        message = f"{col.name} '{{v}}' contains a character a person cannot see"
        reason = pc.coalesce(reason_where(invisible, message, raw), reason)
    if contract.csv.escape_char is None and may_contain(raw, b'\\"'):
        # A backslash before a quote is how MySQL and PHP escape one: the writer meant a quote, the file says a
        # backslash and a quote. Not read either way without the contract's word.
        escaped = pc.match_substring(raw, '\\"').fill_null(False)
        message = (
            f'{col.name} \'{{v}}\' holds a backslash-escaped quote (\\"): set csv.escape_char: "\\\\" in the contract '
            "to read it as a quote"
        )
        reason = pc.coalesce(reason_where(escaped, message, raw), reason)
    nul = pc.match_substring(raw, "\x00").fill_null(False) if may_contain(raw, b"\x00") else None
    if nul is not None and pc.any(nul).as_py():
        # PostgreSQL text cannot hold U+0000: the row is rejected, never the load.
        reason = pc.coalesce(
            reason_where(nul, f"{col.name} contains a NUL character (0x00), which PostgreSQL cannot store"), reason
        )
    if col.name in contract.key and col.type == "text":
        too_long = pc.greater(pc.binary_length(values), MAX_KEY_BYTES).fill_null(False)
        if pc.any(too_long).as_py():
            message = f"{col.name} is longer than {MAX_KEY_BYTES} bytes, too long for the table's key index"
            reason = pc.coalesce(reason, reason_where(too_long, message))
    fill = col.fill
    if fill is not None:
        values = pc.if_else(blank, _fill_scalar(col, fill, values.type), values)
    reason = pc.if_else(pa.array(blank_np), blank_reason, reason)
    return _Result(values, reason)


def _fill_scalar(col: Column, fill: Any, kind: pa.DataType) -> pa.Scalar:
    if col.type == "timestamp":
        moment = datetime.fromisoformat(str(fill))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(col.zone))
        return pa.scalar(moment.astimezone(UTC), kind)
    return pa.scalar(as_type(fill, kind), kind)


CLEANERS: dict[str, Cleaner] = {
    "text": clean_text,
    "integer": clean_integer,
    "decimal": clean_decimal,
    "boolean": clean_boolean,
    "date": clean_date,
    "timestamp": clean_timestamp,
}


def _derive(d: Derived, results: dict[str, _Result], contract: Contract) -> _Result:
    n = len(next(iter(results.values())).values)
    if d.source is not None:
        values = results[d.source].values
        if d.type == "date" and pa.types.is_timestamp(values.type):
            source = contract.column(d.source)
            zone = d.timezone or contract.zone_of(source)
            local = pc.local_timestamp(values.cast(pa.timestamp("us", tz=zone)))
            return _Result(pc.cast(local, pa.date32()), pa.nulls(n, pa.string()))
        return _Result(pc.cast(values, arrow_type(d)), pa.nulls(n, pa.string()))
    product = results[d.product_of[0]].values
    for name in d.product_of[1:]:
        factor = results[name].values
        if pa.types.is_integer(product.type):
            product = pc.cast(product, pa.decimal128(19, 0))
        if pa.types.is_integer(factor.type):
            factor = pc.cast(factor, pa.decimal128(19, 0))
        product = pc.multiply(product, factor)
    precision, scale = d.precision or 18, d.scale or 0
    limit = pa.scalar(Decimal(10) ** (precision - scale)).cast(pa.decimal128(precision - scale + 1, 0))
    too_big = pc.greater_equal(pc.abs(product), pc.cast(limit, product.type))
    reason = reason_where(too_big, f"{d.name} {{v}} is too large for numeric({precision},{scale})", product)
    fits = pc.if_else(too_big.fill_null(False), pa.scalar(None, product.type), product)
    return _Result(pc.cast(fits, arrow_type(d)), reason)
