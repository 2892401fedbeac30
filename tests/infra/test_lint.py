"""cfn-lint and checkov pass on the synthesized template, offline; every skipped checkov check says why."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.infra.conftest import infra_tool


def test_cfn_lint_passes(template_path: Path) -> None:
    proc = subprocess.run(
        [infra_tool("cfn-lint"), "--format", "parseable", str(template_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def checkov(template_path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [
            infra_tool("checkov"),
            "--skip-download",
            "--framework",
            "cloudformation",
            "-f",
            str(template_path),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.stdout, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    report["returncode"] = proc.returncode
    return report


def test_checkov_passes_with_every_skip_justified_and_used(template_path: Path, template: dict[str, Any]) -> None:
    report = checkov(template_path)
    results = report["results"]
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in results["failed_checks"]]
    assert failed == []
    assert report["returncode"] == 0
    assert len(results["passed_checks"]) >= 60  # checkov really looked (buckets, queues, RDS, IAM, KMS...)

    declared = {
        (f"{r['Type']}.{logical_id}", skip["id"]): skip["comment"]
        for logical_id, r in template["Resources"].items()
        for skip in r.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }
    assert declared, "no skipped check at all? then drop this assertion"
    for (resource, check), comment in declared.items():
        assert len(comment) > 20, f"{resource} skips {check} without a reason"
    skipped = {(c["resource"], c["check_id"]) for c in results["skipped_checks"]}
    # A skip for a check that does not fire hides nothing and misleads readers: there is none.
    assert skipped == set(declared)
