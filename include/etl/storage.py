"""S3 access: list a partition's raw objects, stream them, and write zone objects.

Takes a boto3 S3 client (from `S3Hook(...).get_conn()` in tasks, from moto in tests),
so the endpoint, credentials and retries come from the Airflow connection.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, BinaryIO

RAW_SUFFIXES = (".csv", ".csv.gz")


@dataclass(frozen=True)
class RawObject:
    """A raw object of a partition: its key, ETag (content version) and size."""

    key: str
    etag: str
    size: int

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def gzipped(self) -> bool:
        return self.key.lower().endswith(".gz")


def partition_prefix(prefix: str, day: str) -> str:
    """`raw/orders` + `2026-01-01` -> `raw/orders/dt=2026-01-01/`."""
    return f"{prefix.strip('/')}/dt={day}/"


def list_partition(s3: Any, bucket: str, prefix: str) -> tuple[list[RawObject], list[str]]:
    """All CSV objects under prefix (paginated), sorted by key, and the other keys found."""
    csvs: list[RawObject] = []
    others: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/"):
                continue
            if key.lower().endswith(RAW_SUFFIXES):
                csvs.append(RawObject(key, obj["ETag"].strip('"'), int(obj["Size"])))
            else:
                others.append(key)
    return sorted(csvs, key=lambda o: o.key), sorted(others)


def zone_key(raw_key: str, raw_prefix: str, zone_prefix: str, suffix: str) -> str:
    """Map a raw key to its key in another zone: same partition path, new suffix."""
    relative = (
        raw_key[len(raw_prefix.strip("/")) + 1 :]
        if raw_key.startswith(raw_prefix.strip("/") + "/")
        else posixpath.basename(raw_key)
    )
    for ext in (".csv.gz", ".csv"):
        if relative.lower().endswith(ext):
            relative = relative[: -len(ext)]
            break
    return f"{zone_prefix.strip('/')}/{relative}{suffix}"


def open_object(s3: Any, bucket: str, key: str, etag: str | None = None) -> BinaryIO:
    """A streaming body for the object; with `etag`, fails if the object changed since listing."""
    kwargs: dict[str, str] = {"Bucket": bucket, "Key": key}
    if etag:
        kwargs["IfMatch"] = f'"{etag}"'
    return s3.get_object(**kwargs)["Body"]


def upload(s3: Any, path: str, bucket: str, key: str, content_type: str, extra: dict[str, Any] | None = None) -> None:
    """Upload a local file (multipart when large); the object appears atomically."""
    s3.upload_file(path, bucket, key, ExtraArgs={"ContentType": content_type, **(extra or {})})


def delete(s3: Any, bucket: str, key: str) -> None:
    s3.delete_object(Bucket=bucket, Key=key)


def copy(s3: Any, bucket: str, key: str, to_bucket: str, to_key: str, extra: dict[str, Any] | None = None) -> None:
    """Server-side copy (multipart when large), replacing metadata with `extra`'s."""
    s3.copy(
        {"Bucket": bucket, "Key": key}, to_bucket, to_key, ExtraArgs={"MetadataDirective": "REPLACE", **(extra or {})}
    )
