"""moto's S3 server on loopback for the local stack; buckets are created on start.

moto keeps objects in memory: restarting it empties the buckets (`make demo` seeds again).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import boto3

from local_stack import processes
from local_stack.config import BUCKETS, REGION, StackPaths


def client(port: int) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto accepts any key; not a secret
    )


def start(paths: StackPaths, port: int) -> None:
    moto = Path(sys.executable).parent / "moto_server"
    pid = processes.start("moto", [str(moto), "-H", "127.0.0.1", "-p", str(port)], paths.pids, paths.logs)
    processes.wait_for_port(port, 30, "moto S3 server", paths.logs / "moto.log", pid)
    s3 = client(port)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
