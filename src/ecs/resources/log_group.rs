//! The service's CloudWatch log group: its retention, found by exact name, deleted with `--purge`.

use super::*;
use std::sync::Arc;

use crate::delete::{Doomed, Kind};

/// The service's CloudWatch log group and its retention.
pub struct LogGroupRes {
    pub id: String,
    pub name: String,
    pub retention_days: u32,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for LogGroupRes {
    resource_metadata!("log-group", Phase::Cluster);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default().attr("retentionDays", self.retention_days.to_string(), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        Ok(find_log_group(ctx, &self.name).await?.map(|g| Observed {
            id: self.name.clone(),
            attrs: BTreeMap::from([(
                "retentionDays",
                g.retention_in_days()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "never expire".into()),
            )]),
            outputs: outputs(&[("id", &self.name), ("arn", g.arn().unwrap_or_default())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        actual: Option<&Observed>,
        _: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let what = format!("log group {}", self.name);
        let logs = ctx.aws.logs();
        if actual.is_none() {
            let r = logs
                .create_log_group()
                .log_group_name(&self.name)
                .set_tags(Some(self.tags.clone().into_iter().collect()))
                .send()
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
                Err(e) => return Err(aws_err(&what, "CreateLogGroup")(e).into()),
            }
        }
        logs.put_retention_policy()
            .log_group_name(&self.name)
            .retention_in_days(self.retention_days as i32)
            .send()
            .await
            .map_err(aws_err(&what, "PutRetentionPolicy"))?;
        Ok(Step::Done(outputs(&[("id", &self.name)])))
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_log_group(ctx, &self.name).await
    }
}

/// The log group called exactly `name` (the API lists by prefix).
pub async fn find_log_group(ctx: &Ctx, name: &str) -> anyhow::Result<Option<aws_sdk_cloudwatchlogs::types::LogGroup>> {
    let out = ctx
        .aws
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .map_err(aws_err(format!("log group {name}"), "DescribeLogGroups"))?;
    Ok(out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name))
        .cloned())
}

pub async fn delete_log_group(ctx: &Ctx, name: &str) -> anyhow::Result<Step<()>> {
    match ctx.aws.logs().delete_log_group().log_group_name(name).send().await {
        Ok(_) => Ok(Step::Done(())),
        Err(e) if sdk_class(&e) == ErrorClass::NotFound => Ok(Step::Done(())),
        Err(e) => Err(aws_err(format!("log group {name}"), "DeleteLogGroup")(e).into()),
    }
}

/// What delete knows about a service's log group (see `delete::Kind`): the one its latest task definition names,
/// or kforge's default name; read before the service goes.
#[derive(Debug)]
pub struct LogGroupKind {
    pub cluster: String,
    pub service: String,
}

#[async_trait]
impl Kind for LogGroupKind {
    fn name(&self) -> &'static str {
        "log-group"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        let family = crate::ecs::model::family_name(&self.cluster, &self.service);
        let latest = ctx
            .aws
            .ecs()
            .describe_task_definition()
            .task_definition(&family)
            .send()
            .await
            .ok();
        let name = latest
            .as_ref()
            .and_then(|o| o.task_definition())
            .and_then(|t| t.container_definitions().first())
            .and_then(|c| c.log_configuration())
            .and_then(|l| l.options())
            .and_then(|o| o.get("awslogs-group"))
            .cloned()
            .unwrap_or_else(|| format!("/kforge/ecs/{}/{}", self.cluster, self.service));
        Ok(find_log_group(ctx, &name)
            .await?
            .map(|_| Doomed::new(kind, &name, None, None))
            .into_iter()
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_log_group(ctx, &item.cloud_id).await
    }
}
