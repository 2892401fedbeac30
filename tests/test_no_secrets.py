"""No secret in git: detect-secrets scans every tracked file.

Throwaway local credentials carry an inline `pragma: allowlist secret` comment; anything
else that looks like a key, token or password fails the build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from local_stack.config import PROJECT_ROOT


def test_no_secrets_in_tracked_files() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    files = [f for f in files if f and (PROJECT_ROOT / f).is_file()]
    assert "airflow_settings.yaml" in files
    scan = subprocess.run(
        [str(Path(sys.executable).parent / "detect-secrets"), "scan", *files],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    findings = {
        f"{path}:{item['line_number']} {item['type']}"
        for path, items in json.loads(scan.stdout)["results"].items()
        for item in items
    }
    assert findings == set()


def test_the_scan_finds_a_planted_secret(tmp_path) -> None:
    planted = tmp_path / "config.py"
    key, password = "AKIAZ3QX7PLM2R4TB6KD", "s3cr3t-Pa55w0rd-9f8e"  # pragma: allowlist secret
    planted.write_text(f'AWS_ACCESS_KEY_ID = "{key}"\npassword = "{password}"\n')
    scan = subprocess.run(
        [str(Path(sys.executable).parent / "detect-secrets"), "scan", planted.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    types = {item["type"] for item in json.loads(scan.stdout)["results"][planted.name]}
    assert types == {"AWS Access Key", "Secret Keyword"}
