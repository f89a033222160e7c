//! Provider eks: the security phase (IAM roles for the control plane, the nodes and Fargate pods) and the cluster
//! phase (the EKS cluster, the IAM OIDC provider, a launch template and a managed nodegroup per node group, Fargate
//! profiles and EKS addons).
//!
//! EKS objects take minutes to settle, so their `apply` is a converge step rather than a one-shot call: it looks at
//! the object as it is *now*, makes the next call that is needed (create, or the next of several updates EKS only
//! takes one at a time), and answers `Retry` until the object is ACTIVE with nothing left to change. A run killed
//! while a cluster was CREATING therefore resumes by waiting, never by creating a second one.

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

// ---------------------------------------------------------------------------------------------------------------
// The EKS cluster

pub struct EksCluster {
    pub id: String,
    pub name: String,
    pub version: String,
    /// Logical ids of the subnets the control plane's ENIs may use.
    pub subnets: Vec<String>,
    pub eks: Eks,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

impl EksCluster {
    fn cidrs(&self) -> String {
        if self.eks.endpoint_public {
            join(self.eks.public_access_cidrs.iter().map(|c| c.to_string()))
        } else {
            String::new()
        }
    }

    fn observe(&self, c: &aws_sdk_eks::types::Cluster) -> Observed {
        let vpc = c.resources_vpc_config();
        let public = vpc.is_some_and(|v| v.endpoint_public_access());
        let enabled_logs: BTreeSet<&str> = c
            .logging()
            .map(|l| l.cluster_logging())
            .unwrap_or_default()
            .iter()
            .filter(|s| s.enabled() == Some(true))
            .flat_map(|s| s.types().iter().map(|t| t.as_str()))
            .collect();
        let logging: Vec<&str> = crate::model::EKS_LOG_TYPES
            .iter()
            .copied()
            .filter(|t| enabled_logs.contains(t))
            .collect();
        let key = c
            .encryption_config()
            .first()
            .and_then(|e| e.provider())
            .and_then(|p| p.key_arn())
            .unwrap_or_default();
        let attrs = BTreeMap::from([
            ("version", c.version().unwrap_or_default().to_string()),
            ("roleArn", c.role_arn().unwrap_or_default().to_string()),
            ("subnets", join(vpc.map(|v| v.subnet_ids()).unwrap_or_default())),
            ("endpointPublic", public.to_string()),
            (
                "endpointPrivate",
                vpc.is_some_and(|v| v.endpoint_private_access()).to_string(),
            ),
            (
                "publicAccessCidrs",
                if public {
                    join(vpc.map(|v| v.public_access_cidrs()).unwrap_or_default())
                } else {
                    String::new()
                },
            ),
            ("logging", logging.join(",")),
            ("secretsKey", key.to_string()),
            ("tags", render_subset(&sorted_map(c.tags()), &self.tags)),
            (
                "status",
                c.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
            ),
        ]);
        let mut outputs = Outputs::from([
            ("id".to_string(), c.name().unwrap_or(&self.name).to_string()),
            ("arn".to_string(), c.arn().unwrap_or_default().to_string()),
            ("version".to_string(), c.version().unwrap_or_default().to_string()),
        ]);
        let optional = [
            ("endpoint", c.endpoint()),
            ("certificateAuthority", c.certificate_authority().and_then(|a| a.data())),
            (
                "oidcIssuer",
                c.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()),
            ),
            ("clusterSecurityGroup", vpc.and_then(|v| v.cluster_security_group_id())),
            ("vpc", vpc.and_then(|v| v.vpc_id())),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                outputs.insert(k.into(), v.into());
            }
        }
        Observed {
            id: self.name.clone(),
            attrs,
            outputs,
        }
    }

    /// The cluster as EKS describes it now (not the run's snapshot).
    async fn describe(&self, ctx: &Ctx) -> anyhow::Result<Option<aws_sdk_eks::types::Cluster>> {
        describe_cluster(&ctx.aws, &self.name, &format!("{} ({})", self.id, self.name)).await
    }

    fn failed(&self, c: &aws_sdk_eks::types::Cluster) -> anyhow::Error {
        let health = c.health().map(|h| h.issues()).unwrap_or_default();
        anyhow::anyhow!(
            "{} ({}) is {}:\n    {}\n  hint: fix the cause above, then `kforge delete cluster {}` and create it again",
            self.id,
            self.name,
            c.status().map(|s| s.as_str()).unwrap_or("UNKNOWN"),
            issues(
                health
                    .iter()
                    .map(|i| (i.code().map(|c| c.as_str()), i.message(), i.resource_ids()))
            ),
            self.name
        )
    }

    fn vpc_request(&self, subnets: Option<Vec<String>>) -> VpcConfigRequest {
        VpcConfigRequest::builder()
            .set_subnet_ids(subnets)
            .endpoint_public_access(self.eks.endpoint_public)
            .endpoint_private_access(self.eks.endpoint_private)
            .set_public_access_cidrs(
                self.eks
                    .endpoint_public
                    .then(|| self.eks.public_access_cidrs.iter().map(|c| c.to_string()).collect()),
            )
            .build()
    }

    fn logging(&self, currently_enabled: &str) -> Logging {
        let wanted: Vec<LogType> = self.eks.logging.iter().map(|t| LogType::from(t.as_str())).collect();
        let disable: Vec<LogType> = currently_enabled
            .split(',')
            .filter(|t| !t.is_empty() && !self.eks.logging.iter().any(|w| w == t))
            .map(LogType::from)
            .collect();
        let mut setups = Vec::new();
        if !wanted.is_empty() {
            setups.push(LogSetup::builder().set_types(Some(wanted)).enabled(true).build());
        }
        if !disable.is_empty() {
            setups.push(LogSetup::builder().set_types(Some(disable)).enabled(false).build());
        }
        Logging::builder().set_cluster_logging(Some(setups)).build()
    }

    async fn create(&self, ctx: &Ctx, desired: &Desired) -> anyhow::Result<Step<Outputs>> {
        let subnets: Vec<String> = desired.value("subnets")?.split(',').map(str::to_string).collect();
        let what = format!("{} ({})", self.id, self.name);
        let r = ctx
            .aws
            .eks()
            .create_cluster()
            .client_request_token(ctx.client_token(&self.id, desired))
            .name(&self.name)
            .version(&self.version)
            .role_arn(desired.value("roleArn")?)
            .resources_vpc_config(self.vpc_request(Some(subnets)))
            .logging(self.logging(""))
            .set_encryption_config(self.eks.secrets_encryption_key_arn.as_ref().map(|arn| {
                vec![
                    EncryptionConfig::builder()
                        .resources("secrets")
                        .provider(KmsProvider::builder().key_arn(arn).build())
                        .build(),
                ]
            }))
            // The creator administers the cluster through an access entry, as with eksctl.
            .access_config(
                CreateAccessConfigRequest::builder()
                    .authentication_mode(AuthenticationMode::ApiAndConfigMap)
                    .bootstrap_cluster_creator_admin_permissions(true)
                    .build(),
            )
            .set_tags(Some(eks_tags(&self.tags)))
            .send()
            .await
            .map_err(|e| anyhow::Error::from(aws_err(&what, "CreateCluster")(e)));
        match r {
            Ok(out) => match out.cluster {
                Some(c) if c.status() == Some(&ClusterStatus::Active) => Ok(Step::Done(self.observe(&c).outputs)),
                _ => Ok(Step::Retry {
                    after: CLUSTER_POLL,
                    reason: "CREATING (an EKS control plane takes about 10 minutes)".into(),
                }),
            },
            // A role created seconds ago is not yet assumable everywhere in IAM.
            Err(e) if is(&e, ErrorClass::NotYetVisible) => Ok(Step::Retry {
                after: Duration::from_secs(10),
                reason: "waiting for the cluster role to propagate in IAM".into(),
            }),
            // A cluster of the same name is still being deleted.
            Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
                after: CLUSTER_POLL,
                reason: "a cluster of this name is still being deleted".into(),
            }),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Resource for EksCluster {
    resource_metadata!("eks-cluster", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(40 * 60)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("version", self.version.as_str(), Mutability::Immutable)
            .attr("roleArn", inputs.get("role/cluster", "arn"), Mutability::Immutable)
            .attr("subnets", inputs.joined_ids(&self.subnets), Mutability::Immutable)
            .attr("endpointPublic", self.eks.endpoint_public, Mutability::InPlace)
            .attr("endpointPrivate", self.eks.endpoint_private, Mutability::InPlace)
            .attr("publicAccessCidrs", self.cidrs(), Mutability::InPlace)
            .attr("logging", self.eks.logging.join(","), Mutability::InPlace)
            .attr(
                "secretsKey",
                self.eks.secrets_encryption_key_arn.clone().unwrap_or_default(),
                Mutability::InPlace,
            )
            .attr("tags", render(&self.tags), Mutability::InPlace)
            // Not a setting: a cluster found CREATING or UPDATING is waited for.
            .attr("status", "ACTIVE", Mutability::InPlace)
    }
    fn diff(&self, actual: Option<&Observed>, desired: &Desired) -> Result<Change, Box<ImmutableChange>> {
        if let Some(a) = actual {
            let have = a.attrs.get("version").cloned().unwrap_or_default();
            if have != self.version {
                let hint = version_hint(&self.name, &have, &self.version);
                return Err(Box::new(ImmutableChange {
                    resource: self.id.clone(),
                    kind: "EKS cluster",
                    attr: "kubernetesVersion",
                    from: have,
                    to: self.version.clone(),
                    hint: Some(hint),
                }));
            }
            let key = a.attrs.get("secretsKey").cloned().unwrap_or_default();
            let want = self.eks.secrets_encryption_key_arn.clone().unwrap_or_default();
            if !key.is_empty() && key != want {
                return Err(Box::new(ImmutableChange {
                    resource: self.id.clone(),
                    kind: "EKS cluster",
                    attr: "secretsEncryptionKeyArn",
                    from: key,
                    to: if want.is_empty() { "(none)".into() } else { want },
                    hint: Some(
                        "EKS cannot remove or replace a secrets encryption key: set spec.eks.secretsEncryptionKeyArn back"
                            .into(),
                    ),
                }));
            }
        }
        diff_attrs(&self.id, self.kind(), actual, desired)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let Some(c) = ctx.inventory.eks_cluster(&ctx.aws).await? else {
            return Ok(None);
        };
        let owner = c.tags().and_then(|t| t.get(tags::CLUSTER));
        if owner != Some(&ctx.cluster) {
            anyhow::bail!(
                "{}: an EKS cluster named {} exists but is not kforge's cluster {} (tag {} is {:?})\n  hint: choose another metadata.name, or delete that cluster",
                self.id,
                self.name,
                ctx.cluster,
                tags::CLUSTER,
                owner
            );
        }
        match c.status() {
            Some(ClusterStatus::Deleting) => Ok(None),
            Some(ClusterStatus::Failed) => Err(self.failed(c)),
            _ => Ok(Some(self.observe(c))),
        }
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let what = format!("{} ({})", self.id, self.name);
        let Some(now) = self.describe(ctx).await? else {
            return self.create(ctx, desired).await;
        };
        match now.status() {
            Some(ClusterStatus::Active) => {}
            Some(ClusterStatus::Failed) => return Err(self.failed(&now)),
            s => {
                return Ok(Step::Retry {
                    after: CLUSTER_POLL,
                    reason: s.map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                });
            }
        }
        let observed = self.observe(&now);
        let differs =
            |name: &str| observed.attrs.get(name).map(String::as_str) != desired.get(name).and_then(Value::known);
        let eks = ctx.aws.eks();
        let arn = now.arn().unwrap_or_default();
        // Tags are not an "update" in EKS's sense and can go along with one.
        if differs("tags") {
            eks.tag_resource()
                .resource_arn(arn)
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&what, "TagResource"))?;
        }
        // EKS runs one update at a time: make the next one, then come back once the cluster is ACTIVE again.
        let update = if differs("endpointPublic") || differs("endpointPrivate") || differs("publicAccessCidrs") {
            Some((
                "endpoint access",
                eks.update_cluster_config()
                    .name(&self.name)
                    .resources_vpc_config(self.vpc_request(None))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&what, "UpdateClusterConfig")(e))),
            ))
        } else if differs("logging") {
            let current = observed.attrs.get("logging").cloned().unwrap_or_default();
            Some((
                "logging",
                eks.update_cluster_config()
                    .name(&self.name)
                    .logging(self.logging(&current))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&what, "UpdateClusterConfig")(e))),
            ))
        } else if differs("secretsKey") {
            let arn = self.eks.secrets_encryption_key_arn.clone().unwrap_or_default();
            Some((
                "secrets encryption",
                eks.associate_encryption_config()
                    .cluster_name(&self.name)
                    .encryption_config(
                        EncryptionConfig::builder()
                            .resources("secrets")
                            .provider(KmsProvider::builder().key_arn(arn).build())
                            .build(),
                    )
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&what, "AssociateEncryptionConfig")(e))),
            ))
        } else {
            None
        };
        match update {
            None => Ok(Step::Done(observed.outputs)),
            Some((_, Err(e))) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
                after: CLUSTER_POLL,
                reason: "another update of the cluster is in progress".into(),
            }),
            Some((_, Err(e))) => Err(e),
            Some((name, Ok(()))) => Ok(Step::Retry {
                after: SMALL_POLL,
                reason: format!("updating {name}"),
            }),
        }
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_cluster(ctx, &self.name).await
    }
}

/// What to do about a version difference: upgrades go through `kforge upgrade cluster`, one minor at a time.
fn version_hint(cluster: &str, have: &str, want: &str) -> String {
    let minor = |v: &str| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
    match (minor(have), minor(want)) {
        (Some(h), Some(w)) if w == h + 1 => format!(
            "run `kforge upgrade cluster {cluster} --to {want}` (control plane, then nodegroups and addons), then apply again"
        ),
        (Some(h), Some(w)) if w > h => {
            let next = format!("1.{}", h + 1);
            format!(
                "EKS upgrades one minor version at a time: run `kforge upgrade cluster {cluster} --to {next}` first"
            )
        }
        _ => format!("EKS cannot downgrade: set spec.kubernetesVersion back to {have}"),
    }
}

/// Deletes the EKS cluster and waits until it is gone; `Blocked` while nodegroups or Fargate profiles remain.
pub async fn delete_cluster(ctx: &Ctx, name: &str) -> anyhow::Result<Step<()>> {
    let eks = ctx.aws.eks();
    let what = format!("eks-cluster ({name})");
    let Some(current) = describe_cluster(&ctx.aws, name, &what).await? else {
        return Ok(Step::Done(()));
    };
    if current.status() == Some(&ClusterStatus::Deleting) {
        return Ok(Step::Retry {
            after: CLUSTER_POLL,
            reason: "DELETING".into(),
        });
    }
    match eks
        .delete_cluster()
        .name(name)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteCluster")(e)))
    {
        Ok(_) => Ok(Step::Retry {
            after: Duration::ZERO,
            reason: "deletion requested".into(),
        }),
        Err(e) if is(&e, ErrorClass::NotFound) => Ok(Step::Done(())),
        Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Blocked {
            reason: "nodegroups or Fargate profiles are still attached".into(),
        }),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// IAM OIDC provider (IRSA)

pub struct OidcProvider {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for OidcProvider {
    resource_metadata!("iam-oidc-provider", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        let url = match inputs.get(CLUSTER_ID, "oidcIssuer") {
            Value::Known(u) => Value::Known(u.trim_start_matches("https://").to_string()),
            Value::Unknown => Value::Unknown,
        };
        Desired::default()
            .attr("url", url, Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let all = ctx.inventory.oidc_providers(&ctx.aws).await?;
        let mine: Vec<_> = all
            .iter()
            .filter(|p| p.tags.get(tags::RESOURCE) == Some(&self.id))
            .collect();
        Ok(mine.first().map(|p| Observed {
            id: p.arn.clone(),
            attrs: BTreeMap::from([("url", p.detail.clone()), ("tags", render_subset(&p.tags, &self.tags))]),
            outputs: Outputs::from([("id".to_string(), p.arn.clone()), ("arn".to_string(), p.arn.clone())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let iam = ctx.aws.iam();
        match actual {
            None => {
                let url = desired.value("url")?;
                let out = iam
                    .create_open_id_connect_provider()
                    .url(format!("https://{url}"))
                    .client_id_list("sts.amazonaws.com")
                    .thumbprint_list(EKS_OIDC_ROOT_CA_THUMBPRINT)
                    .set_tags(Some(iam_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(&self.id, "CreateOpenIDConnectProvider"))?;
                let arn = out.open_id_connect_provider_arn().unwrap_or_default().to_string();
                Ok(Step::Done(Outputs::from([
                    ("id".to_string(), arn.clone()),
                    ("arn".to_string(), arn),
                ])))
            }
            Some(a) => {
                iam.tag_open_id_connect_provider()
                    .open_id_connect_provider_arn(&a.id)
                    .set_tags(Some(iam_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(format!("{} ({})", self.id, a.id), "TagOpenIDConnectProvider"))?;
                Ok(Step::Done(a.outputs.clone()))
            }
        }
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_oidc_provider(ctx, &actual.id).await
    }
}

pub async fn delete_oidc_provider(ctx: &Ctx, arn: &str) -> anyhow::Result<Step<()>> {
    match ctx
        .aws
        .iam()
        .delete_open_id_connect_provider()
        .open_id_connect_provider_arn(arn)
        .send()
        .await
    {
        Ok(_) => Ok(Step::Done(())),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => Ok(Step::Done(())),
        Err(e) => Err(aws_err(format!("iam-oidc-provider ({arn})"), "DeleteOpenIDConnectProvider")(e).into()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Managed nodegroups

pub struct ManagedNodegroup {
    pub id: String,
    pub cluster: String,
    /// Nodes start at the cluster's version; `upgrade cluster` moves them later.
    pub kubernetes_version: String,
    pub group: NodeGroup,
    pub subnets: Vec<String>,
    /// Logical id of the group's launch template.
    pub launch_template: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

/// The AMI type EKS picks nodes from: AL2023, with NVIDIA drivers for GPU groups, ARM for Graviton types.
pub fn ami_type(group: &NodeGroup) -> AmiTypes {
    let graviton = group.instance_types.iter().all(|t| {
        let family = t.split('.').next().unwrap_or("");
        // m6g, c7gn, r8g...: a 'g' right after the generation digit.
        family
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit())
            .is_some_and(|(i, _)| family[i + 1..].starts_with('g'))
            && !family.starts_with('g')
    });
    match (group.gpu, graviton) {
        (true, true) => AmiTypes::Al2023Arm64Nvidia,
        (true, false) => AmiTypes::Al2023X8664Nvidia,
        (false, true) => AmiTypes::Al2023Arm64Standard,
        (false, false) => AmiTypes::Al2023X8664Standard,
    }
}

fn taint_effect(e: TaintEffect) -> EksTaintEffect {
    match e {
        TaintEffect::NoSchedule => EksTaintEffect::NoSchedule,
        TaintEffect::PreferNoSchedule => EksTaintEffect::PreferNoSchedule,
        TaintEffect::NoExecute => EksTaintEffect::NoExecute,
    }
}

fn render_taint(key: &str, value: Option<&str>, effect: &str) -> String {
    format!("{key}={}:{effect}", value.unwrap_or(""))
}

impl ManagedNodegroup {
    fn scaling(&self) -> String {
        let g = &self.group;
        format!("min={} desired={} max={}", g.min_size, g.desired_size, g.max_size)
    }

    fn capacity(&self) -> CapacityTypes {
        if self.group.spot {
            CapacityTypes::Spot
        } else {
            CapacityTypes::OnDemand
        }
    }

    fn taints(&self) -> Vec<EksTaint> {
        self.group
            .taints
            .iter()
            .map(|t| {
                EksTaint::builder()
                    .key(&t.key)
                    .set_value(t.value.clone())
                    .effect(taint_effect(t.effect))
                    .build()
            })
            .collect()
    }

    fn observe(&self, n: &aws_sdk_eks::types::Nodegroup) -> Observed {
        let s = n.scaling_config();
        let lt = n.launch_template();
        let attrs = BTreeMap::from([
            (
                "scaling",
                format!(
                    "min={} desired={} max={}",
                    s.and_then(|s| s.min_size()).unwrap_or(0),
                    s.and_then(|s| s.desired_size()).unwrap_or(0),
                    s.and_then(|s| s.max_size()).unwrap_or(0)
                ),
            ),
            ("labels", render(&sorted_map(n.labels()))),
            (
                "taints",
                join(n.taints().iter().map(|t| {
                    render_taint(
                        t.key().unwrap_or_default(),
                        t.value(),
                        t.effect().map(|e| e.as_str()).unwrap_or(""),
                    )
                })),
            ),
            ("instanceTypes", n.instance_types().join(",")),
            (
                "capacityType",
                n.capacity_type().map(|c| c.as_str()).unwrap_or("ON_DEMAND").to_string(),
            ),
            (
                "amiType",
                n.ami_type().map(|a| a.as_str()).unwrap_or_default().to_string(),
            ),
            ("subnets", join(n.subnets())),
            ("nodeRole", n.node_role().unwrap_or_default().to_string()),
            (
                "launchTemplate",
                lt.and_then(|l| l.id()).unwrap_or_default().to_string(),
            ),
            (
                "launchTemplateVersion",
                lt.and_then(|l| l.version()).unwrap_or_default().to_string(),
            ),
            ("tags", render_subset(&sorted_map(n.tags()), &self.tags)),
            (
                "status",
                n.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
            ),
        ]);
        Observed {
            id: n.nodegroup_name().unwrap_or(&self.group.name).to_string(),
            attrs,
            outputs: Outputs::from([
                ("id".to_string(), self.group.name.clone()),
                ("arn".to_string(), n.nodegroup_arn().unwrap_or_default().to_string()),
            ]),
        }
    }

    async fn describe(&self, ctx: &Ctx) -> anyhow::Result<Option<aws_sdk_eks::types::Nodegroup>> {
        describe_nodegroup(&ctx.aws, &self.cluster, &self.group.name, &self.id).await
    }

    fn failed(&self, n: &aws_sdk_eks::types::Nodegroup) -> anyhow::Error {
        let list = n.health().map(|h| h.issues()).unwrap_or_default();
        anyhow::anyhow!(
            "{} (nodegroup {} of {}) is {}:\n    {}\n  hint: fix the cause above; a re-run replaces a failed nodegroup only after `kforge delete cluster` or removing the group from the spec",
            self.id,
            self.group.name,
            self.cluster,
            n.status().map(|s| s.as_str()).unwrap_or("UNKNOWN"),
            issues(
                list.iter()
                    .map(|i| (i.code().map(|c| c.as_str()), i.message(), i.resource_ids()))
            )
        )
    }

    async fn create(&self, ctx: &Ctx, desired: &Desired) -> anyhow::Result<Step<Outputs>> {
        let g = &self.group;
        let r = ctx
            .aws
            .eks()
            .create_nodegroup()
            .client_request_token(ctx.client_token(&self.id, desired))
            .cluster_name(&self.cluster)
            .nodegroup_name(&g.name)
            .version(&self.kubernetes_version)
            .scaling_config(
                NodegroupScalingConfig::builder()
                    .min_size(crate::model::aws_i32(g.min_size))
                    .max_size(crate::model::aws_i32(g.max_size))
                    .desired_size(crate::model::aws_i32(g.desired_size))
                    .build(),
            )
            .set_instance_types(Some(g.instance_types.clone()))
            .capacity_type(self.capacity())
            .ami_type(ami_type(g))
            .set_subnets(Some(desired.value("subnets")?.split(',').map(str::to_string).collect()))
            .node_role(desired.value("nodeRole")?)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .id(desired.value("launchTemplate")?)
                    .version(desired.value("launchTemplateVersion")?)
                    .build(),
            )
            .set_labels(Some(g.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            .set_taints(Some(self.taints()))
            .update_config(NodegroupUpdateConfig::builder().max_unavailable(1).build())
            .set_tags(Some(eks_tags(&self.tags)))
            .send()
            .await
            .map_err(|e| anyhow::Error::from(aws_err(&self.id, "CreateNodegroup")(e)));
        match r {
            Ok(out) => match out.nodegroup {
                Some(n) if n.status() == Some(&NodegroupStatus::Active) => Ok(Step::Done(self.observe(&n).outputs)),
                _ => Ok(Step::Retry {
                    after: NODEGROUP_POLL,
                    reason: "CREATING (nodes are starting and joining)".into(),
                }),
            },
            Err(e) if is(&e, ErrorClass::NotYetVisible) => Ok(Step::Retry {
                after: Duration::from_secs(10),
                reason: "waiting for the node role to propagate in IAM".into(),
            }),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Resource for ManagedNodegroup {
    resource_metadata!("eks-nodegroup", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(30 * 60)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        let g = &self.group;
        Desired::default()
            .attr("scaling", self.scaling(), Mutability::InPlace)
            .attr("labels", render(&g.labels), Mutability::InPlace)
            .attr(
                "taints",
                join(
                    g.taints
                        .iter()
                        .map(|t| render_taint(&t.key, t.value.as_deref(), taint_effect(t.effect).as_str())),
                ),
                Mutability::InPlace,
            )
            .attr("instanceTypes", g.instance_types.join(","), Mutability::Replace)
            .attr("capacityType", self.capacity().as_str(), Mutability::Replace)
            .attr("amiType", ami_type(g).as_str(), Mutability::Replace)
            .attr("subnets", inputs.joined_ids(&self.subnets), Mutability::Replace)
            .attr("nodeRole", inputs.get("role/node", "arn"), Mutability::Replace)
            .attr(
                "launchTemplate",
                inputs.get(&self.launch_template, "id"),
                Mutability::Replace,
            )
            // A new template version rolls the nodes onto it.
            .attr(
                "launchTemplateVersion",
                inputs.get(&self.launch_template, "version"),
                Mutability::InPlace,
            )
            .attr("tags", render(&self.tags), Mutability::InPlace)
            .attr("status", "ACTIVE", Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let all = ctx.inventory.nodegroups(&ctx.aws).await?;
        Ok(all
            .iter()
            .find(|n| n.nodegroup_name() == Some(self.group.name.as_str()))
            .filter(|n| n.status() != Some(&NodegroupStatus::Deleting))
            .map(|n| self.observe(n)))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let Some(now) = self.describe(ctx).await? else {
            return self.create(ctx, desired).await;
        };
        match now.status() {
            Some(NodegroupStatus::Active) => {}
            Some(NodegroupStatus::CreateFailed | NodegroupStatus::Degraded | NodegroupStatus::DeleteFailed) => {
                return Err(self.failed(&now));
            }
            Some(NodegroupStatus::Deleting) => {
                return Ok(Step::Retry {
                    after: NODEGROUP_POLL,
                    reason: "a nodegroup of this name is still being deleted".into(),
                });
            }
            s => {
                return Ok(Step::Retry {
                    after: NODEGROUP_POLL,
                    reason: s.map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                });
            }
        }
        let observed = self.observe(&now);
        let differs =
            |name: &str| observed.attrs.get(name).map(String::as_str) != desired.get(name).and_then(Value::known);
        let eks = ctx.aws.eks();
        if differs("tags") {
            eks.tag_resource()
                .resource_arn(now.nodegroup_arn().unwrap_or_default())
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&self.id, "TagResource"))?;
        }
        let result = if differs("scaling") || differs("labels") || differs("taints") {
            let g = &self.group;
            let mut call = eks
                .update_nodegroup_config()
                .cluster_name(&self.cluster)
                .nodegroup_name(&g.name);
            if differs("scaling") {
                call = call.scaling_config(
                    NodegroupScalingConfig::builder()
                        .min_size(crate::model::aws_i32(g.min_size))
                        .max_size(crate::model::aws_i32(g.max_size))
                        .desired_size(crate::model::aws_i32(g.desired_size))
                        .build(),
                );
            }
            if differs("labels") {
                let current = sorted_map(now.labels());
                let remove: Vec<String> = current.keys().filter(|k| !g.labels.contains_key(*k)).cloned().collect();
                call = call.labels(
                    UpdateLabelsPayload::builder()
                        .set_add_or_update_labels(
                            (!g.labels.is_empty())
                                .then(|| g.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                        )
                        .set_remove_labels((!remove.is_empty()).then_some(remove))
                        .build(),
                );
            }
            if differs("taints") {
                let wanted = self.taints();
                let remove: Vec<EksTaint> = now
                    .taints()
                    .iter()
                    .filter(|t| !wanted.iter().any(|w| w.key() == t.key() && w.effect() == t.effect()))
                    .cloned()
                    .collect();
                call = call.taints(
                    UpdateTaintsPayload::builder()
                        .set_add_or_update_taints((!wanted.is_empty()).then_some(wanted))
                        .set_remove_taints((!remove.is_empty()).then_some(remove))
                        .build(),
                );
            }
            Some((
                "configuration",
                call.send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&self.id, "UpdateNodegroupConfig")(e))),
            ))
        } else if differs("launchTemplateVersion") {
            Some((
                "launch template version (rolling the nodes)",
                eks.update_nodegroup_version()
                    .cluster_name(&self.cluster)
                    .nodegroup_name(&self.group.name)
                    .launch_template(
                        LaunchTemplateSpecification::builder()
                            .id(desired.value("launchTemplate")?)
                            .version(desired.value("launchTemplateVersion")?)
                            .build(),
                    )
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&self.id, "UpdateNodegroupVersion")(e))),
            ))
        } else {
            None
        };
        match result {
            None => Ok(Step::Done(observed.outputs)),
            Some((_, Err(e))) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
                after: NODEGROUP_POLL,
                reason: "another update of the nodegroup is in progress".into(),
            }),
            Some((_, Err(e))) => Err(e),
            Some((what, Ok(()))) => Ok(Step::Retry {
                after: SMALL_POLL,
                reason: format!("updating {what}"),
            }),
        }
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_nodegroup(ctx, &self.cluster, &self.group.name).await
    }
}

pub async fn delete_nodegroup(ctx: &Ctx, cluster: &str, name: &str) -> anyhow::Result<Step<()>> {
    let eks = ctx.aws.eks();
    let what = format!("eks-nodegroup ({name})");
    let Some(current) = describe_nodegroup(&ctx.aws, cluster, name, &what).await? else {
        return Ok(Step::Done(()));
    };
    let status = current.status().cloned();
    if status == Some(NodegroupStatus::Deleting) {
        return Ok(Step::Retry {
            after: NODEGROUP_POLL,
            reason: "DELETING (nodes are draining)".into(),
        });
    }
    match eks
        .delete_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteNodegroup")(e)))
    {
        Ok(_) => Ok(Step::Retry {
            after: Duration::ZERO,
            reason: "deletion requested".into(),
        }),
        Err(e) if is(&e, ErrorClass::NotFound) => Ok(Step::Done(())),
        Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
            after: NODEGROUP_POLL,
            reason: "an update of the nodegroup is in progress".into(),
        }),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fargate profiles

pub struct FargateProfileRes {
    pub id: String,
    pub cluster: String,
    pub profile: FargateProfile,
    pub subnets: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

fn render_selectors<'a>(selectors: impl Iterator<Item = (&'a str, BTreeMap<String, String>)>) -> String {
    let mut v: Vec<String> = selectors
        .map(|(ns, labels)| {
            if labels.is_empty() {
                ns.to_string()
            } else {
                format!("{ns}{{{}}}", render(&labels))
            }
        })
        .collect();
    v.sort();
    v.join(";")
}

#[async_trait]
impl Resource for FargateProfileRes {
    resource_metadata!("eks-fargate-profile", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(20 * 60)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        // EKS cannot change a Fargate profile: every setting is a replacement.
        Desired::default()
            .attr(
                "selectors",
                render_selectors(
                    self.profile
                        .selectors
                        .iter()
                        .map(|s| (s.namespace.as_str(), s.labels.clone())),
                ),
                Mutability::Replace,
            )
            .attr(
                "podExecutionRole",
                inputs.get("role/fargate", "arn"),
                Mutability::Replace,
            )
            .attr("subnets", inputs.joined_ids(&self.subnets), Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
            .attr("status", "ACTIVE", Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let all = ctx.inventory.fargate_profiles(&ctx.aws).await?;
        Ok(all
            .iter()
            .find(|p| p.fargate_profile_name() == Some(self.profile.name.as_str()))
            .filter(|p| p.status() != Some(&FargateProfileStatus::Deleting))
            .map(|p| self.observe(p)))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let eks = ctx.aws.eks();
        let now = describe_fargate_profile(&ctx.aws, &self.cluster, &self.profile.name, &self.id).await?;
        let Some(now) = now else {
            let selectors = self
                .profile
                .selectors
                .iter()
                .map(|s| {
                    FargateProfileSelector::builder()
                        .namespace(&s.namespace)
                        .set_labels(
                            (!s.labels.is_empty())
                                .then(|| s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                        )
                        .build()
                })
                .collect();
            let r = eks
                .create_fargate_profile()
                .client_request_token(ctx.client_token(&self.id, desired))
                .cluster_name(&self.cluster)
                .fargate_profile_name(&self.profile.name)
                .pod_execution_role_arn(desired.value("podExecutionRole")?)
                .set_subnets(Some(desired.value("subnets")?.split(',').map(str::to_string).collect()))
                .set_selectors(Some(selectors))
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(|e| anyhow::Error::from(aws_err(&self.id, "CreateFargateProfile")(e)));
            return match r {
                Ok(out) => match out.fargate_profile {
                    Some(p) if p.status() == Some(&FargateProfileStatus::Active) => {
                        Ok(Step::Done(self.observe(&p).outputs))
                    }
                    _ => Ok(Step::Retry {
                        after: SMALL_POLL,
                        reason: "CREATING".into(),
                    }),
                },
                // One profile at a time per cluster.
                Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
                    after: SMALL_POLL,
                    reason: "another Fargate profile of the cluster is being created or deleted".into(),
                }),
                Err(e) => Err(e),
            };
        };
        match now.status() {
            Some(FargateProfileStatus::Active) => {}
            Some(FargateProfileStatus::CreateFailed | FargateProfileStatus::DeleteFailed) => {
                let list = now.health().map(|h| h.issues()).unwrap_or_default();
                anyhow::bail!(
                    "{} (Fargate profile {}) is {}:\n    {}\n  hint: check the pod execution role and that the subnets are private",
                    self.id,
                    self.profile.name,
                    now.status().map(|s| s.as_str()).unwrap_or_default(),
                    issues(
                        list.iter()
                            .map(|i| (i.code().map(|c| c.as_str()), i.message(), i.resource_ids()))
                    )
                );
            }
            s => {
                return Ok(Step::Retry {
                    after: SMALL_POLL,
                    reason: s.map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                });
            }
        }
        let observed = self.observe(&now);
        if observed.attrs.get("tags").map(String::as_str) != desired.get("tags").and_then(Value::known) {
            eks.tag_resource()
                .resource_arn(now.fargate_profile_arn().unwrap_or_default())
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&self.id, "TagResource"))?;
        }
        Ok(Step::Done(observed.outputs))
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_fargate_profile(ctx, &self.cluster, &self.profile.name).await
    }
}

impl FargateProfileRes {
    fn observe(&self, p: &aws_sdk_eks::types::FargateProfile) -> Observed {
        Observed {
            id: p.fargate_profile_name().unwrap_or_default().to_string(),
            attrs: BTreeMap::from([
                (
                    "selectors",
                    render_selectors(
                        p.selectors()
                            .iter()
                            .map(|s| (s.namespace().unwrap_or_default(), sorted_map(s.labels()))),
                    ),
                ),
                (
                    "podExecutionRole",
                    p.pod_execution_role_arn().unwrap_or_default().to_string(),
                ),
                ("subnets", join(p.subnets())),
                ("tags", render_subset(&sorted_map(p.tags()), &self.tags)),
                (
                    "status",
                    p.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                ),
            ]),
            outputs: Outputs::from([
                ("id".to_string(), self.profile.name.clone()),
                (
                    "arn".to_string(),
                    p.fargate_profile_arn().unwrap_or_default().to_string(),
                ),
            ]),
        }
    }
}

pub async fn delete_fargate_profile(ctx: &Ctx, cluster: &str, name: &str) -> anyhow::Result<Step<()>> {
    let eks = ctx.aws.eks();
    let what = format!("eks-fargate-profile ({name})");
    let Some(current) = describe_fargate_profile(&ctx.aws, cluster, name, &what).await? else {
        return Ok(Step::Done(()));
    };
    let status = current.status().cloned();
    if status == Some(FargateProfileStatus::Deleting) {
        return Ok(Step::Retry {
            after: SMALL_POLL,
            reason: "DELETING".into(),
        });
    }
    match eks
        .delete_fargate_profile()
        .cluster_name(cluster)
        .fargate_profile_name(name)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteFargateProfile")(e)))
    {
        Ok(_) => Ok(Step::Retry {
            after: Duration::ZERO,
            reason: "deletion requested".into(),
        }),
        Err(e) if is(&e, ErrorClass::NotFound) => Ok(Step::Done(())),
        // EKS deletes one Fargate profile at a time per cluster.
        Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
            after: SMALL_POLL,
            reason: "another Fargate profile is being deleted".into(),
        }),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// EKS addons

pub struct EksAddon {
    pub id: String,
    pub cluster: String,
    pub kubernetes_version: String,
    pub addon: Addon,
    /// The default version for the cluster's Kubernetes version, asked once (at find) when the spec names none.
    pub resolved_version: OnceCell<String>,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

/// The version EKS marks as default for `addon` on `kubernetes_version` (else the newest compatible one).
pub async fn default_addon_version(ctx: &Ctx, addon: &str, kubernetes_version: &str) -> anyhow::Result<String> {
    let out = ctx
        .aws
        .eks()
        .describe_addon_versions()
        .addon_name(addon)
        .kubernetes_version(kubernetes_version)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(format!("addon/{addon}"), "DescribeAddonVersions")(e)));
    let out = match out {
        Err(e) if crate::aws::inventory::not_implemented(&e) => {
            anyhow::bail!(
                "addon/{addon}: the AWS endpoint has no EKS addon API (a local emulator such as moto)\n  hint: set `addons: []` in the spec to create the cluster without EKS addons there"
            )
        }
        other => other?,
    };
    let versions: Vec<_> = out.addons().iter().flat_map(|a| a.addon_versions()).collect();
    let compatible = |v: &aws_sdk_eks::types::AddonVersionInfo| {
        v.compatibilities()
            .iter()
            .any(|c| c.cluster_version() == Some(kubernetes_version))
    };
    let default = versions.iter().copied().filter(|v| compatible(v)).find(|v| {
        v.compatibilities()
            .iter()
            .any(|c| c.cluster_version() == Some(kubernetes_version) && c.default_version())
    });
    default
        .or_else(|| versions.iter().copied().find(|v| compatible(v)))
        .and_then(|v| v.addon_version())
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "addon/{addon}: EKS offers no version of {addon} for Kubernetes {kubernetes_version}\n  hint: check the addon name, or remove it from spec.addons"
            )
        })
}

fn addon_failed(id: &str, a: &aws_sdk_eks::types::Addon) -> anyhow::Error {
    let list = a.health().map(|h| h.issues()).unwrap_or_default();
    anyhow::anyhow!(
        "{id} is {}:\n    {}\n  hint: fix the cause above and re-run; `kubectl -n kube-system get pods` shows the addon's pods",
        a.status().map(|s| s.as_str()).unwrap_or("UNKNOWN"),
        issues(
            list.iter()
                .map(|i| (i.code().map(|c| c.as_str()), i.message(), i.resource_ids()))
        )
    )
}

impl EksAddon {
    fn observe(&self, a: &aws_sdk_eks::types::Addon) -> Observed {
        Observed {
            id: a.addon_name().unwrap_or(&self.addon.name).to_string(),
            attrs: BTreeMap::from([
                ("version", a.addon_version().unwrap_or_default().to_string()),
                ("tags", render_subset(&sorted_map(a.tags()), &self.tags)),
                (
                    "status",
                    a.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                ),
            ]),
            outputs: Outputs::from([
                ("id".to_string(), self.addon.name.clone()),
                ("version".to_string(), a.addon_version().unwrap_or_default().to_string()),
            ]),
        }
    }
}

#[async_trait]
impl Resource for EksAddon {
    resource_metadata!("eks-addon", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(20 * 60)
    }
    fn desired(&self, _: &Inputs) -> Desired {
        let version = match (&self.addon.version, self.resolved_version.get()) {
            (Some(v), _) | (None, Some(v)) => Value::Known(v.clone()),
            (None, None) => Value::Unknown,
        };
        Desired::default()
            .attr("version", version, Mutability::InPlace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
            .attr("status", "ACTIVE", Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        if self.addon.version.is_none() {
            self.resolved_version
                .get_or_try_init(|| default_addon_version(ctx, &self.addon.name, &self.kubernetes_version))
                .await?;
        }
        let all = ctx.inventory.addons(&ctx.aws).await?;
        Ok(all
            .iter()
            .find(|a| a.addon_name() == Some(self.addon.name.as_str()))
            .map(|a| self.observe(a)))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let eks = ctx.aws.eks();
        let version = desired.value("version")?;
        let now = describe_addon(&ctx.aws, &self.cluster, &self.addon.name, &self.id).await?;
        let Some(now) = now else {
            eks.create_addon()
                .client_request_token(ctx.client_token(&self.id, desired))
                .cluster_name(&self.cluster)
                .addon_name(&self.addon.name)
                .addon_version(version)
                // The cluster runs self-managed copies of the core addons from the start; EKS takes them over.
                .resolve_conflicts(ResolveConflicts::Overwrite)
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&self.id, "CreateAddon"))?;
            return Ok(Step::Retry {
                after: SMALL_POLL,
                reason: "CREATING".into(),
            });
        };
        use aws_sdk_eks::types::AddonStatus;
        match now.status() {
            Some(AddonStatus::Active) => {}
            Some(AddonStatus::CreateFailed | AddonStatus::UpdateFailed | AddonStatus::DeleteFailed) => {
                return Err(addon_failed(&self.id, &now));
            }
            s => {
                let mut reason = s.map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string();
                if let Some(i) = now.health().and_then(|h| h.issues().first()) {
                    reason.push_str(&format!(": {}", i.message().unwrap_or_default()));
                }
                return Ok(Step::Retry {
                    after: SMALL_POLL,
                    reason,
                });
            }
        }
        let observed = self.observe(&now);
        if observed.attrs.get("tags").map(String::as_str) != desired.get("tags").and_then(Value::known) {
            eks.tag_resource()
                .resource_arn(now.addon_arn().unwrap_or_default())
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&self.id, "TagResource"))?;
        }
        if now.addon_version() != Some(version) {
            eks.update_addon()
                .cluster_name(&self.cluster)
                .addon_name(&self.addon.name)
                .addon_version(version)
                .resolve_conflicts(ResolveConflicts::Overwrite)
                .send()
                .await
                .map_err(aws_err(&self.id, "UpdateAddon"))?;
            return Ok(Step::Retry {
                after: SMALL_POLL,
                reason: format!("updating to {version}"),
            });
        }
        Ok(Step::Done(observed.outputs))
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_addon(ctx, &self.cluster, &self.addon.name).await
    }
}

pub async fn delete_addon(ctx: &Ctx, cluster: &str, name: &str) -> anyhow::Result<Step<()>> {
    let eks = ctx.aws.eks();
    let what = format!("eks-addon ({name})");
    let Some(current) = describe_addon(&ctx.aws, cluster, name, &what).await? else {
        return Ok(Step::Done(()));
    };
    let status = current.status().cloned();
    if status == Some(aws_sdk_eks::types::AddonStatus::Deleting) {
        return Ok(Step::Retry {
            after: SMALL_POLL,
            reason: "DELETING".into(),
        });
    }
    match eks
        .delete_addon()
        .cluster_name(cluster)
        .addon_name(name)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteAddon")(e)))
    {
        Ok(_) => Ok(Step::Retry {
            after: Duration::ZERO,
            reason: "deletion requested".into(),
        }),
        Err(e) if is(&e, ErrorClass::NotFound) => Ok(Step::Done(())),
        Err(e) => Err(e),
    }
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

/// What delete knows about EKS clusters (see `delete::Kind`).
#[derive(Debug)]
pub struct EksClusterKind;

#[async_trait]
impl Kind for EksClusterKind {
    fn name(&self) -> &'static str {
        "eks-cluster"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(own_cluster(ctx)
            .await?
            .map(|(c, vpc)| Doomed::new(kind, c.name().unwrap_or_default(), resource_tag(c.tags()), vpc))
            .into_iter()
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_cluster(ctx, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[
            Order::Kind("eks-nodegroup"),
            Order::Kind("eks-fargate-profile"),
            Order::Kind("eks-addon"),
        ]
    }
}

/// What delete knows about EKS managed nodegroups (see `delete::Kind`).
#[derive(Debug)]
pub struct EksNodegroupKind;

#[async_trait]
impl Kind for EksNodegroupKind {
    fn name(&self) -> &'static str {
        "eks-nodegroup"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        let Some((_, vpc)) = own_cluster(ctx).await? else {
            return Ok(Vec::new());
        };
        Ok(ctx
            .inventory
            .nodegroups(&ctx.aws)
            .await?
            .iter()
            .map(|n| {
                Doomed::new(
                    kind,
                    n.nodegroup_name().unwrap_or_default(),
                    resource_tag(n.tags()),
                    vpc,
                )
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_nodegroup(ctx, &ctx.cluster, &item.cloud_id).await
    }
}

/// What delete knows about EKS Fargate profiles (see `delete::Kind`).
#[derive(Debug)]
pub struct EksFargateProfileKind;

#[async_trait]
impl Kind for EksFargateProfileKind {
    fn name(&self) -> &'static str {
        "eks-fargate-profile"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        let Some((_, vpc)) = own_cluster(ctx).await? else {
            return Ok(Vec::new());
        };
        Ok(ctx
            .inventory
            .fargate_profiles(&ctx.aws)
            .await?
            .iter()
            .map(|p| {
                Doomed::new(
                    kind,
                    p.fargate_profile_name().unwrap_or_default(),
                    resource_tag(p.tags()),
                    vpc,
                )
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_fargate_profile(ctx, &ctx.cluster, &item.cloud_id).await
    }
}

/// What delete knows about EKS addons (see `delete::Kind`).
#[derive(Debug)]
pub struct EksAddonKind;

#[async_trait]
impl Kind for EksAddonKind {
    fn name(&self) -> &'static str {
        "eks-addon"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        let Some((_, vpc)) = own_cluster(ctx).await? else {
            return Ok(Vec::new());
        };
        Ok(ctx
            .inventory
            .addons(&ctx.aws)
            .await?
            .iter()
            .map(|a| Doomed::new(kind, a.addon_name().unwrap_or_default(), resource_tag(a.tags()), vpc))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_addon(ctx, &ctx.cluster, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        // What runs the addons' pods goes first.
        &[Order::Kind("eks-nodegroup"), Order::Kind("eks-fargate-profile")]
    }
}

/// What delete knows about the cluster's IAM OIDC providers (see `delete::Kind`).
#[derive(Debug)]
pub struct OidcProviderKind;

#[async_trait]
impl Kind for OidcProviderKind {
    fn name(&self) -> &'static str {
        "iam-oidc-provider"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .oidc_providers(&ctx.aws)
            .await?
            .iter()
            .map(|p| Doomed::new(kind, &p.arn, p.tags.get(tags::RESOURCE).cloned(), None))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_oidc_provider(ctx, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[Order::Kind("eks-cluster")]
    }
}

#[cfg(test)]
mod tests {
    //! What moto cannot show (its EKS objects are ACTIVE at once and it has no addon or upgrade API): waiting
    //! through CREATING, failures with their health issues, deadlines, and the calls addons and upgrades make, in
    //! order. Answers come from aws-smithy-mocks in sequential mode, which fails the test on any unexpected call.
    use super::*;
    use crate::aws::Aws;
    use crate::engine::executor::{self, ExecOptions, Job, Outcome};
    use crate::model::{Taint, Volume};
    use aws_sdk_eks::operation::create_addon::CreateAddonOutput;
    use aws_sdk_eks::operation::create_cluster::CreateClusterOutput;
    use aws_sdk_eks::operation::describe_addon::{DescribeAddonError, DescribeAddonOutput};
    use aws_sdk_eks::operation::describe_addon_versions::DescribeAddonVersionsOutput;
    use aws_sdk_eks::operation::describe_cluster::{DescribeClusterError, DescribeClusterOutput};
    use aws_sdk_eks::operation::describe_nodegroup::DescribeNodegroupOutput;
    use aws_sdk_eks::operation::list_addons::ListAddonsOutput;
    use aws_sdk_eks::operation::list_nodegroups::ListNodegroupsOutput;
    use aws_sdk_eks::operation::update_addon::UpdateAddonOutput;
    use aws_sdk_eks::operation::update_cluster_version::UpdateClusterVersionOutput;
    use aws_sdk_eks::operation::update_nodegroup_version::UpdateNodegroupVersionOutput;
    use aws_sdk_eks::types::{
        AddonInfo, AddonStatus, AddonVersionInfo, Certificate, Compatibility, Issue, NodegroupHealth,
        NodegroupIssueCode, error::ResourceNotFoundException,
    };
    use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
    use std::sync::Arc;
    use std::time::Instant;

    fn ctx(rules: &[&Rule]) -> Ctx {
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::Sequential);
        for r in rules {
            interceptor = interceptor.with_rule(r);
        }
        let client = aws_sdk_eks::Client::from_conf(
            aws_sdk_eks::Config::builder()
                .behavior_version_latest()
                .region(aws_sdk_eks::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_eks::config::Credentials::new("a", "b", None, None, "test"))
                .http_client(create_mock_http_client())
                .interceptor(interceptor)
                .build(),
        );
        Ctx::new(Aws::with_clients(None, Some(client), None), "demo")
    }

    fn kforge_tags() -> HashMap<String, String> {
        HashMap::from([(tags::CLUSTER.to_string(), "demo".to_string())])
    }

    fn cluster_in(status: ClusterStatus, version: &str) -> aws_sdk_eks::types::Cluster {
        aws_sdk_eks::types::Cluster::builder()
            .name("demo")
            .arn("arn:aws:eks:us-east-1:123456789012:cluster/demo")
            .version(version)
            .status(status)
            .endpoint("https://ABC.gr7.us-east-1.eks.amazonaws.com")
            .certificate_authority(Certificate::builder().data("Q0E=").build())
            .resources_vpc_config(
                aws_sdk_eks::types::VpcConfigResponse::builder()
                    .subnet_ids("subnet-1")
                    .endpoint_public_access(true)
                    .endpoint_private_access(true)
                    .public_access_cidrs("0.0.0.0/0")
                    .build(),
            )
            .logging(
                Logging::builder()
                    .cluster_logging(LogSetup::builder().types(LogType::Api).enabled(true).build())
                    .build(),
            )
            .set_tags(Some(kforge_tags()))
            .build()
    }

    fn describe_cluster(status: ClusterStatus, version: &'static str) -> Rule {
        mock!(aws_sdk_eks::Client::describe_cluster).then_output(move || {
            DescribeClusterOutput::builder()
                .cluster(cluster_in(status.clone(), version))
                .build()
        })
    }

    fn eks_cluster() -> EksCluster {
        EksCluster {
            id: CLUSTER_ID.into(),
            name: "demo".into(),
            version: "1.33".into(),
            subnets: vec!["subnet/private-us-east-1a".into()],
            eks: Eks {
                endpoint_public: true,
                endpoint_private: true,
                public_access_cidrs: vec!["0.0.0.0/0".parse().unwrap()],
                logging: vec!["api".into()],
                secrets_encryption_key_arn: None,
                with_oidc: false,
                fargate_profiles: Vec::new(),
            },
            tags: BTreeMap::from([(tags::CLUSTER.to_string(), "demo".to_string())]),
            deps: Vec::new(),
        }
    }

    fn cluster_inputs() -> Inputs {
        Inputs::from_finished(&BTreeMap::from([
            (
                "role/cluster".to_string(),
                Outputs::from([("arn".to_string(), "arn:aws:iam::123456789012:role/c".to_string())]),
            ),
            (
                "subnet/private-us-east-1a".to_string(),
                Outputs::from([("id".to_string(), "subnet-1".to_string())]),
            ),
        ]))
    }

    #[tokio::test]
    async fn a_new_cluster_is_created_once_then_waited_for_until_active() {
        let absent = mock!(aws_sdk_eks::Client::describe_cluster).then_error(|| {
            DescribeClusterError::ResourceNotFoundException(ResourceNotFoundException::builder().message("no").build())
        });
        let create = mock!(aws_sdk_eks::Client::create_cluster)
            .match_requests(|r| {
                r.version() == Some("1.33")
                    && r.role_arn() == Some("arn:aws:iam::123456789012:role/c")
                    && r.resources_vpc_config().is_some_and(|v| v.subnet_ids() == ["subnet-1"])
            })
            .then_output(|| {
                CreateClusterOutput::builder()
                    .cluster(cluster_in(ClusterStatus::Creating, "1.33"))
                    .build()
            });
        let creating = describe_cluster(ClusterStatus::Creating, "1.33");
        let active = describe_cluster(ClusterStatus::Active, "1.33");
        let ctx = ctx(&[&absent, &create, &creating, &active]);
        let c = eks_cluster();
        let desired = c.desired(&cluster_inputs());
        let mut steps = Vec::new();
        for _ in 0..3 {
            steps.push(c.apply(&ctx, &Change::Create, None, &desired).await.unwrap());
        }
        assert!(matches!(&steps[0], Step::Retry { reason, .. } if reason.starts_with("CREATING")));
        assert!(matches!(&steps[1], Step::Retry { reason, .. } if reason == "CREATING"));
        let Some(Step::Done(outputs)) = steps.pop() else {
            panic!("ACTIVE is done")
        };
        assert_eq!(outputs["endpoint"], "https://ABC.gr7.us-east-1.eks.amazonaws.com");
        assert_eq!(outputs["certificateAuthority"], "Q0E=");
        assert_eq!(create.num_calls(), 1, "created once, then only watched");
    }

    #[tokio::test]
    async fn settings_change_in_place_one_eks_update_at_a_time() {
        use aws_sdk_eks::operation::update_cluster_config::UpdateClusterConfigOutput;
        let with = |status: ClusterStatus, cidr: &'static str, logs: &'static [LogType]| {
            mock!(aws_sdk_eks::Client::describe_cluster).then_output(move || {
                let mut c = cluster_in(status.clone(), "1.33");
                c.resources_vpc_config = Some(
                    aws_sdk_eks::types::VpcConfigResponse::builder()
                        .subnet_ids("subnet-1")
                        .endpoint_public_access(true)
                        .endpoint_private_access(true)
                        .public_access_cidrs(cidr)
                        .build(),
                );
                c.logging = Some(
                    Logging::builder()
                        .cluster_logging(LogSetup::builder().set_types(Some(logs.to_vec())).enabled(true).build())
                        .build(),
                );
                DescribeClusterOutput::builder().cluster(c).build()
            })
        };
        let before = with(ClusterStatus::Active, "0.0.0.0/0", &[LogType::Api]);
        let endpoint = mock!(aws_sdk_eks::Client::update_cluster_config)
            .match_requests(|r| {
                r.logging().is_none()
                    && r.resources_vpc_config()
                        .is_some_and(|v| v.public_access_cidrs() == ["203.0.113.0/24"] && v.subnet_ids().is_empty())
            })
            .then_output(|| UpdateClusterConfigOutput::builder().build());
        let updating = with(ClusterStatus::Updating, "203.0.113.0/24", &[LogType::Api]);
        let endpoint_done = with(ClusterStatus::Active, "203.0.113.0/24", &[LogType::Api]);
        let logging = mock!(aws_sdk_eks::Client::update_cluster_config)
            .match_requests(|r| {
                r.resources_vpc_config().is_none()
                    && r.logging().is_some_and(|l| {
                        l.cluster_logging().len() == 1
                            && l.cluster_logging()[0].types() == [LogType::Api, LogType::Audit]
                            && l.cluster_logging()[0].enabled() == Some(true)
                    })
            })
            .then_output(|| UpdateClusterConfigOutput::builder().build());
        let all_done = with(ClusterStatus::Active, "203.0.113.0/24", &[LogType::Api, LogType::Audit]);
        let ctx = ctx(&[&before, &endpoint, &updating, &endpoint_done, &logging, &all_done]);
        let mut c = eks_cluster();
        c.eks.public_access_cidrs = vec!["203.0.113.0/24".parse().unwrap()];
        c.eks.logging = vec!["api".into(), "audit".into()];
        let desired = c.desired(&cluster_inputs());
        let mut reasons = Vec::new();
        loop {
            match c
                .apply(&ctx, &Change::Update(Vec::new()), None, &desired)
                .await
                .unwrap()
            {
                Step::Retry { reason, .. } => reasons.push(reason),
                Step::Done(_) => break,
                Step::Blocked { reason } => panic!("{reason}"),
            }
        }
        assert_eq!(reasons, ["updating endpoint access", "UPDATING", "updating logging"]);
        assert_eq!((endpoint.num_calls(), logging.num_calls()), (1, 1));
    }

    #[test]
    fn version_changes_point_at_upgrade_and_key_removal_is_refused() {
        let c = eks_cluster();
        let observed = |version: &str, key: &str| Observed {
            id: "demo".into(),
            attrs: BTreeMap::from([("version", version.to_string()), ("secretsKey", key.to_string())]),
            outputs: Outputs::new(),
        };
        let desired = c.desired(&cluster_inputs());
        let e = c.diff(Some(&observed("1.32", "")), &desired).unwrap_err().to_string();
        assert!(e.contains("hint: run `kforge upgrade cluster demo --to 1.33`"), "{e}");
        let e = c.diff(Some(&observed("1.31", "")), &desired).unwrap_err().to_string();
        assert!(
            e.contains("one minor version at a time") && e.contains("--to 1.32"),
            "{e}"
        );
        let e = c.diff(Some(&observed("1.34", "")), &desired).unwrap_err().to_string();
        assert!(e.contains("EKS cannot downgrade"), "{e}");
        let key = "arn:aws:kms:us-east-1:123456789012:key/abc";
        let e = c.diff(Some(&observed("1.33", key)), &desired).unwrap_err().to_string();
        assert!(e.contains("cannot remove or replace a secrets encryption key"), "{e}");
    }

    /// The engine's executor drives the cluster's converge step; the run's deadline ends the wait.
    struct ConvergeJob {
        cluster: EksCluster,
        ctx: Ctx,
        deps: Vec<String>,
    }

    #[async_trait]
    impl Job<Outputs> for ConvergeJob {
        fn id(&self) -> &str {
            &self.cluster.id
        }
        fn deps(&self) -> &[String] {
            &self.deps
        }
        fn deadline(&self) -> Duration {
            self.cluster.deadline()
        }
        fn action(&self) -> String {
            "create".into()
        }
        async fn step(&self, _: &BTreeMap<String, Outputs>) -> anyhow::Result<Step<Outputs>> {
            let desired = self.cluster.desired(&cluster_inputs());
            self.cluster.apply(&self.ctx, &Change::Create, None, &desired).await
        }
    }

    #[tokio::test]
    async fn a_cluster_still_creating_at_the_deadline_is_a_clear_timeout() {
        let creating = mock!(aws_sdk_eks::Client::describe_cluster)
            .sequence()
            .output(|| {
                DescribeClusterOutput::builder()
                    .cluster(cluster_in(ClusterStatus::Creating, "1.33"))
                    .build()
            })
            .repeatedly()
            .build();
        let job = ConvergeJob {
            cluster: eks_cluster(),
            ctx: ctx(&[&creating]),
            deps: Vec::new(),
        };
        let opts = ExecOptions {
            overall_deadline: Some(Instant::now() + Duration::from_secs(1)),
            ..ExecOptions::default()
        };
        let jobs: Vec<Arc<dyn Job<Outputs>>> = vec![Arc::new(job)];
        let mut out = executor::run(jobs, &opts, &crate::progress::Silent).await.unwrap();
        let Some(Outcome::Failed(e)) = out.remove(CLUSTER_ID) else {
            panic!("the wait fails at the deadline")
        };
        let msg = format!("{e:#}");
        assert!(msg.starts_with("eks-cluster: gave up after"), "{msg}");
        assert!(msg.contains("CREATING"), "{msg}");
        assert!(
            msg.contains("hint: the resource may still be converging; re-run"),
            "{msg}"
        );
    }

    fn nodegroup() -> ManagedNodegroup {
        ManagedNodegroup {
            id: "nodegroup/gpu".into(),
            cluster: "demo".into(),
            kubernetes_version: "1.33".into(),
            group: NodeGroup {
                name: "gpu".into(),
                instance_types: vec!["g5.xlarge".into()],
                min_size: 0,
                max_size: 2,
                desired_size: 1,
                spot: true,
                gpu: true,
                labels: BTreeMap::new(),
                taints: vec![Taint {
                    key: "nvidia.com/gpu".into(),
                    value: None,
                    effect: TaintEffect::NoSchedule,
                }],
                volume: Volume {
                    size_gib: 80,
                    kind: "gp3".into(),
                    encrypted: true,
                    iops: None,
                    throughput: None,
                },
                subnets: SubnetType::Private,
            },
            subnets: Vec::new(),
            launch_template: "launch-template/gpu".into(),
            tags: BTreeMap::new(),
            deps: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_failed_nodegroup_reports_its_health_issues() {
        let failed = mock!(aws_sdk_eks::Client::describe_nodegroup).then_output(|| {
            DescribeNodegroupOutput::builder()
                .nodegroup(
                    aws_sdk_eks::types::Nodegroup::builder()
                        .nodegroup_name("gpu")
                        .status(NodegroupStatus::CreateFailed)
                        .health(
                            NodegroupHealth::builder()
                                .issues(
                                    Issue::builder()
                                        .code(NodegroupIssueCode::AsgInstanceLaunchFailures)
                                        .message("Could not launch Spot Instances. InsufficientInstanceCapacity")
                                        .resource_ids("eks-gpu-1234")
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let ctx = ctx(&[&failed]);
        let ng = nodegroup();
        let err = ng
            .apply(&ctx, &Change::Create, None, &Desired::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nodegroup/gpu (nodegroup gpu of demo) is CREATE_FAILED"),
            "{err}"
        );
        assert!(
            err.contains(
                "AsgInstanceLaunchFailures: Could not launch Spot Instances. InsufficientInstanceCapacity (eks-gpu-1234)"
            ),
            "{err}"
        );
        assert!(err.contains("hint:"), "{err}");
    }

    #[test]
    fn gpu_and_graviton_groups_get_their_ami_types() {
        let mut g = nodegroup().group;
        assert_eq!(ami_type(&g), AmiTypes::Al2023X8664Nvidia);
        g.gpu = false;
        g.instance_types = vec!["m7g.large".into(), "c7gn.xlarge".into()];
        assert_eq!(ami_type(&g), AmiTypes::Al2023Arm64Standard);
        g.instance_types = vec!["m6i.large".into()];
        assert_eq!(ami_type(&g), AmiTypes::Al2023X8664Standard);
        g.gpu = true;
        g.instance_types = vec!["g5g.xlarge".into()];
        assert_eq!(
            ami_type(&g),
            AmiTypes::Al2023X8664Nvidia,
            "g5g is a GPU family, not a Graviton suffix"
        );
    }

    fn addon(version: Option<&str>) -> EksAddon {
        EksAddon {
            id: "addon/coredns".into(),
            cluster: "demo".into(),
            kubernetes_version: "1.33".into(),
            addon: Addon {
                name: "coredns".into(),
                version: version.map(str::to_string),
            },
            resolved_version: OnceCell::new(),
            tags: BTreeMap::new(),
            deps: Vec::new(),
        }
    }

    fn describe_addon(status: AddonStatus, version: &'static str) -> Rule {
        mock!(aws_sdk_eks::Client::describe_addon).then_output(move || {
            DescribeAddonOutput::builder()
                .addon(
                    aws_sdk_eks::types::Addon::builder()
                        .addon_name("coredns")
                        .addon_version(version)
                        .status(status.clone())
                        .build(),
                )
                .build()
        })
    }

    #[tokio::test]
    async fn addons_are_created_then_updated_with_the_right_calls() {
        let versions = mock!(aws_sdk_eks::Client::describe_addon_versions)
            .match_requests(|r| r.addon_name() == Some("coredns") && r.kubernetes_version() == Some("1.33"))
            .then_output(|| {
                let compat = |default| {
                    Compatibility::builder()
                        .cluster_version("1.33")
                        .default_version(default)
                        .build()
                };
                DescribeAddonVersionsOutput::builder()
                    .addons(
                        AddonInfo::builder()
                            .addon_name("coredns")
                            .addon_versions(
                                AddonVersionInfo::builder()
                                    .addon_version("v1.12.1-eksbuild.2")
                                    .compatibilities(compat(false))
                                    .build(),
                            )
                            .addon_versions(
                                AddonVersionInfo::builder()
                                    .addon_version("v1.11.4-eksbuild.14")
                                    .compatibilities(compat(true))
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            });
        let absent = mock!(aws_sdk_eks::Client::describe_addon).then_error(|| {
            DescribeAddonError::ResourceNotFoundException(ResourceNotFoundException::builder().message("no").build())
        });
        let create = mock!(aws_sdk_eks::Client::create_addon)
            .match_requests(|r| {
                r.addon_name() == Some("coredns")
                    && r.addon_version() == Some("v1.11.4-eksbuild.14")
                    && r.resolve_conflicts() == Some(&ResolveConflicts::Overwrite)
            })
            .then_output(|| CreateAddonOutput::builder().build());
        let creating = describe_addon(AddonStatus::Creating, "v1.11.4-eksbuild.14");
        let active = describe_addon(AddonStatus::Active, "v1.11.4-eksbuild.14");
        // Then the spec pins a newer version: one UpdateAddon, then wait.
        let before = describe_addon(AddonStatus::Active, "v1.11.4-eksbuild.14");
        let update = mock!(aws_sdk_eks::Client::update_addon)
            .match_requests(|r| r.addon_version() == Some("v1.12.1-eksbuild.2"))
            .then_output(|| UpdateAddonOutput::builder().build());
        let updated = describe_addon(AddonStatus::Active, "v1.12.1-eksbuild.2");
        let ctx = ctx(&[
            &versions, &absent, &create, &creating, &active, &before, &update, &updated,
        ]);

        let default = addon(None);
        default
            .resolved_version
            .get_or_try_init(|| default_addon_version(&ctx, "coredns", "1.33"))
            .await
            .unwrap();
        let desired = default.desired(&Inputs::default());
        assert_eq!(
            desired.value("version").unwrap(),
            "v1.11.4-eksbuild.14",
            "EKS's default, not the newest"
        );
        let mut results = Vec::new();
        for _ in 0..3 {
            results.push(default.apply(&ctx, &Change::Create, None, &desired).await.unwrap());
        }
        assert!(matches!(&results[0], Step::Retry { reason, .. } if reason == "CREATING"));
        assert!(matches!(&results[1], Step::Retry { reason, .. } if reason == "CREATING"));
        assert!(matches!(&results[2], Step::Done(o) if o["version"] == "v1.11.4-eksbuild.14"));

        let pinned = addon(Some("v1.12.1-eksbuild.2"));
        let desired = pinned.desired(&Inputs::default());
        let first = pinned.apply(&ctx, &Change::Create, None, &desired).await.unwrap();
        assert!(matches!(first, Step::Retry { ref reason, .. } if reason == "updating to v1.12.1-eksbuild.2"));
        let done = pinned.apply(&ctx, &Change::Create, None, &desired).await.unwrap();
        assert!(matches!(done, Step::Done(ref o) if o["version"] == "v1.12.1-eksbuild.2"));
        assert_eq!((create.num_calls(), update.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn upgrade_goes_control_plane_then_nodegroups_then_addons() {
        use crate::providers::eks_day2::{UpgradeStep, Waiting, upgrade};
        let start = describe_cluster(ClusterStatus::Active, "1.33");
        let update_cluster = mock!(aws_sdk_eks::Client::update_cluster_version)
            .match_requests(|r| r.name() == Some("demo") && r.version() == Some("1.34"))
            .then_output(|| UpdateClusterVersionOutput::builder().build());
        let updating = describe_cluster(ClusterStatus::Updating, "1.33");
        let upgraded = describe_cluster(ClusterStatus::Active, "1.34");
        // The nodegroup listing (the inventory checks the cluster is kforge's first).
        let inventory_cluster = describe_cluster(ClusterStatus::Active, "1.34");
        let list = mock!(aws_sdk_eks::Client::list_nodegroups)
            .then_output(|| ListNodegroupsOutput::builder().nodegroups("workers").build());
        let ng = |status: NodegroupStatus, version: &'static str| {
            mock!(aws_sdk_eks::Client::describe_nodegroup).then_output(move || {
                DescribeNodegroupOutput::builder()
                    .nodegroup(
                        aws_sdk_eks::types::Nodegroup::builder()
                            .nodegroup_name("workers")
                            .status(status.clone())
                            .version(version)
                            .build(),
                    )
                    .build()
            })
        };
        let ng_before = ng(NodegroupStatus::Active, "1.33");
        let update_ng = mock!(aws_sdk_eks::Client::update_nodegroup_version)
            .match_requests(|r| r.nodegroup_name() == Some("workers") && r.version() == Some("1.34"))
            .then_output(|| UpdateNodegroupVersionOutput::builder().build());
        let ng_updating = ng(NodegroupStatus::Updating, "1.33");
        let ng_done = ng(NodegroupStatus::Active, "1.34");
        let addons = mock!(aws_sdk_eks::Client::list_addons)
            .then_output(|| ListAddonsOutput::builder().addons("coredns").build());
        let addon_before = describe_addon(AddonStatus::Active, "v1.11.4-eksbuild.14");
        let versions = mock!(aws_sdk_eks::Client::describe_addon_versions)
            .match_requests(|r| r.kubernetes_version() == Some("1.34"))
            .then_output(|| {
                DescribeAddonVersionsOutput::builder()
                    .addons(
                        AddonInfo::builder()
                            .addon_versions(
                                AddonVersionInfo::builder()
                                    .addon_version("v1.12.1-eksbuild.2")
                                    .compatibilities(
                                        Compatibility::builder()
                                            .cluster_version("1.34")
                                            .default_version(true)
                                            .build(),
                                    )
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            });
        let update_addon = mock!(aws_sdk_eks::Client::update_addon)
            .match_requests(|r| r.addon_version() == Some("v1.12.1-eksbuild.2"))
            .then_output(|| UpdateAddonOutput::builder().build());
        let addon_done = describe_addon(AddonStatus::Active, "v1.12.1-eksbuild.2");
        let ctx = ctx(&[
            &start,
            &update_cluster,
            &updating,
            &upgraded,
            &inventory_cluster,
            &list,
            &ng_before,
            &update_ng,
            &ng_updating,
            &ng_done,
            &addons,
            &addon_before,
            &versions,
            &update_addon,
            &addon_done,
        ]);
        let waiting = Waiting {
            poll: Duration::from_millis(1),
            deadline: Instant::now() + Duration::from_secs(30),
        };
        let steps = upgrade(&ctx, "1.34", false, waiting, &crate::progress::Silent)
            .await
            .unwrap();
        let step = |t: &str, f: &str, to: &str| UpgradeStep {
            target: t.into(),
            from: f.into(),
            to: to.into(),
            result: "upgraded".into(),
        };
        assert_eq!(
            steps,
            [
                step("control plane demo", "1.33", "1.34"),
                step("nodegroup workers", "1.33", "1.34"),
                step("addon coredns", "v1.11.4-eksbuild.14", "v1.12.1-eksbuild.2"),
            ]
        );
        for rule in [&update_cluster, &update_ng, &update_addon, &addon_done] {
            assert_eq!(rule.num_calls(), 1);
        }
    }
}
