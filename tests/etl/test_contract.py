"""The orders contract as loaded from YAML, header matching, and contract validation."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from include.etl.contract.model import (
    CONTRACTS_DIR,
    Contract,
    ContractError,
    contract_paths,
    load_contract,
    parse_contract,
)

CANONICAL = ["order_id", "order_ts", "customer_id", "product_name", "category", "quantity", "unit_price", "region"]
REQUIRED = ["order_id", "order_ts", "product_name", "quantity", "unit_price", "region"]


def _orders_doc() -> dict[str, Any]:
    with (CONTRACTS_DIR / "orders.yml").open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# --- load_contract ------------------------------------------------------------------


def test_load_contract_orders_identity(contract: Contract) -> None:
    assert contract.dataset == "orders"
    assert contract.table == "analytics.orders"
    assert (contract.schema_name, contract.table_name) == ("analytics", "orders")
    assert contract.key == ("order_id",)
    assert contract.latest_by == "order_ts"
    assert contract.ledger_table == "etl.orders_file_ledger"
    assert contract.duplicates_table == "etl.orders_duplicates"
    assert contract.timezone == "UTC"


def test_load_contract_orders_columns_in_table_order(contract: Contract) -> None:
    assert [c.name for c in contract.columns] == CANONICAL
    assert contract.required_columns == tuple(REQUIRED)
    assert contract.output_columns == (*CANONICAL, "order_date", "total_price")


@pytest.mark.parametrize(
    ("name", "col_type", "required", "on_blank"),
    [
        ("order_id", "text", True, "reject"),
        ("order_ts", "timestamp", True, "reject"),
        ("customer_id", "text", False, "guest"),
        ("product_name", "text", True, "reject"),
        ("category", "text", False, "Uncategorized"),
        ("quantity", "integer", True, "reject"),
        ("unit_price", "decimal", True, "reject"),
        ("region", "text", True, "reject"),
    ],
)
def test_load_contract_orders_column_rules(
    contract: Contract, name: str, col_type: str, required: bool, on_blank: str
) -> None:
    col = contract.column(name)
    assert (col.type, col.required, col.on_blank) == (col_type, required, on_blank)
    assert col.rejects_blank is (on_blank == "reject")


def test_load_contract_orders_bounds_and_value_lists(contract: Contract) -> None:
    assert (contract.column("quantity").min, contract.column("quantity").max) == (1, 2147483647)
    price = contract.column("unit_price")
    assert (price.precision, price.scale, price.min) == (12, 2, 0)
    ts = contract.column("order_ts")
    assert ts.formats == ("ISO8601", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y")
    assert (ts.min, ts.max) == ("1970-01-01", "2100-01-01")
    assert contract.column("region").allowed == ("North", "South", "East", "West", "Central")
    assert "Home & Garden" in contract.column("category").canonical
    assert contract.column("category").allowed == ()


def test_load_contract_orders_derived_columns(contract: Contract) -> None:
    derived = {d.name: d for d in contract.derived}
    assert list(derived) == ["order_date", "total_price"]
    assert (derived["order_date"].type, derived["order_date"].source) == ("date", "order_ts")
    total = derived["total_price"]
    assert (total.type, total.product_of, total.precision, total.scale) == (
        "decimal",
        ("quantity", "unit_price"),
        14,
        2,
    )


def test_load_contract_orders_csv_dialect(contract: Contract) -> None:
    assert contract.csv.delimiter == ","
    assert contract.csv.encoding == "utf-8"
    assert contract.csv.fallback_encoding == "cp1252"
    assert {"", "null", "NULL", "N/A", "-"} <= set(contract.csv.null_values)


def test_load_contract_by_path_equals_by_name(tmp_path) -> None:
    path = tmp_path / "orders.yml"
    path.write_text((CONTRACTS_DIR / "orders.yml").read_text(encoding="utf-8"), encoding="utf-8")
    assert load_contract(path) == load_contract("orders")


def test_every_shipped_contract_loads() -> None:
    datasets = [load_contract(p).dataset for p in contract_paths()]
    assert datasets == ["customers", "orders"]


# --- header matching ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(CANONICAL, {n: i for i, n in enumerate(CANONICAL)}, id="exact-names"),
        pytest.param(
            [" Order ID ", "Timestamp", "PRODUCT", "qty", "Price", "REGION"],
            {
                "order_id": 0,
                "order_ts": 1,
                "product_name": 2,
                "quantity": 3,
                "unit_price": 4,
                "region": 5,
            },
            id="aliases-case-and-whitespace",
        ),
        pytest.param(
            ["ORDER_ID", "order  date", "Customer ID", "item_name", "Product Category", "UNITS", "unit_price", "Area"],
            {n: i for i, n in enumerate(CANONICAL)},
            id="underscores-equal-spaces",
        ),
        pytest.param(
            ["region", "unit price", "COUNT", "cat", "Item", "client_id", "created_at", "order number"],
            {n: 7 - i for i, n in enumerate(CANONICAL)},
            id="any-order",
        ),
        pytest.param(
            ["\ufeffid", "date", "product", "quantity", "price_each", "sales region"],
            {"order_id": 0, "order_ts": 1, "product_name": 2, "quantity": 3, "unit_price": 4, "region": 5},
            id="bom-on-first-header",
        ),
    ],
)
def test_map_headers_matches_names_and_aliases(contract: Contract, headers: list[str], expected: dict) -> None:
    mapping = contract.map_headers(headers)
    assert mapping.index_of == expected
    assert mapping.missing == ()
    assert mapping.extra == ()


@pytest.mark.parametrize(
    ("headers", "column", "index", "extra"),
    [
        (["Timestamp", "order_ts", "order_id", *REQUIRED[2:]], "order_ts", 1, ("Timestamp",)),
        (
            ["qty", "order_id", "order_ts", "product_name", " QUANTITY ", "unit_price", "region"],
            "quantity",
            4,
            ("qty",),
        ),
        (["price", "Unit_Price", *REQUIRED[:4], "region"], "unit_price", 1, ("price",)),
    ],
)
def test_map_headers_exact_name_wins_over_alias(
    contract: Contract, headers: list[str], column: str, index: int, extra: tuple[str, ...]
) -> None:
    mapping = contract.map_headers(headers)
    assert mapping.index_of[column] == index
    assert mapping.extra == extra
    assert mapping.missing == ()


@pytest.mark.parametrize(
    ("headers", "extra"),
    [
        ([*CANONICAL, "notes"], ("notes",)),
        (["Gift Wrap", *CANONICAL, "  notes "], ("Gift Wrap", "  notes ")),
        ([*CANONICAL, "order_id"], ("order_id",)),
        ([*CANONICAL, ""], ("",)),
    ],
)
def test_map_headers_reports_extra_columns(contract: Contract, headers: list[str], extra: tuple[str, ...]) -> None:
    mapping = contract.map_headers(headers)
    assert mapping.extra == extra
    assert mapping.missing == ()
    assert set(mapping.index_of) == set(CANONICAL)


@pytest.mark.parametrize("dropped", REQUIRED)
def test_map_headers_reports_each_missing_required_column(contract: Contract, dropped: str) -> None:
    mapping = contract.map_headers([h for h in CANONICAL if h != dropped])
    assert mapping.missing == (dropped,)
    assert dropped not in mapping.index_of


@pytest.mark.parametrize(
    ("headers", "missing"),
    [
        (["order_id", "order_ts", "product_name", "quantity", "unit_price", "region"], ()),
        (["order_id", "product_name", "qty"], ("order_ts", "unit_price", "region")),
        ([], tuple(REQUIRED)),
        (["notes", "comment"], tuple(REQUIRED)),
    ],
)
def test_map_headers_optional_columns_are_never_missing(
    contract: Contract, headers: list[str], missing: tuple[str, ...]
) -> None:
    assert contract.map_headers(headers).missing == missing


def test_an_alias_that_is_another_columns_name_is_refused() -> None:
    """Ambiguous headers are a contract error, not a silent choice at read time."""
    with pytest.raises(ContractError, match="header 'b' of column 'b' already matches column 'a'"):
        parse_contract(
            {
                "dataset": "d",
                "table": "t",
                "key": "a",
                "columns": {
                    "a": {"type": "text", "required": True, "aliases": ["b"]},
                    "b": {"type": "text", "required": True},
                },
            }
        )


# --- contract validation: every contract the transform could not run fails at parse time ------------


def _with(change) -> dict[str, Any]:
    doc = copy.deepcopy(_orders_doc())
    change(doc)
    return doc


def _set(*path: str, value: Any):
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value

    return change


def _rule(expectation: str, column: str, **options: Any) -> dict[str, Any]:
    return {"expectation": expectation, "column": column, **options}


def _between(column: str, **bounds: Any) -> dict[str, Any]:
    return _rule("expect_column_values_to_be_between", column, **bounds)


def _drop(*path: str):
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            _set("columns", "quantity", "requird", value=True),
            "columns.quantity.requird: unknown key 'requird' (did you mean 'required'?)",
            id="typo-in-a-column-key",
        ),
        pytest.param(
            _set("latest_bye", value="order_ts"),
            "latest_bye: unknown key 'latest_bye' (did you mean 'latest_by'?)",
            id="typo-at-the-top",
        ),
        pytest.param(
            _set("csv", "fallback_encodng", value="latin-1"),
            "csv.fallback_encodng: unknown key 'fallback_encodng' (did you mean 'fallback_encoding'?)",
            id="typo-in-the-dialect",
        ),
        pytest.param(
            _set("columns", "quantity", "type", value="float"),
            "columns.quantity.type: Input should be 'text', 'integer', 'decimal', 'boolean', 'date' or 'timestamp'",
            id="unknown-type",
        ),
        pytest.param(
            _set("columns", "order_id", "on_blank", value="UNKNOWN"),
            "key column 'order_id' must have `on_blank: reject`: a fill value or NULL would merge distinct rows",
            id="fill-value-on-the-key",
        ),
        pytest.param(
            _set("columns", "order_id", "on_blank", value=None),
            "key column 'order_id' must have `on_blank: reject`",
            id="null-on-the-key",
        ),
        pytest.param(
            _set("derived", "total_price", "scale", value=1),
            "derived column 'total_price': scale 1 would round the product of quantity, unit_price (it needs scale 2)",
            id="decimal-scales-that-do-not-fit",
        ),
        pytest.param(
            _set("columns", "unit_price", "scale", value=14),
            "columns.unit_price: scale 14 is larger than precision 12",
            id="scale-above-precision",
        ),
        pytest.param(
            _set("columns", "unit_price", "min", value=0.001),
            "columns.unit_price: min 0.001 does not fit numeric(12,2)",
            id="bound-beyond-the-scale",
        ),
        pytest.param(
            _set("columns", "quantity", "max", value=2**64),
            "columns.quantity: max 18446744073709551616 does not fit a 64-bit integer",
            id="bound-beyond-64-bits",
        ),
        pytest.param(
            _set("columns", "quantity", "on_blank", value="none"),
            "columns.quantity: on_blank fill value: on_blank 'none' must be a whole number",
            id="fill-value-of-another-type",
        ),
        pytest.param(
            _set("columns", "region", "on_blank", value="Mars"),
            "columns.region: on_blank fill value: on_blank 'Mars' is not one of the allowed values",
            id="fill-value-not-allowed",
        ),
        pytest.param(
            _set("columns", "region", "precision", value=3),
            "columns.region: option(s) ['precision'] do not apply to type text",
            id="option-of-another-type",
        ),
        pytest.param(
            _set("timezone", value="Europe/Atlantis"),
            "timezone: unknown time zone 'Europe/Atlantis' (use an IANA name such as Europe/Berlin)",
            id="unknown-timezone",
        ),
        pytest.param(
            _set("columns", "order_ts", "timezone", value="EST5"),
            "columns.order_ts.timezone: unknown time zone 'EST5'",
            id="unknown-column-timezone",
        ),
        pytest.param(
            _set("csv", "fallback_encoding", value="klingon"),
            "csv.fallback_encoding: unknown encoding 'klingon'",
            id="unknown-encoding",
        ),
        pytest.param(
            _set("csv", "delimiter", value=";;"),
            "csv.delimiter: must be a single character other than a line end",
            id="delimiter-of-two-characters",
        ),
        pytest.param(
            _set("derived", "order_date", "from", value="order_time"),
            "derived column 'order_date' refers to unknown column 'order_time'",
            id="derived-from-unknown",
        ),
        pytest.param(
            _set("derived", "total_price", "product_of", value=["quantity", "price"]),
            "derived column 'total_price' refers to unknown column 'price'",
            id="derived-product-of-unknown",
        ),
        pytest.param(
            _set("derived", "margin", value={"type": "decimal", "precision": 10, "scale": 2}),
            "derived.margin: needs exactly one of `from` or `product_of`",
            id="derived-without-source",
        ),
        pytest.param(
            _set("key", value="order_number"),
            "key column 'order_number' is not a column",
            id="unknown-key",
        ),
        pytest.param(
            _set("latest_by", value="updated_at"),
            "latest_by column 'updated_at' is not a column",
            id="unknown-latest-by",
        ),
        pytest.param(
            _set("latest_by", value="customer_id") if False else _set("columns", "order_ts", "on_blank", value=None),
            "latest_by column 'order_ts' must not be NULL",
            id="nullable-latest-by",
        ),
        pytest.param(
            _set("columns", "customer_id", "on_blank", value="reject"),
            "column 'customer_id' is optional but rejects blanks",
            id="optional-column-rejecting-blanks",
        ),
        pytest.param(
            _set("columns", "category", "aliases", value=["product", "cat"]),
            "header 'product' of column 'category' already matches column 'product_name'",
            id="alias-of-two-columns",
        ),
        pytest.param(
            _set("columns", "source_key", value={"type": "text", "on_blank": None}),
            "column(s) ['source_key'] clash with the lineage columns the load adds",
            id="lineage-column-clash",
        ),
        pytest.param(
            _set("dataset", value="Orders 2"),
            "dataset: must be a lower-case identifier",
            id="dataset-name",
        ),
        pytest.param(
            _set("table", value='analytics."orders"; drop table x'),
            """table: 'analytics."orders"; drop table x' is not a table name (schema.table)""",
            id="table-name",
        ),
        pytest.param(
            _set("expectations", value=[{"expectation": "expect_column_values_to_be_pretty", "column": "region"}]),
            "expectations[0]: unknown expectation; use one of:",
            id="unknown-expectation",
        ),
        pytest.param(
            _set("expectations", value=[{"expectation": "expect_column_values_to_not_be_null", "column": "price"}]),
            "expectation expect_column_values_to_not_be_null refers to unknown column 'price'",
            id="expectation-on-unknown-column",
        ),
        pytest.param(
            _set(
                "expectations",
                value=[{"expectation": "expect_column_values_to_not_be_null", "column": "region", "mostly": 0.9}],
            ),
            "`mostly` applies to quarantine_file and warn; a reject_row rule holds for every row",
            id="mostly-on-a-row-rule",
        ),
        pytest.param(
            _set(
                "expectations",
                value=[{"expectation": "expect_column_values_to_match_regex", "column": "region", "regex": "(["}],
            ),
            "invalid regex",
            id="invalid-regex",
        ),
        pytest.param(
            _drop("columns", "order_ts", "type"),
            "columns.order_ts.type: Field required",
            id="type-missing",
        ),
        pytest.param(
            _set("csv", value={"quote_char": "'", "escape_char": "'"}),
            "delimiter, quote_char and escape_char must differ",
            id="quote-and-escape-the-same",
        ),
        pytest.param(
            _set("derived", "x" * 64, value={"type": "date", "from": "order_ts"}),
            "is longer than PostgreSQL's 63 characters",
            id="column-name-too-long",
        ),
        pytest.param(
            _set("derived", "etl_wins", value={"type": "date", "from": "order_ts"}),
            "column name 'etl_wins': names starting with 'etl_' are the load's own",
            id="reserved-column-name",
        ),
        pytest.param(
            _set("derived", "price_copy", value={"type": "decimal", "from": "unit_price", "precision": 12, "scale": 1}),
            "derived column 'price_copy': numeric(12,1) cannot hold every value of 'unit_price', numeric(12,2)",
            id="derived-decimal-narrower-than-its-source",
        ),
        pytest.param(
            _set("expectations", value=[_between("quantity", min_value="abc")]),
            "expectation expect_column_values_to_be_between on quantity: min_value 'abc' must be a whole number",
            id="bound-of-another-type",
        ),
        pytest.param(
            _set("expectations", value=[_between("region", min_value="A")]),
            "bounds apply to numbers, dates and timestamps, not text",
            id="bounds-on-text",
        ),
        pytest.param(
            _set("expectations", value=[_between("order_ts", min_value="2026-02-01", max_value="2026-01-01")]),
            "min_value is larger than max_value",
            id="bounds-the-wrong-way-round",
        ),
        pytest.param(
            _set(
                "expectations",
                value=[_rule("expect_column_values_to_be_in_set", "quantity", value_set=[1, "x"])],
            ),
            "on quantity: value 'x' must be a whole number",
            id="set-value-of-another-type",
        ),
        pytest.param(
            _set(
                "expectations",
                value=[_rule("expect_column_values_to_match_regex", "order_id", regex="(?=O).")],
            ),
            "is not RE2 syntax (no look-around, no backreferences)",
            id="regex-python-has-but-re2-lacks",
        ),
        pytest.param(
            _set(
                "expectations",
                value=[_rule("expect_column_value_lengths_to_be_between", "quantity", max_value=3)],
            ),
            "applies to text columns, not integer",
            id="length-of-a-number",
        ),
    ],
)
def test_invalid_contracts_fail_at_parse_time_naming_file_key_and_problem(change, message: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_contract(_with(change), "include/contracts/orders.yml")
    assert str(info.value).startswith("include/contracts/orders.yml: ")
    assert message in str(info.value)


def test_load_contract_names_the_file_and_checks_the_dataset_matches_it(tmp_path) -> None:
    path = tmp_path / "sales.yml"
    path.write_text((CONTRACTS_DIR / "orders.yml").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ContractError, match=r"sales.yml: dataset: 'orders' must match the file name \('sales'\)"):
        load_contract(path)
    (tmp_path / "broken.yml").write_text("dataset: [unclosed\n", encoding="utf-8")
    with pytest.raises(ContractError, match=r"broken\.yml: not valid YAML"):
        load_contract(tmp_path / "broken.yml")


def test_on_blank_null_in_plain_yaml_means_null() -> None:
    doc = yaml.safe_load(
        "dataset: d\ntable: t\nkey: id\ncolumns:\n  id: {type: text, required: true}\n"
        "  note: {type: text, on_blank: null}\n  n: {type: integer, on_blank: 0}\n"
    )
    contract = parse_contract(doc)
    note, n = contract.column("note"), contract.column("n")
    assert (note.on_blank, note.nullable, note.fill) == (None, True, None)
    assert (n.on_blank, n.nullable, n.fill) == (0, False, 0)


def test_fallback_encoding_has_one_default() -> None:
    minimal = {"dataset": "d", "table": "t", "key": "id", "columns": {"id": {"type": "text", "required": True}}}
    assert parse_contract(minimal).csv.fallback_encoding == "cp1252"
    assert parse_contract({**minimal, "csv": {"delimiter": ";"}}).csv.fallback_encoding == "cp1252"
    assert parse_contract({**minimal, "csv": {"fallback_encoding": None}}).csv.fallback_encoding is None


@pytest.mark.parametrize(
    ("bounds", "wide"),
    [({}, True), ({"min": 0}, True), ({"min": 1, "max": 2147483647}, False), ({"min": 0, "max": 2**31}, True)],
)
def test_integers_are_64_bit_unless_both_bounds_fit_32(bounds: dict[str, int], wide: bool) -> None:
    from include.etl.contract.schema import arrow_type, pg_type

    doc = {
        "dataset": "d",
        "table": "t",
        "key": "id",
        "columns": {"id": {"type": "integer", "required": True, **bounds}},
    }
    col = parse_contract(doc).column("id")
    assert col.wide_integer is wide
    assert pg_type(col) == ("bigint" if wide else "integer")
    assert str(arrow_type(col)) == ("int64" if wide else "int32")


def test_parse_contract_defaults_for_minimal_document() -> None:
    contract = parse_contract(
        {"dataset": "d", "table": "plain", "key": "id", "columns": {"id": {"type": "text", "required": True}}}
    )
    assert contract.latest_by == "id"
    assert contract.key == ("id",)
    assert contract.schema_name == "public"
    assert contract.table_name == "plain"
    assert contract.ledger_table == "etl.d_file_ledger"
    assert contract.timezone == "UTC"
    col = contract.column("id")
    assert (col.type, col.required, col.on_blank, col.formats) == ("text", True, "reject", ())
    assert contract.csv.delimiter == ","
    assert contract.csv.null_values == ("",)


def test_composite_keys() -> None:
    contract = parse_contract(
        {
            "dataset": "lines",
            "table": "t",
            "key": ["order_id", "line_no"],
            "columns": {
                "order_id": {"type": "text", "required": True},
                "line_no": {"type": "integer", "required": True},
            },
        }
    )
    assert contract.key == ("order_id", "line_no")
    assert contract.latest_by == "order_id"


def test_naive_times_in_bounds_fills_and_expectations_are_in_the_datasets_zone() -> None:
    doc = {
        "dataset": "t",
        "table": "s.t",
        "key": "id",
        "timezone": "Europe/Berlin",
        "columns": {
            "id": {"type": "text", "required": True},
            "ts": {"type": "timestamp", "on_blank": "2020-01-01 00:00", "min": "2020-01-01"},
            "utc": {"type": "timestamp", "timezone": "UTC", "on_blank": None},
        },
        "expectations": [_between("ts", max_value="2030-01-01")],
    }
    contract = parse_contract(doc)
    assert contract.column("ts").zone == "Europe/Berlin"  # the dataset's, for the checks and fills too
    assert contract.column("utc").zone == "UTC"  # a column's own zone wins
    bound = contract.expectations[0].max_value
    assert bound == datetime(2030, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    assert parse_contract(contract.to_document()) == contract  # the resolved contract round-trips


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=list("ab1(?:)<=!>P[]{},*+|^$.\\dDwWsSbBZAuGx-imsU"), max_size=12))
def test_a_regex_passed_without_asking_re2_is_one_re2_reads(pattern: str) -> None:
    """The contract accepts some patterns without asking RE2 (no pyarrow import at a DAG parse): each of them is
    one pyarrow's RE2 reads too, so a contract never passes with a pattern the transform cannot run."""
    import re
    import warnings

    import pyarrow as pa
    import pyarrow.compute as pc

    from include.etl.contract import model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": still a regex
            re.compile(pattern)
    except re.error:
        return  # not a regex at all: refused earlier, by the model
    if model._plain_regex(pattern):
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)  # raises if RE2 cannot read it
