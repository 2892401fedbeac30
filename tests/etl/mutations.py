"""The mutation oracle's engine: clean source rows rendered as a CSV file the way a real tool writes it.

`tests/data/mutations.yml` is the catalogue (each mutation, its kind, its source); this module holds the
operations its entries name. A `Doc` is the file being written: items (header lines, source rows, other lines), a
dialect, per-column spellings and the bytes' encoding and compression. Mutations change the Doc; `render` gives the
bytes. A mutation that changes what a row means (a NUL in it, an amount in another currency, a row cut off) marks
the row `damaged`: such a row must never load.

The oracle's rule (tests/etl/test_mutation_oracle.py): each source row is loaded with exactly its values, or
rejected with a reason (or its file rejected with one), never a third outcome.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml

CATALOGUE_FILE = Path(__file__).resolve().parent.parent / "data" / "mutations.yml"
CATALOGUE: list[dict[str, Any]] = yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8"))["mutations"]
# The seed of this session's generated combinations (printed in the report header; ORACLE_SEED=<n> repeats it).
SEED = int(os.environ.get("ORACLE_SEED") or random.SystemRandom().randrange(2**31))

COLUMNS = ("id", "name", "qty", "amount", "day", "flag")
NULLS = ("", "null", "NULL", "None", "N/A", "n/a", "NA", "-")
CONTRACT = {
    "dataset": "oracle",
    "table": "public.oracle",
    "key": "id",
    "csv": {"delimiter": ",", "encoding": "utf-8", "fallback_encoding": "cp1252", "null_values": list(NULLS)},
    "columns": {
        "id": {"type": "text", "required": True},
        "name": {"type": "text", "required": True},
        "qty": {"type": "integer", "required": True},
        "amount": {"type": "decimal", "precision": 12, "scale": 2, "required": True},
        "day": {"type": "date", "required": True, "formats": ["ISO8601", "%m/%d/%Y"]},
        "flag": {"type": "boolean", "required": True},
    },
}


@dataclass(frozen=True)
class Row:
    """One source row: what the file means."""

    id: str
    name: str
    qty: int
    amount: Decimal
    day: date
    flag: bool


@dataclass
class Item:
    """A line of the file: a header (in `order`), a row (source `row`, or `cells` that are no source row), raw."""

    kind: str  # header | row | raw
    order: tuple[str, ...] = COLUMNS
    row: Row | None = None
    cells: dict[str, str] | None = None
    text: str = ""


@dataclass
class Doc:
    items: list[Item]
    rng: random.Random
    delimiter: str = ","
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_MINIMAL
    escape: str | None = None
    line_end: str = "\n"
    final_newline: bool = True
    header_style: Callable[[str], str] = str
    spell: dict[str, list[Callable[[Any, str], str]]] = field(default_factory=dict)  # column: (value, text) -> text
    row_spell: dict[tuple[str, str], Callable[[str], str]] = field(default_factory=dict)  # (id, column): text -> text
    extra: dict[str, str] | None = None  # an extra column: name -> value of every row
    trailing_delimiter: tuple[bool, bool] | None = None  # (rows, header)
    encoding: str = "utf-8"
    bom: bytes = b""
    compress: bool = False
    truncate_compressed: bool = False
    cut_last_row: bool = False
    write_header: bool = True
    damaged: set[str] = field(default_factory=set)
    exclusive: list[tuple[set[str], set[str]]] = field(default_factory=list)  # rows of both never all load
    skipped: list[str] = field(default_factory=list)  # mutations that did not apply to these rows

    @property
    def rows(self) -> list[Row]:
        return [i.row for i in self.items if i.row is not None]

    def one(self) -> Row:
        return self.rng.choice(self.rows)


# --- rendering ---------------------------------------------------------------------------------------------------


def _plain(column: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _cell(doc: Doc, row: Row, column: str) -> str:
    value = getattr(row, column)
    text = _plain(column, value)
    for spell in doc.spell.get(column, []):
        text = spell(value, text)
    if (row.id, column) in doc.row_spell:
        text = doc.row_spell[row.id, column](text)
    return text


def _line(doc: Doc, cells: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(
        out,
        delimiter=doc.delimiter,
        quoting=doc.quoting,
        escapechar=doc.escape,
        doublequote=doc.escape is None,
        lineterminator="",
    )
    writer.writerow(cells)
    return out.getvalue()


def render(doc: Doc) -> bytes:
    """The file's bytes."""
    items = list(doc.items)
    if doc.cut_last_row:
        last = max(i for i, item in enumerate(items) if item.row is not None)
        items = items[: last + 1]
    lines: list[str] = []
    order: tuple[str, ...] = COLUMNS
    for index, item in enumerate(items):
        if item.kind == "raw":
            lines.append(item.text)
            continue
        if item.kind == "header":
            order = item.order
            if not doc.write_header and index == next(i for i, it in enumerate(items) if it.kind == "header"):
                continue  # a file without its header line (a split part)
            names = [doc.header_style(c) for c in order] + ([*doc.extra] if doc.extra else [])
            trailing = doc.trailing_delimiter is not None and doc.trailing_delimiter[1]
            lines.append(_line(doc, names) + (doc.delimiter if trailing else ""))
            continue
        if item.row is not None:
            cells = [_cell(doc, item.row, c) for c in order]
        else:
            cells = [(item.cells or {}).get(c, "") for c in order]
        cells += [*doc.extra.values()] if doc.extra else []
        trailing = doc.trailing_delimiter is not None and doc.trailing_delimiter[0]
        if doc.cut_last_row and index == len(items) - 1:  # cut off inside the name's quotes, after its first char
            at = order.index("name")
            first = cells[at][:1].replace('"', '""')
            lines.append(_line(doc, cells[:at]) + (doc.delimiter if at else "") + '"' + first)
            doc.damaged.add(item.row.id if item.row else "")
            return _encode(doc, doc.line_end.join(lines))
        lines.append(_line(doc, cells) + (doc.delimiter if trailing else ""))
    text = doc.line_end.join(lines) + (doc.line_end if doc.final_newline else "")
    return _encode(doc, text)


def _encode(doc: Doc, text: str) -> bytes:
    try:
        data = doc.bom + text.encode(doc.encoding)
    except UnicodeEncodeError:  # a later mutation wrote a character the encoding has not: the file stays UTF-8
        doc.skipped.append(doc.encoding)
        data = text.encode("utf-8")
    if doc.compress:
        data = gzip.compress(data, mtime=0)
        if doc.truncate_compressed:
            data = data[: max(10, len(data) * 2 // 3)]
            doc.damaged.update(r.id for r in doc.rows)
    return data


# --- operations the catalogue names ------------------------------------------------------------------------------


def _number(style: str) -> Callable[[Any, str], str]:
    """A spelling of a number's plain text ("-1234.50", "42") as a tool writes it."""

    def groups(digits: str, sep: str) -> str:
        return re.sub(r"\B(?=(\d{3})+$)", sep, digits)

    def spell(_: Any, text: str) -> str:
        sign, body = ("-", text[1:]) if text.startswith("-") else ("", text)
        whole, _, frac = body.partition(".")
        point = f".{frac}" if frac else ""
        match style:
            case "plus_sign":
                return text if sign else "+" + text
            case "thousands_comma":
                return sign + groups(whole, ",") + point
            case "thousands_space":
                return sign + groups(whole, " ") + point
            case "thousands_nbsp":
                return sign + groups(whole, "\u00a0") + point
            case "thousands_apostrophe":
                return sign + groups(whole, "'") + point
            case "trailing_zeros":
                return text + ("0" if frac else ".000")
            case "no_leading_zero":
                return sign + (whole.lstrip("0") if whole != "0" else "") + point if point else text
            case "decimal_comma":
                return sign + whole + ("," + frac if frac else "")
            case "accounting_negative":
                return f"({body})" if sign else text
            case "trailing_minus":
                return body + "-" if sign else text
            case "leading_zeros":
                return sign + whole.zfill(6) + point
            case "decimal_point_int":
                return text + ".0" if not frac else text
            case "scientific":  # of a plain number only (after another spelling there is none)
                return f"{Decimal(text):.6E}" if re.fullmatch(r"-?\d+(\.\d+)?", text) and Decimal(text) else text
            case _:
                raise ValueError(f"unknown number style {style}")

    return spell


def _currency(before: str = "", after: str = "") -> Callable[[Any, str], str]:
    def spell(_: Any, text: str) -> str:
        sign, body = ("-", text[1:]) if text.startswith("-") else ("", text)
        return f"{sign}{before}{body}{after}"

    return spell


def _text(style: str) -> Callable[[Any, str], str]:
    def spell(_: Any, text: str) -> str:
        match style:
            case "nfd":
                return unicodedata.normalize("NFD", text)
            case "nbsp":
                return text.replace(" ", "\u00a0", 1)
            case "padded":
                return f"  {text} "
            case "formula":
                return f'="{text}"'
            case _:
                raise ValueError(f"unknown text style {style}")

    return spell


def _date(style: str) -> Callable[[Any, str], str]:
    def spell(value: Any, text: str) -> str:
        if style == "excel_serial":
            return str((value - date(1899, 12, 30)).days)
        return value.strftime(style)

    return spell


def _boolean(true: str, false: str) -> Callable[[Any, str], str]:
    return lambda value, text: true if value else false


def apply(doc: Doc, mutation: dict[str, Any]) -> None:
    """Apply one catalogue entry to the Doc."""
    op, args = mutation["op"], mutation.get("args", {})
    column = args.get("column")
    if op == "number":
        doc.spell.setdefault(column, []).append(_number(args["style"]))
    elif op == "currency":
        doc.spell.setdefault(column, []).append(_currency(args.get("before", ""), args.get("after", "")))
    elif op == "mixed_currency":  # every amount in one currency, one row in another: that row means another amount
        doc.spell.setdefault("amount", []).append(_currency(before=args["usual"]))
        row = doc.one()
        doc.row_spell[row.id, "amount"] = lambda text: text.replace(args["usual"], args["other"])
        # Amounts in two currencies never load as one kind of number: the rows of one currency at most.
        doc.exclusive.append(({row.id}, {r.id for r in doc.rows} - {row.id}))
    elif op == "text":
        doc.spell.setdefault(column, []).append(_text(args["style"]))
    elif op == "invisible":  # one value with a character a person cannot see in it
        row = doc.one()
        char = args["char"]
        doc.row_spell[row.id, column] = lambda text: text[:1] + char + text[1:]
        if args.get("damages"):
            doc.damaged.add(row.id)
    elif op == "date":
        doc.spell.setdefault(column, []).append(_date(args["format"]))
    elif op == "boolean":
        doc.spell.setdefault(column, []).append(_boolean(args["true"], args["false"]))
    elif op == "header_style":
        doc.header_style = {
            "upper": str.upper,
            "padded": lambda c: f" {c}  ",
            "title": str.title,
            "bom_in_name": lambda c: c if c != COLUMNS[0] else "\ufeff" + c,
        }[args["style"]]
    elif op == "reorder":
        order = list(COLUMNS)
        doc.rng.shuffle(order)
        doc.items[0].order = tuple(order)
    elif op == "repeat_header":  # two exports joined: the header again, in the same or another order
        rows = [i for i, item in enumerate(doc.items) if item.row is not None]
        at = rows[len(rows) // 2]
        order = list(doc.items[0].order)
        if args.get("reorder"):
            order.reverse()
        doc.items.insert(at, Item("header", order=tuple(order)))
    elif op == "blank_lines":
        for _ in range(args.get("count", 2)):
            doc.items.insert(doc.rng.randrange(1, len(doc.items) + 1), Item("raw", text=args.get("text", "")))
    elif op == "preamble":
        doc.items.insert(0, Item("raw", text=args["text"].replace("{delimiter}", doc.delimiter)))
    elif op == "footer":
        total = {"id": "Total", "qty": str(sum(r.qty for r in doc.rows))}
        total["amount"] = f"{sum((r.amount for r in doc.rows), Decimal(0)):.2f}"
        doc.items.append(Item("row", cells=total))
    elif op == "headerless":
        doc.write_header = False
    elif op == "extra_column":
        doc.extra = {args["name"]: args["value"]}
    elif op == "trailing_delimiter":
        doc.trailing_delimiter = (True, bool(args.get("header")))
    elif op == "dialect":
        doc.delimiter = args.get("delimiter", doc.delimiter)
        doc.quoting = getattr(csv, args["quoting"]) if "quoting" in args else doc.quoting
        doc.escape = args.get("escape", doc.escape)
        doc.line_end = args.get("line_end", doc.line_end)
        doc.final_newline = args.get("final_newline", doc.final_newline)
    elif op == "encoding":
        text = "".join(r.name for r in doc.rows)
        try:
            text.encode(args["name"])
        except UnicodeEncodeError:  # a tool would write '?': the file no longer says the value (not generated)
            doc.skipped.append(mutation["name"])
            return
        doc.encoding = args["name"]
        doc.bom = bytes.fromhex(args.get("bom", ""))
    elif op == "nul":
        row = doc.one()
        doc.row_spell[row.id, "name"] = lambda text: text[:1] + "\x00" + text[1:]
        doc.damaged.add(row.id)
    elif op == "gzip":
        doc.compress = True
        doc.truncate_compressed = doc.truncate_compressed or bool(args.get("truncate"))
    elif op == "cut_last_row":
        doc.cut_last_row = True
    else:
        raise ValueError(f"unknown mutation op {op!r} ({mutation['name']})")


def new_doc(rows: list[Row], rng: random.Random) -> Doc:
    return Doc([Item("header"), *(Item("row", row=r) for r in rows)], rng)


def rendered(rows: list[Row], mutations: list[dict[str, Any]], seed: int) -> tuple[bytes, Doc]:
    """The file for `rows` through the mutations (in order), and the Doc (its damaged rows)."""
    doc = new_doc(rows, random.Random(seed))
    for mutation in mutations:
        apply(doc, mutation)
    return render(doc), doc
