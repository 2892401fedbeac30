"""Airflow connections and variables for the local stack, taken from `airflow_settings.yaml`.

`airflow_settings.yaml` is the single source of truth (the Astro CLI reads it under
`astro dev start`). Locally the same connections are used with their network
addresses pointed at the embedded servers, and exported as `AIRFLOW_CONN_*` and
`AIRFLOW_VAR_*` environment variables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from local_stack.config import DB_USER, PROJECT_ROOT, WAREHOUSE_DB, Ports

SETTINGS_FILE = PROJECT_ROOT / "airflow_settings.yaml"


def read_settings(path: Path = SETTINGS_FILE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        settings: dict[str, Any] = (yaml.safe_load(fh) or {}).get("airflow", {})
    return settings


def local_overrides(ports: Ports) -> dict[str, dict[str, Any]]:
    """Per connection id: the fields that differ on the embedded local stack."""
    return {
        "aws_default": {"extra": {"endpoint_url": f"http://127.0.0.1:{ports.s3}"}},
        "warehouse": {"host": "127.0.0.1", "port": ports.postgres, "login": DB_USER, "schema": WAREHOUSE_DB},
        "smtp_default": {"host": "127.0.0.1", "port": ports.smtp},
    }


def _connection(entry: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    extra = entry.get("conn_extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    conn: dict[str, Any] = {
        "conn_type": entry.get("conn_type"),
        "host": entry.get("conn_host"),
        "port": entry.get("conn_port"),
        "login": entry.get("conn_login"),
        "password": entry.get("conn_password"),
        "schema": entry.get("conn_schema"),
        "extra": dict(extra),
    }
    for key, value in override.items():
        if key == "extra":
            conn["extra"].update(value)
        else:
            conn[key] = value
    return {k: v for k, v in conn.items() if v not in (None, "", {})}


def airflow_env(ports: Ports, path: Path = SETTINGS_FILE) -> dict[str, str]:
    """AIRFLOW_CONN_* and AIRFLOW_VAR_* variables for the local stack."""
    settings = read_settings(path)
    overrides = local_overrides(ports)
    env: dict[str, str] = {}
    for entry in settings.get("connections") or []:
        conn_id = entry["conn_id"]
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(_connection(entry, overrides.get(conn_id, {})))
    for var in settings.get("variables") or []:
        env[f"AIRFLOW_VAR_{var['variable_name'].upper()}"] = str(var["variable_value"])
    return env
