"""The local stack's servers and its commands: up, down, status and env (the demo is local_stack.demo)."""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from pathlib import Path
from typing import Any

from local_stack import airflow, broker, mailbox, postgres, processes, s3, workers
from local_stack.config import BUCKETS, ExecutorChoice, Ports, StackPaths, datasets, raw_prefix, state_dir


class LocalStack:
    """The embedded servers of one state folder, on one set of ports."""

    def __init__(self, root: Path | None = None, ports: Ports | None = None, executor: ExecutorChoice | None = None):
        self.paths = StackPaths(root or state_dir())
        self.ports = ports or Ports.from_env()
        # Without a choice: the executor `up` last started in this state folder (LocalExecutor if none).
        self.executor = executor or ExecutorChoice.load(self.paths)

    @property
    def env(self) -> dict[str, str]:
        return airflow.environment(self.paths, self.ports, self.executor)

    def start(self, with_airflow: bool = False) -> None:
        self.paths.make()
        postgres.start(self.paths, self.ports.postgres)
        s3.start(self.paths, self.ports.s3)
        pid = processes.start(
            "smtp",
            [sys.executable, "-m", mailbox.__name__, "--port", str(self.ports.smtp), "--dir", str(self.paths.mailbox)],
            self.paths.pids,
            self.paths.logs,
            cwd=Path(__file__).resolve().parent.parent,
        )
        processes.wait_for_port(self.ports.smtp, 30, "SMTP sink", self.paths.logs / "smtp.log", pid)
        airflow.migrate(self.env)
        if with_airflow:
            self.executor.save(self.paths)
            if self.executor.is_celery:
                broker.start(self.paths, self.ports.redis)
            airflow.start_services(self.paths, self.ports, self.env)
            if self.executor.is_celery:
                workers.start(self.paths, self.env, self.executor)

    def stop(self) -> list[str]:
        stopped = [f"airflow {s}" for s in airflow.stop_services(self.paths)]
        stopped += workers.stop(self.paths)
        if broker.stop(self.paths):
            stopped.append("redis")
        self.paths.executor_file.unlink(missing_ok=True)
        stopped += [n for n in ("smtp", "moto") if processes.stop(n, self.paths.pids)]
        if postgres.stop(self.paths):
            stopped.append("postgres")
        return stopped

    def s3(self) -> Any:
        return s3.client(self.ports.s3)

    def seed(
        self, files: dict[str, dict[str, bytes]], dataset: str = "orders", skip_unchanged: bool = False
    ) -> list[str]:
        """Upload {day: {name: bytes}} to a dataset's raw zone; returns the keys uploaded.

        Every upload is a new object version, which the pipeline loads in place of the previous one
        (even with the same bytes). `skip_unchanged` leaves an object that already holds the bytes alone.
        """
        client, keys = self.s3(), []
        for day, named in files.items():
            for name, body in sorted(named.items()):
                key = f"{raw_prefix(dataset)}/dt={day}/{name}"
                if skip_unchanged and _holds(client, key, body):
                    continue
                client.put_object(Bucket=BUCKETS[0], Key=key, Body=body)
                keys.append(key)
        return keys


def lost_objects(stack: LocalStack) -> dict[str, list[str]]:
    """{dataset: raw keys its ledger says are loaded that the local S3 no longer holds as that version}.

    The local S3 keeps its objects across restarts (local_stack.s3_server); a state folder from before it did, or
    one whose `s3/` folder was removed, comes back with empty buckets while the ledger still has its files.
    """
    import psycopg
    from psycopg import sql

    from include.etl.contract.model import load_contract
    from include.etl.names import table_ident

    client, lost = stack.s3(), {}
    with psycopg.connect(postgres.dsn(stack.ports.postgres)) as conn:
        for dataset in datasets():
            ledger = load_contract(dataset).ledger_table
            found = conn.execute("SELECT to_regclass(%s)", (table_ident(ledger).as_string(conn),)).fetchone()
            if found is None or found[0] is None:
                continue
            rows = conn.execute(
                sql.SQL("SELECT source_key, etag FROM {} WHERE status = 'loaded' AND deleted_at IS NULL").format(
                    table_ident(ledger)
                )
            ).fetchall()
            present: dict[str, str] = {}
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=BUCKETS[0], Prefix=raw_prefix(dataset) + "/"):
                present.update({o["Key"]: o["ETag"].strip('"') for o in page.get("Contents", [])})
            missing = sorted(key for key, etag in rows if present.get(key) != etag)
            if missing:
                lost[dataset] = missing
    return lost


def say_what_was_lost(stack: LocalStack) -> None:
    """Print, plainly, the files the ledger has that the local S3 lost, and the way out."""
    lost = lost_objects(stack)
    if not lost:
        return
    total = sum(len(keys) for keys in lost.values())
    print(f"WARNING: {total} raw file(s) the ledgers record as loaded are not in the local S3 any more:")
    for dataset, keys in lost.items():
        print(f"  {dataset}: {len(keys)}, e.g. {keys[0]}")
    print(
        "  Their rows are still in the tables; the objects are gone (the local S3 of this state folder was reset).\n"
        "  Upload them again to load them again, or start over: make clean && make demo"
    )


def _holds(client: Any, key: str, body: bytes) -> bool:
    """Whether the raw object exists with exactly these bytes (single-part ETag = MD5)."""
    try:
        head = client.head_object(Bucket=BUCKETS[0], Key=key)
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return bool(head["ETag"].strip('"') == hashlib.md5(body, usedforsecurity=False).hexdigest())


def _up(args: argparse.Namespace) -> int:
    if args.executor == "celery" and not args.airflow:
        raise SystemExit("the celery executor runs with Airflow: make up EXECUTOR=celery (up --airflow)")
    choice = ExecutorChoice.celery(args.workers) if args.executor == "celery" else ExecutorChoice()
    stack = LocalStack(executor=choice)
    stack.start(with_airflow=args.airflow)
    say_what_was_lost(stack)
    p = stack.ports
    print(f"PostgreSQL  127.0.0.1:{p.postgres} (databases warehouse, airflow; user etl)")
    print(f"S3 (moto)   http://127.0.0.1:{p.s3}  buckets: {', '.join(BUCKETS)}")
    print(f"SMTP sink   127.0.0.1:{p.smtp} -> {stack.paths.mailbox}/*.eml")
    if args.airflow:
        password = airflow.admin_password(stack.paths)
        print(f"Airflow UI  http://localhost:{p.airflow}  login: admin / {password}")
        if choice.is_celery:
            binary = broker.find_server()
            slots = stack.env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]
            print(f"Redis       {broker.url(p.redis)} (Redis {broker.version(binary)}, {binary}): the Celery broker")
            print(f"Celery      CeleryExecutor, workers {', '.join(workers.running(stack.paths))} ({slots} slots each)")
        else:
            print("Executor    LocalExecutor")
        print(f"Lineage     OpenLineage events in {stack.paths.lineage}")
    print(f"Logs in {stack.paths.logs}. Stop everything with: make down")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = LocalStack().stop()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = LocalStack()
    p = stack.ports
    services = (("postgres", p.postgres), ("s3", p.s3), ("smtp", p.smtp), ("airflow", p.airflow))
    for name, port in (*services, ("dashboard", p.dashboard)):  # the dashboard: `make dashboard`, in the foreground
        print(f"{name:9} {'up' if processes.port_open(port) else 'down':5} port {port}")
    if stack.executor.is_celery:
        print(f"{'redis':9} {'up' if broker.ping(p.redis) else 'down':5} port {p.redis}")
        print(f"{'workers':9} {', '.join(workers.running(stack.paths)) or 'none running'}")
    return 0


def _env(args: argparse.Namespace) -> int:
    """The stack's environment as shell exports: Airflow's settings, and the AWS CLI's and boto3's endpoint."""
    stack = LocalStack()
    for key, value in {**stack.env, **s3.cli_env(stack.ports.s3)}.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


COMMANDS = {"up": _up, "down": _down, "status": _status, "env": _env}
