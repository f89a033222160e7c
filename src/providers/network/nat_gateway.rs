//! NAT gateways (one, or one per zone) in the public subnets.

use super::*;

pub(super) struct NatGateway {
    pub(super) id: String,
    pub(super) deps: Vec<String>,
    pub(super) tags: BTreeMap<String, String>,
}

impl NatGateway {
    fn subnet_dep(&self) -> &str {
        &self.deps[0]
    }
    fn eip_dep(&self) -> &str {
        &self.deps[1]
    }
}

#[async_trait]
impl Resource for NatGateway {
    resource_metadata!("nat-gateway", Phase::Network);
    fn deadline(&self) -> Duration {
        // AWS takes one to five minutes; allow for a slow day.
        Duration::from_secs(900)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("subnet", inputs.get(self.subnet_dep(), "id"), Mutability::Replace)
            .attr("allocation", inputs.get(self.eip_dep(), "id"), Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let nats: Vec<_> = ctx
            .inventory
            .nat_gateways(&ctx.aws)
            .await?
            .iter()
            .filter(|n| crate::aws::inventory::nat_is_live(n))
            .cloned()
            .collect();
        // A twin NAT gateway is the target of no route.
        let tables = ctx.inventory.route_tables(&ctx.aws).await?;
        let found = settled_by_logical_id(
            &ctx.inventory,
            &nats,
            "NAT gateway",
            &self.id,
            |n| n.tags(),
            |n| n.nat_gateway_id(),
            |n| {
                tables.iter().any(|t| {
                    t.routes()
                        .iter()
                        .any(|r| r.nat_gateway_id().is_some() && r.nat_gateway_id() == n.nat_gateway_id())
                })
            },
        )?;
        Ok(found.map(|n| {
            observed(
                n.nat_gateway_id().unwrap_or_default(),
                vec![
                    ("subnet", n.subnet_id().unwrap_or_default().to_string()),
                    (
                        "allocation",
                        n.nat_gateway_addresses()
                            .first()
                            .and_then(|a| a.allocation_id())
                            .unwrap_or_default()
                            .to_string(),
                    ),
                    ("tags", render_subset(&ec2_tag_map(n.tags()), &self.tags)),
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
            .create_nat_gateway()
            .client_token(ctx.client_token(&self.id, desired))
            .subnet_id(desired.value("subnet")?)
            .allocation_id(desired.value("allocation")?)
            .tag_specifications(ec2_tag_spec(ResourceType::Natgateway, &self.tags))
            .send()
            .await
            .map_err(|e| aws_err(&self.id, "CreateNatGateway")(e).into());
        Ok(retry_if_not_visible(r, "subnet or elastic IP")?.map(|out| {
            let nat = out.nat_gateway();
            let mut o = outputs(nat.and_then(|n| n.nat_gateway_id()).unwrap_or_default());
            if let Some(state) = nat.and_then(|n| n.state()) {
                o.insert(CREATED_STATE.into(), state.as_str().into());
            }
            o
        }))
    }
    async fn ready(&self, ctx: &Ctx, outputs: &Outputs) -> anyhow::Result<Step<()>> {
        // Saves a round trip when the gateway came up at once (AWS answers pending; emulators do not).
        if outputs.get(CREATED_STATE).map(String::as_str) == Some(NatGatewayState::Available.as_str()) {
            return Ok(Step::Done(()));
        }
        let id = &outputs["id"];
        let out = ctx
            .aws
            .ec2()
            .describe_nat_gateways()
            .nat_gateway_ids(id)
            .send()
            .await
            .map_err(aws_err(format!("{} ({id})", self.id), "DescribeNatGateways"))?;
        let Some(nat) = out.nat_gateways().first() else {
            return Ok(Step::Retry {
                after: Duration::from_secs(2),
                reason: "not visible yet".into(),
            });
        };
        match nat.state() {
            Some(NatGatewayState::Available) => Ok(Step::Done(())),
            Some(NatGatewayState::Failed) => anyhow::bail!(
                "{} ({id}) failed: {}: {}\n  hint: fix the cause, then re-run; kforge replaces the failed gateway",
                self.id,
                nat.failure_code().unwrap_or("unknown"),
                nat.failure_message().unwrap_or_default()
            ),
            state => Ok(Step::Retry {
                after: Duration::from_secs(5),
                reason: format!("state {}", state.map(|s| s.as_str()).unwrap_or("unknown")),
            }),
        }
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_nat_gateway(&ctx.aws, &actual.id, true).await
    }
}

/// Deletes a NAT gateway; with `wait`, answers `Retry` until it is gone (its EIP and subnet stay busy until then).
pub async fn delete_nat_gateway(aws: &Aws, nat_id: &str, wait: bool) -> anyhow::Result<Step<()>> {
    let resource = format!("nat-gateway ({nat_id})");
    let out = aws
        .ec2()
        .describe_nat_gateways()
        .nat_gateway_ids(nat_id)
        .send()
        .await
        .map_err(aws_err(&resource, "DescribeNatGateways"));
    let state = match out {
        Ok(o) => o.nat_gateways().first().and_then(|n| n.state().cloned()),
        Err(e) if e.class() == ErrorClass::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    match state {
        None | Some(NatGatewayState::Deleted) => Ok(Step::Done(())),
        Some(NatGatewayState::Deleting) if wait => Ok(Step::Retry {
            after: Duration::from_secs(5),
            reason: "deleting".into(),
        }),
        Some(NatGatewayState::Deleting) => Ok(Step::Done(())),
        Some(_) => {
            aws.ec2()
                .delete_nat_gateway()
                .nat_gateway_id(nat_id)
                .send()
                .await
                .map_err(aws_err(&resource, "DeleteNatGateway"))?;
            Ok(if wait {
                Step::Retry {
                    after: Duration::from_millis(500),
                    reason: "deleting".into(),
                }
            } else {
                Step::Done(())
            })
        }
    }
}

#[derive(Debug)]
pub struct NatGatewayKind;

#[async_trait]
impl Kind for NatGatewayKind {
    fn name(&self) -> &'static str {
        "nat-gateway"
    }
    fn phase(&self) -> Phase {
        Phase::Network
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .nat_gateways(&ctx.aws)
            .await?
            .iter()
            .filter_map(|n| {
                let deleting = n.state() == Some(&NatGatewayState::Deleting);
                (nat_is_live(n) || deleting).then(|| Doomed {
                    deleting,
                    ..Doomed::new(
                        kind,
                        n.nat_gateway_id().unwrap_or_default(),
                        logical_id(n.tags()),
                        n.vpc_id(),
                    )
                })
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, wait: bool) -> anyhow::Result<Step<()>> {
        delete_nat_gateway(&ctx.aws, &item.cloud_id, wait).await
    }
    fn deletes_asynchronously(&self) -> bool {
        true
    }
}
