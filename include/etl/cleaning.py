"""Apply a data contract to one batch of raw strings.

Every rule is vectorized (pyarrow compute; pandas for timestamp formats). Each column
yields typed values and, per row, a rejection reason or null. A row with any reason
is rejected with all its reasons and its original values; the others are clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract import Column, Contract, Derived, HeaderMapping
from include.etl.csv_reader import RawBatch

SOURCE_KEY = "source_key"
SOURCE_LINE = "source_line"
REJECT_REASON = "reject_reason"

_INT_RE = r"^[+-]?\d{1,18}(\.0*)?$"
_DECIMAL_RE = r"^(?P<sign>[+-]?)(?P<int>\d+)(?:\.(?P<frac>\d*))?$"
# A currency sign before or after the number, with optional space: "$ 12.50", "12,50 €" (then rejected).
_LEADING_CURRENCY = r"^([+-]?)\s*[$€£]\s*"
_TRAILING_CURRENCY = r"\s*[$€£]$"
# pandas' ISO8601 parser also takes "2026" or "20260102"; a timestamp must at least spell out a date.
_ISO_DATE_PREFIX = r"^\d{4}-\d{1,2}-\d{1,2}"
# Thousands separators are accepted only in groups of three ("1,234.50", not "3,00").
_THOUSANDS_RE = r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$"


@dataclass(frozen=True)
class CleanBatch:
    """The outcome of cleaning one batch: clean rows and rejected rows."""

    clean: pa.Table
    rejected: pa.Table


@dataclass(frozen=True)
class _Result:
    values: pa.Array
    reason: pa.Array  # string, null where the value is fine


def arrow_type(column: Column | Derived) -> pa.DataType:
    """The Arrow type a contract column is stored as in processed Parquet."""
    return {
        "text": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "integer": pa.int32(),
        "decimal": pa.decimal128(column.precision, column.scale),
        "date": pa.date32(),
    }[column.type]


def output_schema(contract: Contract) -> pa.Schema:
    """Schema of processed Parquet files: contract columns, derived columns, lineage."""
    fields = [pa.field(c.name, arrow_type(c), nullable=not c.rejects_blank) for c in contract.columns]
    fields += [pa.field(d.name, arrow_type(d)) for d in contract.derived]
    fields += [pa.field(SOURCE_KEY, pa.string(), nullable=False), pa.field(SOURCE_LINE, pa.int64(), nullable=False)]
    return pa.schema(fields)


def rejected_schema(header: list[str]) -> pa.Schema:
    """Schema of rejected-row files: line, reason, the raw record if malformed, original columns."""
    # Unique across our own columns too: a re-dropped rejected file has them in its header.
    names = _unique([SOURCE_LINE, REJECT_REASON, "raw_record", *header])
    return pa.schema([pa.field(n, pa.int64() if n == SOURCE_LINE else pa.string()) for n in names])


def _unique(header: list[str]) -> list[str]:
    """Header names made unique (`a`, `a` -> `a`, `a_2`) so they can be table columns."""
    seen: dict[str, int] = {}
    out = []
    for h in header:
        name = h or "unnamed"
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def clean_batch(
    batch: RawBatch, header: list[str], mapping: HeaderMapping, contract: Contract, source_key: str
) -> CleanBatch:
    """Clean one batch of raw rows against the contract."""
    n = batch.num_rows
    results: dict[str, _Result] = {}
    for col in contract.columns:
        if col.name in mapping.index_of:
            raw = batch.columns[mapping.index_of[col.name]]
        else:
            raw = pa.nulls(n, pa.string()).fill_null("")
        results[col.name] = _clean_column(col, raw, contract.csv.null_values)
    for d in contract.derived:
        results[d.name] = _derive(d, results)

    reasons = [r.reason for r in results.values()]
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
    reason_text = ["; ".join(r[i].as_py() for r in reasons if r[i].is_valid) for i in bad_idx]
    rejected = _rejected_table(
        header, [c.take(pa.array(bad_idx)) for c in batch.columns], batch.lines[bad_idx], reason_text
    )
    return CleanBatch(clean, rejected)


def _rejected_table(header: list[str], columns: list[pa.Array], lines: np.ndarray, reasons: list[str]) -> pa.Table:
    schema = rejected_schema(header)
    n = len(lines)
    arrays = [pa.array(lines, pa.int64()), pa.array(reasons, pa.string()), pa.nulls(n, pa.string()), *columns]
    return pa.Table.from_arrays(arrays, schema=schema)


def malformed_table(header: list[str], lines: list[int], texts: list[str], reasons: list[str]) -> pa.Table:
    """Rejected rows for records that could not be split into the header's fields."""
    schema = rejected_schema(header)
    n = len(lines)
    arrays = [pa.array(lines, pa.int64()), pa.array(reasons, pa.string()), pa.array(texts, pa.string())]
    arrays += [pa.nulls(n, pa.string()) for _ in header]
    return pa.Table.from_arrays(arrays, schema=schema)


def whole_file_rejected(batch: RawBatch, header: list[str], reason: str) -> pa.Table:
    """Every row of a batch rejected with one file-level reason."""
    return _rejected_table(header, batch.columns, batch.lines, [reason] * batch.num_rows)


# --- column rules -------------------------------------------------------------------


def _reason(mask: pa.Array | np.ndarray, template: str, values: pa.Array | None = None) -> pa.Array:
    """A reason string where mask is true, null elsewhere; `{v}` in template is the value.

    The text is built for the masked rows only: most rows of a batch have no reason.
    """
    mask = pa.array(mask) if isinstance(mask, np.ndarray) else mask.fill_null(False)
    if values is None or "{v}" not in template:
        return pc.if_else(mask, pa.scalar(template), pa.scalar(None, pa.string()))
    if not pc.any(mask).as_py():
        return pa.nulls(len(mask), pa.string())
    before, after = template.split("{v}", 1)
    hits = pc.cast(pc.filter(values, mask), pa.string())
    text = pc.binary_join_element_wise(pa.scalar(before), hits, pa.scalar(after), "")
    return pc.replace_with_mask(pa.nulls(len(mask), pa.string()), mask, text)


def _first_reason(*reasons: pa.Array) -> pa.Array:
    out = reasons[0]
    for r in reasons[1:]:
        out = pc.coalesce(out, r)
    return out


def _clean_column(col: Column, raw: pa.Array, null_values: tuple[str, ...]) -> _Result:
    trimmed = pc.utf8_trim_whitespace(raw)
    blank = pc.is_in(trimmed, value_set=pa.array(list(null_values), pa.string()))
    blank_np = blank.to_numpy(zero_copy_only=False)
    blank_reason = _reason(blank, f"{col.name} is blank") if col.rejects_blank else pa.nulls(len(raw), pa.string())
    present = pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
    values, reason = {
        "text": _text,
        "integer": _integer,
        "decimal": _decimal,
        "timestamp": _timestamp,
    }[col.type](col, present, raw)
    if not col.rejects_blank and col.type == "text":
        values = pc.if_else(blank, pa.scalar(col.on_blank), values)
    if not col.rejects_blank and col.type != "text":
        fill = pa.scalar(col.on_blank).cast(values.type) if col.on_blank not in ("", "null") else None
        values = pc.fill_null(values, fill) if fill is not None else values
    reason = pc.if_else(pa.array(blank_np), blank_reason, reason)
    return _Result(values, reason)


def _text(col: Column, present: pa.Array, raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    collapsed = _collapse_whitespace(present)
    if col.allowed:
        allowed = pa.array(list(col.allowed), pa.string())
        idx = pc.index_in(pc.utf8_lower(collapsed), value_set=pc.utf8_lower(allowed))
        values = pc.take(allowed, idx)
        bad = pc.and_(pc.is_valid(collapsed), pc.is_null(idx))
        return values, _reason(bad, f"{col.name} '{{v}}' is not one of {', '.join(col.allowed)}", raw)
    if col.canonical:
        canonical = pa.array(list(col.canonical), pa.string())
        idx = pc.index_in(pc.utf8_lower(collapsed), value_set=pc.utf8_lower(canonical))
        values = pc.coalesce(pc.take(canonical, idx), _title(collapsed))
        return values, pa.nulls(len(present), pa.string())
    return collapsed, pa.nulls(len(present), pa.string())


def _collapse_whitespace(values: pa.Array) -> pa.Array:
    """Runs of whitespace to one space; the (costlier) replace runs only on rows that have one."""
    runs = pc.match_substring_regex(values, r"\s\s|[^\S ]").fill_null(False)
    if not pc.any(runs).as_py():
        return values
    return pc.replace_with_mask(values, runs, pc.replace_substring_regex(pc.filter(values, runs), r"\s+", " "))


# utf8_title capitalizes after an apostrophe ("Men'S Wear"); English contractions stay lower case.
_CONTRACTIONS = ("S", "T", "D", "M", "Ll", "Re", "Ve")


def _title(values: pa.Array) -> pa.Array:
    titled = pc.utf8_title(values)
    if pc.any(pc.match_substring(titled, "'")).as_py():
        for suffix in _CONTRACTIONS:
            titled = pc.replace_substring_regex(titled, rf"(\w)'{suffix}\b", rf"\1'{suffix.lower()}")
    return titled


def _integer(col: Column, present: pa.Array, raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    ok = pc.match_substring_regex(present, _INT_RE)
    whole = pc.replace_substring_regex(pc.if_else(ok, present, pa.scalar(None, pa.string())), r"^\+|\.0*$", "")
    numbers = pc.cast(whole, pa.int64())
    not_int = _reason(pc.invert(ok), f"{col.name} '{{v}}' is not a whole number", raw)
    low = (
        _reason(pc.less(numbers, col.min), f"{col.name} {{v}} is below {col.min}", numbers)
        if col.min is not None
        else None
    )
    high = (
        _reason(pc.greater(numbers, col.max), f"{col.name} {{v}} is above {col.max}", numbers)
        if col.max is not None
        else None
    )
    reason = _first_reason(not_int, *(r for r in (low, high) if r is not None))
    in_range = pc.and_(pc.is_null(reason), pc.is_valid(numbers))
    return pc.cast(pc.if_else(in_range, numbers, pa.scalar(None, pa.int64())), pa.int32()), reason


def _decimal(col: Column, present: pa.Array, raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    stripped = pc.replace_substring_regex(present, _LEADING_CURRENCY, r"\1")
    stripped = pc.replace_substring_regex(stripped, _TRAILING_CURRENCY, "")
    grouped = pc.match_substring_regex(stripped, _THOUSANDS_RE)
    stripped = pc.if_else(grouped, pc.replace_substring(stripped, ",", ""), stripped)
    parts = pc.extract_regex(stripped, _DECIMAL_RE)
    ok = pc.is_valid(parts).fill_null(False)
    sign, whole, frac = (pc.struct_field(parts, i) for i in range(3))
    frac = frac.fill_null("")
    whole_digits = pc.utf8_length(pc.utf8_ltrim(whole, "0"))
    too_precise = pc.invert(pc.match_substring_regex(frac, rf"^\d{{0,{col.scale}}}0*$").fill_null(True))
    too_big = pc.greater(whole_digits, col.precision - col.scale)
    fits = pc.and_(ok, pc.invert(pc.or_(too_precise, too_big).fill_null(False)))
    frac_fixed = pc.utf8_slice_codeunits(
        pc.binary_join_element_wise(frac, pa.scalar("0" * col.scale), ""), 0, col.scale
    )
    text = pc.binary_join_element_wise(sign, whole.fill_null("0"), pa.scalar("."), frac_fixed, "")
    values = pc.cast(pc.if_else(fits, text, pa.scalar(None, pa.string())), pa.decimal128(col.precision, col.scale))
    not_number = _reason(pc.invert(ok), f"{col.name} '{{v}}' is not a number", raw)
    precision = _reason(pc.and_(ok, too_precise), f"{col.name} '{{v}}' has more than {col.scale} decimal places", raw)
    big = _reason(
        pc.and_(ok, too_big), f"{col.name} '{{v}}' is too large for numeric({col.precision},{col.scale})", raw
    )
    reasons = [not_number, precision, big]
    if col.min is not None:
        below = pc.less(values, pa.scalar(Decimal(str(col.min))).cast(values.type))
        reasons.append(_reason(below, f"{col.name} {{v}} is below {col.min}", values))
    if col.max is not None:
        above = pc.greater(values, pa.scalar(Decimal(str(col.max))).cast(values.type))
        reasons.append(_reason(above, f"{col.name} {{v}} is above {col.max}", values))
    reason = _first_reason(*reasons)
    return pc.if_else(pc.is_null(reason), values, pa.scalar(None, values.type)), reason


def _timestamp(col: Column, present: pa.Array, raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    series = pd.Series(present.to_pandas(types_mapper=pd.ArrowDtype), dtype="string")
    parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]")
    todo = series.notna()
    iso_shaped = pd.Series(
        pc.match_substring_regex(present, _ISO_DATE_PREFIX).fill_null(False).to_numpy(zero_copy_only=False),
        index=series.index,
    )
    for fmt in col.formats:
        candidates = todo & iso_shaped if fmt == "ISO8601" else todo
        if not candidates.any():
            continue
        attempt = pd.to_datetime(series[candidates], format=fmt, errors="coerce", utc=True).astype(
            "datetime64[us, UTC]"
        )
        parsed[candidates] = attempt
        todo &= parsed.isna()
    values = pa.Array.from_pandas(parsed, type=pa.timestamp("us", tz="UTC"))
    unparsed = pc.and_(pc.is_valid(present), pc.is_null(values))
    reasons = [_reason(unparsed, f"{col.name} '{{v}}' is not a recognised date/time", raw)]
    for bound, op, word in ((col.min, pc.less, "before"), (col.max, pc.greater, "after")):
        if bound is not None:
            limit = pa.scalar(datetime.fromisoformat(str(bound)).replace(tzinfo=UTC), pa.timestamp("us", tz="UTC"))
            reasons.append(_reason(op(values, limit), f"{col.name} '{{v}}' is {word} {bound}", raw))
    reason = _first_reason(*reasons)
    return pc.if_else(pc.is_null(reason), values, pa.scalar(None, values.type)), reason


def _derive(d: Derived, results: dict[str, _Result]) -> _Result:
    n = len(next(iter(results.values())).values)
    if d.source is not None:
        return _Result(pc.cast(results[d.source].values, arrow_type(d)), pa.nulls(n, pa.string()))
    product = results[d.product_of[0]].values
    for name in d.product_of[1:]:
        factor = results[name].values
        if pa.types.is_integer(product.type):
            product = pc.cast(product, pa.decimal128(19, 0))
        if pa.types.is_integer(factor.type):
            factor = pc.cast(factor, pa.decimal128(19, 0))
        product = pc.multiply(product, factor)
    limit = pa.scalar(Decimal(10) ** (d.precision - d.scale)).cast(pa.decimal128(d.precision + 1, 0))
    too_big = pc.greater_equal(pc.abs(product), pc.cast(limit, product.type))
    reason = _reason(too_big, f"{d.name} {{v}} is too large for numeric({d.precision},{d.scale})", product)
    fits = pc.if_else(too_big.fill_null(False), pa.scalar(None, product.type), product)
    return _Result(pc.cast(fits, arrow_type(d)), reason)
