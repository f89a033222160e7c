//! The load balancer's TCP listener forwarding to the target group.

use super::*;

pub struct ApiListener {
    pub id: String,
    pub load_balancer: String,
    pub target_group: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

pub(super) async fn own_lb_arn(ctx: &Ctx, logical: &str) -> anyhow::Result<Option<String>> {
    let lbs = ctx.inventory.load_balancers(&ctx.aws).await?;
    Ok(tagged_arn(lbs, logical).map(|t| t.arn.clone()))
}

#[async_trait]
impl Resource for ApiListener {
    resource_metadata!("listener", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr(
                "loadBalancer",
                inputs.get(&self.load_balancer, "arn"),
                Mutability::Replace,
            )
            .attr("forwardTo", inputs.get(&self.target_group, "arn"), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let Some(lb) = own_lb_arn(ctx, &self.load_balancer).await? else {
            return Ok(None);
        };
        let out = ctx
            .aws
            .elbv2()
            .describe_listeners()
            .load_balancer_arn(&lb)
            .send()
            .await
            .map_err(aws_err(&self.id, "DescribeListeners"))?;
        let Some(l) = out.listeners().iter().find(|l| l.port() == Some(API_PORT)) else {
            return Ok(None);
        };
        let forward = l
            .default_actions()
            .iter()
            .find_map(|a| a.target_group_arn())
            .unwrap_or_default();
        let arn = l.listener_arn().unwrap_or_default();
        Ok(Some(Observed {
            id: arn.to_string(),
            attrs: BTreeMap::from([("loadBalancer", lb.clone()), ("forwardTo", forward.to_string())]),
            outputs: Outputs::from([("id".to_string(), arn.to_string())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let elb = ctx.aws.elbv2();
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(desired.value("forwardTo")?)
            .build();
        if let Some(actual) = actual {
            elb.modify_listener()
                .listener_arn(&actual.id)
                .default_actions(forward)
                .send()
                .await
                .map_err(aws_err(&self.id, "ModifyListener"))?;
            return Ok(Step::Done(actual.outputs.clone()));
        }
        let out = elb
            .create_listener()
            .load_balancer_arn(desired.value("loadBalancer")?)
            .protocol(ProtocolEnum::Tcp)
            .port(API_PORT)
            .default_actions(forward)
            .set_tags(Some(elb_tags(&self.tags)))
            .send()
            .await
            .map_err(aws_err(&self.id, "CreateListener"))?;
        let arn = out
            .listeners()
            .first()
            .and_then(|l| l.listener_arn())
            .unwrap_or_default();
        Ok(Step::Done(Outputs::from([("id".to_string(), arn.to_string())])))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        let r = ctx.aws.elbv2().delete_listener().listener_arn(&actual.id).send().await;
        match r.map_err(|e| anyhow::Error::from(aws_err(&self.id, "DeleteListener")(e))) {
            Ok(_) => Ok(Step::Done(())),
            Err(e) if is_not_found(&e) => Ok(Step::Done(())),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------- targets
