//! The `kind: EcsService` document of `kforge deploy`: serde DTOs exactly as written, unknown fields rejected,
//! parse errors with `file:line:col`. Meaning and defaults live in `crate::ecs::model`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A `kind: EcsService` document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EcsServiceSpec {
    /// Always `kforge.dev/v1alpha1`.
    pub api_version: String,
    /// Always `EcsService`.
    pub kind: String,
    pub metadata: ServiceMetadata,
    pub spec: EcsServiceBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMetadata {
    /// Service name: 1–32 characters, letters, digits and '-', starting with a letter.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EcsServiceBody {
    /// ECS cluster; created when missing, with the FARGATE and FARGATE_SPOT capacity providers.
    pub cluster: String,
    /// AWS region. Default: `--region`, then `AWS_REGION` / `AWS_DEFAULT_REGION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Image reference (`123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1.2`, `public.ecr.aws/nginx/nginx:1.27`).
    /// Give `push` instead for a local image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A local image pushed to ECR before the deploy (with `kforge push image`'s code); the task runs it by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSpec>,
    /// Task CPU units: 256, 512, 1024, 2048, 4096, 8192 or 16384. Default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Task memory in MiB; must suit `cpu` (Fargate's combinations). Default 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// `x86_64` (default) or `arm64` (Graviton).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// The port the container listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// Overrides the image's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    /// Environment variables read from SSM parameters or Secrets Manager secrets, by ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Tasks to run. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_count: Option<u32>,
    /// Run the tasks on Fargate Spot (up to 70 % cheaper; tasks can be interrupted). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<bool>,
    pub network: ServiceNetworkSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSpec>,
    /// Role ECS uses to pull the image, write logs and read secrets. Default: one kforge creates with exactly
    /// those permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// Role the application runs as. Default: one kforge creates without permissions (attach what the app needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentSpec>,
    /// Extra tags put on everything kforge creates for the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PushSpec {
    /// `oci:DIR[:TAG]`, `docker-archive:FILE.tar[:NAME:TAG]`, `docker-daemon:NAME:TAG` or `NAME:TAG`.
    pub source: String,
    /// ECR repository `NAME[:TAG]` in the service's account and region (created if missing). Default: the service
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// `["CMD-SHELL", "curl -f http://localhost:8080/health || exit 1"]` or `["CMD", "/bin/check"]`.
    pub command: Vec<String>,
    /// Between checks, 5s–300s. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// 2s–120s. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// 1–10. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Grace after start, 0s–300s. Default 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceNetworkSpec {
    /// A kforge cluster whose network the tasks join: its private subnets (public ones with `assignPublicIp`), and
    /// a security group kforge creates for the service (container port open to the VPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Subnet ids, instead of `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<String>>,
    /// Security group ids, with `subnets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    /// Give tasks public addresses (needed in public subnets without NAT to pull images). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_public_ip: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    /// ELBv2 target group (type ip) the tasks register with.
    pub target_group_arn: String,
    /// Default: `containerPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// Seconds ECS ignores failing load-balancer health checks of a new task. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogsSpec {
    /// CloudWatch log group. Default `/kforge/ecs/CLUSTER/SERVICE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Days to keep logs (CloudWatch's values: 1, 3, 5, 7, 14, 30, 60, 90, …). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// How long `deploy` waits for the service to be stable. Default 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Percent of desired tasks kept running during a deployment. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_healthy_percent: Option<u32>,
    /// Percent of desired tasks allowed during a deployment. Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_percent: Option<u32>,
}
