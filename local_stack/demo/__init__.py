"""`make demo`: the sample data of each dataset, the DAG runs in one Airflow process, and the summary it prints.
Built on the servers of local_stack (stack.py); nothing of the servers depends on it."""
