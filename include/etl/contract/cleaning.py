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

import collections
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract import (
    CURRENCIES,
    CURRENCY_SIGNS,
    INVISIBLE,
    ROW_EXPECTATIONS,
    Between,
    Column,
    Contract,
    Derived,
    HeaderMapping,
    InSet,
    LengthBetween,
    MatchRegex,
    NotInSet,
    NotNull,
)
from include.etl.csv_reader import RawBatch
from include.etl.names import SOURCE_KEY, SOURCE_LINE
from include.etl.schema import arrow_type, output_schema, rejected_schema
from include.etl.value_bytes import all_ascii, may_contain, value_bytes

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
# A value a spreadsheet user forced to text: ="00042".
_FORMULA = r'^\s*="(?P<text>.*)"\s*$'
_ACCOUNTING_NEGATIVE = r"^\(\s*([^()]*?)\s*\)$"
_SCIENTIFIC = r"^[+-]?(\d+[.,]?\d*|[.,]\d+)[eE][+-]?\d+$"
# Thousands separators per decimal separator (in groups of three only): ',' and '.' the one that is not
# the decimal separator, an apostrophe (Swiss), and spaces: plain, no-break, narrow no-break, figure.
_THOUSANDS = {".": (",", "'", " ", "\u00a0", "\u202f", "\u2007"), ",": (".", "'", " ", "\u00a0", "\u202f", "\u2007")}
# Spaces that are not U+0020 but mean a space in text: no-break, narrow no-break, figure, ideographic...
_UNICODE_SPACE = "[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]"
# pandas' ISO8601 parser also takes "2026" or "20260102"; a timestamp must at least spell out a date.
_ISO_DATE_PREFIX = r"^\d{4}-\d{1,2}-\d{1,2}"
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
# An explicit offset or Z after the time of day: the value names its own instant. (After a time only: the
# "-15" ending "2026-01-15" is the day, not an offset.)
_OFFSET = r"\d:\d{2}(:\d{2}([.,]\d+)?)?\s?(Z|z|[+-]\d{2}(:?\d{2})?)$"
# Characters of a value a reason shows (longer values: their start and their length).
_SHOWN_CHARS = 120
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


@dataclass
class FileState:
    """What cleaning learns about a file across its batches: the currency each amount column is in (the first one
    a value names, when the contract names none), and notes for the file's result."""

    currencies: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Date columns whose values prove the file writes day and month the other way round than the contract's
    # formats: {column: an example value}. Ambiguous values of such a column are not read.
    proven_swapped: dict[str, str] = field(default_factory=dict)
    # Number columns whose values prove the file writes the other decimal mark than the contract: {column: an
    # example value}. Their values that read both ways ("1,234") are not read.
    proven_decimal: dict[str, str] = field(default_factory=dict)
    # Ambiguous values read before any evidence came (if evidence comes later, the file is cleaned again).
    read_ambiguous: dict[str, int] = field(default_factory=dict)

    def seeded(self) -> FileState:
        """A state for reading the file again, knowing from the start what this pass proved."""
        return FileState(dict(self.currencies), list(self.notes), dict(self.proven_swapped), dict(self.proven_decimal))

    @property
    def clean_again(self) -> bool:
        """Whether values read in earlier batches turned out ambiguous under what a later batch proved."""
        return any(self.read_ambiguous.get(col) for col in {**self.proven_swapped, **self.proven_decimal})


@dataclass
class _Context:
    """What the column cleaners share: the contract, the file's state, and the masks of rows read differently,
    by kind."""

    contract: Contract
    state: FileState = field(default_factory=FileState)
    reinterpreted: dict[str, pa.Array] = field(default_factory=dict)

    def note(self, kind: str, mask: pa.Array) -> None:
        mask = mask.fill_null(False)
        if pc.any(mask).as_py():
            previous = self.reinterpreted.get(kind)
            self.reinterpreted[kind] = mask if previous is None else pc.or_(previous, mask)


@dataclass(frozen=True)
class _Result:
    values: pa.Array
    reason: pa.Array  # string, null where the value is fine


def file_expectations(contract: Contract) -> list[Any]:
    """The contract's expectations judged per file (quarantine_file, warn), in contract order."""
    return [e for e in contract.expectations if e.severity != "reject_row"]


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
    ctx = _Context(contract, state if state is not None else FileState())
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
            unmet = _unmet(e, results[e.column].values)
            reasons.append(_reason(unmet, _describe(e, "{v}"), results[e.column].values))

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
            unmet_counts.append((int(pc.sum(_unmet(e, values)).as_py() or 0), evaluated))
        else:
            unmet_counts.append((0, kept))  # row counts are judged on the whole file
    reinterpreted = {kind: int(pc.sum(pc.and_(mask, good)).as_py() or 0) for kind, mask in ctx.reinterpreted.items()}
    return CleanBatch(clean, rejected, unmet_counts, {k: v for k, v in reinterpreted.items() if v}, time_seen)


def _joined_parts(
    col: Column, batch: RawBatch, header: list[str], parts: tuple[int, int], contract: Contract, ctx: _Context
) -> tuple[pa.Array, pa.Array]:
    """A timestamp written as a date column and a time column, joined; a blank time part is a reason."""
    day, time_of_day = (pc.utf8_trim_whitespace(batch.columns[i]) for i in parts)
    nulls = pa.array(list(contract.csv.null_values), pa.string())
    blank_day, blank_time = (pc.is_in(v, value_set=nulls) for v in (day, time_of_day))
    joined = pc.if_else(blank_time, day, pc.binary_join_element_wise(day, time_of_day, " "))
    missing_time = pc.and_(blank_time, pc.invert(blank_day))
    reason = _reason(missing_time, f"{col.name}: the time part ({header[parts[1]]}) is blank")
    ctx.note(f"{col.name} built from {header[parts[0]]} + {header[parts[1]]}", pc.invert(blank_day))
    return joined, reason


# The Latin capitals Cyrillic and Greek letters most often pass for (their small forms end the same way).
_LATIN_LOOKING = ("A", "B", "C", "E", "H", "I", "J", "K", "M", "O", "P", "S", "T", "X", "Y")


def visible(text: str) -> str:
    """Text with the characters a person cannot see shown as <U+200B ZERO WIDTH SPACE>, and letters
    of another script hiding among Latin ones named (a Cyrillic o in "North": U+043E CYRILLIC SMALL LETTER O)."""
    if text.isascii():  # invisible characters, Unicode spaces and lookalike letters are all outside ASCII
        return text
    shown = re.sub(INVISIBLE, lambda m: f"<U+{ord(m.group()):04X} {unicodedata.name(m.group(), '?')}>", text)
    shown = re.sub(_UNICODE_SPACE, lambda m: f"<U+{ord(m.group()):04X} {unicodedata.name(m.group(), '?')}>", shown)
    lookalikes = sorted({c for c in shown if _lookalike(c)} if re.search(r"[A-Za-z]", shown) else set())
    if lookalikes:
        named = ", ".join(f"{c} is U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in lookalikes)
        shown += f" (letters of another script among Latin ones: {named})"
    return shown


def _lookalike(char: str) -> bool:
    """A Cyrillic or Greek letter that looks like a Latin one (the usual homoglyphs)."""
    if not char.isalpha() or char.isascii():
        return False
    name = unicodedata.name(char, "")
    return name.startswith(("CYRILLIC", "GREEK")) and any(
        name.endswith(f" LETTER {c}")
        for c in ("A", "B", "C", "E", "H", "I", "J", "K", "M", "O", "P", "S", "T", "X", "Y")
    )


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


def _unmet(e: Any, values: pa.Array) -> pa.Array:
    """Per row: True where the value does not meet the expectation (nulls meet all but not_null)."""
    if isinstance(e, NotNull):
        return pc.is_null(values)
    if isinstance(e, Between):
        out = pa.array(np.zeros(len(values), dtype=bool))
        for bound, op in ((e.min_value, pc.less), (e.max_value, pc.greater)):
            if bound is not None:
                out = pc.or_(out, op(values, _scalar(bound, values.type)).fill_null(False))
        return out
    if isinstance(e, InSet | NotInSet):
        member = pc.is_in(values, value_set=pa.array([_as_type(v, values.type) for v in e.value_set], values.type))
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


def _describe(e: Any, value: str) -> str:
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
            shown = f"[{', '.join(map(_shown, value))}]" if name == "value_set" else _shown(value)
            parts.append(f"{name.removesuffix('_value')}={shown}" if name != "value_set" else f"in {shown}")
    return " ".join(parts)


def _shown(value: Any) -> str:
    """A contract value as the contract spells it: text quoted, numbers plain, times in ISO 8601."""
    if isinstance(value, str):
        return repr(value)
    return value.isoformat() if isinstance(value, date) else str(value)


def _bound(word: str, value: Any) -> str:
    return f"{word} {value}" if value is not None else ""


def _scalar(value: Any, kind: pa.DataType) -> pa.Scalar:
    return pa.scalar(_as_type(value, kind), kind)


def _as_type(value: Any, kind: pa.DataType) -> Any:
    if pa.types.is_decimal(kind):
        return Decimal(str(value))
    if pa.types.is_timestamp(kind):
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if pa.types.is_date(kind):
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    return value


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
    long = pc.greater(pc.utf8_length(hits), _SHOWN_CHARS)
    if pc.any(long).as_py():  # a 200 KB value is shown by its start and its length
        length = pc.cast(pc.utf8_length(hits), pa.string())
        cut = pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(hits, 0, _SHOWN_CHARS), "… (", length, " characters)", ""
        )
        hits = pc.if_else(long, cut, hits)
    text = pc.binary_join_element_wise(pa.scalar(before), hits, pa.scalar(after), "")
    return pc.replace_with_mask(pa.nulls(len(mask), pa.string()), mask, text)


def _first_reason(*reasons: pa.Array | None) -> pa.Array:
    given = [r for r in reasons if r is not None]
    present = [r for r in given if r.null_count < len(r)] or given[:1]  # all-null ones cannot win
    out = present[0]
    for r in present[1:]:
        out = pc.coalesce(out, r)
    return out


Cleaner = Callable[[Column, pa.Array, pa.Array, _Context], tuple[pa.Array, pa.Array]]


def _clean_column(col: Column, raw: pa.Array, ctx: _Context) -> _Result:
    contract = ctx.contract
    raw = _unwrapped_formulas(col, raw, ctx)
    trimmed = pc.utf8_trim_whitespace(raw)
    blank = pc.is_in(trimmed, value_set=pa.array(list(contract.csv.null_values), pa.string()))
    blank_np = blank.to_numpy(zero_copy_only=False)
    blank_reason = _reason(blank, f"{col.name} is blank") if col.rejects_blank else pa.nulls(len(raw), pa.string())
    present = pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
    values, reason = CLEANERS[col.type](col, present, raw, ctx)
    invisible = _matches_beyond_ascii(raw, INVISIBLE)
    if invisible is not None:
        # Never guess what a hidden character means: show it and reject the row.
        message = f"{col.name} '{{v}}' contains a character a person cannot see"
        reason = pc.coalesce(_reason(invisible, message, raw), reason)
    if contract.csv.escape_char is None and may_contain(raw, b'\\"'):
        # A backslash before a quote is how MySQL and PHP escape one: the writer meant a quote, the file says a
        # backslash and a quote. Not read either way without the contract's word.
        escaped = pc.match_substring(raw, '\\"').fill_null(False)
        message = (
            f'{col.name} \'{{v}}\' holds a backslash-escaped quote (\\"): set csv.escape_char: "\\\\" in the contract '
            "to read it as a quote"
        )
        reason = pc.coalesce(_reason(escaped, message, raw), reason)
    nul = pc.match_substring(raw, "\x00").fill_null(False) if may_contain(raw, b"\x00") else None
    if nul is not None and pc.any(nul).as_py():
        # PostgreSQL text cannot hold U+0000: the row is rejected, never the load.
        reason = pc.coalesce(
            _reason(nul, f"{col.name} contains a NUL character (0x00), which PostgreSQL cannot store"), reason
        )
    if col.name in contract.key and col.type == "text":
        too_long = pc.greater(pc.binary_length(values), MAX_KEY_BYTES).fill_null(False)
        if pc.any(too_long).as_py():
            message = f"{col.name} is longer than {MAX_KEY_BYTES} bytes, too long for the table's key index"
            reason = pc.coalesce(reason, _reason(too_long, message))
    fill = col.fill
    if fill is not None:
        values = pc.if_else(blank, _fill_scalar(col, fill, values.type), values)
    reason = pc.if_else(pa.array(blank_np), blank_reason, reason)
    return _Result(values, reason)


def _unwrapped_formulas(col: Column, raw: pa.Array, ctx: _Context) -> pa.Array:
    """Values a spreadsheet user forced to text (="00042") as the text they wrap, counted per file."""
    if not may_contain(raw, b'="'):
        return raw
    wrapped = pc.match_substring_regex(raw, _FORMULA).fill_null(False)
    if not pc.any(wrapped).as_py():
        return raw
    ctx.note(f'{col.name} values unwrapped from a spreadsheet formula (="...")', wrapped)
    inner = pc.struct_field(pc.extract_regex(pc.filter(raw, wrapped), _FORMULA), 0)
    return pc.replace_with_mask(raw, wrapped, inner)


def _fill_scalar(col: Column, fill: Any, kind: pa.DataType) -> pa.Scalar:
    if col.type == "timestamp":
        moment = datetime.fromisoformat(str(fill))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(col.zone))
        return pa.scalar(moment.astimezone(UTC), kind)
    return pa.scalar(_as_type(fill, kind), kind)


def _matches_beyond_ascii(values: pa.Array, pattern: str) -> pa.Array | None:
    """Where values match a pattern of non-ASCII characters only; None if none does (an all-ASCII array
    is not searched)."""
    if all_ascii(values):
        return None
    found = pc.match_substring_regex(values, pattern).fill_null(False)
    return found if pc.any(found).as_py() else None


def _text(col: Column, present: pa.Array, raw: pa.Array, ctx: _Context) -> tuple[pa.Array, pa.Array]:
    if not all_ascii(present):  # one normal form: "é" written as e + a combining accent (NFD) is "é" (NFC)
        composed = pc.utf8_normalize(present, form="NFC")
        ctx.note(f"{col.name} text put in Unicode's composed form (NFC)", pc.not_equal(composed, present))
        present = composed
    spaced = _matches_beyond_ascii(present, _UNICODE_SPACE)
    if spaced is not None:  # a no-break space is a space: "Desk\u00a0Lamp" is "Desk Lamp"
        ctx.note("text with no-break or other Unicode spaces read as spaces", spaced)
        present = pc.replace_substring_regex(present, _UNICODE_SPACE, " ")
    collapsed = _collapse_whitespace(present)
    reason: pa.Array = pa.nulls(len(present), pa.string())
    if col.allowed:
        allowed = pa.array(list(col.allowed), pa.string())
        idx = pc.index_in(pc.utf8_lower(collapsed), value_set=pc.utf8_lower(allowed))
        values = pc.take(allowed, idx)
        bad = pc.and_(pc.is_valid(collapsed), pc.is_null(idx))
        reason = _reason(bad, f"{col.name} '{{v}}' is not one of {', '.join(col.allowed)}", raw)
    elif col.canonical:
        canonical = pa.array(list(col.canonical), pa.string())
        idx = pc.index_in(pc.utf8_lower(collapsed), value_set=pc.utf8_lower(canonical))
        values = pc.coalesce(pc.take(canonical, idx), _title(collapsed))
    else:
        values = collapsed
    if col.max_length is not None:
        long = pc.greater(pc.utf8_length(values), col.max_length).fill_null(False)
        reason = _first_reason(reason, _reason(long, f"{col.name} is longer than {col.max_length} characters"))
    return values, reason


def _collapse_whitespace(values: pa.Array) -> pa.Array:
    """Runs of whitespace to one space; the (costlier) replace runs only on rows that have one."""
    data = value_bytes(values)
    if data.isascii() and not any(c in data for c in (b"  ", b"\t", b"\n", b"\r", b"\f", b"\v")):
        return values  # no whitespace but single spaces: nothing to collapse
    runs = pc.match_substring_regex(values, r"\s\s|[^\S ]").fill_null(False)
    if not pc.any(runs).as_py():
        return values
    return pc.replace_with_mask(values, runs, pc.replace_substring_regex(pc.filter(values, runs), r"\s+", " "))


# utf8_title capitalizes after an apostrophe ("Men'S Wear"); English contractions stay lower case.
_CONTRACTIONS = ("S", "T", "D", "M", "Ll", "Re", "Ve")


def _title(values: pa.Array) -> pa.Array:
    titled = pc.utf8_title(values)
    marked = _matches_beyond_ascii(values, r"\pM")
    if marked is not None:  # a combining mark is part of its letter's word, not a word break ("ÉPicerie")
        titled = pc.replace_with_mask(
            titled, marked, pa.array([_title_words(v) for v in pc.filter(values, marked).to_pylist()], pa.string())
        )
    if pc.any(pc.match_substring(titled, "'")).as_py():
        for suffix in _CONTRACTIONS:
            titled = pc.replace_substring_regex(titled, rf"(\w)'{suffix}\b", rf"\1'{suffix.lower()}")
    return titled


def _title_words(text: str) -> str:
    """Title case that keeps combining marks with their letter: the first letter of each word upper case."""
    out, in_word = [], False
    for char in text:
        is_mark = unicodedata.category(char).startswith("M")
        if char.isalpha() or (is_mark and in_word):
            out.append(char if is_mark else (char.lower() if in_word else char.upper()))
            in_word = True
        else:
            out.append(char)
            in_word = False  # as utf8_title: an apostrophe too (the contractions are mended after)
    return "".join(out)


def _number_spelling(col: Column, present: pa.Array, ctx: _Context) -> tuple[pa.Array, pa.Array]:
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
    reason = _first_reason(unit_reason, evidence_reason, spelled_reason)
    return (
        pc.replace_with_mask(text, spelled, spelled_text),
        pc.replace_with_mask(pa.nulls(n, pa.string()), spelled, reason),
    )


def _decimal_mark_evidence(col: Column, values: pa.Array, ctx: _Context) -> pa.Array:
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
    return _reason(both_ways, message, values)


def _unit_codes(unit: str) -> tuple[str, ...]:
    return CURRENCY_SIGNS.get(unit, (unit,))


def _currencies(col: Column, values: pa.Array, ctx: _Context) -> tuple[pa.Array, pa.Array]:
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
        _reason(
            pc.equal(unit, u).fill_null(False),
            f"{col.name} '{{v}}' is in {_unit_name(u)}, not {_unit_name(column_unit)} ({whose})",
            values,
        )
        for u in sorted(wrong)
    ]
    return stripped, _first_reason(*reasons)


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
            reason = _reason(negative, message, present)
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
            reason = _first_reason(reason, _reason(stray, message, present))
        text = pc.replace_substring(text, ",", ".")
    scientific = pc.match_substring_regex(present, _SCIENTIFIC).fill_null(False)
    if pc.any(scientific).as_py():
        message = f"{col.name} '{{v}}' is in scientific notation, which is not read as a number here"
        reason = _first_reason(reason, _reason(scientific, message, present))
    return text, reason


def _not_a_number(col: Column, bad: pa.Array, spelled: pa.Array, raw: pa.Array, ctx: _Context) -> pa.Array:
    """The reason for values that are not numbers; a hint where the decimal separator looks swapped ("3,00")."""
    decimal = ctx.contract.csv.decimal_separator
    other = "," if decimal == "." else "."
    swapped = pc.match_substring_regex(spelled, rf"^[+-]?\d+{re.escape(other)}\d{{1,2}}$").fill_null(False)
    hint = f" (the contract's decimal separator is '{decimal}', not '{other}')"
    return _first_reason(
        _reason(pc.and_(bad, swapped), f"{col.name} '{{v}}' is not a number{hint}", raw),
        _reason(bad, f"{col.name} '{{v}}' is not a number", raw),
    )


def _integer(col: Column, present: pa.Array, raw: pa.Array, ctx: _Context) -> tuple[pa.Array, pa.Array]:
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
    not_int = _reason(pc.invert(ok), f"{col.name} '{{v}}' is not a whole number", raw)
    beyond = _reason(pc.and_(ok, too_big), f"{col.name} '{{v}}' is beyond the 64-bit integer range", raw)
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
    reason = _first_reason(spelling, not_int, beyond, low, high)
    in_range = pc.and_(pc.is_null(reason), pc.is_valid(numbers))
    values = pc.if_else(in_range, numbers, pa.scalar(None, pa.int64()))
    return pc.cast(values, arrow_type(col)), reason


def _decimal(col: Column, present: pa.Array, raw: pa.Array, ctx: _Context) -> tuple[pa.Array, pa.Array]:
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
    places = _reason(pc.and_(ok, too_precise), f"{col.name} '{{v}}' has more than {scale} decimal places", raw)
    big = _reason(pc.and_(ok, too_big), f"{col.name} '{{v}}' is too large for numeric({precision},{scale})", raw)
    reasons = [spelling, not_number, places, big]
    if col.min is not None:
        below = pc.less(values, pa.scalar(Decimal(str(col.min))).cast(values.type))
        reasons.append(_reason(below, f"{col.name} {{v}} is below {col.min}", values))
    if col.max is not None:
        above = pc.greater(values, pa.scalar(Decimal(str(col.max))).cast(values.type))
        reasons.append(_reason(above, f"{col.name} {{v}} is above {col.max}", values))
    reason = _first_reason(*reasons)
    return pc.if_else(pc.is_null(reason), values, pa.scalar(None, values.type)), reason


def _boolean(col: Column, present: pa.Array, raw: pa.Array, ctx: _Context) -> tuple[pa.Array, pa.Array]:
    lower = pc.utf8_lower(present)
    true = pc.is_in(lower, value_set=pa.array([v.casefold() for v in col.true_values], pa.string()))
    false = pc.is_in(lower, value_set=pa.array([v.casefold() for v in col.false_values], pa.string()))
    values = pc.if_else(true, True, pc.if_else(false, False, pa.scalar(None, pa.bool_())))
    values = pc.if_else(pc.is_valid(present), values, pa.scalar(None, pa.bool_()))
    bad = pc.and_(pc.is_valid(present), pc.is_null(values))
    spelled = f"true: {', '.join(col.true_values)}; false: {', '.join(col.false_values)}"
    return values, _reason(bad, f"{col.name} '{{v}}' is not a boolean ({spelled})", raw)


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


def _parse_formats(
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


def _timestamp(col: Column, present: pa.Array, raw: pa.Array, ctx: _Context) -> tuple[pa.Array, pa.Array]:
    """Timestamps to UTC: values with an offset name their instant; naive ones are in the column's zone."""
    zone = ctx.contract.zone_of(col)
    formats = col.formats or ("ISO8601",)
    series = pd.Series(present.to_pandas(types_mapper=pd.ArrowDtype), dtype="string")
    iso_shaped = _mask(pc.match_substring_regex(present, _ISO_DATE_PREFIX), series.index)
    two_readings = pd.Series(False, index=series.index)
    if zone == "UTC":
        parsed, two_readings = _parse_formats(series, formats, iso_shaped, utc=True)
        gap = ambiguous = pd.Series(False, index=series.index)
    else:
        has_offset = _mask(pc.match_substring_regex(present, _OFFSET), series.index)
        parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]")
        aware = series.where(has_offset)
        parsed[has_offset], two_readings[has_offset] = _parse_formats(
            aware[has_offset], formats, iso_shaped[has_offset], utc=True
        )
        naive = series.where(~has_offset)
        local, two_readings[~has_offset] = _parse_formats(
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
        _day_month_order(col, formats, series, parsed, ctx, raw),
        _two_readings(col, two_readings, raw),
        _reason(unparsed, f"{col.name} '{{v}}' is not a recognised date/time", raw),
        _reason(gap.to_numpy(), f"{col.name} '{{v}}' does not exist in {zone} (clocks went forward)", raw),
        _reason(
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
                _reason(op(values, pa.scalar(limit, values.type)), f"{col.name} '{{v}}' is {word} {bound}", raw)
            )
    reason = _first_reason(*reasons)
    return pc.if_else(pc.is_null(reason), values, pa.scalar(None, values.type)), reason


def _date(col: Column, present: pa.Array, raw: pa.Array, ctx: _Context) -> tuple[pa.Array, pa.Array]:
    """Dates: ISO (YYYY-MM-DD) by default, or the column's formats, in order."""
    series = pd.Series(present.to_pandas(types_mapper=pd.ArrowDtype), dtype="string")
    two_readings = pd.Series(False, index=series.index)
    if col.formats:
        iso_shaped = _mask(pc.match_substring_regex(present, _ISO_DATE), series.index)
        parsed, two_readings = _parse_formats(series, col.formats, iso_shaped, utc=False)
    else:
        iso = _mask(pc.match_substring_regex(present, _ISO_DATE), series.index)
        parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us]")
        parsed[iso] = pd.to_datetime(series[iso], format="%Y-%m-%d", errors="coerce").astype("datetime64[us]")
    has_time = parsed.notna() & (parsed != parsed.dt.normalize())
    timestamps = pa.Array.from_pandas(parsed.dt.normalize(), type=pa.timestamp("us"))
    values = pc.cast(timestamps, pa.date32())
    unparsed = pc.and_(pc.is_valid(present), pc.is_null(values))
    reasons = [
        _day_month_order(col, col.formats, series, parsed, ctx, raw),
        _two_readings(col, two_readings, raw),
        _reason(unparsed, f"{col.name} '{{v}}' is not a recognised date", raw),
        _reason(has_time.to_numpy(), f"{col.name} '{{v}}' has a time of day: a date column would drop it", raw),
    ]
    for bound, op, word in ((col.min, pc.less, "before"), (col.max, pc.greater, "after")):
        if bound is not None:
            limit = pa.scalar(date.fromisoformat(str(bound)), pa.date32())
            reasons.append(_reason(op(values, limit), f"{col.name} '{{v}}' is {word} {bound}", raw))
    reason = _first_reason(*reasons)
    return pc.if_else(pc.is_null(reason), values, pa.scalar(None, values.type)), reason


def _swapped(fmt: str) -> str | None:
    """The format with day and month the other way round, or None if it does not read both as numbers."""
    if fmt == "ISO8601" or "%m" not in fmt or "%d" not in fmt:
        return None
    return fmt.replace("%m", "\0").replace("%d", "%m").replace("\0", "%d")


def _day_month_order(
    col: Column, formats: tuple[str, ...], series: pd.Series, parsed: pd.Series, ctx: _Context, raw: pa.Array
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
    hint = _reason(
        proof.to_numpy(),
        f"{col.name} '{{v}}' is not a recognised date/time: it reads with day and month the other way round than "
        f"the contract's formats ({', '.join(formats)})",
        raw,
    )
    if col.name not in state.proven_swapped:
        state.read_ambiguous[col.name] = state.read_ambiguous.get(col.name, 0) + int(both.sum())
        return hint
    example = state.proven_swapped[col.name]
    guessed = _reason(
        both.to_numpy(),
        f"{col.name} '{{v}}' reads both ways, and this file writes day and month the other way round than the "
        f"contract's formats (as in {example!r}): not guessed",
        raw,
    )
    return _first_reason(hint, guessed)


def _two_readings(col: Column, ambiguous: pd.Series, raw: pa.Array) -> pa.Array:
    message = f"{col.name} '{{v}}' reads as different dates in the contract's formats ({', '.join(col.formats)})"
    return _reason(ambiguous.to_numpy(), message, raw)


def _mask(mask: pa.Array, index: pd.Index) -> pd.Series:
    return pd.Series(mask.fill_null(False).to_numpy(zero_copy_only=False), index=index)


CLEANERS: dict[str, Cleaner] = {
    "text": _text,
    "integer": _integer,
    "decimal": _decimal,
    "boolean": _boolean,
    "date": _date,
    "timestamp": _timestamp,
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
    reason = _reason(too_big, f"{d.name} {{v}} is too large for numeric({precision},{scale})", product)
    fits = pc.if_else(too_big.fill_null(False), pa.scalar(None, product.type), product)
    return _Result(pc.cast(fits, arrow_type(d)), reason)
