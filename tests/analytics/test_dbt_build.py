"""dbt on the real PostgreSQL after pipeline runs: models, data tests and unit tests pass, the marts hold what
SQL on the loaded tables says, and a second build after another day touches only the new day's rows."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from tests.analytics.conftest import DAYS, Builds

pytestmark = pytest.mark.integration


def _done(output: str) -> dict[str, int]:
    line = re.findall(r"Done\. (PASS=\d+ WARN=\d+ ERROR=\d+ SKIP=\d+ .*TOTAL=\d+)", output)[-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_build_runs_every_model_data_test_and_unit_test(builds: Builds) -> None:
    for output, results in zip(builds.outputs, builds.run_results, strict=True):
        done = _done(output)
        assert done["ERROR"] == 0 and done["SKIP"] == 0, output[-3000:]
        by_type: dict[str, list[str]] = {}
        for r in results["results"]:
            by_type.setdefault(r["unique_id"].split(".")[0], []).append(r["status"])
        assert len(by_type["model"]) == 11 and set(by_type["model"]) == {"success"}
        assert len(by_type["unit_test"]) == 2 and set(by_type["unit_test"]) == {"pass"}
        assert len(by_type["test"]) >= 45 and set(by_type["test"]) <= {"pass", "warn"}


def test_marts_hold_what_sql_on_the_loaded_tables_says(builds: Builds) -> None:
    with builds.shop.connect() as conn:
        q = conn.execute
        assert (
            q("select count(*), sum(order_total) from marts.fct_orders").fetchone()
            == q("select count(*), sum(total_price) from analytics.orders").fetchone()
        )
        daily = q(
            "select order_date, region, category, orders, revenue from marts.daily_revenue order by 1, 2, 3"
        ).fetchall()
        expected = q(
            "select order_date, region, category, count(*), sum(total_price) from analytics.orders "
            "group by 1, 2, 3 order by 1, 2, 3"
        ).fetchall()
        assert daily == expected and len(daily) > 20
        customer, orders, revenue, first, last = q(
            "select customer_id, orders, revenue, first_order_date, last_order_date from marts.customer_metrics "
            "where orders > 1 order by orders desc, customer_id limit 1"
        ).fetchone()
        assert (orders, revenue, first, last) == q(
            "select count(*), sum(total_price), min(order_date), max(order_date) from analytics.orders "
            "where customer_id = %s",
            (customer,),
        ).fetchone()
        name, segment = q("select full_name, segment from marts.customer_metrics where in_crm limit 1").fetchone()
        assert name and segment in ("Consumer", "Business")
        assert q("select count(*) from marts.customer_metrics where customer_id = 'guest'").fetchone() == (0,)
        top = q("select product_name, revenue from marts.product_performance where revenue_rank = 1").fetchone()
        assert (
            top
            == q(
                "select product_name, sum(total_price) from analytics.orders group by product_name, category "
                "order by 2 desc limit 1"
            ).fetchone()
        )
        # Data quality from the ledgers: per day, rows read = loaded + rejected + duplicates; the file without
        # a region column is rejected whole on each day with its reason.
        for dataset in ("orders", "customers"):
            days = q(
                "select partition_day, rows_read, rows_loaded + rows_rejected + rows_duplicate from marts.dq_daily "
                "where dataset = %s order by 1",
                (dataset,),
            ).fetchall()
            assert [d[0] for d in days] == DAYS and all(d[1] == d[2] > 0 for d in days)
        reason = q(
            "select files, whole_file from marts.dq_rejection_reasons "
            "where dataset = 'orders' and reason = 'missing required column(s): region'"
        ).fetchone()
        assert reason == (2, True)
        assert q("select count(*) from marts.dq_files where not reconciles").fetchone() == (0,)
        fresh = dict(q("select dataset, files_parked from marts.load_freshness").fetchall())
        assert fresh == {"orders": 0, "customers": 0}


def test_the_second_build_touches_only_the_new_days_rows(builds: Builds) -> None:
    before, after = builds.fct_built
    since = builds.last_loaded[0]  # the newest load the first build saw
    with builds.shop.connect() as conn:
        new = {r[0] for r in conn.execute("select order_id from analytics.orders where loaded_at > %s", (since,))}
        days = conn.execute("select distinct order_date from analytics.orders where loaded_at > %s", (since,))
        new_days = {r[0] for r in days}
    assert new and set(after) == set(before) | new
    changed = {order_id for order_id, built in after.items() if before.get(order_id) != built}
    assert changed == new  # the first day's orders kept the first build's timestamp
    assert DAYS[1] in new_days and DAYS[0] not in new_days
    daily_before, daily_after = builds.daily_built
    rebuilt_days = {key[0] for key, built in daily_after.items() if daily_before.get(key) != built}
    assert rebuilt_days == new_days
    assert all(daily_after[key] == built for key, built in daily_before.items() if key[0] not in new_days)


def test_a_build_with_nothing_new_changes_nothing(builds: Builds) -> None:
    builds.shop.dbt("build", "-s", "fct_orders", "daily_revenue")
    with builds.shop.connect() as conn:
        fct = dict(conn.execute("select order_id, built_at from marts.fct_orders").fetchall())
    assert fct == builds.fct_built[-1]


def test_a_retracted_order_leaves_the_fact_and_its_day(builds: Builds) -> None:
    """A reprocess or `on_source_delete: remove` takes rows out of the loaded table: the marts follow."""
    shop = builds.shop
    order_id, day, total = (
        shop.connect()
        .execute("select order_id, order_date, total_price from analytics.orders order by order_id limit 1")
        .fetchone()
    )
    before = shop.scalar("select sum(revenue) from marts.daily_revenue where order_date = %s", day)
    with shop.connect() as conn:
        conn.execute("delete from analytics.orders where order_id = %s", (order_id,))
    shop.dbt("build", "-s", "fct_orders+")  # + the reconciliation test of daily_revenue against the fact
    assert shop.scalar("select count(*) from marts.fct_orders where order_id = %s", order_id) == 0
    after = shop.scalar("select sum(revenue) from marts.daily_revenue where order_date = %s", day)
    assert after == before - total and isinstance(after, Decimal)
