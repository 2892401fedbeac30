"""Reading the marts: one read-only connection, cached queries, and plain words when there is nothing to show.

The dashboard reads only the schema `marts` (the dbt project's output) as the read-only role `bi_reader`,
which may do nothing else. Where: `DASHBOARD_DATABASE_URL` (a SQLAlchemy URL, e.g.
`postgresql+psycopg://bi_reader:<password>@<rds endpoint>:5432/warehouse?sslmode=verify-full&sslrootcert=...`;
`make dashboard` sets it for the local stack); without it the page says so. Query results are cached for `TTL`
per query and parameters (Streamlit's cache_data; the pool is a cache_resource): the marts change a few times a
day, after a load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

TTL = timedelta(minutes=5)
# A dataset without a load for longer than this is stale (files land daily).
STALE_AFTER = timedelta(hours=26)
REGIONS = ("North", "South", "East", "West", "Central")


def database_url() -> str:
    """The warehouse to read, from the configuration only (`make dashboard` sets it for the local stack)."""
    url = os.environ.get("DASHBOARD_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "DASHBOARD_DATABASE_URL is not set: give the dashboard the SQLAlchemy URL of the warehouse as bi_reader "
            "(make dashboard sets it for the local stack)"
        )
    return url


@st.cache_resource(show_spinner=False)
def engine(url: str) -> Any:
    """One connection pool per database URL. Sessions are read-only twice over (the role's default and this
    one's) and a statement never runs longer than 30 s."""
    import sqlalchemy

    options = "-c default_transaction_read_only=on -c statement_timeout=30000"
    return sqlalchemy.create_engine(url, pool_pre_ping=True, connect_args={"options": options})


@st.cache_data(ttl=TTL, show_spinner=False)
def _read(url: str, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    from sqlalchemy import text

    # The connection goes back to the pool (its transaction rolled back) as soon as the rows are read: an open
    # transaction would hold a lock that blocks dbt from swapping in a rebuilt mart.
    with engine(url).connect() as conn:
        return pd.read_sql(text(sql), conn, params=params)


def query(sql: str, **params: Any) -> pd.DataFrame:
    """A read of the marts, cached per query and parameters for `TTL`."""
    return _read(database_url(), sql, params)


@dataclass(frozen=True)
class Status:
    """Whether there is anything to show, and how current it is."""

    problem: str | None = None  # set: nothing can be shown, and why
    orders: int = 0
    first_day: date | None = None
    last_day: date | None = None
    built_at: datetime | None = None  # the last dbt build
    last_load: datetime | None = None  # the last load of any dataset (live)
    warnings: tuple[str, ...] = ()


def _problem(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    if "does not exist" in text:
        return (
            "The marts do not exist yet: no dbt build has run on this warehouse. Load some files and build them "
            "(make demo, or the `marts` DAG after a load)."
        )
    if "permission denied" in text:
        return f"The dashboard's role may not read the marts ({text}); a dbt build grants it."
    return f"The warehouse cannot be read: {text}"


def status(now: datetime | None = None) -> Status:
    now = now or datetime.now(UTC)
    try:
        row = query(
            "select (select count(*) from marts.fct_orders) as orders, "
            "(select min(order_date) from marts.fct_orders) as first_day, "
            "(select max(order_date) from marts.fct_orders) as last_day, "
            "(select max(built_at) from marts.dq_files) as built_at, "
            "(select max(last_loaded_at) from marts.load_freshness) as last_load"
        ).iloc[0]
        freshness = query("select dataset, last_loaded_at, files_parked from marts.load_freshness order by dataset")
    except Exception as error:  # any failure to read is shown in words, never raised at the user
        return Status(problem=_problem(error))
    if int(row["orders"]) == 0:
        return Status(problem="The marts are empty: no order has been loaded yet.")
    built_at, last_load = as_utc(row["built_at"]), as_utc(row["last_load"])
    warnings = []
    if built_at and last_load and last_load > built_at:
        warnings.append(
            f"The marts are behind: they were built at {built_at:%Y-%m-%d %H:%M} UTC, before the last load at "
            f"{last_load:%Y-%m-%d %H:%M} UTC (the `marts` DAG has not run since)."
        )
    for f in freshness.itertuples():
        loaded = as_utc(f.last_loaded_at)
        if loaded is None or now - loaded > STALE_AFTER:
            since = "never" if loaded is None else f"{(now - loaded).total_seconds() / 3600:.0f} hours ago"
            warnings.append(f"Stale: {f.dataset} was last loaded {since}.")
    return Status(
        orders=int(row["orders"]),
        first_day=row["first_day"],
        last_day=row["last_day"],
        built_at=built_at,
        last_load=last_load,
        warnings=tuple(warnings),
    )


def as_utc(value: Any) -> datetime | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).tz_convert("UTC").to_pydatetime()


# --- sales ------------------------------------------------------------------------------------------------------
_FILTER = "order_date between :start and :end and region = any(:regions)"


def kpis(start: date, end: date, regions: list[str]) -> dict[str, float]:
    row = query(
        "select coalesce(sum(order_total), 0) as revenue, count(*) as orders, "
        "count(distinct customer_id) filter (where not is_guest) as customers "
        f"from marts.fct_orders where {_FILTER}",
        start=start,
        end=end,
        regions=regions,
    ).iloc[0]
    orders = int(row["orders"])
    revenue = float(row["revenue"])
    return {
        "revenue": revenue,
        "orders": orders,
        "avg_order_value": revenue / orders if orders else 0.0,
        "customers": int(row["customers"]),
    }


def revenue_by(dimension: str, start: date, end: date, regions: list[str]) -> pd.DataFrame:
    """Revenue per order day and region or category (daily_revenue), one column per value."""
    if dimension not in ("region", "category"):
        raise ValueError(dimension)
    df = query(
        f"select order_date, {dimension}, sum(revenue) as revenue from marts.daily_revenue where {_FILTER} "
        "group by 1, 2 order by 1, 2",
        start=start,
        end=end,
        regions=regions,
    )
    df["revenue"] = df["revenue"].astype(float)
    return df


def top_products(start: date, end: date, regions: list[str], limit: int = 10) -> pd.DataFrame:
    df = query(
        "select product_name as product, category, count(*) as orders, sum(quantity) as units, "
        f"sum(order_total) as revenue from marts.fct_orders where {_FILTER} "
        "group by 1, 2 order by revenue desc, product limit :limit",
        start=start,
        end=end,
        regions=regions,
        limit=limit,
    )
    df["revenue"] = df["revenue"].astype(float)
    return df


# --- data quality -----------------------------------------------------------------------------------------------
def freshness() -> pd.DataFrame:
    return query(
        "select dataset, last_loaded_at, last_seen_at, files_waiting, files_parked "
        "from marts.load_freshness order by dataset"
    )


def rows_per_day(start: date, end: date) -> pd.DataFrame:
    df = query(
        "select partition_day, dataset, rows_read, rows_loaded, rows_rejected, rows_duplicate, files, "
        "files_rejected, files_failed, files_parked from marts.dq_daily "
        "where partition_day between :start and :end order by partition_day, dataset",
        start=start,
        end=end,
    )
    return df


def rejection_reasons(limit: int = 10) -> pd.DataFrame:
    return query(
        "select dataset, reason, whole_file, files, rows_rejected, last_partition_day "
        "from marts.dq_rejection_reasons order by rows_rejected desc, files desc limit :limit",
        limit=limit,
    )


def files(start: date, end: date) -> pd.DataFrame:
    return query(
        "select dataset, partition_day, file_name, status, rows_read, rows_loaded, rows_rejected, rows_duplicate, "
        "reconciles, reason, attempts, last_error, source_key from marts.dq_files "
        "where status not in ('superseded', 'ignored') and (partition_day between :start and :end or needs_action) "
        "order by partition_day desc, dataset, file_name",
        start=start,
        end=end,
    )


def ignored() -> pd.DataFrame:
    """Objects under a raw prefix the pipeline does not read (outside the layout, an impossible day, not a CSV),
    whatever their day: a file in the wrong place has none."""
    return query(
        "select dataset, source_key, reason, first_seen_at from marts.dq_files where status = 'ignored' "
        "order by first_seen_at desc, source_key"
    )
