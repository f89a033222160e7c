//! Everything of one cluster, listed once per kind and per run: EC2 resources by their `kforge.dev/cluster` tag, IAM
//! roles by their path `/kforge/CLUSTER/` (IAM cannot list by tag).
//!
//! Finding by tag is what makes re-runs converge (moto and crashed runs ignore `ClientToken`), and listing a whole
//! kind in one call is what keeps observing fast: a plan's prefetch is eight listings (one per EC2 kind it
//! reconciles), not a call per resource. Every other kind is listed lazily, at the first question about it; delete
//! and `get cluster` use the same lists. The listings live by service: `network`, `machines`, `eks`, `iam`, `elb`.

use std::collections::BTreeMap;

use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_ec2::types::{
    Address, Filter, Instance, InternetGateway, KeyPairInfo, LaunchTemplate, NatGateway, NatGatewayState,
    NetworkInterface, RouteTable, SecurityGroup, Subnet, Tag, Vpc,
};
use aws_sdk_eks::types::{Addon, Cluster as EksCluster, FargateProfile, Nodegroup};
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
    launch_templates: OnceCell<Vec<LaunchTemplate>>,
    roles: OnceCell<Vec<aws_sdk_iam::types::Role>>,
    eks_cluster: OnceCell<Option<EksCluster>>,
    nodegroups: OnceCell<Vec<Nodegroup>>,
    fargate_profiles: OnceCell<Vec<FargateProfile>>,
    addons: OnceCell<Vec<Addon>>,
    oidc_providers: OnceCell<Vec<Tagged>>,
    load_balancers: OnceCell<Vec<Tagged>>,
    target_groups: OnceCell<Vec<Tagged>>,
    instances: OnceCell<Vec<Instance>>,
    key_pairs: OnceCell<Vec<KeyPairInfo>>,
    auto_scaling_groups: OnceCell<Vec<AutoScalingGroup>>,
    instance_profiles: OnceCell<Vec<aws_sdk_iam::types::InstanceProfile>>,
    /// Empty duplicates finds set aside (see [`settle_duplicates`]): cloud id -> logical id. Apply deletes them
    /// with the orphans.
    surplus: std::sync::Mutex<BTreeMap<String, String>>,
}

/// An object listed without tags whose tags were fetched separately (IAM OIDC providers, ELBv2).
#[derive(Debug, Clone)]
pub struct Tagged {
    pub arn: String,
    /// OIDC provider: its issuer URL (without `https://`); load balancer: its VPC.
    pub detail: String,
    pub tags: BTreeMap<String, String>,
}

/// Whether an error means the endpoint does not implement the call at all (an emulator answering an HTML page),
/// as opposed to an AWS error.
pub fn not_implemented(err: &anyhow::Error) -> bool {
    super::error_code(err) == Some("HTTP 404")
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

/// Whether EC2 `tags` carry `key` with `value` (any value when `None`).
fn has_tag(tags: &[aws_sdk_ec2::types::Tag], key: &str, value: Option<&str>) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(key) && value.is_none_or(|v| t.value() == Some(v)))
}

/// What a listing answered, kept only where the tags say it is the cluster's: kforge never trusts the server to
/// have applied its `tag:` filter (an endpoint that ignores it, such as moto, would otherwise hand it another
/// cluster's resources to adopt or delete).
fn keep_tagged<T>(
    items: Vec<T>,
    tags_of: impl Fn(&T) -> &[aws_sdk_ec2::types::Tag],
    key: &str,
    value: Option<&str>,
) -> Vec<T> {
    items
        .into_iter()
        .filter(|i| {
            let kept = has_tag(tags_of(i), key, value);
            if !kept {
                tracing::debug!("a listing filtered on tag {key} answered a resource without it; ignored");
            }
            kept
        })
        .collect()
}

/// EC2 types that carry tags.
trait Ec2Tagged {
    fn ec2_tags(&self) -> &[aws_sdk_ec2::types::Tag];
}

macro_rules! ec2_tagged {
    ($($t:ty),*) => {
        $(impl Ec2Tagged for $t {
            fn ec2_tags(&self) -> &[aws_sdk_ec2::types::Tag] {
                self.tags()
            }
        })*
    };
}

ec2_tagged!(
    Vpc,
    Subnet,
    InternetGateway,
    NatGateway,
    Address,
    RouteTable,
    SecurityGroup,
    LaunchTemplate,
    Instance,
    KeyPairInfo
);

mod eks;
mod elb;
mod iam;
mod machines;
mod network;

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
            launch_templates: OnceCell::new(),
            roles: OnceCell::new(),
            eks_cluster: OnceCell::new(),
            nodegroups: OnceCell::new(),
            fargate_profiles: OnceCell::new(),
            addons: OnceCell::new(),
            oidc_providers: OnceCell::new(),
            load_balancers: OnceCell::new(),
            target_groups: OnceCell::new(),
            instances: OnceCell::new(),
            key_pairs: OnceCell::new(),
            auto_scaling_groups: OnceCell::new(),
            instance_profiles: OnceCell::new(),
            surplus: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Notes `cloud_id` as an empty duplicate of `logical` for apply to delete; `false` if it already was.
    pub fn set_aside(&self, cloud_id: &str, logical: &str) -> bool {
        self.surplus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cloud_id.into(), logical.into())
            .is_none()
    }

    /// The empty duplicates set aside so far (cloud id -> logical id).
    pub fn surplus(&self) -> BTreeMap<String, String> {
        self.surplus.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn filters(&self) -> Vec<Filter> {
        vec![tags::cluster_filter(&self.cluster)]
    }

    /// The items of a listing filtered on `self.filters()` that really carry the cluster's tag.
    fn own<T: Ec2Tagged>(&self, items: Vec<T>) -> Vec<T> {
        keep_tagged(items, T::ec2_tags, tags::CLUSTER, Some(&self.cluster))
    }

    fn what(&self, kind: &str) -> String {
        format!("{kind}s of cluster {}", self.cluster)
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
            self.launch_templates(aws),
        )?;
        Ok(())
    }
}

/// The IAM path of every role and instance profile kforge creates for `cluster`.
pub fn role_path(cluster: &str) -> String {
    format!("/kforge/{cluster}/")
}

/// The items whose `kforge.dev/resource` tag is `logical`.
fn tagged_as<'a, T>(items: &'a [T], logical: &str, tags_of: impl Fn(&T) -> &[Tag]) -> Vec<&'a T> {
    items
        .iter()
        .filter(|i| {
            ec2_tag_map(tags_of(i))
                .get(tags::RESOURCE)
                .is_some_and(|v| v == logical)
        })
        .collect()
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
    let matching = tagged_as(items, logical, &tags_of);
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

/// Which of several items tagged with one logical id is the cluster's, when they are duplicates a crashed or racing
/// create left behind (a create still in flight when the next run looked, which can happen on AWS too): the one
/// that holds something (routes, associations, dependants), or, when none does, `preferred` if it is among them
/// (the one a run just adopted) and otherwise the lowest id, so every run picks the same. The others hold nothing
/// and are returned to be deleted. Two that both hold something are a real conflict: refused, as
/// [`by_logical_id`] does.
pub fn settle_duplicates<'a, T>(
    matching: Vec<&'a T>,
    kind: &'static str,
    cluster: &str,
    logical: &str,
    preferred: Option<&str>,
    holds_something: impl Fn(&T) -> bool,
    id_of: impl Fn(&T) -> Option<&str>,
) -> Result<(&'a T, Vec<&'a T>), DuplicateResources> {
    let refuse = |items: &[&T]| DuplicateResources {
        kind,
        logical: logical.into(),
        cluster: cluster.into(),
        count: items.len(),
        ids: items.iter().filter_map(|i| id_of(i)).collect::<Vec<_>>().join(", "),
        tag: tags::RESOURCE,
    };
    let holding: Vec<&T> = matching.iter().copied().filter(|i| holds_something(i)).collect();
    let keeper = match holding.len() {
        0 => matching
            .iter()
            .copied()
            .find(|i| preferred.is_some() && id_of(i) == preferred)
            .or_else(|| {
                matching
                    .iter()
                    .copied()
                    .min_by_key(|i| id_of(i).unwrap_or_default().to_string())
            }),
        1 => Some(holding[0]),
        _ => return Err(refuse(&matching)),
    };
    let Some(keeper) = keeper else {
        return Err(refuse(&matching));
    };
    let rest = matching.into_iter().filter(|i| id_of(i) != id_of(keeper)).collect();
    Ok((keeper, rest))
}

/// [`by_logical_id`] for kinds whose twins can be told apart by what they hold (see [`settle_duplicates`]): the
/// item kept, with each empty twin set aside in `inventory` for apply to delete and named in a warning, instead of
/// the plan refusing.
#[allow(clippy::too_many_arguments)]
pub fn settled_by_logical_id<'a, T>(
    inventory: &Inventory,
    items: &'a [T],
    kind: &'static str,
    logical: &str,
    tags_of: impl Fn(&T) -> &[Tag],
    id_of: impl Fn(&T) -> Option<&str>,
    holds_something: impl Fn(&T) -> bool,
) -> anyhow::Result<Option<&'a T>> {
    let matching = tagged_as(items, logical, &tags_of);
    if matching.len() < 2 {
        return Ok(matching.first().copied());
    }
    let (keeper, twins) = settle_duplicates(
        matching,
        kind,
        &inventory.cluster,
        logical,
        None,
        holds_something,
        &id_of,
    )?;
    let kept = id_of(keeper).unwrap_or_default();
    for twin in twins {
        let id = id_of(twin).unwrap_or_default();
        if inventory.set_aside(id, logical) {
            tracing::warn!(
                "{logical}: {kind} {id} duplicates {kept} and holds nothing (a create interrupted and repeated): apply deletes it"
            );
        }
    }
    Ok(Some(keeper))
}

/// Logical id of a tagged item, for reports.
pub fn logical_id(tags: &[Tag]) -> Option<String> {
    ec2_tag_map(tags).get(tags::RESOURCE).cloned()
}

/// A NAT gateway that still counts as present.
pub fn nat_is_live(n: &NatGateway) -> bool {
    matches!(n.state(), Some(NatGatewayState::Pending | NatGatewayState::Available))
}
