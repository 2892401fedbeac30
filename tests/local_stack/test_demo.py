"""`make demo` as a user runs it: its own stack (own state folder and ports), twice.

The first run loads the sample data of every dataset and prints the reconciliation; the second
run finds every file already there and in the ledger, and leaves the tables as they were.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from local_stack import postgres
from local_stack.config import PROJECT_ROOT
from tests.conftest import _free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextmanager
def _user_stack() -> Iterator[dict[str, str]]:
    """A user's shell (none of the test session's Airflow, AWS or stack settings) with a stack state folder and
    ports of its own; the stack it starts is stopped after."""
    # (Not under pytest's tmp folder: PostgreSQL runs as its own user when we are root, and needs to reach it.)
    state = Path(tempfile.mkdtemp(prefix="orders-etl-demo-"))
    os.chmod(state, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "LOCAL_", "ETL_"))}
    ports = {f"LOCAL_{name}_PORT": _free_port() for name in ("PG", "S3", "SMTP", "AIRFLOW", "DASHBOARD")}
    env.update({k: str(v) for k, v in ports.items()}, LOCAL_STATE_DIR=str(state), PYTHONPATH=str(PROJECT_ROOT))
    try:
        yield env
    finally:
        subprocess.run([sys.executable, "-m", "local_stack", "down"], env=env, cwd=PROJECT_ROOT, check=False)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_env() -> Iterator[dict[str, str]]:
    with _user_stack() as env:
        yield env


def _demo(env: dict[str, str], *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "local_stack", "demo", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _tables(env: dict[str, str]) -> dict[str, tuple[int, str]]:
    dsn = postgres.dsn(int(env["LOCAL_PG_PORT"]))
    with psycopg.connect(dsn) as conn:
        return {
            table: conn.execute(f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY 1)) FROM {table} t").fetchone()
            for table in ("analytics.orders", "analytics.customers")
        }


def _total(out: str, dataset: str) -> list[int]:
    section = out.split(f"\n{dataset}: per file", 1)[1]
    return [int(n) for n in re.search(r"\n  total\s+([\d ]+)\n", section).group(1).split()]


def test_make_demo_loads_every_dataset_then_a_second_run_changes_nothing(demo_env: dict[str, str]) -> None:
    first = _demo(demo_env)
    assert "DAG orders_pipeline for dt=2026-11-24: ok" in first
    assert "DAG customers_pipeline for dt=2026-11-26: ok" in first
    # Per dataset: read, loaded, rejected, duplicates (at load), rows in the table now.
    assert _total(first, "orders") == [1862, 1720, 101, 41, 1720]
    read, loaded, rejected, dups, live = _total(first, "customers")
    assert read == loaded + rejected + dups
    assert "reason: missing required column(s): region" in first
    tables = _tables(demo_env)
    assert tables["analytics.orders"][0] == 1720
    assert tables["analytics.customers"][0] == live
    mailbox = Path(demo_env["LOCAL_STATE_DIR"]) / "mailbox"
    assert len(list(mailbox.glob("*.eml"))) == 6
    # OpenLineage events in the state folder: each load wrote its table.
    events_file = Path(demo_env["LOCAL_STATE_DIR"]) / "lineage" / "openlineage.jsonl"
    assert re.search(rf"Lineage: [1-9]\d* OpenLineage events in {re.escape(str(events_file))}", first)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    written = {
        (e["job"]["name"], d["name"]) for e in events if e["eventType"] == "COMPLETE" for d in e.get("outputs", [])
    }
    assert {
        ("orders_pipeline.load", "warehouse.analytics.orders"),
        ("customers_pipeline.load", "warehouse.analytics.customers"),
    } <= written

    second = _demo(demo_env)
    assert "Seeded 0 raw CSV files into s3://raw/raw/orders/" in second
    assert "(10 already there, unchanged)" in second
    assert _total(second, "orders") == [1862, 1720, 101, 41, 1720]
    assert _tables(demo_env) == tables
    assert "orders_file_ledger has 10 file versions" in second


def test_the_stack_it_started_stops(demo_env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "local_stack", "down"], env=demo_env, cwd=PROJECT_ROOT, check=True)
    status = subprocess.run(
        [sys.executable, "-m", "local_stack", "status"], env=demo_env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert re.findall(r"^(\w+)\s+(up|down)", status.stdout, re.M) == [
        ("postgres", "down"),
        ("s3", "down"),
        ("smtp", "down"),
        ("airflow", "down"),
        ("dashboard", "down"),  # make status names the dashboard's port too
    ]


def test_make_demo_of_ones_own_files_of_one_dataset(tmp_path: Path) -> None:
    """`make demo DATA=folder DATE=day DATASET=orders` on a fresh stack: the rows arrive and the marts build,
    though no customers file was ever loaded."""
    data = tmp_path / "csvs"
    data.mkdir()
    (data / "mine.csv").write_text(
        "order_id,order_ts,customer_id,product_name,category,quantity,unit_price,region\n"
        "MINE-1,2026-11-24 10:00,C-1,Desk Lamp,home,2,12.50,North\n"
        'MINE-2,2026-11-24 11:00,C-2,Desk Lamp,home,1,"$1,234.50",East\n'
    )
    with _user_stack() as env:
        out = _demo(env, "--data", str(data), "--date", "2026-11-24", "--dataset", "orders")
        assert "dbt build of the marts (dags/dbt/shop): ok" in out
        with psycopg.connect(postgres.dsn(int(env["LOCAL_PG_PORT"]))) as conn:
            rows = conn.execute("SELECT order_id, unit_price FROM analytics.orders ORDER BY 1").fetchall()
            assert [(k, str(p)) for k, p in rows] == [("MINE-1", "12.50"), ("MINE-2", "1234.50")]
            assert conn.execute("SELECT count(*) FROM analytics.customers").fetchone()[0] == 0
