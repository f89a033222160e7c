//! Day-2 operations on a kforge EKS cluster: listing and scaling nodegroups, and upgrading Kubernetes one minor
//! version at a time (control plane, then every nodegroup, then every addon to its default version for the new
//! release). Each step looks at the cluster as it is, so an interrupted upgrade resumes where it stopped.

use std::time::{Duration, Instant};

use aws_sdk_eks::types::{AddonStatus, ClusterStatus, NodegroupScalingConfig, NodegroupStatus, ResolveConflicts};
use serde::Serialize;

use crate::aws::eks::{describe_cluster, describe_nodegroup};
use crate::aws::inventory::not_implemented;
use crate::aws::{ErrorClass, aws_err, class_of, tags};
use crate::engine::Ctx;
use crate::engine::Step;
use crate::engine::wait::Wait;
use crate::progress::{Event, Reporter};
use crate::providers::eks::{default_addon_version, is_next_minor};

/// How day-2 commands wait: poll interval and the run's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    pub poll: Duration,
    pub deadline: Instant,
}

impl Waiting {
    /// The wait for `what`: what is left of the command's deadline, polled every `poll`.
    fn wait<'a>(&self, what: &str) -> Wait<'a> {
        Wait::new(what, self.deadline.saturating_duration_since(Instant::now())).poll(self.poll)
    }
}

/// "Not yet", with what the resource says it is doing.
fn still(status: impl Into<String>) -> Step<()> {
    Step::Blocked { reason: status.into() }
}

/// EKS's description of `addon` of cluster `name` (`what` names it in errors).
async fn describe_addon(
    eks: &aws_sdk_eks::Client,
    name: &str,
    addon: &str,
    what: &str,
) -> anyhow::Result<Option<aws_sdk_eks::types::Addon>> {
    Ok(eks
        .describe_addon()
        .cluster_name(name)
        .addon_name(addon)
        .send()
        .await
        .map_err(aws_err(what, "DescribeAddon"))?
        .addon)
}

/// The cluster, if it is kforge's cluster of this name.
async fn own_cluster(ctx: &Ctx) -> anyhow::Result<aws_sdk_eks::types::Cluster> {
    let name = &ctx.cluster;
    let c = describe_cluster(&ctx.aws, name, &format!("EKS cluster {name}")).await?;
    let Some(c) = c else {
        anyhow::bail!(
            "EKS cluster {name} not found in {}\n  hint: check the name and --region",
            ctx.aws.region()
        );
    };
    if c.tags().and_then(|t| t.get(tags::CLUSTER)) != Some(name) {
        anyhow::bail!(
            "EKS cluster {name} was not created by kforge (no {} tag)\n  hint: manage it with the tool that created it",
            tags::CLUSTER
        );
    }
    Ok(c)
}

#[derive(Debug, Serialize)]
pub struct NodegroupRow {
    pub name: String,
    pub status: String,
    pub version: String,
    pub instance_types: Vec<String>,
    pub capacity: String,
    pub ami_type: String,
    pub min: i32,
    pub desired: i32,
    pub max: i32,
    /// Health issues EKS reports, `CODE: message`.
    pub issues: Vec<String>,
}

pub async fn nodegroups(ctx: &Ctx) -> anyhow::Result<Vec<NodegroupRow>> {
    own_cluster(ctx).await?;
    let mut rows: Vec<NodegroupRow> = ctx
        .inventory
        .nodegroups(&ctx.aws)
        .await?
        .iter()
        .map(|n| {
            let s = n.scaling_config();
            NodegroupRow {
                name: n.nodegroup_name().unwrap_or_default().into(),
                status: n.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").into(),
                version: n.version().unwrap_or_default().into(),
                instance_types: n.instance_types().to_vec(),
                capacity: n.capacity_type().map(|c| c.as_str()).unwrap_or("ON_DEMAND").into(),
                ami_type: n.ami_type().map(|a| a.as_str()).unwrap_or_default().into(),
                min: s.and_then(|s| s.min_size()).unwrap_or(0),
                desired: s.and_then(|s| s.desired_size()).unwrap_or(0),
                max: s.and_then(|s| s.max_size()).unwrap_or(0),
                issues: n
                    .health()
                    .map(|h| h.issues())
                    .unwrap_or_default()
                    .iter()
                    .map(|i| {
                        format!(
                            "{}: {}",
                            i.code().map(|c| c.as_str()).unwrap_or("Unknown"),
                            i.message().unwrap_or_default()
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

#[derive(Debug, Serialize)]
pub struct Scaled {
    pub nodegroup: String,
    pub from: [i32; 3],
    pub to: [i32; 3],
    pub status: String,
}

/// Sets a nodegroup's desired size (and min/max); refuses sizes outside the bounds unless they move too.
pub async fn scale_nodegroup(
    ctx: &Ctx,
    name: &str,
    nodes: u32,
    min: Option<u32>,
    max: Option<u32>,
    wait: Option<Waiting>,
    reporter: &dyn Reporter,
) -> anyhow::Result<Scaled> {
    own_cluster(ctx).await?;
    let eks = ctx.aws.eks();
    let cluster = &ctx.cluster;
    let what = format!("nodegroup {name} of {cluster}");
    let describe = || async {
        describe_nodegroup(&ctx.aws, cluster, name, &what)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!("{what} not found\n  hint: `kforge get nodegroups --cluster {cluster}` lists them")
            })
    };
    let n = describe().await?;
    let s = n.scaling_config();
    let from = [
        s.and_then(|s| s.min_size()).unwrap_or(0),
        s.and_then(|s| s.desired_size()).unwrap_or(0),
        s.and_then(|s| s.max_size()).unwrap_or(0),
    ];
    for (flag, n) in [("--nodes", Some(nodes)), ("--min", min), ("--max", max)] {
        if let Some(n) = n.filter(|n| *n > crate::model::MAX_GROUP_SIZE) {
            anyhow::bail!(
                "{flag} {n} is more than a nodegroup can hold\n  hint: use at most {} (EKS allows 450 nodes per \
                 managed nodegroup)",
                crate::model::MAX_GROUP_SIZE
            );
        }
    }
    let new_min = min.map(crate::model::aws_i32).unwrap_or(from[0]);
    let new_max = max.map(crate::model::aws_i32).unwrap_or(from[2]);
    let nodes = crate::model::aws_i32(nodes);
    if nodes < new_min {
        anyhow::bail!(
            "--nodes {nodes} is below the nodegroup's minimum of {new_min}\n  hint: pass --min {nodes} as well"
        );
    }
    if nodes > new_max {
        anyhow::bail!(
            "--nodes {nodes} is above the nodegroup's maximum of {new_max}\n  hint: pass --max {nodes} as well"
        );
    }
    if new_max < 1 {
        anyhow::bail!("EKS needs a maximum size of at least 1\n  hint: pass --max 1");
    }
    let to = [new_min, nodes, new_max];
    if to != from {
        eks.update_nodegroup_config()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .scaling_config(
                NodegroupScalingConfig::builder()
                    .min_size(new_min)
                    .desired_size(nodes)
                    .max_size(new_max)
                    .build(),
            )
            .send()
            .await
            .map_err(aws_err(&what, "UpdateNodegroupConfig"))?;
    }
    let mut status = n.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string();
    if let Some(w) = wait {
        w.wait(&what)
            .reporting(reporter)
            .until(|| async {
                let n = describe().await?;
                Ok(match n.status() {
                    Some(NodegroupStatus::Active) => Step::Done(()),
                    Some(NodegroupStatus::Degraded | NodegroupStatus::CreateFailed) => {
                        let issues: Vec<String> = n
                            .health()
                            .map(|h| h.issues())
                            .unwrap_or_default()
                            .iter()
                            .map(|i| i.message().unwrap_or_default().to_string())
                            .collect();
                        anyhow::bail!(
                            "{what} is {}: {}",
                            n.status().map(|s| s.as_str()).unwrap_or_default(),
                            issues.join("; ")
                        )
                    }
                    s => still(s.map(|s| s.as_str()).unwrap_or("UNKNOWN")),
                })
            })
            .await?;
        status = "ACTIVE".into();
    }
    Ok(Scaled {
        nodegroup: name.into(),
        from,
        to,
        status,
    })
}

/// One step of an upgrade and what became of it.
#[derive(Debug, Serialize, PartialEq)]
pub struct UpgradeStep {
    pub target: String,
    pub from: String,
    pub to: String,
    pub result: String,
}

/// Upgrades the cluster to `to` (the next minor version): the control plane, then all nodegroups (together),
/// then each addon to EKS's default version for `to`. With `dry_run`, only reports the steps.
pub async fn upgrade(
    ctx: &Ctx,
    to: &str,
    dry_run: bool,
    w: Waiting,
    reporter: &dyn Reporter,
) -> anyhow::Result<Vec<UpgradeStep>> {
    let eks = ctx.aws.eks();
    let name = ctx.cluster.as_str();
    let c = own_cluster(ctx).await?;
    let from = c.version().unwrap_or_default().to_string();
    let minor = |v: &str| v.split_once('.').and_then(|(_, m)| m.parse::<u32>().ok());
    if let (Some(f), Some(t)) = (minor(&from), minor(to))
        && t < f
    {
        anyhow::bail!(
            "cluster {name} runs Kubernetes {from}; EKS cannot downgrade to {to}\n  hint: to run {to}, create a new cluster"
        );
    }
    if from != to && !is_next_minor(&from, to) {
        anyhow::bail!(
            "cluster {name} runs Kubernetes {from}; it can only be upgraded to the next minor version, not {to}\n  hint: {}",
            match minor(&from) {
                Some(m) => format!("upgrade to 1.{} first, one minor version at a time", m + 1),
                None => "pass a version such as 1.34".into(),
            }
        );
    }
    let mut steps = Vec::new();
    let done = if dry_run { "planned" } else { "upgraded" };

    // 1. The control plane.
    if from != to {
        if !dry_run {
            reporter.event(Event::Note(format!("control plane {name}: {from} -> {to}")));
            let what = format!("control plane of {name}");
            w.wait(&what)
                .until(|| async {
                    match eks
                        .update_cluster_version()
                        .name(name)
                        .version(to)
                        .send()
                        .await
                        .map_err(|e| anyhow::Error::from(aws_err(&what, "UpdateClusterVersion")(e)))
                    {
                        Ok(_) => Ok(Step::Done(())),
                        // Another update is still running; its end is what we wait for.
                        Err(e) if class_of(&e) == ErrorClass::InUse => Ok(still(format!("{e:#}"))),
                        Err(e) => Err(e),
                    }
                })
                .await?;
            w.wait(&what)
                .reporting(reporter)
                .until(|| async {
                    let c = own_cluster(ctx).await?;
                    Ok(match (c.status(), c.version()) {
                        (Some(ClusterStatus::Active), Some(v)) if v == to => Step::Done(()),
                        (Some(ClusterStatus::Failed), _) => anyhow::bail!("{what}: the cluster is FAILED"),
                        (s, _) => still(format!(
                            "{} (control plane upgrades take 10-30 minutes)",
                            s.map(|s| s.as_str()).unwrap_or("UNKNOWN")
                        )),
                    })
                })
                .await?;
        }
        steps.push(UpgradeStep {
            target: format!("control plane {name}"),
            from: from.clone(),
            to: to.into(),
            result: done.into(),
        });
    }

    // 2. Nodegroups, all at once: each rolls its own nodes with its maxUnavailable.
    let nodegroups = ctx.inventory.nodegroups(&ctx.aws).await?;
    let behind: Vec<(String, String)> = nodegroups
        .iter()
        .filter(|n| n.version() != Some(to))
        .map(|n| {
            (
                n.nodegroup_name().unwrap_or_default().to_string(),
                n.version().unwrap_or_default().to_string(),
            )
        })
        .collect();
    if !dry_run {
        futures::future::try_join_all(behind.iter().map(|(ng, _)| async move {
            let what = format!("nodegroup {ng} of {name}");
            reporter.event(Event::Note(format!("{what}: rolling nodes to {to}")));
            eks.update_nodegroup_version()
                .cluster_name(name)
                .nodegroup_name(ng)
                .version(to)
                .send()
                .await
                .map_err(aws_err(&what, "UpdateNodegroupVersion"))?;
            w.wait(&what)
                .reporting(reporter)
                .until(|| async {
                    let n = eks
                        .describe_nodegroup()
                        .cluster_name(name)
                        .nodegroup_name(ng)
                        .send()
                        .await
                        .map_err(aws_err(&what, "DescribeNodegroup"))?
                        .nodegroup;
                    Ok(match n.as_ref().map(|n| (n.status(), n.version())) {
                        Some((Some(NodegroupStatus::Active), Some(v))) if v == to => Step::Done(()),
                        Some((Some(NodegroupStatus::Degraded), _)) => {
                            anyhow::bail!("{what} is DEGRADED during the upgrade")
                        }
                        other => still(other.and_then(|(s, _)| s).map(|s| s.as_str()).unwrap_or("UNKNOWN")),
                    })
                })
                .await
        }))
        .await?;
    }
    for (ng, v) in behind {
        steps.push(UpgradeStep {
            target: format!("nodegroup {ng}"),
            from: v,
            to: to.into(),
            result: done.into(),
        });
    }

    // 3. Addons, to the default version of the new release.
    let addons = match eks.list_addons().cluster_name(name).send().await {
        Ok(out) => out.addons().to_vec(),
        Err(e) => {
            let e = anyhow::Error::from(aws_err(format!("addons of {name}"), "ListAddons")(e));
            if not_implemented(&e) {
                Vec::new()
            } else {
                return Err(e);
            }
        }
    };
    for addon in addons {
        let what = format!("addon {addon} of {name}");
        let current = describe_addon(eks, name, &addon, &what)
            .await?
            .and_then(|a| a.addon_version().map(str::to_string))
            .unwrap_or_default();
        let want = default_addon_version(ctx, &addon, to).await?;
        if current == want {
            continue;
        }
        if !dry_run {
            reporter.event(Event::Note(format!("{what}: {current} -> {want}")));
            eks.update_addon()
                .cluster_name(name)
                .addon_name(&addon)
                .addon_version(&want)
                .resolve_conflicts(ResolveConflicts::Overwrite)
                .send()
                .await
                .map_err(aws_err(&what, "UpdateAddon"))?;
            w.wait(&what)
                .reporting(reporter)
                .until(|| async {
                    let a = describe_addon(eks, name, &addon, &what).await?;
                    Ok(match a.as_ref().and_then(|a| a.status()) {
                        Some(AddonStatus::Active) => Step::Done(()),
                        Some(AddonStatus::UpdateFailed) => anyhow::bail!("{what}: UPDATE_FAILED"),
                        s => still(s.map(|s| s.as_str()).unwrap_or("UNKNOWN")),
                    })
                })
                .await?;
        }
        steps.push(UpgradeStep {
            target: format!("addon {addon}"),
            from: current,
            to: want,
            result: done.into(),
        });
    }
    Ok(steps)
}
