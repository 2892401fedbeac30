"""The role of dashboards and BI tools, `bi_reader`, reads the marts and can change nothing."""

from __future__ import annotations

import psycopg
import pytest

from tests.analytics.conftest import Builds

pytestmark = pytest.mark.integration

WRITES = [
    "insert into marts.fct_orders (order_id) values ('X-1')",
    "update marts.daily_revenue set revenue = 0",
    "delete from marts.dq_files",
    "truncate marts.customer_metrics",
    "drop table marts.product_performance",
    "create table marts.mine (i int)",
    "create table public.mine (i int)",
    "create schema mine",
]
HIDDEN = ["analytics.orders", "analytics.customers", "etl.orders_file_ledger", "staging.stg_orders"]


def test_bi_reader_reads_every_mart(builds: Builds) -> None:
    with builds.shop.connect() as conn:
        marts = [
            r[0] for r in conn.execute("select table_name from information_schema.tables where table_schema = 'marts'")
        ]
    assert len(marts) >= 8
    with builds.shop.connect("bi_reader") as bi:
        assert bi.execute("show default_transaction_read_only").fetchone() == ("on",)
        # A BI session left in a transaction would keep dbt from replacing a mart: the server ends it.
        assert bi.execute("show idle_in_transaction_session_timeout").fetchone() == ("1min",)
        for mart in marts:
            bi.execute(f"select * from marts.{mart} limit 1").fetchall()
        assert bi.execute("select count(*) from marts.fct_orders").fetchone()[0] > 0


@pytest.mark.parametrize("statement", WRITES)
def test_bi_reader_cannot_write_even_out_of_read_only_mode(builds: Builds, statement: str) -> None:
    with builds.shop.connect("bi_reader") as bi:
        bi.execute("set default_transaction_read_only = off")  # its default; the privileges must hold anyway
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bi.execute(statement)


@pytest.mark.parametrize("relation", HIDDEN)
def test_bi_reader_cannot_read_beyond_the_marts(builds: Builds, relation: str) -> None:
    with builds.shop.connect("bi_reader") as bi, pytest.raises(psycopg.errors.InsufficientPrivilege):
        bi.execute(f"select * from {relation} limit 1")
