"""Event-driven runs: S3 notifications on SQS, seen by Airflow as asset events; and the table asset.

Each dataset has its own queue (`<dataset>_events_queue_url`): two AssetWatchers cannot share
one, each message goes to one consumer. An event is only a wake-up call. It names partitions
worth listing (ObjectCreated and ObjectRemoved alike); what to load is still decided by the
ledger, so duplicated, late, lost or out-of-order events never duplicate or lose rows (a lost
event's file is picked up by the next run that lists its partition).

The load's table is an asset too: `check_table` updates it when a load changed the table and
the checks passed, which is what the analytics DAG is scheduled on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

from include.etl.contract.model import Contract
from include.etl.reading.layout import partition_day
from include.etl.settings import AWS_CONN_ID, DatasetSettings

log = logging.getLogger(__name__)

_EVENTS = ("ObjectCreated", "ObjectRemoved")


def raw_files_asset(dataset: str, settings: DatasetSettings) -> Any | None:
    """The asset a dataset's S3 notifications update, watched on its SQS queue; None without a queue."""
    if not settings.events_queue_url:
        return None
    # The SQS trigger itself: what MessageQueueTrigger(scheme="sqs") resolves to and serializes as, without
    # importing every provider's queue triggers at each DAG parse (a third of a second).
    from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
    from airflow.sdk import Asset, AssetWatcher

    trigger = SqsSensorTrigger(
        sqs_queue=settings.events_queue_url,
        aws_conn_id=AWS_CONN_ID,
        wait_time_seconds=10,  # long polling: one request waits up to 10 s for a message
        max_messages=10,
        waiter_delay=settings.events_poll_seconds,
    )
    name = f"raw_{dataset}_files"
    return Asset(name, watchers=[AssetWatcher(name=f"{name}_sqs", trigger=trigger)])


def table_asset(contract: Contract) -> Any:
    """The loaded table as an Airflow asset (updated by a load that changed it and passed the checks)."""
    from airflow.sdk import Asset

    return Asset(f"warehouse.{contract.table}", group="warehouse")


def keys_from_message_body(body: str) -> list[str]:
    """Object keys of an S3 event notification (SNS-wrapped or not); [] for test events or junk."""
    try:
        doc = json.loads(body)
    except (TypeError, ValueError):
        log.warning("ignoring a queue message that is not JSON: %.200s", body)
        return []
    if isinstance(doc, dict) and isinstance(doc.get("Message"), str):  # delivered through SNS
        return keys_from_message_body(doc["Message"])
    records = doc.get("Records", []) if isinstance(doc, dict) else []
    keys = []
    for record in records:
        key = ((record.get("s3") or {}).get("object") or {}).get("key")
        if key and str(record.get("eventName", "ObjectCreated")).startswith(_EVENTS):
            keys.append(unquote_plus(key))
    return keys


def keys_from_asset_events(events: Iterable[Any]) -> list[str]:
    """Object keys from the SQS messages carried by triggering asset events."""
    keys: list[str] = []
    for event in events:
        extra = getattr(event, "extra", None) or (event.get("extra") if isinstance(event, dict) else None) or {}
        for message in (extra.get("payload") or {}).get("message_batch", []):
            keys.extend(keys_from_message_body(message.get("Body", "")))
    return keys


def partitions_of(keys: Iterable[str], raw_prefix: str) -> set[str]:
    """The `dt=` partitions (days that exist) of keys under the raw prefix."""
    return {day for k in keys if (day := partition_day(k, raw_prefix)) is not None}
