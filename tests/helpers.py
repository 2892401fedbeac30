"""Helpers shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto import mock_aws


@contextmanager
def moto_s3(*buckets: str) -> Iterator[Any]:
    """An in-process moto S3 client with the given buckets (each created once)."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in dict.fromkeys(buckets):
            client.create_bucket(Bucket=bucket)
        yield client
