"""Fixtures of the infrastructure tests: the synthesized template, the infra venv's tools, a moto server.

The CDK, cfn-lint and checkov live in .venv-infra (their pins conflict with Airflow's; `make test` builds it), so
the tests run them as commands. Nothing here talks to AWS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local_stack.config import PROJECT_ROOT

INFRA_BIN = PROJECT_ROOT / ".venv-infra" / "bin"


def infra_tool(name: str) -> str:
    path = INFRA_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make infra-venv` (make test builds it)")
    return str(path)


def synthesize(out: Path, datasets: list[str] | None = None) -> dict[str, Any]:
    cmd = [infra_tool("python"), "-m", "infra.app", "--out", str(out)]
    if datasets:
        cmd += ["--datasets", ",".join(datasets)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "EtlStack.template.json").read_text())


@pytest.fixture(scope="session")
def template_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template synthesized from today's contracts (include/contracts/*.yml)."""
    out = tmp_path_factory.mktemp("cdk-out")
    synthesize(out)
    return out / "EtlStack.template.json"


@pytest.fixture(scope="session")
def template(template_path: Path) -> dict[str, Any]:
    return json.loads(template_path.read_text())


@pytest.fixture(scope="session")
def two_dataset_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template for two datasets: the dataset list is an input, not a constant."""
    return synthesize(tmp_path_factory.mktemp("cdk-out-2"), ["orders", "customers"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server over HTTP on a free loopback port (all services), stopped by its PID."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def aws_client(moto_server: str) -> Callable[[str], Any]:
    import boto3

    def make(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=moto_server,
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # pragma: allowlist secret (moto accepts any key)
        )

    return make
