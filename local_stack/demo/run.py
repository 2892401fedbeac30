"""`make demo` end to end: seed, run the DAGs (in one Airflow process), build the marts, print a summary."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from include.etl.names import dag_id
from local_stack import postgres, processes
from local_stack.config import BUCKETS, PROJECT_ROOT, datasets, raw_prefix
from local_stack.demo import dag_runs, sample_customers, sample_orders
from local_stack.stack import LocalStack, say_what_was_lost

SAMPLE_DAYS = [date(2026, 11, 24) + timedelta(days=i) for i in range(3)]
# The demo's sample data per dataset: {day: {file name: bytes}}.
SAMPLES: dict[str, Callable[[list[date]], dict[str, dict[str, bytes]]]] = {
    "orders": sample_orders.generate,
    "customers": sample_customers.generate,
}


def run_dags(stack: LocalStack, runs: list[tuple[str, str]], log: Path) -> Iterator[dict[str, Any]]:
    """Run the pipeline DAG of each (dataset, day) with `dag.test()`, in one Airflow process
    (local_stack.demo.dag_runs); yields each run's {"dataset", "day", "state", "seconds"} as it ends. Airflow's
    output goes to `log`."""
    argv = [sys.executable, "-m", dag_runs.__name__, *(f"{dataset}={day}" for dataset, day in runs)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with (
        processes.open_log(log) as fh,
        subprocess.Popen(
            argv,
            env={**os.environ, **stack.env},
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line.encode())
            if line.startswith(dag_runs.MARKER + " "):
                yield json.loads(line[len(dag_runs.MARKER) + 1 :])


def _user_files(folder: str, day: str) -> dict[str, dict[str, bytes]]:
    paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz")))
    if not paths:
        raise SystemExit(f"no .csv or .csv.gz files in {folder}")
    return {date.fromisoformat(day).isoformat(): {p.name: p.read_bytes() for p in paths}}


def demo(args: argparse.Namespace) -> int:
    """`make demo`: seed the sample (or the user's) files, run each dataset's DAG per day, build the marts, print
    what happened; 1 if a run or the build failed."""
    if bool(args.data) != bool(args.date):
        raise SystemExit("use DATA and DATE together: make demo DATA=path/to/csvs DATE=2026-11-24 [DATASET=orders]")
    if args.dataset not in datasets():
        raise SystemExit(f"unknown dataset {args.dataset!r}: the contracts are {', '.join(datasets())}")
    if args.data:
        batches = {args.dataset: _user_files(args.data, args.date)}
    else:
        batches = {dataset: SAMPLES[dataset](SAMPLE_DAYS) for dataset in datasets() if dataset in SAMPLES}
    stack = LocalStack()
    started = time.monotonic()
    print("Starting the local stack (PostgreSQL, S3, SMTP) and migrating Airflow's metadata DB ...")
    stack.start()
    say_what_was_lost(stack)
    for dataset, files in batches.items():
        keys = stack.seed(files, dataset, skip_unchanged=True)
        unchanged = sum(len(named) for named in files.values()) - len(keys)
        print(
            f"Seeded {len(keys)} raw CSV files into s3://{BUCKETS[0]}/{raw_prefix(dataset)}/ for {', '.join(files)}"
            + (f" ({unchanged} already there, unchanged)" if unchanged else "")
        )
    log = stack.paths.logs / "demo-dag-runs.log"
    runs = [(dataset, day) for dataset, files in batches.items() for day in files]
    done = []
    for result in run_dags(stack, runs, log):
        outcome = "ok" if result["state"] == "success" else "FAILED"
        print(f"  DAG {dag_id(result['dataset'])} for dt={result['day']}: {outcome} in {result['seconds']:.1f}s")
        done.append((result["dataset"], result["day"], result["state"]))
    failed = [(dataset, day) for dataset, day, state in done if state != "success"]
    if len(done) < len(runs):
        print(f"  the DAG runs stopped after {len(done)} of {len(runs)}: see {log}")
        failed.append(runs[len(done)])
    marts_ok = _build_marts(stack, log)
    from local_stack.demo.report import print_summary

    print_summary(stack, {dataset: list(files) for dataset, files in batches.items()}, log)
    print(f"Dashboard:         make dashboard   (http://localhost:{stack.ports.dashboard}, marts read as bi_reader)")
    events = stack.paths.lineage
    count = sum(1 for _ in events.open()) if events.exists() else 0
    print(f"Lineage: {count} OpenLineage events in {events} (one JSON event per line)")
    print(f"\nDone in {time.monotonic() - started:.0f}s.")
    return 1 if failed or not marts_ok else 0


def _build_marts(stack: LocalStack, log: Path) -> bool:
    """dbt build of the marts (in Airflow, the `marts` DAG runs the same project after each load).

    The marts read every dataset's table and ledger: a demo of one dataset's files (DATA=... DATASET=orders)
    creates the others' empty ones first, as their first load would.
    """
    import psycopg

    from include.etl.loading.load import prepare_tables
    from include.etl.running.dag_factory import valid_contracts
    from local_stack import analytics

    t0 = time.monotonic()
    with psycopg.connect(postgres.dsn(stack.ports.postgres)) as conn:
        for contract in valid_contracts()[0]:
            prepare_tables(conn, contract)
    result = analytics.run_dbt(["build"], stack.ports, capture=True)
    with processes.open_log(log) as fh:
        fh.write((result.stdout + result.stderr).encode())
    outcome = "ok" if result.returncode == 0 else f"FAILED (dbt's output is in {log})"
    print(f"  dbt build of the marts (dags/dbt/shop): {outcome} in {time.monotonic() - t0:.1f}s")
    return result.returncode == 0
