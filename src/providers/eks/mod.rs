//! Provider eks: the security phase (IAM roles for the control plane, the nodes and Fargate pods) and the cluster
//! phase (the EKS cluster, the IAM OIDC provider, a launch template and a managed nodegroup per node group, Fargate
//! profiles and EKS addons).
//!
//! EKS objects take minutes to settle, so their `apply` is a converge step rather than a one-shot call: it looks at
//! the object as it is *now*, makes the next call that is needed (create, or the next of several updates EKS only
//! takes one at a time), and answers `Retry` until the object is ACTIVE with nothing left to change. A run killed
//! while a cluster was CREATING therefore resumes by waiting, never by creating a second one.
//!
//! One file per kind (cluster, oidc, nodegroup, fargate, addon), each with its `delete::Kind`; this module builds
//! the phases' graphs and holds what they share.

mod addon;
mod cluster;
mod fargate;
mod nodegroup;
mod oidc;
#[cfg(test)]
mod tests;

pub use addon::*;
pub use cluster::*;
pub use fargate::*;
pub use nodegroup::*;
pub use oidc::*;

use crate::delete::{Doomed, Kind, Order};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eks::types::{
    AmiTypes, AuthenticationMode, CapacityTypes, ClusterStatus, CreateAccessConfigRequest, EncryptionConfig,
    FargateProfileSelector, FargateProfileStatus, LaunchTemplateSpecification, LogSetup, LogType, Logging,
    NodegroupScalingConfig, NodegroupStatus, NodegroupUpdateConfig, Provider as KmsProvider, ResolveConflicts,
    Taint as EksTaint, TaintEffect as EksTaintEffect, UpdateLabelsPayload, UpdateTaintsPayload, VpcConfigRequest,
};
use tokio::sync::OnceCell;

use crate::aws::eks::{describe_addon, describe_cluster, describe_fargate_profile, describe_nodegroup};
use crate::aws::tags::{self, Tagger, render, render_subset};
use crate::aws::{ErrorClass, aws_err, class_of};
use crate::engine::{
    Change, Ctx, Desired, ImmutableChange, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, Value,
    diff_attrs, resource_metadata,
};
use crate::model::{Addon, Cluster, Eks, FargateProfile, NodeGroup, SUPPORTED_VERSIONS};
use crate::providers::iam::{ExistingRole, IamRole, iam_tags};
use crate::providers::launch_template::LaunchTemplate;
use crate::spec::{SubnetType, TaintEffect};

/// What the EKS control plane needs to manage ENIs, load balancers and logs.
pub const CLUSTER_POLICIES: &[&str] = &["AmazonEKSClusterPolicy"];
/// What a managed node needs: join the cluster, run the VPC CNI, pull from ECR.
pub const NODE_POLICIES: &[&str] = &[
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
];
/// Added to the node role when the EBS CSI driver addon runs (it uses the node's credentials).
pub const EBS_CSI_POLICY: &str = "AmazonEBSCSIDriverPolicy";
/// What Fargate needs to start pods: pull images and write logs.
pub const FARGATE_POLICIES: &[&str] = &["AmazonEKSFargatePodExecutionRolePolicy"];
/// Thumbprint of the root CA behind every EKS OIDC issuer. IAM no longer checks it for EKS issuers, but the
/// API still takes one.
const EKS_OIDC_ROOT_CA_THUMBPRINT: &str = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280";

const CLUSTER_POLL: Duration = Duration::from_secs(15);
const NODEGROUP_POLL: Duration = Duration::from_secs(15);
const SMALL_POLL: Duration = Duration::from_secs(5);

/// Role names: `kforge-CLUSTER-cluster`, `-node`, `-fargate` (at most 58 characters of IAM's 64).
pub fn role_name(cluster: &str, which: &str) -> String {
    format!("kforge-{cluster}-{which}")
}

fn tagger(cluster: &Cluster) -> Tagger {
    Tagger {
        cluster: cluster.name.clone(),
        extra: cluster.tags.clone(),
    }
}

fn eks_settings(cluster: &Cluster) -> Eks {
    cluster.eks.clone().unwrap_or(Eks {
        endpoint_public: true,
        endpoint_private: true,
        public_access_cidrs: vec!["0.0.0.0/0".parse().expect("valid CIDR")],
        logging: Vec::new(),
        secrets_encryption_key_arn: None,
        with_oidc: false,
        fargate_profiles: Vec::new(),
    })
}

pub fn security_resources(cluster: &Cluster) -> Vec<Arc<dyn Resource>> {
    let tagger = tagger(cluster);
    let eks = eks_settings(cluster);
    let mut node_policies: Vec<&str> = NODE_POLICIES.to_vec();
    if cluster.addons.iter().any(|a| a.name == "aws-ebs-csi-driver") {
        node_policies.push(EBS_CSI_POLICY);
    }
    let mut roles = vec![
        RoleWanted {
            id: "role/cluster",
            which: "cluster",
            service: "eks.amazonaws.com",
            policies: CLUSTER_POLICIES.to_vec(),
            existing: cluster.iam.cluster_role_arn.as_ref(),
            field: "spec.iam.clusterRoleArn",
        },
        RoleWanted {
            id: "role/node",
            which: "node",
            service: "ec2.amazonaws.com",
            policies: node_policies,
            existing: cluster.iam.node_role_arn.as_ref(),
            field: "spec.iam.nodeRoleArn",
        },
    ];
    if !eks.fargate_profiles.is_empty() {
        roles.push(RoleWanted {
            id: "role/fargate",
            which: "fargate",
            service: "eks-fargate-pods.amazonaws.com",
            policies: FARGATE_POLICIES.to_vec(),
            existing: None,
            field: "",
        });
    }
    roles
        .into_iter()
        .map(|r| -> Arc<dyn Resource> {
            match r.existing {
                Some(arn) => Arc::new(ExistingRole {
                    id: r.id.into(),
                    arn: arn.clone(),
                    field: r.field,
                    deps: Vec::new(),
                }),
                None => Arc::new(IamRole {
                    id: r.id.into(),
                    name: role_name(&cluster.name, r.which),
                    cluster: cluster.name.clone(),
                    service: r.service.into(),
                    managed_policies: r.policies.iter().map(|p| p.to_string()).collect(),
                    inline_policy: None,
                    tags: tagger.tags(r.id, &[]),
                    deps: Vec::new(),
                }),
            }
        })
        .collect()
}

/// A role the cluster needs: kforge's own, or the existing one the spec names in `field`.
struct RoleWanted<'a> {
    id: &'static str,
    which: &'static str,
    service: &'static str,
    policies: Vec<&'static str>,
    existing: Option<&'a String>,
    field: &'static str,
}

/// Logical ids of the network layer's subnets of one kind (all kinds when `None`).
fn subnet_ids(cluster: &Cluster, kind: Option<SubnetType>) -> Vec<String> {
    cluster
        .network
        .iter()
        .flat_map(|n| n.subnets.iter())
        .filter(|s| kind.is_none_or(|k| s.kind == k))
        .map(|s| format!("subnet/{}", s.name()))
        .collect()
}

pub fn cluster_resources(cluster: &Cluster) -> Vec<Arc<dyn Resource>> {
    let tagger = tagger(cluster);
    let eks = eks_settings(cluster);
    let mut out: Vec<Arc<dyn Resource>> = Vec::new();
    let all_subnets = subnet_ids(cluster, None);
    let mut deps = all_subnets.clone();
    deps.push("role/cluster".into());
    out.push(Arc::new(EksCluster {
        id: CLUSTER_ID.into(),
        name: cluster.name.clone(),
        version: cluster.kubernetes_version.clone(),
        subnets: all_subnets,
        eks: eks.clone(),
        tags: tagger.tags(CLUSTER_ID, &[]),
        deps,
    }));
    if eks.with_oidc {
        out.push(Arc::new(OidcProvider {
            id: "oidc-provider".into(),
            tags: tagger.tags("oidc-provider", &[]),
            deps: vec![CLUSTER_ID.into()],
        }));
    }
    let mut workers = Vec::new();
    for g in &cluster.node_groups {
        let lt_id = format!("launch-template/{}", g.name);
        out.push(Arc::new(LaunchTemplate {
            id: lt_id.clone(),
            phase: Phase::Cluster,
            name: crate::model::group_resource_name(&cluster.name, &g.name),
            root_device: "/dev/xvda".into(),
            volume: g.volume.clone(),
            tags: tagger.tags(&lt_id, &[]),
            machine: None,
            deps: Vec::new(),
        }));
        let id = format!("nodegroup/{}", g.name);
        let subnets = subnet_ids(cluster, Some(g.subnets));
        let mut deps = subnets.clone();
        deps.extend([CLUSTER_ID.to_string(), "role/node".into(), lt_id.clone()]);
        out.push(Arc::new(ManagedNodegroup {
            id: id.clone(),
            cluster: cluster.name.clone(),
            kubernetes_version: cluster.kubernetes_version.clone(),
            group: g.clone(),
            subnets,
            launch_template: lt_id,
            tags: tagger.tags(&id, &[]),
            deps,
        }));
        workers.push(id);
    }
    let private = subnet_ids(cluster, Some(SubnetType::Private));
    // EKS creates or deletes one Fargate profile at a time per cluster: chaining them avoids busy retries.
    let mut previous_profile: Option<String> = None;
    for p in &eks.fargate_profiles {
        let id = format!("fargate-profile/{}", p.name);
        let mut deps = private.clone();
        deps.extend([CLUSTER_ID.to_string(), "role/fargate".into()]);
        deps.extend(previous_profile.replace(id.clone()));
        out.push(Arc::new(FargateProfileRes {
            id: id.clone(),
            cluster: cluster.name.clone(),
            profile: p.clone(),
            subnets: private.clone(),
            tags: tagger.tags(&id, &[]),
            deps,
        }));
        workers.push(id);
    }
    for a in &cluster.addons {
        let id = format!("addon/{}", a.name);
        let mut deps = vec![CLUSTER_ID.to_string()];
        // These run as pods on nodes: created before any node exists they would stay DEGRADED.
        if matches!(a.name.as_str(), "coredns" | "aws-ebs-csi-driver") {
            deps.extend(workers.iter().cloned());
        }
        out.push(Arc::new(EksAddon {
            id: id.clone(),
            cluster: cluster.name.clone(),
            kubernetes_version: cluster.kubernetes_version.clone(),
            addon: a.clone(),
            resolved_version: OnceCell::new(),
            tags: tagger.tags(&id, &[]),
            deps,
        }));
    }
    out
}

pub const CLUSTER_ID: &str = "eks-cluster";

fn eks_tags(tags: &BTreeMap<String, String>) -> HashMap<String, String> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn sorted_map(tags: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    tags.map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// `a,b,c` of the values of `deps`' `id` outputs, sorted; unknown while any is being created.
fn join<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    let mut v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    v.sort();
    v.join(",")
}

/// `CODE: message (resources)` for each health issue, one per line.
fn issues<'a>(list: impl Iterator<Item = (Option<&'a str>, Option<&'a str>, &'a [String])>) -> String {
    let lines: Vec<String> = list
        .map(|(code, message, resources)| {
            let mut s = format!("{}: {}", code.unwrap_or("Unknown"), message.unwrap_or("(no message)"));
            if !resources.is_empty() {
                s.push_str(&format!(" ({})", resources.join(", ")));
            }
            s
        })
        .collect();
    if lines.is_empty() {
        "EKS reported no health issues".into()
    } else {
        lines.join("\n    ")
    }
}

fn is(e: &anyhow::Error, class: ErrorClass) -> bool {
    class_of(e) == class
}

/// Whether `to` is exactly the next minor version after `from` and one kforge supports.
pub fn is_next_minor(from: &str, to: &str) -> bool {
    let minor = |v: &str| -> Option<(u32, u32)> {
        let (a, b) = v.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    matches!((minor(from), minor(to)), (Some((1, f)), Some((1, t))) if t == f + 1) && SUPPORTED_VERSIONS.contains(&to)
}

/// The cluster's EKS cluster as delete sees it: only one kforge tagged as this cluster's is ever deleted (one of
/// the same name made by others is left alone); what hangs off it is listed only when it is.
async fn own_cluster(ctx: &Ctx) -> anyhow::Result<Option<(&aws_sdk_eks::types::Cluster, Option<&str>)>> {
    Ok(ctx
        .inventory
        .own_eks_cluster(&ctx.aws)
        .await?
        .map(|c| (c, c.resources_vpc_config().and_then(|v| v.vpc_id()))))
}

fn resource_tag(tags: Option<&HashMap<String, String>>) -> Option<String> {
    tags.and_then(|t| t.get(tags::RESOURCE)).cloned()
}

/// Delete's entries for what hangs off the cluster's own EKS cluster, placed in its VPC: `listed` (the
/// inventory's list, awaited only when the cluster is kforge's) and each object's name and tags.
async fn hanging_off_cluster<'a, T: 'a>(
    ctx: &'a Ctx,
    kind: &Arc<dyn Kind>,
    listed: impl std::future::Future<Output = anyhow::Result<&'a [T]>>,
    name_and_tags: impl Fn(&T) -> (Option<&str>, Option<&HashMap<String, String>>),
) -> anyhow::Result<Vec<Doomed>> {
    let Some((_, vpc)) = own_cluster(ctx).await? else {
        return Ok(Vec::new());
    };
    Ok(listed
        .await?
        .iter()
        .map(|o| {
            let (name, tags) = name_and_tags(o);
            Doomed::new(kind, name.unwrap_or_default(), resource_tag(tags), vpc)
        })
        .collect())
}
