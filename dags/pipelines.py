"""
### One Airflow DAG per data contract

Every contract file in `include/contracts/` (`orders.yml`, `customers.yml`, ...) becomes the DAG
`<dataset>_pipeline`: raw CSV files in S3 → cleaned Parquet → PostgreSQL, exactly once per file
version. Adding a dataset is adding a contract file (see the README, "Add a dataset"). The DAG's
shape is in `include/etl/dag_factory.py`, its tasks in `include/etl/tasks.py`.

A contract that does not validate is an import error of this file, naming the contract file,
the key and the problem.
"""

from __future__ import annotations

from include.etl.contract import contract_paths, load_contract
from include.etl.dag_factory import build_pipeline

for path in contract_paths():
    contract = load_contract(path)
    globals()[f"{contract.dataset}_pipeline"] = build_pipeline(contract)
