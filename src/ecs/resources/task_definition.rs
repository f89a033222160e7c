//! The task definition family: compared field by field with the latest revision, a new revision when it differs.

use super::*;
use std::sync::Arc;

use crate::delete::{Doomed, Kind};

/// The task definition family's latest revision, compared field by field with what kforge renders; a difference
/// registers a new revision (revisions are immutable).
pub struct TaskDefinitionRes {
    pub id: String,
    pub service: EcsService,
    /// The image reference the task runs (resolved: a pushed image is `repo@digest`).
    pub image: String,
    /// Logical ids of the execution and task roles (resources that output `arn`).
    pub execution_role: String,
    pub task_role: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

fn health_text(h: Option<&HealthCheck>) -> String {
    h.map(|h| {
        format!(
            "{} every {}s, timeout {}s, {} retries, start period {}s",
            serde_json::to_string(&h.command).unwrap_or_default(),
            h.interval,
            h.timeout,
            h.retries,
            h.start_period
        )
    })
    .unwrap_or_else(|| "none".into())
}

fn pairs_text<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut v: Vec<String> = items.map(|(k, val)| format!("{k}={val}")).collect();
    v.sort();
    v.join(",")
}

impl TaskDefinitionRes {
    fn container_name(&self) -> &str {
        &self.service.name
    }
}

#[async_trait]
impl Resource for TaskDefinitionRes {
    resource_metadata!("task-definition", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        let s = &self.service;
        Desired::default()
            .attr("image", self.image.clone(), Mutability::InPlace)
            .attr("cpu", s.cpu.to_string(), Mutability::InPlace)
            .attr("memory", s.memory.to_string(), Mutability::InPlace)
            .attr("architecture", s.architecture, Mutability::InPlace)
            .attr(
                "command",
                s.command
                    .as_ref()
                    .map(|c| serde_json::to_string(c).unwrap_or_default())
                    .unwrap_or_default(),
                Mutability::InPlace,
            )
            .attr(
                "environment",
                pairs_text(s.environment.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                Mutability::InPlace,
            )
            .attr(
                "secrets",
                pairs_text(s.secrets.iter().map(|(k, (arn, _))| (k.as_str(), arn.as_str()))),
                Mutability::InPlace,
            )
            .attr(
                "port",
                s.container_port.map(|p| p.to_string()).unwrap_or_default(),
                Mutability::InPlace,
            )
            .attr("healthCheck", health_text(s.health_check.as_ref()), Mutability::InPlace)
            .attr("logGroup", s.log_group.clone(), Mutability::InPlace)
            .attr(
                "executionRole",
                inputs.get(&self.execution_role, "arn"),
                Mutability::InPlace,
            )
            .attr("taskRole", inputs.get(&self.task_role, "arn"), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let family = self.service.family();
        let out = match ctx
            .aws
            .ecs()
            .describe_task_definition()
            .task_definition(&family)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("ClientException") || e.code() == Some("InvalidParameterException") => {
                return Ok(None);
            }
            Err(e) => return Err(aws_err(format!("task definition {family}"), "DescribeTaskDefinition")(e).into()),
        };
        let Some(td) = out.task_definition() else {
            return Ok(None);
        };
        if td.status() != Some(&ecs::TaskDefinitionStatus::Active) {
            return Ok(None);
        }
        let container = td
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some(self.container_name()));
        let mut attrs = BTreeMap::new();
        attrs.insert("cpu", td.cpu().unwrap_or_default().to_string());
        attrs.insert("memory", td.memory().unwrap_or_default().to_string());
        attrs.insert(
            "architecture",
            td.runtime_platform()
                .and_then(|p| p.cpu_architecture())
                .map(|a| a.as_str().to_string())
                .unwrap_or_else(|| "X86_64".into()),
        );
        attrs.insert("executionRole", td.execution_role_arn().unwrap_or_default().to_string());
        attrs.insert("taskRole", td.task_role_arn().unwrap_or_default().to_string());
        if let Some(c) = container {
            attrs.insert("image", c.image().unwrap_or_default().to_string());
            attrs.insert(
                "command",
                if c.command().is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(c.command()).unwrap_or_default()
                },
            );
            attrs.insert(
                "environment",
                pairs_text(
                    c.environment()
                        .iter()
                        .map(|kv| (kv.name().unwrap_or_default(), kv.value().unwrap_or_default())),
                ),
            );
            attrs.insert(
                "secrets",
                pairs_text(c.secrets().iter().map(|s| (s.name(), s.value_from()))),
            );
            attrs.insert(
                "port",
                c.port_mappings()
                    .first()
                    .and_then(|p| p.container_port())
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            );
            attrs.insert(
                "healthCheck",
                health_text(
                    c.health_check()
                        .map(|h| HealthCheck {
                            command: h.command().to_vec(),
                            interval: h.interval().unwrap_or(30) as u32,
                            timeout: h.timeout().unwrap_or(5) as u32,
                            retries: h.retries().unwrap_or(3) as u32,
                            start_period: h.start_period().unwrap_or(0) as u32,
                        })
                        .as_ref(),
                ),
            );
            attrs.insert(
                "logGroup",
                c.log_configuration()
                    .and_then(|l| l.options())
                    .and_then(|o| o.get("awslogs-group"))
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        let arn = td.task_definition_arn().unwrap_or_default();
        Ok(Some(Observed {
            id: arn.to_string(),
            attrs,
            outputs: outputs(&[("id", arn), ("arn", arn), ("revision", &td.revision().to_string())]),
        }))
    }
    fn planned_outputs(&self, actual: &Observed, change: &Change) -> Outputs {
        // A change is a new revision: its ARN is known after apply.
        match change {
            Change::None => actual.outputs.clone(),
            _ => Outputs::new(),
        }
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let s = &self.service;
        let family = s.family();
        let mut container = ecs::ContainerDefinition::builder()
            .name(self.container_name())
            .image(&self.image)
            .essential(true)
            .set_command(s.command.clone())
            .set_environment(Some(
                s.environment
                    .iter()
                    .map(|(k, v)| ecs::KeyValuePair::builder().name(k).value(v).build())
                    .collect(),
            ))
            .log_configuration(
                ecs::LogConfiguration::builder()
                    .log_driver(ecs::LogDriver::Awslogs)
                    .options("awslogs-group", &s.log_group)
                    .options("awslogs-region", &s.region)
                    .options("awslogs-stream-prefix", &s.name)
                    .build()?,
            );
        for (name, (arn, _)) in &s.secrets {
            container = container.secrets(ecs::Secret::builder().name(name).value_from(arn).build()?);
        }
        if let Some(p) = s.container_port {
            container = container.port_mappings(
                ecs::PortMapping::builder()
                    .container_port(p as i32)
                    .protocol(ecs::TransportProtocol::Tcp)
                    .build(),
            );
        }
        if let Some(h) = &s.health_check {
            container = container.health_check(
                ecs::HealthCheck::builder()
                    .set_command(Some(h.command.clone()))
                    .interval(h.interval as i32)
                    .timeout(h.timeout as i32)
                    .retries(h.retries as i32)
                    .start_period(h.start_period as i32)
                    .build()?,
            );
        }
        let out = ctx
            .aws
            .ecs()
            .register_task_definition()
            .family(&family)
            .requires_compatibilities(ecs::Compatibility::Fargate)
            .network_mode(ecs::NetworkMode::Awsvpc)
            .cpu(s.cpu.to_string())
            .memory(s.memory.to_string())
            .runtime_platform(
                ecs::RuntimePlatform::builder()
                    .cpu_architecture(ecs::CpuArchitecture::from(s.architecture))
                    .operating_system_family(ecs::OsFamily::Linux)
                    .build(),
            )
            .execution_role_arn(desired.value("executionRole")?)
            .task_role_arn(desired.value("taskRole")?)
            .container_definitions(container.build())
            .set_tags(Some(ecs_tags(&self.tags)))
            .send()
            .await
            .map_err(aws_err(format!("task definition {family}"), "RegisterTaskDefinition"))?;
        let td = out
            .task_definition()
            .ok_or_else(|| anyhow::anyhow!("RegisterTaskDefinition returned no task definition"))?;
        let arn = td.task_definition_arn().unwrap_or_default();
        Ok(Step::Done(outputs(&[
            ("id", arn),
            ("arn", arn),
            ("revision", &td.revision().to_string()),
        ])))
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}

/// What delete knows about a service's task definitions (see `delete::Kind`): the family's revisions, one entry
/// for them all, deregistered then deleted.
#[derive(Debug)]
pub struct TaskDefinitionsKind {
    pub family: String,
}

impl TaskDefinitionsKind {
    /// The family's revisions in `status` (`family_prefix` is a prefix: `apps-web` also matches `apps-web2`).
    async fn revisions(&self, ctx: &Ctx, status: ecs::TaskDefinitionStatus) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = ctx
            .aws
            .ecs()
            .list_task_definitions()
            .family_prefix(&self.family)
            .status(status)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(aws_err(
                format!("task definitions {}", self.family),
                "ListTaskDefinitions",
            ))?;
            for arn in page.task_definition_arns() {
                let fam = arn.rsplit('/').next().and_then(|r| r.rsplit_once(':')).map(|(f, _)| f);
                if fam == Some(self.family.as_str()) {
                    out.push(arn.clone());
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Kind for TaskDefinitionsKind {
    fn name(&self) -> &'static str {
        "task-definition"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        let mut all = self.revisions(ctx, ecs::TaskDefinitionStatus::Active).await?;
        all.extend(self.revisions(ctx, ecs::TaskDefinitionStatus::Inactive).await?);
        if all.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Doomed {
            attached: all,
            ..Doomed::new(kind, &self.family, None, None)
        }])
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        let ecs = ctx.aws.ecs();
        for arn in self.revisions(ctx, ecs::TaskDefinitionStatus::Active).await? {
            ecs.deregister_task_definition()
                .task_definition(&arn)
                .send()
                .await
                .map_err(aws_err(format!("task definition {arn}"), "DeregisterTaskDefinition"))?;
        }
        for chunk in item.attached.chunks(10) {
            if let Err(e) = ecs
                .delete_task_definitions()
                .set_task_definitions(Some(chunk.to_vec()))
                .send()
                .await
            {
                // Deregistered revisions cannot run; deleting them is housekeeping some endpoints lack.
                tracing::warn!(
                    "task definitions of {} deregistered but not deleted: {}",
                    self.family,
                    crate::aws::cloud_error(format!("task definitions {}", self.family), "DeleteTaskDefinitions", e)
                );
            }
        }
        Ok(Step::Done(()))
    }
    fn shown_id(&self, item: &Doomed) -> String {
        let n = item.attached.len();
        format!("{} ({n} revision{})", self.family, if n == 1 { "" } else { "s" })
    }
}
