"""The AWS stack for the pipeline, written with the AWS CDK and synthesized to one CloudFormation template.

What it creates: a VPC (two private subnets for MWAA and RDS, two public ones for a NAT gateway, an S3 gateway
endpoint), a customer-managed KMS key, the raw, processed and MWAA-environment buckets (versioned, SSE-KMS, private,
TLS only, access-logged into a log bucket, with lifecycle rules), one SQS queue with a dead-letter queue per dataset
fed by the raw bucket's notifications for `raw/<dataset>/`, RDS PostgreSQL (private, encrypted, `rds.force_ssl`),
the Airflow connections as Secrets Manager secrets (MWAA's secrets backend reads them), the MWAA execution role
(least privilege) and the MWAA environment itself.

Why raw CloudFormation properties (`CfnResource`) and not the CDK's L2 constructs: the template is the reviewed,
tested artifact, so every property in it is written here under its CloudFormation name (the names of the
CloudFormation docs), and nothing is added behind our back. L2 constructs would add Lambda-backed custom resources
(bucket notifications, auto-delete, default security group restriction), need `cdk bootstrap` for their assets,
and change output with CDK feature flags. What the CDK gives us is Python: the datasets come from
`include/contracts/*.yml`, and each bucket, queue and policy is built by one function.

Deploying is two steps because MWAA needs its requirements and startup script in S3 before it starts, and the
startup script needs the queue URLs this stack creates: deploy with `CreateEnvironment=false`, upload the bundle
(`python -m mwaa.bundle`), deploy again with `CreateEnvironment=true` and the uploaded object versions
(docs/deploy-aws.md).
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Aws, CfnCondition, CfnDeletionPolicy, CfnOutput, CfnParameter, CfnResource, Fn, Stack
from constructs import Construct

from infra import naming

# checkov checks skipped on purpose, each with the reason stored next to it in the template's Metadata.
Skip = tuple[str, str]

CONNECTIONS_BACKEND = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
MWAA_CLASSES = ["mw1.micro", "mw1.small", "mw1.medium", "mw1.large", "mw1.xlarge", "mw1.2xlarge"]
DB_NAME = "warehouse"
DB_ADMIN = "etl_admin"


def _skip(resource: CfnResource, *checks: Skip) -> None:
    """Skip checkov checks on one resource, each with its reason (checkov reads the resource's Metadata)."""
    existing = resource.get_metadata("checkov") or {"skip": []}
    existing["skip"] += [{"id": check, "comment": why} for check, why in checks]
    resource.add_metadata("checkov", existing)


class EtlStack(Stack):
    """Everything the pipeline needs in one AWS account and region, for the given datasets."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        datasets: list[str],
        openlineage_transport: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.datasets = datasets
        self.template_options.description = (
            f"orders-etl: S3 raw/processed zones, SQS events, RDS PostgreSQL and Amazon MWAA for {', '.join(datasets)}"
        )
        self._parameters()
        self._conditions()
        self._key()
        self._network()
        self._buckets()
        self._queues()
        self._database()
        self._connections()
        self._execution_role()
        self._environment(openlineage_transport)
        self._outputs()

    # ------------------------------------------------------------------ inputs
    def _parameters(self) -> None:
        def param(name: str, **kw: Any) -> CfnParameter:
            return CfnParameter(self, name, **kw)

        self.env_name = param(
            "EnvironmentName",
            default="orders-etl",
            allowed_pattern="^[a-z][a-z0-9-]{2,19}$",
            description="Names the MWAA environment and prefixes every bucket, queue and database (3-20 chars)",
        )
        self.env_class = param("EnvironmentClass", default="mw1.small", allowed_values=MWAA_CLASSES)
        self.min_workers = param("MinWorkers", type="Number", default=1, min_value=1, max_value=25)
        self.max_workers = param("MaxWorkers", type="Number", default=2, min_value=1, max_value=25)
        self.schedulers = param(
            "Schedulers", type="Number", default=2, min_value=1, max_value=5, description="1 for mw1.micro"
        )
        self.airflow_version = param("AirflowVersion", default="3.3.1")
        self.webserver_access = param(
            "WebserverAccessMode", default="PUBLIC_ONLY", allowed_values=["PUBLIC_ONLY", "PRIVATE_ONLY"]
        )
        self.create_env = param(
            "CreateEnvironment",
            default="false",
            allowed_values=["true", "false"],
            description="false for the first deploy; true once the bundle is uploaded (python -m mwaa.bundle)",
        )
        self.requirements_version = param(
            "RequirementsS3ObjectVersion", default="", description="S3 version of requirements.txt (from the bundle)"
        )
        self.startup_version = param(
            "StartupScriptS3ObjectVersion", default="", description="S3 version of startup.sh (from the bundle)"
        )
        self.alert_emails = param("AlertEmails", description="Who gets the pipeline's summaries and alerts (a,b)")
        self.sender_email = param(
            "SenderEmail", description="From address of the emails; SES sends a verification link to it"
        )
        self.backend_prefix = param(
            "BackendPrefix",
            default="airflow",
            allowed_pattern="^[a-zA-Z0-9_-]+$",
            description="Secrets are <prefix>/connections/<id> and <prefix>/variables/<name>",
        )
        self.db_class = param("DbInstanceClass", default="db.t4g.micro")
        self.db_storage = param("DbAllocatedStorage", type="Number", default=20, min_value=20, max_value=65536)
        self.db_engine_version = param("DbEngineVersion", default="17")
        self.db_multi_az = param("DbMultiAz", default="false", allowed_values=["true", "false"])
        self.db_deletion_protection = param(
            "DbDeletionProtection",
            default="true",
            allowed_values=["true", "false"],
            description="set false (stack update) before deleting the stack",
        )
        self.vpc_cidr = param("VpcCidr", default="10.42.0.0/16", allowed_pattern=r"^\d+\.\d+\.0\.0/16$")
        self.processed_tiering_days = param(
            "ProcessedTieringDays", type="Number", default=30, description="processed/ to Intelligent-Tiering"
        )
        self.rejected_days = param("RejectedRetentionDays", type="Number", default=90, min_value=1)
        self.noncurrent_days = param(
            "NoncurrentVersionRetentionDays", type="Number", default=30, min_value=1, description="data buckets"
        )
        self.log_days = param("AccessLogRetentionDays", type="Number", default=365, min_value=1)

    def _conditions(self) -> None:
        self.multi_az = CfnCondition(self, "DbMultiAzOn", expression=Fn.condition_equals(self.db_multi_az, "true"))
        self.db_protected = CfnCondition(
            self, "DbDeletionProtected", expression=Fn.condition_equals(self.db_deletion_protection, "true")
        )
        self.with_env = CfnCondition(self, "WithEnvironment", expression=Fn.condition_equals(self.create_env, "true"))
        self.has_req_version = CfnCondition(
            self,
            "HasRequirementsVersion",
            expression=Fn.condition_not(Fn.condition_equals(self.requirements_version, "")),
        )
        self.has_startup_version = CfnCondition(
            self, "HasStartupVersion", expression=Fn.condition_not(Fn.condition_equals(self.startup_version, ""))
        )

    def _name(self, suffix: str) -> str:
        return Fn.sub(f"${{EnvironmentName}}-{suffix}")

    # ------------------------------------------------------------------ KMS
    def _key(self) -> None:
        account_root = f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:root"
        self.key = CfnResource(
            self,
            "DataKey",
            type="AWS::KMS::Key",
            properties={
                "Description": Fn.sub("${EnvironmentName}: buckets, queues, database and secrets"),
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            # The default key policy: IAM policies of this account decide who uses the key.
                            "Sid": "AccountAdministersKeyThroughIam",
                            "Effect": "Allow",
                            "Principal": {"AWS": account_root},
                            "Action": "kms:*",
                            "Resource": "*",
                        },
                        {
                            # S3 encrypts the event notifications it sends to the (KMS-encrypted) queues.
                            "Sid": "RawBucketNotificationsToEncryptedQueues",
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                            "Resource": "*",
                            "Condition": {
                                "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                                "ArnLike": {"aws:SourceArn": self._bucket_arn("raw")},
                            },
                        },
                    ],
                },
            },
        )
        CfnResource(
            self,
            "DataKeyAlias",
            type="AWS::KMS::Alias",
            properties={"AliasName": Fn.sub("alias/${EnvironmentName}-data"), "TargetKeyId": self.key.ref},
        )

    # ------------------------------------------------------------------ network
    def _network(self) -> None:
        self.vpc = CfnResource(
            self,
            "Vpc",
            type="AWS::EC2::VPC",
            properties={
                "CidrBlock": self.vpc_cidr.value_as_string,
                "EnableDnsHostnames": True,
                "EnableDnsSupport": True,
                "Tags": [{"Key": "Name", "Value": self.env_name.value_as_string}],
            },
        )
        vpc = self.vpc.ref
        igw = CfnResource(self, "InternetGateway", type="AWS::EC2::InternetGateway")
        attach = CfnResource(
            self,
            "InternetGatewayAttachment",
            type="AWS::EC2::VPCGatewayAttachment",
            properties={"VpcId": vpc, "InternetGatewayId": igw.ref},
        )
        cidrs = Fn.cidr(self.vpc_cidr.value_as_string, 4, "12")  # four /20s
        azs = Fn.get_azs("")

        def subnet(name: str, index: int, az: int) -> CfnResource:
            return CfnResource(
                self,
                name,
                type="AWS::EC2::Subnet",
                properties={
                    "VpcId": vpc,
                    "CidrBlock": Fn.select(index, cidrs),
                    "AvailabilityZone": Fn.select(az, azs),
                    "MapPublicIpOnLaunch": False,
                    "Tags": [{"Key": "Name", "Value": Fn.sub(f"${{EnvironmentName}}-{name}")}],
                },
            )

        public = [subnet("PublicSubnet1", 0, 0), subnet("PublicSubnet2", 1, 1)]
        self.private_subnets = [subnet("PrivateSubnet1", 2, 0), subnet("PrivateSubnet2", 3, 1)]

        public_rt = CfnResource(self, "PublicRouteTable", type="AWS::EC2::RouteTable", properties={"VpcId": vpc})
        route = CfnResource(
            self,
            "PublicDefaultRoute",
            type="AWS::EC2::Route",
            properties={
                "RouteTableId": public_rt.ref,
                "DestinationCidrBlock": "0.0.0.0/0",
                "GatewayId": igw.ref,
            },
        )
        route.node.add_dependency(attach)
        for i, s in enumerate(public, 1):
            CfnResource(
                self,
                f"PublicSubnet{i}RouteTableAssociation",
                type="AWS::EC2::SubnetRouteTableAssociation",
                properties={"SubnetId": s.ref, "RouteTableId": public_rt.ref},
            )

        # One NAT gateway (not one per AZ): MWAA's workers reach PyPI, SQS, Secrets Manager, KMS and CloudWatch
        # through it. S3 traffic, the bulk, takes the free gateway endpoint instead.
        eip = CfnResource(self, "NatEip", type="AWS::EC2::EIP", properties={"Domain": "vpc"})
        eip.node.add_dependency(attach)
        nat = CfnResource(
            self,
            "NatGateway",
            type="AWS::EC2::NatGateway",
            properties={"AllocationId": eip.get_att("AllocationId").to_string(), "SubnetId": public[0].ref},
        )
        private_rt = CfnResource(self, "PrivateRouteTable", type="AWS::EC2::RouteTable", properties={"VpcId": vpc})
        self.private_route = CfnResource(
            self,
            "PrivateDefaultRoute",
            type="AWS::EC2::Route",
            properties={
                "RouteTableId": private_rt.ref,
                "DestinationCidrBlock": "0.0.0.0/0",
                "NatGatewayId": nat.ref,
            },
        )
        for i, s in enumerate(self.private_subnets, 1):
            CfnResource(
                self,
                f"PrivateSubnet{i}RouteTableAssociation",
                type="AWS::EC2::SubnetRouteTableAssociation",
                properties={"SubnetId": s.ref, "RouteTableId": private_rt.ref},
            )
        CfnResource(
            self,
            "S3GatewayEndpoint",
            type="AWS::EC2::VPCEndpoint",
            properties={
                "VpcId": vpc,
                "ServiceName": Fn.sub("com.amazonaws.${AWS::Region}.s3"),
                "VpcEndpointType": "Gateway",
                "RouteTableIds": [private_rt.ref],
            },
        )

        self.mwaa_sg = CfnResource(
            self,
            "MwaaSecurityGroup",
            type="AWS::EC2::SecurityGroup",
            properties={
                "GroupDescription": "MWAA scheduler, workers and web server",
                "VpcId": vpc,
                "SecurityGroupEgress": [
                    {
                        "IpProtocol": "-1",
                        "CidrIp": "0.0.0.0/0",
                        "Description": "AWS APIs and PyPI through the NAT gateway, the database in the VPC",
                    }
                ],
            },
        )
        # MWAA needs its components to reach each other: a rule referencing the group itself.
        CfnResource(
            self,
            "MwaaSecurityGroupSelfIngress",
            type="AWS::EC2::SecurityGroupIngress",
            properties={
                "GroupId": self.mwaa_sg.ref,
                "IpProtocol": "-1",
                "SourceSecurityGroupId": self.mwaa_sg.ref,
                "Description": "MWAA components talk to each other",
            },
        )
        self.db_sg = CfnResource(
            self,
            "DatabaseSecurityGroup",
            type="AWS::EC2::SecurityGroup",
            properties={
                "GroupDescription": "The warehouse: PostgreSQL from MWAA only",
                "VpcId": vpc,
                "SecurityGroupIngress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 5432,
                        "ToPort": 5432,
                        "SourceSecurityGroupId": self.mwaa_sg.ref,
                        "Description": "PostgreSQL from the MWAA security group",
                    }
                ],
                # No outbound traffic: CloudFormation's default would allow all.
                "SecurityGroupEgress": [
                    {
                        "IpProtocol": "icmp",
                        "FromPort": 252,
                        "ToPort": 86,
                        "CidrIp": "255.255.255.255/32",
                        "Description": "placeholder that matches nothing: no egress",
                    }
                ],
            },
        )
        self.public_subnets = public

    # ------------------------------------------------------------------ S3
    def _bucket_arn(self, suffix: str) -> str:
        """A bucket's ARN from its name, not its resource: policies can name a bucket without depending on it."""
        return Fn.sub(
            f"arn:${{AWS::Partition}}:s3:::${{EnvironmentName}}-{suffix}-${{AWS::AccountId}}-${{AWS::Region}}"
        )

    def _bucket_name(self, suffix: str) -> str:
        return Fn.sub(f"${{EnvironmentName}}-{suffix}-${{AWS::AccountId}}-${{AWS::Region}}")

    def _tls_only(self, logical_id: str, bucket: CfnResource, extra: list[dict[str, Any]] | None = None) -> CfnResource:
        arn = bucket.get_att("Arn").to_string()
        statements = [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, Fn.join("", [arn, "/*"])],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            *(extra or []),
        ]
        return CfnResource(
            self,
            logical_id,
            type="AWS::S3::BucketPolicy",
            properties={"Bucket": bucket.ref, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}},
        )

    def _secure_bucket(
        self, logical_id: str, suffix: str, rules: list[dict[str, Any]], **extra_properties: Any
    ) -> CfnResource:
        """Versioned, SSE-KMS with the data key, private, owner-enforced, access-logged, TLS only."""
        bucket = CfnResource(
            self,
            logical_id,
            type="AWS::S3::Bucket",
            properties={
                "BucketName": self._bucket_name(suffix),
                "VersioningConfiguration": {"Status": "Enabled"},
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": self.key.get_att("Arn").to_string(),
                            },
                            "BucketKeyEnabled": True,  # one KMS call per object batch, not per object
                        }
                    ]
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "LoggingConfiguration": {
                    "DestinationBucketName": self.log_bucket.ref,
                    "LogFilePrefix": f"s3/{suffix}/",
                },
                "LifecycleConfiguration": {"Rules": rules},
                **extra_properties,
            },
        )
        # Server access logs are delivered by a bucket policy on the log bucket, which must exist first.
        bucket.node.add_dependency(self.log_bucket_policy)
        self._tls_only(f"{logical_id}Policy", bucket)
        return bucket

    def _buckets(self) -> None:
        abort_uploads = {
            "Id": "abort-incomplete-uploads",
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }
        old_versions = {
            "Id": "expire-old-versions",
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": self.noncurrent_days.value_as_number},
            "ExpiredObjectDeleteMarker": True,
        }
        # Access logs of the other buckets (and VPC flow logs). S3 server access logging cannot deliver to a bucket
        # whose default encryption is SSE-KMS, so this one alone uses SSE-S3.
        self.log_bucket = CfnResource(
            self,
            "AccessLogsBucket",
            type="AWS::S3::Bucket",
            properties={
                "BucketName": self._bucket_name("logs"),
                "VersioningConfiguration": {"Status": "Enabled"},
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "Id": "expire-logs",
                            "Status": "Enabled",
                            "ExpirationInDays": self.log_days.value_as_number,
                            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                        },
                        abort_uploads,
                    ]
                },
            },
        )
        _skip(self.log_bucket, ("CKV_AWS_18", "this is the access-log bucket; logging it into itself would loop"))
        logs_arn = self.log_bucket.get_att("Arn").to_string()
        self.log_bucket_policy = self._tls_only(
            "AccessLogsBucketPolicy",
            self.log_bucket,
            [
                {
                    "Sid": "S3ServerAccessLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": "logging.s3.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": Fn.join("", [logs_arn, "/s3/*"]),
                    "Condition": {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
                },
                {
                    "Sid": "VpcFlowLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": "delivery.logs.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": Fn.join("", [logs_arn, "/AWSLogs/", Aws.ACCOUNT_ID, "/*"]),
                    "Condition": {
                        "StringEquals": {
                            "aws:SourceAccount": Aws.ACCOUNT_ID,
                            "s3:x-amz-acl": "bucket-owner-full-control",
                        }
                    },
                },
                {
                    "Sid": "VpcFlowLogsAclCheck",
                    "Effect": "Allow",
                    "Principal": {"Service": "delivery.logs.amazonaws.com"},
                    "Action": "s3:GetBucketAcl",
                    "Resource": logs_arn,
                    "Condition": {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
                },
            ],
        )
        flow_log = CfnResource(
            self,
            "VpcFlowLog",
            type="AWS::EC2::FlowLog",
            properties={
                "ResourceId": self.vpc.ref,
                "ResourceType": "VPC",
                "TrafficType": "REJECT",  # rejected connections only: what a security review asks for, cheaply
                "LogDestinationType": "s3",
                "LogDestination": logs_arn,  # under AWSLogs/<account>/vpcflowlogs/
            },
        )
        flow_log.node.add_dependency(self.log_bucket_policy)

        notifications = [
            {
                "Event": event,
                "Queue": Fn.get_att(f"EventsQueue{naming.camel(ds)}", "Arn").to_string(),
                "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": f"raw/{ds}/"}]}},
            }
            for ds in self.datasets
            for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
        ]
        self.raw_bucket = self._secure_bucket(
            "RawBucket",
            "raw",
            [old_versions, abort_uploads],
            NotificationConfiguration={"QueueConfigurations": notifications},
        )
        self.processed_bucket = self._secure_bucket(
            "ProcessedBucket",
            "processed",
            [
                {
                    "Id": "processed-to-intelligent-tiering",
                    "Status": "Enabled",
                    "Prefix": "processed/",
                    "Transitions": [
                        {
                            "StorageClass": "INTELLIGENT_TIERING",
                            "TransitionInDays": self.processed_tiering_days.value_as_number,
                        }
                    ],
                },
                {
                    "Id": "expire-rejected",
                    "Status": "Enabled",
                    "Prefix": "rejected/",
                    "ExpirationInDays": self.rejected_days.value_as_number,
                },
                old_versions,
                abort_uploads,
            ],
        )
        # MWAA's source bucket: dags/ (with include/ and the constraints file), requirements.txt, startup.sh.
        # Old versions stay a year: the environment names the versions of requirements.txt and startup.sh it runs.
        self.env_bucket = self._secure_bucket(
            "EnvironmentBucket",
            "mwaa",
            [
                {
                    "Id": "expire-old-versions",
                    "Status": "Enabled",
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 365},
                },
                abort_uploads,
            ],
        )

    # ------------------------------------------------------------------ SQS
    def _queues(self) -> None:
        self.queues: dict[str, CfnResource] = {}
        policies = []
        for ds in self.datasets:
            c = naming.camel(ds)
            dlq = CfnResource(
                self,
                f"EventsDeadLetterQueue{c}",
                type="AWS::SQS::Queue",
                properties={
                    "QueueName": self._name(f"{ds.replace('_', '-')}-events-dlq"),
                    "MessageRetentionPeriod": 1209600,  # 14 days to look at what failed
                    "KmsMasterKeyId": self.key.get_att("Arn").to_string(),
                    "KmsDataKeyReusePeriodSeconds": 3600,
                },
            )
            queue = CfnResource(
                self,
                f"EventsQueue{c}",
                type="AWS::SQS::Queue",
                properties={
                    "QueueName": self._name(f"{ds.replace('_', '-')}-events"),
                    "MessageRetentionPeriod": 345600,  # 4 days: a run lists the lookback window anyway
                    "VisibilityTimeout": 120,
                    "ReceiveMessageWaitTimeSeconds": 10,
                    "KmsMasterKeyId": self.key.get_att("Arn").to_string(),
                    "KmsDataKeyReusePeriodSeconds": 3600,
                    # A message the triggerer receives 5 times without deleting it goes to the DLQ.
                    "RedrivePolicy": {"deadLetterTargetArn": dlq.get_att("Arn").to_string(), "maxReceiveCount": 5},
                },
            )
            CfnResource(
                self,
                f"EventsDeadLetterQueue{c}RedriveAllow",
                type="AWS::SQS::QueuePolicy",
                properties={
                    "Queues": [dlq.ref],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [self._sqs_tls_only(dlq)],
                    },
                },
            )
            policy = CfnResource(
                self,
                f"EventsQueue{c}Policy",
                type="AWS::SQS::QueuePolicy",
                properties={
                    "Queues": [queue.ref],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "RawBucketNotifications",
                                "Effect": "Allow",
                                "Principal": {"Service": "s3.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": queue.get_att("Arn").to_string(),
                                "Condition": {
                                    "ArnEquals": {"aws:SourceArn": self._bucket_arn("raw")},
                                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                                },
                            },
                            self._sqs_tls_only(queue),
                        ],
                    },
                },
            )
            self.queues[ds] = queue
            policies.append(policy)
        # S3 checks that it may send to each queue when the notification configuration is set.
        for policy in policies:
            self.raw_bucket.node.add_dependency(policy)

    @staticmethod
    def _sqs_tls_only(queue: CfnResource) -> dict[str, Any]:
        return {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": queue.get_att("Arn").to_string(),
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }

    # ------------------------------------------------------------------ RDS
    def _database(self) -> None:
        # The warehouse connection secret is also the database's master credential: RDS reads the generated
        # password from it and the attachment below adds host, port and engine, so Airflow's Secrets Manager
        # backend reads a complete `postgres` connection (engine -> conn_type) from it.
        self.warehouse_secret = CfnResource(
            self,
            "WarehouseConnectionSecret",
            type="AWS::SecretsManager::Secret",
            properties={
                "Name": Fn.sub("${BackendPrefix}/connections/warehouse"),
                "Description": "Airflow connection `warehouse` and the RDS master credential",
                "KmsKeyId": self.key.get_att("Arn").to_string(),
                "GenerateSecretString": {
                    "SecretStringTemplate": json.dumps(
                        {"username": DB_ADMIN, "database": DB_NAME, "extra": {"sslmode": "require"}}
                    ),
                    "GenerateStringKey": "password",
                    "PasswordLength": 40,
                    "ExcludePunctuation": True,
                },
            },
        )
        subnet_group = CfnResource(
            self,
            "DatabaseSubnetGroup",
            type="AWS::RDS::DBSubnetGroup",
            properties={
                "DBSubnetGroupDescription": "Private subnets of the warehouse",
                "SubnetIds": [s.ref for s in self.private_subnets],
            },
        )
        params = CfnResource(
            self,
            "DatabaseParameterGroup",
            type="AWS::RDS::DBParameterGroup",
            properties={
                "Description": "TLS only; slow statements logged",
                "Family": Fn.join("", ["postgres", self.db_engine_version.value_as_string]),
                "Parameters": {
                    "rds.force_ssl": "1",
                    "log_min_duration_statement": "5000",
                    "log_connections": "1",
                    "log_disconnections": "1",
                },
            },
        )
        secret = self.warehouse_secret.ref
        self.database = CfnResource(
            self,
            "Database",
            type="AWS::RDS::DBInstance",
            properties={
                "Engine": "postgres",
                "EngineVersion": self.db_engine_version.value_as_string,
                "DBInstanceClass": self.db_class.value_as_string,
                "AllocatedStorage": self.db_storage.value_as_string,
                "StorageType": "gp3",
                "StorageEncrypted": True,
                "KmsKeyId": self.key.get_att("Arn").to_string(),
                "DBName": DB_NAME,
                "MasterUsername": Fn.sub("{{resolve:secretsmanager:${S}:SecretString:username}}", {"S": secret}),
                "MasterUserPassword": Fn.sub("{{resolve:secretsmanager:${S}:SecretString:password}}", {"S": secret}),
                "DBSubnetGroupName": subnet_group.ref,
                "DBParameterGroupName": params.ref,
                "VPCSecurityGroups": [self.db_sg.get_att("GroupId").to_string()],
                "PubliclyAccessible": False,
                "MultiAZ": Fn.condition_if(self.multi_az.logical_id, True, False),
                "BackupRetentionPeriod": 7,
                "CopyTagsToSnapshot": True,
                "DeletionProtection": Fn.condition_if(self.db_protected.logical_id, True, False),
                "AutoMinorVersionUpgrade": True,
                "EnableIAMDatabaseAuthentication": True,
                "EnablePerformanceInsights": False,
                "EnableCloudwatchLogsExports": ["postgresql", "upgrade"],
            },
        )
        # Deleting the stack (or replacing the instance) leaves a final snapshot, not nothing.
        self.database.cfn_options.deletion_policy = CfnDeletionPolicy.SNAPSHOT
        self.database.cfn_options.update_replace_policy = CfnDeletionPolicy.SNAPSHOT
        _skip(
            self.database,
            ("CKV_AWS_118", "enhanced monitoring costs extra per instance; CloudWatch's basic metrics stay on"),
            ("CKV_AWS_157", "Multi-AZ is the DbMultiAz parameter (off by default: it doubles the instance price)"),
        )
        CfnResource(
            self,
            "WarehouseConnectionSecretAttachment",
            type="AWS::SecretsManager::SecretTargetAttachment",
            properties={"SecretId": secret, "TargetId": self.database.ref, "TargetType": "AWS::RDS::DBInstance"},
        )

    # ------------------------------------------------------------------ Airflow connections
    def _connections(self) -> None:
        self.aws_secret = CfnResource(
            self,
            "AwsDefaultConnectionSecret",
            type="AWS::SecretsManager::Secret",
            properties={
                "Name": Fn.sub("${BackendPrefix}/connections/aws_default"),
                "Description": "Airflow connection `aws_default`: no keys, the MWAA execution role signs requests",
                "KmsKeyId": self.key.get_att("Arn").to_string(),
                "SecretString": Fn.sub(
                    json.dumps(
                        {
                            "conn_type": "aws",
                            "extra": {
                                "region_name": "${AWS::Region}",
                                "config_kwargs": {
                                    "retries": {"mode": "standard", "max_attempts": 10},
                                    "connect_timeout": 10,
                                    "read_timeout": 60,
                                },
                            },
                        }
                    )
                ),
            },
        )
        # SES SMTP credentials cannot be made by CloudFormation (they derive from an IAM user's key): the secret
        # holds everything else, and docs/deploy-aws.md puts the login and password in.
        self.smtp_secret = CfnResource(
            self,
            "SmtpConnectionSecret",
            type="AWS::SecretsManager::Secret",
            properties={
                "Name": Fn.sub("${BackendPrefix}/connections/smtp_default"),
                "Description": "Airflow connection `smtp_default` (Amazon SES): add the SES SMTP login and password",
                "KmsKeyId": self.key.get_att("Arn").to_string(),
                "SecretString": Fn.sub(
                    json.dumps(
                        {
                            "conn_type": "smtp",
                            "host": "email-smtp.${AWS::Region}.amazonaws.com",
                            "port": 587,
                            "extra": {"from_email": "${SenderEmail}", "timeout": 30, "retry_limit": 3},
                        }
                    )
                ),
            },
        )
        CfnResource(
            self,
            "SenderIdentity",
            type="AWS::SES::EmailIdentity",
            properties={"EmailIdentity": self.sender_email.value_as_string},
        )

    # ------------------------------------------------------------------ IAM
    def _execution_role(self) -> None:
        env_arn = Fn.sub(
            "arn:${AWS::Partition}:airflow:${AWS::Region}:${AWS::AccountId}:environment/${EnvironmentName}"
        )
        raw, processed, env_bucket = (
            b.get_att("Arn").to_string() for b in (self.raw_bucket, self.processed_bucket, self.env_bucket)
        )
        secrets = Fn.sub(
            "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${BackendPrefix}/"
        )
        statements: list[dict[str, Any]] = [
            {"Sid": "PublishMetrics", "Effect": "Allow", "Action": "airflow:PublishMetrics", "Resource": env_arn},
            {
                "Sid": "ReadEnvironmentBucket",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:ListBucket",
                    "s3:GetBucketLocation",
                    "s3:GetBucketPublicAccessBlock",
                ],
                "Resource": [env_bucket, Fn.join("", [env_bucket, "/*"])],
            },
            {
                # MWAA checks that the account blocks public access; the action has no resource to scope to.
                "Sid": "CheckAccountPublicAccessBlock",
                "Effect": "Allow",
                "Action": "s3:GetAccountPublicAccessBlock",
                "Resource": "*",
            },
            {
                "Sid": "ListRaw",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": raw,
                "Condition": {"StringLike": {"s3:prefix": ["raw/*"]}},
            },
            {"Sid": "ReadRaw", "Effect": "Allow", "Action": "s3:GetObject", "Resource": Fn.join("", [raw, "/raw/*"])},
            {
                "Sid": "ListProcessed",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": processed,
                "Condition": {"StringLike": {"s3:prefix": ["processed/*", "rejected/*"]}},
            },
            {
                # Transform writes Parquet and rejected rows; validate moves a failing file to rejected/ (copy,
                # delete) and load reads the Parquet back.
                "Sid": "WriteProcessed",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
                "Resource": [Fn.join("", [processed, "/processed/*"]), Fn.join("", [processed, "/rejected/*"])],
            },
            {
                "Sid": "UseDataKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                "Resource": self.key.get_att("Arn").to_string(),
            },
            {
                "Sid": "ConsumeDatasetEvents",
                "Effect": "Allow",
                "Action": [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                ],
                "Resource": [q.get_att("Arn").to_string() for q in self.queues.values()],
            },
            {
                "Sid": "ReadAirflowSecrets",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": [Fn.join("", [secrets, "connections/*"]), Fn.join("", [secrets, "variables/*"])],
            },
            {
                "Sid": "WriteAirflowLogs",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogStream",
                    "logs:CreateLogGroup",
                    "logs:PutLogEvents",
                    "logs:GetLogEvents",
                    "logs:GetLogRecord",
                    "logs:GetLogGroupFields",
                    "logs:GetQueryResults",
                ],
                "Resource": Fn.sub(
                    "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:airflow-${EnvironmentName}-*"
                ),
            },
            {
                # DescribeLogGroups has no resource-level permission.
                "Sid": "FindAirflowLogGroups",
                "Effect": "Allow",
                "Action": "logs:DescribeLogGroups",
                "Resource": "*",
            },
            {
                # PutMetricData has no resource-level permission; the namespace condition scopes it.
                "Sid": "AirflowMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": "AmazonMWAA"}},
            },
            {
                # The Celery queue MWAA creates for the environment lives in MWAA's own account, so the ARN's
                # account is a wildcard (as in MWAA's documented execution role policy).
                "Sid": "CeleryQueue",
                "Effect": "Allow",
                "Action": [
                    "sqs:ChangeMessageVisibility",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                    "sqs:ReceiveMessage",
                    "sqs:SendMessage",
                ],
                "Resource": Fn.sub("arn:${AWS::Partition}:sqs:${AWS::Region}:*:airflow-celery-*"),
            },
            {
                # ... and is encrypted with an AWS-owned key, outside this account: keys of this account excluded.
                "Sid": "CeleryQueueKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey", "kms:Encrypt"],
                "NotResource": Fn.sub("arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"),
                "Condition": {"StringLike": {"kms:ViaService": [Fn.sub("sqs.${AWS::Region}.amazonaws.com")]}},
            },
        ]
        self.role = CfnResource(
            self,
            "MwaaExecutionRole",
            type="AWS::IAM::Role",
            properties={
                "RoleName": self._name("mwaa-execution"),
                "Description": "The pipeline's tasks: read raw, write processed, consume events, read secrets",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": ["airflow.amazonaws.com", "airflow-env.amazonaws.com"]},
                            "Action": "sts:AssumeRole",
                            "Condition": {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
                        }
                    ],
                },
                "Policies": [
                    {
                        "PolicyName": "pipeline",
                        "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                    }
                ],
            },
        )

    # ------------------------------------------------------------------ MWAA
    def _environment(self, openlineage_transport: dict[str, Any] | None) -> None:
        options: dict[str, Any] = {
            "secrets.backend": CONNECTIONS_BACKEND,
            "secrets.backend_kwargs": Fn.sub(
                json.dumps(
                    {
                        "connections_prefix": "${BackendPrefix}/connections",
                        "variables_prefix": "${BackendPrefix}/variables",
                    }
                )
            ),
            "core.load_examples": "false",
        }
        # Lineage: the OpenLineage provider's transport, e.g. {"type": "http", "url": ...} (a Marquez or DataHub
        # endpoint), from `python -m infra.app --openlineage-transport` (infra/app.py).
        if openlineage_transport:
            options["openlineage.transport"] = json.dumps(openlineage_transport)
            options["openlineage.namespace"] = self.env_name.value_as_string
        bucket = self.env_bucket.get_att("Arn").to_string()
        log = {"Enabled": True, "LogLevel": "INFO"}
        self.mwaa_env = CfnResource(
            self,
            "MwaaEnvironment",
            type="AWS::MWAA::Environment",
            properties={
                "Name": self.env_name.value_as_string,
                "AirflowVersion": self.airflow_version.value_as_string,
                "EnvironmentClass": self.env_class.value_as_string,
                "MinWorkers": self.min_workers.value_as_number,
                "MaxWorkers": self.max_workers.value_as_number,
                "Schedulers": self.schedulers.value_as_number,
                "ExecutionRoleArn": self.role.get_att("Arn").to_string(),
                "SourceBucketArn": bucket,
                "DagS3Path": "dags",
                "RequirementsS3Path": "requirements.txt",
                "RequirementsS3ObjectVersion": Fn.condition_if(
                    self.has_req_version.logical_id, self.requirements_version.value_as_string, Aws.NO_VALUE
                ),
                "StartupScriptS3Path": "startup.sh",
                "StartupScriptS3ObjectVersion": Fn.condition_if(
                    self.has_startup_version.logical_id, self.startup_version.value_as_string, Aws.NO_VALUE
                ),
                "NetworkConfiguration": {
                    "SubnetIds": [s.ref for s in self.private_subnets],
                    "SecurityGroupIds": [self.mwaa_sg.get_att("GroupId").to_string()],
                },
                "WebserverAccessMode": self.webserver_access.value_as_string,
                "LoggingConfiguration": {
                    "DagProcessingLogs": log,
                    "SchedulerLogs": log,
                    "TaskLogs": log,
                    "WebserverLogs": {"Enabled": True, "LogLevel": "WARNING"},
                    "WorkerLogs": log,
                },
                "AirflowConfigurationOptions": options,
                "WeeklyMaintenanceWindowStart": "SUN:03:00",
            },
        )
        self.mwaa_env.cfn_options.condition = self.with_env
        # Workers start only once they can reach PyPI and AWS through the NAT gateway.
        self.mwaa_env.node.add_dependency(self.private_route)

    # ------------------------------------------------------------------ outputs
    def _outputs(self) -> None:
        def out(key: str, value: str, description: str, condition: CfnCondition | None = None) -> None:
            o = CfnOutput(self, key, value=value, description=description)
            if condition:
                o.condition = condition

        out(naming.RAW_BUCKET_OUTPUT, self.raw_bucket.ref, "raw zone: raw/<dataset>/dt=YYYY-MM-DD/*.csv[.gz]")
        out(naming.PROCESSED_BUCKET_OUTPUT, self.processed_bucket.ref, "processed/<dataset>/ and rejected/<dataset>/")
        out(
            naming.ENVIRONMENT_BUCKET_OUTPUT,
            self.env_bucket.ref,
            "MWAA source bucket: dags/, requirements.txt, startup.sh",
        )
        out(naming.ALERT_EMAILS_OUTPUT, self.alert_emails.value_as_string, "who gets the pipeline's emails")
        out("AccessLogsBucketName", self.log_bucket.ref, "S3 server access logs (s3/) and VPC flow logs (AWSLogs/)")
        out(
            naming.DATA_KEY_OUTPUT, self.key.get_att("Arn").to_string(), "KMS key of buckets, queues, database, secrets"
        )
        for ds, queue in self.queues.items():
            out(naming.queue_url_output(ds), queue.ref, f"SQS queue of S3 events for raw/{ds}/")
            out(
                f"EventsDeadLetterQueueUrl{naming.camel(ds)}",
                Fn.ref(f"EventsDeadLetterQueue{naming.camel(ds)}"),
                f"messages about raw/{ds}/ that were received 5 times and never deleted",
            )
        out("DatabaseEndpoint", self.database.get_att("Endpoint.Address").to_string(), "the warehouse's host (private)")
        out("WarehouseSecretArn", self.warehouse_secret.ref, "connection `warehouse` = the RDS master credential")
        out("SmtpSecretArn", self.smtp_secret.ref, "connection `smtp_default`: put the SES SMTP login/password in")
        out("ExecutionRoleArn", self.role.get_att("Arn").to_string(), "the MWAA execution role")
        out(
            "AirflowUiUrl",
            Fn.join("", ["https://", self.mwaa_env.get_att("WebserverUrl").to_string()]),
            "the Airflow UI (sign in through the AWS console)",
            self.with_env,
        )
