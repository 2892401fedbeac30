"""The MWAA bundle: the DAGs folder MWAA parses and the startup script it runs (no AWS needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from infra import naming
from mwaa import bundle, requirements

OUTPUTS = {
    naming.RAW_BUCKET_OUTPUT: "etl-raw-1-eu-west-1",
    naming.PROCESSED_BUCKET_OUTPUT: "etl-processed-1-eu-west-1",
    naming.DATA_KEY_OUTPUT: "arn:aws:kms:eu-west-1:1:key/k",
    naming.ALERT_EMAILS_OUTPUT: "a@example.com,b@example.com",
    naming.queue_url_output("orders"): "https://sqs.eu-west-1.amazonaws.com/1/etl-orders-events",
    naming.queue_url_output("customers"): "https://sqs.eu-west-1.amazonaws.com/1/etl-customers-events",
}


def test_the_dag_processor_finds_the_dags_and_skips_include(tmp_path: Path) -> None:
    """As MWAA lays the bucket's dags/ out: DAG files at the top, include/ beside them, our .airflowignore."""
    from airflow.utils.file import find_dag_file_paths

    for path, key in bundle.files():
        if key.startswith("dags/"):
            target = tmp_path / key.removeprefix("dags/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    found = {Path(p).relative_to(tmp_path).as_posix() for p in find_dag_file_paths(tmp_path, safe_mode=False)}
    assert found == {p.name for p in (bundle.ROOT / "dags").glob("*.py")}
    assert (tmp_path / requirements.CONSTRAINTS_ON_MWAA.rsplit("/", 1)[1]).exists()


def test_startup_script_exports_each_dataset_and_pins_the_dbt_venv(tmp_path: Path) -> None:
    script = tmp_path / "startup.sh"
    script.write_text(bundle.render_startup(bundle.settings(OUTPUTS, ["customers", "orders"])))
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert (
        "export AIRFLOW_VAR_CUSTOMERS_EVENTS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/1/etl-customers-events"
        in text
    )
    assert "export AIRFLOW_VAR_ORDERS_ALERT_EMAILS=a@example.com,b@example.com" in text
    for pin in requirements.read_pins(bundle.ROOT / "requirements-dbt.in"):
        assert f"\n{pin.requirement}\n" in text
    assert "@DBT_REQUIREMENTS@" not in text and "# @SETTINGS@" not in text


def test_a_dataset_the_stack_does_not_know_stops_the_bundle() -> None:
    outputs = {k: v for k, v in OUTPUTS.items() if k != naming.queue_url_output("customers")}
    with pytest.raises(SystemExit, match="EventsQueueUrlCustomers"):
        bundle.settings(outputs, ["customers", "orders"])
