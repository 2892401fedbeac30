"""The data contract: one YAML file per dataset, validated by a strict schema (pydantic).

A contract (`include/contracts/<dataset>.yml`) says which raw headers map to which columns,
how each column is typed and cleaned, what makes a row invalid, which columns are derived,
which expectations the data must meet and where it is loaded. Every rule lives here; the
transform, the Great Expectations suite, the table's DDL and the quality checks are all
derived from it. A contract the pipeline could not run (an unknown key, a type without a
cleaner, a bound outside the column's range, a fill value on the key) fails at parse time
with the file, the key and the problem: in Airflow that is the DAG's import error.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from include.etl.names import LINEAGE_COLUMNS, schema_of, sibling

ColumnType = Literal["text", "integer", "decimal", "boolean", "date", "timestamp"]
Severity = Literal["reject_row", "quarantine_file", "warn"]

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"  # include/contracts


def contracts_dir() -> Path:
    """Where the contracts are: include/contracts/, or the folder the ETL_CONTRACTS_DIR variable names."""
    return Path(os.environ.get("ETL_CONTRACTS_DIR") or CONTRACTS_DIR)


INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# PostgreSQL's own limits for what the load stores (timestamptz and date go further, but the
# transform parses years 1..9999 only).
MAX_NUMERIC_PRECISION = 38
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# The merge's working columns (etl_is_new, etl_wins...) are named so; a contract's columns are not.
RESERVED_PREFIX = "etl_"
# `schema.table` or `table`: any names PostgreSQL can quote (up to 63 characters), but no dot or quote inside.
_QUALIFIED = re.compile(r'^[^."\x00]{1,63}(\.[^."\x00]{1,63})?$')
_WHITESPACE = re.compile(r"\s+")
# Characters a person cannot see: zero-width space, word joiner, BOM, soft hyphen, direction marks,
# embeddings and isolates. (Zero-width joiners are left alone: emoji and some scripts need them.)
# Ignored in headers (and noted); a value holding one is rejected with a reason that shows it.
INVISIBLE = "[\u00ad\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
_INVISIBLE = re.compile(INVISIBLE)
_BOOL_TRUE = ("true", "t", "yes", "y", "1")
_BOOL_FALSE = ("false", "f", "no", "n", "0")


class ContractError(ValueError):
    """The contract file is invalid: the message names the file, the key and the problem."""


def normalize_header(name: str) -> str:
    """Header matching key: case-folded, invisible characters removed, `_`/whitespace runs as one space."""
    return _WHITESPACE.sub(" ", _INVISIBLE.sub("", name).replace("_", " ")).strip().casefold()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CsvDialect(_Strict):
    """How the raw files are written."""

    delimiter: str = ","
    quote_char: str = '"'
    # Backslash-escaped quotes (`"27\\" IPS"`, as MySQL's INTO OUTFILE and PHP write them): set "\\".
    escape_char: str | None = None
    # `""` inside a quoted field is one quote (RFC 4180). Set false with an escape_char.
    double_quote: bool = True
    encoding: str = "utf-8"
    # Bytes that are not valid in `encoding` are decoded with this (counted per file); null: such a
    # row is rejected.
    fallback_encoding: str | None = "cp1252"
    null_values: tuple[str, ...] = ("",)
    # How numbers are written: "." (1,234.50) or "," (1.234,50 and 1 234,50). Thousands separators are
    # read only in groups of three (",", ".", "'", spaces: whichever is not the decimal separator).
    decimal_separator: Literal[".", ","] = "."
    # Read "(12.00)" (an accounting negative) as -12.00 (counted per file); else such a row is rejected.
    accounting_negatives: bool = False

    @field_validator("delimiter", "quote_char")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1 or value in "\r\n":
            raise ValueError("must be a single character other than a line end")
        return value

    @field_validator("escape_char")
    @classmethod
    def _escape(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in "\r\n"):
            raise ValueError("must be a single character other than a line end, or null")
        return value

    @field_validator("encoding", "fallback_encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @model_validator(mode="after")
    def _distinct(self) -> CsvDialect:
        if len({self.delimiter, self.quote_char, self.escape_char} - {None}) < 2 + (self.escape_char is not None):
            raise ValueError("delimiter, quote_char and escape_char must differ")
        if self.delimiter == self.decimal_separator:
            raise ValueError(f"the delimiter {self.delimiter!r} cannot also be the decimal separator")
        return self


class TimestampParts(_Strict):
    """A timestamp a file writes in two columns: header spellings of its date part and of its time part."""

    date: tuple[str, ...]
    time: tuple[str, ...]

    @field_validator("date", "time")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one header spelling")
        return value


class Column(_Strict):
    """One column read from the raw file."""

    name: str
    type: ColumnType
    description: str = ""
    required: bool = False
    aliases: tuple[str, ...] = ()
    # `reject` the row, `null` (YAML null) to store NULL, or a fill value of the column's type.
    on_blank: str | int | float | bool | None = "reject"
    # text: the only accepted values (case-insensitive, stored as spelled here), or preferred spellings
    # case/whitespace variants collapse to (other values kept, title-cased).
    allowed: tuple[str, ...] = ()
    canonical: tuple[str, ...] = ()
    max_length: int | None = Field(default=None, ge=1)
    # date / timestamp: formats tried in order (pandas/strftime; ISO8601 accepts ISO 8601 forms).
    formats: tuple[str, ...] = ()
    # timestamp: the zone of naive values (IANA name); default: the dataset's timezone.
    timezone: str | None = None
    # timestamp: when a file has a date column and a time column instead, the headers of each part.
    parts: TimestampParts | None = None
    min: Any = None
    max: Any = None
    # decimal: numeric(precision, scale).
    precision: int | None = Field(default=None, ge=1, le=MAX_NUMERIC_PRECISION)
    scale: int | None = Field(default=None, ge=0, le=MAX_NUMERIC_PRECISION)
    # integer / decimal: the currency of the amounts (ISO 4217, e.g. EUR): values in it are read with or without
    # its sign or code; values in another currency are rejected. Without one, a file's first currency is its
    # column's, and values in another one are rejected.
    currency: str | None = None
    # boolean: accepted spellings (case-insensitive).
    true_values: tuple[str, ...] = _BOOL_TRUE
    false_values: tuple[str, ...] = _BOOL_FALSE

    @property
    def rejects_blank(self) -> bool:
        return self.on_blank == "reject"

    @property
    def nullable(self) -> bool:
        """Whether the column can hold NULL: a blank that is neither rejected nor filled."""
        return self.on_blank is None

    @property
    def fill(self) -> Any:
        """The value stored for a blank as the contract spells it, or None."""
        return None if self.rejects_blank else self.on_blank

    @property
    def bounds(self) -> tuple[Any, Any]:
        """`min` and `max` as Python values of the column's type (naive times in the column's zone), or None."""
        return _typed(self, self.min, "min"), _typed(self, self.max, "max")

    @property
    def fill_value(self) -> Any:
        """The value stored for a blank as a Python value of the column's type (Decimal, date, aware
        datetime...), or None."""
        return _typed(self, self.fill, "on_blank")

    @property
    def wide_integer(self) -> bool:
        """integer columns are 64-bit unless both bounds fit 32 bits."""
        return not (
            self.type == "integer"
            and self.min is not None
            and self.max is not None
            and INT32[0] <= self.min
            and self.max <= INT32[1]
        )

    @property
    def zone(self) -> str:
        """The zone of naive values (a contract sets it to the dataset's when the column names none)."""
        return self.timezone or "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return _check_zone(value)

    @model_validator(mode="after")
    def _fits_its_type(self) -> Column:
        _check_type_options(self)
        return self


class Derived(_Strict):
    """A column computed from other columns."""

    name: str
    type: ColumnType
    description: str = ""
    source: str | None = Field(default=None, alias="from")
    product_of: tuple[str, ...] = ()
    precision: int | None = Field(default=None, ge=1, le=MAX_NUMERIC_PRECISION)
    scale: int | None = Field(default=None, ge=0, le=MAX_NUMERIC_PRECISION)
    # date from a timestamp: the zone the date is taken in (default: the source column's).
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return _check_zone(value)

    @model_validator(mode="after")
    def _one_rule(self) -> Derived:
        if (self.source is None) == (not self.product_of):
            raise ValueError("needs exactly one of `from` or `product_of`")
        if self.product_of and self.type != "decimal":
            raise ValueError("`product_of` makes a decimal column: set type: decimal")
        if self.type == "decimal" and (self.precision is None or self.scale is None):
            raise ValueError("a decimal column needs precision and scale")
        if self.type == "decimal" and self.scale > self.precision:  # type: ignore[operator]
            raise ValueError(f"scale {self.scale} is larger than precision {self.precision}")
        return self

    @property
    def wide_integer(self) -> bool:
        return True

    @property
    def zone(self) -> str:
        return self.timezone or "UTC"

    @property
    def rejects_blank(self) -> bool:
        return False

    @property
    def nullable(self) -> bool:
        return True


class _Expectation(_Strict):
    severity: Severity = "reject_row"
    # quarantine_file / warn: the share of rows that must meet it (1.0 = every row).
    mostly: float = Field(default=1.0, gt=0, le=1)
    description: str = ""

    @model_validator(mode="after")
    def _mostly_is_for_files(self) -> _Expectation:
        if self.severity == "reject_row" and self.mostly != 1.0:
            raise ValueError("`mostly` applies to quarantine_file and warn; a reject_row rule holds for every row")
        return self


class NotNull(_Expectation):
    expectation: Literal["expect_column_values_to_not_be_null"]
    column: str


class Between(_Expectation):
    expectation: Literal["expect_column_values_to_be_between"]
    column: str
    min_value: Any = None
    max_value: Any = None


class InSet(_Expectation):
    expectation: Literal["expect_column_values_to_be_in_set"]
    column: str
    value_set: tuple[Any, ...]


class NotInSet(_Expectation):
    expectation: Literal["expect_column_values_to_not_be_in_set"]
    column: str
    value_set: tuple[Any, ...]


class MatchRegex(_Expectation):
    expectation: Literal["expect_column_values_to_match_regex"]
    column: str
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from None
        return value


class LengthBetween(_Expectation):
    expectation: Literal["expect_column_value_lengths_to_be_between"]
    column: str
    min_value: int | None = Field(default=None, ge=0)
    max_value: int | None = Field(default=None, ge=0)


class RowCountBetween(_Expectation):
    expectation: Literal["expect_table_row_count_to_be_between"]
    severity: Severity = "quarantine_file"
    min_value: int | None = Field(default=None, ge=0)
    max_value: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _file_level(self) -> RowCountBetween:
        if self.severity == "reject_row":
            raise ValueError("a row count is a property of the file: use quarantine_file or warn")
        return self


Expectation = Annotated[
    NotNull | Between | InSet | NotInSet | MatchRegex | LengthBetween | RowCountBetween,
    Field(discriminator="expectation"),
]
ROW_EXPECTATIONS = (NotNull, Between, InSet, NotInSet, MatchRegex, LengthBetween)


class HeaderMapping(BaseModel):
    """Result of matching a file's header against the contract.

    `parts[column]` is (date index, time index) for a timestamp the file writes in two columns.
    """

    model_config = ConfigDict(frozen=True)

    index_of: dict[str, int]
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    parts: dict[str, tuple[int, int]] = {}


class Contract(_Strict):
    """A dataset's contract: raw columns, derived columns, expectations, key, dialect and destination."""

    dataset: str
    description: str = ""
    table: str
    ledger_table: str = ""
    key: tuple[str, ...]
    latest_by: str
    timezone: str = "UTC"
    # What a raw object deleted from S3 means: keep its rows (default) or remove them.
    on_source_delete: Literal["keep", "remove"] = "keep"
    # evolve: additive contract changes (new nullable column, wider type, relaxed NOT NULL) are
    # applied to the table by the next load; freeze: any difference stops the load.
    schema_evolution: Literal["evolve", "freeze"] = "evolve"
    csv: CsvDialect = CsvDialect()
    columns: tuple[Column, ...]
    derived: tuple[Derived, ...] = ()
    expectations: tuple[Expectation, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the contract must be a mapping")
        data = dict(data)
        for section in ("columns", "derived"):
            value = data.get(section)
            if isinstance(value, dict):
                data[section] = [{**(spec or {}), "name": name} for name, spec in value.items()]
        if isinstance(data.get("key"), str):
            data["key"] = [data["key"]]
        if "latest_by" not in data and isinstance(data.get("key"), list) and data["key"]:
            data["latest_by"] = data["key"][0]
        if not data.get("ledger_table") and isinstance(data.get("dataset"), str):
            data["ledger_table"] = f"etl.{data['dataset']}_file_ledger"
        return data

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be a lower-case identifier (letters, digits, _): it names the DAG and its Variables")
        return value

    @field_validator("table", "ledger_table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if not _QUALIFIED.match(value):
            raise ValueError(f"{value!r} is not a table name (schema.table)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_zone(value) or "UTC"

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        names = [c.name for c in self.columns]
        all_names = names + [d.name for d in self.derived]
        _no_duplicates(all_names, "column")
        for name in all_names:
            if not _NAME.match(name):
                raise ValueError(f"column name {name!r} must be a lower-case identifier")
            if len(name) > 63:  # PostgreSQL would cut it to 63 characters
                raise ValueError(f"column name {name!r} is longer than PostgreSQL's 63 characters")
            if name.startswith(RESERVED_PREFIX):
                raise ValueError(f"column name {name!r}: names starting with {RESERVED_PREFIX!r} are the load's own")
        clash = set(all_names) & set(LINEAGE_COLUMNS)
        if clash:
            raise ValueError(f"column(s) {sorted(clash)} clash with the lineage columns the load adds")
        spellings: dict[str, str] = {}
        for col in self.columns:
            part_spellings = (*col.parts.date, *col.parts.time) if col.parts else ()
            for spelling in (col.name, *col.aliases, *part_spellings):
                key = normalize_header(spelling)
                owner = spellings.setdefault(key, col.name)
                if owner != col.name:
                    raise ValueError(f"header {spelling!r} of column {col.name!r} already matches column {owner!r}")
        by_name = {c.name: c for c in self.columns}
        for k in self.key:
            if k not in by_name:
                raise ValueError(f"key column {k!r} is not a column")
            if not by_name[k].rejects_blank:
                raise ValueError(
                    f"key column {k!r} must have `on_blank: reject`: a fill value or NULL would merge distinct rows"
                )
        if self.latest_by not in by_name:
            raise ValueError(f"latest_by column {self.latest_by!r} is not a column")
        latest = by_name[self.latest_by]
        if latest.type == "boolean":
            raise ValueError(f"latest_by column {self.latest_by!r} must be orderable (not boolean)")
        if latest.nullable:
            raise ValueError(f"latest_by column {self.latest_by!r} must not be NULL: reject blanks or fill them")
        for col in self.columns:
            if not col.required and col.rejects_blank:
                raise ValueError(
                    f"column {col.name!r} is optional but rejects blanks, so a file without it loses every row: "
                    "set on_blank (null, or a fill value) or required: true"
                )
        for d in self.derived:
            _check_derived(d, by_name)
        # Naive timestamps of a column without its own zone are in the dataset's: resolved once here, so the
        # transform, fill values, bounds, expectations and the table checks all read them in the same zone.
        columns = tuple(
            c.model_copy(update={"timezone": self.timezone}) if c.type == "timestamp" and c.timezone is None else c
            for c in self.columns
        )
        object.__setattr__(self, "columns", columns)
        targets: dict[str, Column | Derived] = {**{c.name: c for c in columns}, **{d.name: d for d in self.derived}}
        typed = []
        for e in self.expectations:
            column = getattr(e, "column", None)
            if column is not None and column not in targets:
                raise ValueError(f"expectation {e.expectation} refers to unknown column {column!r}")
            typed.append(_typed_expectation(e, targets[column]) if column is not None else e)
        object.__setattr__(self, "expectations", tuple(typed))
        tables = [self.table, self.ledger_table, self.duplicates_table]
        if len(set(tables)) < len(tables):
            raise ValueError(f"table, ledger_table and the duplicates table ({self.duplicates_table}) must differ")
        return self

    # --- what the rest of the engine reads ---

    def to_document(self) -> dict[str, Any]:
        """The contract as the YAML document that would give it (what was set, JSON types)."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")

    @property
    def schema_name(self) -> str:
        return self.table.split(".", 1)[0] if "." in self.table else "public"

    @property
    def table_name(self) -> str:
        return self.table.split(".", 1)[-1]

    @property
    def duplicates_table(self) -> str:
        """Clean rows of loaded files that lost to another row with the same key (kept for fallback)."""
        return sibling(self.ledger_table, f"{self.dataset}_duplicates")

    @property
    def stage_prefix(self) -> str:
        """Name prefix of this dataset's staging tables (in the ledger's schema)."""
        return f"{self.dataset}_stage_"

    @property
    def etl_schema(self) -> str:
        return schema_of(self.ledger_table)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Columns of the processed data, in table order (before lineage)."""
        return tuple(c.name for c in self.columns) + tuple(d.name for d in self.derived)

    @property
    def all_columns(self) -> tuple[Column | Derived, ...]:
        """Read and derived columns, in table order (before lineage)."""
        return (*self.columns, *self.derived)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def zone_of(self, column: Column) -> str:
        return column.timezone or self.timezone

    def map_headers(self, headers: list[str]) -> HeaderMapping:
        """Match raw headers to contract columns (own names first, then aliases)."""
        by_key: dict[str, list[int]] = {}
        for i, h in enumerate(headers):
            by_key.setdefault(normalize_header(h), []).append(i)
        mapping: dict[str, int] = {}
        parts: dict[str, tuple[int, int]] = {}
        used: set[int] = set()

        def first_free(spellings: tuple[str, ...]) -> int | None:
            for spelling in spellings:
                free = [i for i in by_key.get(normalize_header(spelling), []) if i not in used]
                if free:
                    return free[0]
            return None

        # Own names first, so an alias of one column never takes another column's own name; then a
        # timestamp's date and time parts when the file has both; then aliases.
        for col in self.columns:
            index = first_free((col.name,))
            if index is not None:
                mapping[col.name] = index
                used.add(index)
        for col in self.columns:
            if col.parts and col.name not in mapping:
                day, time_of_day = first_free(col.parts.date), first_free(col.parts.time)
                if day is not None and time_of_day is not None and day != time_of_day:
                    parts[col.name] = (day, time_of_day)
                    used.update((day, time_of_day))
        for col in self.columns:
            if col.name not in mapping and col.name not in parts:
                index = first_free(col.aliases + (col.parts.date if col.parts else ()))
                if index is not None:
                    mapping[col.name] = index
                    used.add(index)
        missing = tuple(c for c in self.required_columns if c not in mapping and c not in parts)
        extra = tuple(headers[i] for i in range(len(headers)) if i not in used)
        return HeaderMapping(index_of=mapping, missing=missing, extra=extra, parts=parts)


# --- checks --------------------------------------------------------------------------------------

# The ISO 4217 codes amounts are read in (as a code before or after the number), and the signs that stand for
# them: "$" is a dollar (USD unless the column's currency is another dollar), "¥" a yen or a yuan.
# fmt: off
CURRENCIES = (
    "USD", "EUR", "GBP", "JPY", "CNY", "CHF", "CAD",
    "AUD", "NZD", "HKD", "SGD", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF",
    "INR", "BRL", "MXN", "ZAR", "KRW", "TRY", "ILS", "AED", "SAR", "THB",
    "RUB", "UAH", "RON",
)
# fmt: on
CURRENCY_SIGNS = {
    "$": ("USD", "CAD", "AUD", "NZD", "HKD", "SGD", "MXN"),
    "€": ("EUR",),
    "£": ("GBP",),
    "¥": ("JPY", "CNY"),
    "₹": ("INR",),
    "₩": ("KRW",),
    "₺": ("TRY",),
    "₪": ("ILS",),
    "₽": ("RUB",),
    "₴": ("UAH",),
    "zł": ("PLN",),
    "kr": ("SEK", "NOK", "DKK"),
    "Kč": ("CZK",),
    "Fr.": ("CHF",),
    "R$": ("BRL",),
}


def _check_zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
    return value


def _no_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what} {n!r} is defined twice")
        seen.add(n)


_OPTIONS_BY_TYPE: dict[str, set[str]] = {
    "text": {"allowed", "canonical", "max_length"},
    "integer": {"min", "max", "currency"},
    "decimal": {"min", "max", "precision", "scale", "currency"},
    "boolean": {"true_values", "false_values"},
    "date": {"min", "max", "formats"},
    "timestamp": {"min", "max", "formats", "timezone", "parts"},
}


def _check_type_options(col: Column) -> None:
    options = set().union(*_OPTIONS_BY_TYPE.values())
    given = {n for n in col.model_fields_set if n in options and getattr(col, n) != Column.model_fields[n].default}
    wrong = given - _OPTIONS_BY_TYPE[col.type]
    if wrong:
        raise ValueError(f"option(s) {sorted(wrong)} do not apply to type {col.type}")
    if col.allowed and col.canonical:
        raise ValueError("use `allowed` (reject other values) or `canonical` (keep them), not both")
    if col.currency is not None and col.currency not in CURRENCIES:
        raise ValueError(
            f"currency {col.currency!r} is not an ISO 4217 code this pipeline reads ({', '.join(CURRENCIES)})"
        )
    if col.type == "decimal":
        if col.precision is None or col.scale is None:
            raise ValueError("a decimal column needs precision and scale")
        if col.scale > col.precision:
            raise ValueError(f"scale {col.scale} is larger than precision {col.precision}")
    for bound in ("min", "max"):
        value = getattr(col, bound)
        if value is not None:
            _typed(col, value, bound)
    if col.min is not None and col.max is not None and _typed(col, col.min, "min") > _typed(col, col.max, "max"):
        raise ValueError("min is larger than max")
    if col.type == "boolean":
        overlap = {v.casefold() for v in col.true_values} & {v.casefold() for v in col.false_values}
        if overlap:
            raise ValueError(f"value(s) {sorted(overlap)} are both true and false")
    if col.on_blank not in ("reject", None):
        try:
            _typed(col, col.on_blank, "on_blank")
        except ValueError as exc:
            raise ValueError(f"on_blank fill value: {exc}") from None


def _typed(col: Column | Derived, value: Any, what: str) -> Any:
    """A bound or fill value as the column's type; ValueError if it does not fit the column."""
    if value is None:
        return None
    if col.type == "text":
        if not isinstance(value, str):
            raise ValueError(f"{what} {value!r} must be text")
        if isinstance(col, Column) and col.allowed and value not in col.allowed:
            raise ValueError(f"{what} {value!r} is not one of the allowed values")
        return value
    if col.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what} {value!r} must be a whole number")
        if not INT64[0] <= value <= INT64[1]:
            raise ValueError(f"{what} {value} does not fit a 64-bit integer")
        return value
    if col.type == "decimal":
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{what} {value!r} is not a number") from None
        digits = len(number.as_tuple().digits) - max(0, -int(number.as_tuple().exponent))
        places = max(0, -int(number.as_tuple().exponent))
        if places > col.scale or max(digits, 0) > col.precision - col.scale:  # type: ignore[operator]
            raise ValueError(f"{what} {value} does not fit numeric({col.precision},{col.scale})")
        return number
    if col.type == "boolean":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{what} {value!r} must be true or false")
    if col.type == "date":
        try:
            return value if isinstance(value, date) else date.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"{what} {value!r} is not a date (YYYY-MM-DD)") from None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an ISO 8601 date or timestamp") from None
    return moment.replace(tzinfo=ZoneInfo(col.zone)) if moment.tzinfo is None else moment


_TEMPORAL = ("date", "timestamp")


def _typed_expectation(e: Any, col: Column | Derived) -> Any:
    """The expectation with its bounds and values as the column's type; ValueError if it cannot apply to it
    (found here, at parse time, rather than as a failing transform on every file)."""
    what = f"expectation {e.expectation} on {col.name}"
    if isinstance(e, Between):
        if col.type not in ("integer", "decimal", *_TEMPORAL):
            raise ValueError(f"{what}: bounds apply to numbers, dates and timestamps, not {col.type}")
        bounds = {b: _typed(col, getattr(e, b), f"{what}: {b}") for b in ("min_value", "max_value")}
        if None not in bounds.values() and bounds["min_value"] > bounds["max_value"]:
            raise ValueError(f"{what}: min_value is larger than max_value")
        return e.model_copy(update={b: v for b, v in bounds.items() if v is not None})
    if isinstance(e, InSet | NotInSet):
        return e.model_copy(update={"value_set": tuple(_typed(col, v, f"{what}: value") for v in e.value_set)})
    if isinstance(e, MatchRegex | LengthBetween) and col.type != "text":
        raise ValueError(f"{what}: applies to text columns, not {col.type}")
    if isinstance(e, MatchRegex):
        _check_re2(e.regex, what)
    return e


# Regex syntax RE2 and Python read alike: groups `(...)`, `(?:...)`, flags `(?i)`, and these escapes. A pattern
# made only of it needs no check (pyarrow is not imported at every DAG parse); any other is checked by RE2 itself.
_PLAIN_REGEX = re.compile(r"(?:[^\\(]|\\[dDwWsSbB.\\^$|?*+()\[\]{}/\-ntrfv]|\((?!\?)|\(\?(?:[imsU]+\)|[imsU]*:))*")


def _plain_regex(pattern: str) -> bool:
    """Whether the pattern is made only of syntax RE2 reads as Python does (no possessive quantifier either)."""
    return bool(_PLAIN_REGEX.fullmatch(pattern)) and not re.search(r"[*+?}][+{]|\{,", pattern)


def _check_re2(pattern: str, what: str) -> None:
    """The transform matches with RE2 (pyarrow), which has no look-around or backreferences."""
    if _plain_regex(pattern):
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    # One empty string, from its buffers: pa.array() would import pandas (a second at every DAG parse).
    empty = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(bytes(8)), pa.py_buffer(b"")])
    try:
        pc.match_substring_regex(empty, pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        problem = f"{what}: regex {pattern!r} is not RE2 syntax (no look-around, no backreferences)"
        raise ValueError(f"{problem}: {exc}") from None


def _check_derived(d: Derived, columns: dict[str, Column]) -> None:
    if d.source is not None:
        if d.source not in columns:
            raise ValueError(f"derived column {d.name!r} refers to unknown column {d.source!r}")
        source = columns[d.source]
        if d.type == "date" and source.type not in ("timestamp", "date"):
            raise ValueError(f"derived date {d.name!r} needs a timestamp or date column, not {source.type}")
        if d.type not in ("date", source.type):
            raise ValueError(f"derived column {d.name!r} of type {d.type} cannot be taken from a {source.type}")
        if d.type == "decimal" and (
            d.scale < (source.scale or 0)  # type: ignore[operator]
            or d.precision - d.scale < (source.precision or 0) - (source.scale or 0)  # type: ignore[operator]
        ):
            raise ValueError(
                f"derived column {d.name!r}: numeric({d.precision},{d.scale}) cannot hold every value of "
                f"{d.source!r}, numeric({source.precision},{source.scale})"
            )
        return
    scale = 0
    for ref in d.product_of:
        if ref not in columns:
            raise ValueError(f"derived column {d.name!r} refers to unknown column {ref!r}")
        factor = columns[ref]
        if factor.type not in ("integer", "decimal"):
            raise ValueError(f"derived column {d.name!r}: factor {ref!r} is {factor.type}, not a number")
        scale += factor.scale or 0
    if d.scale < scale:  # type: ignore[operator]
        raise ValueError(
            f"derived column {d.name!r}: scale {d.scale} would round the product of "
            f"{', '.join(d.product_of)} (it needs scale {scale})"
        )


# --- loading ---------------------------------------------------------------------------------------


def parse_contract(doc: Any, source: str = "<contract>") -> Contract:
    """Validate a contract document; raises ContractError naming `source`, the key and the problem."""
    try:
        contract = Contract.model_validate(doc)
    except ValidationError as exc:
        raise ContractError(_explain(exc, source, doc)) from None
    return contract


CONTRACT_SUFFIXES = (".yml", ".yaml")


def load_contract(name_or_path: str | Path) -> Contract:
    """Load a contract by dataset name (from include/contracts/) or by file path."""
    path = Path(name_or_path)
    if not path.suffix:
        candidates = [contracts_dir() / f"{name_or_path}{suffix}" for suffix in CONTRACT_SUFFIXES]
        path = next((p for p in candidates if p.exists()), candidates[0])
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None
    contract = parse_contract(doc, str(path))
    if contract.dataset != path.stem:
        raise ContractError(f"{path}: dataset: {contract.dataset!r} must match the file name ({path.stem!r})")
    return contract


def contract_paths(directory: Path | None = None) -> list[Path]:
    """Every contract file (`*.yml`, `*.yaml`) of a folder (default: contracts_dir()), by name: one dataset each."""
    folder = directory or contracts_dir()
    return sorted(p for p in folder.glob("*") if p.suffix in CONTRACT_SUFFIXES and p.is_file())


def _explain(exc: ValidationError, source: str, doc: Any) -> str:
    lines = []
    for error in exc.errors():
        loc = _location(error["loc"], doc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            key = str(error["loc"][-1])
            known = _known_keys(error["loc"])
            close = difflib.get_close_matches(key, known, n=1)
            message = f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        elif error["type"] == "union_tag_invalid":
            message = f"unknown expectation; use one of: {', '.join(sorted(_EXPECTATION_TYPES))}"
        lines.append(f"{source}: {loc}: {message}" if loc else f"{source}: {message}")
    return "\n".join(lines)


def _location(loc: tuple[Any, ...], doc: Any) -> str:
    """A pydantic error location as the YAML path: `columns.quantity.max`."""
    parts: list[str] = []
    items = list(loc)
    i = 0
    while i < len(items):
        part = items[i]
        if part in ("columns", "derived") and i + 1 < len(items) and isinstance(items[i + 1], int):
            section = (doc or {}).get(part) if isinstance(doc, dict) else None
            names = list(section) if isinstance(section, dict) else []
            index = items[i + 1]
            parts += [str(part), names[index] if index < len(names) else str(index)]
            i += 2
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part not in _EXPECTATION_TYPES:
            parts.append(str(part))
        i += 1
    return ".".join(parts).replace(".[", "[")


_EXPECTATION_TYPES = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_match_regex",
    "expect_column_value_lengths_to_be_between",
    "expect_table_row_count_to_be_between",
}


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Contract
    if "csv" in loc:
        model = CsvDialect
    elif "columns" in loc:
        model = Column
    elif "derived" in loc:
        model = Derived
    elif "expectations" in loc:
        return sorted({f for m in (NotNull, Between, InSet, MatchRegex, LengthBetween) for f in m.model_fields})
    return sorted({f.alias or n for n, f in model.model_fields.items()} - {"name"})
