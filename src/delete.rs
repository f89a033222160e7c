//! Deleting a cluster: list everything tagged with it (so no local state is needed), delete in reverse dependency
//! order through the executor (parallel where unblocked, `DependencyViolation` retried while others progress),
//! and report what happened to each resource. The same sweep prunes resources a changed spec no longer wants.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::NatGatewayState;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::aws::inventory::{logical_id, nat_is_live};
use crate::aws::tags;
use crate::aws::{ErrorClass, aws_err, class_of, is_not_found};
use crate::engine::executor::{self, ExecOptions, Job, Outcome, Step};
use crate::engine::{Ctx, Phase};
use crate::progress::Reporter;
use crate::providers::{api_lb, asg, eks, iam, launch_template, machine, network, security_group};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepKind {
    EksNodegroup,
    EksFargateProfile,
    EksAddon,
    EksCluster,
    OidcProvider,
    AutoScalingGroup,
    Instance,
    LaunchTemplate,
    LoadBalancer,
    TargetGroup,
    NetworkInterface,
    NatGateway,
    ElasticIp,
    InternetGateway,
    RouteTable,
    SecurityGroup,
    Subnet,
    Vpc,
    KeyPair,
    InstanceProfile,
    IamRole,
}

impl SweepKind {
    pub fn name(self) -> &'static str {
        match self {
            SweepKind::EksNodegroup => "eks-nodegroup",
            SweepKind::EksFargateProfile => "eks-fargate-profile",
            SweepKind::EksAddon => "eks-addon",
            SweepKind::EksCluster => "eks-cluster",
            SweepKind::OidcProvider => "iam-oidc-provider",
            SweepKind::AutoScalingGroup => "auto-scaling-group",
            SweepKind::Instance => "instance",
            SweepKind::KeyPair => "key-pair",
            SweepKind::InstanceProfile => "instance-profile",
            SweepKind::LaunchTemplate => "launch-template",
            SweepKind::LoadBalancer => "load-balancer",
            SweepKind::TargetGroup => "target-group",
            SweepKind::NetworkInterface => "network-interface",
            SweepKind::NatGateway => "nat-gateway",
            SweepKind::ElasticIp => "elastic-ip",
            SweepKind::InternetGateway => "internet-gateway",
            SweepKind::RouteTable => "route-table",
            SweepKind::SecurityGroup => "security-group",
            SweepKind::Subnet => "subnet",
            SweepKind::Vpc => "vpc",
            SweepKind::IamRole => "iam-role",
        }
    }
}

/// One existing cloud object to delete.
#[derive(Debug, Clone)]
pub struct Doomed {
    pub kind: SweepKind,
    pub cloud_id: String,
    /// The `kforge.dev/resource` tag, if kforge created it.
    pub logical: Option<String>,
    pub vpc: Option<String>,
    /// Attachments (IGW: VPC ids) or associations (route table: association ids) to undo first.
    pub attached: Vec<String>,
    /// Already being deleted (NAT gateways).
    pub deleting: bool,
}

impl Doomed {
    fn job_id(&self) -> String {
        format!("{} {}", self.kind.name(), self.cloud_id)
    }
}

/// Everything of the cluster that exists, from the inventory. IAM is only asked when `phases` include security,
/// EKS and load balancers when they include cluster.
pub async fn discover(ctx: &Ctx, phases: &[Phase]) -> anyhow::Result<Vec<Doomed>> {
    let aws = &ctx.aws;
    let inv = &ctx.inventory;
    let mut out = if phases.contains(&Phase::Cluster) {
        discover_cluster_phase(ctx).await?
    } else {
        Vec::new()
    };
    let (vpcs, subnets, igws, nats, eips, rtbs, sgs) = tokio::try_join!(
        inv.vpcs(aws),
        inv.subnets(aws),
        inv.internet_gateways(aws),
        inv.nat_gateways(aws),
        inv.addresses(aws),
        inv.route_tables(aws),
        inv.security_groups(aws),
    )?;
    let mut push = |kind, id: Option<&str>, tags: &[aws_sdk_ec2::types::Tag], vpc: Option<&str>, attached, deleting| {
        out.push(Doomed {
            kind,
            cloud_id: id.unwrap_or_default().to_string(),
            logical: logical_id(tags),
            vpc: vpc.map(str::to_string),
            attached,
            deleting,
        })
    };
    for n in nats {
        let deleting = n.state() == Some(&NatGatewayState::Deleting);
        if nat_is_live(n) || deleting {
            push(
                SweepKind::NatGateway,
                n.nat_gateway_id(),
                n.tags(),
                n.vpc_id(),
                vec![],
                deleting,
            );
        }
    }
    for a in eips {
        push(SweepKind::ElasticIp, a.allocation_id(), a.tags(), None, vec![], false);
    }
    for g in igws {
        let vpcs: Vec<String> = g
            .attachments()
            .iter()
            .filter_map(|a| a.vpc_id().map(str::to_string))
            .collect();
        let vpc = vpcs.first().cloned();
        push(
            SweepKind::InternetGateway,
            g.internet_gateway_id(),
            g.tags(),
            vpc.as_deref(),
            vpcs,
            false,
        );
    }
    for t in rtbs {
        let assocs = t
            .associations()
            .iter()
            .filter(|a| !a.main().unwrap_or(false))
            .filter_map(|a| a.route_table_association_id().map(str::to_string))
            .collect();
        push(
            SweepKind::RouteTable,
            t.route_table_id(),
            t.tags(),
            t.vpc_id(),
            assocs,
            false,
        );
    }
    for g in sgs.iter().filter(|g| g.group_name() != Some("default")) {
        push(
            SweepKind::SecurityGroup,
            g.group_id(),
            g.tags(),
            g.vpc_id(),
            vec![],
            false,
        );
    }
    for s in subnets {
        push(SweepKind::Subnet, s.subnet_id(), s.tags(), s.vpc_id(), vec![], false);
    }
    for v in vpcs {
        push(SweepKind::Vpc, v.vpc_id(), v.tags(), v.vpc_id(), vec![], false);
    }
    if phases.contains(&Phase::Security) {
        for k in inv.key_pairs(aws).await? {
            push(SweepKind::KeyPair, k.key_name(), k.tags(), None, vec![], false);
        }
        // Profiles and roles are named `kforge-CLUSTER-WHICH` for `instance-profile/WHICH` and `role/WHICH`.
        let prefix = format!("kforge-{}-", ctx.cluster);
        for p in inv.instance_profiles(aws).await? {
            let name = p.instance_profile_name();
            out.push(Doomed {
                kind: SweepKind::InstanceProfile,
                cloud_id: name.to_string(),
                logical: name
                    .strip_prefix(&prefix)
                    .map(|which| format!("instance-profile/{which}")),
                vpc: None,
                attached: Vec::new(),
                deleting: false,
            });
        }
        // Role listings carry no tags; kforge's role names are `kforge-CLUSTER-WHICH` for `role/WHICH`.
        let prefix = format!("kforge-{}-", ctx.cluster);
        for r in inv.roles(aws).await? {
            out.push(Doomed {
                kind: SweepKind::IamRole,
                cloud_id: r.role_name().to_string(),
                logical: r.role_name().strip_prefix(&prefix).map(|which| format!("role/{which}")),
                vpc: None,
                attached: Vec::new(),
                deleting: false,
            });
        }
    }
    Ok(out)
}

/// The EKS cluster and what hangs off it, kforge's launch templates, and what Kubernetes made in the VPC for the
/// cluster (load balancers, target groups, detached network interfaces).
async fn discover_cluster_phase(ctx: &Ctx) -> anyhow::Result<Vec<Doomed>> {
    let aws = &ctx.aws;
    let inv = &ctx.inventory;
    let mut out = Vec::new();
    let item = |kind, id: &str, logical: Option<&String>, vpc: Option<&str>| Doomed {
        kind,
        cloud_id: id.to_string(),
        logical: logical.cloned(),
        vpc: vpc.filter(|v| !v.is_empty()).map(str::to_string),
        attached: Vec::new(),
        deleting: false,
    };
    // Only a cluster kforge tagged as this one's is ever deleted; one of the same name made by others is left alone.
    if let Some(c) = inv.own_eks_cluster(aws).await? {
        let vpc = c.resources_vpc_config().and_then(|v| v.vpc_id());
        let (nodegroups, profiles, addons) =
            tokio::try_join!(inv.nodegroups(aws), inv.fargate_profiles(aws), inv.addons(aws))?;
        for n in nodegroups {
            let logical = n.tags().and_then(|t| t.get(tags::RESOURCE));
            out.push(item(
                SweepKind::EksNodegroup,
                n.nodegroup_name().unwrap_or_default(),
                logical,
                vpc,
            ));
        }
        for p in profiles {
            let logical = p.tags().and_then(|t| t.get(tags::RESOURCE));
            out.push(item(
                SweepKind::EksFargateProfile,
                p.fargate_profile_name().unwrap_or_default(),
                logical,
                vpc,
            ));
        }
        for a in addons {
            let logical = a.tags().and_then(|t| t.get(tags::RESOURCE));
            out.push(item(
                SweepKind::EksAddon,
                a.addon_name().unwrap_or_default(),
                logical,
                vpc,
            ));
        }
        let logical = c.tags().and_then(|t| t.get(tags::RESOURCE));
        out.push(item(SweepKind::EksCluster, c.name().unwrap_or_default(), logical, vpc));
    }
    let (oidc, templates, lbs, tgs, groups, instances) = tokio::try_join!(
        inv.oidc_providers(aws),
        inv.launch_templates(aws),
        inv.load_balancers(aws),
        inv.target_groups(aws),
        inv.auto_scaling_groups(aws),
        inv.instances(aws),
    )?;
    for g in groups {
        let logical = g
            .tags()
            .iter()
            .find(|t| t.key() == Some(tags::RESOURCE))
            .and_then(|t| t.value())
            .map(str::to_string);
        out.push(Doomed {
            logical,
            ..item(
                SweepKind::AutoScalingGroup,
                g.auto_scaling_group_name().unwrap_or_default(),
                None,
                None,
            )
        });
    }
    // Instances of an Auto Scaling group go with their group (deleting them alone would only get them replaced).
    for i in instances
        .iter()
        .filter(|i| !i.tags().iter().any(|t| t.key() == Some("aws:autoscaling:groupName")))
    {
        out.push(Doomed {
            logical: logical_id(i.tags()),
            ..item(
                SweepKind::Instance,
                i.instance_id().unwrap_or_default(),
                None,
                i.vpc_id(),
            )
        });
    }
    for p in oidc {
        out.push(item(SweepKind::OidcProvider, &p.arn, p.tags.get(tags::RESOURCE), None));
    }
    for t in templates {
        out.push(Doomed {
            logical: logical_id(t.tags()),
            ..item(
                SweepKind::LaunchTemplate,
                t.launch_template_id().unwrap_or_default(),
                None,
                None,
            )
        });
    }
    for lb in lbs {
        out.push(item(
            SweepKind::LoadBalancer,
            &lb.arn,
            lb.tags.get(tags::RESOURCE),
            Some(&lb.detail),
        ));
    }
    for tg in tgs {
        out.push(item(
            SweepKind::TargetGroup,
            &tg.arn,
            tg.tags.get(tags::RESOURCE),
            Some(&tg.detail),
        ));
    }
    for eni in inv.leftover_network_interfaces(aws).await? {
        out.push(item(
            SweepKind::NetworkInterface,
            eni.network_interface_id().unwrap_or_default(),
            None,
            eni.vpc_id(),
        ));
    }
    Ok(out)
}

impl SweepKind {
    /// The phase whose apply owns this kind of resource.
    pub fn phase(self) -> Phase {
        match self {
            SweepKind::SecurityGroup | SweepKind::IamRole | SweepKind::KeyPair | SweepKind::InstanceProfile => {
                Phase::Security
            }
            SweepKind::EksNodegroup
            | SweepKind::EksFargateProfile
            | SweepKind::EksAddon
            | SweepKind::EksCluster
            | SweepKind::OidcProvider
            | SweepKind::AutoScalingGroup
            | SweepKind::Instance
            | SweepKind::LaunchTemplate
            | SweepKind::LoadBalancer
            | SweepKind::TargetGroup
            | SweepKind::NetworkInterface => Phase::Cluster,
            _ => Phase::Network,
        }
    }
}

/// Resources kforge created for the cluster in `phases` whose logical id the spec no longer has (a NAT gateway
/// after `perZone` became `single`, the subnets of a dropped zone). Deleting them is part of converging.
pub async fn orphans(ctx: &Ctx, wanted: &BTreeSet<String>, phases: &[Phase]) -> anyhow::Result<Vec<Doomed>> {
    // Empty twins of wanted resources that the plan's finds set aside go with the orphans.
    let surplus = ctx.inventory.surplus();
    Ok(discover(ctx, phases)
        .await?
        .into_iter()
        .filter(|d| phases.contains(&d.kind.phase()))
        .filter(|d| d.logical.as_ref().is_some_and(|l| !wanted.contains(l)) || surplus.contains_key(&d.cloud_id))
        // A NAT gateway already deleting is on its way out.
        .filter(|d| !(d.kind == SweepKind::NatGateway && d.deleting))
        .collect())
}

/// What depends on what when deleting: NAT gateways hold their EIP, subnet and the IGW's public mappings; a VPC
/// goes last, after everything inside it.
fn deletion_deps(item: &Doomed, all: &[Doomed]) -> Vec<String> {
    let of = |k: SweepKind| all.iter().filter(move |d| d.kind == k);
    let same_vpc = |d: &&Doomed| d.vpc.is_some() && d.vpc == item.vpc;
    let ids = |kinds: &[SweepKind]| -> Vec<String> {
        all.iter()
            .filter(|d| kinds.contains(&d.kind))
            .map(Doomed::job_id)
            .collect()
    };
    use SweepKind::*;
    // What runs on the cluster's nodes and in its VPC because of it.
    const WORKERS: &[SweepKind] = &[EksNodegroup, EksFargateProfile];
    // kforge's own machines.
    const MACHINES: &[SweepKind] = &[AutoScalingGroup, Instance];
    match item.kind {
        EksNodegroup | EksFargateProfile | NatGateway | RouteTable | AutoScalingGroup | Instance => Vec::new(),
        EksAddon => ids(WORKERS),
        EksCluster => ids(&[EksNodegroup, EksFargateProfile, EksAddon]),
        OidcProvider => ids(&[EksCluster]),
        // Nodegroups and Auto Scaling groups launch from the templates until they are gone.
        LaunchTemplate => ids(&[EksNodegroup, AutoScalingGroup, Instance]),
        // Kubernetes' service controller would re-create a load balancer while the cluster runs.
        LoadBalancer => ids(&[EksCluster, AutoScalingGroup, Instance]),
        TargetGroup => ids(&[LoadBalancer, EksCluster]),
        NetworkInterface => ids(&[
            EksCluster,
            EksNodegroup,
            EksFargateProfile,
            LoadBalancer,
            AutoScalingGroup,
            Instance,
        ]),
        KeyPair => ids(MACHINES),
        InstanceProfile => ids(MACHINES),
        // Roles go once what assumes them is gone.
        IamRole => ids(&[
            EksCluster,
            EksNodegroup,
            EksFargateProfile,
            EksAddon,
            AutoScalingGroup,
            Instance,
            InstanceProfile,
        ]),
        SecurityGroup => ids(&[
            EksCluster,
            EksNodegroup,
            EksFargateProfile,
            LoadBalancer,
            NetworkInterface,
            AutoScalingGroup,
            Instance,
        ]),
        ElasticIp => of(NatGateway).map(Doomed::job_id).collect(),
        // A public load balancer holds addresses mapped through the gateway.
        InternetGateway => of(NatGateway)
            .chain(of(LoadBalancer))
            .chain(of(Instance))
            .chain(of(AutoScalingGroup))
            .chain(of(EksCluster))
            .map(Doomed::job_id)
            .collect(),
        Subnet => all
            .iter()
            .filter(|d| {
                matches!(
                    d.kind,
                    NatGateway
                        | RouteTable
                        | AutoScalingGroup
                        | Instance
                        | LoadBalancer
                        | NetworkInterface
                        | EksCluster
                        | EksNodegroup
                        | EksFargateProfile
                ) && same_vpc(d)
            })
            .map(Doomed::job_id)
            .collect(),
        Vpc => all
            .iter()
            .filter(|d| d.kind != Vpc && d.kind != ElasticIp && same_vpc(d))
            .map(Doomed::job_id)
            .collect(),
    }
}

struct DeleteJob {
    /// `kind cloud-id`, the key the executor reports by.
    job_id: String,
    item: Doomed,
    deps: Vec<String>,
    ctx: Arc<Ctx>,
    wait: bool,
}

#[async_trait]
impl Job<()> for DeleteJob {
    fn id(&self) -> &str {
        &self.job_id
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn deadline(&self) -> Duration {
        Duration::from_secs(1200)
    }
    fn action(&self) -> String {
        "delete".into()
    }
    async fn step(&self, _: &BTreeMap<String, ()>) -> anyhow::Result<Step<()>> {
        let aws = &self.ctx.aws;
        let id = &self.item.cloud_id;
        match self.item.kind {
            SweepKind::NatGateway => network::delete_nat_gateway(aws, id, self.wait).await,
            SweepKind::ElasticIp => network::release_address(aws, id).await,
            SweepKind::InternetGateway => network::delete_internet_gateway(aws, id, &self.item.attached).await,
            SweepKind::RouteTable => network::delete_route_table(aws, id, &self.item.attached).await,
            SweepKind::Subnet => network::delete_subnet(aws, id).await,
            SweepKind::Vpc => network::delete_vpc(aws, id).await,
            SweepKind::IamRole => iam::delete_role(aws, id).await,
            SweepKind::EksNodegroup => eks::delete_nodegroup(&self.ctx, &self.ctx.cluster, id).await,
            SweepKind::EksFargateProfile => eks::delete_fargate_profile(&self.ctx, &self.ctx.cluster, id).await,
            SweepKind::EksAddon => eks::delete_addon(&self.ctx, &self.ctx.cluster, id).await,
            SweepKind::EksCluster => eks::delete_cluster(&self.ctx, id).await,
            SweepKind::OidcProvider => eks::delete_oidc_provider(&self.ctx, id).await,
            SweepKind::LaunchTemplate => launch_template::delete_launch_template(&self.ctx, id).await,
            SweepKind::LoadBalancer => api_lb::delete_load_balancer(aws, id).await,
            SweepKind::TargetGroup => api_lb::delete_target_group(aws, id).await,
            SweepKind::NetworkInterface => delete_network_interface(&self.ctx, id).await,
            SweepKind::AutoScalingGroup => asg::delete_auto_scaling_group(aws, id).await,
            SweepKind::Instance => machine::terminate_instance(aws, id).await,
            SweepKind::KeyPair => machine::delete_key_pair(aws, id).await,
            SweepKind::InstanceProfile => machine::delete_instance_profile(aws, id).await,
            SweepKind::SecurityGroup => security_group::delete_security_group(aws, id).await,
        }
    }
}

async fn delete_network_interface(ctx: &Ctx, id: &str) -> anyhow::Result<Step<()>> {
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

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub kind: &'static str,
    pub id: String,
    pub resource: Option<String>,
    pub result: DeleteResult,
}

/// What became of one resource of a delete (printed and serialized as the words the table shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteResult {
    /// Gone (waited for).
    Deleted,
    /// Deletion started and left to AWS (`--no-wait` on what deletes asynchronously).
    Deleting,
    /// Not finished without waiting: the first line of why.
    Pending(String),
    /// Not started because what it waits for did not finish.
    PendingAfter(String),
    Failed,
    NotRun,
}

impl std::fmt::Display for DeleteResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeleteResult::Deleted => f.write_str("deleted"),
            DeleteResult::Deleting => f.write_str("deleting"),
            DeleteResult::Pending(why) => write!(f, "pending: {why}"),
            DeleteResult::PendingAfter(job) => write!(f, "pending (after {job})"),
            DeleteResult::Failed => f.write_str("failed"),
            DeleteResult::NotRun => f.write_str("not run"),
        }
    }
}

impl Serialize for DeleteResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Serialize, Default)]
pub struct DeleteReport {
    pub entries: Vec<Deleted>,
    #[serde(skip)]
    pub errors: Vec<anyhow::Error>,
}

impl DeleteReport {
    pub fn deleted(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.result == DeleteResult::Deleted)
            .count()
    }

    /// Whether every resource is gone and nothing failed.
    pub fn finished(&self) -> bool {
        self.errors.is_empty() && self.entries.iter().all(|e| e.result == DeleteResult::Deleted)
    }
}

/// Deletes `items`; with `wait`, until each is gone.
pub async fn sweep(
    ctx: &Arc<Ctx>,
    items: Vec<Doomed>,
    wait: bool,
    opts: &ExecOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<DeleteReport> {
    let jobs: Vec<Arc<dyn Job<()>>> = items
        .iter()
        .map(|item| {
            Arc::new(DeleteJob {
                job_id: item.job_id(),
                deps: deletion_deps(item, &items),
                item: item.clone(),
                ctx: Arc::clone(ctx),
                wait,
            }) as Arc<dyn Job<()>>
        })
        .collect();
    let mut opts = opts.clone();
    if !wait {
        // Without waiting, what is blocked behind an asynchronous deletion is left for a later run.
        opts.stall_timeout = Duration::ZERO;
    }
    let outcomes = executor::run(jobs, &opts, reporter).await?;
    let mut report = DeleteReport::default();
    for item in items {
        let result = match outcomes.get(&item.job_id()) {
            Some(Outcome::Done(())) if item.kind == SweepKind::NatGateway && !wait => DeleteResult::Deleting,
            Some(Outcome::Done(())) => DeleteResult::Deleted,
            Some(Outcome::Failed(e)) if !wait => {
                DeleteResult::Pending(e.to_string().lines().next().unwrap_or_default().to_string())
            }
            Some(Outcome::Failed(e)) => {
                report.errors.push(anyhow::anyhow!("{e:#}"));
                DeleteResult::Failed
            }
            Some(Outcome::Skipped { because_of }) => DeleteResult::PendingAfter(because_of.to_string()),
            None => DeleteResult::NotRun,
        };
        report.entries.push(Deleted {
            kind: item.kind.name(),
            id: item.cloud_id,
            resource: item.logical,
            result,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_results_read_and_serialize_as_the_table_words() {
        let entry = Deleted {
            kind: "vpc",
            id: "vpc-1".into(),
            resource: None,
            result: DeleteResult::Pending("DependencyViolation: in use".into()),
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["result"], "pending: DependencyViolation: in use");
        assert_eq!(
            DeleteResult::PendingAfter("subnet/a".into()).to_string(),
            "pending (after subnet/a)"
        );
        let mut report = DeleteReport::default();
        report.entries.push(Deleted {
            result: DeleteResult::Deleted,
            ..entry
        });
        assert!(report.finished());
        assert_eq!(report.deleted(), 1);
        report.entries.push(Deleted {
            kind: "nat-gateway",
            id: "nat-1".into(),
            resource: None,
            result: DeleteResult::Deleting,
        });
        assert!(!report.finished(), "a deletion left to AWS is not finished");
    }

    fn d(kind: SweepKind, id: &str, vpc: &str) -> Doomed {
        Doomed {
            kind,
            cloud_id: id.into(),
            logical: None,
            vpc: Some(vpc.into()),
            attached: vec![],
            deleting: false,
        }
    }

    #[test]
    fn vpc_goes_last_and_nat_first() {
        let all = vec![
            d(SweepKind::Vpc, "vpc-1", "vpc-1"),
            d(SweepKind::Subnet, "subnet-1", "vpc-1"),
            d(SweepKind::NatGateway, "nat-1", "vpc-1"),
            d(SweepKind::ElasticIp, "eipalloc-1", ""),
            d(SweepKind::RouteTable, "rtb-1", "vpc-1"),
            d(SweepKind::Subnet, "subnet-9", "vpc-9"),
        ];
        let deps = |i: usize| deletion_deps(&all[i], &all);
        assert_eq!(deps(0), ["subnet subnet-1", "nat-gateway nat-1", "route-table rtb-1"]);
        assert_eq!(deps(1), ["nat-gateway nat-1", "route-table rtb-1"]);
        assert!(deps(2).is_empty());
        assert_eq!(deps(3), ["nat-gateway nat-1"]);
        assert!(deps(5).is_empty(), "a subnet of another VPC waits for nothing here");
    }

    #[test]
    fn eks_goes_workers_then_addons_then_cluster_then_roles_and_kubernetes_leftovers() {
        use SweepKind::*;
        let all = vec![
            d(EksNodegroup, "workers", "vpc-1"),
            d(EksFargateProfile, "serverless", "vpc-1"),
            d(EksAddon, "coredns", "vpc-1"),
            d(EksCluster, "demo", "vpc-1"),
            d(OidcProvider, "arn:oidc", ""),
            d(IamRole, "kforge-demo-node", ""),
            d(LoadBalancer, "arn:lb", "vpc-1"),
            d(TargetGroup, "arn:tg", "vpc-1"),
            d(NetworkInterface, "eni-1", "vpc-1"),
            d(SecurityGroup, "sg-k8s", "vpc-1"),
            d(Subnet, "subnet-1", "vpc-1"),
        ];
        let deps = |i: usize| deletion_deps(&all[i], &all);
        assert!(
            deps(0).is_empty() && deps(1).is_empty(),
            "nodegroups and Fargate profiles go first, together"
        );
        assert_eq!(deps(2), ["eks-nodegroup workers", "eks-fargate-profile serverless"]);
        assert_eq!(
            deps(3),
            [
                "eks-nodegroup workers",
                "eks-fargate-profile serverless",
                "eks-addon coredns"
            ]
        );
        assert_eq!(deps(4), ["eks-cluster demo"]);
        assert!(
            deps(5).contains(&"eks-cluster demo".to_string()),
            "roles outlive what assumes them"
        );
        assert_eq!(deps(6), ["eks-cluster demo"], "the service controller is gone first");
        assert_eq!(deps(7), ["eks-cluster demo", "load-balancer arn:lb"]);
        for leftover in ["load-balancer arn:lb", "network-interface eni-1", "eks-cluster demo"] {
            assert!(
                deps(9).contains(&leftover.to_string()),
                "security group after {leftover}"
            );
            assert!(deps(10).contains(&leftover.to_string()), "subnet after {leftover}");
        }
    }
}
