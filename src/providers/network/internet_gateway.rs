//! The internet gateway and its attachment to the VPC.

use super::*;

pub(super) struct InternetGateway {
    pub(super) id: String,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) deps: Vec<String>,
}

#[async_trait]
impl Resource for InternetGateway {
    resource_metadata!("internet-gateway", Phase::Network);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default().attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let found = find_igw(ctx, &self.id).await?;
        Ok(found.map(|g| {
            observed(
                g.internet_gateway_id().unwrap_or_default(),
                vec![("tags", render_subset(&ec2_tag_map(g.tags()), &self.tags))],
            )
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        _: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        if let Some(done) = retag(ctx, change, actual, &self.id, &self.tags).await? {
            return Ok(done);
        }
        let out = ctx
            .aws
            .ec2()
            .create_internet_gateway()
            .tag_specifications(ec2_tag_spec(ResourceType::InternetGateway, &self.tags))
            .send()
            .await
            .map_err(aws_err(&self.id, "CreateInternetGateway"))?;
        let id = out
            .internet_gateway()
            .and_then(|g| g.internet_gateway_id())
            .unwrap_or_default();
        Ok(Step::Done(outputs(id)))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_internet_gateway(&ctx.aws, &actual.id, &[]).await
    }
}

/// Detaches the gateway from `attached_vpcs`, then deletes it.
pub async fn delete_internet_gateway(aws: &Aws, igw_id: &str, attached_vpcs: &[String]) -> anyhow::Result<Step<()>> {
    let what = format!("internet gateway {igw_id}");
    for vpc in attached_vpcs {
        let r = aws
            .ec2()
            .detach_internet_gateway()
            .internet_gateway_id(igw_id)
            .vpc_id(vpc)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_err(format!("internet-gateway ({igw_id})"), "DetachInternetGateway")(e).into());
        match r {
            Err(e) if error_code(&e) == Some("Gateway.NotAttached") => {}
            r => {
                if let step @ (Step::Blocked { .. } | Step::Retry { .. }) = deletion_step(r, &what)? {
                    return Ok(step);
                }
            }
        }
    }
    let r = aws
        .ec2()
        .delete_internet_gateway()
        .internet_gateway_id(igw_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_err(format!("internet-gateway ({igw_id})"), "DeleteInternetGateway")(e).into());
    deletion_step(r, &what)
}

pub(super) struct IgwAttachment {
    pub(super) id: String,
    pub(super) deps: Vec<String>,
}

#[async_trait]
impl Resource for IgwAttachment {
    resource_metadata!("gateway-attachment", Phase::Network);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("gateway", inputs.get("igw", "id"), Mutability::Replace)
            .attr("vpc", inputs.get("vpc", "id"), Mutability::Replace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let Some(g) = find_igw(ctx, "igw").await? else {
            return Ok(None);
        };
        let igw = g.internet_gateway_id().unwrap_or_default();
        Ok(g.attachments().iter().find_map(|a| a.vpc_id()).map(|vpc| {
            observed(
                &format!("{igw}:{vpc}"),
                vec![("gateway", igw.to_string()), ("vpc", vpc.to_string())],
            )
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let (igw, vpc) = (desired.value("gateway")?, desired.value("vpc")?);
        let r = ctx
            .aws
            .ec2()
            .attach_internet_gateway()
            .internet_gateway_id(igw)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(|e| aws_err(format!("igw-attachment ({igw} to {vpc})"), "AttachInternetGateway")(e).into());
        Ok(retry_if_not_visible(r, "gateway or VPC")?.map(|_| outputs(&format!("{igw}:{vpc}"))))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        let (igw, vpc) = (&actual.attrs["gateway"], &actual.attrs["vpc"]);
        let r = ctx
            .aws
            .ec2()
            .detach_internet_gateway()
            .internet_gateway_id(igw)
            .vpc_id(vpc)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_err(format!("igw-attachment ({igw})"), "DetachInternetGateway")(e).into());
        deletion_step(r, &format!("internet gateway {igw}"))
    }
}

/// The cluster's internet gateway `logical`; a twin is attached to no VPC.
pub(super) async fn find_igw<'a>(
    ctx: &'a Ctx,
    logical: &str,
) -> anyhow::Result<Option<&'a aws_sdk_ec2::types::InternetGateway>> {
    let igws = ctx.inventory.internet_gateways(&ctx.aws).await?;
    settled_by_logical_id(
        &ctx.inventory,
        igws,
        "internet gateway",
        logical,
        |g| g.tags(),
        |g| g.internet_gateway_id(),
        |g| !g.attachments().is_empty(),
    )
}

#[derive(Debug)]
pub struct InternetGatewayKind;

#[async_trait]
impl Kind for InternetGatewayKind {
    fn name(&self) -> &'static str {
        "internet-gateway"
    }
    fn phase(&self) -> Phase {
        Phase::Network
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .internet_gateways(&ctx.aws)
            .await?
            .iter()
            .map(|g| {
                let vpcs: Vec<String> = g
                    .attachments()
                    .iter()
                    .filter_map(|a| a.vpc_id().map(str::to_string))
                    .collect();
                Doomed {
                    attached: vpcs.clone(),
                    ..Doomed::new(
                        kind,
                        g.internet_gateway_id().unwrap_or_default(),
                        logical_id(g.tags()),
                        vpcs.first().map(String::as_str),
                    )
                }
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_internet_gateway(&ctx.aws, &item.cloud_id, &item.attached).await
    }
    fn after(&self) -> &'static [Order] {
        // Public addresses are mapped through the gateway: NAT gateways', load balancers', machines'.
        &[
            Order::Kind("nat-gateway"),
            Order::Kind("load-balancer"),
            Order::Kind("instance"),
            Order::Kind("auto-scaling-group"),
            Order::Kind("eks-cluster"),
        ]
    }
}
