//! The cluster's VPC (DNS support and hostnames on), or one the spec names by id (only looked up).

use super::*;

pub(super) struct Vpc {
    pub(super) id: String,
    pub(super) cidr: String,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) deps: Vec<String>,
}

#[async_trait]
impl Resource for Vpc {
    resource_metadata!("vpc", Phase::Network);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default()
            .attr("cidr", self.cidr.as_str(), Mutability::Immutable)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let found = find_vpc(ctx, &self.id).await?;
        Ok(found.map(|v| {
            let id = v.vpc_id().unwrap_or_default();
            observed(
                id,
                vec![
                    ("cidr", v.cidr_block().unwrap_or_default().to_string()),
                    ("tags", render_subset(&ec2_tag_map(v.tags()), &self.tags)),
                ],
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
            .create_vpc()
            .cidr_block(&self.cidr)
            .tag_specifications(ec2_tag_spec(ResourceType::Vpc, &self.tags))
            .send()
            .await
            .map_err(aws_err(&self.id, "CreateVpc"))?;
        let id = out.vpc().and_then(|v| v.vpc_id()).unwrap_or_default();
        Ok(Step::Done(outputs(id)))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_vpc(&ctx.aws, &actual.id).await
    }
}

pub async fn delete_vpc(aws: &Aws, vpc_id: &str) -> anyhow::Result<Step<()>> {
    let r = aws
        .ec2()
        .delete_vpc()
        .vpc_id(vpc_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_err(format!("vpc ({vpc_id})"), "DeleteVpc")(e).into());
    deletion_step(r, &format!("vpc {vpc_id}"))
}

/// DNS support and hostnames on the VPC: EKS and kubelet's node names need both.
pub(super) struct VpcDns {
    pub(super) id: String,
    pub(super) deps: Vec<String>,
}

pub(super) const DNS_ATTRS: [(&str, VpcAttributeName); 2] = [
    ("enableDnsSupport", VpcAttributeName::EnableDnsSupport),
    ("enableDnsHostnames", VpcAttributeName::EnableDnsHostnames),
];

#[async_trait]
impl Resource for VpcDns {
    resource_metadata!("vpc-attribute", Phase::Network);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("vpc", inputs.get("vpc", "id"), Mutability::InPlace)
            .attr("enableDnsSupport", true, Mutability::InPlace)
            .attr("enableDnsHostnames", true, Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let Some(vpc) = find_vpc(ctx, "vpc").await? else {
            return Ok(None);
        };
        let vpc_id = vpc.vpc_id().unwrap_or_default();
        let ask = |name: VpcAttributeName| async move {
            let out = ctx
                .aws
                .ec2()
                .describe_vpc_attribute()
                .vpc_id(vpc_id)
                .attribute(name)
                .send()
                .await
                .map_err(aws_err(format!("vpc ({vpc_id})"), "DescribeVpcAttribute"))?;
            let value = out
                .enable_dns_support()
                .or(out.enable_dns_hostnames())
                .and_then(AttributeBooleanValue::value)
                .unwrap_or(false);
            Ok::<_, anyhow::Error>(value)
        };
        let (support, hostnames) = tokio::try_join!(ask(DNS_ATTRS[0].1.clone()), ask(DNS_ATTRS[1].1.clone()))?;
        Ok(Some(observed(
            vpc_id,
            vec![
                ("vpc", vpc_id.to_string()),
                ("enableDnsSupport", support.to_string()),
                ("enableDnsHostnames", hostnames.to_string()),
            ],
        )))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let vpc_id = desired.value("vpc")?;
        // One call per attribute (the API takes one at a time), both at once.
        let calls = DNS_ATTRS.iter().filter(|(name, _)| {
            !actual.is_some_and(|a| a.id == vpc_id && a.attrs.get(*name).is_some_and(|v| v == "true"))
        });
        let results = futures::future::join_all(calls.map(|(_, attr)| async move {
            let on = AttributeBooleanValue::builder().value(true).build();
            let call = ctx.aws.ec2().modify_vpc_attribute().vpc_id(vpc_id);
            let call = match attr {
                VpcAttributeName::EnableDnsSupport => call.enable_dns_support(on),
                _ => call.enable_dns_hostnames(on),
            };
            call.send()
                .await
                .map(|_| ())
                .map_err(|e| anyhow::Error::from(aws_err(format!("vpc ({vpc_id})"), "ModifyVpcAttribute")(e)))
        }))
        .await;
        for r in results {
            if let Step::Retry { after, reason } = retry_if_not_visible(r, "VPC")? {
                return Ok(Step::Retry { after, reason });
            }
        }
        Ok(Step::Done(outputs(vpc_id)))
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        // An attribute goes with its VPC.
        Ok(Step::Done(()))
    }
}

/// A VPC the spec names by id: only looked up, never changed or deleted.
pub(super) struct ExistingVpc {
    pub(super) id: String,
    pub(super) vpc_id: String,
    pub(super) deps: Vec<String>,
}

#[async_trait]
impl Resource for ExistingVpc {
    resource_metadata!("existing-vpc", Phase::Network);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default()
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let r = ctx.aws.ec2().describe_vpcs().vpc_ids(&self.vpc_id).send().await;
        match r.map_err(aws_err(format!("network.vpcId {}", self.vpc_id), "DescribeVpcs")) {
            Ok(out) if !out.vpcs().is_empty() => Ok(Some(observed(&self.vpc_id, vec![]))),
            Ok(_) => Ok(None),
            Err(e) if e.class() == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    async fn apply(&self, ctx: &Ctx, _: &Change, _: Option<&Observed>, _: &Desired) -> anyhow::Result<Step<Outputs>> {
        anyhow::bail!(
            "spec.network.vpcId: VPC {} does not exist in {}\n  hint: check the id and --region, or use vpcCidr to have kforge create a VPC",
            self.vpc_id,
            ctx.aws.region()
        )
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}

/// The cluster's VPC `logical`. A twin VPC (a create repeated after a crash) holds none of the cluster's subnets
/// and no gateway is attached to it.
pub(super) async fn find_vpc<'a>(ctx: &'a Ctx, logical: &str) -> anyhow::Result<Option<&'a aws_sdk_ec2::types::Vpc>> {
    let vpcs = ctx.inventory.vpcs(&ctx.aws).await?;
    let subnets = ctx.inventory.subnets(&ctx.aws).await?;
    let igws = ctx.inventory.internet_gateways(&ctx.aws).await?;
    settled_by_logical_id(
        &ctx.inventory,
        vpcs,
        "VPC",
        logical,
        |v| v.tags(),
        |v| v.vpc_id(),
        |v| {
            subnets.iter().any(|s| s.vpc_id() == v.vpc_id())
                || igws
                    .iter()
                    .any(|g| g.attachments().iter().any(|a| a.vpc_id() == v.vpc_id()))
        },
    )
}

#[derive(Debug)]
pub struct VpcKind;

#[async_trait]
impl Kind for VpcKind {
    fn name(&self) -> &'static str {
        "vpc"
    }
    fn phase(&self) -> Phase {
        Phase::Network
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .vpcs(&ctx.aws)
            .await?
            .iter()
            .map(|v| Doomed::new(kind, v.vpc_id().unwrap_or_default(), logical_id(v.tags()), v.vpc_id()))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_vpc(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[Order::EverythingInVpc]
    }
}
