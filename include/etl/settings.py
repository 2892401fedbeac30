"""Deployment settings of one dataset: where its files live, whom to tell, run-time knobs.

One home for configuration: every field of `DatasetSettings` is the Airflow Variable
`<dataset>_<field>` (e.g. `orders_raw_bucket`), which can also be set as the environment
variable `AIRFLOW_VAR_<DATASET>_<FIELD>` or come from a secrets backend. Values are parsed by
the field's type. Fields in `PARSE_TIME` shape the DAG itself (its schedule and retries), so
they are read from the environment only, when the DAG file is parsed; the others are read
inside tasks. What the data is and where it is loaded lives in the contract, not here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Connection ids are fixed names; what they point at comes from Airflow connections.
AWS_CONN_ID = "aws_default"
POSTGRES_CONN_ID = "warehouse"
SMTP_CONN_ID = "smtp_default"

PARSE_TIME = frozenset({"events_queue_url", "events_poll_seconds", "task_retries", "retry_delay_seconds"})


class SettingsError(ValueError):
    """A Variable (or its environment variable) holds a value its setting cannot take."""


class DatasetSettings(BaseModel):
    """Where a dataset's raw, processed and rejected objects live, and its run-time knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    raw_bucket: str = "raw"
    raw_prefix: str = ""  # default raw/<dataset>
    processed_bucket: str = "processed"
    processed_prefix: str = ""  # default processed/<dataset>
    rejected_prefix: str = ""  # default rejected/<dataset>
    alert_emails: tuple[str, ...] = ("data-team@example.com",)
    # Text per batch the transform holds in memory at once.
    batch_bytes: int = Field(default=16 << 20, ge=1 << 16)
    # Scheduled and event runs also list this many days before their own (late files).
    lookback_days: int = Field(default=3, ge=0)
    # At most this many mapped transform tasks per run; more files are grouped (Airflow's cap is 1024).
    max_mapped_tasks: int = Field(default=256, ge=1, le=1024)
    # Connections the load COPYs processed files into staging over, at once.
    copy_workers: int = Field(default=2, ge=1, le=16)
    # A file that fails this many times (not counting retries of transient faults) is parked.
    max_attempts: int = Field(default=3, ge=1)
    # What one file may cost: a field (or line) longer than this, a .gz that decompresses past the size or at more
    # than the ratio (once past 64 MiB), rejects the file whole with the numbers, instead of exhausting a worker.
    max_field_bytes: int = Field(default=16 << 20, ge=1 << 10)
    max_decompressed_bytes: int = Field(default=32 << 30, ge=1 << 20)
    max_compression_ratio: int = Field(default=200, ge=2)
    # Server-side encryption of written objects: "" (the bucket's default), "AES256" or "aws:kms".
    s3_sse: Literal["", "AES256", "aws:kms"] = ""
    s3_sse_kms_key_id: str = ""
    # --- read when the DAG is parsed (environment only) ---
    # SQS queue of the raw prefix's S3 notifications: set, files also start runs as they land.
    events_queue_url: str = ""
    events_poll_seconds: int = Field(default=5, ge=1)
    # Retries of a task after a transient fault (network, throttling, a restarted database).
    task_retries: int = Field(default=3, ge=0)
    retry_delay_seconds: float = Field(default=30, ge=0)

    @field_validator("alert_emails", mode="before")
    @classmethod
    def _emails(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(e.strip() for e in value.replace(";", ",").split(",") if e.strip())
        return value

    @field_validator("raw_prefix", "processed_prefix", "rejected_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value.strip().strip("/")

    @model_validator(mode="after")
    def _default_prefixes(self) -> DatasetSettings:
        defaults = {"raw_prefix": "raw", "processed_prefix": "processed", "rejected_prefix": "rejected"}
        for name, zone in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, f"{zone}/{self.dataset}")
        return self

    @property
    def put_args(self) -> dict[str, str]:
        """boto3 ExtraArgs for every object the pipeline writes."""
        args: dict[str, str] = {"ServerSideEncryption": self.s3_sse} if self.s3_sse else {}
        if self.s3_sse == "aws:kms" and self.s3_sse_kms_key_id:
            args["SSEKMSKeyId"] = self.s3_sse_kms_key_id
        return args

    @classmethod
    def variable_name(cls, dataset: str, field: str) -> str:
        return f"{dataset}_{field}"

    @classmethod
    def from_lookup(
        cls, dataset: str, get: Callable[[str], str | None], fields: frozenset[str] | None = None
    ) -> DatasetSettings:
        """Each field from `get("<dataset>_<field>")` (restricted to `fields`), defaults for the rest."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            if name == "dataset" or (fields is not None and name not in fields):
                continue
            raw = get(cls.variable_name(dataset, name))
            if raw is not None and str(raw).strip() != "":
                values[name] = str(raw).strip()
        try:
            return cls(dataset=dataset, **values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls.variable_name(dataset, str(e['loc'][0]))}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
            raise SettingsError(f"invalid settings for dataset {dataset!r}: {problems}") from None

    @classmethod
    def from_environment(cls, dataset: str) -> DatasetSettings:
        """The parse-time fields, from `AIRFLOW_VAR_<DATASET>_<FIELD>` (no Airflow call, no database)."""
        return cls.from_lookup(dataset, lambda name: os.environ.get(f"AIRFLOW_VAR_{name.upper()}"), PARSE_TIME)

    @classmethod
    def from_airflow(cls, dataset: str) -> DatasetSettings:
        """Every field from Airflow Variables (call inside a task, not at parse time)."""
        from airflow.sdk import Variable

        parse_time = cls.from_environment(dataset)
        settings = cls.from_lookup(dataset, lambda name: Variable.get(name, default=None), cls._task_fields())
        return settings.model_copy(update={f: getattr(parse_time, f) for f in PARSE_TIME})

    @classmethod
    def _task_fields(cls) -> frozenset[str]:
        return frozenset(cls.model_fields) - PARSE_TIME - {"dataset"}
