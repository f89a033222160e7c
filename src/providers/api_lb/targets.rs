//! The masters registered in the target group (by instance id), kept to exactly the cluster's masters.

use super::*;

/// The masters registered in the API target group.
pub struct ApiTargets {
    pub id: String,
    pub target_group: String,
    /// Master instance resources (output `id`).
    pub masters: Vec<String>,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for ApiTargets {
    resource_metadata!("target-registration", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr(
                "targetGroup",
                inputs.get(&self.target_group, "arn"),
                Mutability::Replace,
            )
            .attr("instances", inputs.joined_ids(&self.masters), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let tgs = ctx.inventory.target_groups(&ctx.aws).await?;
        let Some(tg) = tagged_arn(tgs, &self.target_group) else {
            return Ok(None);
        };
        let targets = registered(&ctx.aws, &tg.arn).await?;
        if targets.is_empty() {
            return Ok(None);
        }
        Ok(Some(Observed {
            id: tg.arn.clone(),
            attrs: BTreeMap::from([("targetGroup", tg.arn.clone()), ("instances", targets.join(","))]),
            outputs: Outputs::from([("id".to_string(), tg.arn.clone())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let elb = ctx.aws.elbv2();
        let tg = desired.value("targetGroup")?;
        let wanted = csv(desired.value("instances")?);
        let have = registered(&ctx.aws, tg).await?;
        let target = |id: &String| TargetDescription::builder().id(id).port(API_PORT).build();
        let add: Vec<TargetDescription> = wanted.iter().filter(|w| !have.contains(w)).map(target).collect();
        let remove: Vec<TargetDescription> = have.iter().filter(|h| !wanted.contains(h)).map(target).collect();
        if !add.is_empty() {
            elb.register_targets()
                .target_group_arn(tg)
                .set_targets(Some(add))
                .send()
                .await
                .map_err(aws_err(&self.id, "RegisterTargets"))?;
        }
        if !remove.is_empty() {
            elb.deregister_targets()
                .target_group_arn(tg)
                .set_targets(Some(remove))
                .send()
                .await
                .map_err(aws_err(&self.id, "DeregisterTargets"))?;
        }
        Ok(Step::Done(Outputs::from([("id".to_string(), tg.to_string())])))
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        // Registrations go with the target group.
        Ok(Step::Done(()))
    }
}

/// Instance ids registered in a target group, sorted.
pub(super) async fn registered(aws: &Aws, tg: &str) -> anyhow::Result<Vec<String>> {
    let out = aws
        .elbv2()
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .map_err(aws_err(format!("target-group ({tg})"), "DescribeTargetHealth"))?;
    let mut ids: Vec<String> = out
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}
