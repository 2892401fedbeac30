"""Integer, decimal and boolean values as people's tools write them: signs, currencies, thousands
separators in groups of three, the file's own decimal-mark evidence, accounting negatives; never guessed."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract.model import (
    CURRENCIES,
    CURRENCY_SIGNS,
    Column,
    Contract,
)
from include.etl.contract.schema import arrow_type
from include.etl.contract.values.common import Context, first_reason, reason_where
from include.etl.reading.value_bytes import may_contain

# Whole numbers: an optional sign, digits, an optional all-zero fraction ("3", "+3", "3.00").
_INT_RE = r"^(?P<sign>[+-]?)0*(?P<digits>\d+)(?:\.0*)?$"


_INT64_MAX = "9223372036854775807"


_DECIMAL_RE = r"^(?P<sign>[+-]?)(?P<int>\d*)(?:\.(?P<frac>\d*))?$"


# A currency sign or ISO code before or after the number, with optional (no-break) space: "$ 12.50", "12,50 €",
# "EUR 12.50", "-$3", "12.50\u00a0€". After the sign or code, the number (a digit, a sign, a point, a parenthesis).
_UNITS = "|".join(re.escape(u) for u in sorted([*CURRENCY_SIGNS, *CURRENCIES], key=len, reverse=True))


_GAP = r"[\s\x{00a0}\x{202f}]*"


_UNIT_BEFORE = rf"^(?P<sign>[+-]?){_GAP}(?P<unit>{_UNITS}){_GAP}(?P<rest>[-+\d.,(].*)$"


_UNIT_AFTER = rf"^(?P<rest>.*[\d.)]){_GAP}(?P<unit>{_UNITS})$"


_ACCOUNTING_NEGATIVE = r"^\(\s*([^()]*?)\s*\)$"


_SCIENTIFIC = r"^[+-]?(\d+[.,]?\d*|[.,]\d+)[eE][+-]?\d+$"


# Thousands separators per decimal separator (in groups of three only): ',' and '.' the one that is not
# the decimal separator, an apostrophe (Swiss), and spaces: plain, no-break, narrow no-break, figure.
_THOUSANDS = {".": (",", "'", " ", "\u00a0", "\u202f", "\u2007"), ",": (".", "'", " ", "\u00a0", "\u202f", "\u2007")}


def _number_spelling(col: Column, present: pa.Array, ctx: Context) -> tuple[pa.Array, pa.Array]:
    """A number as people's tools write it, in plain form (sign, digits, '.'), and a reason for spellings
    that are never read: (12.00) unless the contract declares accounting negatives, 1e3.

    Values already plain (sign, digits, the contract's decimal separator) only have that separator made
    a '.'; the others, usually few, go through every spelling rule.
    """
    decimal = ctx.contract.csv.decimal_separator
    plain = pc.match_substring_regex(present, rf"^[+-]?\d*{re.escape(decimal)}?\d*$").fill_null(True)
    text = present if decimal == "." else pc.replace_substring(present, decimal, ".")
    n = len(present)
    if pc.all(plain).as_py():
        return text, pa.nulls(n, pa.string())
    spelled = pc.invert(plain)
    zeros = pa.array(np.zeros(n, dtype=bool))

    def note(kind: str, mask: pa.Array) -> None:  # a mask of the spelled values, made one of the whole column
        ctx.note(kind, pc.replace_with_mask(zeros, spelled, mask.fill_null(False)))

    amounts, unit_reason = _currencies(col, pc.filter(present, spelled), ctx)
    evidence_reason = _decimal_mark_evidence(col, amounts, ctx)
    spelled_text, spelled_reason = _spelled_number(col, amounts, ctx.contract, note)
    reason = first_reason(unit_reason, evidence_reason, spelled_reason)
    return (
        pc.replace_with_mask(text, spelled, spelled_text),
        pc.replace_with_mask(pa.nulls(n, pa.string()), spelled, reason),
    )


def _decimal_mark_evidence(col: Column, values: pa.Array, ctx: Context) -> pa.Array:
    """Reasons for values the file's own evidence says are not what the contract's decimal separator reads.

    Under a '.' contract, "1,234" is 1234 (a thousands separator) unless the file shows it writes ',' as its
    decimal mark: a value with one ',' that is no thousands grouping ("12,5", "3805,130", "0,020") proves it.
    From then on (the whole file: it is cleaned again when the evidence comes late) a value that reads both ways
    ("29,850") is rejected, never read as thousands. The same for '.' under a ',' contract.
    """
    mark = "," if ctx.contract.csv.decimal_separator == "." else "."
    other = re.escape(mark)
    n = len(values)
    if not may_contain(values, mark.encode()):
        return pa.nulls(n, pa.string())
    core = pc.replace_substring_regex(values, r"^\((.*)\)$", r"\1")
    one_mark = pc.match_substring_regex(core, rf"^[+-]?\d+{other}\d+$").fill_null(False)
    both_ways = pc.match_substring_regex(core, rf"^[+-]?[1-9]\d{{0,2}}{other}\d{{3}}$").fill_null(False)
    proof = pc.and_(one_mark, pc.invert(both_ways))
    state = ctx.state
    if pc.any(proof).as_py() and col.name not in state.proven_decimal:
        example = pc.filter(values, proof)[0].as_py()
        state.proven_decimal[col.name] = example
        state.notes.append(
            f"{col.name}: values like {example!r} show the file writes {mark!r} as its "
            "decimal mark: values that read both ways are rejected, not guessed"
        )
    if col.name not in state.proven_decimal:
        state.read_ambiguous[col.name] = state.read_ambiguous.get(col.name, 0) + (pc.sum(both_ways).as_py() or 0)
        return pa.nulls(n, pa.string())
    message = (
        f"{col.name} '{{v}}' reads both ways, and this file writes {mark!r} as its decimal mark (as in "
        f"{state.proven_decimal[col.name]!r}): not guessed"
    )
    return reason_where(both_ways, message, values)


def _unit_codes(unit: str) -> tuple[str, ...]:
    return CURRENCY_SIGNS.get(unit, (unit,))


def _currencies(col: Column, values: pa.Array, ctx: Context) -> tuple[pa.Array, pa.Array]:
    """The amounts with their currency sign or code taken off, and a reason for those in another currency than
    the column's (the contract's `currency`, else the first one this file's values name)."""
    n = len(values)
    negative = pc.match_substring_regex(values, _ACCOUNTING_NEGATIVE).fill_null(False)  # ($12.00): the sign inside
    core = pc.if_else(negative, pc.replace_substring_regex(values, _ACCOUNTING_NEGATIVE, r"\1"), values)
    before = pc.extract_regex(core, _UNIT_BEFORE)
    after = pc.extract_regex(core, _UNIT_AFTER)
    unit = pc.coalesce(pc.struct_field(before, "unit"), pc.struct_field(after, "unit"))
    if unit.null_count == n:
        return values, pa.nulls(n, pa.string())
    stripped = pc.coalesce(
        pc.binary_join_element_wise(pc.struct_field(before, "sign"), pc.struct_field(before, "rest"), ""),
        pc.struct_field(after, "rest"),
        core,
    )
    stripped = pc.if_else(negative, pc.binary_join_element_wise("(", stripped, ")", ""), stripped)
    declared = col.currency
    if declared is None and col.name not in ctx.state.currencies:
        first = next(u for u in unit.to_pylist() if u is not None)
        ctx.state.currencies[col.name] = first
        ctx.state.notes.append(
            f"{col.name}: amounts in {_unit_name(first)}, read without their currency sign or code (the contract "
            "names no currency: values in another one are rejected)"
        )
    column_unit = declared or ctx.state.currencies[col.name]
    wrong = [u for u in set(unit.drop_null().to_pylist()) if not _accepts(column_unit, u, declared is not None)]
    if not wrong:
        return stripped, pa.nulls(n, pa.string())
    whose = "the column's currency" if declared else f"the currency of this file's first {col.name} amount"
    reasons = [
        reason_where(
            pc.equal(unit, u).fill_null(False),
            f"{col.name} '{{v}}' is in {_unit_name(u)}, not {_unit_name(column_unit)} ({whose})",
            values,
        )
        for u in sorted(wrong)
    ]
    return stripped, first_reason(*reasons)


def _unit_name(unit: str) -> str:
    """A currency sign or code as a reason shows it: "£ (GBP)", "$", "EUR"."""
    codes = CURRENCY_SIGNS.get(unit)
    return f"{unit} ({codes[0]})" if codes and len(codes) == 1 else unit


def _accepts(column_unit: str, unit: str, declared: bool) -> bool:
    """Whether a value's sign or code fits the column's currency: the same code, or a sign that stands for it (a
    declared CAD takes "$"; without a declaration "$" and "USD" are one)."""
    if unit == column_unit:
        return True
    if declared:
        return column_unit in _unit_codes(unit)
    return _unit_codes(column_unit)[0] == _unit_codes(unit)[0]


def _spelled_number(
    col: Column, present: pa.Array, contract: Contract, note: Callable[[str, pa.Array], None]
) -> tuple[pa.Array, pa.Array]:
    """`_number_spelling` of values that are not plain numbers."""
    dialect = contract.csv
    n = len(present)
    reason: pa.Array = pa.nulls(n, pa.string())
    text = present
    negative = pc.match_substring_regex(text, _ACCOUNTING_NEGATIVE).fill_null(False)
    if pc.any(negative).as_py():
        if dialect.accounting_negatives:
            note(f"{col.name} accounting negatives (12.00) read as -12.00", negative)
            text = pc.replace_substring_regex(text, _ACCOUNTING_NEGATIVE, r"-\1")
        else:
            message = (
                f"{col.name} '{{v}}' is an accounting negative: set csv.accounting_negatives: true "
                "in the contract to read it as negative"
            )
            reason = reason_where(negative, message, present)
    decimal = dialect.decimal_separator
    point = re.escape(decimal)
    for sep in _THOUSANDS[decimal]:
        # The first group never starts with 0: "0,020" is no thousands grouping.
        grouped = pc.match_substring_regex(text, rf"^[+-]?[1-9]\d{{0,2}}({re.escape(sep)}\d{{3}})+({point}\d*)?$")
        grouped = grouped.fill_null(False)
        if pc.any(grouped).as_py():
            text = pc.if_else(grouped, pc.replace_substring(text, sep, ""), text)
    if decimal == ",":
        # A "." left (not thousands in groups of three): "1.5" is not read as 1.5 under a "," contract.
        stray = pc.match_substring(text, ".").fill_null(False)
        if pc.any(stray).as_py():
            message = f"{col.name} '{{v}}' is not a number (the contract's decimal separator is ',', not '.')"
            reason = first_reason(reason, reason_where(stray, message, present))
        text = pc.replace_substring(text, ",", ".")
    scientific = pc.match_substring_regex(present, _SCIENTIFIC).fill_null(False)
    if pc.any(scientific).as_py():
        message = f"{col.name} '{{v}}' is in scientific notation, which is not read as a number here"
        reason = first_reason(reason, reason_where(scientific, message, present))
    return text, reason


def _not_a_number(col: Column, bad: pa.Array, spelled: pa.Array, raw: pa.Array, ctx: Context) -> pa.Array:
    """The reason for values that are not numbers; a hint where the decimal separator looks swapped ("3,00")."""
    decimal = ctx.contract.csv.decimal_separator
    other = "," if decimal == "." else "."
    swapped = pc.match_substring_regex(spelled, rf"^[+-]?\d+{re.escape(other)}\d{{1,2}}$").fill_null(False)
    hint = f" (the contract's decimal separator is '{decimal}', not '{other}')"
    return first_reason(
        reason_where(pc.and_(bad, swapped), f"{col.name} '{{v}}' is not a number{hint}", raw),
        reason_where(bad, f"{col.name} '{{v}}' is not a number", raw),
    )


def clean_integer(col: Column, present: pa.Array, raw: pa.Array, ctx: Context) -> tuple[pa.Array, pa.Array]:
    present, spelling = _number_spelling(col, present, ctx)
    parts = pc.extract_regex(present, _INT_RE)
    ok = pc.is_valid(parts).fill_null(False)
    sign, digits = pc.replace_substring(pc.struct_field(parts, 0), "+", ""), pc.struct_field(parts, 1)
    length = pc.utf8_length(digits)
    too_big = pc.or_(
        pc.greater(length, 19), pc.and_(pc.equal(length, 19), pc.greater(digits, pa.scalar(_INT64_MAX)))
    ).fill_null(False)
    whole = pc.if_else(
        pc.and_(ok, pc.invert(too_big)), pc.binary_join_element_wise(sign, digits, ""), pa.scalar(None, pa.string())
    )
    numbers = pc.cast(whole, pa.int64())
    not_int = reason_where(pc.invert(ok), f"{col.name} '{{v}}' is not a whole number", raw)
    beyond = reason_where(pc.and_(ok, too_big), f"{col.name} '{{v}}' is beyond the 64-bit integer range", raw)
    low = (
        reason_where(pc.less(numbers, col.min), f"{col.name} {{v}} is below {col.min}", numbers)
        if col.min is not None
        else None
    )
    high = (
        reason_where(pc.greater(numbers, col.max), f"{col.name} {{v}} is above {col.max}", numbers)
        if col.max is not None
        else None
    )
    reason = first_reason(spelling, not_int, beyond, low, high)
    in_range = pc.and_(pc.is_null(reason), pc.is_valid(numbers))
    values = pc.if_else(in_range, numbers, pa.scalar(None, pa.int64()))
    return pc.cast(values, arrow_type(col)), reason


def clean_decimal(col: Column, present: pa.Array, raw: pa.Array, ctx: Context) -> tuple[pa.Array, pa.Array]:
    precision, scale = col.precision or 18, col.scale or 0
    stripped, spelling = _number_spelling(col, present, ctx)
    parts = pc.extract_regex(stripped, _DECIMAL_RE)
    sign, whole, frac = (pc.struct_field(parts, i) for i in range(3))
    frac = frac.fill_null("")
    # At least one digit: "." alone is not a number, ".5" and "5." are.
    has_digit = pc.greater(pc.add(pc.utf8_length(whole.fill_null("")), pc.utf8_length(frac)), 0)
    ok = pc.and_(pc.is_valid(parts), has_digit).fill_null(False)
    whole_digits = pc.utf8_length(pc.utf8_ltrim(whole.fill_null(""), "0"))
    too_precise = pc.invert(pc.match_substring_regex(frac, rf"^\d{{0,{scale}}}0*$").fill_null(True))
    too_big = pc.greater(whole_digits, precision - scale)
    fits = pc.and_(ok, pc.invert(pc.or_(too_precise, too_big).fill_null(False)))
    frac_fixed = pc.utf8_slice_codeunits(pc.binary_join_element_wise(frac, pa.scalar("0" * scale), ""), 0, scale)
    int_text = pc.if_else(pc.equal(pc.utf8_length(whole.fill_null("")), 0), pa.scalar("0"), whole.fill_null("0"))
    text = pc.binary_join_element_wise(sign, int_text, pa.scalar("."), frac_fixed, "")
    if scale == 0:
        text = pc.binary_join_element_wise(sign, int_text, "")
    values = pc.cast(pc.if_else(fits, text, pa.scalar(None, pa.string())), pa.decimal128(precision, scale))
    not_number = _not_a_number(col, pc.invert(ok), stripped, raw, ctx)
    places = reason_where(pc.and_(ok, too_precise), f"{col.name} '{{v}}' has more than {scale} decimal places", raw)
    big = reason_where(pc.and_(ok, too_big), f"{col.name} '{{v}}' is too large for numeric({precision},{scale})", raw)
    reasons = [spelling, not_number, places, big]
    if col.min is not None:
        below = pc.less(values, pa.scalar(Decimal(str(col.min))).cast(values.type))
        reasons.append(reason_where(below, f"{col.name} {{v}} is below {col.min}", values))
    if col.max is not None:
        above = pc.greater(values, pa.scalar(Decimal(str(col.max))).cast(values.type))
        reasons.append(reason_where(above, f"{col.name} {{v}} is above {col.max}", values))
    reason = first_reason(*reasons)
    return pc.if_else(pc.is_null(reason), values, pa.scalar(None, values.type)), reason


def clean_boolean(col: Column, present: pa.Array, raw: pa.Array, ctx: Context) -> tuple[pa.Array, pa.Array]:
    lower = pc.utf8_lower(present)
    true = pc.is_in(lower, value_set=pa.array([v.casefold() for v in col.true_values], pa.string()))
    false = pc.is_in(lower, value_set=pa.array([v.casefold() for v in col.false_values], pa.string()))
    values = pc.if_else(true, True, pc.if_else(false, False, pa.scalar(None, pa.bool_())))
    values = pc.if_else(pc.is_valid(present), values, pa.scalar(None, pa.bool_()))
    bad = pc.and_(pc.is_valid(present), pc.is_null(values))
    spelled = f"true: {', '.join(col.true_values)}; false: {', '.join(col.false_values)}"
    return values, reason_where(bad, f"{col.name} '{{v}}' is not a boolean ({spelled})", raw)
