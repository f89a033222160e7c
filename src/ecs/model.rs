//! The validated ECS service: defaults applied once, every semantic problem reported with its field path and a
//! hint, all before any AWS call (Fargate's cpu/memory combinations, secret ARNs, ports, durations, names).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::model::{FieldError, ValidationError};
use crate::registry;
use crate::spec::ecs::EcsServiceSpec;

/// Where the task's image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// A reference the tasks pull as is.
    Reference(String),
    /// A local image pushed to ECR first; the tasks then run `repository@digest`.
    Push {
        source: registry::Source,
        repository: String,
        tag: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Network {
    /// A kforge cluster's network: its subnets and a service security group kforge manages.
    Cluster(String),
    Explicit {
        subnets: Vec<String>,
        security_groups: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval: u32,
    pub timeout: u32,
    pub retries: u32,
    pub start_period: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancer {
    pub target_group_arn: String,
    pub container_port: u16,
    pub grace_period: u32,
}

/// A secret's source, by the ARN's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    SsmParameter,
    SecretsManager,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EcsService {
    pub name: String,
    pub cluster: String,
    pub region: String,
    pub image: ImageSource,
    pub cpu: u32,
    pub memory: u32,
    /// `X86_64` or `ARM64`, as ECS spells it.
    pub architecture: &'static str,
    pub container_port: Option<u16>,
    pub command: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, (String, SecretKind)>,
    pub health_check: Option<HealthCheck>,
    pub desired_count: u32,
    pub spot: bool,
    pub network: Network,
    pub assign_public_ip: bool,
    pub load_balancer: Option<LoadBalancer>,
    pub execution_role_arn: Option<String>,
    pub task_role_arn: Option<String>,
    pub log_group: String,
    pub log_retention_days: u32,
    pub deployment_timeout: Duration,
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
    pub tags: BTreeMap<String, String>,
}

/// CloudWatch Logs' accepted retention periods.
pub const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

/// Fargate's memory sizes (MiB) for a cpu value, or `None` for a cpu Fargate does not offer.
pub fn fargate_memory(cpu: u32) -> Option<Vec<u32>> {
    let range = |from: u32, to: u32, step: u32| (from..=to).step_by(step as usize).collect::<Vec<_>>();
    Some(match cpu {
        256 => vec![512, 1024, 2048],
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122880, 8192),
        _ => return None,
    })
}

impl EcsService {
    /// The stack name kforge tags and names the service's resources with: `ecs-CLUSTER-SERVICE`.
    pub fn stack(&self) -> String {
        stack_name(&self.cluster, &self.name)
    }

    /// The task definition family.
    pub fn family(&self) -> String {
        family_name(&self.cluster, &self.name)
    }

    pub fn from_spec(
        spec: &EcsServiceSpec,
        origin: &str,
        fallback_region: Option<String>,
        base_dir: &Path,
    ) -> Result<EcsService, ValidationError> {
        let mut errors = Vec::new();
        let mut err = |path: &str, message: String, hint: &str| {
            errors.push(FieldError {
                path: path.into(),
                message,
                hint: hint.into(),
            })
        };
        let b = &spec.spec;
        let name = spec.metadata.name.clone();
        if !valid_name(&name, 32) {
            err(
                "metadata.name",
                format!("`{name}` is not a valid service name"),
                "1-32 characters: letters, digits and '-', starting with a letter",
            );
        }
        if !valid_name(&b.cluster, 64) {
            err(
                "spec.cluster",
                format!("`{}` is not a valid ECS cluster name", b.cluster),
                "1-64 characters: letters, digits and '-', starting with a letter",
            );
        }
        let region = b.region.clone().or(fallback_region).unwrap_or_default();
        if region.is_empty() {
            err(
                "spec.region",
                "no region given".into(),
                "set spec.region, pass --region or set AWS_REGION",
            );
        } else if !crate::model::is_region(&region) {
            err(
                "spec.region",
                format!("`{region}` is not an AWS region name"),
                "use a region such as us-east-1 or eu-west-1",
            );
        }

        let image = match (&b.image, &b.push) {
            (Some(_), Some(_)) => {
                err(
                    "spec.push",
                    "both `image` and `push` are set".into(),
                    "keep `image` for a registry image, or `push` for a local one",
                );
                None
            }
            (None, None) => {
                err(
                    "spec.image",
                    "no image given".into(),
                    "set spec.image to an image reference, or spec.push.source to a local image (oci:DIR, docker-archive:FILE, NAME:TAG)",
                );
                None
            }
            (Some(i), None) if i.trim().is_empty() || i.contains(char::is_whitespace) => {
                err(
                    "spec.image",
                    format!("`{i}` is not an image reference"),
                    "e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1.2",
                );
                None
            }
            (Some(i), None) => Some(ImageSource::Reference(i.clone())),
            (None, Some(p)) => {
                let source = match registry::Source::parse(&p.source) {
                    Ok(registry::Source::OciLayout { dir, tag }) if dir.is_relative() => {
                        Some(registry::Source::OciLayout {
                            dir: base_dir.join(dir),
                            tag,
                        })
                    }
                    Ok(registry::Source::DockerArchive { file, image }) if file.is_relative() => {
                        Some(registry::Source::DockerArchive {
                            file: base_dir.join(file),
                            image,
                        })
                    }
                    Ok(s) => Some(s),
                    Err(e) => {
                        err("spec.push.source", e.to_string(), "see `kforge push image --help`");
                        None
                    }
                };
                let repo = p.repository.clone().unwrap_or_else(|| name.clone());
                let target = match registry::Target::parse(&repo) {
                    Ok(registry::Target::Ecr { repository, tag }) => Some((repository, tag)),
                    Ok(registry::Target::Registry(_)) => {
                        err(
                            "spec.push.repository",
                            format!("`{repo}` names a registry host"),
                            "give an ECR repository name (REPO[:TAG]); use spec.image for other registries",
                        );
                        None
                    }
                    Err(e) => {
                        err(
                            "spec.push.repository",
                            e.to_string(),
                            "an ECR repository name, lower-case",
                        );
                        None
                    }
                };
                match (source, target) {
                    (Some(source), Some((repository, tag))) => Some(ImageSource::Push {
                        source,
                        repository,
                        tag,
                    }),
                    _ => None,
                }
            }
        };

        let cpu = b.cpu.unwrap_or(256);
        let memory = b.memory.unwrap_or(512);
        match fargate_memory(cpu) {
            None => err(
                "spec.cpu",
                format!("{cpu} is not a Fargate cpu size"),
                "use 256, 512, 1024, 2048, 4096, 8192 or 16384",
            ),
            Some(sizes) if !sizes.contains(&memory) => err(
                "spec.memory",
                format!("{memory} MiB does not go with cpu {cpu} on Fargate"),
                &format!(
                    "with cpu {cpu} use one of: {}",
                    sizes.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ),
            ),
            Some(_) => {}
        }
        let architecture = match b.architecture.as_deref().unwrap_or("x86_64") {
            "x86_64" | "amd64" => "X86_64",
            "arm64" | "aarch64" => "ARM64",
            other => {
                err(
                    "spec.architecture",
                    format!("`{other}` is not an architecture"),
                    "use x86_64 or arm64",
                );
                "X86_64"
            }
        };
        if b.container_port == Some(0) {
            err("spec.containerPort", "0 is not a port".into(), "a port from 1 to 65535");
        }

        let environment = b.environment.clone().unwrap_or_default();
        for key in environment.keys() {
            if !valid_env_name(key) {
                err(
                    &format!("spec.environment.{key}"),
                    format!("`{key}` is not a valid variable name"),
                    "letters, digits and '_', not starting with a digit",
                );
            }
        }
        let mut secrets = BTreeMap::new();
        for (key, arn) in b.secrets.clone().unwrap_or_default() {
            let path = format!("spec.secrets.{key}");
            if !valid_env_name(&key) {
                err(
                    &path,
                    format!("`{key}` is not a valid variable name"),
                    "letters, digits and '_', not starting with a digit",
                );
            }
            if environment.contains_key(&key) {
                err(
                    &path,
                    format!("`{key}` is also in spec.environment"),
                    "keep it in one of them",
                );
            }
            match secret_kind(&arn) {
                Some(kind) => {
                    secrets.insert(key, (arn, kind));
                }
                None => err(
                    &path,
                    format!("`{arn}` is not an SSM parameter or Secrets Manager secret ARN"),
                    "use arn:aws:ssm:REGION:ACCOUNT:parameter/NAME or arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME",
                ),
            }
        }

        let mut seconds = |path: &str, value: Option<&String>, default: u32, range: (u32, u32)| -> u32 {
            let Some(text) = value else { return default };
            match humantime::parse_duration(text) {
                Ok(d) if (range.0 as u64..=range.1 as u64).contains(&d.as_secs()) && d.subsec_nanos() == 0 => {
                    d.as_secs() as u32
                }
                Ok(_) => {
                    err(
                        path,
                        format!("`{text}` is out of range"),
                        &format!("between {}s and {}s, whole seconds", range.0, range.1),
                    );
                    default
                }
                Err(_) => {
                    err(path, format!("`{text}` is not a duration"), "e.g. 30s or 2m");
                    default
                }
            }
        };
        let health_check = b.health_check.as_ref().map(|h| HealthCheck {
            command: h.command.clone(),
            interval: seconds("spec.healthCheck.interval", h.interval.as_ref(), 30, (5, 300)),
            timeout: seconds("spec.healthCheck.timeout", h.timeout.as_ref(), 5, (2, 120)),
            retries: h.retries.unwrap_or(3),
            start_period: seconds("spec.healthCheck.startPeriod", h.start_period.as_ref(), 0, (0, 300)),
        });
        if let Some(h) = &health_check {
            if !matches!(h.command.first().map(String::as_str), Some("CMD" | "CMD-SHELL")) || h.command.len() < 2 {
                err(
                    "spec.healthCheck.command",
                    "must start with CMD or CMD-SHELL, then the command".into(),
                    r#"e.g. ["CMD-SHELL", "curl -f http://localhost:8080/ || exit 1"]"#,
                );
            }
            if !(1..=10).contains(&h.retries) {
                err(
                    "spec.healthCheck.retries",
                    format!("{} is out of range", h.retries),
                    "from 1 to 10",
                );
            }
        }

        let network = match (&b.network.cluster, &b.network.subnets, &b.network.security_groups) {
            (Some(c), None, None) => {
                if !valid_name(c, 40) {
                    err(
                        "spec.network.cluster",
                        format!("`{c}` is not a kforge cluster name"),
                        "the metadata.name of a kforge Cluster spec",
                    );
                }
                Some(Network::Cluster(c.clone()))
            }
            (None, Some(subnets), sgs) => {
                if subnets.is_empty() {
                    err(
                        "spec.network.subnets",
                        "no subnet given".into(),
                        "list at least one subnet id",
                    );
                }
                for (i, s) in subnets.iter().enumerate() {
                    if !s.starts_with("subnet-") {
                        err(
                            &format!("spec.network.subnets[{i}]"),
                            format!("`{s}` is not a subnet id"),
                            "subnet ids start with subnet-",
                        );
                    }
                }
                let sgs = sgs.clone().unwrap_or_default();
                if sgs.is_empty() {
                    err(
                        "spec.network.securityGroups",
                        "no security group given".into(),
                        "list the security group ids the tasks get (or use network.cluster)",
                    );
                }
                for (i, g) in sgs.iter().enumerate() {
                    if !g.starts_with("sg-") {
                        err(
                            &format!("spec.network.securityGroups[{i}]"),
                            format!("`{g}` is not a security group id"),
                            "security group ids start with sg-",
                        );
                    }
                }
                Some(Network::Explicit {
                    subnets: subnets.clone(),
                    security_groups: sgs,
                })
            }
            (Some(_), _, _) => {
                err(
                    "spec.network",
                    "`cluster` and explicit `subnets`/`securityGroups` are both set".into(),
                    "use one: a kforge cluster's network, or explicit ids",
                );
                None
            }
            (None, None, _) => {
                err(
                    "spec.network",
                    "no network given".into(),
                    "set network.cluster to a kforge cluster, or network.subnets and network.securityGroups",
                );
                None
            }
        };

        let load_balancer = b.load_balancer.as_ref().and_then(|lb| {
            if !lb.target_group_arn.starts_with("arn:") || !lb.target_group_arn.contains(":targetgroup/") {
                err(
                    "spec.loadBalancer.targetGroupArn",
                    format!("`{}` is not a target group ARN", lb.target_group_arn),
                    "arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID",
                );
            }
            let port = lb.container_port.or(b.container_port);
            if port.is_none() {
                err(
                    "spec.loadBalancer.containerPort",
                    "no container port for the load balancer".into(),
                    "set spec.containerPort",
                );
            }
            port.map(|p| LoadBalancer {
                target_group_arn: lb.target_group_arn.clone(),
                container_port: p,
                grace_period: lb.health_check_grace_period.unwrap_or(30),
            })
        });
        for (field, arn) in [
            ("spec.executionRoleArn", &b.execution_role_arn),
            ("spec.taskRoleArn", &b.task_role_arn),
        ] {
            if let Some(a) = arn
                && !(a.starts_with("arn:") && a.contains(":iam::") && a.contains(":role/"))
            {
                err(
                    field,
                    format!("`{a}` is not an IAM role ARN"),
                    "arn:aws:iam::ACCOUNT:role/NAME, or leave it out to have kforge create the role",
                );
            }
        }
        let logs = b.logs.clone().unwrap_or(crate::spec::ecs::LogsSpec {
            group: None,
            retention_days: None,
        });
        let log_group = logs
            .group
            .clone()
            .unwrap_or_else(|| format!("/kforge/ecs/{}/{}", b.cluster, name));
        if log_group.is_empty()
            || log_group.len() > 512
            || !log_group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c))
        {
            err(
                "spec.logs.group",
                format!("`{log_group}` is not a log group name"),
                "letters, digits and _ - / . #",
            );
        }
        let log_retention_days = logs.retention_days.unwrap_or(30);
        if !RETENTION_DAYS.contains(&log_retention_days) {
            err(
                "spec.logs.retentionDays",
                format!("{log_retention_days} is not a CloudWatch retention period"),
                "use 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653",
            );
        }
        let deployment = b.deployment.clone().unwrap_or(crate::spec::ecs::DeploymentSpec {
            timeout: None,
            minimum_healthy_percent: None,
            maximum_percent: None,
        });
        let deployment_timeout = match deployment.timeout.as_deref() {
            None => Duration::from_secs(15 * 60),
            Some(t) => humantime::parse_duration(t).unwrap_or_else(|_| {
                err(
                    "spec.deployment.timeout",
                    format!("`{t}` is not a duration"),
                    "e.g. 15m",
                );
                Duration::from_secs(15 * 60)
            }),
        };
        let minimum_healthy_percent = deployment.minimum_healthy_percent.unwrap_or(100);
        let maximum_percent = deployment.maximum_percent.unwrap_or(200);
        if maximum_percent < 100 || minimum_healthy_percent > 100 || maximum_percent <= minimum_healthy_percent {
            err(
                "spec.deployment",
                format!(
                    "minimumHealthyPercent {minimum_healthy_percent} and maximumPercent {maximum_percent} leave no room to deploy"
                ),
                "minimumHealthyPercent ≤ 100 < maximumPercent, e.g. 100 and 200",
            );
        }
        let desired_count = b.desired_count.unwrap_or(1);
        if desired_count > 5000 {
            err(
                "spec.desiredCount",
                format!("{desired_count} tasks is more than a service runs"),
                "at most 5000",
            );
        }

        if !errors.is_empty() {
            return Err(ValidationError {
                origin: origin.to_string(),
                errors,
            });
        }
        Ok(EcsService {
            name,
            cluster: b.cluster.clone(),
            region,
            image: image.expect("checked"),
            cpu,
            memory,
            architecture,
            container_port: b.container_port,
            command: b.command.clone(),
            environment,
            secrets,
            health_check,
            desired_count,
            spot: b.spot.unwrap_or(false),
            network: network.expect("checked"),
            assign_public_ip: b.network.assign_public_ip.unwrap_or(false),
            load_balancer,
            execution_role_arn: b.execution_role_arn.clone(),
            task_role_arn: b.task_role_arn.clone(),
            log_group,
            log_retention_days,
            deployment_timeout,
            minimum_healthy_percent,
            maximum_percent,
            tags: b.tags.clone().unwrap_or_default(),
        })
    }
}

pub fn stack_name(cluster: &str, service: &str) -> String {
    format!("ecs-{cluster}-{service}")
}

pub fn family_name(cluster: &str, service: &str) -> String {
    format!("{cluster}-{service}")
}

fn valid_name(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME` or `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME`.
pub fn secret_kind(arn: &str) -> Option<SecretKind> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return None;
    };
    let ok = *prefix == "arn"
        && partition.starts_with("aws")
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit());
    match (*service, ok) {
        ("ssm", true) if resource.strip_prefix("parameter/").is_some_and(|n| !n.is_empty()) => {
            Some(SecretKind::SsmParameter)
        }
        ("secretsmanager", true) if resource.strip_prefix("secret:").is_some_and(|n| !n.is_empty()) => {
            Some(SecretKind::SecretsManager)
        }
        _ => None,
    }
}

/// Reads, parses and validates a service spec.
pub fn load_service(path: &Path, fallback_region: Option<String>) -> anyhow::Result<EcsService> {
    let spec: EcsServiceSpec = crate::spec::load_kind(
        path,
        "EcsService",
        "`kforge deploy` takes a `kind: EcsService` document",
    )?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(EcsService::from_spec(
        &spec,
        &path.display().to_string(),
        fallback_region,
        &base,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<EcsService, ValidationError> {
        let text = format!(
            "apiVersion: kforge.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: web\nspec:\n  cluster: apps\n  region: us-east-1\n{body}"
        );
        let spec: EcsServiceSpec = crate::spec::parse_kind(&text, "s.yaml", "EcsService", "").unwrap();
        EcsService::from_spec(&spec, "s.yaml", None, Path::new("."))
    }

    fn paths(e: &ValidationError) -> Vec<&str> {
        e.errors.iter().map(|f| f.path.as_str()).collect()
    }

    const NET: &str = "  network:\n    subnets: [subnet-1]\n    securityGroups: [sg-1]\n";

    #[test]
    fn defaults() {
        let s = check(&format!("  image: nginx:1.27\n{NET}")).unwrap();
        assert_eq!((s.cpu, s.memory, s.desired_count), (256, 512, 1));
        assert_eq!(s.log_group, "/kforge/ecs/apps/web");
        assert_eq!(s.family(), "apps-web");
        assert_eq!(s.deployment_timeout, Duration::from_secs(900));
    }

    #[test]
    fn fargate_sizes_are_checked() {
        let e = check(&format!("  image: nginx\n  cpu: 1024\n  memory: 512\n{NET}")).unwrap_err();
        assert_eq!(paths(&e), ["spec.memory"]);
        assert!(e.to_string().contains("with cpu 1024 use one of: 2048, 3072"), "{e}");
        let e = check(&format!("  image: nginx\n  cpu: 300\n{NET}")).unwrap_err();
        assert_eq!(paths(&e), ["spec.cpu"]);
        assert!(check(&format!("  image: nginx\n  cpu: 8192\n  memory: 20480\n{NET}")).is_ok());
    }

    #[test]
    fn image_secrets_and_network_problems_name_their_fields() {
        let e = check("  network:\n    cluster: demo\n  secrets:\n    DB: not-an-arn\n    OK: arn:aws:ssm:us-east-1:123456789012:parameter/db/pw\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.image", "spec.secrets.DB"]);
        let e = check(&format!(
            "  image: x\n  secrets:\n    K: arn:aws:s3:::bucket/key\n{NET}"
        ))
        .unwrap_err();
        assert_eq!(paths(&e), ["spec.secrets.K"]);
        let e = check("  image: x\n  network: {}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.network"]);
        let e = check("  image: x\n  network:\n    subnets: [net-1]\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.network.subnets[0]", "spec.network.securityGroups"]);
    }

    #[test]
    fn secret_arns() {
        assert_eq!(
            secret_kind("arn:aws:ssm:us-east-1:123456789012:parameter/a/b"),
            Some(SecretKind::SsmParameter)
        );
        assert_eq!(
            secret_kind("arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbC123"),
            Some(SecretKind::SecretsManager)
        );
        assert_eq!(secret_kind("arn:aws:ssm:us-east-1:1234:parameter/a"), None);
        assert_eq!(secret_kind("/db/password"), None);
    }

    #[test]
    fn push_sources_resolve_against_the_spec_directory() {
        let text = "apiVersion: kforge.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: web\nspec:\n  cluster: apps\n  region: us-east-1\n  push:\n    source: oci:build/out:v1\n  network:\n    cluster: demo\n";
        let spec: EcsServiceSpec = crate::spec::parse_kind(text, "s.yaml", "EcsService", "").unwrap();
        let s = EcsService::from_spec(&spec, "s.yaml", None, Path::new("/srv/app")).unwrap();
        assert_eq!(
            s.image,
            ImageSource::Push {
                source: registry::Source::OciLayout {
                    dir: "/srv/app/build/out".into(),
                    tag: Some("v1".into())
                },
                repository: "web".into(),
                tag: None
            }
        );
    }

    #[test]
    fn a_region_must_look_like_one() {
        let text = "apiVersion: kforge.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: web\nspec:\n  cluster: apps\n  region: 'us east 1'\n  image: nginx:1\n  network:\n    subnets: [subnet-1]\n    securityGroups: [sg-1]\n";
        let spec: EcsServiceSpec = crate::spec::parse_kind(text, "s.yaml", "EcsService", "").unwrap();
        let e = EcsService::from_spec(&spec, "s.yaml", None, Path::new(".")).unwrap_err();
        assert_eq!(paths(&e), ["spec.region"]);
    }
}
