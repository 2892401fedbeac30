"""Local stack: Airflow connections/variables from airflow_settings.yaml, and the sample data."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from include.etl.contract.model import Contract
from local_stack.config import DB_USER, PROJECT_ROOT, WAREHOUSE_DB, Ports
from local_stack.demo.sample_orders import generate
from local_stack.settings import airflow_env, read_settings
from local_stack.stack import LocalStack

PORTS = Ports(postgres=15432, s3=19000, smtp=11025, airflow=18080)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return airflow_env(PORTS)


def _conn(env: dict[str, str], conn_id: str) -> dict:
    return json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"])


def test_every_connection_of_the_settings_file_is_exported(env: dict[str, str]) -> None:
    ids = [c["conn_id"] for c in read_settings()["connections"]]
    assert ids == ["aws_default", "warehouse", "smtp_default"]
    assert sorted(k for k in env if k.startswith("AIRFLOW_CONN_")) == sorted(f"AIRFLOW_CONN_{i.upper()}" for i in ids)


def test_aws_default_points_at_local_s3(env: dict[str, str]) -> None:
    conn = _conn(env, "aws_default")
    assert conn["conn_type"] == "aws"
    assert conn["extra"]["endpoint_url"] == f"http://127.0.0.1:{PORTS.s3}"
    assert conn["extra"]["region_name"] == "us-east-1"  # the other extras are kept
    assert (conn["login"], conn["password"]) == ("minioadmin", "minioadmin")


def test_warehouse_points_at_local_postgres(env: dict[str, str]) -> None:
    conn = _conn(env, "warehouse")
    assert conn["conn_type"] == "postgres"
    assert (conn["host"], conn["port"]) == ("127.0.0.1", PORTS.postgres)
    assert (conn["login"], conn["schema"]) == (DB_USER, WAREHOUSE_DB)
    assert conn["extra"] == {"sslmode": "prefer"}


def test_smtp_default_points_at_local_sink(env: dict[str, str]) -> None:
    conn = _conn(env, "smtp_default")
    assert conn["conn_type"] == "smtp"
    assert (conn["host"], conn["port"]) == ("127.0.0.1", PORTS.smtp)
    assert conn["extra"]["from_email"] == "etl-pipeline@example.com"
    assert conn["extra"]["disable_tls"] is True


def test_ports_change_only_the_addresses() -> None:
    other = airflow_env(Ports(postgres=1, s3=2, smtp=3, airflow=4))
    assert _conn(other, "warehouse")["port"] == 1
    assert _conn(other, "aws_default")["extra"]["endpoint_url"] == "http://127.0.0.1:2"
    assert _conn(other, "smtp_default")["port"] == 3


def test_every_variable_is_exported(env: dict[str, str]) -> None:
    variables = read_settings()["variables"]
    assert len(variables) >= 6
    exported = {k: v for k, v in env.items() if k.startswith("AIRFLOW_VAR_")}
    assert exported == {f"AIRFLOW_VAR_{v['variable_name'].upper()}": str(v["variable_value"]) for v in variables}
    assert exported["AIRFLOW_VAR_CUSTOMERS_RAW_BUCKET"] == "raw"


def test_airflow_reads_the_exported_connection(env: dict[str, str]) -> None:
    from airflow.models.connection import Connection

    conn = Connection.from_json(env["AIRFLOW_CONN_WAREHOUSE"], conn_id="warehouse")
    assert (conn.conn_type, conn.host, conn.port, conn.schema, conn.login) == (
        "postgres",
        "127.0.0.1",
        PORTS.postgres,
        WAREHOUSE_DB,
        DB_USER,
    )
    aws = Connection.from_json(env["AIRFLOW_CONN_AWS_DEFAULT"], conn_id="aws_default")
    assert aws.extra_dejson["endpoint_url"] == f"http://127.0.0.1:{PORTS.s3}"


def test_settings_file_variants(tmp_path: Path) -> None:
    doc = {
        "airflow": {
            "connections": [
                {
                    "conn_id": "warehouse",
                    "conn_type": "postgres",
                    "conn_host": "db",
                    "conn_extra": '{"sslmode": "require"}',
                },
                {"conn_id": "other", "conn_type": "http", "conn_host": "example.com", "conn_port": 443},
            ],
            "variables": [{"variable_name": "orders_batch_bytes", "variable_value": 1024}],
        }
    }
    path = tmp_path / "airflow_settings.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = airflow_env(PORTS, path)
    assert _conn(env, "warehouse")["extra"] == {"sslmode": "require"}  # JSON-string extras are parsed
    assert _conn(env, "warehouse")["host"] == "127.0.0.1"
    assert _conn(env, "other") == {"conn_type": "http", "host": "example.com", "port": 443}  # not overridden
    assert env["AIRFLOW_VAR_ORDERS_BATCH_BYTES"] == "1024"


# --- sample data ------------------------------------------------------------------

DAYS = [date(2026, 11, 24), date(2026, 11, 25)]


def _header(body: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(body.decode("utf-8"))))


def test_generate_is_deterministic() -> None:
    first = generate(DAYS, files=3, rows_per_file=50)
    second = generate(DAYS, files=3, rows_per_file=50)
    assert first == second
    assert generate(DAYS, files=3, rows_per_file=50, seed=7) != first


def test_generate_has_one_file_missing_region_on_the_first_day(contract: Contract) -> None:
    files = generate(DAYS, files=3, rows_per_file=50)
    assert list(files) == ["2026-11-24", "2026-11-25"]
    missing = {
        (day, name): contract.map_headers(_header(body)).missing
        for day, named in files.items()
        for name, body in named.items()
        if contract.map_headers(_header(body)).missing
    }
    assert missing == {("2026-11-24", "orders_20261124_legacy_export.csv"): ("region",)}
    assert len(files["2026-11-24"]) == 4
    assert len(files["2026-11-25"]) == 3


def test_generated_headers_use_aliases_and_an_extra_column(contract: Contract) -> None:
    files = generate(DAYS[:1], files=3, rows_per_file=10)["2026-11-24"]
    mappings = {name: contract.map_headers(_header(body)) for name, body in files.items()}
    assert mappings["orders_20261124_02.csv"].missing == ()
    assert mappings["orders_20261124_03.csv"].extra == ("notes",)
    assert b"\r\n" in files["orders_20261124_03.csv"]


@pytest.mark.integration
def test_the_printed_exports_let_the_aws_tools_reach_the_local_s3_as_they_are(stack: LocalStack) -> None:
    """`eval "$(python -m local_stack env)"`, then boto3 (and the AWS CLI, which reads the same variables) with no
    endpoint or keys of its own lists the stack's buckets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "LOCAL_STATE_DIR": str(stack.paths.root),
        "LOCAL_S3_PORT": str(stack.ports.s3),
    }
    script = (
        f'eval "$({sys.executable} -m local_stack env)" && {sys.executable} -c '
        "\"import boto3; print(' '.join(sorted(b['Name'] for b in boto3.client('s3').list_buckets()['Buckets'])))\""
    )
    run = subprocess.run(["bash", "-c", script], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert set(run.stdout.split()) >= {"raw", "processed"}
