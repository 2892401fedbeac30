"""The contract's expectations on typed values: which rows meet each, and how a person reads it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract.model import (
    Between,
    Contract,
    InSet,
    LengthBetween,
    MatchRegex,
    NotInSet,
    NotNull,
)
from include.etl.contract.values.common import shown


def file_expectations(contract: Contract) -> list[Any]:
    """The contract's expectations judged per file (quarantine_file, warn), in contract order."""
    return [e for e in contract.expectations if e.severity != "reject_row"]


def unmet_mask(e: Any, values: pa.Array) -> pa.Array:
    """Per row: True where the value does not meet the expectation (nulls meet all but not_null)."""
    if isinstance(e, NotNull):
        return pc.is_null(values)
    if isinstance(e, Between):
        out = pa.array(np.zeros(len(values), dtype=bool))
        for bound, op in ((e.min_value, pc.less), (e.max_value, pc.greater)):
            if bound is not None:
                out = pc.or_(out, op(values, typed_scalar(bound, values.type)).fill_null(False))
        return out
    if isinstance(e, InSet | NotInSet):
        member = pc.is_in(values, value_set=pa.array([as_type(v, values.type) for v in e.value_set], values.type))
        member = member.fill_null(not isinstance(e, InSet))
        return pc.invert(member) if isinstance(e, InSet) else pc.and_(member, pc.is_valid(values))
    if isinstance(e, MatchRegex):
        return pc.invert(pc.match_substring_regex(values, e.regex).fill_null(True))
    if isinstance(e, LengthBetween):
        length = pc.utf8_length(values)
        out = pa.array(np.zeros(len(values), dtype=bool))
        if e.min_value is not None:
            out = pc.or_(out, pc.less(length, e.min_value).fill_null(False))
        if e.max_value is not None:
            out = pc.or_(out, pc.greater(length, e.max_value).fill_null(False))
        return out
    raise TypeError(f"not a row expectation: {e!r}")


def describe_unmet(e: Any, value: str) -> str:
    """A reason that names the rule a value broke."""
    col = e.column
    if isinstance(e, NotNull):
        return f"{col} is empty (expect_column_values_to_not_be_null)"
    if isinstance(e, Between):
        bounds = ", ".join(p for p in (_bound("at least", e.min_value), _bound("at most", e.max_value)) if p)
        return f"{col} {value} is not {bounds} (expect_column_values_to_be_between)"
    if isinstance(e, InSet):
        return f"{col} '{value}' is not one of {', '.join(map(str, e.value_set))} (expect_column_values_to_be_in_set)"
    if isinstance(e, NotInSet):
        return f"{col} '{value}' is one of {', '.join(map(str, e.value_set))} (expect_column_values_to_not_be_in_set)"
    if isinstance(e, MatchRegex):
        return f"{col} '{value}' does not match {e.regex} (expect_column_values_to_match_regex)"
    bounds = ", ".join(p for p in (_bound("at least", e.min_value), _bound("at most", e.max_value)) if p)
    return f"{col} '{value}' is not {bounds} characters long (expect_column_value_lengths_to_be_between)"


def describe_expectation(e: Any) -> str:
    """The expectation in a few words, for summaries."""
    column = getattr(e, "column", None)
    parts = [e.expectation.removeprefix("expect_")]
    if column:
        parts.append(f"({column})")
    for name in ("min_value", "max_value", "value_set", "regex"):
        value = getattr(e, name, None)
        if value is not None:
            text = f"[{', '.join(map(shown, value))}]" if name == "value_set" else shown(value)
            parts.append(f"{name.removesuffix('_value')}={text}" if name != "value_set" else f"in {text}")
    return " ".join(parts)


def _bound(word: str, value: Any) -> str:
    return f"{word} {value}" if value is not None else ""


def typed_scalar(value: Any, kind: pa.DataType) -> pa.Scalar:
    return pa.scalar(as_type(value, kind), kind)


def as_type(value: Any, kind: pa.DataType) -> Any:
    if pa.types.is_decimal(kind):
        return Decimal(str(value))
    if pa.types.is_timestamp(kind):
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if pa.types.is_date(kind):
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    return value
