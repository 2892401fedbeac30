"""Shared fixtures. The Airflow environment is set here, before anything imports Airflow.

Unit tests need no servers. Tests marked `integration` use a real local stack
(PostgreSQL, moto's S3 server, the SMTP sink) started once per session on free ports
in a temporary folder, and stopped by PID at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_stack.config import Ports
from local_stack.stack import LocalStack


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_STATE = Path(tempfile.mkdtemp(prefix="orders-etl-tests-"))
os.chmod(_STATE, 0o755)
_STACK = LocalStack(
    _STATE, Ports(postgres=_free_port(), s3=_free_port(), smtp=_free_port(), airflow=_free_port(), redis=_free_port())
)
os.environ.update(_STACK.env)
# Retry quickly in tests (the DAGs keep their retries; only the wait shrinks).
for _dataset in ("orders", "customers", "marts"):
    os.environ[f"AIRFLOW_VAR_{_dataset.upper()}_RETRY_DELAY_SECONDS"] = "0"
# Cosmos caches the marts DAG's `dbt ls` in an Airflow Variable; unit tests parse DAGs with no metadata DB up.
os.environ["AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS"] = "False"
_started = False
# moto's in-process HTTP server (tests/helpers.py) logs every request at INFO.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def stack() -> LocalStack:
    """The real local servers, started once for the session."""
    global _started
    _STACK.start()
    _started = True
    return _STACK  # stopped in pytest_sessionfinish, after every other teardown


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _started:
        if "airflow.settings" in sys.modules:  # close Airflow's pooled connections first
            sys.modules["airflow.settings"].dispose_orm()
        _STACK.stop()
    shutil.rmtree(_STATE, ignore_errors=True)


@pytest.fixture
def isolated(stack: LocalStack, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A warehouse database (the `warehouse` connection points at it) and orders S3 prefixes of this test's own
    (`<name>/raw/orders`, ...); yields an autocommit connection to the database, its name as `.prefix`."""
    import json

    import psycopg

    from tests.integration.conftest import fresh_database

    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.removeprefix("test_").lower())[:40]
    with fresh_database(stack, name) as dsn:
        conn = json.loads(os.environ["AIRFLOW_CONN_WAREHOUSE"])
        monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({**conn, "schema": name}))
        for zone in ("raw", "processed", "rejected"):
            monkeypatch.setenv(f"AIRFLOW_VAR_ORDERS_{zone.upper()}_PREFIX", f"{name}/{zone}/orders")
        with psycopg.connect(dsn, autocommit=True) as db:
            db.prefix = name  # type: ignore[attr-defined]
            yield db


@pytest.fixture
def contracts_folder(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A contracts folder holding the shipped contracts, that ETL_CONTRACTS_DIR points at; a test adds its own.

    The DAGs of the added contracts reach the metadata database when a test runs them (`dag.test()`); they are
    deleted from it afterwards, so a later test (the scheduler's) sees the shipped DAGs only.
    """
    from airflow.api.common.delete_dag import delete_dag
    from airflow.exceptions import DagNotFound

    from include.etl.contract.model import contract_paths, load_contract
    from include.etl.names import dag_id

    folder = tmp_path / "contracts"
    folder.mkdir()
    shipped = set()
    for path in contract_paths():
        shutil.copy(path, folder / path.name)
        shipped.add(path.stem)
    monkeypatch.setenv("ETL_CONTRACTS_DIR", str(folder))
    yield folder
    for path in contract_paths(folder):
        if path.stem not in shipped:
            with contextlib.suppress(DagNotFound):  # the test failed before its DAG ran
                delete_dag(dag_id(load_contract(path).dataset), keep_records_in_log=False)


@pytest.fixture
def contract():
    from include.etl.contract.model import load_contract

    return load_contract("orders")


# --- Where the suite's time goes: per directory, and per fixture of a wider scope than one test (the ones that
# start servers, run DAGs or build templates). Printed at the end of every run; docs/testing.md
# quotes it. (A plugin object, not conftest hooks: those would not see the setup of session-scoped fixtures.)
class _Timings:
    def __init__(self) -> None:
        self.folders: dict[str, float] = {}
        self.fixtures: dict[str, float] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[object]) -> object:
        started = time.monotonic()
        try:
            return (yield)
        finally:
            if fixturedef.scope != "function":
                name = f"{fixturedef.argname} ({fixturedef.scope}, {fixturedef.baseid or '.'})"
                self.fixtures[name] = self.fixtures.get(name, 0.0) + time.monotonic() - started

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        folder = Path(report.nodeid.split("::", 1)[0]).parent.as_posix()
        self.folders[folder] = self.folders.get(folder, 0.0) + report.duration

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.folders:
            return
        write = terminalreporter.write_line
        terminalreporter.section("where the time went")
        for folder, seconds in sorted(self.folders.items(), key=lambda kv: -kv[1]):
            write(f"{seconds:8.1f}s  {folder}/ (setup, call and teardown of its tests)")
        write("of which in fixtures shared by several tests (servers, DAG runs, templates), over 1 s:")
        for name, seconds in sorted(self.fixtures.items(), key=lambda kv: -kv[1]):
            if seconds >= 1:
                write(f"{seconds:8.1f}s  {name}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Timings(), "suite-timings")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """tests/infra/ is the `infra` tier (`make test-fast` leaves it and the `slow` tests out)."""
    infra = Path(__file__).parent / "infra"
    for item in items:
        if infra in item.path.parents:
            item.add_marker(pytest.mark.infra)


def _oracle_seed() -> str:
    from tests.etl.mutations import SEED

    return f"mutation oracle seed: {SEED} (ORACLE_SEED={SEED} make test repeats its combinations)"


def pytest_report_header(config: pytest.Config) -> str:
    return _oracle_seed()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(_oracle_seed())  # also under -q, where the header is not shown
