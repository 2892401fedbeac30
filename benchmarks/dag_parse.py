"""How long parsing the DAG files takes, beside an empty DAG file: what a busy scheduler, DAG processor and every
task process pay before a task starts (Airflow's `dagbag_import_timeout` is 30 s).

Each measurement is a fresh interpreter that has imported Airflow (`airflow.sdk`, as a DAG processor has) and then
times `DagBag(dag_folder=<file>)`. The files are measured in turn, `repeats` times, and their medians reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from local_stack.config import PROJECT_ROOT

_TIMED = """
import sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
print("dag-parse-result", time.perf_counter() - started, len(bag.dags), len(bag.import_errors))
"""
# An empty DAG file: it names Airflow (else the DAG processor's safe mode skips it) and defines nothing.
_EMPTY = '"""An empty DAG file (make bench): airflow"""\n'


def measure(env: dict[str, str], repeats: int = 5) -> list[dict[str, Any]]:
    """[{"file", "median_s", "over_empty_s", "dags", "runs"}] for the pipelines' file, the marts' file (Cosmos,
    its dbt ls cached in a Variable as in production) and the whole folder, against an empty DAG file."""
    with tempfile.TemporaryDirectory(prefix="dag-parse-") as tmp:
        empty = Path(tmp) / "empty_dag.py"
        empty.write_text(_EMPTY)
        files = {
            "empty DAG file": empty,
            "dags/pipelines.py": PROJECT_ROOT / "dags" / "pipelines.py",
            "dags/marts.py": PROJECT_ROOT / "dags" / "marts.py",
            "dags/ (the folder)": PROJECT_ROOT / "dags",
        }
        full_env = {**os.environ, **env, "AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS": "True"}
        times: dict[str, list[float]] = {name: [] for name in files}
        dags: dict[str, int] = {}
        subprocess.run(
            [sys.executable, "-c", _TIMED, str(files["dags/marts.py"])], env=full_env, check=True, capture_output=True
        )  # fills Cosmos' cache, as the DAG processor's first parse does
        for _ in range(repeats):
            for name, path in files.items():
                out = subprocess.run(
                    [sys.executable, "-c", _TIMED, str(path)],
                    env=full_env,
                    cwd=PROJECT_ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                # The DAG files may log to stdout (a parse logs a line with a timestamp); the result is on its own line.
                result = next(line.split()[1:] for line in out.splitlines() if line.startswith("dag-parse-result "))
                times[name].append(float(result[0]))
                dags[name] = int(result[1])
    empty_s = statistics.median(times["empty DAG file"])
    return [
        {
            "file": name,
            "median_s": round(statistics.median(runs), 3),
            "over_empty_s": round(statistics.median(runs) - empty_s, 3),
            "dags": dags[name],
            "runs": [round(t, 3) for t in runs],
        }
        for name, runs in times.items()
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "\n### Parsing the DAG files\n",
        "A fresh interpreter with Airflow imported times `DagBag(<file>)`; medians of the runs.\n",
        "| file | DAGs | median s | more than an empty DAG file, s |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['file']} | {r['dags']} | {r['median_s']:.3f} | {r['over_empty_s']:+.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m benchmarks.dag_parse: with the environment as it is
    print(json.dumps(measure({}), indent=2))
