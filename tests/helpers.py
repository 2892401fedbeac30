"""Helpers shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import requests
from moto.server import ThreadedMotoServer

_server: ThreadedMotoServer | None = None


def moto_endpoint() -> str:
    """The URL of a moto server over HTTP for this test session (started on first use)."""
    global _server
    if _server is None:
        _server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        _server.start()
    host, port = _server.get_host_and_port()
    return f"http://{host}:{port}"


def http_client(service: str = "s3") -> Any:
    return boto3.client(
        service,
        endpoint_url=moto_endpoint(),
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # pragma: allowlist secret (moto accepts any key)
    )


@contextmanager
def moto_s3(*buckets: str) -> Iterator[Any]:
    """An S3 client that talks HTTP to moto's server, as the pipeline does with AWS, with empty buckets.

    Over HTTP an object's body is a network stream (botocore's StreamingBody), not the
    in-memory buffer in-process mocks hand back: readers must cope with that. The server's
    state is reset on entry, so contexts must not be nested.
    """
    endpoint = moto_endpoint()
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    client = http_client()
    for bucket in dict.fromkeys(buckets):
        client.create_bucket(Bucket=bucket)
    yield client
