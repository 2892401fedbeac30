"""The Great Expectations suite generated from a contract, and its report on each processed file.

The suite is built from the contract's column rules and expectations, each carrying its
severity; on processed Parquet a broken `warn` rule is listed without failing the file, a broken
`reject_row` or `quarantine_file` rule fails it. `validate_processed` writes the report beside
the processed Parquet (`<file>.validation.json`) on moto's S3 server over HTTP. GX takes
seconds to import: the validators are module-scoped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.etl.contract.model import Contract, load_contract, parse_contract
from include.etl.contract.results import FileResult
from include.etl.contract.schema import output_schema
from include.etl.contract.transform import PARQUET_TYPE, ZoneKeys, transform_file
from include.etl.contract.validation import SuiteValidator, ValidationReport, suite_spec, validate_processed
from include.etl.reading import storage
from include.etl.reading.storage import RawObject
from include.etl.settings import DatasetSettings
from tests.helpers import moto_s3

SETTINGS = DatasetSettings(dataset="orders")
DAY = "2026-01-01"
HEADER = "order_id,order_ts,customer_id,product_name,category,quantity,unit_price,region\n"
BETWEEN = "expect_column_values_to_be_between"
# Beyond the shipped orders contract: a quarantine_file rule with `mostly`.
QUARANTINE = {
    "expectation": "expect_column_values_to_match_regex",
    "column": "order_id",
    "regex": "^O",
    "severity": "quarantine_file",
    "mostly": 0.75,
    "description": "order ids start with O",
}


def _with_expectations(contract: Contract, *extra: dict[str, Any]) -> Contract:
    doc = contract.to_document()
    doc["expectations"] = [*doc.get("expectations", []), *extra]
    return parse_contract(doc)


@pytest.fixture(scope="module")
def audited() -> Contract:
    """The orders contract plus a quarantine_file expectation."""
    return _with_expectations(load_contract("orders"), QUARANTINE)


@pytest.fixture(scope="module")
def validator(audited: Contract) -> SuiteValidator:
    return SuiteValidator.for_contract(audited)


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_s3(SETTINGS.raw_bucket, SETTINGS.processed_bucket) as client:
        yield client


def _row(i: int, **values: Any) -> dict[str, Any]:
    """A processed row that meets every rule of the orders contract, with `values` changed."""
    row = {
        "order_id": f"O{i}",
        "order_ts": datetime(2026, 1, 1, 10, tzinfo=UTC),
        "customer_id": "C1",
        "product_name": "Pen",
        "category": "Books",
        "quantity": 2,
        "unit_price": Decimal("1.50"),
        "region": "North",
        "order_date": date(2026, 1, 1),
        "total_price": Decimal("3.00"),
        "source_key": f"raw/orders/dt={DAY}/a.csv",
        "source_line": i + 2,
    }
    return {**row, **values}


def _table(contract: Contract, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=output_schema(contract))


def _failures(report: ValidationReport | dict[str, Any]) -> list[tuple[Any, ...]]:
    failures = report["failures"] if isinstance(report, dict) else report.failures
    return sorted(
        (f["expectation"], f["column"], f["severity"], f["unexpected_count"], tuple(f["examples"])) for f in failures
    )


# --- the suite -----------------------------------------------------------------------------------


def _rules(contract: Contract) -> list[tuple[str, str | None, str, str]]:
    """(expectation, column, severity, source) of every rule the contract states, read from the contract."""
    rules = []
    for col in contract.columns:
        if not col.nullable:
            rules.append(("expect_column_values_to_not_be_null", col.name, "reject_row", "column rule"))
        if col.type != "text" and (col.min is not None or col.max is not None):  # numbers, dates, timestamps
            rules.append((BETWEEN, col.name, "reject_row", "column rule"))
        if col.allowed:
            rules.append(("expect_column_values_to_be_in_set", col.name, "reject_row", "column rule"))
        if col.max_length is not None:
            rules.append(("expect_column_value_lengths_to_be_between", col.name, "reject_row", "column rule"))
    for e in contract.expectations:
        rules.append((e.expectation, getattr(e, "column", None), e.severity, "contract expectation"))
    return sorted(rules)


def _spec_rules(spec: dict[str, Any]) -> list[tuple[str, str | None, str, str]]:
    return sorted(
        (e["type"], e["kwargs"].get("column"), e["meta"]["severity"], e["meta"]["source"]) for e in spec["expectations"]
    )


@pytest.mark.parametrize("which", ["orders", "customers", "orders+quarantine"])
def test_the_suite_has_one_expectation_per_column_rule_and_per_contract_expectation(which: str) -> None:
    contract = load_contract(which.split("+")[0])
    if which.endswith("+quarantine"):
        contract = _with_expectations(contract, QUARANTINE)
    spec = suite_spec(contract)
    assert spec["name"] == f"{contract.dataset}_contract"
    assert _spec_rules(spec) == _rules(contract)
    assert len(spec["expectations"]) == len(_rules(contract))


def test_the_suite_carries_the_contract_s_values_severity_and_mostly(audited: Contract) -> None:
    by_rule = {
        (e["type"], e["kwargs"].get("column"), e["meta"]["severity"]): e for e in suite_spec(audited)["expectations"]
    }
    assert by_rule[(BETWEEN, "quantity", "reject_row")]["kwargs"] == {
        "column": "quantity",
        "min_value": 1,
        "max_value": 2147483647,
    }
    assert by_rule[(BETWEEN, "unit_price", "reject_row")]["kwargs"] == {
        "column": "unit_price",
        "min_value": 0,
        "max_value": None,
    }
    assert by_rule[(BETWEEN, "quantity", "warn")]["kwargs"] == {"column": "quantity", "max_value": 1000}
    assert by_rule[("expect_column_values_to_be_in_set", "region", "reject_row")]["kwargs"] == {
        "column": "region",
        "value_set": ["North", "South", "East", "West", "Central"],
    }
    # `mostly` reaches GX where the contract sets it (quarantine_file / warn), nowhere else.
    regex = by_rule[("expect_column_values_to_match_regex", "order_id", "quarantine_file")]
    assert regex["kwargs"] == {"column": "order_id", "regex": "^O", "mostly": 0.75}
    assert [e["type"] for e in suite_spec(audited)["expectations"] if "mostly" in e["kwargs"]] == [
        "expect_column_values_to_match_regex"
    ]


def test_mostly_is_in_the_expectation_meta_as_documented(audited: Contract) -> None:
    regex = next(e for e in suite_spec(audited)["expectations"] if e["type"] == "expect_column_values_to_match_regex")
    assert regex["meta"].get("mostly") == 0.75


def test_date_and_timestamp_bounds_are_in_the_suite() -> None:
    contract = load_contract("orders")
    bounded = [c.name for c in contract.columns if c.type in ("date", "timestamp") and c.min is not None]
    assert bounded == ["order_ts"]
    columns = {e["kwargs"].get("column") for e in suite_spec(contract)["expectations"] if e["type"] == BETWEEN}
    assert "order_ts" in columns


# --- a processed file's report -----------------------------------------------------------------


def _put_raw(s3: Any, name: str, body: str) -> RawObject:
    prefix = storage.partition_prefix(SETTINGS.raw_prefix, DAY)
    s3.put_object(Bucket=SETTINGS.raw_bucket, Key=prefix + name, Body=body.encode())
    return next(o for o in storage.list_partition(s3, SETTINGS.raw_bucket, prefix)[0] if o.key == prefix + name)


def _stored_report(s3: Any, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    obj = s3.get_object(Bucket=SETTINGS.processed_bucket, Key=key)
    return json.loads(obj["Body"].read()), obj


def test_a_file_breaking_only_a_warn_rule_succeeds_and_lists_it(
    s3: Any, audited: Contract, validator: SuiteValidator
) -> None:
    raw = _put_raw(
        s3,
        "a.csv",
        HEADER
        + "O1,2026-01-01 10:00,C1,Pen,Books,2,1.50,North\n"
        + "O2,2026-01-01 11:00,C2,Lamp,Home & Garden,5000,3.00,South\n",  # more than 1,000 units: warn
    )
    result = transform_file(s3, raw, audited, SETTINGS)
    assert (result.status, result.rows_clean, len(result.warnings)) == ("processed", 2, 1)

    report = validate_processed(s3, result, validator, SETTINGS)

    assert report["success"] is True
    assert (report["suite"], report["source_key"], report["rows"], report["batches"]) == (
        "orders_contract",
        raw.key,
        2,
        1,
    )
    assert _failures(report) == [(BETWEEN, "quantity", "warn", 1, ("5000",))]
    # The report is stored beside the processed Parquet, made from the same raw version.
    assert result.processed_key == f"processed/orders/dt={DAY}/a.csv.parquet"
    assert report["report_key"] == f"processed/orders/dt={DAY}/a.csv.validation.json"
    stored, obj = _stored_report(s3, report["report_key"])
    assert stored == report
    assert obj["ContentType"] == "application/json"
    assert obj["Metadata"] == storage.source_metadata(raw)


def _put_processed(s3: Any, contract: Contract, rows: list[dict[str, Any]], tmp_path: Path) -> FileResult:
    """A processed Parquet in S3 with these rows, as the transform stores it (made-from metadata)."""
    raw = RawObject(f"raw/orders/dt={DAY}/b.csv", "0123456789abcdef", 100, datetime(2026, 1, 1, 12, tzinfo=UTC))
    keys = ZoneKeys(raw.key, SETTINGS)
    path = tmp_path / "b.parquet"
    pq.write_table(_table(contract, rows), path)
    extra = {"Metadata": storage.source_metadata(raw)}
    storage.upload(s3, str(path), SETTINGS.processed_bucket, keys.processed, PARQUET_TYPE, extra)
    return FileResult.for_version(raw, processed_key=keys.processed, rows_clean=len(rows))


def test_a_file_breaking_reject_row_rules_fails_naming_each_expectation_and_column(
    s3: Any, audited: Contract, validator: SuiteValidator, tmp_path: Path
) -> None:
    rows = [
        _row(0),
        _row(1, region="Mars"),
        _row(2, quantity=0),
        _row(3, product_name="x" * 201),
        _row(4, unit_price=Decimal("-1.00")),
    ]
    result = _put_processed(s3, audited, rows, tmp_path)

    report = validate_processed(s3, result, validator, SETTINGS)

    assert report["success"] is False
    assert report["rows"] == 5
    assert _failures(report) == [
        ("expect_column_value_lengths_to_be_between", "product_name", "reject_row", 1, ("x" * 201,)),
        (BETWEEN, "quantity", "reject_row", 1, ("0",)),
        (BETWEEN, "unit_price", "reject_row", 1, ("-1.0",)),
        ("expect_column_values_to_be_in_set", "region", "reject_row", 1, ("Mars",)),
    ]
    stored, _ = _stored_report(s3, f"processed/orders/dt={DAY}/b.csv.validation.json")
    assert (stored["success"], _failures(stored)) == (False, _failures(report))


def test_a_null_where_the_contract_forbids_one_fails_the_file(audited: Contract, validator: SuiteValidator) -> None:
    report = ValidationReport(suite=validator.name)
    validator.validate_table(_table(audited, [_row(0), _row(1, customer_id=None)]), report)
    assert report.success is False
    assert [(f["expectation"], f["column"], f["severity"], f["unexpected_count"]) for f in report.failures] == [
        ("expect_column_values_to_not_be_null", "customer_id", "reject_row", 1)
    ]


@pytest.mark.parametrize(("bad", "fails"), [(0, False), (1, False), (2, True), (4, True)])
def test_a_quarantine_file_rule_fails_the_file_only_below_its_mostly(
    audited: Contract, validator: SuiteValidator, tmp_path: Path, bad: int, fails: bool
) -> None:
    rows = [_row(i, order_id=f"X{i}" if i < bad else f"O{i}") for i in range(4)]  # mostly 0.75 of 4: one may miss
    path = tmp_path / "q.parquet"
    pq.write_table(_table(audited, rows), path)

    report = validator.validate_parquet(str(path), ValidationReport(suite=validator.name))

    assert report.success is (not fails)
    expected = [("expect_column_values_to_match_regex", "order_id", "quarantine_file", bad)] if fails else []
    assert [(f["expectation"], f["column"], f["severity"], f["unexpected_count"]) for f in report.failures] == expected


def test_batches_add_up_to_one_report_with_a_few_examples(audited: Contract, validator: SuiteValidator) -> None:
    report = ValidationReport(suite=validator.name, source_key="raw/orders/dt=2026-01-01/big.csv")
    first = [_row(i, region=f"Mars{i}") for i in range(4)] + [_row(4)]
    second = [_row(10 + i, region=f"Venus{i}") for i in range(3)]
    validator.validate_table(_table(audited, first), report)
    validator.validate_table(_table(audited, second), report)

    assert (report.batches, report.rows, report.success) == (2, 8, False)
    assert _failures(report) == [
        (
            "expect_column_values_to_be_in_set",
            "region",
            "reject_row",
            7,
            ("Mars0", "Mars1", "Mars2", "Mars3", "Venus0"),  # at most five examples, the first ones
        )
    ]


def test_a_warn_rule_and_a_reject_row_rule_on_one_column_are_reported_apart(
    audited: Contract, validator: SuiteValidator
) -> None:
    report = ValidationReport(suite=validator.name)
    validator.validate_table(_table(audited, [_row(0, quantity=0), _row(1, quantity=5000)]), report)
    assert _failures(report) == [
        (BETWEEN, "quantity", "reject_row", 1, ("0",)),
        (BETWEEN, "quantity", "warn", 1, ("5000",)),
    ]


def test_a_row_count_rule_is_judged_on_the_whole_file(tmp_path: Path) -> None:
    contract = parse_contract(
        {
            "dataset": "counted",
            "table": "analytics.counted",
            "key": "id",
            "columns": {"id": {"type": "text", "required": True}},
            "expectations": [
                {"expectation": "expect_table_row_count_to_be_between", "min_value": 260_000, "severity": "warn"}
            ],
        }
    )
    rows = 300_000
    table = pa.table(
        {
            "id": [f"K{i}" for i in range(rows)],
            "source_key": ["raw/counted/dt=2026-01-01/big.csv"] * rows,
            "source_line": range(2, rows + 2),
        },
        schema=output_schema(contract),
    )
    pq.write_table(table, tmp_path / "big.parquet")
    counted = SuiteValidator.for_contract(contract)

    report = counted.validate_parquet(str(tmp_path / "big.parquet"), ValidationReport(suite=counted.name))

    assert report.rows == rows
    assert report.failures == []


def test_a_processed_file_made_from_another_version_is_not_validated(
    s3: Any, audited: Contract, validator: SuiteValidator
) -> None:
    first = _put_raw(s3, "c.csv", HEADER + "O1,2026-01-01 10:00,C1,Pen,Books,2,1.50,North\n")
    stale = transform_file(s3, first, audited, SETTINGS)
    s3.put_object(  # overwritten and transformed again before the report ran
        Bucket=SETTINGS.raw_bucket,
        Key=first.key,
        Body=(HEADER + "O1,2026-01-01 10:00,C1,Pen,Books,3,1.50,North\n").encode(),
    )
    newer = next(o for o in storage.list_partition(s3, SETTINGS.raw_bucket, first.key)[0])
    assert newer.etag != first.etag
    transform_file(s3, newer, audited, SETTINGS)

    report = validate_processed(s3, stale, validator, SETTINGS)

    assert (report["success"], report["rows"], report["report_key"]) == (True, 0, None)
    assert [(f["expectation"], f["severity"], f["examples"]) for f in report["failures"]] == [
        ("(not validated)", "warn", ["a newer version was processed meanwhile"])
    ]
    listed = s3.list_objects_v2(Bucket=SETTINGS.processed_bucket, Prefix=f"processed/orders/dt={DAY}/")
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == [f"processed/orders/dt={DAY}/c.csv.parquet"]
