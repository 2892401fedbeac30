"""The deploy requirements install where users deploy: MWAA 3.3.1 (Python 3.12) and Astro Runtime (Python 3.14).

These resolve with uv against PyPI's metadata (as `make lock` does); no AWS account, Docker or Python 3.12/3.14
interpreter is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mwaa import requirements as mwaa_req

ROOT = mwaa_req.ROOT
UV = Path(sys.executable).parent / "uv"


def find_python(version: str) -> str | None:
    """A working interpreter of that version: on PATH, or one of pyenv's (whose shims answer only when selected)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python{version}"), *sorted(map(str, pyenv.glob(f"{version}.*/bin/python{version}")))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def uv_compile(*args: str) -> dict[str, str]:
    proc = subprocess.run(
        [str(UV), "pip", "compile", *args, "--no-header", "--no-annotate"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            out[canonicalize_name(name.split("[")[0])] = version.split(";")[0].strip()
    return out


def test_generated_mwaa_files_are_up_to_date() -> None:
    """mwaa/requirements.txt and mwaa/constraints.txt are what the generator makes from today's pins."""
    for path, text in mwaa_req.generate().items():
        assert path.read_text() == text, f"{path.name} is stale: run `.venv/bin/python -m mwaa.requirements`"


def test_mwaa_requirements_resolve_with_mwaa_constraints_to_our_pins() -> None:
    """As MWAA installs them (our constraints file + MWAA's essential ones), every pin wins and Airflow stays 3.3.1."""
    resolved = mwaa_req.resolve()
    assert resolved["apache-airflow"] == mwaa_req.AIRFLOW_VERSION
    for pin in mwaa_req.deploy_pins():
        if pin.applies():
            assert resolved.get(pin.name) == pin.version, pin.name
    essential = mwaa_req.read_constraints(mwaa_req.ESSENTIAL_CONSTRAINTS)
    for name, version in essential.items():
        if name in resolved:
            assert resolved[name] == version, f"{name} differs from MWAA's essential pin"


def test_every_deploy_pin_reaches_mwaa_unchanged() -> None:
    """No drift: each version requirements.txt (and the Astro-shipped providers) pins is in the MWAA file."""
    mwaa_lines = [
        Requirement(line)
        for line in mwaa_req.REQUIREMENTS_OUT.read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    ]
    mwaa_pins = {canonicalize_name(r.name): str(r) for r in mwaa_lines}
    runtime = mwaa_req.read_pins(ROOT / "requirements.txt")
    assert runtime, "requirements.txt pins nothing?"
    for pin in mwaa_req.deploy_pins():
        assert mwaa_pins[pin.name] == str(pin.requirement)
    assert mwaa_req.REQUIREMENTS_OUT.read_text().count(f'--constraint "{mwaa_req.CONSTRAINTS_ON_MWAA}"') == 1


def test_constraints_differ_from_airflow_only_in_marked_lines_and_never_in_essentials() -> None:
    upstream = mwaa_req.read_constraints(mwaa_req.UPSTREAM_CONSTRAINTS)
    ours = mwaa_req.read_constraints(mwaa_req.CONSTRAINTS_OUT)
    essential = mwaa_req.read_constraints(mwaa_req.ESSENTIAL_CONSTRAINTS)
    changed = {name for name in ours if upstream.get(name) != ours[name]}
    marked = {
        canonicalize_name(line.split("==", 1)[0])
        for line in mwaa_req.CONSTRAINTS_OUT.read_text().splitlines()
        if "==" in line and not line.startswith("#") and "  # " in line
    }
    assert changed == marked
    assert set(upstream) <= set(ours)
    assert not changed & set(essential)
    # amazon 9.39.0 needs common-compat >= 1.23.0: a dependency is overridden too, at the tested version.
    assert ours["apache-airflow-providers-common-compat"] == "1.23.0"


def test_a_pin_that_fights_an_essential_constraint_is_refused() -> None:
    upstream = mwaa_req.read_constraints(mwaa_req.UPSTREAM_CONSTRAINTS)
    essential = mwaa_req.read_constraints(mwaa_req.ESSENTIAL_CONSTRAINTS)
    pin = mwaa_req.Pin(Requirement("SQLAlchemy==2.0.40"), "requirements.txt")
    with pytest.raises(mwaa_req.ConstraintError, match="MWAA fixes"):
        mwaa_req.compute_overrides([pin], upstream, essential)


def test_mwaa_files_that_do_not_resolve_fail_the_check(tmp_path: Path) -> None:
    """The resolve check can fail: pyarrow pinned outside Airflow's constraints, without the override."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f'--constraint "{mwaa_req.CONSTRAINTS_ON_MWAA}"\npyarrow==26.0.1\n')
    with pytest.raises(mwaa_req.ConstraintError, match="pyarrow"):
        mwaa_req.resolve(requirements, mwaa_req.UPSTREAM_CONSTRAINTS)


@pytest.mark.parametrize("platform", ["x86_64-manylinux_2_36", "aarch64-manylinux_2_36"])
def test_astro_image_gets_the_tested_versions_as_wheels_for_python_3_14(tmp_path: Path, platform: str) -> None:
    """Astro Runtime 3.3 runs Python 3.14: requirements.txt on top of the image's Airflow 3.3.2 and providers
    resolves to exactly our pins, from wheels only (no compiler in the image), on amd64 and arm64."""
    image = tmp_path / "astro.txt"
    shipped = [p for p in mwaa_req.deploy_pins() if p.source == "requirements-dev.txt"]
    image.write_text(
        f"-r {ROOT / 'requirements.txt'}\napache-airflow==3.3.2\n" + "".join(f"{p.requirement}\n" for p in shipped)
    )
    resolved = uv_compile(
        str(image), "--python-version", "3.14", "--python-platform", platform, "--only-binary", ":all:"
    )
    assert resolved["apache-airflow"] == "3.3.2"
    for pin in mwaa_req.deploy_pins():
        marker = pin.requirement.marker
        env = {"sys_platform": "linux", "platform_machine": platform.split("-")[0], "python_version": "3.14"}
        if marker is None or marker.evaluate(env):
            assert resolved.get(pin.name) == pin.version, pin.name
        else:
            assert pin.name not in resolved


def test_dbt_virtualenv_lock_matches_its_pins_and_installs_from_wheels_on_mwaa() -> None:
    """The dbt venv the startup script builds: locked, the pins of requirements-dbt.in, wheels for Python 3.12."""
    wanted = mwaa_req.read_pins(ROOT / "requirements-dbt.in")
    locked = mwaa_req.read_constraints(ROOT / "mwaa" / "requirements-dbt.txt")
    for pin in wanted:
        assert locked[pin.name] == pin.version
    resolved = uv_compile(
        "mwaa/requirements-dbt.txt",
        "--python-version",
        "3.12",
        "--python-platform",
        "x86_64-manylinux_2_34",
        "--only-binary",
        ":all:",
    )
    assert resolved == locked


def test_dags_import_on_mwaa_versions_under_python_3_12(tmp_path: Path) -> None:
    """Install what MWAA installs (Airflow 3.3.1 + mwaa/requirements.txt, its constraints and MWAA's essential
    ones) into a Python 3.12 venv and parse the DAGs there, event-driven schedule included."""
    python312 = find_python("3.12")
    if python312 is None:
        pytest.skip("no Python 3.12 interpreter (e.g. pyenv install 3.12) to build MWAA's environment")
    venv = tmp_path / "mwaa-venv"
    subprocess.run([python312, "-m", "venv", "--without-pip", str(venv)], check=True)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        mwaa_req.REQUIREMENTS_OUT.read_text().replace(mwaa_req.CONSTRAINTS_ON_MWAA, str(mwaa_req.CONSTRAINTS_OUT))
    )
    install = [str(UV), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r", str(requirements)]
    install += ["-c", str(mwaa_req.ESSENTIAL_CONSTRAINTS), f"apache-airflow=={mwaa_req.AIRFLOW_VERSION}"]
    proc = subprocess.run(install, capture_output=True, text=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = (
        "import sys, airflow\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder='dags')\n"
        "print(sys.version_info[:2], airflow.__version__, bag.import_errors, sorted(bag.dags),\n"
        "      {d: type(bag.dags[d].timetable).__name__ for d in bag.dags})\n"
    )
    queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-etl-orders-events"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        # No metadata DB here: Cosmos must not look for its `dbt ls` cache in Airflow Variables (marts DAG).
        "AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS": "False",
        # The engine's event switch, under today's and the multi-dataset convention's names.
        "ORDERS_EVENTS_QUEUE_URL": queue,
        "AIRFLOW_VAR_ORDERS_EVENTS_QUEUE_URL": queue,
    }
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith(f"(3, 12) {mwaa_req.AIRFLOW_VERSION} {{}} "), line
    assert "'orders_pipeline'" in line and "AssetOrTimeSchedule" in line, line
