"""
### One Airflow DAG per data contract

Every contract file in `include/contracts/` (`orders.yml`, `customers.yml`, ...) becomes the DAG
`<dataset>_pipeline`: raw CSV files in S3 → cleaned Parquet → PostgreSQL, exactly once per file
version. Adding a dataset is adding a contract file (see the README, "Add a dataset"). The DAG's
shape is in `include/etl/running/dag_factory.py`, its tasks in `include/etl/running/tasks.py`.

A contract that does not validate gets no DAG, and the others are built all the same: its file,
key and problem are an import error of `dags/contract_errors.py`.
"""

from __future__ import annotations

from include.etl.names import dag_id
from include.etl.running.dag_factory import build_pipeline, valid_contracts

contracts, _ = valid_contracts()
for contract in contracts:
    globals()[dag_id(contract.dataset)] = build_pipeline(contract)
