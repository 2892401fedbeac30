"""Every object under a dataset's raw prefix is accounted for: loaded, or recorded as ignored with its reason in
the ledger and the run's summary (include/etl/reading/layout.py), through the pipeline's tasks on the real servers."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from include.etl.contract.model import load_contract
from include.etl.reading.layout import not_a_csv, partition_day
from local_stack import analytics
from local_stack.stack import LocalStack
from tests.integration.conftest import HEADER, html_body, mails
from tests.task_run import run_tasks

pytestmark = pytest.mark.integration

DAY = "2026-02-14"


def _row(order_id: str) -> str:
    return HEADER + f"{order_id},{DAY} 10:00,c,p,x,1,1.00,North\n"


def test_partition_day_takes_only_days_that_exist() -> None:
    assert partition_day("raw/orders/dt=2026-02-14/a.csv", "raw/orders") == "2026-02-14"
    assert partition_day("raw/orders/dt=2026-02-14/sub/a.csv", "raw/orders/") == "2026-02-14"
    assert partition_day("raw/orders/dt=2026-02-30/a.csv", "raw/orders") is None
    assert partition_day("raw/orders/2026-02-14/a.csv", "raw/orders") is None
    assert partition_day("raw/orders/dt=2026-02-14.csv", "raw/orders") is None
    assert partition_day("other/dt=2026-02-14/a.csv", "raw/orders") is None
    assert not_a_csv("raw/orders/dt=2026-02-14/a.CSV.GZ") is None
    assert not_a_csv("raw/orders/dt=2026-02-14/report.xlsx") == (
        "not a CSV (a .xlsx file): only .csv and .csv.gz files are read"
    )


def test_objects_outside_the_layout_are_recorded_as_ignored_with_their_reason(stack: LocalStack, isolated: Any) -> None:
    raw = f"{isolated.prefix}/raw/orders"
    bodies = {
        f"{raw}/dt={DAY}/good.csv": _row("LY-1"),
        f"{raw}/dt={DAY}/nested/also_good.csv": _row("LY-2"),
        f"{raw}/2026-11-30/x.csv": _row("LY-3"),
        f"{raw}/dt=2026-11-30.csv": _row("LY-4"),
        f"{raw}/dt=2026-02-30/y.csv": _row("LY-5"),
        f"{raw}/dt={DAY}/export.xlsx": "PK not a csv",
        f"{raw}/dt={DAY}/folder/": "",
        f"{raw}/readme.txt": "hello",
    }
    s3 = stack.s3()
    for key, body in bodies.items():
        s3.put_object(Bucket="raw", Key=key, Body=body.encode())
    before = len(mails(stack.paths.mailbox))
    run = run_tasks(load_contract("orders"), DAY)
    assert run.state == "success", run.errors
    ledger = {
        key.removeprefix(raw + "/"): (status, reason, day)
        for key, status, reason, day in isolated.execute(
            "SELECT source_key, status, reason, partition_day::text FROM etl.orders_file_ledger"
        )
    }
    expected = f"files go in {raw}/dt=YYYY-MM-DD/"
    assert ledger == {
        f"dt={DAY}/good.csv": ("loaded", None, DAY),
        f"dt={DAY}/nested/also_good.csv": ("loaded", None, DAY),
        "2026-11-30/x.csv": ("ignored", f"in folder '2026-11-30', not a partition folder: {expected}", None),
        "dt=2026-11-30.csv": ("ignored", f"not in a partition folder: {expected}", None),
        "readme.txt": ("ignored", f"not in a partition folder: {expected}", None),
        "dt=2026-02-30/y.csv": ("ignored", f"dt=2026-02-30 is not a day that exists: {expected}", None),
        f"dt={DAY}/export.xlsx": ("ignored", "not a CSV (a .xlsx file): only .csv and .csv.gz files are read", None),
        f"dt={DAY}/folder/": ("ignored", "a folder marker (a zero-byte key ending in /), not a file", None),
    }
    assert [r[0] for r in isolated.execute("SELECT order_id FROM analytics.orders ORDER BY 1")] == ["LY-1", "LY-2"]
    (summary,) = [m for m in mails(stack.paths.mailbox)[before:] if "load succeeded" in m["subject"]]
    body = html.unescape(re.sub(r"<[^>]+>", "", html_body(summary)))
    assert "6 object(s) under the raw prefix are not read" in body
    assert f"{raw}/dt=2026-02-30/y.csv: dt=2026-02-30 is not a day that exists" in body

    # Listed again (a scheduled run, which lists other days): recorded once, not reported again.
    again = run_tasks(load_contract("orders"), "2026-02-15")
    assert again.state == "success" and again.summary is not None
    assert again.summary["ignored"] == [] and again.summary["ignored_count"] == 0
    assert isolated.execute("SELECT count(*) FROM etl.orders_file_ledger WHERE status = 'ignored'").fetchone() == (6,)


def test_the_quality_marts_build_with_an_impossible_partition_date(stack: LocalStack, isolated: Any) -> None:
    """A `dt=2026-02-30` folder once left its file pending forever and broke the data-quality model (it cast the
    folder's name to a date)."""
    from include.etl.loading.load import prepare_tables

    s3 = stack.s3()
    raw = f"{isolated.prefix}/raw/orders"
    s3.put_object(Bucket="raw", Key=f"{raw}/dt={DAY}/good.csv", Body=_row("QM-1").encode())
    s3.put_object(Bucket="raw", Key=f"{raw}/dt=2026-02-30/bad.csv", Body=_row("QM-2").encode())
    assert run_tasks(load_contract("orders"), DAY).state == "success"
    prepare_tables(isolated, load_contract("customers"))
    result = analytics.run_dbt(["build", "-s", "stg_file_ledger+"], stack.ports, dbname=isolated.prefix, capture=True)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = isolated.execute("SELECT file_name, status, partition_day FROM marts.dq_files ORDER BY 1").fetchall()
    assert [(name, status) for name, status, _ in rows] == [("bad.csv", "ignored"), ("good.csv", "loaded")]
    assert rows[0][2] is None and str(rows[1][2]) == DAY
