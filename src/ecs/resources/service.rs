//! The ECS service: created or updated with the circuit breaker on, ready at a steady deployment of its task
//! definition, a failed one reported with the stopped tasks' reasons and the rollback.

use super::*;
use std::sync::Arc;

use crate::delete::{Doomed, Kind, Order};
use crate::engine::wait::not_yet;

/// The ECS service: created or updated with the circuit breaker and rollback on; `ready` waits for a steady
/// deployment of this task definition.
pub struct EcsServiceRes {
    pub id: String,
    pub service: EcsService,
    pub task_definition: String,
    /// Subnet ids; security groups come from `security_groups` (ids) and `security_group_res` (logical ids).
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub security_group_res: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
    /// Set when `ready` found the deployment failed: whether ECS rolled back (the exit code tells).
    pub failed: std::sync::Arc<std::sync::Mutex<Option<bool>>>,
    /// How often the service is described while waiting.
    pub poll: Duration,
}

/// How often the service is described while waiting for a deployment.
pub const POLL: Duration = Duration::from_secs(10);

impl EcsServiceRes {
    fn capacity(&self) -> &'static str {
        if self.service.spot { "FARGATE_SPOT" } else { "FARGATE" }
    }

    fn network_text(subnets: &[String], groups: &[String], public: bool) -> String {
        let mut s = subnets.to_vec();
        s.sort();
        let mut g = groups.to_vec();
        g.sort();
        format!(
            "subnets={} securityGroups={} publicIp={}",
            s.join(","),
            g.join(","),
            public
        )
    }

    fn groups(&self, inputs: &Inputs) -> Value {
        let mut ids = self.security_groups.clone();
        for r in &self.security_group_res {
            match inputs.get(r, "id") {
                Value::Known(id) => ids.push(id),
                Value::Unknown => return Value::Unknown,
            }
        }
        ids.sort();
        Value::Known(ids.join(","))
    }
}

/// What `describe_services` says about the rollout of `task_definition`.
#[derive(Debug, PartialEq)]
pub enum Rollout {
    Steady,
    InProgress(String),
    /// The deployment of our task definition failed; `rolled_back_to` is the task definition ECS went back to.
    Failed {
        reason: String,
        rolled_back_to: Option<String>,
        rollback_state: Option<String>,
    },
}

pub fn rollout(service: &ecs::Service, task_definition: &str) -> Rollout {
    let deployments = service.deployments();
    let ours = deployments
        .iter()
        .find(|d| d.task_definition() == Some(task_definition));
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
    if let Some(d) = ours
        && d.rollout_state() == Some(&ecs::DeploymentRolloutState::Failed)
    {
        let back = primary.filter(|p| p.task_definition() != Some(task_definition));
        return Rollout::Failed {
            reason: d.rollout_state_reason().unwrap_or("the deployment failed").to_string(),
            rolled_back_to: back.and_then(|p| p.task_definition()).map(str::to_string),
            rollback_state: back.and_then(|p| p.rollout_state()).map(|s| s.as_str().to_string()),
        };
    }
    match primary {
        Some(p) if p.task_definition() == Some(task_definition) => {
            let done = match p.rollout_state() {
                Some(s) => *s == ecs::DeploymentRolloutState::Completed,
                None => p.running_count() == p.desired_count(),
            };
            if done && deployments.len() == 1 && p.running_count() >= p.desired_count() {
                Rollout::Steady
            } else {
                Rollout::InProgress(format!(
                    "{}/{} tasks running, {} pending{}",
                    p.running_count(),
                    p.desired_count(),
                    p.pending_count(),
                    if deployments.len() > 1 {
                        ", old tasks draining"
                    } else {
                        ""
                    }
                ))
            }
        }
        // The service already names our task definition but no deployment does yet: ECS has not started it (moto
        // never does; it updates the service in place). Judge by the service's own counts. A rollback would have
        // put the old task definition back on the service, so this cannot hide one.
        Some(p) if ours.is_none() && service.task_definition() == Some(task_definition) => {
            let done = p
                .rollout_state()
                .is_none_or(|s| *s == ecs::DeploymentRolloutState::Completed);
            if done && deployments.len() == 1 && service.running_count() >= service.desired_count() {
                Rollout::Steady
            } else {
                Rollout::InProgress(format!(
                    "{}/{} tasks running, waiting for the deployment to start",
                    service.running_count(),
                    service.desired_count()
                ))
            }
        }
        Some(p) => Rollout::Failed {
            reason: "another task definition became primary (rolled back, or deployed by someone else)".into(),
            rolled_back_to: p.task_definition().map(str::to_string),
            rollback_state: p.rollout_state().map(|s| s.as_str().to_string()),
        },
        None => Rollout::InProgress("no deployment yet".into()),
    }
}

/// Why the latest stopped tasks of a service stopped: `task abc: Essential container exited (web: exit 1: ...)`.
pub async fn stopped_reasons(ctx: &Ctx, cluster: &str, service: &str) -> Vec<String> {
    let ecs = ctx.aws.ecs();
    let Ok(list) = ecs
        .list_tasks()
        .cluster(cluster)
        .service_name(service)
        .desired_status(ecs::DesiredStatus::Stopped)
        .send()
        .await
    else {
        return Vec::new();
    };
    let arns: Vec<String> = list.task_arns().iter().take(5).cloned().collect();
    if arns.is_empty() {
        return Vec::new();
    }
    let Ok(tasks) = ecs.describe_tasks().cluster(cluster).set_tasks(Some(arns)).send().await else {
        return Vec::new();
    };
    tasks
        .tasks()
        .iter()
        .map(|t| {
            let id = t.task_arn().unwrap_or_default().rsplit('/').next().unwrap_or_default();
            let containers: Vec<String> = t
                .containers()
                .iter()
                .filter(|c| c.reason().is_some() || c.exit_code().is_some_and(|x| x != 0))
                .map(|c| {
                    let mut s = c.name().unwrap_or_default().to_string();
                    if let Some(x) = c.exit_code() {
                        s.push_str(&format!(": exit {x}"));
                    }
                    if let Some(r) = c.reason() {
                        s.push_str(&format!(": {r}"));
                    }
                    s
                })
                .collect();
            let mut line = format!("task {id}: {}", t.stopped_reason().unwrap_or("stopped"));
            if !containers.is_empty() {
                line.push_str(&format!(" ({})", containers.join("; ")));
            }
            line
        })
        .collect()
}

/// A deployment ECS gave up on, with what it did about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeploymentFailed {
    pub message: String,
    pub rolled_back: bool,
}

pub async fn failure_report(ctx: &Ctx, s: &EcsService, rollout: &Rollout) -> DeploymentFailed {
    let Rollout::Failed {
        reason,
        rolled_back_to,
        rollback_state,
    } = rollout
    else {
        return DeploymentFailed {
            message: format!("service {}: not failed", s.name),
            rolled_back: false,
        };
    };
    let mut message = format!(
        "service {} in cluster {}: the deployment failed: {reason}",
        s.name, s.cluster
    );
    let reasons = stopped_reasons(ctx, &s.cluster, &s.name).await;
    if !reasons.is_empty() {
        message.push_str("\n  stopped tasks:");
        for r in &reasons {
            message.push_str(&format!("\n    {r}"));
        }
    }
    match rolled_back_to {
        Some(td) => message.push_str(&format!(
            "\n  rollback: ECS went back to {} ({})",
            td.rsplit('/').next().unwrap_or(td),
            rollback_state.as_deref().unwrap_or("rollout state unknown")
        )),
        None => message.push_str("\n  rollback: none; the service still runs what it ran before"),
    }
    message.push_str("\n  hint: fix the image or its configuration (see the reasons above and the service's logs), then deploy again");
    DeploymentFailed {
        message,
        rolled_back: rolled_back_to.is_some(),
    }
}

pub async fn describe_service(ctx: &Ctx, cluster: &str, name: &str) -> anyhow::Result<Option<ecs::Service>> {
    let out = match ctx
        .aws
        .ecs()
        .describe_services()
        .cluster(cluster)
        .services(name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if sdk_class(&e) == ErrorClass::NotFound => return Ok(None),
        Err(e) => return Err(aws_err(format!("ECS service {name} (cluster {cluster})"), "DescribeServices")(e).into()),
    };
    Ok(out.services().iter().find(|s| s.status() != Some("INACTIVE")).cloned())
}

#[async_trait]
impl Resource for EcsServiceRes {
    resource_metadata!("ecs-service", Phase::Cluster);
    fn deadline(&self) -> Duration {
        self.service.deployment_timeout
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        let s = &self.service;
        let groups = self.groups(inputs);
        let network = match &groups {
            Value::Known(g) => {
                let g: Vec<String> = g.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect();
                Value::Known(Self::network_text(&self.subnets, &g, s.assign_public_ip))
            }
            Value::Unknown => Value::Unknown,
        };
        Desired::default()
            .attr(
                "taskDefinition",
                inputs.get(&self.task_definition, "arn"),
                Mutability::InPlace,
            )
            .attr("desiredCount", s.desired_count.to_string(), Mutability::InPlace)
            .attr("capacityProvider", self.capacity(), Mutability::InPlace)
            .attr("network", network, Mutability::InPlace)
            .attr(
                "loadBalancer",
                s.load_balancer
                    .as_ref()
                    .map(|lb| format!("{}:{}", lb.target_group_arn, lb.container_port))
                    .unwrap_or_default(),
                Mutability::InPlace,
            )
            .attr(
                "deployment",
                format!(
                    "minimumHealthy={}% maximum={}% circuitBreaker=rollback",
                    s.minimum_healthy_percent, s.maximum_percent
                ),
                Mutability::InPlace,
            )
            .attr("steady", "true", Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let s = &self.service;
        let Some(svc) = describe_service(ctx, &s.cluster, &s.name).await? else {
            return Ok(None);
        };
        let td = svc.task_definition().unwrap_or_default().to_string();
        // Fields an endpoint leaves out of the answer (moto: network, strategy, deployment settings) are not
        // compared: absent is not different.
        let mut attrs = BTreeMap::from([
            ("taskDefinition", td.clone()),
            ("desiredCount", svc.desired_count().to_string()),
            (
                "loadBalancer",
                svc.load_balancers()
                    .first()
                    .map(|lb| {
                        format!(
                            "{}:{}",
                            lb.target_group_arn().unwrap_or_default(),
                            lb.container_port().unwrap_or_default()
                        )
                    })
                    .unwrap_or_default(),
            ),
            ("steady", (rollout(&svc, &td) == Rollout::Steady).to_string()),
        ]);
        if let Some(first) = svc.capacity_provider_strategy().first() {
            attrs.insert("capacityProvider", first.capacity_provider().to_string());
        }
        if let Some(vpc) = svc.network_configuration().and_then(|n| n.awsvpc_configuration()) {
            attrs.insert(
                "network",
                Self::network_text(
                    vpc.subnets(),
                    vpc.security_groups(),
                    vpc.assign_public_ip() == Some(&ecs::AssignPublicIp::Enabled),
                ),
            );
        }
        if let Some(d) = svc.deployment_configuration() {
            let rollback = d
                .deployment_circuit_breaker()
                .is_some_and(|c| c.enable() && c.rollback());
            attrs.insert(
                "deployment",
                format!(
                    "minimumHealthy={}% maximum={}% circuitBreaker={}",
                    d.minimum_healthy_percent().unwrap_or(100),
                    d.maximum_percent().unwrap_or(200),
                    if rollback { "rollback" } else { "off" }
                ),
            );
        }
        let arn = svc.service_arn().unwrap_or_default();
        Ok(Some(Observed {
            id: arn.to_string(),
            attrs,
            outputs: outputs(&[("id", arn), ("arn", arn), ("taskDefinition", &td)]),
        }))
    }
    fn diff(
        &self,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> Result<Change, Box<crate::engine::ImmutableChange>> {
        let Some(a) = actual else {
            return diff_attrs(&self.id, self.kind(), None, desired);
        };
        let observed = Desired {
            attrs: desired
                .attrs
                .iter()
                .filter(|d| a.attrs.contains_key(d.name))
                .cloned()
                .collect(),
        };
        diff_attrs(&self.id, self.kind(), actual, &observed)
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let s = &self.service;
        let what = format!("ECS service {} (cluster {})", s.name, s.cluster);
        let td = desired.value("taskDefinition")?.to_string();
        if let Change::Update(changes) = change
            && changes.iter().all(|c| c.name == "steady")
        {
            // Nothing to change: a deployment is still under way (an earlier run was interrupted); wait for it.
            let a = actual.expect("an update has an observed service");
            return Ok(Step::Done(a.outputs.clone()));
        }
        let groups: Vec<String> = desired
            .value("network")?
            .split_whitespace()
            .find_map(|p| p.strip_prefix("securityGroups="))
            .unwrap_or_default()
            .split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        let network = ecs::NetworkConfiguration::builder()
            .awsvpc_configuration(
                ecs::AwsVpcConfiguration::builder()
                    .set_subnets(Some(self.subnets.clone()))
                    .set_security_groups(Some(groups))
                    .assign_public_ip(if s.assign_public_ip {
                        ecs::AssignPublicIp::Enabled
                    } else {
                        ecs::AssignPublicIp::Disabled
                    })
                    .build()?,
            )
            .build();
        let strategy = ecs::CapacityProviderStrategyItem::builder()
            .capacity_provider(self.capacity())
            .weight(1)
            .build()?;
        let deployment = ecs::DeploymentConfiguration::builder()
            .minimum_healthy_percent(s.minimum_healthy_percent as i32)
            .maximum_percent(s.maximum_percent as i32)
            .deployment_circuit_breaker(
                ecs::DeploymentCircuitBreaker::builder()
                    .enable(true)
                    .rollback(true)
                    .build(),
            )
            .build();
        let svc = match actual {
            None => {
                let mut req = ctx
                    .aws
                    .ecs()
                    .create_service()
                    .cluster(&s.cluster)
                    .service_name(&s.name)
                    .task_definition(&td)
                    .desired_count(s.desired_count as i32)
                    .capacity_provider_strategy(strategy)
                    .network_configuration(network)
                    .deployment_configuration(deployment)
                    .propagate_tags(ecs::PropagateTags::Service)
                    .enable_ecs_managed_tags(true)
                    .set_tags(Some(ecs_tags(&self.tags)));
                if let Some(lb) = &s.load_balancer {
                    req = req
                        .load_balancers(
                            ecs::LoadBalancer::builder()
                                .target_group_arn(&lb.target_group_arn)
                                .container_name(&s.name)
                                .container_port(lb.container_port as i32)
                                .build(),
                        )
                        .health_check_grace_period_seconds(lb.grace_period as i32);
                }
                match req.send().await {
                    Ok(out) => out.service().cloned(),
                    // A role just created is not assumable everywhere yet: ask again shortly.
                    Err(e) if e.message().is_some_and(|m| m.contains("assume") || m.contains("role")) => {
                        return Ok(Step::Retry {
                            after: Duration::from_secs(5),
                            reason: format!("waiting for IAM: {}", e.message().unwrap_or_default()),
                        });
                    }
                    Err(e) => return Err(aws_err(&what, "CreateService")(e).into()),
                }
            }
            Some(_) => {
                let mut req = ctx
                    .aws
                    .ecs()
                    .update_service()
                    .cluster(&s.cluster)
                    .service(&s.name)
                    .task_definition(&td)
                    .desired_count(s.desired_count as i32)
                    .network_configuration(network)
                    .deployment_configuration(deployment);
                if let Some(lb) = &s.load_balancer {
                    req = req
                        .load_balancers(
                            ecs::LoadBalancer::builder()
                                .target_group_arn(&lb.target_group_arn)
                                .container_name(&s.name)
                                .container_port(lb.container_port as i32)
                                .build(),
                        )
                        .health_check_grace_period_seconds(lb.grace_period as i32);
                }
                let capacity_changed =
                    matches!(change, Change::Update(cs) if cs.iter().any(|c| c.name == "capacityProvider"));
                if capacity_changed {
                    // A new capacity provider strategy needs a new deployment.
                    req = req.capacity_provider_strategy(strategy).force_new_deployment(true);
                }
                req.send()
                    .await
                    .map_err(aws_err(&what, "UpdateService"))?
                    .service()
                    .cloned()
            }
        };
        let arn = svc
            .as_ref()
            .and_then(|v| v.service_arn())
            .unwrap_or_default()
            .to_string();
        Ok(Step::Done(outputs(&[
            ("id", &arn),
            ("arn", &arn),
            ("taskDefinition", &td),
        ])))
    }
    async fn ready(&self, ctx: &Ctx, outputs: &Outputs) -> anyhow::Result<Step<()>> {
        let s = &self.service;
        let td = outputs.get("taskDefinition").cloned().unwrap_or_default();
        let Some(svc) = describe_service(ctx, &s.cluster, &s.name).await? else {
            anyhow::bail!("service {} in cluster {} vanished while deploying", s.name, s.cluster);
        };
        match rollout(&svc, &td) {
            Rollout::Steady => Ok(Step::Done(())),
            Rollout::InProgress(reason) => Ok(Step::Retry {
                after: self.poll,
                reason,
            }),
            failed => {
                let report = failure_report(ctx, s, &failed).await;
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.rolled_back);
                Err(report.into())
            }
        }
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}

#[cfg(test)]
mod tests;

/// What delete knows about one ECS service (see `delete::Kind`): scaled to 0, deleted, gone once ECS no longer
/// lists it (its tasks drained).
#[derive(Debug)]
pub struct EcsServiceKind {
    pub cluster: String,
    pub service: String,
}

impl EcsServiceKind {
    fn what(&self) -> String {
        format!("ECS service {} (cluster {})", self.service, self.cluster)
    }
}

#[async_trait]
impl Kind for EcsServiceKind {
    fn name(&self) -> &'static str {
        "ecs-service"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(describe_service(ctx, &self.cluster, &self.service)
            .await?
            .map(|_| Doomed::new(kind, &self.service, None, None))
            .into_iter()
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, _: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        let Some(svc) = describe_service(ctx, &self.cluster, &self.service).await? else {
            return Ok(Step::Done(()));
        };
        if svc.status() == Some("ACTIVE") {
            let ecs = ctx.aws.ecs();
            if svc.desired_count() > 0 {
                ecs.update_service()
                    .cluster(&self.cluster)
                    .service(&self.service)
                    .desired_count(0)
                    .send()
                    .await
                    .map_err(aws_err(self.what(), "UpdateService"))?;
            }
            ecs.delete_service()
                .cluster(&self.cluster)
                .service(&self.service)
                .force(true)
                .send()
                .await
                .map_err(aws_err(self.what(), "DeleteService"))?;
        }
        Ok(not_yet(Duration::from_secs(5), "draining tasks"))
    }
    fn before(&self) -> &'static [Order] {
        // What `--purge` removes goes once nothing runs from it.
        &[
            Order::Kind("task-definition"),
            Order::Kind("log-group"),
            Order::Kind("iam-role"),
            Order::Kind("security-group"),
        ]
    }
}
