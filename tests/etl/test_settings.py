"""DatasetSettings: one setting per Airflow Variable `<dataset>_<field>`, parsed by the field's type."""

from __future__ import annotations

import pytest

from include.etl.settings import PARSE_TIME, DatasetSettings, SettingsError

DEFAULTS = {
    "raw_bucket": "raw",
    "raw_prefix": "raw/orders",
    "processed_bucket": "processed",
    "processed_prefix": "processed/orders",
    "rejected_prefix": "rejected/orders",
    "alert_emails": ("data-team@example.com",),
    "batch_bytes": 16 << 20,
    "lookback_days": 3,
    "max_mapped_tasks": 256,
    "copy_workers": 2,
    "max_attempts": 3,
    "max_field_bytes": 16 << 20,
    "max_decompressed_bytes": 32 << 30,
    "max_compression_ratio": 200,
    "s3_sse": "",
    "s3_sse_kms_key_id": "",
    "events_queue_url": "",
    "events_poll_seconds": 5,
    "task_retries": 3,
    "retry_delay_seconds": 30,
}


def _from(variables: dict[str, str], dataset: str = "orders") -> DatasetSettings:
    asked: list[str] = []

    def get(name: str) -> str | None:
        asked.append(name)
        return variables.get(name)

    settings = DatasetSettings.from_lookup(dataset, get)
    assert sorted(asked) == sorted(f"{dataset}_{k}" for k in DEFAULTS)
    return settings


@pytest.mark.parametrize(
    "variables",
    [{}, {"orders_raw_bucket": ""}, {"orders_raw_prefix": "", "orders_alert_emails": ""}, {"unrelated": "x"}],
)
def test_defaults_when_variables_missing_or_empty(variables: dict[str, str]) -> None:
    settings = _from(variables)
    assert settings == DatasetSettings(dataset="orders")
    assert {k: getattr(settings, k) for k in DEFAULTS} == DEFAULTS


def test_prefixes_default_to_the_dataset() -> None:
    settings = _from({}, dataset="customers")
    assert (settings.raw_prefix, settings.processed_prefix, settings.rejected_prefix) == (
        "raw/customers",
        "processed/customers",
        "rejected/customers",
    )


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"orders_raw_bucket": "landing"}, {"raw_bucket": "landing"}),
        ({"orders_raw_bucket": "  landing \n"}, {"raw_bucket": "landing"}),
        (
            {"orders_processed_bucket": "lake", "orders_lookback_days": "7"},
            {"processed_bucket": "lake", "lookback_days": 7},
        ),
        ({"orders_batch_bytes": "65536"}, {"batch_bytes": 65536}),
        ({"orders_max_attempts": "5"}, {"max_attempts": 5}),
        ({"orders_raw_prefix": "/landing/orders/"}, {"raw_prefix": "landing/orders"}),
        ({"orders_processed_prefix": " curated/orders// "}, {"processed_prefix": "curated/orders"}),
        ({"orders_rejected_prefix": "/quarantine"}, {"rejected_prefix": "quarantine"}),
        ({"orders_s3_sse": "aws:kms"}, {"s3_sse": "aws:kms"}),
        ({"orders_retry_delay_seconds": "2.5"}, {"retry_delay_seconds": 2.5}),
    ],
)
def test_overrides(variables: dict[str, str], expected: dict[str, object]) -> None:
    settings = _from(variables)
    assert {k: getattr(settings, k) for k in DEFAULTS} == {**DEFAULTS, **expected}


@pytest.mark.parametrize(
    ("raw", "emails"),
    [
        ("ops@example.com", ("ops@example.com",)),
        ("a@example.com,b@example.com", ("a@example.com", "b@example.com")),
        (" a@example.com ; b@example.com ", ("a@example.com", "b@example.com")),
        ("a@example.com, ,b@example.com,", ("a@example.com", "b@example.com")),
        ("a@example.com;b@example.com,c@example.com", ("a@example.com", "b@example.com", "c@example.com")),
    ],
)
def test_alert_email_lists(raw: str, emails: tuple[str, ...]) -> None:
    assert _from({"orders_alert_emails": raw}).alert_emails == emails


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"orders_batch_bytes": "16MB"}, "orders_batch_bytes"),
        ({"orders_max_mapped_tasks": "5000"}, "orders_max_mapped_tasks"),
        ({"orders_s3_sse": "rot13"}, "orders_s3_sse"),
        ({"orders_lookback_days": "-1"}, "orders_lookback_days"),
    ],
)
def test_a_bad_value_names_its_variable(variables: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        DatasetSettings.from_lookup("orders", variables.get)


def test_parse_time_settings_come_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_ORDERS_EVENTS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/orders")
    monkeypatch.setenv("AIRFLOW_VAR_ORDERS_TASK_RETRIES", "1")
    monkeypatch.setenv("AIRFLOW_VAR_ORDERS_RAW_BUCKET", "landing")  # not a parse-time setting
    monkeypatch.delenv("AIRFLOW_VAR_CUSTOMERS_EVENTS_QUEUE_URL", raising=False)
    settings = DatasetSettings.from_environment("orders")
    assert settings.events_queue_url == "https://sqs.eu-west-1.amazonaws.com/1/orders"
    assert settings.task_retries == 1
    assert settings.raw_bucket == "raw"
    assert DatasetSettings.from_environment("customers").events_queue_url == ""
    assert {"events_queue_url", "task_retries"} <= PARSE_TIME


def test_encryption_arguments() -> None:
    assert DatasetSettings(dataset="orders").put_args == {}
    assert DatasetSettings(dataset="orders", s3_sse="AES256").put_args == {"ServerSideEncryption": "AES256"}
    kms = DatasetSettings(dataset="orders", s3_sse="aws:kms", s3_sse_kms_key_id="alias/etl")
    assert kms.put_args == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/etl"}
