"""PipelineSettings from Airflow Variables (any name -> value lookup)."""

from __future__ import annotations

import json

import pytest

from include.etl.config import PipelineSettings

DEFAULTS = {
    "raw_bucket": "raw",
    "raw_prefix": "raw/orders",
    "processed_bucket": "processed",
    "processed_prefix": "processed/orders",
    "rejected_prefix": "rejected/orders",
    "alert_emails": ("data-team@example.com",),
    "batch_bytes": 16 << 20,
    "ledger_table": "etl.file_ledger",
    "lookback_days": 3,
    "max_mapped_tasks": 256,
    "copy_workers": 2,
    "s3_sse": "",
    "s3_sse_kms_key_id": "",
}


def _from(variables: dict[str, str]) -> PipelineSettings:
    asked: list[str] = []

    def get(name: str) -> str | None:
        asked.append(name)
        return variables.get(name)

    settings = PipelineSettings.from_lookup(get)
    assert sorted(asked) == sorted(f"orders_{k}" for k in DEFAULTS)
    return settings


@pytest.mark.parametrize(
    "variables",
    [{}, {"orders_raw_bucket": ""}, {"orders_raw_prefix": "", "orders_alert_emails": ""}, {"unrelated": "x"}],
)
def test_defaults_when_variables_missing_or_empty(variables: dict[str, str]) -> None:
    settings = _from(variables)
    assert settings == PipelineSettings()
    assert {k: getattr(settings, k) for k in DEFAULTS} == DEFAULTS


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
        ({"orders_ledger_table": "audit.ledger"}, {"ledger_table": "audit.ledger"}),
        ({"orders_raw_prefix": "/landing/orders/"}, {"raw_prefix": "landing/orders"}),
        ({"orders_processed_prefix": " curated/orders// "}, {"processed_prefix": "curated/orders"}),
        ({"orders_rejected_prefix": "/quarantine"}, {"rejected_prefix": "quarantine"}),
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


def test_invalid_batch_bytes_raises() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        PipelineSettings.from_lookup({"orders_batch_bytes": "16MB"}.get)


def test_to_json_round_trips_every_field() -> None:
    settings = _from({"orders_alert_emails": "a@example.com;b@example.com", "orders_batch_bytes": "1024"})
    data = json.loads(settings.to_json())
    assert data == {**DEFAULTS, "alert_emails": ["a@example.com", "b@example.com"], "batch_bytes": 1024}
