"""What the synthesized CloudFormation template promises, asserted property by property.

Every bucket versioned, access-logged, encrypted, private and TLS-only; one queue with a DLQ per dataset fed by
the raw bucket's notifications; RDS encrypted, private and TLS-only; no wildcard in an IAM statement beyond what
the statement needs; the MWAA environment wired to the secrets backend. See infra/stack.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra import naming


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def flat(value: Any) -> str:
    """An intrinsic as readable text: Ref X -> ${X}, GetAtt X.A -> ${X.A}, Join and Sub concatenated."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "Ref" in value:
            return "${" + value["Ref"] + "}"
        if "Fn::GetAtt" in value:
            return "${" + ".".join(value["Fn::GetAtt"]) + "}"
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return sep.join(flat(p) for p in parts)
        if "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            return sub if isinstance(sub, str) else sub[0]
    return json.dumps(value)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def refers_to(value: Any, logical_id: str) -> bool:
    return value in ({"Ref": logical_id}, {"Fn::GetAtt": [logical_id, "Arn"]})


# ----------------------------------------------------------------------------------------------- S3


def test_every_bucket_is_versioned_private_owner_enforced_and_expires_old_versions(template) -> None:
    buckets = resources(template, "AWS::S3::Bucket")
    assert set(buckets) == {"AccessLogsBucket", "RawBucket", "ProcessedBucket", "EnvironmentBucket"}
    for name, bucket in buckets.items():
        p = bucket["Properties"]
        assert p.get("VersioningConfiguration") == {"Status": "Enabled"}, name
        assert p["PublicAccessBlockConfiguration"] == dict.fromkeys(
            ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True
        ), name
        assert p["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}, name
        rules = p["LifecycleConfiguration"]["Rules"]
        assert any("NoncurrentVersionExpiration" in r and r["Status"] == "Enabled" for r in rules), name
        assert any("AbortIncompleteMultipartUpload" in r for r in rules), name


def test_data_buckets_use_the_customer_key_and_log_to_the_log_bucket(template) -> None:
    for name, bucket in resources(template, "AWS::S3::Bucket").items():
        p = bucket["Properties"]
        (rule,) = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        default = rule["ServerSideEncryptionByDefault"]
        if name == "AccessLogsBucket":
            # Server access logs can only be delivered to an SSE-S3 bucket; it logs nowhere (it is the log).
            assert default == {"SSEAlgorithm": "AES256"}
            assert "LoggingConfiguration" not in p
            continue
        assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": ["DataKey", "Arn"]}}, name
        assert rule["BucketKeyEnabled"] is True
        assert p.get("LoggingConfiguration", {}).get("DestinationBucketName") == {"Ref": "AccessLogsBucket"}, name
    key = template["Resources"]["DataKey"]["Properties"]
    assert key["EnableKeyRotation"] is True


def test_every_bucket_denies_requests_without_tls(template) -> None:
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources(template, "AWS::S3::BucketPolicy").values()
    }
    assert set(policies) == set(resources(template, "AWS::S3::Bucket"))
    for bucket, statements in policies.items():
        deny = [s for s in statements if s["Effect"] == "Deny"]
        assert len(deny) == 1, bucket
        (d,) = deny
        assert d["Principal"] == "*" and d["Action"] == "s3:*"
        assert d["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert {flat(r) for r in d["Resource"]} == {f"${{{bucket}.Arn}}", f"${{{bucket}.Arn}}/*"}


def test_processed_objects_tier_down_and_rejected_ones_expire(template) -> None:
    rules = template["Resources"]["ProcessedBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    by_prefix = {r.get("Prefix"): r for r in rules}
    assert by_prefix["processed/"]["Transitions"][0]["StorageClass"] == "INTELLIGENT_TIERING"
    assert by_prefix["processed/"]["Transitions"][0]["TransitionInDays"] == {"Ref": "ProcessedTieringDays"}
    assert by_prefix["rejected/"]["ExpirationInDays"] == {"Ref": "RejectedRetentionDays"}
    assert "ExpirationInDays" not in by_prefix["processed/"]  # the processed zone is kept


# ----------------------------------------------------------------------------------------------- SQS


@pytest.mark.parametrize("fixture", ["template", "two_dataset_template"])
def test_each_dataset_has_its_queue_dlq_and_raw_prefix_notification(request, fixture) -> None:
    template = request.getfixturevalue(fixture)
    datasets = naming.datasets() if fixture == "template" else ["orders", "customers"]
    queues = resources(template, "AWS::SQS::Queue")
    config = template["Resources"]["RawBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert len(queues) == 2 * len(datasets)
    for ds in datasets:
        c = naming.camel(ds)
        queue = queues[f"EventsQueue{c}"]["Properties"]
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [f"EventsDeadLetterQueue{c}", "Arn"]},
            "maxReceiveCount": 5,
        }
        assert queue["KmsMasterKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
        mine = [n for n in config if refers_to(n["Queue"], f"EventsQueue{c}")]
        assert {n["Event"] for n in mine} == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
        for n in mine:
            assert n["Filter"] == {"S3Key": {"Rules": [{"Name": "prefix", "Value": f"raw/{ds}/"}]}}
        assert naming.queue_url_output(ds) in template["Outputs"]
    assert len(config) == 2 * len(datasets)  # no queue is shared between datasets


def test_only_the_raw_bucket_may_send_to_the_queues_and_the_bucket_waits_for_that(template) -> None:
    policies = [p for k, p in resources(template, "AWS::SQS::QueuePolicy").items() if not k.endswith("RedriveAllow")]
    assert policies
    for policy in policies:
        allow = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
        (s,) = allow
        assert s["Principal"] == {"Service": "s3.amazonaws.com"} and s["Action"] == "sqs:SendMessage"
        assert flat(s["Condition"]["ArnEquals"]["aws:SourceArn"]).startswith("arn:${AWS::Partition}:s3:::")
        assert s["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    depends = set(as_list(template["Resources"]["RawBucket"].get("DependsOn", [])))
    assert {k for k in resources(template, "AWS::SQS::QueuePolicy") if not k.endswith("RedriveAllow")} <= depends


# ----------------------------------------------------------------------------------------------- RDS


def test_database_is_encrypted_private_and_tls_only(template) -> None:
    (db,) = resources(template, "AWS::RDS::DBInstance").values()
    p = db["Properties"]
    assert p["StorageEncrypted"] is True
    assert p["KmsKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert p["PubliclyAccessible"] is False
    assert db["DeletionPolicy"] == "Snapshot"
    params = template["Resources"][p["DBParameterGroupName"]["Ref"]]["Properties"]["Parameters"]
    assert params["rds.force_ssl"] == "1"
    # The password is never in the template: CloudFormation resolves it from the generated secret.
    assert "{{resolve:secretsmanager:" in flat(p["MasterUserPassword"])
    secret = template["Resources"]["WarehouseConnectionSecret"]["Properties"]
    assert secret["GenerateSecretString"]["GenerateStringKey"] == "password"
    assert json.loads(secret["GenerateSecretString"]["SecretStringTemplate"])["extra"] == {"sslmode": "require"}


def test_database_lives_in_private_subnets_reachable_only_from_mwaa(template) -> None:
    res = template["Resources"]
    (db,) = resources(template, "AWS::RDS::DBInstance").values()
    group = res[db["Properties"]["DBSubnetGroupName"]["Ref"]]["Properties"]
    subnets = [s["Ref"] for s in group["SubnetIds"]]
    assert subnets == ["PrivateSubnet1", "PrivateSubnet2"]
    routes = resources(template, "AWS::EC2::Route").values()
    for subnet in subnets:
        assert res[subnet]["Properties"]["MapPublicIpOnLaunch"] is False
        (assoc,) = [
            a["Properties"]
            for a in resources(template, "AWS::EC2::SubnetRouteTableAssociation").values()
            if a["Properties"]["SubnetId"] == {"Ref": subnet}
        ]
        table_routes = [r["Properties"] for r in routes if r["Properties"]["RouteTableId"] == assoc["RouteTableId"]]
        assert [set(r) - {"RouteTableId", "DestinationCidrBlock"} for r in table_routes] == [{"NatGatewayId"}]
    (sg_ref,) = db["Properties"]["VPCSecurityGroups"]
    sg = res[sg_ref["Fn::GetAtt"][0]]["Properties"]
    assert sg["SecurityGroupIngress"] == [
        {
            "IpProtocol": "tcp",
            "FromPort": 5432,
            "ToPort": 5432,
            "SourceSecurityGroupId": {"Ref": "MwaaSecurityGroup"},
            "Description": "PostgreSQL from the MWAA security group",
        }
    ]


def test_s3_traffic_of_the_private_subnets_takes_the_gateway_endpoint(template) -> None:
    (endpoint,) = resources(template, "AWS::EC2::VPCEndpoint").values()
    p = endpoint["Properties"]
    assert p["VpcEndpointType"] == "Gateway" and flat(p["ServiceName"]) == "com.amazonaws.${AWS::Region}.s3"
    assert p["RouteTableIds"] == [{"Ref": "PrivateRouteTable"}]


# ----------------------------------------------------------------------------------------------- IAM

# Actions that have no resource-level permissions, so `"Resource": "*"` is all a statement can say.
NO_RESOURCE_LEVEL = {"s3:GetAccountPublicAccessBlock", "logs:DescribeLogGroups", "cloudwatch:PutMetricData"}
# Wildcards allowed inside ARNs, each for a reason: objects under a prefix, names under a prefix, and MWAA's
# Celery queue, which lives in MWAA's own account (hence the account wildcard).
ALLOWED_ARN_WILDCARDS = [
    r"\$\{(Raw|Processed|Environment)Bucket\.Arn\}/(raw/|processed/|rejected/)?\*",
    r"arn:\$\{AWS::Partition\}:secretsmanager:\$\{AWS::Region\}:\$\{AWS::AccountId\}:secret:\$\{BackendPrefix\}/"
    r"(connections|variables)/\*",
    r"arn:\$\{AWS::Partition\}:logs:\$\{AWS::Region\}:\$\{AWS::AccountId\}:log-group:airflow-\$\{EnvironmentName\}-\*",
    r"arn:\$\{AWS::Partition\}:sqs:\$\{AWS::Region\}:\*:airflow-celery-\*",
]


def execution_statements(template) -> list[dict[str, Any]]:
    (role,) = resources(template, "AWS::IAM::Role").values()
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_no_iam_wildcard_beyond_what_a_statement_needs(template) -> None:
    statements = execution_statements(template)
    assert statements
    for s in statements:
        assert s["Effect"] == "Allow"
        actions = as_list(s["Action"])
        assert not [a for a in actions if "*" in a], s["Sid"]
        if "NotResource" in s:
            # Only the Celery queue's AWS-owned key, reachable through SQS only, and never this account's keys.
            assert s["Sid"] == "CeleryQueueKey"
            assert flat(s["NotResource"]) == "arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"
            assert s["Condition"]["StringLike"]["kms:ViaService"]
            continue
        for resource in as_list(s["Resource"]):
            text = flat(resource)
            if text == "*":
                assert set(actions) <= NO_RESOURCE_LEVEL, s["Sid"]
            elif "*" in text:
                assert any(re.fullmatch(p, text) for p in ALLOWED_ARN_WILDCARDS), (s["Sid"], text)
    metrics = next(s for s in statements if s["Action"] == "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "AmazonMWAA"}}


def test_the_role_lists_and_reads_raw_writes_processed_and_consumes_only_its_queues(two_dataset_template) -> None:
    template = two_dataset_template
    grants: dict[str, set[str]] = {}
    for s in execution_statements(template):
        for resource in as_list(s.get("Resource", [])):
            grants.setdefault(flat(resource), set()).update(as_list(s["Action"]))
    assert grants["${RawBucket.Arn}"] == {"s3:ListBucket"}
    assert grants["${RawBucket.Arn}/raw/*"] == {"s3:GetObject"}
    assert not [
        r for r in grants if r.startswith("${RawBucket") and r not in ("${RawBucket.Arn}", "${RawBucket.Arn}/raw/*")
    ]
    for prefix in ("processed", "rejected"):
        assert grants[f"${{ProcessedBucket.Arn}}/{prefix}/*"] == {"s3:PutObject", "s3:GetObject", "s3:DeleteObject"}
    queue_grants = {r: a for r, a in grants.items() if r.startswith("${EventsQueue")}
    assert set(queue_grants) == {"${EventsQueueOrders.Arn}", "${EventsQueueCustomers.Arn}"}
    for actions in queue_grants.values():
        assert "sqs:ReceiveMessage" in actions and "sqs:DeleteMessage" in actions and "sqs:SendMessage" not in actions
    assert not [r for r in grants if "DeadLetter" in r]
    secret_grants = {r: a for r, a in grants.items() if ":secretsmanager:" in r}
    assert len(secret_grants) == 2
    assert all(actions == {"secretsmanager:GetSecretValue"} for actions in secret_grants.values())
    (role,) = resources(template, "AWS::IAM::Role").values()
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": ["airflow.amazonaws.com", "airflow-env.amazonaws.com"]}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_key_policy_lets_only_the_raw_bucket_use_the_key_for_notifications(template) -> None:
    statements = template["Resources"]["DataKey"]["Properties"]["KeyPolicy"]["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    # The default key policy (IAM decides); "*" in a key policy means this key.
    assert by_sid["AccountAdministersKeyThroughIam"]["Principal"] == {
        "AWS": {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iam::", {"Ref": "AWS::AccountId"}, ":root"]]}
    }
    s3 = by_sid["RawBucketNotificationsToEncryptedQueues"]
    assert s3["Principal"] == {"Service": "s3.amazonaws.com"}
    assert s3["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"]
    assert flat(s3["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(
        "s3:::${EnvironmentName}-raw-${AWS::AccountId}-${AWS::Region}"
    )
    assert len(statements) == 2


# ----------------------------------------------------------------------------------------------- secrets, MWAA


def test_airflow_connections_are_secrets_without_credentials_in_the_template(template) -> None:
    secrets = resources(template, "AWS::SecretsManager::Secret")
    names = {flat(s["Properties"]["Name"]): s["Properties"] for s in secrets.values()}
    assert set(names) == {f"${{BackendPrefix}}/connections/{c}" for c in ("aws_default", "warehouse", "smtp_default")}
    for props in names.values():
        assert props["KmsKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
        if "SecretString" in props:
            value = json.loads(flat(props["SecretString"]))
            assert not {"login", "password", "aws_access_key_id", "aws_secret_access_key"} & set(value)
            assert not {"aws_access_key_id", "aws_secret_access_key"} & set(value.get("extra", {}))
    aws_default = json.loads(flat(names["${BackendPrefix}/connections/aws_default"]["SecretString"]))
    assert aws_default["conn_type"] == "aws" and aws_default["extra"]["region_name"] == "${AWS::Region}"


def test_mwaa_environment_reads_secrets_runs_in_private_subnets_and_waits_for_its_bundle(template) -> None:
    env = template["Resources"]["MwaaEnvironment"]
    assert env["Condition"] == "WithEnvironment"
    assert template["Conditions"]["WithEnvironment"] == {"Fn::Equals": [{"Ref": "CreateEnvironment"}, "true"]}
    assert template["Parameters"]["CreateEnvironment"]["Default"] == "false"
    p = env["Properties"]
    options = p["AirflowConfigurationOptions"]
    assert options["secrets.backend"] == "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
    assert json.loads(flat(options["secrets.backend_kwargs"])) == {
        "connections_prefix": "${BackendPrefix}/connections",
        "variables_prefix": "${BackendPrefix}/variables",
    }
    assert p["NetworkConfiguration"]["SubnetIds"] == [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}]
    assert p["SourceBucketArn"] == {"Fn::GetAtt": ["EnvironmentBucket", "Arn"]}
    assert p["ExecutionRoleArn"] == {"Fn::GetAtt": ["MwaaExecutionRole", "Arn"]}
    assert (p["DagS3Path"], p["RequirementsS3Path"], p["StartupScriptS3Path"]) == (
        "dags",
        "requirements.txt",
        "startup.sh",
    )
    assert all(log["Enabled"] for log in p["LoggingConfiguration"].values())
    assert "PrivateDefaultRoute" in as_list(env["DependsOn"])
    for name in ("EnvironmentClass", "EnvironmentName", "MaxWorkers", "DbInstanceClass", "DbAllocatedStorage"):
        assert name in template["Parameters"]
    assert template["Parameters"]["EnvironmentClass"]["AllowedValues"][0] == "mw1.micro"
