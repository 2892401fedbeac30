"""Put the pipeline into the MWAA environment's bucket: `python -m mwaa.bundle --stack orders-etl --upload`.

MWAA runs what its source bucket holds, so deploying code means uploading it there:

    dags/*.py              -> s3://<environment bucket>/dags/
    dags/dbt/              -> s3://<environment bucket>/dags/dbt/      (the marts' dbt project, run by Cosmos)
    include/               -> s3://<environment bucket>/dags/include/   (MWAA puts the DAGs folder on sys.path,
                                                                        so the DAGs import `include.etl` as here)
    mwaa/airflowignore     -> dags/.airflowignore                      (the DAG processor skips include/)
    mwaa/constraints.txt   -> dags/constraints-mwaa.txt                (named by mwaa/requirements.txt)
    mwaa/requirements.txt  -> requirements.txt
    startup.sh (rendered)  -> startup.sh

The startup script is rendered here from mwaa/startup.sh: the per-dataset Airflow Variables come from the stack's
outputs (bucket names, each dataset's queue URL, the KMS key, the alert emails), because the DAGs read the queue
URL at parse time from the environment only. The bucket is versioned; the printed object versions of
requirements.txt and startup.sh are the parameters of the next `aws cloudformation deploy`, which (re)starts
the environment with them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from infra import naming

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STARTUP_TEMPLATE = HERE / "startup.sh"
DBT_LOCK = HERE / "requirements-dbt.txt"
BUILD = HERE / "build"
SKIP_PARTS = {"__pycache__", ".pytest_cache"}


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def settings(outputs: dict[str, str], datasets: list[str]) -> dict[str, str]:
    """Environment variables (AIRFLOW_VAR_<DATASET>_<SETTING>) for each dataset, from the stack's outputs."""
    missing = [naming.queue_url_output(ds) for ds in datasets if naming.queue_url_output(ds) not in outputs]
    if missing:
        raise SystemExit(f"the stack has no {', '.join(missing)}: deploy it again after adding a contract")
    env = {}
    for ds in datasets:
        values = {
            "raw_bucket": outputs[naming.RAW_BUCKET_OUTPUT],
            "processed_bucket": outputs[naming.PROCESSED_BUCKET_OUTPUT],
            "events_queue_url": outputs[naming.queue_url_output(ds)],
            "s3_sse": "aws:kms",
            "s3_sse_kms_key_id": outputs[naming.DATA_KEY_OUTPUT],
            "alert_emails": outputs[naming.ALERT_EMAILS_OUTPUT],
        }
        env.update({naming.airflow_var(ds, k): v for k, v in values.items()})
    return env


def render_startup(env: dict[str, str]) -> str:
    exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items())
    dbt = "\n".join(line for line in DBT_LOCK.read_text().splitlines() if line and not line.lstrip().startswith("#"))
    text = STARTUP_TEMPLATE.read_text()
    return text.replace("# @SETTINGS@", exports).replace("@DBT_REQUIREMENTS@", dbt)


def files(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(local file, key in the environment bucket) for the DAGs folder and the constraints file."""
    out = [(p, f"dags/{p.name}") for p in sorted((root / "dags").glob("*.py"))]
    for p in sorted((root / "dags" / "dbt").rglob("*")):  # the dbt project of the marts DAG, without dbt's output
        parts = set(p.relative_to(root / "dags" / "dbt").parts)
        if p.is_file() and p.name != ".user.yml" and not {"target", "logs", "dbt_packages"} & parts:
            out.append((p, f"dags/{p.relative_to(root / 'dags').as_posix()}"))
    for p in sorted((root / "include").rglob("*")):
        if p.is_file() and not SKIP_PARTS & set(p.parts) and p.suffix != ".pyc":
            out.append((p, f"dags/{p.relative_to(root).as_posix()}"))
    out.append((HERE / "airflowignore", "dags/.airflowignore"))
    out.append((HERE / "constraints.txt", "dags/constraints-mwaa.txt"))
    out.append((HERE / "requirements.txt", "requirements.txt"))
    return out


def upload(s3: Any, bucket: str, startup: Path, root: Path = ROOT) -> dict[str, str]:
    """Upload everything; returns key -> S3 version id."""
    versions = {}
    for path, key in [*files(root), (startup, "startup.sh")]:
        with path.open("rb") as body:
            response = s3.put_object(Bucket=bucket, Key=key, Body=body)
        versions[key] = response.get("VersionId", "")
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="orders-etl", help="the CloudFormation stack name")
    parser.add_argument("--upload", action="store_true", help="upload (otherwise only render build/startup.sh)")
    args = parser.parse_args(argv)
    import boto3  # only here: the rest is testable with any client

    outputs = stack_outputs(boto3.client("cloudformation"), args.stack)
    BUILD.mkdir(exist_ok=True)
    startup = BUILD / "startup.sh"
    startup.write_text(render_startup(settings(outputs, naming.datasets())))
    print(f"rendered {startup.relative_to(ROOT)}")
    if not args.upload:
        return 0
    bucket = outputs[naming.ENVIRONMENT_BUCKET_OUTPUT]
    versions = upload(boto3.client("s3"), bucket, startup)
    print(f"uploaded {len(versions)} objects to s3://{bucket}/")
    print("next: (re)start the environment with these versions:")
    print(
        f"  aws cloudformation deploy --stack-name {args.stack} --template-file infra/cdk.out/EtlStack.template.json"
        " --capabilities CAPABILITY_NAMED_IAM --parameter-overrides CreateEnvironment=true"
        f" RequirementsS3ObjectVersion={versions['requirements.txt']}"
        f" StartupScriptS3ObjectVersion={versions['startup.sh']}"
    )
    print("  (parameters you do not name keep their previous values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
