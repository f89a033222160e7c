//! `kforge deploy`, `get services` and `delete service`: an ECS/Fargate service from one `kind: EcsService` spec.
//! Deploy pushes a local image first (the registry code), then reconciles through the same engine as clusters:
//! ECS cluster, log group, least-privilege roles, a service security group in a kforge cluster's VPC, a task
//! definition revision only when the rendered one changed, and the service, whose readiness is a steady
//! deployment. Names derive from cluster and service (`ecs-CLUSTER-SERVICE`), so delete works without the spec.

pub mod model;
pub mod resources;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde::Serialize;

use crate::aws::inventory::Inventory;
use crate::aws::{Aws, ErrorClass, aws_err, sdk_class, tags};
use crate::delete::Kind;
use crate::engine::{self, Ctx, ExecOptions, Phase, Resource};
use crate::progress::{Event, Reporter};
use crate::providers::iam::{ExistingRole, IamRole};
use crate::providers::network::subnet_role_tag;
use crate::providers::security_group::{Rule, SecurityGroupRes, SecurityGroupRules, Source};
use crate::registry;
use crate::spec::SubnetType;
pub use model::{EcsService, ImageSource, Network, load_service};
use resources::{EcsClusterRes, EcsServiceRes, Known, LogGroupRes, TaskDefinitionRes};

/// IAM role names are at most 64 characters; long stacks keep a prefix and a hash of the whole.
pub fn role_name(stack: &str, suffix: &str) -> String {
    let full = format!("{stack}-{suffix}");
    if full.len() <= 64 {
        return full;
    }
    let hash = registry::source::sha256_digest(full.as_bytes());
    let keep = 64 - suffix.len() - 10;
    format!("{}-{}-{suffix}", &stack[..keep], &hash[7..15])
}

/// The execution role's permissions: pull the image (ECR repositories only), write this log group, read these
/// secrets. Nothing else.
pub fn execution_policy(s: &EcsService, image: &str, partition: &str) -> serde_json::Value {
    let mut statements = vec![serde_json::json!({
        "Sid": "Logs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": format!("arn:{partition}:logs:{}:*:log-group:{}:*", s.region, s.log_group)
    })];
    let host = image.split('/').next().unwrap_or_default();
    if let Some(ecr) = registry::EcrHost::parse(host) {
        let path = image[host.len() + 1..].split(['@', ':']).next().unwrap_or_default();
        statements.push(serde_json::json!({"Sid": "PullAuth", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}));
        statements.push(serde_json::json!({
            "Sid": "Pull",
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
            "Resource": format!("arn:{partition}:ecr:{}:{}:repository/{path}", ecr.region, ecr.account)
        }));
    }
    let arns = |kind: model::SecretKind| -> Vec<String> {
        s.secrets
            .values()
            .filter(|(_, k)| *k == kind)
            .map(|(a, _)| a.clone())
            .collect()
    };
    let ssm = arns(model::SecretKind::SsmParameter);
    if !ssm.is_empty() {
        statements.push(
            serde_json::json!({"Sid": "Parameters", "Effect": "Allow", "Action": "ssm:GetParameters", "Resource": ssm}),
        );
    }
    let sm = arns(model::SecretKind::SecretsManager);
    if !sm.is_empty() {
        statements.push(serde_json::json!({"Sid": "Secrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": sm}));
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": statements})
}

fn stack_tags(s: &EcsService, logical: &str) -> BTreeMap<String, String> {
    let mut t = s.tags.clone();
    let stack = s.stack();
    t.insert("Name".into(), format!("{stack}-{}", logical.replace('/', "-")));
    t.insert(tags::CLUSTER.into(), stack);
    t.insert(tags::RESOURCE.into(), logical.into());
    t.insert(tags::MANAGED_BY.into(), tags::MANAGER.into());
    t.insert("kforge.dev/ecs-service".into(), format!("{}/{}", s.cluster, s.name));
    t
}

/// A kforge cluster's network as a service sees it.
struct ClusterNetwork {
    vpc: String,
    cidr: String,
    subnets: Vec<String>,
}

async fn cluster_network(aws: &Aws, cluster: &str, public: bool) -> anyhow::Result<ClusterNetwork> {
    // The cluster's own inventory: the same tag-filtered listings its plan makes.
    let inventory = Inventory::new(cluster);
    let Some(vpc) = inventory.vpcs(aws).await?.first() else {
        anyhow::bail!(
            "spec.network.cluster: kforge cluster {cluster} has no network in {}\n  hint: create it first (`kforge \
             create cluster -f SPEC --phase network`), or give network.subnets and network.securityGroups",
            aws.region()
        );
    };
    let kind = if public {
        SubnetType::Public
    } else {
        SubnetType::Private
    };
    let (role_key, role_value) = subnet_role_tag(kind);
    let mut ids: Vec<String> = inventory
        .subnets(aws)
        .await?
        .iter()
        .filter(|s| {
            s.tags()
                .iter()
                .any(|t| t.key() == Some(role_key) && t.value() == Some(role_value))
        })
        .filter_map(|s| s.subnet_id().map(str::to_string))
        .collect();
    ids.sort();
    if ids.is_empty() {
        anyhow::bail!(
            "spec.network.cluster: kforge cluster {cluster} has no {kind} subnets\n  hint: {}",
            if public {
                "drop assignPublicIp to use its private subnets"
            } else {
                "set network.assignPublicIp: true to use its public subnets (a public topology has no private ones)"
            }
        );
    }
    Ok(ClusterNetwork {
        vpc: vpc.vpc_id().unwrap_or_default().to_string(),
        cidr: vpc.cidr_block().unwrap_or_default().to_string(),
        subnets: ids,
    })
}

/// Pushes a local image to ECR (when the spec says `push`) and returns the reference the tasks run.
async fn resolve_image(aws: &Aws, s: &EcsService, quiet: bool, reporter: &dyn Reporter) -> anyhow::Result<String> {
    let ImageSource::Push {
        source,
        repository,
        tag,
    } = &s.image
    else {
        let ImageSource::Reference(r) = &s.image else {
            unreachable!()
        };
        return Ok(r.clone());
    };
    let image = registry::load_source(source).await?;
    let tag = registry::effective_tag(tag.as_deref(), &image);
    let endpoint = std::env::var("KFORGE_ECR_REGISTRY_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let settings = registry::ecr::RepositorySettings::default();
    let (dest, repo) = registry::ecr_destination(aws, repository, None, tag, &settings, endpoint.as_deref()).await?;
    reporter.event(Event::Note(format!(
        "pushing {} to ECR repository {repository}",
        image.source
    )));
    let report = registry::push_image(&image, &dest, &registry::PushOptions::default(), quiet).await?;
    // By digest: a new image is a new task definition revision, and a moved tag cannot change what runs.
    Ok(format!("{}/{}@{}", repo.registry_host, repository, report.digest))
}

/// What `deploy` did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    pub cluster: String,
    pub service: String,
    pub image: String,
    pub task_definition: String,
    pub resources: Vec<engine::Applied>,
}

/// Exit code 5: the new revision failed and ECS rolled the service back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RolledBack(pub String);

pub async fn deploy(
    aws: Aws,
    s: &EcsService,
    opts: &ExecOptions,
    reporter: &dyn Reporter,
    quiet: bool,
) -> anyhow::Result<DeployReport> {
    let image = resolve_image(&aws, s, quiet, reporter).await?;
    let stack = s.stack();
    let mut resources: Vec<Arc<dyn Resource>> = Vec::new();
    let (subnets, mut groups, mut group_res) = match &s.network {
        Network::Explicit {
            subnets,
            security_groups,
        } => (subnets.clone(), security_groups.clone(), Vec::new()),
        Network::Cluster(name) => {
            let net = cluster_network(&aws, name, s.assign_public_ip).await?;
            resources.push(Arc::new(Known {
                id: "vpc".into(),
                outputs: [
                    ("id".to_string(), net.vpc.clone()),
                    ("cidr".to_string(), net.cidr.clone()),
                ]
                .into(),
                deps: Vec::new(),
            }));
            resources.push(Arc::new(SecurityGroupRes {
                id: "security-group/service".into(),
                name: stack.clone(),
                description: format!("kforge ECS service {} of cluster {}", s.name, s.cluster),
                tags: stack_tags(s, "security-group/service"),
                deps: vec!["vpc".into()],
            }));
            let rules = match (s.container_port, net.cidr.parse()) {
                (Some(port), Ok(cidr)) => vec![Rule::tcp(port as i32, Source::Cidr(cidr))],
                _ => Vec::new(),
            };
            resources.push(Arc::new(SecurityGroupRules {
                id: "security-group-rules/service".into(),
                group: "security-group/service".into(),
                rules,
                deps: vec!["security-group/service".into()],
            }));
            (net.subnets, Vec::new(), vec!["security-group/service".to_string()])
        }
    };
    groups.sort();
    group_res.sort();
    resources.push(Arc::new(EcsClusterRes {
        id: "ecs-cluster".into(),
        name: s.cluster.clone(),
        tags: BTreeMap::from([(tags::MANAGED_BY.to_string(), tags::MANAGER.to_string())]),
        deps: Vec::new(),
    }));
    resources.push(Arc::new(LogGroupRes {
        id: "log-group".into(),
        name: s.log_group.clone(),
        retention_days: s.log_retention_days,
        tags: stack_tags(s, "log-group"),
        deps: Vec::new(),
    }));
    let role = |id: &str,
                suffix: &str,
                arn: &Option<String>,
                field: &'static str,
                policy: Option<serde_json::Value>|
     -> Arc<dyn Resource> {
        match arn {
            Some(arn) => Arc::new(ExistingRole {
                id: id.into(),
                arn: arn.clone(),
                field,
                deps: Vec::new(),
            }),
            None => Arc::new(IamRole {
                id: id.into(),
                name: role_name(&stack, suffix),
                cluster: stack.clone(),
                service: "ecs-tasks.amazonaws.com".into(),
                managed_policies: Vec::new(),
                inline_policy: policy,
                tags: stack_tags(s, id),
                deps: Vec::new(),
            }),
        }
    };
    resources.push(role(
        "role/execution",
        "exec",
        &s.execution_role_arn,
        "spec.executionRoleArn",
        Some(execution_policy(s, &image, aws.partition())),
    ));
    resources.push(role("role/task", "task", &s.task_role_arn, "spec.taskRoleArn", None));
    resources.push(Arc::new(TaskDefinitionRes {
        id: "task-definition".into(),
        service: s.clone(),
        image: image.clone(),
        execution_role: "role/execution".into(),
        task_role: "role/task".into(),
        tags: stack_tags(s, "task-definition"),
        deps: vec!["role/execution".into(), "role/task".into(), "log-group".into()],
    }));
    let failed = Arc::new(Mutex::new(None));
    let mut service_deps = vec!["ecs-cluster".to_string(), "task-definition".to_string()];
    service_deps.extend(group_res.iter().cloned());
    if !group_res.is_empty() {
        service_deps.push("security-group-rules/service".into());
    }
    resources.push(Arc::new(EcsServiceRes {
        id: "service".into(),
        service: s.clone(),
        task_definition: "task-definition".into(),
        subnets,
        security_groups: groups,
        security_group_res: group_res,
        tags: stack_tags(s, "service"),
        deps: service_deps,
        failed: failed.clone(),
        poll: resources::POLL,
    }));

    let ctx = Ctx::new(aws, &stack);
    // ECS stacks have no tagged VPC inventory to list up front.
    let ctx = Arc::new(ctx);
    let phases = [Phase::Network, Phase::Security, Phase::Cluster];
    let plan = engine::plan(&ctx, resources, &phases, opts, reporter).await?;
    let entries = plan.entries();
    let count = |verb: &str| entries.iter().filter(|e| e.change.verb() == verb).count();
    reporter.event(Event::Note(format!(
        "service {} (cluster {}): {} to create, {} to update, {} unchanged",
        s.name,
        s.cluster,
        count("create"),
        count("update"),
        count("unchanged")
    )));
    let report = engine::apply(&ctx, plan, opts, reporter).await?;
    if !report.errors.is_empty() {
        let message = report
            .errors
            .iter()
            .map(|e| format!("{e:#}"))
            .collect::<Vec<_>>()
            .join("\n");
        if *failed.lock().unwrap_or_else(|e| e.into_inner()) == Some(true) {
            return Err(RolledBack(message).into());
        }
        anyhow::bail!("{message}");
    }
    let task_definition = report
        .outputs
        .get("task-definition")
        .and_then(|o| o.get("arn"))
        .cloned()
        .unwrap_or_default();
    Ok(DeployReport {
        cluster: s.cluster.clone(),
        service: s.name.clone(),
        image,
        task_definition,
        resources: report.entries,
    })
}

/// One row of `get services`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRow {
    pub cluster: String,
    pub service: String,
    pub status: String,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub rollout: String,
}

/// The services of `cluster`, or of every cluster in the region.
pub async fn list_services(aws: &Aws, cluster: Option<&str>) -> anyhow::Result<Vec<ServiceRow>> {
    let ecs = aws.ecs();
    let clusters: Vec<String> = match cluster {
        Some(c) => vec![c.to_string()],
        None => ecs
            .list_clusters()
            .send()
            .await
            .map_err(aws_err("ECS clusters", "ListClusters"))?
            .cluster_arns()
            .iter()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .collect(),
    };
    let mut rows = Vec::new();
    for c in clusters {
        let arns = match ecs.list_services().cluster(&c).send().await {
            Ok(out) => out.service_arns().to_vec(),
            Err(e) if sdk_class(&e) == ErrorClass::NotFound => continue,
            Err(e) => return Err(aws_err(format!("ECS cluster {c}"), "ListServices")(e).into()),
        };
        for chunk in arns.chunks(10) {
            let out = ecs
                .describe_services()
                .cluster(&c)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws_err(format!("ECS cluster {c}"), "DescribeServices"))?;
            for svc in out.services() {
                let primary = svc.deployments().iter().find(|d| d.status() == Some("PRIMARY"));
                rows.push(ServiceRow {
                    cluster: c.clone(),
                    service: svc.service_name().unwrap_or_default().to_string(),
                    status: svc.status().unwrap_or_default().to_string(),
                    task_definition: svc
                        .task_definition()
                        .unwrap_or_default()
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    desired: svc.desired_count(),
                    running: svc.running_count(),
                    pending: svc.pending_count(),
                    rollout: primary
                        .and_then(|d| d.rollout_state())
                        .map(|r| r.as_str().to_string())
                        .unwrap_or_default(),
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.cluster, &a.service).cmp(&(&b.cluster, &b.service)));
    Ok(rows)
}

/// What `delete service` removed.
#[derive(Debug, Serialize)]
pub struct Deleted {
    pub kind: &'static str,
    pub name: String,
    pub result: crate::delete::DeleteResult,
}

/// What a service owns, for delete (see `delete::Kind`), in the report's order: the service; with `purge` also its
/// task definitions, its log group, the roles kforge created for it (under its IAM path, never ones the spec
/// named) and its security group.
pub fn kinds(cluster: &str, service: &str, purge: bool) -> Vec<Arc<dyn Kind>> {
    let mut kinds: Vec<Arc<dyn Kind>> = vec![Arc::new(resources::EcsServiceKind {
        cluster: cluster.into(),
        service: service.into(),
    })];
    if purge {
        kinds.extend([
            Arc::new(resources::TaskDefinitionsKind {
                family: model::family_name(cluster, service),
            }) as Arc<dyn Kind>,
            Arc::new(resources::LogGroupKind {
                cluster: cluster.into(),
                service: service.into(),
            }),
            Arc::new(crate::providers::iam::IamRoleKind),
            Arc::new(crate::providers::security_group::SecurityGroupKind),
        ]);
    }
    kinds
}

/// Deletes the service (scaled to 0 first, waited until its tasks drained); with `purge` also what it owns (see
/// [`kinds`]), through the same walk as `delete cluster`. Safe to run again.
pub async fn delete_service(
    aws: Aws,
    cluster: &str,
    name: &str,
    purge: bool,
    opts: &ExecOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<Vec<Deleted>> {
    // Everything a service owns is tagged (and its roles pathed) with its stack name.
    let ctx = Arc::new(Ctx::new(aws, &model::stack_name(cluster, name)));
    let found = crate::delete::discover(&ctx, &kinds(cluster, name, purge), &Phase::ALL).await?;
    let report = crate::delete::sweep(&ctx, found, true, opts, reporter).await?;
    let mut errors = report.errors.into_iter();
    if let Some(first) = errors.next() {
        let others: String = errors.map(|e| format!("\n  - {e:#}")).collect();
        let also = if others.is_empty() {
            String::new()
        } else {
            format!("; also failed:{others}")
        };
        return Err(first.context(format!("deleting ECS service {name} (cluster {cluster}){also}")));
    }
    Ok(report
        .entries
        .into_iter()
        .map(|e| Deleted {
            kind: e.kind,
            name: e.id,
            result: e.result,
        })
        .collect())
}

/// Resolves a service's region and cluster from `-f SPEC`, for `delete service -f`.
pub fn names_from_spec(
    path: &std::path::Path,
    fallback_region: Option<String>,
) -> anyhow::Result<(String, String, String)> {
    let s = load_service(path, fallback_region).context("reading the service spec")?;
    Ok((s.cluster, s.name, s.region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delete::{Doomed, deletion_deps};

    #[test]
    fn a_service_is_gone_before_what_purge_removes() {
        let kinds = kinds("apps", "web", true);
        let items: Vec<Doomed> = kinds
            .iter()
            .map(|k| Doomed::new(k, format!("{}-1", k.name()), None, Some("vpc-1")))
            .collect();
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "ecs-service",
                "task-definition",
                "log-group",
                "iam-role",
                "security-group"
            ]
        );
        assert!(deletion_deps(&items[0], &items).is_empty());
        for item in &items[1..] {
            assert_eq!(
                deletion_deps(item, &items),
                ["ecs-service ecs-service-1"],
                "{}",
                item.kind.name()
            );
        }
        let plain = super::kinds("apps", "web", false);
        assert_eq!(plain.len(), 1, "without --purge only the service");
    }
}
