"""Running it on Airflow: the DAG factory, the task bodies, batching, asset events, lineage and the
summary email. The only wing that imports Airflow."""
