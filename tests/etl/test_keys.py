"""Every key S3 accepts (up to 1,024 bytes of UTF-8, any character but a line break) loads, through the
pipeline's tasks on moto's S3 server and PostgreSQL, with its key intact in the ledger, the table's lineage and
every command the product prints for a person to paste.

A property over generated names (`ETL_SWEEP=1` runs many more examples), plus the names from the reports.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.etl.contract.model import load_contract
from include.etl.reading.storage import MAX_KEY_BYTES
from include.etl.running.batching import LABEL_CHARS, group_label
from include.etl.running.notify import retry_command, skip_command
from tests.integration.conftest import HEADER
from tests.task_run import run_tasks

pytestmark = pytest.mark.integration

DAY = "2026-02-12"
SWEEP = bool(os.environ.get("ETL_SWEEP"))

# Any character S3 takes but a line break (which no key a person pastes or a log line shows keeps) and the
# surrogates UTF-8 cannot encode; a `/` makes a folder inside the partition, which loads too.
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r")


def _prefix(db: Any) -> str:
    return f"{db.prefix}/raw/orders/dt={DAY}/"


def _long_name(prefix: str, filler: str = "é") -> str:
    """A file name that makes the key exactly 1,024 bytes."""
    room = MAX_KEY_BYTES - len(prefix.encode()) - len(".csv")
    return filler * (room // len(filler.encode())) + "x" * (room % len(filler.encode())) + ".csv"


def _load_and_check(stack: Any, db: Any, names: list[str]) -> None:
    s3 = stack.s3()
    keys = {}
    for n, name in enumerate(dict.fromkeys(names)):
        key = _prefix(db) + name
        assert len(key.encode()) <= MAX_KEY_BYTES
        s3.put_object(Bucket="raw", Key=key, Body=(HEADER + f"K-{n},{DAY} 10:00,c,p,x,1,1.00,North\n").encode())
        keys[key] = f"K-{n}"
    run = run_tasks(load_contract("orders"), DAY)
    assert run.state == "success", run.errors
    ledger = dict(db.execute("SELECT source_key, status FROM etl.orders_file_ledger").fetchall())
    table = dict(db.execute("SELECT source_key, order_id FROM analytics.orders").fetchall())
    processed = dict(db.execute("SELECT source_key, processed_key FROM etl.orders_file_ledger").fetchall())
    for key, order_id in keys.items():
        assert ledger.get(key) == "loaded", (key, ledger.get(key))
        assert table.get(key) == order_id
        assert len(processed[key].encode()) <= MAX_KEY_BYTES
        assert s3.head_object(Bucket="processed", Key=processed[key])["ContentLength"] > 0
        label = group_label([{"key": key, "etag": "", "size": 0, "last_modified": ""}])
        assert len(label) <= LABEL_CHARS
        for command in (retry_command("orders_pipeline", [key]), skip_command("orders_pipeline", [key])):
            argv = shlex.split(command)
            assert argv[:4] == ["airflow", "dags", "trigger", "orders_pipeline"] and argv[4] == "-c"
            conf = json.loads(argv[5])
            assert conf.get("retry_files", conf.get("skip_files")) == [key]
    db.execute("TRUNCATE etl.orders_file_ledger, analytics.orders, etl.orders_duplicates")


def test_names_from_the_reports_load_with_their_keys_intact(stack, isolated) -> None:
    prefix = _prefix(isolated)
    _load_and_check(
        stack,
        isolated,
        [
            _long_name(prefix, "x"),  # 1,024 bytes: its outputs would be longer than S3 allows
            _long_name(prefix),  # 1,024 bytes of two-byte characters
            "it's.csv",
            'say "cheese".csv',
            "$(touch pwned).csv",
            "`id`; rm -rf ~ && echo.csv",
            "tab\there\x01\x1f\x7f.csv",
            "Ünïcödé 数据 🚀.csv",
            "sub/folder/a.csv",
            " leading and trailing .csv",
        ],
    )


@settings(
    max_examples=200 if SWEEP else 4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
@given(names=st.lists(st.text(NAME_CHARS, min_size=1, max_size=80), min_size=1, max_size=6))
def test_any_key_s3_accepts_loads_with_its_key_intact(stack, isolated, names: list[str]) -> None:
    _load_and_check(
        stack, isolated, [n.strip("/").replace("//", "/") + ".csv" for n in names if n.strip("/")] or ["a.csv"]
    )
