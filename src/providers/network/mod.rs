//! The network layer shared by the eks and ec2 providers: VPC (DNS on), public/private subnets per zone, internet
//! gateway, NAT gateways with their elastic IPs, route tables, default routes and subnet associations.
//!
//! One resource per mutating call where AWS needs several (VPC and its DNS attribute, IGW and its attachment,
//! subnet and its public-IP attribute), so the dependency graph, not a resource's internals, orders the calls and
//! independent ones run together. One file per kind, each with its `delete::Kind`; this module builds the layer's
//! graph (`resources`) and holds what the kinds share (outputs, eventual-consistency and deletion answers, retagging).

mod elastic_ip;
mod internet_gateway;
mod nat_gateway;
mod network_interface;
mod route_table;
mod subnet;
mod vpc;

pub use elastic_ip::*;
pub use internet_gateway::*;
pub use nat_gateway::*;
pub use network_interface::*;
pub use route_table::*;
pub use subnet::*;
pub use vpc::*;

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

/// The tag Kubernetes load balancer controllers look for to pick subnets: internet-facing LBs go to public
/// subnets, internal ones to private subnets.
pub fn subnet_role_tag(kind: SubnetType) -> (&'static str, &'static str) {
    match kind {
        SubnetType::Public => ("kubernetes.io/role/elb", "1"),
        SubnetType::Private => ("kubernetes.io/role/internal-elb", "1"),
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
        use aws_smithy_mocks::{Rule, RuleMode, mock};

        fn ctx(rules: &[&Rule]) -> Ctx {
            let client = crate::aws::mock_client!(aws_sdk_ec2, RuleMode::Sequential, rules);
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
