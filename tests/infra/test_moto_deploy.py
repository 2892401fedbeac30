"""Deploy the synthesized template into moto's server (over HTTP) and run the pipeline against what it created.

moto's CloudFormation creates the buckets (with their default encryption), the queues (with their redrive policy
and KMS key), the KMS key, the VPC, subnets, NAT gateway, security groups, flow log and the execution role. It
ignores, on buckets, versioning, access logging, notifications, public-access blocks, lifecycle rules, bucket
policies and ownership controls, and it has no CloudFormation support for MWAA environments, Secrets Manager
secrets or SES identities (it skips them). `moto_template` adapts the template where moto falls short (each reason
in MOTO_GAPS); the tests then apply the ignored properties the pipeline depends on (notifications, versioning)
from the template itself, and build the connection secrets exactly as CloudFormation and the RDS attachment would.
What remains can only be checked in a real account: see docs/deploy-aws.md.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra import naming
from mwaa import bundle

STACK = "etl-test"
PARAMETERS = {"EnvironmentName": STACK, "AlertEmails": "data-team@example.com", "SenderEmail": "etl@example.com"}
# Template parts moto cannot deploy, and why; removed with everything that refers to them.
MOTO_GAPS = {
    "AWS::MWAA::Environment": "moto has no MWAA; the output reading its WebserverUrl would fail describe_stacks",
    "AWS::RDS::DBParameterGroup": "moto resolves a Ref to a parameter group to an object, not its name, and the "
    "DB instance then fails; RDS is checked on the template (test_template.py) only",
}


def _refs(value: Any) -> set[str]:
    text = json.dumps(value)
    found = re.findall(r'"Ref": "(\w+)"', text) + re.findall(r'"Fn::GetAtt": \["(\w+)"', text)
    return set(found) | set(re.findall(r"\$\{(\w+)[}.]", text))


def moto_template(template: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The template as moto can deploy it, and the logical ids left out."""
    cidr = ipaddress.ip_network(template["Parameters"]["VpcCidr"]["Default"])

    def expand_cidr(value: Any) -> Any:  # moto does not implement Fn::Cidr; expand it as CloudFormation does
        if isinstance(value, dict):
            if "Fn::Cidr" in value:
                _, count, bits = value["Fn::Cidr"]
                return [str(s) for s in list(cidr.subnets(new_prefix=32 - int(bits)))[: int(count)]]
            return {k: expand_cidr(v) for k, v in value.items()}
        if isinstance(value, list):
            return [expand_cidr(v) for v in value]
        return value

    out = expand_cidr(template)
    removed = {k for k, r in out["Resources"].items() if r["Type"] in MOTO_GAPS}
    grew = True
    while grew:
        grew = False
        for k, r in out["Resources"].items():
            if k not in removed and (_refs(r) | set(r.get("DependsOn", []))) & removed:
                removed.add(k)
                grew = True
    out["Resources"] = {k: r for k, r in out["Resources"].items() if k not in removed}
    out["Outputs"] = {k: o for k, o in out["Outputs"].items() if not _refs(o) & removed}
    return out, removed


@pytest.fixture(scope="module")
def deployed(template: dict[str, Any], aws_client: Callable[[str], Any]) -> dict[str, str]:
    """The stack's outputs after CREATE_COMPLETE in moto."""
    body, removed = moto_template(template)
    assert removed == {"MwaaEnvironment", "DatabaseParameterGroup", "Database", "WarehouseConnectionSecretAttachment"}
    cf = aws_client("cloudformation")
    cf.create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in PARAMETERS.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    deadline = time.monotonic() + 60
    while (stack := cf.describe_stacks(StackName=STACK)["Stacks"][0])["StackStatus"].endswith("IN_PROGRESS"):
        assert time.monotonic() < deadline, "stack creation did not finish"
        time.sleep(0.5)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return bundle.stack_outputs(cf, STACK)


def apply_ignored_bucket_properties(template: dict[str, Any], logical_id: str, outputs, aws_client) -> str:
    """Versioning and notifications as the template declares them (moto's CloudFormation ignores both)."""
    s3, sqs = aws_client("s3"), aws_client("sqs")
    bucket = outputs[f"{logical_id}Name"]
    props = template["Resources"][logical_id]["Properties"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=props["VersioningConfiguration"])
    queues = []
    for n in props.get("NotificationConfiguration", {}).get("QueueConfigurations", []):
        # EventsQueue<Dataset> is output as EventsQueueUrl<Dataset>.
        url = outputs[n["Queue"]["Fn::GetAtt"][0].replace("EventsQueue", "EventsQueueUrl", 1)]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queues.append(
            {
                "QueueArn": arn,
                "Events": [n["Event"]],
                "Filter": {"Key": {"FilterRules": n["Filter"]["S3Key"]["Rules"]}},
            }
        )
    if queues:
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queues}
        )
    return bucket


def test_stack_creates_the_buckets_queues_and_role(deployed, aws_client) -> None:
    s3, sqs, iam = aws_client("s3"), aws_client("sqs"), aws_client("iam")
    key_arn = deployed[naming.DATA_KEY_OUTPUT]
    for output in (naming.RAW_BUCKET_OUTPUT, naming.PROCESSED_BUCKET_OUTPUT, naming.ENVIRONMENT_BUCKET_OUTPUT):
        bucket = deployed[output]
        assert bucket.startswith(f"{STACK}-") and bucket.endswith("-123456789012-eu-west-1")
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    for ds in naming.datasets():
        url = deployed[naming.queue_url_output(ds)]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        dlq = deployed[f"EventsDeadLetterQueueUrl{naming.camel(ds)}"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert json.loads(attrs["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
        assert attrs["KmsMasterKeyId"] == key_arn
    role = iam.get_role(RoleName=f"{STACK}-mwaa-execution")["Role"]
    assert role["Arn"] == deployed["ExecutionRoleArn"]
    assert iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"] == ["pipeline"]


def test_an_uploaded_csv_notifies_its_dataset_queue_and_transforms_into_the_processed_bucket(
    template, deployed, aws_client, contract
) -> None:
    """The event path and the transform, against the stack's own buckets, queue and KMS key."""
    from include.etl.contract.transform import transform_file
    from include.etl.reading import storage
    from include.etl.running.events import keys_from_message_body, partitions_of
    from include.etl.settings import DatasetSettings

    s3, sqs = aws_client("s3"), aws_client("sqs")
    raw = apply_ignored_bucket_properties(template, "RawBucket", deployed, aws_client)
    processed = deployed[naming.PROCESSED_BUCKET_OUTPUT]
    queue = deployed[naming.queue_url_output("orders")]
    csv = (
        "order_id,order_ts,customer_id,product_name,category,quantity,unit_price,region\n"
        "1001,2026-11-24 10:00:00,C1,Widget,Tools,2,9.99,North\n"
        "1002,2026-11-24 11:00:00,C2,Gadget,Toys,-1,5.00,South\n"
    )
    s3.put_object(Bucket=raw, Key="raw/orders/dt=2026-11-24/orders_1.csv.gz", Body=gzip.compress(csv.encode()))
    s3.put_object(Bucket=raw, Key="raw/unknown_dataset/dt=2026-11-24/x.csv", Body=b"a\n1\n")  # no queue's prefix

    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=5).get("Messages", [])
    keys = [k for m in messages for k in keys_from_message_body(m["Body"])]
    assert keys == ["raw/orders/dt=2026-11-24/orders_1.csv.gz"]
    assert partitions_of(keys, "raw/orders") == {"2026-11-24"}
    for m in messages:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])

    settings = DatasetSettings(
        dataset="orders",
        raw_bucket=raw,
        processed_bucket=processed,
        s3_sse="aws:kms",
        s3_sse_kms_key_id=deployed[naming.DATA_KEY_OUTPUT],
    )
    objects, _ = storage.list_partition(s3, raw, storage.partition_prefix(settings.raw_prefix, "2026-11-24"))
    (obj,) = objects
    result = transform_file(s3, obj, contract, settings).to_dict()
    assert (result["rows_read"], result["rows_clean"], result["rows_rejected"]) == (2, 1, 1)
    for key in (result["processed_key"], result["rejected_key"]):
        head = s3.head_object(Bucket=processed, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == deployed[naming.DATA_KEY_OUTPUT]


def test_bundle_uploads_the_dags_folder_and_a_startup_script_with_the_stack_settings(
    template, deployed, aws_client, tmp_path: Path
) -> None:
    s3 = aws_client("s3")
    bucket = apply_ignored_bucket_properties(template, "EnvironmentBucket", deployed, aws_client)
    startup = tmp_path / "startup.sh"
    startup.write_text(bundle.render_startup(bundle.settings(deployed, naming.datasets())))

    versions = bundle.upload(s3, bucket, startup)
    assert versions["requirements.txt"] and versions["startup.sh"]  # the versions the stack update names
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {
        "dags/pipelines.py",
        "dags/include/etl/running/dag_factory.py",
        "dags/include/contracts/customers.yml",
        "dags/include/contracts/orders.yml",
        "dags/.airflowignore",
        "dags/constraints-mwaa.txt",
        "requirements.txt",
        "startup.sh",
    } <= keys
    assert not [k for k in keys if "__pycache__" in k]
    requirements = s3.get_object(Bucket=bucket, Key="requirements.txt")["Body"].read().decode()
    assert '--constraint "/usr/local/airflow/dags/constraints-mwaa.txt"' in requirements

    # What the Airflow processes see once MWAA has run the script (the web server skips the dbt venv).
    env = subprocess.run(
        ["bash", "-c", f"source {startup} >/dev/null && env"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"], "MWAA_AIRFLOW_COMPONENT": "webserver", "AIRFLOW_HOME": str(tmp_path)},
    ).stdout
    seen = dict(line.split("=", 1) for line in env.splitlines() if line.startswith("AIRFLOW_VAR_"))
    assert seen["AIRFLOW_VAR_ORDERS_EVENTS_QUEUE_URL"] == deployed[naming.queue_url_output("orders")]
    assert seen["AIRFLOW_VAR_ORDERS_RAW_BUCKET"] == deployed[naming.RAW_BUCKET_OUTPUT]
    assert seen["AIRFLOW_VAR_ORDERS_PROCESSED_BUCKET"] == deployed[naming.PROCESSED_BUCKET_OUTPUT]
    assert seen["AIRFLOW_VAR_ORDERS_S3_SSE"] == "aws:kms"
    assert seen["AIRFLOW_VAR_ORDERS_S3_SSE_KMS_KEY_ID"] == deployed[naming.DATA_KEY_OUTPUT]
    assert seen["AIRFLOW_VAR_ORDERS_ALERT_EMAILS"] == "data-team@example.com"


def test_secrets_backend_reads_the_connections_the_stack_defines(template, moto_server, aws_client) -> None:
    """The secrets as CloudFormation makes them (moto skips AWS::SecretsManager::Secret), read by Airflow's
    SecretsManagerBackend as MWAA configures it."""
    from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend

    sm = aws_client("secretsmanager")
    res = template["Resources"]
    warehouse = json.loads(
        res["WarehouseConnectionSecret"]["Properties"]["GenerateSecretString"]["SecretStringTemplate"]
    )
    warehouse["password"] = "generated-by-secrets-manager"  # pragma: allowlist secret
    # What AWS::SecretsManager::SecretTargetAttachment adds for an RDS instance.
    warehouse |= {"engine": "postgres", "host": "db.example.internal", "port": 5432, "dbInstanceIdentifier": "db"}
    region = "eu-west-1"
    rendered = {
        name: json.loads(res[logical]["Properties"]["SecretString"]["Fn::Sub"])
        for name, logical in (("aws_default", "AwsDefaultConnectionSecret"), ("smtp_default", "SmtpConnectionSecret"))
    }
    rendered["aws_default"]["extra"]["region_name"] = region
    rendered["smtp_default"]["host"] = f"email-smtp.{region}.amazonaws.com"
    rendered["smtp_default"]["extra"]["from_email"] = PARAMETERS["SenderEmail"]
    for name, value in (("warehouse", warehouse), *rendered.items()):
        sm.create_secret(Name=f"airflow/connections/{name}", SecretString=json.dumps(value))

    backend = SecretsManagerBackend(
        connections_prefix="airflow/connections",
        variables_prefix="airflow/variables",
        endpoint_url=moto_server,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # pragma: allowlist secret (moto accepts any key)
    )
    conn = backend.get_connection("warehouse")
    assert (conn.conn_type, conn.host, conn.port, conn.schema, conn.login) == (
        "postgres",
        "db.example.internal",
        5432,
        "warehouse",
        "etl_admin",
    )
    assert conn.extra_dejson == {"sslmode": "require"}
    aws = backend.get_connection("aws_default")
    assert aws.conn_type == "aws" and aws.login is None and aws.password is None
    assert aws.extra_dejson["region_name"] == region
    smtp = backend.get_connection("smtp_default")
    assert (smtp.conn_type, smtp.host, smtp.port) == ("smtp", "email-smtp.eu-west-1.amazonaws.com", 587)
    assert smtp.extra_dejson["from_email"] == "etl@example.com"
