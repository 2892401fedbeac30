"""The Astro path (`astro dev start`, `astro deploy`) says what it does: one runtime tag, the compose override the
README describes, connections and variables that point at its services. Docker is not needed to check these;
building the image is (docs/deploy-aws.md lists what only `astro dev start` can show). The Python 3.14 wheels
of our pins are checked in test_mwaa_requirements.py."""

from __future__ import annotations

import re

import yaml

from local_stack.config import PROJECT_ROOT

# The page the README links for Astro (line breaks do not matter).
README = " ".join((PROJECT_ROOT / "docs" / "configuration.md").read_text().split())
COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.override.yml").read_text())
SETTINGS = yaml.safe_load((PROJECT_ROOT / "airflow_settings.yaml").read_text())["airflow"]


def test_runtime_tag_is_the_one_the_readme_and_dev_pins_describe() -> None:
    (tag,) = re.findall(
        r"^FROM astrocrpublic\.azurecr\.io/runtime:(\S+)$", (PROJECT_ROOT / "Dockerfile").read_text(), re.M
    )
    assert f"Astro Runtime `{tag}`, which ships Airflow 3.3.2" in README
    assert "apache-airflow==3.3.2" in (PROJECT_ROOT / "requirements-dev.txt").read_text().splitlines()


def test_compose_override_publishes_the_ports_the_readme_names() -> None:
    published = {
        name: {p.split(":")[1] for p in service.get("ports", [])} for name, service in COMPOSE["services"].items()
    }
    assert published["minio"] == {"9000", "9001"}
    assert published["warehouse"] == {"5433"}
    assert published["mailpit"] == {"8025"}
    assert "S3 API on :9000, console on :9001" in README
    assert "host port 5433" in README and "<http://localhost:8025>" in README
    for service in COMPOSE["services"].values():  # loopback only: nothing of the stack is on the LAN
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))


def test_connections_and_variables_point_at_the_compose_services() -> None:
    services = set(COMPOSE["services"])
    hosts = {c["conn_id"]: c.get("conn_host") or c["conn_extra"].get("endpoint_url") for c in SETTINGS["connections"]}
    assert hosts["aws_default"] == "http://minio:9000"
    assert hosts["warehouse"] in services and hosts["smtp_default"] in services
    buckets = re.search(r"mc mb --ignore-existing (.+?)\"", COMPOSE["services"]["create-buckets"]["entrypoint"], re.S)
    created = {b.removeprefix("local/") for b in buckets.group(1).split()}
    variables = {v["variable_name"]: v["variable_value"] for v in SETTINGS["variables"]}
    assert {v for k, v in variables.items() if k.endswith("_bucket")} <= created
