"""Run pipeline DAGs for given partitions in one process, as `airflow dags test` runs one (`dag.test()`).

`python -m local_stack.demo.dag_runs orders=2026-11-24 customers=2026-11-24 ...`, in the local stack's Airflow
environment: the pipelines' DAG file is parsed once and each run is a `dag.test()` of its DAG with `{"day": ...}`
as its conf, in the order given. Prints a line per run when it ends, `dag-run-result {"dataset", "day", "state",
"seconds"}` (JSON after the marker: Airflow's own log lines go to the same output).
Exits 1 if a run did not succeed. One process saves each run Airflow's start-up and the parse of the DAG folder
(`airflow dags test` parses every DAG file, the marts' too, whose Cosmos parse runs `dbt ls`).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from local_stack.config import PROJECT_ROOT

MARKER = "dag-run-result"


def run(runs: list[tuple[str, str]], out: Any = sys.stdout) -> bool:
    """Run each (dataset, day); True if every run succeeded."""
    from airflow.dag_processing.dagbag import DagBag

    from include.etl.names import dag_id
    from include.etl.running.lineage import forget_collected

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "pipelines.py"))
    if bag.import_errors:
        raise SystemExit("the pipelines' DAG file does not import:\n" + "\n".join(bag.import_errors.values()))
    # dag.test() leaves a run's conf in the DAG's params: each run passes every param, from the DAG's defaults.
    defaults = {dataset: bag.dags[dag_id(dataset)].params.dump() for dataset, _ in runs}
    ok = True
    for dataset, day in runs:
        started = time.monotonic()
        forget_collected()  # each run's lineage events carry its own datasets only
        dag_run = bag.dags[dag_id(dataset)].test(run_conf={**defaults[dataset], "day": day})
        state = str(dag_run.state)
        ok = ok and state == "success"
        line = {"dataset": dataset, "day": day, "state": state, "seconds": round(time.monotonic() - started, 1)}
        print(f"{MARKER} {json.dumps(line)}", file=out, flush=True)
    return ok


def main(argv: list[str]) -> int:
    runs = [tuple(arg.split("=", 1)) for arg in argv]
    if not runs or any(len(r) != 2 for r in runs):
        raise SystemExit("usage: python -m local_stack.demo.dag_runs DATASET=YYYY-MM-DD [...]")
    return 0 if run([(d, day) for d, day in runs]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
