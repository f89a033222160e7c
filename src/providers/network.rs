//! The network layer shared by the eks and ec2 providers: VPC (DNS on), public/private subnets per zone, internet
//! gateway, NAT gateways with their elastic IPs, route tables, default routes and subnet associations.
//!
//! One resource per mutating call where AWS needs several (VPC and its DNS attribute, IGW and its attachment,
//! subnet and its public-IP attribute), so the dependency graph, not a resource's internals, orders the calls and
//! independent ones run together. Deleting functions here are shared with the delete sweep.

use crate::aws::inventory::{logical_id, nat_is_live};
use crate::delete::{Doomed, Kind, Order};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, NatGatewayState, ResourceType, RouteTable, VpcAttributeName,
};

use crate::aws::inventory::{by_logical_id, settle_duplicates, settled_by_logical_id};
use crate::aws::tags::{Tagger, ec2_tag_map, ec2_tag_spec, ec2_tags, render, render_subset};
use crate::aws::{Aws, ErrorClass, aws_err, class_of, error_code, is_not_found};
use crate::engine::{
    Change, Ctx, Desired, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, resource_metadata,
};
use crate::model::{Network, SubnetSource, VpcSource};
use crate::spec::{NatGateways, SubnetType};

const ANYWHERE: &str = "0.0.0.0/0";
/// Output key: the state a resource reported when it was created.
const CREATED_STATE: &str = "createdState";

/// Builds the network layer's resources for a validated network.
pub fn resources(cluster: &str, network: &Network, extra_tags: &BTreeMap<String, String>) -> Vec<Arc<dyn Resource>> {
    let tagger = Tagger {
        cluster: cluster.into(),
        extra: extra_tags.clone(),
    };
    let mut out: Vec<Arc<dyn Resource>> = Vec::new();
    let vpc_id = "vpc".to_string();
    match &network.vpc {
        VpcSource::Existing { id } => {
            out.push(Arc::new(ExistingVpc {
                id: vpc_id.clone(),
                vpc_id: id.clone(),
                deps: Vec::new(),
            }));
            for s in &network.subnets {
                if let SubnetSource::Existing { id } = &s.source {
                    out.push(Arc::new(ExistingSubnet {
                        id: format!("subnet/{}", s.name()),
                        subnet_id: id.clone(),
                        deps: vec![vpc_id.clone()],
                    }));
                }
            }
            return out;
        }
        VpcSource::Create { cidr } => {
            out.push(Arc::new(Vpc {
                id: vpc_id.clone(),
                cidr: cidr.to_string(),
                tags: tagger.tags("vpc", &[]),
                deps: Vec::new(),
            }));
            out.push(Arc::new(VpcDns {
                id: "vpc-dns".into(),
                deps: vec![vpc_id.clone()],
            }));
        }
    }

    let has_public = network.subnets.iter().any(|s| s.kind == SubnetType::Public);
    if has_public {
        out.push(Arc::new(InternetGateway {
            id: "igw".into(),
            tags: tagger.tags("igw", &[]),
            deps: Vec::new(),
        }));
        out.push(Arc::new(IgwAttachment {
            id: "igw-attachment".into(),
            deps: vec!["igw".into(), vpc_id.clone()],
        }));
        out.push(Arc::new(RouteTableRes {
            id: "rtb/public".into(),
            deps: vec![vpc_id.clone()],
            tags: tagger.tags("rtb/public", &[]),
        }));
        out.push(Arc::new(DefaultRoute {
            id: "route/public".into(),
            table: "rtb/public".into(),
            target: RouteTarget::InternetGateway,
            // The route needs the gateway attached to the VPC, not just created.
            deps: vec!["rtb/public".into(), "igw".into(), "igw-attachment".into()],
            target_node: "igw".into(),
        }));
    }

    // Zones holding a NAT gateway, and the NAT each zone's private subnets route through.
    let nat_zones: Vec<&String> = match network.nat_gateways {
        NatGateways::None => Vec::new(),
        NatGateways::Single => network.zones.iter().take(1).collect(),
        NatGateways::PerZone => network.zones.iter().collect(),
    };
    for zone in &nat_zones {
        out.push(Arc::new(ElasticIp {
            id: format!("eip/nat-{zone}"),
            tags: tagger.tags(&format!("eip/nat-{zone}"), &[]),
            deps: Vec::new(),
        }));
        out.push(Arc::new(NatGateway {
            id: format!("nat/{zone}"),
            deps: vec![format!("subnet/public-{zone}"), format!("eip/nat-{zone}")],
            tags: tagger.tags(&format!("nat/{zone}"), &[]),
        }));
    }

    for s in &network.subnets {
        let SubnetSource::Create { cidr } = &s.source else {
            continue;
        };
        let name = s.name();
        let subnet_id = format!("subnet/{name}");
        let role = subnet_role_tag(s.kind);
        out.push(Arc::new(SubnetRes {
            id: subnet_id.clone(),
            deps: vec![vpc_id.clone()],
            cidr: cidr.to_string(),
            zone: s.zone.clone(),
            tags: tagger.tags(&subnet_id, &[role, ("kforge.dev/subnet-type", &s.kind.to_string())]),
        }));
        let table = match s.kind {
            SubnetType::Public => {
                out.push(Arc::new(SubnetPublicIp {
                    id: format!("subnet-public-ip/{name}"),
                    subnet: subnet_id.clone(),
                    deps: vec![subnet_id.clone()],
                }));
                "rtb/public".to_string()
            }
            SubnetType::Private => {
                let table = format!("rtb/private-{}", s.zone);
                out.push(Arc::new(RouteTableRes {
                    id: table.clone(),
                    deps: vec![vpc_id.clone()],
                    tags: tagger.tags(&table, &[]),
                }));
                let nat_zone = match network.nat_gateways {
                    NatGateways::None => None,
                    NatGateways::Single => nat_zones.first().map(|z| z.to_string()),
                    NatGateways::PerZone => Some(s.zone.clone()),
                };
                if let Some(nat_zone) = nat_zone {
                    out.push(Arc::new(DefaultRoute {
                        id: format!("route/private-{}", s.zone),
                        table: table.clone(),
                        target: RouteTarget::NatGateway,
                        deps: vec![table.clone(), format!("nat/{nat_zone}")],
                        target_node: format!("nat/{nat_zone}"),
                    }));
                }
                table
            }
        };
        out.push(Arc::new(Association {
            id: format!("rtbassoc/{name}"),
            subnet: subnet_id.clone(),
            deps: vec![table.clone(), subnet_id],
            table,
        }));
    }
    out
}

fn outputs(id: &str) -> Outputs {
    Outputs::from([("id".to_string(), id.to_string())])
}

fn observed(id: &str, attrs: Vec<(&'static str, String)>) -> Observed {
    Observed {
        id: id.into(),
        attrs: attrs.into_iter().collect(),
        outputs: outputs(id),
    }
}

/// Errors that mean "the parent was just created and is not visible yet" (EC2 is eventually consistent, and says
/// so as not found).
fn not_yet_visible(err: &anyhow::Error) -> bool {
    is_not_found(err)
}

fn retry_if_not_visible<T>(r: anyhow::Result<T>, what: &str) -> anyhow::Result<Step<T>> {
    match r {
        Ok(v) => Ok(Step::Done(v)),
        Err(e) if not_yet_visible(&e) => Ok(Step::Retry {
            after: Duration::from_secs(2),
            reason: format!("{what} not visible yet"),
        }),
        Err(e) => Err(e),
    }
}

/// `Blocked` on DependencyViolation (something still uses the resource), `Done` when already gone.
fn deletion_step(r: anyhow::Result<()>, what: &str) -> anyhow::Result<Step<()>> {
    match r {
        Ok(()) => Ok(Step::Done(())),
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        Err(e) if class_of(&e) == ErrorClass::InUse => Ok(Step::Blocked {
            reason: format!("{what} is still in use"),
        }),
        Err(e) => match error_code(&e) {
            // AWS refuses to detach an IGW while NAT gateways still hold public addresses in the VPC.
            Some("AuthFailure") if what.contains("internet gateway") => Ok(Step::Blocked {
                reason: format!("{what}: public addresses still mapped"),
            }),
            _ => Err(e),
        },
    }
}

/// The in-place update of resources whose only mutable attribute is their tags: `Some` when that was the change.
pub(crate) async fn retag(
    ctx: &Ctx,
    change: &Change,
    actual: Option<&Observed>,
    resource: &str,
    tags: &BTreeMap<String, String>,
) -> anyhow::Result<Option<Step<Outputs>>> {
    let (Change::Update(_), Some(a)) = (change, actual) else {
        return Ok(None);
    };
    ctx.aws
        .ec2()
        .create_tags()
        .resources(&a.id)
        .set_tags(Some(ec2_tags(tags)))
        .send()
        .await
        .map_err(aws_err(format!("{resource} ({})", a.id), "CreateTags"))?;
    Ok(Some(Step::Done(a.outputs.clone())))
}

// ---------------------------------------------------------------- VPC

struct Vpc {
    id: String,
    cidr: String,
    tags: BTreeMap<String, String>,
    deps: Vec<String>,
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
struct VpcDns {
    id: String,
    deps: Vec<String>,
}

const DNS_ATTRS: [(&str, VpcAttributeName); 2] = [
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
struct ExistingVpc {
    id: String,
    vpc_id: String,
    deps: Vec<String>,
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

struct ExistingSubnet {
    id: String,
    subnet_id: String,
    deps: Vec<String>,
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

// ---------------------------------------------------------------- Internet gateway

struct InternetGateway {
    id: String,
    tags: BTreeMap<String, String>,
    deps: Vec<String>,
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

struct IgwAttachment {
    id: String,
    deps: Vec<String>,
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

// ---------------------------------------------------------------- Subnets

struct SubnetRes {
    id: String,
    deps: Vec<String>,
    cidr: String,
    zone: String,
    tags: BTreeMap<String, String>,
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
struct SubnetPublicIp {
    id: String,
    subnet: String,
    deps: Vec<String>,
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

// ---------------------------------------------------------------- Elastic IPs and NAT gateways

struct ElasticIp {
    id: String,
    tags: BTreeMap<String, String>,
    deps: Vec<String>,
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

struct NatGateway {
    id: String,
    deps: Vec<String>,
    tags: BTreeMap<String, String>,
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

/// The cluster's VPC `logical`. A twin VPC (a create repeated after a crash) holds none of the cluster's subnets
/// and no gateway is attached to it.
async fn find_vpc<'a>(ctx: &'a Ctx, logical: &str) -> anyhow::Result<Option<&'a aws_sdk_ec2::types::Vpc>> {
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

/// The cluster's internet gateway `logical`; a twin is attached to no VPC.
async fn find_igw<'a>(ctx: &'a Ctx, logical: &str) -> anyhow::Result<Option<&'a aws_sdk_ec2::types::InternetGateway>> {
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

/// The cluster's subnet `logical`. (Subnets have no twins to settle: AWS refuses a second subnet with an
/// overlapping CIDR in one VPC, so a repeated create fails instead of duplicating.)
async fn find_subnet<'a>(ctx: &'a Ctx, logical: &str) -> anyhow::Result<Option<&'a aws_sdk_ec2::types::Subnet>> {
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

// ---------------------------------------------------------------- Route tables, routes, associations

struct RouteTableRes {
    id: String,
    deps: Vec<String>,
    tags: BTreeMap<String, String>,
}

/// The cluster's route table `logical`; empty twins are set aside for apply to delete.
async fn find_table<'a>(ctx: &'a Ctx, logical: &str) -> anyhow::Result<Option<&'a RouteTable>> {
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
fn table_holds_something(t: &RouteTable) -> bool {
    t.associations().iter().any(|a| a.main() != Some(true))
        || t.routes().iter().any(|r| r.gateway_id() != Some("local"))
}

/// After creating `created` as `logical`, looks again: a crashed run's create of the same table may have landed
/// meanwhile (a token makes AWS answer such a repeat with the first table; moto and a changed spec do not). The
/// older twin is kept, `created` and any other empty twin are deleted, and the kept table's id is returned.
async fn keep_one_table(ctx: &Ctx, logical: &str, created: &str) -> anyhow::Result<String> {
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
enum RouteTarget {
    InternetGateway,
    NatGateway,
}

/// The 0.0.0.0/0 route of a table, to the internet gateway or a NAT gateway.
struct DefaultRoute {
    id: String,
    table: String,
    target: RouteTarget,
    deps: Vec<String>,
    target_node: String,
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

struct Association {
    id: String,
    subnet: String,
    table: String,
    deps: Vec<String>,
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

/// The tag Kubernetes load balancer controllers look for to pick subnets: internet-facing LBs go to public
/// subnets, internal ones to private subnets.
pub fn subnet_role_tag(kind: SubnetType) -> (&'static str, &'static str) {
    match kind {
        SubnetType::Public => ("kubernetes.io/role/elb", "1"),
        SubnetType::Private => ("kubernetes.io/role/internal-elb", "1"),
    }
}

// What delete knows about the network kinds (see `delete::Kind`).

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

#[derive(Debug)]
pub struct NetworkInterfaceKind;

#[async_trait]
impl Kind for NetworkInterfaceKind {
    fn name(&self) -> &'static str {
        "network-interface"
    }
    /// Kubernetes' leftovers go with the cluster.
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .leftover_network_interfaces(&ctx.aws)
            .await?
            .iter()
            .map(|e| Doomed::new(kind, e.network_interface_id().unwrap_or_default(), None, e.vpc_id()))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        let id = &item.cloud_id;
        let r = ctx
            .aws
            .ec2()
            .delete_network_interface()
            .network_interface_id(id)
            .send()
            .await;
        match r.map_err(|e| {
            anyhow::Error::from(aws_err(format!("network-interface ({id})"), "DeleteNetworkInterface")(
                e,
            ))
        }) {
            Ok(_) => Ok(Step::Done(())),
            Err(e) if is_not_found(&e) => Ok(Step::Done(())),
            Err(e) if class_of(&e) == ErrorClass::InUse => Ok(Step::Blocked {
                reason: format!("network interface {id} is attached"),
            }),
            Err(e) => Err(e),
        }
    }
    fn after(&self) -> &'static [Order] {
        // Pods' interfaces are detached once what ran them is gone.
        &[
            Order::Kind("eks-cluster"),
            Order::Kind("eks-nodegroup"),
            Order::Kind("eks-fargate-profile"),
            Order::Kind("load-balancer"),
            Order::Kind("auto-scaling-group"),
            Order::Kind("instance"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::executor::{Job, depth};
    use crate::model::{Cluster, Context};

    struct Node(Arc<dyn Resource>);
    #[async_trait]
    impl Job<()> for Node {
        fn id(&self) -> &str {
            self.0.id()
        }
        fn deps(&self) -> &[String] {
            self.0.depends_on()
        }
        fn deadline(&self) -> Duration {
            Duration::ZERO
        }
        fn action(&self) -> String {
            String::new()
        }
        async fn step(&self, _: &BTreeMap<String, ()>) -> anyhow::Result<Step<()>> {
            Ok(Step::Done(()))
        }
    }

    fn cluster(network: &str) -> Cluster {
        let text = format!(
            "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: demo}}\nspec:\n  provider: eks\n  region: us-east-1\n  network: {network}\n"
        );
        Cluster::from_spec(&crate::spec::parse(&text, "t").unwrap(), &Context::default()).unwrap()
    }

    fn ids(c: &Cluster) -> Vec<String> {
        resources(&c.name, c.network.as_ref().unwrap(), &c.tags)
            .iter()
            .map(|r| r.id().to_string())
            .collect()
    }

    #[test]
    fn per_zone_nat_graph_is_shallow_and_complete() {
        let c = cluster("{natGateways: perZone}");
        let rs = resources(&c.name, c.network.as_ref().unwrap(), &c.tags);
        let ids = ids(&c);
        for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
            for want in [
                format!("nat/{z}"),
                format!("eip/nat-{z}"),
                format!("subnet/public-{z}"),
                format!("subnet/private-{z}"),
                format!("rtb/private-{z}"),
                format!("route/private-{z}"),
                format!("rtbassoc/private-{z}"),
                format!("rtbassoc/public-{z}"),
                format!("subnet-public-ip/public-{z}"),
            ] {
                assert!(ids.contains(&want), "missing {want} in {ids:?}");
            }
        }
        let jobs: Vec<Arc<dyn Job<()>>> = rs.into_iter().map(|r| Arc::new(Node(r)) as Arc<dyn Job<()>>).collect();
        // vpc -> subnet -> nat -> private route
        assert_eq!(depth(&jobs).unwrap(), 4);
    }

    #[test]
    fn single_nat_routes_every_private_table_through_the_first_zone() {
        let c = cluster("{natGateways: single}");
        let rs = resources(&c.name, c.network.as_ref().unwrap(), &c.tags);
        let routes: Vec<_> = rs.iter().filter(|r| r.id().starts_with("route/private-")).collect();
        assert_eq!(routes.len(), 3);
        assert!(
            routes
                .iter()
                .all(|r| r.depends_on().contains(&"nat/us-east-1a".to_string()))
        );
        assert_eq!(rs.iter().filter(|r| r.kind() == "nat-gateway").count(), 1);
    }

    #[test]
    fn public_topology_has_no_private_pieces() {
        let c = cluster("{topology: public}");
        let ids = ids(&c);
        assert!(
            ids.iter().all(|i| !i.contains("private") && !i.starts_with("nat/")),
            "{ids:?}"
        );
        assert!(ids.contains(&"route/public".to_string()));
    }

    #[test]
    fn existing_vpc_is_only_looked_up() {
        let c = cluster(
            "{vpcId: vpc-0abc, natGateways: none, subnets: [{zone: us-east-1a, type: private, id: subnet-1}, {zone: us-east-1b, type: private, id: subnet-2}, {zone: us-east-1a, type: public, id: subnet-3}, {zone: us-east-1b, type: public, id: subnet-4}]}",
        );
        let rs = resources(&c.name, c.network.as_ref().unwrap(), &c.tags);
        assert!(rs.iter().all(|r| r.kind().starts_with("existing-")));
        assert_eq!(rs.len(), 5);
    }

    mod waiting {
        //! What moto cannot show (its NAT gateways are available at once): a gateway pending for a while, one
        //! that fails, deletions that take time, and a subnet still in use. Answers come from aws-smithy-mocks.
        use super::super::*;
        use aws_sdk_ec2::error::ErrorMetadata;
        use aws_sdk_ec2::operation::delete_subnet::DeleteSubnetError;
        use aws_sdk_ec2::operation::describe_nat_gateways::DescribeNatGatewaysOutput;
        use aws_sdk_ec2::types::NatGateway as NatGatewayDto;
        use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};

        fn ctx(rules: &[&Rule]) -> Ctx {
            let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::Sequential);
            for r in rules {
                interceptor = interceptor.with_rule(r);
            }
            let client = aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::Config::builder()
                    .behavior_version_latest()
                    .region(aws_sdk_ec2::config::Region::new("us-east-1"))
                    .credentials_provider(aws_sdk_ec2::config::Credentials::new("a", "b", None, None, "test"))
                    .http_client(create_mock_http_client())
                    .interceptor(interceptor)
                    .build(),
            );
            Ctx::new(Aws::with_ec2(client), "demo")
        }

        fn nat_in(state: NatGatewayState) -> Rule {
            mock!(aws_sdk_ec2::Client::describe_nat_gateways).then_output(move || {
                DescribeNatGatewaysOutput::builder()
                    .nat_gateways(
                        NatGatewayDto::builder()
                            .nat_gateway_id("nat-1")
                            .state(state.clone())
                            .failure_code("InsufficientFreeAddressesInSubnet")
                            .failure_message("Subnet has no free addresses")
                            .build(),
                    )
                    .build()
            })
        }

        fn nat() -> NatGateway {
            NatGateway {
                id: "nat/us-east-1a".into(),
                deps: vec!["subnet/public-us-east-1a".into(), "eip/nat-us-east-1a".into()],
                tags: BTreeMap::new(),
            }
        }

        fn pending_outputs() -> Outputs {
            Outputs::from([("id".into(), "nat-1".into()), (CREATED_STATE.into(), "pending".into())])
        }

        #[tokio::test]
        async fn a_pending_gateway_is_waited_for_until_available() {
            let (pending, available) = (nat_in(NatGatewayState::Pending), nat_in(NatGatewayState::Available));
            let ctx = ctx(&[&pending, &available]);
            let first = nat().ready(&ctx, &pending_outputs()).await.unwrap();
            assert!(
                matches!(first, Step::Retry { ref reason, .. } if reason == "state pending"),
                "{first:?}"
            );
            assert_eq!(nat().ready(&ctx, &pending_outputs()).await.unwrap(), Step::Done(()));
            assert_eq!(pending.num_calls() + available.num_calls(), 2);
        }

        #[tokio::test]
        async fn an_available_create_answer_needs_no_describe() {
            let describe = nat_in(NatGatewayState::Pending);
            let ctx = ctx(&[&describe]);
            let outputs = Outputs::from([
                ("id".into(), "nat-1".into()),
                (CREATED_STATE.into(), "available".into()),
            ]);
            assert_eq!(nat().ready(&ctx, &outputs).await.unwrap(), Step::Done(()));
            assert_eq!(describe.num_calls(), 0);
        }

        #[tokio::test]
        async fn a_failed_gateway_reports_why() {
            let failed = nat_in(NatGatewayState::Failed);
            let ctx = ctx(&[&failed]);
            let err = nat().ready(&ctx, &pending_outputs()).await.unwrap_err().to_string();
            assert!(
                err.contains("nat/us-east-1a (nat-1) failed: InsufficientFreeAddressesInSubnet"),
                "{err}"
            );
            assert!(err.contains("hint:"), "{err}");
        }

        #[tokio::test]
        async fn deleting_waits_until_the_gateway_is_gone() {
            let available = nat_in(NatGatewayState::Available);
            let delete = mock!(aws_sdk_ec2::Client::delete_nat_gateway).then_output(|| {
                aws_sdk_ec2::operation::delete_nat_gateway::DeleteNatGatewayOutput::builder()
                    .nat_gateway_id("nat-1")
                    .build()
            });
            let deleting = nat_in(NatGatewayState::Deleting);
            let deleted = nat_in(NatGatewayState::Deleted);
            let ctx = ctx(&[&available, &delete, &deleting, &deleted]);
            assert!(matches!(
                delete_nat_gateway(&ctx.aws, "nat-1", true).await.unwrap(),
                Step::Retry { .. }
            ));
            assert!(matches!(
                delete_nat_gateway(&ctx.aws, "nat-1", true).await.unwrap(),
                Step::Retry { .. }
            ));
            assert_eq!(
                delete_nat_gateway(&ctx.aws, "nat-1", true).await.unwrap(),
                Step::Done(())
            );
            assert_eq!(delete.num_calls(), 1, "asked to delete once, then only watched");
        }

        #[tokio::test]
        async fn a_subnet_in_use_is_blocked_not_failed() {
            let in_use = mock!(aws_sdk_ec2::Client::delete_subnet).then_error(|| {
                DeleteSubnetError::generic(
                    ErrorMetadata::builder()
                        .code("DependencyViolation")
                        .message("has dependencies")
                        .build(),
                )
            });
            let ctx = ctx(&[&in_use]);
            let step = delete_subnet(&ctx.aws, "subnet-1").await.unwrap();
            assert!(
                matches!(step, Step::Blocked { ref reason } if reason.contains("subnet-1")),
                "{step:?}"
            );
        }
    }

    #[test]
    fn subnets_carry_load_balancer_role_tags() {
        assert_eq!(subnet_role_tag(SubnetType::Public).0, "kubernetes.io/role/elb");
        assert_eq!(
            subnet_role_tag(SubnetType::Private).0,
            "kubernetes.io/role/internal-elb"
        );
    }
}
