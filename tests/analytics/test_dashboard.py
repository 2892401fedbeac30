"""The dashboard on the real database: every page renders, the KPIs equal SQL computed here on the loaded tables,
filters apply, parked files show, and an empty or missing set of marts is said in words, not a traceback."""

from __future__ import annotations

from datetime import date

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from include.etl.contract.model import load_contract
from include.etl.loading.load import prepare_tables
from local_stack.analytics import DASHBOARD_APP, dashboard_url
from local_stack.stack import LocalStack
from tests.analytics.conftest import DAYS, Builds, Warehouse
from tests.integration.conftest import fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_cached_reads() -> None:
    """Each test reads its database afresh (the app caches query results for minutes)."""
    st.cache_data.clear()
    st.cache_resource.clear()


def run_app(stack: LocalStack, dbname: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("DASHBOARD_DATABASE_URL", dashboard_url(stack.ports, dbname))
    at = AppTest.from_file(str(DASHBOARD_APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def expected_kpis(shop: Warehouse, start: date, end: date, regions: list[str]) -> dict[str, str]:
    revenue, orders, customers = (
        shop.connect()
        .execute(
            "select sum(total_price), count(*), count(distinct customer_id) filter (where customer_id <> 'guest') "
            "from analytics.orders where order_date between %s and %s and region = any(%s)",
            (start, end, regions),
        )
        .fetchone()
    )
    return {
        "Revenue": f"{revenue:,.2f}",
        "Orders": f"{orders:,}",
        "Average order value": f"{revenue / orders:,.2f}",
        "Customers": f"{customers:,}",
    }


def test_sales_page_kpis_equal_sql_on_the_loaded_tables(builds: Builds, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(builds.shop.stack, builds.shop.dbname, monkeypatch)
    assert at.title[0].value == "Sales"
    regions = ["North", "South", "East", "West", "Central"]
    assert {m.label: m.value for m in at.metric} == expected_kpis(builds.shop, DAYS[0], DAYS[-1], regions)
    assert len(at.get("vega_lite_chart")) == 3  # by region, by category, top products
    assert not at.info and not at.warning
    # Every read is over: no session of the dashboard holds a transaction (its locks would block dbt).
    assert (
        builds.shop.scalar(
            "select count(*) from pg_stat_activity where usename = 'bi_reader' "
            "and state in ('idle in transaction', 'idle in transaction (aborted)')"
        )
        == 0
    )


def test_filters_narrow_the_kpis(builds: Builds, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(builds.shop.stack, builds.shop.dbname, monkeypatch)
    at.multiselect(key="regions").set_value(["North", "West"])
    at.date_input(key="dates").set_value((DAYS[1], DAYS[1]))
    at.run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric} == expected_kpis(builds.shop, DAYS[1], DAYS[1], ["North", "West"])


def test_data_quality_page_shows_freshness_reasons_and_every_file(
    builds: Builds, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_app(builds.shop.stack, builds.shop.dbname, monkeypatch)
    at.switch_page("views/quality.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Data quality"
    assert [m.label for m in at.metric] == ["customers: last load", "orders: last load"]
    assert all(m.value.endswith("h ago") for m in at.metric)
    assert len(at.get("vega_lite_chart")) == 1
    per_day, reasons, files = (d.value for d in at.dataframe)
    assert "missing required column(s): region" in set(reasons["reason"])
    files_in_ledgers = builds.shop.scalar(
        "select (select count(*) from etl.orders_file_ledger where status <> 'superseded') + "
        "(select count(*) from etl.customers_file_ledger where status <> 'superseded')"
    )
    assert len(files) == files_in_ledgers and files["reconciles"].all()
    assert set(per_day["dataset"]) == {"orders", "customers"}
    assert [s.value for s in at.success] == [
        "No parked or failed file.",
        "Every object under the raw prefixes is in a partition folder and is a CSV file.",
    ]


def test_a_parked_file_is_shown_as_needing_someone(builds: Builds, monkeypatch: pytest.MonkeyPatch) -> None:
    shop = builds.shop
    key = f"raw/orders/dt={DAYS[1]}/stuck.csv"
    with shop.connect() as conn:
        conn.execute(
            "insert into etl.orders_file_ledger (source_key, etag, last_modified, status, attempts, last_error) "
            "values (%s, 'e1', now(), 'parked', 3, 'S3 said no')",
            (key,),
        )
    try:
        shop.dbt("build", "-s", "dq_files")
        at = run_app(shop.stack, shop.dbname, monkeypatch)
        at.switch_page("views/quality.py").run()
        assert at.error[0].value.startswith("1 file(s) need someone")
        waiting = at.dataframe[2].value
        assert list(waiting["source_key"]) == [key] and list(waiting["status"]) == ["parked"]
    finally:
        with shop.connect() as conn:
            conn.execute("delete from etl.orders_file_ledger where source_key = %s", (key,))
        shop.dbt("build", "-s", "dq_files")


def test_files_not_read_are_shown_with_their_reason(builds: Builds, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects the listing records as ignored (tests/etl/test_layout.py) are on the quality page, whatever their
    day: a file in the wrong place has none."""
    shop = builds.shop
    key, reason = "raw/orders/dt=2026-02-30/late.csv", "dt=2026-02-30 is not a day that exists"
    with shop.connect() as conn:
        conn.execute(
            "insert into etl.orders_file_ledger (source_key, etag, last_modified, status, reason) "
            "values (%s, 'e1', now(), 'ignored', %s)",
            (key, reason),
        )
    try:
        shop.dbt("build", "-s", "dq_files")
        at = run_app(shop.stack, shop.dbname, monkeypatch)
        at.switch_page("views/quality.py").run()
        assert not at.exception, at.exception
        assert at.warning[0].value.startswith("1 object(s) under the raw prefixes are not read")
        (not_read,) = [d.value for d in at.dataframe if "reason" in d.value and "first_seen_at" in d.value]
        assert list(not_read["source_key"]) == [key] and list(not_read["reason"]) == [reason]
    finally:
        with shop.connect() as conn:
            conn.execute("delete from etl.orders_file_ledger where source_key = %s", (key,))
        shop.dbt("build", "-s", "dq_files")


def test_a_warehouse_without_marts_says_so_on_every_page(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_database(stack, "shop_no_marts"):
        at = run_app(stack, "shop_no_marts", monkeypatch)
        assert [i.value for i in at.info] == [
            "The marts do not exist yet: no dbt build has run on this warehouse. Load some files and build them "
            "(make demo, or the `marts` DAG after a load)."
        ]
        assert not at.metric
        at.switch_page("views/quality.py").run()
        assert not at.exception and "do not exist yet" in at.info[0].value


def test_without_a_configured_warehouse_the_page_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHBOARD_DATABASE_URL", raising=False)
    at = AppTest.from_file(str(DASHBOARD_APP), default_timeout=60)
    at.run()
    assert not at.exception and not at.metric
    assert "DASHBOARD_DATABASE_URL is not set" in " ".join(m.value for m in [*at.info, *at.error])


def test_marts_without_orders_say_they_are_empty(
    builds: Builds, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fresh_database(stack, "shop_empty"):
        import psycopg

        from local_stack import analytics, postgres

        with psycopg.connect(postgres.dsn(stack.ports.postgres, "shop_empty")) as conn:
            for dataset in ("orders", "customers"):
                prepare_tables(conn, load_contract(dataset))
        result = analytics.run_dbt(["build"], stack.ports, dbname="shop_empty", capture=True)
        assert result.returncode == 0, result.stdout[-3000:]
        at = run_app(stack, "shop_empty", monkeypatch)
        assert [i.value for i in at.info] == ["The marts are empty: no order has been loaded yet."]
        assert not at.metric and not at.get("vega_lite_chart")
