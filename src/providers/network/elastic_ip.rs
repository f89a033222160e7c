//! The elastic IPs of the NAT gateways.

use super::*;

pub(super) struct ElasticIp {
    pub(super) id: String,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) deps: Vec<String>,
}

#[async_trait]
impl Resource for ElasticIp {
    resource_metadata!("elastic-ip", Phase::Network);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default().attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let eips = ctx.inventory.addresses(&ctx.aws).await?;
        // A twin address is associated with nothing and no NAT gateway uses it.
        let nats = ctx.inventory.nat_gateways(&ctx.aws).await?;
        let found = settled_by_logical_id(
            &ctx.inventory,
            eips,
            "elastic IP",
            &self.id,
            |a| a.tags(),
            |a| a.allocation_id(),
            |a| {
                a.association_id().is_some()
                    || nats.iter().any(|n| {
                        n.nat_gateway_addresses()
                            .iter()
                            .any(|x| x.allocation_id().is_some() && x.allocation_id() == a.allocation_id())
                    })
            },
        )?;
        Ok(found.map(|a| {
            let mut o = observed(
                a.allocation_id().unwrap_or_default(),
                vec![("tags", render_subset(&ec2_tag_map(a.tags()), &self.tags))],
            );
            o.outputs
                .insert("publicIp".into(), a.public_ip().unwrap_or_default().into());
            o
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
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(ec2_tag_spec(ResourceType::ElasticIp, &self.tags))
            .send()
            .await
            .map_err(aws_err(&self.id, "AllocateAddress"))?;
        let mut o = outputs(out.allocation_id().unwrap_or_default());
        o.insert("publicIp".into(), out.public_ip().unwrap_or_default().into());
        Ok(Step::Done(o))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        release_address(&ctx.aws, &actual.id).await
    }
}

pub async fn release_address(aws: &Aws, allocation_id: &str) -> anyhow::Result<Step<()>> {
    let r = aws
        .ec2()
        .release_address()
        .allocation_id(allocation_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_err(format!("elastic-ip ({allocation_id})"), "ReleaseAddress")(e).into());
    match r {
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        r => deletion_step(r, &format!("elastic IP {allocation_id}")),
    }
}

#[derive(Debug)]
pub struct ElasticIpKind;

#[async_trait]
impl Kind for ElasticIpKind {
    fn name(&self) -> &'static str {
        "elastic-ip"
    }
    fn phase(&self) -> Phase {
        Phase::Network
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .addresses(&ctx.aws)
            .await?
            .iter()
            .map(|a| Doomed::new(kind, a.allocation_id().unwrap_or_default(), logical_id(a.tags()), None))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        release_address(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        // A NAT gateway holds its address.
        &[Order::Kind("nat-gateway")]
    }
}
