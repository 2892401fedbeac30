"""The orders contract as loaded from YAML, header matching, and contract validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from include.etl.contract import CONTRACTS_DIR, Contract, ContractError, load_contract, parse_contract

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
    assert contract.key == "order_id"
    assert contract.latest_by == "order_ts"


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
    path = tmp_path / "my_orders.yml"
    path.write_text((CONTRACTS_DIR / "orders.yml").read_text(encoding="utf-8"), encoding="utf-8")
    assert load_contract(path) == load_contract("orders")


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


def test_map_headers_own_name_beats_another_columns_alias() -> None:
    contract = parse_contract(
        {
            "dataset": "d",
            "table": "t",
            "key": "a",
            "columns": {"a": {"aliases": ["b"]}, "b": {"required": True}},
        }
    )
    mapping = contract.map_headers(["b"])
    assert mapping.index_of == {"b": 0}
    assert mapping.missing == ()


# --- contract validation ------------------------------------------------------------


def _with(change) -> dict[str, Any]:
    doc = copy.deepcopy(_orders_doc())
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda d: d["columns"]["quantity"].update(type="float"),
            "column 'quantity': unknown type 'float'",
            id="unknown-type",
        ),
        pytest.param(
            lambda d: d["derived"]["order_date"].update({"from": "order_time"}),
            "derived column 'order_date' refers to unknown column 'order_time'",
            id="derived-from-unknown",
        ),
        pytest.param(
            lambda d: d["derived"]["total_price"].update(product_of=["quantity", "price"]),
            "derived column 'total_price' refers to unknown column 'price'",
            id="derived-product-of-unknown",
        ),
        pytest.param(
            lambda d: d["derived"].update(margin={"type": "decimal"}),
            "derived column 'margin' needs `from` or `product_of`",
            id="derived-without-source",
        ),
        pytest.param(
            lambda d: d.update(key="order_number"),
            "unknown column 'order_number' used as key/latest_by",
            id="unknown-key",
        ),
        pytest.param(
            lambda d: d.update(latest_by="updated_at"),
            "unknown column 'updated_at' used as key/latest_by",
            id="unknown-latest-by",
        ),
    ],
)
def test_parse_contract_rejects_invalid_documents(change, message: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_contract(_with(change))
    assert str(info.value) == message


def test_parse_contract_defaults_for_minimal_document() -> None:
    contract = parse_contract({"dataset": "d", "table": "plain", "key": "id", "columns": {"id": None}})
    assert contract.latest_by == "id"
    assert contract.schema_name == "public"
    assert contract.table_name == "plain"
    col = contract.column("id")
    assert (col.type, col.required, col.on_blank, col.formats) == ("text", False, "reject", ("ISO8601",))
    assert contract.csv.delimiter == ","
    assert contract.csv.null_values == ("",)
