"""The analytics layer: the dbt marts (dags/dbt/shop) run from Airflow with Cosmos."""
