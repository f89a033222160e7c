//! Public and private subnets per zone (public ones give instances public addresses), or those the spec names.

use super::*;

pub(super) struct ExistingSubnet {
    pub(super) id: String,
    pub(super) subnet_id: String,
    pub(super) deps: Vec<String>,
}

#[async_trait]
impl Resource for ExistingSubnet {
    resource_metadata!("existing-subnet", Phase::Network);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default()
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let r = ctx
            .aws
            .ec2()
            .describe_subnets()
            .subnet_ids(&self.subnet_id)
            .send()
            .await;
        match r.map_err(aws_err(
            format!("network.subnets {}", self.subnet_id),
            "DescribeSubnets",
        )) {
            Ok(out) if !out.subnets().is_empty() => Ok(Some(observed(&self.subnet_id, vec![]))),
            Ok(_) => Ok(None),
            Err(e) if e.class() == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    async fn apply(&self, _: &Ctx, _: &Change, _: Option<&Observed>, _: &Desired) -> anyhow::Result<Step<Outputs>> {
        anyhow::bail!(
            "spec.network.subnets: subnet {} does not exist\n  hint: check the subnet ids of the existing VPC",
            self.subnet_id
        )
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}

pub(super) struct SubnetRes {
    pub(super) id: String,
    pub(super) deps: Vec<String>,
    pub(super) cidr: String,
    pub(super) zone: String,
    pub(super) tags: BTreeMap<String, String>,
}

#[async_trait]
impl Resource for SubnetRes {
    resource_metadata!("subnet", Phase::Network);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("vpc", inputs.get("vpc", "id"), Mutability::Immutable)
            .attr("cidr", self.cidr.as_str(), Mutability::Immutable)
            .attr("zone", self.zone.as_str(), Mutability::Immutable)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let found = find_subnet(ctx, &self.id).await?;
        Ok(found.map(|s| {
            observed(
                s.subnet_id().unwrap_or_default(),
                vec![
                    ("vpc", s.vpc_id().unwrap_or_default().to_string()),
                    ("cidr", s.cidr_block().unwrap_or_default().to_string()),
                    ("zone", s.availability_zone().unwrap_or_default().to_string()),
                    ("tags", render_subset(&ec2_tag_map(s.tags()), &self.tags)),
                ],
            )
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        if let Some(done) = retag(ctx, change, actual, &self.id, &self.tags).await? {
            return Ok(done);
        }
        let r = ctx
            .aws
            .ec2()
            .create_subnet()
            .vpc_id(desired.value("vpc")?)
            .cidr_block(&self.cidr)
            .availability_zone(&self.zone)
            .tag_specifications(ec2_tag_spec(ResourceType::Subnet, &self.tags))
            .send()
            .await
            .map_err(|e| aws_err(&self.id, "CreateSubnet")(e).into());
        Ok(retry_if_not_visible(r, "VPC")?
            .map(|out| outputs(out.subnet().and_then(|s| s.subnet_id()).unwrap_or_default())))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_subnet(&ctx.aws, &actual.id).await
    }
}

pub async fn delete_subnet(aws: &Aws, subnet_id: &str) -> anyhow::Result<Step<()>> {
    let r = aws
        .ec2()
        .delete_subnet()
        .subnet_id(subnet_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_err(format!("subnet ({subnet_id})"), "DeleteSubnet")(e).into());
    deletion_step(r, &format!("subnet {subnet_id}"))
}

/// Public subnets give instances public addresses (nodes in the public topology, bastions, NAT).
pub(super) struct SubnetPublicIp {
    pub(super) id: String,
    pub(super) subnet: String,
    pub(super) deps: Vec<String>,
}

#[async_trait]
impl Resource for SubnetPublicIp {
    resource_metadata!("subnet-attribute", Phase::Network);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("subnet", inputs.get(&self.subnet, "id"), Mutability::InPlace)
            .attr("mapPublicIpOnLaunch", true, Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let found = find_subnet(ctx, &self.subnet).await?;
        Ok(found.map(|s| {
            let id = s.subnet_id().unwrap_or_default();
            observed(
                id,
                vec![
                    ("subnet", id.to_string()),
                    (
                        "mapPublicIpOnLaunch",
                        s.map_public_ip_on_launch().unwrap_or(false).to_string(),
                    ),
                ],
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
        let subnet = desired.value("subnet")?;
        let r = ctx
            .aws
            .ec2()
            .modify_subnet_attribute()
            .subnet_id(subnet)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .map_err(|e| aws_err(format!("{} ({subnet})", self.subnet), "ModifySubnetAttribute")(e).into());
        Ok(retry_if_not_visible(r, "subnet")?.map(|_| outputs(subnet)))
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}

/// The cluster's subnet `logical`. (Subnets have no twins to settle: AWS refuses a second subnet with an
/// overlapping CIDR in one VPC, so a repeated create fails instead of duplicating.)
pub(super) async fn find_subnet<'a>(
    ctx: &'a Ctx,
    logical: &str,
) -> anyhow::Result<Option<&'a aws_sdk_ec2::types::Subnet>> {
    let subnets = ctx.inventory.subnets(&ctx.aws).await?;
    by_logical_id(
        subnets,
        "subnet",
        &ctx.cluster,
        logical,
        |s| s.tags(),
        |s| s.subnet_id(),
    )
}

#[derive(Debug)]
pub struct SubnetKind;

#[async_trait]
impl Kind for SubnetKind {
    fn name(&self) -> &'static str {
        "subnet"
    }
    fn phase(&self) -> Phase {
        Phase::Network
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .subnets(&ctx.aws)
            .await?
            .iter()
            .map(|s| {
                Doomed::new(
                    kind,
                    s.subnet_id().unwrap_or_default(),
                    logical_id(s.tags()),
                    s.vpc_id(),
                )
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_subnet(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        // What has a network interface or an association in the subnet.
        &[
            Order::InVpc("nat-gateway"),
            Order::InVpc("route-table"),
            Order::InVpc("auto-scaling-group"),
            Order::InVpc("instance"),
            Order::InVpc("load-balancer"),
            Order::InVpc("network-interface"),
            Order::InVpc("eks-cluster"),
            Order::InVpc("eks-nodegroup"),
            Order::InVpc("eks-fargate-profile"),
        ]
    }
}
