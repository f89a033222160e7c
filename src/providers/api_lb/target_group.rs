//! The API server's target group (port 6443, TCP health checks), and the target groups delete finds.

use super::*;

/// Deletes a target group; blocked while a listener still forwards to it.
pub async fn delete_target_group(aws: &Aws, arn: &str) -> anyhow::Result<Step<()>> {
    let r = aws.elbv2().delete_target_group().target_group_arn(arn).send().await;
    match r.map_err(|e| anyhow::Error::from(aws_err(format!("target-group ({arn})"), "DeleteTargetGroup")(e))) {
        Ok(_) => Ok(Step::Done(())),
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        Err(e) if class_of(&e) == ErrorClass::InUse => Ok(Step::Blocked {
            reason: format!("target group {arn} is still in use"),
        }),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- target group

pub struct ApiTargetGroup {
    pub id: String,
    pub name: String,
    pub vpc: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for ApiTargetGroup {
    resource_metadata!("target-group", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("vpc", inputs.get(&self.vpc, "id"), Mutability::Replace)
            .attr("target", format!("TCP:{API_PORT} instance"), Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let tgs = ctx.inventory.target_groups(&ctx.aws).await?;
        let Some(t) = tagged_arn(tgs, &self.id) else {
            return Ok(None);
        };
        let out = ctx
            .aws
            .elbv2()
            .describe_target_groups()
            .target_group_arns(&t.arn)
            .send()
            .await
            .map_err(aws_err(&self.id, "DescribeTargetGroups"))?;
        let Some(tg) = out.target_groups().first() else {
            return Ok(None);
        };
        Ok(Some(Observed {
            id: t.arn.clone(),
            attrs: BTreeMap::from([
                ("vpc", tg.vpc_id().unwrap_or_default().to_string()),
                (
                    "target",
                    format!(
                        "{}:{} {}",
                        tg.protocol().map(|p| p.as_str()).unwrap_or_default(),
                        tg.port().unwrap_or_default(),
                        tg.target_type().map(|t| t.as_str()).unwrap_or_default()
                    ),
                ),
                ("tags", render_subset(&t.tags, &self.tags)),
            ]),
            outputs: Outputs::from([("id".to_string(), t.arn.clone()), ("arn".to_string(), t.arn.clone())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let elb = ctx.aws.elbv2();
        let what = format!("{} ({})", self.id, self.name);
        if let Some(actual) = actual {
            if matches!(change, Change::Update(_)) {
                elb.add_tags()
                    .resource_arns(&actual.id)
                    .set_tags(Some(elb_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(&what, "AddTags"))?;
            }
            return Ok(Step::Done(actual.outputs.clone()));
        }
        let out = elb
            .create_target_group()
            .name(&self.name)
            .protocol(ProtocolEnum::Tcp)
            .port(API_PORT)
            .vpc_id(desired.value("vpc")?)
            .target_type(TargetTypeEnum::Instance)
            .health_check_protocol(ProtocolEnum::Tcp)
            .health_check_interval_seconds(10)
            .healthy_threshold_count(2)
            .unhealthy_threshold_count(2)
            .set_tags(Some(elb_tags(&self.tags)))
            .send()
            .await
            .map_err(aws_err(&what, "CreateTargetGroup"))?;
        let arn = out
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .ok_or_else(|| anyhow::anyhow!("{what}: CreateTargetGroup returned nothing"))?;
        Ok(Step::Done(Outputs::from([
            ("id".to_string(), arn.to_string()),
            ("arn".to_string(), arn.to_string()),
        ])))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_target_group(&ctx.aws, &actual.id).await
    }
}

// ---------------------------------------------------------------- listener

/// What delete knows about ELBv2 target groups (see `delete::Kind`).
#[derive(Debug)]
pub struct TargetGroupKind;

#[async_trait]
impl Kind for TargetGroupKind {
    fn name(&self) -> &'static str {
        "target-group"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .target_groups(&ctx.aws)
            .await?
            .iter()
            .map(|tg| Doomed::new(kind, &tg.arn, tg.tags.get(tags::RESOURCE).cloned(), Some(&tg.detail)))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_target_group(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[Order::Kind("load-balancer"), Order::Kind("eks-cluster")]
    }
}
