"""Text values: Unicode's composed form, Unicode spaces, collapsed whitespace, case rules that keep a
letter's marks, values a spreadsheet forced to text (="...")."""

from __future__ import annotations

import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract.model import (
    Column,
)
from include.etl.contract.values.common import UNICODE_SPACE, Context, first_reason, matches_beyond_ascii, reason_where
from include.etl.reading.value_bytes import all_ascii, may_contain, value_bytes

# A value a spreadsheet user forced to text: ="00042".
_FORMULA = r'^\s*="(?P<text>.*)"\s*$'


def unwrapped_formulas(col: Column, raw: pa.Array, ctx: Context) -> pa.Array:
    """Values a spreadsheet user forced to text (="00042") as the text they wrap, counted per file."""
    if not may_contain(raw, b'="'):
        return raw
    wrapped = pc.match_substring_regex(raw, _FORMULA).fill_null(False)
    if not pc.any(wrapped).as_py():
        return raw
    ctx.note(f'{col.name} values unwrapped from a spreadsheet formula (="...")', wrapped)
    inner = pc.struct_field(pc.extract_regex(pc.filter(raw, wrapped), _FORMULA), 0)
    return pc.replace_with_mask(raw, wrapped, inner)


def clean_text(col: Column, present: pa.Array, raw: pa.Array, ctx: Context) -> tuple[pa.Array, pa.Array]:
    if not all_ascii(present):  # one normal form: "é" written as e + a combining accent (NFD) is "é" (NFC)
        composed = pc.utf8_normalize(present, form="NFC")
        ctx.note(f"{col.name} text put in Unicode's composed form (NFC)", pc.not_equal(composed, present))
        present = composed
    spaced = matches_beyond_ascii(present, UNICODE_SPACE)
    if spaced is not None:  # a no-break space is a space: "Desk\u00a0Lamp" is "Desk Lamp"
        ctx.note("text with no-break or other Unicode spaces read as spaces", spaced)
        present = pc.replace_substring_regex(present, UNICODE_SPACE, " ")
    collapsed = collapse_whitespace(present)
    reason: pa.Array = pa.nulls(len(present), pa.string())
    if col.allowed:
        allowed = pa.array(list(col.allowed), pa.string())
        idx = pc.index_in(pc.utf8_lower(collapsed), value_set=pc.utf8_lower(allowed))
        values = pc.take(allowed, idx)
        bad = pc.and_(pc.is_valid(collapsed), pc.is_null(idx))
        reason = reason_where(bad, f"{col.name} '{{v}}' is not one of {', '.join(col.allowed)}", raw)
    elif col.canonical:
        canonical = pa.array(list(col.canonical), pa.string())
        idx = pc.index_in(pc.utf8_lower(collapsed), value_set=pc.utf8_lower(canonical))
        values = pc.coalesce(pc.take(canonical, idx), title_case(collapsed))
    else:
        values = collapsed
    if col.max_length is not None:
        long = pc.greater(pc.utf8_length(values), col.max_length).fill_null(False)
        reason = first_reason(reason, reason_where(long, f"{col.name} is longer than {col.max_length} characters"))
    return values, reason


def collapse_whitespace(values: pa.Array) -> pa.Array:
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


def title_case(values: pa.Array) -> pa.Array:
    titled = pc.utf8_title(values)
    marked = matches_beyond_ascii(values, r"\pM")
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
