//! Everything of one cluster, listed once per kind and per run: EC2 resources by their `kforge.dev/cluster` tag, IAM
//! roles by their path `/kforge/CLUSTER/` (IAM cannot list by tag).
//!
//! Finding by tag is what makes re-runs converge (moto and crashed runs ignore `ClientToken`), and listing a whole
//! kind in one call is what keeps observing fast: a plan asks six questions, not one per resource. The snapshot is
//! taken lazily, at the first question about a kind; delete and `get cluster` use the same lists.

use aws_sdk_ec2::types::{
    Address, Filter, InternetGateway, NatGateway, NatGatewayState, RouteTable, SecurityGroup, Subnet, Tag, Vpc,
};
use tokio::sync::OnceCell;

use super::tags::{self, ec2_tag_map};
use super::{Aws, aws_err};

pub struct Inventory {
    cluster: String,
    vpcs: OnceCell<Vec<Vpc>>,
    subnets: OnceCell<Vec<Subnet>>,
    internet_gateways: OnceCell<Vec<InternetGateway>>,
    nat_gateways: OnceCell<Vec<NatGateway>>,
    addresses: OnceCell<Vec<Address>>,
    route_tables: OnceCell<Vec<RouteTable>>,
    security_groups: OnceCell<Vec<SecurityGroup>>,
    roles: OnceCell<Vec<aws_sdk_iam::types::Role>>,
}

/// Several live resources claim one logical id: a previous run was interrupted in a way find-before-create could
/// not cover, or someone copied tags. kforge refuses to guess which one is the cluster's.
#[derive(Debug, thiserror::Error)]
#[error(
    "{count} {kind}s are tagged as `{logical}` of cluster {cluster}: {ids}\n  hint: keep one, delete the others (or remove their {tag} tag), then re-run"
)]
pub struct DuplicateResources {
    pub kind: &'static str,
    pub logical: String,
    pub cluster: String,
    pub count: usize,
    pub ids: String,
    pub tag: &'static str,
}

macro_rules! paged {
    ($aws:expr, $call:ident, $filters:expr, $items:ident, $op:literal, $what:expr) => {
        paged!($aws, $call, set_filters, $filters, $items, $op, $what)
    };
    ($aws:expr, $call:ident, $setter:ident, $filters:expr, $items:ident, $op:literal, $what:expr) => {{
        let mut out = Vec::new();
        let mut pages = $aws.ec2().$call().$setter(Some($filters)).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(aws_err($what, $op))?;
            out.extend(page.$items().iter().cloned());
        }
        out
    }};
}

impl Inventory {
    pub fn new(cluster: &str) -> Self {
        Inventory {
            cluster: cluster.into(),
            vpcs: OnceCell::new(),
            subnets: OnceCell::new(),
            internet_gateways: OnceCell::new(),
            nat_gateways: OnceCell::new(),
            addresses: OnceCell::new(),
            route_tables: OnceCell::new(),
            security_groups: OnceCell::new(),
            roles: OnceCell::new(),
        }
    }

    /// IAM roles kforge made for the cluster (those under its path). Listings carry no tags; finds look roles up by
    /// name.
    pub async fn roles(&self, aws: &Aws) -> anyhow::Result<&[aws_sdk_iam::types::Role]> {
        self.roles
            .get_or_try_init(|| async {
                let mut out = Vec::new();
                let mut pages = aws
                    .iam()
                    .list_roles()
                    .path_prefix(role_path(&self.cluster))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(format!("IAM roles of cluster {}", self.cluster), "ListRoles"))?;
                    out.extend(page.roles().iter().cloned());
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
            .map(Vec::as_slice)
    }

    fn filters(&self) -> Vec<Filter> {
        vec![tags::cluster_filter(&self.cluster)]
    }

    fn what(&self, kind: &str) -> String {
        format!("{kind}s of cluster {}", self.cluster)
    }

    pub async fn vpcs(&self, aws: &Aws) -> anyhow::Result<&[Vpc]> {
        self.vpcs
            .get_or_try_init(|| async {
                Ok(paged!(
                    aws,
                    describe_vpcs,
                    self.filters(),
                    vpcs,
                    "DescribeVpcs",
                    self.what("VPC")
                ))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn subnets(&self, aws: &Aws) -> anyhow::Result<&[Subnet]> {
        self.subnets
            .get_or_try_init(|| async {
                Ok(paged!(
                    aws,
                    describe_subnets,
                    self.filters(),
                    subnets,
                    "DescribeSubnets",
                    self.what("subnet")
                ))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn internet_gateways(&self, aws: &Aws) -> anyhow::Result<&[InternetGateway]> {
        self.internet_gateways
            .get_or_try_init(|| async {
                Ok(paged!(
                    aws,
                    describe_internet_gateways,
                    self.filters(),
                    internet_gateways,
                    "DescribeInternetGateways",
                    self.what("internet gateway")
                ))
            })
            .await
            .map(Vec::as_slice)
    }

    /// NAT gateways that exist or are on their way (deleted and failed ones are history, not resources).
    pub async fn nat_gateways(&self, aws: &Aws) -> anyhow::Result<&[NatGateway]> {
        self.nat_gateways
            .get_or_try_init(|| async {
                let mut filters = self.filters();
                filters.push(
                    Filter::builder()
                        .name("state")
                        .values("pending")
                        .values("available")
                        .values("deleting")
                        .build(),
                );
                Ok(paged!(
                    aws,
                    describe_nat_gateways,
                    set_filter,
                    filters,
                    nat_gateways,
                    "DescribeNatGateways",
                    self.what("NAT gateway")
                ))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn addresses(&self, aws: &Aws) -> anyhow::Result<&[Address]> {
        self.addresses
            .get_or_try_init(|| async {
                let out = aws
                    .ec2()
                    .describe_addresses()
                    .set_filters(Some(self.filters()))
                    .send()
                    .await
                    .map_err(aws_err(self.what("elastic IP"), "DescribeAddresses"))?;
                Ok::<_, anyhow::Error>(out.addresses().to_vec())
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn route_tables(&self, aws: &Aws) -> anyhow::Result<&[RouteTable]> {
        self.route_tables
            .get_or_try_init(|| async {
                Ok(paged!(
                    aws,
                    describe_route_tables,
                    self.filters(),
                    route_tables,
                    "DescribeRouteTables",
                    self.what("route table")
                ))
            })
            .await
            .map(Vec::as_slice)
    }

    /// Security groups of the cluster: kforge's own, and those Kubernetes created for it (load balancers).
    pub async fn security_groups(&self, aws: &Aws) -> anyhow::Result<&[SecurityGroup]> {
        self.security_groups
            .get_or_try_init(|| async {
                let owned = vec![
                    Filter::builder()
                        .name(format!("tag:{}", tags::kubernetes_cluster_key(&self.cluster)))
                        .values("owned")
                        .build(),
                ];
                // Two listings (EC2 filters cannot OR two tag keys), asked at once.
                let (mut groups, owned): (Vec<SecurityGroup>, Vec<SecurityGroup>) = tokio::try_join!(
                    async {
                        Ok::<_, anyhow::Error>(paged!(
                            aws,
                            describe_security_groups,
                            self.filters(),
                            security_groups,
                            "DescribeSecurityGroups",
                            self.what("security group")
                        ))
                    },
                    async {
                        Ok::<_, anyhow::Error>(paged!(
                            aws,
                            describe_security_groups,
                            owned,
                            security_groups,
                            "DescribeSecurityGroups",
                            self.what("security group")
                        ))
                    },
                )?;
                for g in owned {
                    if !groups.iter().any(|x| x.group_id() == g.group_id()) {
                        groups.push(g);
                    }
                }
                Ok::<_, anyhow::Error>(groups)
            })
            .await
            .map(Vec::as_slice)
    }
}

impl Inventory {
    /// Lists every EC2 kind at once, so finds that follow never wait for one another's listings. (IAM roles are
    /// listed only when a run involves them: a network-only run needs no IAM permission.)
    pub async fn prefetch(&self, aws: &Aws) -> anyhow::Result<()> {
        tokio::try_join!(
            self.vpcs(aws),
            self.subnets(aws),
            self.internet_gateways(aws),
            self.nat_gateways(aws),
            self.addresses(aws),
            self.route_tables(aws),
            self.security_groups(aws),
        )?;
        Ok(())
    }
}

/// The IAM path of every role and instance profile kforge creates for `cluster`.
pub fn role_path(cluster: &str) -> String {
    format!("/kforge/{cluster}/")
}

/// Picks the one item whose `kforge.dev/resource` tag is `logical`; `None` if there is none.
pub fn by_logical_id<'a, T>(
    items: &'a [T],
    kind: &'static str,
    cluster: &str,
    logical: &str,
    tags_of: impl Fn(&T) -> &[Tag],
    id_of: impl Fn(&T) -> Option<&str>,
) -> anyhow::Result<Option<&'a T>> {
    let matching: Vec<&T> = items
        .iter()
        .filter(|i| {
            ec2_tag_map(tags_of(i))
                .get(tags::RESOURCE)
                .is_some_and(|v| v == logical)
        })
        .collect();
    match matching.len() {
        0 => Ok(None),
        1 => Ok(Some(matching[0])),
        n => Err(DuplicateResources {
            kind,
            logical: logical.into(),
            cluster: cluster.into(),
            count: n,
            ids: matching.iter().filter_map(|i| id_of(i)).collect::<Vec<_>>().join(", "),
            tag: tags::RESOURCE,
        }
        .into()),
    }
}

/// Logical id of a tagged item, for reports.
pub fn logical_id(tags: &[Tag]) -> Option<String> {
    ec2_tag_map(tags).get(tags::RESOURCE).cloned()
}

/// A NAT gateway that still counts as present.
pub fn nat_is_live(n: &NatGateway) -> bool {
    matches!(n.state(), Some(NatGatewayState::Pending | NatGatewayState::Available))
}
