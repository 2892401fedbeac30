"""Command line for the local stack: `python -m local_stack up|down|status|env|demo|seed`."""

from __future__ import annotations

import argparse
import sys

from local_stack import stack
from local_stack.demo import run as demo_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start PostgreSQL, S3 (moto) and SMTP; with --airflow also Airflow")
    up.add_argument("--airflow", action="store_true")
    up.add_argument(
        "--executor", choices=("local", "celery"), default="local", help="Airflow's executor (with --airflow)"
    )
    up.add_argument("--workers", type=int, default=2, help="Celery workers (with --executor celery)")
    sub.add_parser("down", help="stop every process the stack started")
    sub.add_parser("status", help="show what runs")
    sub.add_parser("env", help="print the environment as shell exports")
    demo = sub.add_parser("demo", help="seed sample (or your) CSVs, run the DAG per date, print a summary")
    demo.add_argument("--data", help="folder of your CSV files (instead of the sample)")
    demo.add_argument("--date", help="partition date for --data (YYYY-MM-DD)")
    demo.add_argument("--dataset", default="orders", help="the dataset (contract) --data belongs to")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo_run.demo(args)
    return stack.COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
