"""Synthesize the stack's CloudFormation template: `python -m infra.app` (or `make infra-synth`).

The datasets are the contracts in include/contracts/*.yml unless the CDK context `datasets` names them
(`-c datasets=orders,customers` with the cdk CLI, or `--datasets` here). The template is written to
infra/cdk.out/<stack name>.template.json and has no assets, so it deploys with plain
`aws cloudformation deploy` (no `cdk bootstrap`, no CDK CLI).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import aws_cdk as cdk

from infra import naming
from infra.stack import EtlStack

OUT = Path(__file__).resolve().parent / "cdk.out"
STACK_NAME = "orders-etl"


def build(datasets: list[str], outdir: Path = OUT, openlineage_transport: dict | None = None) -> Path:
    """Synthesize; returns the template's path."""
    app = cdk.App(outdir=str(outdir), analytics_reporting=False)
    stack = EtlStack(
        app,
        "EtlStack",
        stack_name=STACK_NAME,
        datasets=datasets,
        openlineage_transport=openlineage_transport,
        # No assets and no bootstrap stack: the template stands alone.
        synthesizer=cdk.BootstraplessSynthesizer(),
    )
    app.synth()
    return outdir / f"{stack.artifact_id}.template.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", help="comma-separated; default: include/contracts/*.yml")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--openlineage-transport", help="JSON of the OpenLineage provider's transport (optional)")
    args = parser.parse_args(argv)
    datasets = args.datasets.split(",") if args.datasets else naming.datasets()
    transport = json.loads(args.openlineage_transport) if args.openlineage_transport else None
    path = build(datasets, args.out, transport)
    print(f"{path} ({', '.join(datasets)})")


if __name__ == "__main__":
    main()
