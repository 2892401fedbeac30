"""S3 helpers against moto: partition listing, zone keys, conditional reads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from include.etl.reading import storage
from include.etl.reading.storage import RawObject
from tests.helpers import moto_s3

BUCKET = "raw"
PREFIX = "raw/orders/dt=2026-01-02/"


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_s3(BUCKET) as client:
        yield client


def _md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()  # the ETag of a single-part upload


def test_list_partition_pages_past_1000_keys(s3: Any) -> None:
    names = [f"{PREFIX}part-{i:05d}.csv" for i in range(1_100)]
    for key in reversed(names):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"a\n")
    csvs, others = storage.list_partition(s3, BUCKET, PREFIX)
    assert [o.key for o in csvs] == names
    assert {o.etag for o in csvs} == {_md5(b"a\n")}
    assert {o.size for o in csvs} == {2}
    assert others == []


def test_list_partition_sorts_csvs_and_reports_others(s3: Any) -> None:
    bodies = {
        f"{PREFIX}orders_02.csv": b"b,c\n",
        f"{PREFIX}orders_01.csv.gz": b"\x1f\x8b gzip",
        f"{PREFIX}orders_03.CSV": b"upper\n",
        f"{PREFIX}_SUCCESS": b"",
        f"{PREFIX}notes.txt": b"hello",
        f"{PREFIX}orders.csv.bak": b"old",
        f"{PREFIX}sub/": b"",
        f"{PREFIX}sub/orders_00.csv": b"nested\n",
        "raw/orders/dt=2026-01-03/orders_01.csv": b"other day\n",
        "raw/orders/dt=2026-01-02.csv": b"sibling\n",
    }
    for key, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    csvs, others = storage.list_partition(s3, BUCKET, PREFIX)

    expected = [
        f"{PREFIX}orders_01.csv.gz",
        f"{PREFIX}orders_02.csv",
        f"{PREFIX}orders_03.CSV",
        f"{PREFIX}sub/orders_00.csv",
    ]
    assert [(o.key, o.etag, o.size) for o in csvs] == [(k, _md5(bodies[k]), len(bodies[k])) for k in expected]
    assert all('"' not in o.etag for o in csvs)
    assert all(o.last_modified.tzinfo is not None for o in csvs)
    # Every other object is reported (the listing records it as ignored, with its reason), folder markers too.
    assert [o.key for o in others] == [
        f"{PREFIX}_SUCCESS",
        f"{PREFIX}notes.txt",
        f"{PREFIX}orders.csv.bak",
        f"{PREFIX}sub/",
    ]


def test_list_partition_empty_prefix_gives_nothing(s3: Any) -> None:
    assert storage.list_partition(s3, BUCKET, PREFIX) == ([], [])


@pytest.mark.parametrize(
    ("key", "name", "gzipped"),
    [
        (f"{PREFIX}orders_01.csv", "orders_01.csv", False),
        (f"{PREFIX}orders_01.csv.gz", "orders_01.csv.gz", True),
        (f"{PREFIX}ORDERS_01.CSV.GZ", "ORDERS_01.CSV.GZ", True),
    ],
)
def test_raw_object_name_and_gzip_flag(key: str, name: str, gzipped: bool) -> None:
    obj = RawObject(key, "etag", 1, datetime(2026, 1, 2, tzinfo=UTC))
    assert (obj.name, obj.gzipped) == (name, gzipped)


@pytest.mark.parametrize(
    ("raw_key", "raw_prefix", "zone_prefix", "suffix", "expected"),
    [
        ("raw/orders/dt=2026-01-02/a.csv", "raw/orders", "processed/orders", ".parquet",
         "processed/orders/dt=2026-01-02/a.csv.parquet"),
        ("raw/orders/dt=2026-01-02/a.csv.gz", "raw/orders", "processed/orders", ".parquet",
         "processed/orders/dt=2026-01-02/a.csv.gz.parquet"),
        ("raw/orders/dt=2026-01-02/A.CSV", "raw/orders", "processed/orders", ".parquet",
         "processed/orders/dt=2026-01-02/A.CSV.parquet"),
        ("raw/orders/dt=2026-01-02/a.csv.gz", "raw/orders", "rejected/orders", "",
         "rejected/orders/dt=2026-01-02/a.csv.gz"),
        ("raw/orders/dt=2026-01-02/a.v2.csv", "/raw/orders/", "/processed/orders/", ".parquet",
         "processed/orders/dt=2026-01-02/a.v2.csv.parquet"),
        ("raw/orders/dt=2026-01-02/sub/a.csv", "raw/orders", "processed/orders", ".parquet",
         "processed/orders/dt=2026-01-02/sub/a.csv.parquet"),
        ("elsewhere/x/a.csv", "raw/orders", "processed/orders", ".parquet", "processed/orders/a.csv.parquet"),
    ],
)  # fmt: skip
def test_zone_key(raw_key: str, raw_prefix: str, zone_prefix: str, suffix: str, expected: str) -> None:
    assert storage.zone_key(raw_key, raw_prefix, zone_prefix, suffix) == expected


def test_zone_keys_are_unique_per_raw_key() -> None:
    """a.csv, a.CSV and a.csv.gz in one partition never share a processed, rejected or report object."""
    from include.etl.contract.transform import ZoneKeys
    from include.etl.settings import DatasetSettings

    settings = DatasetSettings(dataset="orders")
    raw = [f"{PREFIX}a.csv", f"{PREFIX}a.CSV", f"{PREFIX}a.csv.gz", f"{PREFIX}a.csv.parquet.csv"]
    outputs = [
        getattr(ZoneKeys(k, settings), zone)
        for k in raw
        for zone in ("processed", "report", "rejected_rows", "rejected_copy", "quarantined")
    ]
    assert len(set(outputs)) == len(outputs)


@pytest.mark.parametrize(
    ("prefix", "day", "expected"),
    [
        ("raw/orders", "2026-01-02", "raw/orders/dt=2026-01-02/"),
        ("raw/orders/", "2026-01-02", "raw/orders/dt=2026-01-02/"),
        ("/raw/orders/", "2026-12-31", "raw/orders/dt=2026-12-31/"),
    ],
)
def test_partition_prefix(prefix: str, day: str, expected: str) -> None:
    assert storage.partition_prefix(prefix, day) == expected


def test_open_version_reads_the_listed_version(s3: Any) -> None:
    key = f"{PREFIX}a.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"a,b\n1,2\n")
    (obj,), _ = storage.list_partition(s3, BUCKET, PREFIX)
    body, version_id = storage.open_version(s3, BUCKET, obj)
    assert body.read() == b"a,b\n1,2\n"
    assert version_id is None  # the bucket is not versioned


@pytest.mark.parametrize("change", ["overwrite", "delete"])
def test_open_version_fails_cleanly_when_the_object_changed_since_listing(s3: Any, change: str) -> None:
    key = f"{PREFIX}a.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"v1\n")
    (obj,), _ = storage.list_partition(s3, BUCKET, PREFIX)
    if change == "overwrite":
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"v2\n")
    else:
        s3.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(storage.ObjectChangedError):
        storage.open_version(s3, BUCKET, obj)


def test_open_version_on_a_versioned_bucket_gives_the_version_id(s3: Any) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    key = f"{PREFIX}a.csv"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=b"v1\n")
    (obj,), _ = storage.list_partition(s3, BUCKET, PREFIX)
    _, version_id = storage.open_version(s3, BUCKET, obj)
    assert version_id == put["VersionId"]


def test_head_gives_the_current_version_or_none(s3: Any) -> None:
    key = f"{PREFIX}a.csv"
    assert storage.head(s3, BUCKET, key) is None
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"v1\n")
    (listed,), _ = storage.list_partition(s3, BUCKET, PREFIX)
    current = storage.head(s3, BUCKET, key)
    assert current is not None and current.same_version(listed)


def test_download_version_checks_the_output_was_made_from_that_version(s3: Any, tmp_path) -> None:
    raw = RawObject(f"{PREFIX}a.csv", "e1", 3, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    other = RawObject(raw.key, "e2", 3, datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC))
    s3.put_object(Bucket=BUCKET, Key="out/a.parquet", Body=b"made from e1", Metadata=storage.source_metadata(raw))
    storage.download_version(s3, BUCKET, "out/a.parquet", raw, str(tmp_path / "a"))
    assert (tmp_path / "a").read_bytes() == b"made from e1"
    with pytest.raises(storage.ObjectChangedError):
        storage.download_version(s3, BUCKET, "out/a.parquet", other, str(tmp_path / "b"))
    with pytest.raises(storage.ObjectChangedError):
        storage.download_version(s3, BUCKET, "out/missing.parquet", raw, str(tmp_path / "c"))


def test_raw_object_round_trips_through_xcom() -> None:
    obj = RawObject(f"{PREFIX}a.csv", "e1", 3, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert RawObject.from_dict(obj.to_dict()) == obj


def test_upload_and_delete(s3: Any, tmp_path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"x\n")
    storage.upload(s3, str(path), BUCKET, "out/x.csv", "text/csv", {"Metadata": {"reject-reason": "why"}})
    head = s3.head_object(Bucket=BUCKET, Key="out/x.csv")
    assert head["ContentType"] == "text/csv"
    assert head["Metadata"] == {"reject-reason": "why"}
    storage.delete(s3, BUCKET, "out/x.csv")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")
    storage.delete(s3, BUCKET, "out/never-existed.csv")  # deleting a missing key is not an error


def test_delete_many_deletes_every_key_in_one_request_and_ignores_missing_ones(s3: Any) -> None:
    for key in ("out/a.parquet", "out/b.csv", "out/keep.csv"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    storage.delete_many(s3, BUCKET, ["out/a.parquet", "out/b.csv", "out/never-existed.csv"])
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")
    assert [o["Key"] for o in listed["Contents"]] == ["out/keep.csv"]
    storage.delete_many(s3, BUCKET, [])  # nothing to delete: no request


def test_delete_many_raises_what_s3_could_not_delete() -> None:
    """A key S3 refuses to delete (DeleteObjects answers 200 with per-key errors) is an error, with S3's code."""

    class Refusing:
        def delete_objects(self, **_: Any) -> dict[str, Any]:
            return {"Errors": [{"Key": "out/a.csv", "Code": "AccessDenied", "Message": "Access Denied"}]}

    with pytest.raises(ClientError) as info:
        storage.delete_many(Refusing(), BUCKET, ["out/a.csv", "out/b.csv"])
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert "out/a.csv" in str(info.value) and "1 of 2" in str(info.value)
