"""
### Contracts that cannot become an Airflow DAG

Imports cleanly when every contract in `include/contracts/` is valid (and defines no DAG). When
one is not, this file fails to import with every such contract's file, key and problem, so
Airflow lists them among its DAG import errors, while `dags/pipelines.py` still builds the DAGs
of the valid contracts: a typo in one dataset's contract never stops the others.
"""

from __future__ import annotations

from include.etl.contract.model import ContractError
from include.etl.running.dag_factory import valid_contracts

_, problems = valid_contracts()
if problems:
    raise ContractError("\n".join(problems))
