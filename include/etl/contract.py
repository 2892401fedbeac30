"""The data contract: a declarative description of one dataset, loaded from YAML.

The contract says which raw headers map to which columns, how each column is
typed and cleaned, what makes a row invalid and which columns are derived.
Everything the transform and the load need to know about a dataset lives here,
so adapting the pipeline to another CSV means editing the YAML file only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ColumnType = Literal["text", "timestamp", "integer", "decimal", "date"]
_TYPES = {"text", "timestamp", "integer", "decimal", "date"}
_WHITESPACE = re.compile(r"\s+")

CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"


class ContractError(ValueError):
    """The contract file itself is invalid."""


def normalize_header(name: str) -> str:
    """Header matching key: case-folded, trimmed, inner whitespace/underscores as one space."""
    return _WHITESPACE.sub(" ", name.replace("_", " ").replace("\ufeff", "")).strip().casefold()


@dataclass(frozen=True)
class Column:
    """One column read from the raw file."""

    name: str
    type: ColumnType
    required: bool = False
    aliases: tuple[str, ...] = ()
    on_blank: str = "reject"
    allowed: tuple[str, ...] = ()
    canonical: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    min: Any = None
    max: Any = None
    precision: int = 18
    scale: int = 0

    @property
    def rejects_blank(self) -> bool:
        return self.on_blank == "reject"


@dataclass(frozen=True)
class Derived:
    """A column computed from other columns."""

    name: str
    type: ColumnType
    source: str | None = None
    product_of: tuple[str, ...] = ()
    precision: int = 18
    scale: int = 0


@dataclass(frozen=True)
class CsvDialect:
    delimiter: str = ","
    quote_char: str = '"'
    escape_char: str | None = None
    double_quote: bool = True
    encoding: str = "utf-8"
    fallback_encoding: str | None = "cp1252"
    null_values: tuple[str, ...] = ("",)


@dataclass(frozen=True)
class Contract:
    """A dataset's contract: raw columns, derived columns, key and CSV dialect."""

    dataset: str
    table: str
    key: str
    latest_by: str
    columns: tuple[Column, ...]
    derived: tuple[Derived, ...] = ()
    csv: CsvDialect = field(default_factory=CsvDialect)

    @property
    def schema_name(self) -> str:
        return self.table.split(".", 1)[0] if "." in self.table else "public"

    @property
    def table_name(self) -> str:
        return self.table.split(".", 1)[-1]

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Columns of the processed data, in table order (before load metadata)."""
        return tuple(c.name for c in self.columns) + tuple(d.name for d in self.derived)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def map_headers(self, headers: list[str]) -> HeaderMapping:
        """Match raw headers to contract columns (exact name first, then aliases)."""
        by_key: dict[str, list[int]] = {}
        for i, h in enumerate(headers):
            by_key.setdefault(normalize_header(h), []).append(i)
        mapping: dict[str, int] = {}
        used: set[int] = set()
        # Own names first, so an alias of one column never takes another column's own name.
        for candidates in ([(c, c.name) for c in self.columns], [(c, a) for c in self.columns for a in c.aliases]):
            for col, candidate in candidates:
                if col.name in mapping:
                    continue
                free = [i for i in by_key.get(normalize_header(candidate), []) if i not in used]
                if free:
                    mapping[col.name] = free[0]
                    used.add(free[0])
        missing = tuple(c for c in self.required_columns if c not in mapping)
        extra = tuple(headers[i] for i in range(len(headers)) if i not in used)
        return HeaderMapping(mapping, missing, extra)


@dataclass(frozen=True)
class HeaderMapping:
    """Result of matching a file's header against the contract."""

    index_of: dict[str, int]
    missing: tuple[str, ...]
    extra: tuple[str, ...]


def _column(name: str, spec: dict[str, Any]) -> Column:
    col_type = spec.get("type", "text")
    if col_type not in _TYPES:
        raise ContractError(f"column {name!r}: unknown type {col_type!r}")
    return Column(
        name=name,
        type=col_type,
        required=bool(spec.get("required", False)),
        aliases=tuple(spec.get("aliases", ())),
        on_blank=str(spec.get("on_blank", "reject")),
        allowed=tuple(spec.get("allowed", ())),
        canonical=tuple(spec.get("canonical", ())),
        formats=tuple(spec.get("formats", ("ISO8601",))),
        min=spec.get("min"),
        max=spec.get("max"),
        precision=int(spec.get("precision", 18)),
        scale=int(spec.get("scale", 0)),
    )


def _derived(name: str, spec: dict[str, Any]) -> Derived:
    if "from" not in spec and "product_of" not in spec:
        raise ContractError(f"derived column {name!r} needs `from` or `product_of`")
    return Derived(
        name=name,
        type=spec["type"],
        source=spec.get("from"),
        product_of=tuple(spec.get("product_of", ())),
        precision=int(spec.get("precision", 18)),
        scale=int(spec.get("scale", 0)),
    )


def parse_contract(doc: dict[str, Any]) -> Contract:
    """Build a Contract from its YAML document, validating references."""
    columns = tuple(_column(n, s or {}) for n, s in doc["columns"].items())
    derived = tuple(_derived(n, s) for n, s in (doc.get("derived") or {}).items())
    names = {c.name for c in columns}
    for d in derived:
        for ref in (d.source, *d.product_of):
            if ref is not None and ref not in names:
                raise ContractError(f"derived column {d.name!r} refers to unknown column {ref!r}")
    for ref in (doc["key"], doc.get("latest_by", doc["key"])):
        if ref not in names:
            raise ContractError(f"unknown column {ref!r} used as key/latest_by")
    csv = doc.get("csv") or {}
    return Contract(
        dataset=doc["dataset"],
        table=doc["table"],
        key=doc["key"],
        latest_by=doc.get("latest_by", doc["key"]),
        columns=columns,
        derived=derived,
        csv=CsvDialect(
            delimiter=csv.get("delimiter", ","),
            encoding=csv.get("encoding", "utf-8"),
            fallback_encoding=csv.get("fallback_encoding"),
            null_values=tuple(csv.get("null_values", ("",))),
        ),
    )


def load_contract(name_or_path: str | Path) -> Contract:
    """Load a contract by dataset name (from include/contracts/) or by file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONTRACTS_DIR / f"{name_or_path}.yml"
    with path.open(encoding="utf-8") as fh:
        return parse_contract(yaml.safe_load(fh))
