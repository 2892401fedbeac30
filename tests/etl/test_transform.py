"""transform_file against moto: processed Parquet, rejected CSV, whole-file rejection."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq
import pytest

from include.etl.contract.model import Contract
from include.etl.contract.results import FileResult
from include.etl.contract.schema import output_schema
from include.etl.contract.transform import transform_file
from include.etl.reading import storage
from include.etl.settings import DatasetSettings
from tests.helpers import moto_s3

DAY = "2026-01-02"
REGIONS = "North, South, East, West, Central"

SEPARATE = DatasetSettings(dataset="orders", raw_bucket="raw", processed_bucket="processed")
SINGLE = DatasetSettings(
    dataset="orders",
    raw_bucket="lake",
    processed_bucket="lake",
    raw_prefix="landing/orders",
    processed_prefix="curated/orders",
    rejected_prefix="quarantine/orders",
)

DIRTY = (
    b"Order ID,Timestamp,customer,PRODUCT,category,qty,Price,REGION,notes\n"
    b'O1,2026-01-02 03:04:05,,  Wireless   Mouse ,electronics,3,"$1,234.50",north,gift\n'
    b"O2,garbage,C2,Lamp,,0,1,Mars,\n"
    b"\n"
    b"O3,2026-01-02T03:04:05+02:00,C3,Pen,books,1,2\n"
    b'O4,01/02/2026,C4,"Webcam, 1080p",Toys,2,0.10,SOUTH,\n'
)


@pytest.fixture(params=[SEPARATE, SINGLE], ids=["separate-buckets", "single-bucket"])
def settings(request: pytest.FixtureRequest) -> DatasetSettings:
    return request.param


@pytest.fixture
def s3(settings: DatasetSettings) -> Iterator[Any]:
    with moto_s3(settings.raw_bucket, settings.processed_bucket) as client:
        yield client


def _put(s3: Any, settings: DatasetSettings, name: str, body: bytes) -> storage.RawObject:
    prefix = storage.partition_prefix(settings.raw_prefix, DAY)
    s3.put_object(Bucket=settings.raw_bucket, Key=prefix + name, Body=body)
    objects, _ = storage.list_partition(s3, settings.raw_bucket, prefix)
    return next(o for o in objects if o.key == prefix + name)


def _get(s3: Any, settings: DatasetSettings, key: str) -> bytes:
    return s3.get_object(Bucket=settings.processed_bucket, Key=key)["Body"].read()


def _keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def _rejected_rows(s3: Any, settings: DatasetSettings, key: str) -> list[dict]:
    """The rejected CSV as a spreadsheet user reads it: every value a string but the line number."""
    text = _get(s3, settings, key).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [{**r, "source_line": int(r["source_line"])} for r in rows]


def _assert_counts_add_up(result: FileResult) -> None:
    assert result.rows_read == result.rows_clean + result.rows_rejected


def test_dirty_file_writes_parquet_and_rejected_rows(s3: Any, settings: DatasetSettings, contract: Contract) -> None:
    obj = _put(s3, settings, "orders_01.csv", DIRTY)
    result = transform_file(s3, obj, contract, settings)

    processed_key = f"{settings.processed_prefix}/dt={DAY}/orders_01.csv.parquet"
    rejected_key = f"{settings.rejected_prefix}/dt={DAY}/orders_01.csv.rejected.csv"
    assert result.to_dict() == {
        "source_key": obj.key,
        "etag": obj.etag,
        "last_modified": obj.last_modified.isoformat(),
        "size": len(DIRTY),
        "version_id": None,
        "processed_key": processed_key,
        "rejected_key": rejected_key,
        "validation_key": None,
        "status": "processed",
        "quarantined": False,
        "reason": None,
        "error": None,
        "rows_read": 4,
        "rows_clean": 2,
        "rows_rejected": 2,
        "blank_lines": 1,
        "encoding": "utf-8",
        "extra_columns": ["notes"],
        "reinterpreted": {},
        "notes": [
            "unit_price: amounts in $, read without their currency sign or code (the contract names no currency: "
            "values in another one are rejected)"
        ],
        "warnings": [],
    }
    _assert_counts_add_up(result)

    table = pq.read_table(io.BytesIO(_get(s3, settings, processed_key)))
    assert table.schema.remove_metadata() == output_schema(contract)
    assert table.to_pylist() == [
        {
            "order_id": "O1",
            "order_ts": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "customer_id": "guest",
            "product_name": "Wireless Mouse",
            "category": "Electronics",
            "quantity": 3,
            "unit_price": Decimal("1234.50"),
            "region": "North",
            "order_date": date(2026, 1, 2),
            "total_price": Decimal("3703.50"),
            "source_key": obj.key,
            "source_line": 2,
        },
        {
            "order_id": "O4",
            "order_ts": datetime(2026, 1, 2, tzinfo=UTC),
            "customer_id": "C4",
            "product_name": "Webcam, 1080p",
            "category": "Toys",
            "quantity": 2,
            "unit_price": Decimal("0.10"),
            "region": "South",
            "order_date": date(2026, 1, 2),
            "total_price": Decimal("0.20"),
            "source_key": obj.key,
            "source_line": 6,
        },
    ]

    head = s3.head_object(Bucket=settings.processed_bucket, Key=rejected_key)
    assert head["ContentType"] == "text/csv"
    rejected = _rejected_rows(s3, settings, rejected_key)
    assert list(rejected[0]) == [
        "source_line",
        "reject_reason",
        "raw_record",
        "Order ID",
        "Timestamp",
        "customer",
        "PRODUCT",
        "category",
        "qty",
        "Price",
        "REGION",
        "notes",
    ]
    assert [(r["source_line"], r["reject_reason"]) for r in rejected] == [
        (
            3,
            f"order_ts 'garbage' is not a recognised date/time; quantity 0 is below 1; "
            f"region 'Mars' is not one of {REGIONS}",
        ),
        (5, "expected 9 fields, found 7"),
    ]
    assert [rejected[0][h] for h in ("Order ID", "Timestamp", "qty", "Price", "REGION")] == [
        "O2",
        "garbage",
        "0",
        "1",
        "Mars",
    ]
    assert rejected[1]["raw_record"] == "O3,2026-01-02T03:04:05+02:00,C3,Pen,books,1,2"


def test_clean_file_writes_no_rejected_object(s3: Any, settings: DatasetSettings, contract: Contract) -> None:
    body = b"order_id,order_ts,product_name,quantity,unit_price,region\nA,2026-01-02,Pen,1,1.00,East\n"
    obj = _put(s3, settings, "clean.csv", body)
    result = transform_file(s3, obj, contract, settings)
    assert (result.status, result.rows_read, result.rows_clean, result.rows_rejected) == ("processed", 1, 1, 0)
    assert result.rejected_key is None
    _assert_counts_add_up(result)
    assert _keys(s3, settings.processed_bucket) >= {result.processed_key}
    assert not any(k.startswith(settings.rejected_prefix) for k in _keys(s3, settings.processed_bucket))


def test_gzipped_object_is_transformed(s3: Any, settings: DatasetSettings, contract: Contract) -> None:
    obj = _put(s3, settings, "orders_01.csv.gz", gzip.compress(DIRTY, mtime=0))
    result = transform_file(s3, obj, contract, settings)
    assert result.processed_key == f"{settings.processed_prefix}/dt={DAY}/orders_01.csv.gz.parquet"
    assert (result.rows_read, result.rows_clean, result.rows_rejected) == (4, 2, 2)
    _assert_counts_add_up(result)


def test_same_input_twice_gives_identical_parquet(s3: Any, settings: DatasetSettings, contract: Contract) -> None:
    obj = _put(s3, settings, "orders_01.csv", DIRTY)
    first = transform_file(s3, obj, contract, settings)
    parquet_1 = _get(s3, settings, first.processed_key)
    rejected_1 = _get(s3, settings, first.rejected_key)
    second = transform_file(s3, obj, contract, settings)
    assert second == first
    assert _get(s3, settings, second.processed_key) == parquet_1
    assert _get(s3, settings, second.rejected_key) == rejected_1


def test_missing_required_column_rejects_whole_file(s3: Any, settings: DatasetSettings, contract: Contract) -> None:
    body = (
        b"order_id,order_ts,customer_id,product_name,category,quantity,unit_price\n"
        b"A,2026-01-02,C1,Pen,Books,1,1.00\n"
        b"B,garbage,C2,Lamp,Home,2,2.00\n"
        b"\n"
        b"C,2026-01-02,C3,Mug,Home,1,3.00\n"
    )
    obj = _put(s3, settings, "legacy.csv", body)
    result = transform_file(s3, obj, contract, settings)

    reason = "missing required column(s): region"
    assert (result.status, result.reason) == ("rejected", reason)
    assert result.processed_key is None
    assert (result.rows_read, result.rows_clean, result.rows_rejected) == (3, 0, 3)
    _assert_counts_add_up(result)
    assert f"{settings.processed_prefix}/dt={DAY}/legacy.csv.parquet" not in _keys(s3, settings.processed_bucket)

    rejected = _rejected_rows(s3, settings, result.rejected_key)
    assert [(r["source_line"], r["reject_reason"], r["order_id"]) for r in rejected] == [
        (2, reason, "A"),
        (3, reason, "B"),
        (5, reason, "C"),
    ]
    assert rejected[1]["order_ts"] == "garbage"
    head = s3.head_object(Bucket=settings.processed_bucket, Key=result.rejected_key)
    assert head["Metadata"]["reject-reason"] == reason


def test_a_replacement_rejected_whole_leaves_the_previous_versions_processed_object(
    s3: Any, settings: DatasetSettings, contract: Contract
) -> None:
    """The previous version stays loaded (the load keeps its rows), so its processed file stays too."""
    good = b"order_id,order_ts,product_name,quantity,unit_price,region\nA,2026-01-02,Pen,1,1.00,East\n"
    first = transform_file(s3, _put(s3, settings, "f.csv", good), contract, settings)
    before = _get(s3, settings, first.processed_key)
    bad = b"order_id,order_ts,product_name,quantity,unit_price\nA,2026-01-02,Pen,1,1.00\n"
    second = transform_file(s3, _put(s3, settings, "f.csv", bad), contract, settings)
    assert second.status == "rejected"
    assert _get(s3, settings, first.processed_key) == before
    head = s3.head_object(Bucket=settings.processed_bucket, Key=first.processed_key)
    assert head["Metadata"]["source-etag"] == first.etag


@pytest.mark.parametrize(
    "body",
    [pytest.param(b"", id="0-bytes"), pytest.param(b" \r\n\n", id="whitespace-only")],
)
def test_empty_file_is_rejected_with_reason(
    s3: Any, settings: DatasetSettings, contract: Contract, body: bytes
) -> None:
    obj = _put(s3, settings, "empty.csv", body)
    result = transform_file(s3, obj, contract, settings)
    assert (result.status, result.reason) == ("rejected", "empty file: no header row")
    assert result.processed_key is None
    assert result.rejected_key == f"{settings.rejected_prefix}/dt={DAY}/empty.csv"  # the raw file, as is
    assert (result.rows_read, result.rows_clean, result.rows_rejected) == (0, 0, 0)
    _assert_counts_add_up(result)
    head = s3.head_object(Bucket=settings.processed_bucket, Key=result.rejected_key)
    assert head["Metadata"]["reject-reason"] == "empty file: no header row"
    # A file that cannot be read as CSV is quarantined as is.
    assert _get(s3, settings, result.rejected_key) == body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"order_id,order_ts,product_name,quantity,unit_price,region\n", id="trailing-newline"),
        pytest.param(b"order_id,order_ts,product_name,quantity,unit_price,region", id="no-trailing-newline"),
    ],
)
def test_header_only_file_is_processed_with_zero_rows(
    s3: Any, settings: DatasetSettings, contract: Contract, body: bytes
) -> None:
    obj = _put(s3, settings, "header_only.csv", body)
    result = transform_file(s3, obj, contract, settings)
    assert (result.status, result.rows_read, result.rows_clean, result.rows_rejected) == ("processed", 0, 0, 0)
    _assert_counts_add_up(result)
    table = pq.read_table(io.BytesIO(_get(s3, settings, result.processed_key)))
    assert table.num_rows == 0
    assert table.schema.remove_metadata() == output_schema(contract)


def test_cp1252_file_reports_encoding(s3: Any, settings: DatasetSettings, contract: Contract) -> None:
    body = "order_id,order_ts,product_name,quantity,unit_price,region\nA,2026-01-02,Café crème,1,€3.50,West\n"
    obj = _put(s3, settings, "latin.csv", body.encode("cp1252"))
    result = transform_file(s3, obj, contract, settings)
    assert result.encoding == "utf-8"
    assert result.reinterpreted == {"rows decoded as cp1252": 1}
    _assert_counts_add_up(result)
    table = pq.read_table(io.BytesIO(_get(s3, settings, result.processed_key)))
    assert table.column("product_name").to_pylist() == ["Café crème"]
    assert table.column("unit_price").to_pylist() == [Decimal("3.50")]


def test_small_batches_give_same_output_as_one_batch(s3: Any, settings: DatasetSettings, contract: Contract) -> None:
    rows = [f"O{i},2026-01-02 00:00:{i % 60:02d},C{i},Item {i},Books,{i % 4},1.{i % 100:02d},West" for i in range(200)]
    body = "order_id,order_ts,customer_id,product_name,category,quantity,unit_price,region\n" + "\n".join(rows)
    obj = _put(s3, settings, "many.csv", body.encode())
    whole = transform_file(s3, obj, contract, settings)
    whole_table = pq.read_table(io.BytesIO(_get(s3, settings, whole.processed_key)))
    whole_rejected = _rejected_rows(s3, settings, whole.rejected_key)

    small = settings.model_copy(update={"batch_bytes": 1 << 16})
    split = transform_file(s3, obj, contract, small)
    split_table = pq.read_table(io.BytesIO(_get(s3, settings, split.processed_key)))
    assert (split.rows_read, split.rows_clean, split.rows_rejected) == (200, 150, 50)
    _assert_counts_add_up(split)
    assert split_table.to_pylist() == whole_table.to_pylist()
    assert _rejected_rows(s3, settings, split.rejected_key) == whole_rejected
    assert [r["source_line"] for r in whole_rejected] == [i + 2 for i in range(200) if i % 4 == 0]
