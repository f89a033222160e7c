//! Route tables, their default routes (internet gateway or NAT gateway) and subnet associations.

use super::*;

pub(super) struct RouteTableRes {
    pub(super) id: String,
    pub(super) deps: Vec<String>,
    pub(super) tags: BTreeMap<String, String>,
}

/// The cluster's route table `logical`; empty twins are set aside for apply to delete.
pub(super) async fn find_table<'a>(ctx: &'a Ctx, logical: &str) -> anyhow::Result<Option<&'a RouteTable>> {
    let tables = ctx.inventory.route_tables(&ctx.aws).await?;
    settled_by_logical_id(
        &ctx.inventory,
        tables,
        "route table",
        logical,
        |t| t.tags(),
        |t| t.route_table_id(),
        table_holds_something,
    )
}

/// Whether a route table carries more than its VPC's local route: another route or a subnet association.
pub(super) fn table_holds_something(t: &RouteTable) -> bool {
    t.associations().iter().any(|a| a.main() != Some(true))
        || t.routes().iter().any(|r| r.gateway_id() != Some("local"))
}

/// After creating `created` as `logical`, looks again: a crashed run's create of the same table may have landed
/// meanwhile (a token makes AWS answer such a repeat with the first table; moto and a changed spec do not). The
/// older twin is kept, `created` and any other empty twin are deleted, and the kept table's id is returned.
pub(super) async fn keep_one_table(ctx: &Ctx, logical: &str, created: &str) -> anyhow::Result<String> {
    let now = ctx.inventory.route_tables_now(&ctx.aws, logical).await?;
    if now.len() < 2 {
        return Ok(created.to_string());
    }
    let older = now
        .iter()
        .filter_map(|t| t.route_table_id())
        .filter(|id| *id != created)
        .min()
        .map(str::to_string);
    let (keeper, twins) = settle_duplicates(
        now.iter().collect(),
        "route table",
        &ctx.cluster,
        logical,
        older.as_deref(),
        table_holds_something,
        |t| t.route_table_id(),
    )?;
    let keeper = keeper.route_table_id().unwrap_or_default().to_string();
    for twin in twins {
        let id = twin.route_table_id().unwrap_or_default();
        tracing::warn!(
            "{logical}: route table {id} duplicates {keeper} (a create interrupted and repeated) and holds nothing: deleting it"
        );
        match delete_route_table(&ctx.aws, id, &[]).await? {
            Step::Done(()) => {}
            Step::Retry { reason, .. } | Step::Blocked { reason } => {
                anyhow::bail!("{logical}: deleting the duplicate route table {id}: {reason}")
            }
        }
    }
    Ok(keeper)
}

#[async_trait]
impl Resource for RouteTableRes {
    resource_metadata!("route-table", Phase::Network);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("vpc", inputs.get("vpc", "id"), Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        Ok(find_table(ctx, &self.id).await?.map(|t| {
            observed(
                t.route_table_id().unwrap_or_default(),
                vec![
                    ("vpc", t.vpc_id().unwrap_or_default().to_string()),
                    ("tags", render_subset(&ec2_tag_map(t.tags()), &self.tags)),
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
            .create_route_table()
            .client_token(ctx.client_token(&self.id, desired))
            .vpc_id(desired.value("vpc")?)
            .tag_specifications(ec2_tag_spec(ResourceType::RouteTable, &self.tags))
            .send()
            .await
            .map_err(|e| aws_err(&self.id, "CreateRouteTable")(e).into());
        match retry_if_not_visible(r, "VPC")? {
            Step::Done(out) => {
                let created = out.route_table().and_then(|t| t.route_table_id()).unwrap_or_default();
                Ok(Step::Done(outputs(&keep_one_table(ctx, &self.id, created).await?)))
            }
            Step::Retry { after, reason } => Ok(Step::Retry { after, reason }),
            Step::Blocked { reason } => Ok(Step::Blocked { reason }),
        }
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_route_table(&ctx.aws, &actual.id, &[]).await
    }
}

/// Removes the table's subnet associations, then the table (its routes go with it).
pub async fn delete_route_table(aws: &Aws, rtb_id: &str, association_ids: &[String]) -> anyhow::Result<Step<()>> {
    let what = format!("route table {rtb_id}");
    for assoc in association_ids {
        let r = aws
            .ec2()
            .disassociate_route_table()
            .association_id(assoc)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_err(format!("route-table ({rtb_id})"), "DisassociateRouteTable")(e).into());
        if let step @ (Step::Blocked { .. } | Step::Retry { .. }) = deletion_step(r, &what)? {
            return Ok(step);
        }
    }
    let r = aws
        .ec2()
        .delete_route_table()
        .route_table_id(rtb_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_err(format!("route-table ({rtb_id})"), "DeleteRouteTable")(e).into());
    deletion_step(r, &what)
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum RouteTarget {
    InternetGateway,
    NatGateway,
}

/// The 0.0.0.0/0 route of a table, to the internet gateway or a NAT gateway.
pub(super) struct DefaultRoute {
    pub(super) id: String,
    pub(super) table: String,
    pub(super) target: RouteTarget,
    pub(super) deps: Vec<String>,
    pub(super) target_node: String,
}

#[async_trait]
impl Resource for DefaultRoute {
    resource_metadata!("route", Phase::Network);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("table", inputs.get(&self.table, "id"), Mutability::Replace)
            .attr("target", inputs.get(&self.target_node, "id"), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let Some(t) = find_table(ctx, &self.table).await? else {
            return Ok(None);
        };
        let table = t.route_table_id().unwrap_or_default();
        let route = t.routes().iter().find(|r| r.destination_cidr_block() == Some(ANYWHERE));
        Ok(route.map(|r| {
            let target = r.nat_gateway_id().or(r.gateway_id()).unwrap_or_default();
            let mut o = observed(
                &format!("{table}:{ANYWHERE}"),
                vec![("table", table.to_string()), ("target", target.to_string())],
            );
            o.outputs.insert("table".into(), table.into());
            o
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let (table, target) = (desired.value("table")?, desired.value("target")?);
        let resource = format!("{} ({table} -> {target})", self.id);
        let r = if matches!(change, Change::Update(_)) {
            let call = ctx
                .aws
                .ec2()
                .replace_route()
                .route_table_id(table)
                .destination_cidr_block(ANYWHERE);
            let call = match self.target {
                RouteTarget::InternetGateway => call.gateway_id(target),
                RouteTarget::NatGateway => call.nat_gateway_id(target),
            };
            call.send()
                .await
                .map(|_| ())
                .map_err(|e| aws_err(resource, "ReplaceRoute")(e).into())
        } else {
            let call = ctx
                .aws
                .ec2()
                .create_route()
                .route_table_id(table)
                .destination_cidr_block(ANYWHERE);
            let call = match self.target {
                RouteTarget::InternetGateway => call.gateway_id(target),
                RouteTarget::NatGateway => call.nat_gateway_id(target),
            };
            call.send()
                .await
                .map(|_| ())
                .map_err(|e| aws_err(resource, "CreateRoute")(e).into())
        };
        Ok(retry_if_not_visible(r, "route table or gateway")?.map(|_| outputs(&format!("{table}:{ANYWHERE}"))))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        let table = &actual.attrs["table"];
        let r = ctx
            .aws
            .ec2()
            .delete_route()
            .route_table_id(table)
            .destination_cidr_block(ANYWHERE)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_err(format!("{} ({table})", self.id), "DeleteRoute")(e).into());
        deletion_step(r, &self.id)
    }
}

pub(super) struct Association {
    pub(super) id: String,
    pub(super) subnet: String,
    pub(super) table: String,
    pub(super) deps: Vec<String>,
}

#[async_trait]
impl Resource for Association {
    resource_metadata!("route-table-association", Phase::Network);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("subnet", inputs.get(&self.subnet, "id"), Mutability::Replace)
            .attr("table", inputs.get(&self.table, "id"), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let Some(subnet) = find_subnet(ctx, &self.subnet).await? else {
            return Ok(None);
        };
        let subnet_id = subnet.subnet_id().unwrap_or_default();
        let tables = ctx.inventory.route_tables(&ctx.aws).await?;
        let found = tables.iter().find_map(|t| {
            t.associations()
                .iter()
                .find(|a| a.subnet_id() == Some(subnet_id))
                .map(|a| {
                    (
                        t.route_table_id().unwrap_or_default(),
                        a.route_table_association_id().unwrap_or_default(),
                    )
                })
        });
        Ok(found.map(|(table, assoc)| {
            observed(
                assoc,
                vec![("subnet", subnet_id.to_string()), ("table", table.to_string())],
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
        let (subnet, table) = (desired.value("subnet")?, desired.value("table")?);
        let resource = format!("{} ({subnet} -> {table})", self.id);
        if let (Change::Update(_), Some(a)) = (change, actual) {
            let out = ctx
                .aws
                .ec2()
                .replace_route_table_association()
                .association_id(&a.id)
                .route_table_id(table)
                .send()
                .await
                .map_err(aws_err(resource, "ReplaceRouteTableAssociation"))?;
            return Ok(Step::Done(outputs(out.new_association_id().unwrap_or_default())));
        }
        let r = ctx
            .aws
            .ec2()
            .associate_route_table()
            .subnet_id(subnet)
            .route_table_id(table)
            .send()
            .await
            .map_err(|e| aws_err(resource, "AssociateRouteTable")(e).into());
        Ok(retry_if_not_visible(r, "subnet or route table")?
            .map(|out| outputs(out.association_id().unwrap_or_default())))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        let r = ctx
            .aws
            .ec2()
            .disassociate_route_table()
            .association_id(&actual.id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_err(format!("{} ({})", self.id, actual.id), "DisassociateRouteTable")(e).into());
        deletion_step(r, &self.id)
    }
}

#[derive(Debug)]
pub struct RouteTableKind;

#[async_trait]
impl Kind for RouteTableKind {
    fn name(&self) -> &'static str {
        "route-table"
    }
    fn phase(&self) -> Phase {
        Phase::Network
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .route_tables(&ctx.aws)
            .await?
            .iter()
            .map(|t| Doomed {
                // The main association goes with the VPC; the others are undone first.
                attached: t
                    .associations()
                    .iter()
                    .filter(|a| !a.main().unwrap_or(false))
                    .filter_map(|a| a.route_table_association_id().map(str::to_string))
                    .collect(),
                ..Doomed::new(
                    kind,
                    t.route_table_id().unwrap_or_default(),
                    logical_id(t.tags()),
                    t.vpc_id(),
                )
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_route_table(&ctx.aws, &item.cloud_id, &item.attached).await
    }
}
