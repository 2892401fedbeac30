"""S3 access: list a partition's raw object versions, read exactly the version listed, write zone objects.

Takes a boto3 S3 client (from `S3Hook(...).get_conn()` in tasks, pointed at moto's server in
tests), so the endpoint, credentials and retries come from the Airflow connection.

A raw object version is its key, ETag and LastModified (and VersionId where the bucket is
versioned). Reading it sends `If-Match: <etag>`: if the object was overwritten or deleted since
it was listed, the read fails with ObjectChangedError instead of mixing two versions. Every
object the transform writes carries the version it was made from in its metadata, so the
load can tell a processed file of an older version from the current one.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypedDict

from botocore.exceptions import ClientError

# What the pipeline reads as raw CSV objects (any case: a.CSV, a.csv.GZ).
RAW_SUFFIXES = (".csv", ".csv.gz")


# Object metadata naming the raw version an output was made from.
SOURCE_ETAG = "source-etag"
SOURCE_MODIFIED = "source-last-modified"
_CHANGED = {"PreconditionFailed", "412", "NoSuchKey", "404", "NotFound"}


class ObjectChangedError(Exception):
    """The object is no longer the version that was listed (overwritten or deleted)."""


class RawFile(TypedDict):
    """A raw object version as it travels in XCom."""

    key: str
    etag: str
    size: int
    last_modified: str  # ISO 8601, UTC


@dataclass(frozen=True)
class RawObject:
    """A raw object version: its key, ETag (content), LastModified and size."""

    key: str
    etag: str
    size: int
    last_modified: datetime

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def gzipped(self) -> bool:
        return self.key.lower().endswith(".gz")

    def to_dict(self) -> RawFile:
        return {"key": self.key, "etag": self.etag, "size": self.size, "last_modified": self.last_modified.isoformat()}

    @classmethod
    def from_dict(cls, d: RawFile) -> RawObject:
        return cls(d["key"], d["etag"], int(d["size"]), datetime.fromisoformat(d["last_modified"]))

    def same_version(self, other: RawObject) -> bool:
        return (self.etag, self.last_modified) == (other.etag, other.last_modified)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def partition_prefix(prefix: str, day: str) -> str:
    """`raw/orders` + `2026-01-01` -> `raw/orders/dt=2026-01-01/`."""
    return f"{prefix.strip('/')}/dt={day}/"


def object_version(listed: dict[str, Any]) -> RawObject:
    """The version an entry of a ListObjectsV2 response names."""
    return RawObject(listed["Key"], listed["ETag"].strip('"'), int(listed["Size"]), _utc(listed["LastModified"]))


def list_partition(s3: Any, bucket: str, prefix: str) -> tuple[list[RawObject], list[RawObject]]:
    """All CSV objects under prefix (paginated), sorted by key, and the other objects found (folder markers too)."""
    csvs: list[RawObject] = []
    others: list[RawObject] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            is_csv = key.lower().endswith(RAW_SUFFIXES) and not key.endswith("/")
            (csvs if is_csv else others).append(object_version(obj))
    return sorted(csvs, key=lambda o: o.key), sorted(others, key=lambda o: o.key)


def head(s3: Any, bucket: str, key: str) -> RawObject | None:
    """The current version of a key, or None if there is no such object."""
    try:
        meta = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in _CHANGED:
            return None
        raise
    return RawObject(key, meta["ETag"].strip('"'), int(meta["ContentLength"]), _utc(meta["LastModified"]))


def open_version(s3: Any, bucket: str, obj: RawObject) -> tuple[BinaryIO, str | None]:
    """A streaming body of exactly this version, and its VersionId where the bucket is versioned.

    Raises ObjectChangedError if the key holds another version now, or none.
    """
    try:
        response = s3.get_object(Bucket=bucket, Key=obj.key, IfMatch=f'"{obj.etag}"')
    except ClientError as exc:
        if _error_code(exc) in _CHANGED:
            raise ObjectChangedError(f"{obj.key} changed or was deleted after it was listed") from exc
        raise
    vid = response.get("VersionId")
    return response["Body"], None if vid in (None, "null") else str(vid)


def source_metadata(obj: RawObject) -> dict[str, str]:
    """Metadata naming the raw version an output object was made from."""
    return {SOURCE_ETAG: obj.etag, SOURCE_MODIFIED: obj.last_modified.isoformat()}


# S3 keys are at most 1,024 bytes of UTF-8.
MAX_KEY_BYTES = 1024


def zone_key(raw_key: str, raw_prefix: str, zone_prefix: str, suffix: str = "") -> str:
    """A raw key's key in another zone: the same partition path and file name, plus a suffix.

    The whole raw name is kept (`a.csv` -> `a.csv.parquet`, `a.CSV` -> `a.CSV.parquet`,
    `a.csv.gz` -> `a.csv.gz.parquet`), so no two raw keys share an output. A key that would be longer
    than S3 allows (a raw key near 1,024 bytes, a longer zone prefix) keeps the start of its path and
    ends in `~` and a hash of the whole raw key: still unique, and still S3's.
    """
    prefix = raw_prefix.strip("/") + "/"
    relative = raw_key[len(prefix) :] if raw_key.startswith(prefix) else posixpath.basename(raw_key)
    key = f"{zone_prefix.strip('/')}/{relative}{suffix}"
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    tail = "~" + hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()[:20] + suffix
    room = MAX_KEY_BYTES - len(tail.encode())
    head = key[: len(key) - len(suffix)].encode()[:room].decode("utf-8", "ignore")  # whole characters only
    return head + tail


def upload(s3: Any, path: str, bucket: str, key: str, content_type: str, extra: dict[str, Any] | None = None) -> None:
    """Upload a local file (multipart when large); the object appears atomically."""
    s3.upload_file(path, bucket, key, ExtraArgs={"ContentType": content_type, **(extra or {})})


def download_version(s3: Any, bucket: str, key: str, made_from: RawObject, path: str) -> None:
    """Download an output object into `path`, checking it was made from `made_from`.

    Raises ObjectChangedError if it is missing or was made from another raw version (another
    run transformed a newer version since).
    """
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in _CHANGED:
            raise ObjectChangedError(f"{key} is missing") from exc
        raise
    metadata = response.get("Metadata") or {}
    if (
        metadata.get(SOURCE_ETAG) != made_from.etag
        or metadata.get(SOURCE_MODIFIED) != made_from.last_modified.isoformat()
    ):
        response["Body"].close()
        raise ObjectChangedError(f"{key} was made from another version of {made_from.key}")
    with open(path, "wb") as out:
        body = response["Body"]
        while chunk := body.read(1 << 20):
            out.write(chunk)


def read_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def delete(s3: Any, bucket: str, key: str) -> None:
    s3.delete_object(Bucket=bucket, Key=key)


# What an XML 1.0 document may hold: DeleteObjects sends its keys in one, so a key with another character
# (a control character S3 accepts in keys) is deleted with its own DeleteObject request.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def delete_many(s3: Any, bucket: str, keys: list[str]) -> None:
    """Delete up to 1,000 keys in one request (S3 DeleteObjects); a missing key is not an error.

    Raises botocore's ClientError with S3's code (as `delete` would) if S3 could not delete one of them.
    """
    single = [k for k in keys if _NOT_XML.search(k)]
    for key in single:
        delete(s3, bucket, key)
    keys = [k for k in keys if k not in set(single)]
    if not keys:
        return
    response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    errors = response.get("Errors") or []
    if errors:
        first = errors[0]
        message = f"could not delete {len(errors)} of {len(keys)} key(s); {first.get('Key')}: {first.get('Message')}"
        raise ClientError({"Error": {"Code": first.get("Code", "DeleteError"), "Message": message}}, "DeleteObjects")


def copy(s3: Any, bucket: str, key: str, to_bucket: str, to_key: str, extra: dict[str, Any] | None = None) -> None:
    """Server-side copy (multipart when large), replacing metadata with `extra`'s."""
    s3.copy(
        {"Bucket": bucket, "Key": key}, to_bucket, to_key, ExtraArgs={"MetadataDirective": "REPLACE", **(extra or {})}
    )


def sniff_content_type(head_bytes: bytes, name: str) -> str:
    """The content type of an object from its first bytes (what a rejected copy is stored as)."""
    if head_bytes.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if head_bytes.startswith(b"PK\x03\x04"):
        return "application/zip"
    if head_bytes.startswith(b"%PDF"):
        return "application/pdf"
    if head_bytes.startswith(b"\x89PNG"):
        return "image/png"
    if b"\x00" in head_bytes[:4096] and not head_bytes.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "application/octet-stream"
    return "text/csv" if name.lower().endswith(".csv") else "application/octet-stream"


def first_bytes(s3: Any, bucket: str, key: str, n: int = 4096) -> bytes:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{n - 1}")["Body"].read())
    except ClientError:
        return b""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )
