"""
### The marts: dbt after every load, with Cosmos

The dbt project `dags/dbt/shop` (staging views and the marts dashboards and BI tools read, schema `marts`)
as an Airflow DAG: each dbt model and its tests are tasks, run whenever a pipeline's load changed
`analytics.orders` or `analytics.customers` (their assets). The DAG is built in `include/analytics/marts.py`.
"""

from __future__ import annotations

from pathlib import Path

from include.analytics.marts import build_marts_dag

marts = build_marts_dag(Path(__file__).parent / "dbt" / "shop")
