//! Everything of one cluster, listed once per kind and per run: EC2 resources by their `kforge.dev/cluster` tag, IAM
//! roles by their path `/kforge/CLUSTER/` (IAM cannot list by tag).
//!
//! Finding by tag is what makes re-runs converge (moto and crashed runs ignore `ClientToken`), and listing a whole
//! kind in one call is what keeps observing fast: a plan asks six questions, not one per resource. The snapshot is
//! taken lazily, at the first question about a kind; delete and `get cluster` use the same lists.

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
                    // The path is the cluster's own (`PathPrefix` is the server's to apply, the check is ours).
                    let path = role_path(&self.cluster);
                    out.extend(page.roles().iter().filter(|r| r.path() == path).cloned());
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
            .map(Vec::as_slice)
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

    pub async fn vpcs(&self, aws: &Aws) -> anyhow::Result<&[Vpc]> {
        self.vpcs
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_vpcs,
                    self.filters(),
                    vpcs,
                    "DescribeVpcs",
                    self.what("VPC")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn subnets(&self, aws: &Aws) -> anyhow::Result<&[Subnet]> {
        self.subnets
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_subnets,
                    self.filters(),
                    subnets,
                    "DescribeSubnets",
                    self.what("subnet")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn internet_gateways(&self, aws: &Aws) -> anyhow::Result<&[InternetGateway]> {
        self.internet_gateways
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_internet_gateways,
                    self.filters(),
                    internet_gateways,
                    "DescribeInternetGateways",
                    self.what("internet gateway")
                )))
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
                Ok(self.own(paged!(
                    aws,
                    describe_nat_gateways,
                    set_filter,
                    filters,
                    nat_gateways,
                    "DescribeNatGateways",
                    self.what("NAT gateway")
                )))
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
                Ok::<_, anyhow::Error>(self.own(out.addresses().to_vec()))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn route_tables(&self, aws: &Aws) -> anyhow::Result<&[RouteTable]> {
        self.route_tables
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_route_tables,
                    self.filters(),
                    route_tables,
                    "DescribeRouteTables",
                    self.what("route table")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    /// The route tables tagged `logical` as they are now, not as the run's snapshot saw them: a create's second
    /// look for a twin made by a crashed run's late request.
    pub async fn route_tables_now(&self, aws: &Aws, logical: &str) -> anyhow::Result<Vec<RouteTable>> {
        let mut filters = self.filters();
        filters.push(
            Filter::builder()
                .name(format!("tag:{}", tags::RESOURCE))
                .values(logical)
                .build(),
        );
        let tables = self.own(paged!(
            aws,
            describe_route_tables,
            filters,
            route_tables,
            "DescribeRouteTables",
            self.what("route table")
        ));
        Ok(keep_tagged(tables, |t| t.tags(), tags::RESOURCE, Some(logical)))
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
                let (groups, owned): (Vec<SecurityGroup>, Vec<SecurityGroup>) = tokio::try_join!(
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
                let mut groups = self.own(groups);
                let k8s = tags::kubernetes_cluster_key(&self.cluster);
                for g in keep_tagged(owned, |g| g.tags(), &k8s, Some("owned")) {
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
    /// Instances of the cluster that exist (pending, running, stopping or stopped): kforge's machines and those
    /// its Auto Scaling groups launched.
    pub async fn instances(&self, aws: &Aws) -> anyhow::Result<&[Instance]> {
        self.instances
            .get_or_try_init(|| async {
                let mut filters = self.filters();
                filters.push(
                    Filter::builder()
                        .name("instance-state-name")
                        .set_values(Some(
                            ["pending", "running", "stopping", "stopped"].map(String::from).to_vec(),
                        ))
                        .build(),
                );
                let mut out = Vec::new();
                let mut pages = aws
                    .ec2()
                    .describe_instances()
                    .set_filters(Some(filters))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("instance"), "DescribeInstances"))?;
                    out.extend(page.reservations().iter().flat_map(|r| r.instances().iter().cloned()));
                }
                Ok::<_, anyhow::Error>(self.own(out))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn key_pairs(&self, aws: &Aws) -> anyhow::Result<&[KeyPairInfo]> {
        self.key_pairs
            .get_or_try_init(|| async {
                let out = aws
                    .ec2()
                    .describe_key_pairs()
                    .set_filters(Some(self.filters()))
                    .send()
                    .await
                    .map_err(aws_err(self.what("key pair"), "DescribeKeyPairs"))?;
                Ok::<_, anyhow::Error>(self.own(out.key_pairs().to_vec()))
            })
            .await
            .map(Vec::as_slice)
    }

    /// Auto Scaling groups tagged with the cluster (including those being deleted).
    pub async fn auto_scaling_groups(&self, aws: &Aws) -> anyhow::Result<&[AutoScalingGroup]> {
        self.auto_scaling_groups
            .get_or_try_init(|| async {
                let filter = aws_sdk_autoscaling::types::Filter::builder()
                    .name(format!("tag:{}", tags::CLUSTER))
                    .values(&self.cluster)
                    .build();
                let mut out = Vec::new();
                let mut pages = aws
                    .autoscaling()
                    .describe_auto_scaling_groups()
                    .filters(filter)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("Auto Scaling group"), "DescribeAutoScalingGroups"))?;
                    // Kept only if tagged so: the filter is the server's to apply, the check is ours.
                    out.extend(
                        page.auto_scaling_groups()
                            .iter()
                            .filter(|g| {
                                g.tags()
                                    .iter()
                                    .any(|t| t.key() == Some(tags::CLUSTER) && t.value() == Some(self.cluster.as_str()))
                            })
                            .cloned(),
                    );
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
            .map(Vec::as_slice)
    }

    /// Instance profiles kforge made for the cluster (those under its IAM path).
    pub async fn instance_profiles(&self, aws: &Aws) -> anyhow::Result<&[aws_sdk_iam::types::InstanceProfile]> {
        self.instance_profiles
            .get_or_try_init(|| async {
                let mut out = Vec::new();
                let mut pages = aws
                    .iam()
                    .list_instance_profiles()
                    .path_prefix(role_path(&self.cluster))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("instance profile"), "ListInstanceProfiles"))?;
                    let path = role_path(&self.cluster);
                    out.extend(page.instance_profiles().iter().filter(|p| p.path() == path).cloned());
                }
                Ok::<_, anyhow::Error>(out)
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
            self.launch_templates(aws),
        )?;
        Ok(())
    }

    pub async fn launch_templates(&self, aws: &Aws) -> anyhow::Result<&[LaunchTemplate]> {
        self.launch_templates
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_launch_templates,
                    self.filters(),
                    launch_templates,
                    "DescribeLaunchTemplates",
                    self.what("launch template")
                )))
            })
            .await
            .map(Vec::as_slice)
    }

    /// The EKS cluster named like the kforge cluster, whoever owns it (finds check the tags), unless it is being
    /// deleted.
    pub async fn eks_cluster(&self, aws: &Aws) -> anyhow::Result<Option<&EksCluster>> {
        self.eks_cluster
            .get_or_try_init(|| async {
                super::eks::describe_cluster(aws, &self.cluster, &format!("EKS cluster {}", self.cluster)).await
            })
            .await
            .map(Option::as_ref)
    }

    /// The EKS cluster if kforge made it for this cluster (tagged so).
    pub async fn own_eks_cluster(&self, aws: &Aws) -> anyhow::Result<Option<&EksCluster>> {
        Ok(self
            .eks_cluster(aws)
            .await?
            .filter(|c| c.tags().and_then(|t| t.get(tags::CLUSTER)) == Some(&self.cluster)))
    }

    pub async fn nodegroups(&self, aws: &Aws) -> anyhow::Result<&[Nodegroup]> {
        self.nodegroups
            .get_or_try_init(|| async {
                if self.own_eks_cluster(aws).await?.is_none() {
                    return Ok(Vec::new());
                }
                let what = format!("nodegroups of EKS cluster {}", self.cluster);
                let mut names = Vec::new();
                let mut pages = aws
                    .eks()
                    .list_nodegroups()
                    .cluster_name(&self.cluster)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    names.extend(page.map_err(aws_err(&what, "ListNodegroups"))?.nodegroups().to_vec());
                }
                let described = futures::future::try_join_all(names.iter().map(|n| async move {
                    aws.eks()
                        .describe_nodegroup()
                        .cluster_name(&self.cluster)
                        .nodegroup_name(n)
                        .send()
                        .await
                        .map(|o| o.nodegroup)
                        .map_err(|e| anyhow::Error::from(aws_err(format!("nodegroup {n}"), "DescribeNodegroup")(e)))
                }))
                .await?;
                Ok::<_, anyhow::Error>(described.into_iter().flatten().collect())
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn fargate_profiles(&self, aws: &Aws) -> anyhow::Result<&[FargateProfile]> {
        self.fargate_profiles
            .get_or_try_init(|| async {
                if self.own_eks_cluster(aws).await?.is_none() {
                    return Ok(Vec::new());
                }
                let what = format!("Fargate profiles of EKS cluster {}", self.cluster);
                let mut names = Vec::new();
                let mut pages = aws
                    .eks()
                    .list_fargate_profiles()
                    .cluster_name(&self.cluster)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    names.extend(
                        page.map_err(aws_err(&what, "ListFargateProfiles"))?
                            .fargate_profile_names()
                            .to_vec(),
                    );
                }
                let described = futures::future::try_join_all(names.iter().map(|n| async move {
                    aws.eks()
                        .describe_fargate_profile()
                        .cluster_name(&self.cluster)
                        .fargate_profile_name(n)
                        .send()
                        .await
                        .map(|o| o.fargate_profile)
                        .map_err(|e| {
                            anyhow::Error::from(aws_err(format!("Fargate profile {n}"), "DescribeFargateProfile")(e))
                        })
                }))
                .await?;
                Ok::<_, anyhow::Error>(described.into_iter().flatten().collect())
            })
            .await
            .map(Vec::as_slice)
    }

    /// The cluster's EKS addons. An endpoint without the addon API (moto) has none to offer: deleting the cluster
    /// removes addons anyway, so delete carries on without them.
    pub async fn addons(&self, aws: &Aws) -> anyhow::Result<&[Addon]> {
        self.addons
            .get_or_try_init(|| async {
                if self.own_eks_cluster(aws).await?.is_none() {
                    return Ok(Vec::new());
                }
                let what = format!("addons of EKS cluster {}", self.cluster);
                let mut names = Vec::new();
                let mut pages = aws
                    .eks()
                    .list_addons()
                    .cluster_name(&self.cluster)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    match page.map_err(|e| anyhow::Error::from(aws_err(&what, "ListAddons")(e))) {
                        Ok(p) => names.extend(p.addons().to_vec()),
                        Err(e) if not_implemented(&e) => {
                            tracing::debug!("{e:#}; the endpoint has no addon API, addons are left to the cluster");
                            return Ok(Vec::new());
                        }
                        Err(e) => return Err(e),
                    }
                }
                let described = futures::future::try_join_all(names.iter().map(|n| async move {
                    aws.eks()
                        .describe_addon()
                        .cluster_name(&self.cluster)
                        .addon_name(n)
                        .send()
                        .await
                        .map(|o| o.addon)
                        .map_err(|e| anyhow::Error::from(aws_err(format!("addon {n}"), "DescribeAddon")(e)))
                }))
                .await?;
                Ok::<_, anyhow::Error>(described.into_iter().flatten().collect())
            })
            .await
            .map(Vec::as_slice)
    }

    /// IAM OIDC providers tagged with the cluster.
    pub async fn oidc_providers(&self, aws: &Aws) -> anyhow::Result<&[Tagged]> {
        self.oidc_providers
            .get_or_try_init(|| async {
                let list = aws
                    .iam()
                    .list_open_id_connect_providers()
                    .send()
                    .await
                    .map_err(aws_err("IAM OIDC providers", "ListOpenIDConnectProviders"))?;
                let arns: Vec<String> = list
                    .open_id_connect_provider_list()
                    .iter()
                    .filter_map(|p| p.arn().map(str::to_string))
                    .collect();
                let described = futures::future::try_join_all(arns.iter().map(|arn| async move {
                    let p = aws
                        .iam()
                        .get_open_id_connect_provider()
                        .open_id_connect_provider_arn(arn)
                        .send()
                        .await
                        .map_err(|e| {
                            anyhow::Error::from(aws_err(format!("OIDC provider {arn}"), "GetOpenIDConnectProvider")(e))
                        })?;
                    Ok::<_, anyhow::Error>(Tagged {
                        arn: arn.clone(),
                        detail: p.url().unwrap_or_default().trim_start_matches("https://").to_string(),
                        tags: p
                            .tags()
                            .iter()
                            .map(|t| (t.key().to_string(), t.value().to_string()))
                            .collect(),
                    })
                }))
                .await?;
                Ok::<_, anyhow::Error>(
                    described
                        .into_iter()
                        .filter(|p| p.tags.get(tags::CLUSTER) == Some(&self.cluster))
                        .collect(),
                )
            })
            .await
            .map(Vec::as_slice)
    }

    /// Whether ELBv2 tags say a load balancer or target group belongs to the cluster: kforge's own, and those
    /// Kubernetes made for it (the in-tree service controller and the AWS Load Balancer Controller).
    fn elb_is_ours(&self, tags: &BTreeMap<String, String>) -> bool {
        tags.get(tags::CLUSTER) == Some(&self.cluster)
            || tags.contains_key(&tags::kubernetes_cluster_key(&self.cluster))
            || tags.get("elbv2.k8s.aws/cluster") == Some(&self.cluster)
    }

    async fn elb_tags(&self, aws: &Aws, arns: Vec<(String, String)>) -> anyhow::Result<Vec<Tagged>> {
        let mut out = Vec::new();
        // DescribeTags takes at most 20 ARNs.
        for chunk in arns.chunks(20) {
            let tagged = aws
                .elbv2()
                .describe_tags()
                .set_resource_arns(Some(chunk.iter().map(|(a, _)| a.clone()).collect()))
                .send()
                .await
                .map_err(aws_err(self.what("load balancer"), "DescribeTags"))?;
            for d in tagged.tag_descriptions() {
                let tags: BTreeMap<String, String> = d
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                    .collect();
                let arn = d.resource_arn().unwrap_or_default();
                if self.elb_is_ours(&tags) {
                    let detail = chunk
                        .iter()
                        .find(|(a, _)| a == arn)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    out.push(Tagged {
                        arn: arn.to_string(),
                        detail,
                        tags,
                    });
                }
            }
        }
        Ok(out)
    }

    pub async fn load_balancers(&self, aws: &Aws) -> anyhow::Result<&[Tagged]> {
        self.load_balancers
            .get_or_try_init(|| async {
                let mut arns = Vec::new();
                let mut pages = aws.elbv2().describe_load_balancers().into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("load balancer"), "DescribeLoadBalancers"))?;
                    arns.extend(page.load_balancers().iter().filter_map(|lb| {
                        Some((
                            lb.load_balancer_arn()?.to_string(),
                            lb.vpc_id().unwrap_or_default().to_string(),
                        ))
                    }));
                }
                self.elb_tags(aws, arns).await
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn target_groups(&self, aws: &Aws) -> anyhow::Result<&[Tagged]> {
        self.target_groups
            .get_or_try_init(|| async {
                let mut arns = Vec::new();
                let mut pages = aws.elbv2().describe_target_groups().into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("target group"), "DescribeTargetGroups"))?;
                    arns.extend(page.target_groups().iter().filter_map(|tg| {
                        Some((
                            tg.target_group_arn()?.to_string(),
                            tg.vpc_id().unwrap_or_default().to_string(),
                        ))
                    }));
                }
                self.elb_tags(aws, arns).await
            })
            .await
            .map(Vec::as_slice)
    }

    /// Detached network interfaces the cluster's pods left behind: those the VPC CNI tagged with the cluster's
    /// name, and in a VPC kforge created for it those the CNI names `aws-K8S-...` (older CNIs did not tag). Attached
    /// ones go with their instance; ENIs of NAT gateways, load balancers and the control plane with their owner.
    pub async fn leftover_network_interfaces(&self, aws: &Aws) -> anyhow::Result<Vec<NetworkInterface>> {
        let own_vpcs: Vec<String> = self
            .vpcs(aws)
            .await?
            .iter()
            .filter_map(|v| v.vpc_id().map(str::to_string))
            .collect();
        let available = || Filter::builder().name("status").values("available").build();
        let mut out: Vec<NetworkInterface> = Vec::new();
        if !own_vpcs.is_empty() {
            let filters = vec![
                available(),
                Filter::builder().name("vpc-id").set_values(Some(own_vpcs)).build(),
            ];
            let in_vpcs: Vec<NetworkInterface> = paged!(
                aws,
                describe_network_interfaces,
                filters,
                network_interfaces,
                "DescribeNetworkInterfaces",
                self.what("network interface")
            );
            out.extend(
                in_vpcs
                    .into_iter()
                    .filter(|e| e.description().is_some_and(|d| d.starts_with("aws-K8S-"))),
            );
        }
        let filters = vec![
            available(),
            Filter::builder()
                .name("tag:cluster.k8s.amazonaws.com/name")
                .values(&self.cluster)
                .build(),
        ];
        let tagged: Vec<NetworkInterface> = paged!(
            aws,
            describe_network_interfaces,
            filters,
            network_interfaces,
            "DescribeNetworkInterfaces",
            self.what("network interface")
        );
        for eni in tagged {
            if !out
                .iter()
                .any(|e| e.network_interface_id() == eni.network_interface_id())
            {
                out.push(eni);
            }
        }
        Ok(out)
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
