"""dbt's versions are chosen once (requirements-dbt.in) and locked per target: the universal lock that `make
dbt-venv` and the Dockerfile install has those pins and installs from wheels on the Astro image's Python 3.14
(amd64 and arm64); MWAA's lock is checked in tests/infra/test_mwaa_requirements.py."""

from __future__ import annotations

import re

import pytest

from local_stack.config import PROJECT_ROOT
from mwaa import requirements as mwaa_req
from tests.infra.test_mwaa_requirements import uv_compile

PINS = PROJECT_ROOT / "requirements-dbt.in"
LOCK = PROJECT_ROOT / "requirements-dbt.lock"


def test_every_dbt_lock_holds_the_pins_of_requirements_dbt_in() -> None:
    wanted = mwaa_req.read_pins(PINS)
    assert {p.name for p in wanted} == {"dbt-core", "dbt-core-experimental-parser", "dbt-postgres"}
    for lock in (LOCK, PROJECT_ROOT / "mwaa" / "requirements-dbt.txt"):
        text = lock.read_text()
        for pin in wanted:
            assert re.search(rf"^{pin.name}=={re.escape(pin.version)}\b", text, re.M), f"{lock.name}: {pin.name}"


@pytest.mark.parametrize("platform", ["x86_64-manylinux_2_36", "aarch64-manylinux_2_36"])
def test_the_lock_installs_from_wheels_on_the_astro_images_python(platform: str) -> None:
    resolved = uv_compile(
        str(LOCK), "--python-version", "3.14", "--python-platform", platform, "--only-binary", ":all:"
    )
    for pin in mwaa_req.read_pins(PINS):
        assert resolved[pin.name] == pin.version


def test_the_dockerfile_and_the_makefile_build_the_venv_from_that_lock() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "ENV DBT_VENV_PATH=/usr/local/airflow/dbt_venv" in dockerfile
    assert "-r /tmp/requirements-dbt.lock" in dockerfile and "COPY requirements-dbt.lock" in dockerfile
    assert "-r requirements-dbt.lock" in (PROJECT_ROOT / "Makefile").read_text()
    assert (
        'export DBT_VENV_PATH="${AIRFLOW_HOME:-/usr/local/airflow}/dbt_venv"'
        in (PROJECT_ROOT / "mwaa" / "startup.sh").read_text()
    )
