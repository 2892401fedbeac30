"""The local stack's S3 and SQS: moto's server on loopback (local_stack.s3_server), buckets created on start.

moto keeps objects in memory; the server writes them to `.local/s3/` and puts them back when it starts again, so
a restart of the stack keeps every object as the same version (`check_against_ledger` says what is missing
otherwise).
"""

from __future__ import annotations

import sys
from typing import Any

import boto3

from local_stack import processes, s3_server
from local_stack.config import BUCKETS, PROJECT_ROOT, REGION, StackPaths, datasets, events_queue, raw_prefix

MOTO_ACCOUNT = "123456789012"  # moto's default account id


def events_queue_url(port: int, dataset: str) -> str:
    return f"http://127.0.0.1:{port}/{MOTO_ACCOUNT}/{events_queue(dataset)}"


def client(port: int, service: str = "s3") -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106  # pragma: allowlist secret (moto accepts any key)
    )


def cli_env(port: int) -> dict[str, str]:
    """What the AWS CLI (v2.13+) and boto3 read to reach the local S3 and SQS: `aws s3 cp x s3://raw/...` works
    as it is, with no --endpoint-url (moto takes any key)."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",  # pragma: allowlist secret (moto accepts any key)
    }


def start(paths: StackPaths, port: int) -> None:
    argv = [sys.executable, "-m", s3_server.__name__, "--port", str(port), "--state", str(paths.s3_state)]
    pid = processes.start("moto", argv, paths.pids, paths.logs, cwd=PROJECT_ROOT)
    processes.wait_for_port(port, 30, "moto S3 server", paths.logs / "moto.log", pid)
    s3 = client(port)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    _notify_on_new_raw_files(s3, client(port, "sqs"))


def _notify_on_new_raw_files(s3: Any, sqs: Any) -> None:
    """S3 notifications for each dataset's raw prefix go to that dataset's SQS queue (as in AWS)."""
    configs = []
    for dataset in datasets():
        url = sqs.create_queue(QueueName=events_queue(dataset))["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        configs.append(
            {
                "Id": f"{dataset}-raw",
                "QueueArn": arn,
                "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"{raw_prefix(dataset)}/"}]}},
            }
        )
    s3.put_bucket_notification_configuration(
        Bucket=BUCKETS[0], NotificationConfiguration={"QueueConfigurations": configs}
    )
