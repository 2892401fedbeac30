"""Names shared by the stack (infra/stack.py) and the MWAA bundle (mwaa/bundle.py).

Plain Python without the CDK, so the bundle and the tests can use it from the project's own venv. The datasets are
the data contracts: each `include/contracts/<dataset>.yml` becomes a DAG `<dataset>_pipeline` with its own SQS queue
of S3 notifications for `raw/<dataset>/` (two AssetWatchers cannot share a queue).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "include" / "contracts"
_DATASET = re.compile(r"[a-z][a-z0-9_]*")


def datasets(contracts: Path = CONTRACTS) -> list[str]:
    """Dataset names, one per contract file, sorted."""
    names = sorted({p.stem for p in contracts.glob("*") if p.suffix in (".yml", ".yaml")})
    bad = [n for n in names if not _DATASET.fullmatch(n)]
    if bad:
        raise ValueError(f"contract names must be lower_snake_case (they name queues and variables): {bad}")
    if not names:
        raise ValueError(f"no data contract in {contracts}")
    return names


def camel(dataset: str) -> str:
    """`customer_events` -> `CustomerEvents`, for CloudFormation logical ids and output keys."""
    return "".join(part.capitalize() for part in dataset.split("_"))


def queue_url_output(dataset: str) -> str:
    return f"EventsQueueUrl{camel(dataset)}"


def airflow_var(dataset: str, setting: str) -> str:
    """The environment variable of an Airflow Variable `<dataset>_<setting>`."""
    return f"AIRFLOW_VAR_{dataset.upper()}_{setting.upper()}"


# Stack outputs the bundle reads, besides one queue URL per dataset.
RAW_BUCKET_OUTPUT = "RawBucketName"
PROCESSED_BUCKET_OUTPUT = "ProcessedBucketName"
ENVIRONMENT_BUCKET_OUTPUT = "EnvironmentBucketName"
DATA_KEY_OUTPUT = "DataKeyArn"
ALERT_EMAILS_OUTPUT = "AlertEmailsSetting"
