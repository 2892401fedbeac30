"""S3 event notifications -> keys -> partitions; the event is only a wake-up call."""

from __future__ import annotations

import json

import pytest

from include.etl.running.events import keys_from_asset_events, keys_from_message_body, partitions_of


def _s3_event(*keys: str, event: str = "ObjectCreated:Put") -> str:
    return json.dumps({"Records": [{"eventName": event, "s3": {"object": {"key": k}}} for k in keys]})


@pytest.mark.parametrize(
    ("body", "keys"),
    [
        pytest.param(_s3_event("raw/orders/dt=2026-01-01/a.csv"), ["raw/orders/dt=2026-01-01/a.csv"], id="plain"),
        pytest.param(
            _s3_event("raw%2Forders%2Fdt%3D2026-01-01%2Fa+b.csv"),
            ["raw/orders/dt=2026-01-01/a b.csv"],
            id="url-encoded",
        ),
        pytest.param(
            json.dumps({"Message": _s3_event("raw/orders/dt=2026-01-02/x.csv")}),
            ["raw/orders/dt=2026-01-02/x.csv"],
            id="through-sns",
        ),
        pytest.param(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}), [], id="test-event"),
        pytest.param(
            _s3_event("raw/orders/dt=2026-01-01/a.csv", event="ObjectRemoved:Delete"),
            ["raw/orders/dt=2026-01-01/a.csv"],
            id="removed-names-its-partition-too",
        ),
        pytest.param("not json", [], id="junk"),
        pytest.param(_s3_event("a.csv", "b.csv"), ["a.csv", "b.csv"], id="several"),
    ],
)
def test_keys_from_message_body(body: str, keys: list[str]) -> None:
    assert keys_from_message_body(body) == keys


def test_keys_from_asset_events_reads_every_message_of_every_event() -> None:
    class Event:
        def __init__(self, *bodies: str) -> None:
            self.extra = {"from_trigger": True, "payload": {"message_batch": [{"Body": b} for b in bodies]}}

    events = [
        Event(_s3_event("raw/orders/dt=2026-01-01/a.csv"), _s3_event("raw/orders/dt=2026-01-03/c.csv")),
        Event(),
        {"extra": {"payload": {"message_batch": [{"Body": _s3_event("k.csv")}]}}},
    ]
    assert keys_from_asset_events(events) == [
        "raw/orders/dt=2026-01-01/a.csv",
        "raw/orders/dt=2026-01-03/c.csv",
        "k.csv",
    ]


def test_partitions_of_keeps_only_dated_partitions_under_the_raw_prefix() -> None:
    keys = [
        "raw/orders/dt=2026-01-01/a.csv",
        "raw/orders/dt=2026-01-01/b.csv",
        "raw/orders/dt=2025-12-31/c.csv.gz",
        "raw/orders/loose.csv",
        "raw/customers/dt=2026-01-05/x.csv",
        "raw/orders/dt=bad/x.csv",
    ]
    assert partitions_of(keys, "raw/orders/") == {"2026-01-01", "2025-12-31"}
