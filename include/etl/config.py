"""Pipeline settings: where the zones live and whom to tell, from Airflow Variables.

Every setting has a default that matches the local stack; in production set the
Airflow Variables (or `AIRFLOW_VAR_<NAME>` environment variables) instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields

# Connection ids are fixed names; what they point at comes from Airflow connections.
AWS_CONN_ID = "aws_default"
POSTGRES_CONN_ID = "warehouse"
SMTP_CONN_ID = "smtp_default"

VARIABLE_PREFIX = "orders_"
# The dataset this DAG loads: include/contracts/<DATASET>.yml (and .expectations.json).
DATASET = "orders"


@dataclass(frozen=True)
class PipelineSettings:
    """Where raw, processed and rejected objects live, and run-time knobs."""

    raw_bucket: str = "raw"
    raw_prefix: str = "raw/orders"
    processed_bucket: str = "processed"
    processed_prefix: str = "processed/orders"
    rejected_prefix: str = "rejected/orders"
    alert_emails: tuple[str, ...] = ("data-team@example.com",)
    batch_bytes: int = 16 << 20
    ledger_table: str = "etl.file_ledger"
    # Scheduled and event runs also list this many days before their own (late files).
    lookback_days: int = 3
    # At most this many mapped transform tasks per run; more files are grouped (max 1024).
    max_mapped_tasks: int = 256
    # Connections the load COPYs files into staging over, at once.
    copy_workers: int = 2
    # Server-side encryption of written objects: "" (bucket default), "AES256" or "aws:kms".
    s3_sse: str = ""
    s3_sse_kms_key_id: str = ""

    @property
    def put_args(self) -> dict[str, str]:
        """boto3 ExtraArgs for every object the pipeline writes."""
        args = {"ServerSideEncryption": self.s3_sse} if self.s3_sse else {}
        if self.s3_sse == "aws:kms" and self.s3_sse_kms_key_id:
            args["SSEKMSKeyId"] = self.s3_sse_kms_key_id
        return args

    @classmethod
    def from_lookup(cls, get: Callable[[str], str | None]) -> PipelineSettings:
        """Read each field from `get(f"orders_{field}")`, keeping defaults for missing ones."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = get(VARIABLE_PREFIX + f.name)
            if raw is None or raw == "":
                continue
            if f.name == "alert_emails":
                values[f.name] = tuple(e.strip() for e in raw.replace(";", ",").split(",") if e.strip())
            elif f.name in ("batch_bytes", "lookback_days", "max_mapped_tasks", "copy_workers"):
                values[f.name] = int(raw)
            else:
                values[f.name] = raw.strip().strip("/") if f.name.endswith("prefix") else raw.strip()
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_airflow(cls) -> PipelineSettings:
        """Settings from Airflow Variables (call inside a task, not at parse time)."""
        from airflow.sdk import Variable

        return cls.from_lookup(lambda name: Variable.get(name, default=None))

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})
