"""What the column cleaners share: the file's state across batches, the cleaning context, and reasons
(per-row messages that show a value as a person can read it, invisible characters named)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.etl.contract.model import (
    INVISIBLE,
    Contract,
)
from include.etl.reading.value_bytes import all_ascii

# Spaces that are not U+0020 but mean a space in text: no-break, narrow no-break, figure, ideographic...
UNICODE_SPACE = "[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]"


# Characters of a value a reason shows (longer values: their start and their length).
SHOWN_CHARS = 120


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
class Context:
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


# The Latin capitals Cyrillic and Greek letters most often pass for (their small forms end the same way).
_LATIN_LOOKING = ("A", "B", "C", "E", "H", "I", "J", "K", "M", "O", "P", "S", "T", "X", "Y")


def visible(text: str) -> str:
    """Text with the characters a person cannot see out as <U+200B ZERO WIDTH SPACE>, and letters
    of another script hiding among Latin ones named (a Cyrillic o in "North": U+043E CYRILLIC SMALL LETTER O)."""
    if text.isascii():  # invisible characters, Unicode spaces and lookalike letters are all outside ASCII
        return text
    out = re.sub(INVISIBLE, lambda m: f"<U+{ord(m.group()):04X} {unicodedata.name(m.group(), '?')}>", text)
    out = re.sub(UNICODE_SPACE, lambda m: f"<U+{ord(m.group()):04X} {unicodedata.name(m.group(), '?')}>", out)
    lookalikes = sorted({c for c in out if _lookalike(c)} if re.search(r"[A-Za-z]", out) else set())
    if lookalikes:
        named = ", ".join(f"{c} is U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in lookalikes)
        out += f" (letters of another script among Latin ones: {named})"
    return out


def _lookalike(char: str) -> bool:
    """A Cyrillic or Greek letter that looks like a Latin one (the usual homoglyphs)."""
    if not char.isalpha() or char.isascii():
        return False
    name = unicodedata.name(char, "")
    return name.startswith(("CYRILLIC", "GREEK")) and any(
        name.endswith(f" LETTER {c}")
        for c in ("A", "B", "C", "E", "H", "I", "J", "K", "M", "O", "P", "S", "T", "X", "Y")
    )


def shown(value: Any) -> str:
    """A contract value as the contract spells it: text quoted, numbers plain, times in ISO 8601."""
    if isinstance(value, str):
        return repr(value)
    return value.isoformat() if isinstance(value, date) else str(value)


def reason_where(mask: pa.Array | np.ndarray, template: str, values: pa.Array | None = None) -> pa.Array:
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
    long = pc.greater(pc.utf8_length(hits), SHOWN_CHARS)
    if pc.any(long).as_py():  # a 200 KB value is shown by its start and its length
        length = pc.cast(pc.utf8_length(hits), pa.string())
        cut = pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(hits, 0, SHOWN_CHARS), "… (", length, " characters)", ""
        )
        hits = pc.if_else(long, cut, hits)
    text = pc.binary_join_element_wise(pa.scalar(before), hits, pa.scalar(after), "")
    return pc.replace_with_mask(pa.nulls(len(mask), pa.string()), mask, text)


def first_reason(*reasons: pa.Array | None) -> pa.Array:
    given = [r for r in reasons if r is not None]
    present = [r for r in given if r.null_count < len(r)] or given[:1]  # all-null ones cannot win
    out = present[0]
    for r in present[1:]:
        out = pc.coalesce(out, r)
    return out


def matches_beyond_ascii(values: pa.Array, pattern: str) -> pa.Array | None:
    """Where values match a pattern of non-ASCII characters only; None if none does (an all-ASCII array
    is not searched)."""
    if all_ascii(values):
        return None
    found = pc.match_substring_regex(values, pattern).fill_null(False)
    return found if pc.any(found).as_py() else None
