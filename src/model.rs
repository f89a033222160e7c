//! The validated cluster: what a [`ClusterSpec`] means once every default is applied and every rule checked.
//!
//! Conversion happens in one place ([`Cluster::from_spec`]) and reports *all* semantic problems at once, each with
//! its field path and a hint. Past this boundary nothing re-checks or re-defaults: providers trust a `Cluster`.
//! [`Cluster::to_spec`] renders the fully defaulted spec back (for `--dry-run -o yaml`); parsing that output
//! yields the same `Cluster`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::assets::AssetOverride;
use crate::spec::{
    self, AddonSpec, BastionSpec, ClusterBody, ClusterSpec, ControlPlaneSpec, EksEndpointSpec, EksSpec,
    FargateProfileSpec, FargateSelectorSpec, HostRole, HostSpec, IamSpec, Metadata, NatGateways, NetworkSpec,
    NodeGroupSpec, Provider, SshSpec, SubnetSpec, SubnetType, TaintEffect, TaintSpec, Topology, VolumeSpec,
};

/// Kubernetes minor versions kforge can create; the last one is the default.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.30", "1.31", "1.32", "1.33", "1.34"];
/// The version of a spec that names none (EKS offers it, and kforge has the self-built manifest of it).
pub const DEFAULT_VERSION: &str = "1.34";
pub const DEFAULT_VPC_CIDR: &str = "10.0.0.0/16";
pub const DEFAULT_INSTANCE_TYPE: &str = "m5.large";
pub const DEFAULT_MASTER_INSTANCE_TYPE: &str = "t3.medium";
const EKS_ADDONS: &[&str] = &[
    "vpc-cni",
    "coredns",
    "kube-proxy",
    "aws-ebs-csi-driver",
    "eks-pod-identity-agent",
];
/// EKS control-plane log types, in the order EKS lists them.
pub const EKS_LOG_TYPES: &[&str] = &["api", "audit", "authenticator", "controllerManager", "scheduler"];
/// The addons a self-built cluster's spec may list (templates/addons/; `bootstrap::addons` renders each).
pub const SELF_BUILT_ADDONS: &[&str] = &["flannel", "coredns", "metrics-server", "aws-ebs-csi-driver"];
/// The AWS cloud controller manager: applied on every provider ec2 cluster, never listed in a spec.
pub const CLOUD_CONTROLLER: &str = "aws-cloud-controller-manager";
/// Self-built addons that need AWS (provider ec2 only).
const EC2_ONLY_ADDONS: &[&str] = &["aws-ebs-csi-driver"];
const VOLUME_TYPES: &[&str] = &["gp3", "gp2", "io1", "io2"];
/// AWS's 50 tags per resource, less kforge's own (cluster, resource, managed-by, kubernetes.io/cluster, Name,
/// and a subnet's role).
pub const MAX_USER_TAGS: usize = 44;
/// kforge's bound on a group's sizes (every AWS quota is lower); it also keeps them within the i32 AWS takes.
pub const MAX_GROUP_SIZE: u32 = 1000;

/// A number the model validated into AWS's range, as the i32 the SDK takes.
pub fn aws_i32(n: u32) -> i32 {
    i32::try_from(n).expect("the model bounds every number it hands to AWS")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub provider: Provider,
    /// Always set for eks/ec2; for hosts only when given.
    pub region: Option<String>,
    pub kubernetes_version: String,
    /// `None` for provider hosts.
    pub network: Option<Network>,
    /// Provider ec2 only.
    pub control_plane: Option<ControlPlane>,
    pub node_groups: Vec<NodeGroup>,
    pub ssh: Ssh,
    pub hosts: Vec<Host>,
    pub addons: Vec<Addon>,
    pub iam: Iam,
    /// Provider eks only.
    pub eks: Option<Eks>,
    /// Provider ec2 only.
    pub image: Option<MachineImage>,
    pub tags: BTreeMap<String, String>,
    /// Self-built clusters' downloads.
    pub assets: Assets,
    /// Self-built clusters' kubelet settings.
    pub kubelet: Kubelet,
}

/// `spec.kubelet` with its defaults applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kubelet {
    /// The kubelet refuses cgroup v1 hosts (1.35's default).
    pub fail_cgroup_v1: bool,
    /// Whether the spec said so (a round trip writes back only what the spec set).
    pub fail_cgroup_v1_set: bool,
}

/// Where a self-built cluster's hosts get their files (see `crate::assets`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assets {
    pub mirror: Option<String>,
    pub files: BTreeMap<String, AssetOverride>,
    /// The registry addon and sandbox images are pulled from instead of their upstream ones.
    pub image_registry: Option<String>,
}

/// The machine image of provider ec2's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineImage {
    /// Amazon Linux 2023, the newest AMI from AWS' public SSM parameter.
    Al2023,
    /// Ubuntu 24.04 LTS, the newest AMI from Canonical's public SSM parameter.
    Ubuntu,
    /// An AMI id given as is.
    Id(String),
}

impl MachineImage {
    /// How the spec writes it.
    pub fn as_spec(&self) -> String {
        match self {
            MachineImage::Al2023 => "al2023".into(),
            MachineImage::Ubuntu => "ubuntu".into(),
            MachineImage::Id(id) => id.clone(),
        }
    }

    /// The login user the image's cloud-init creates.
    pub fn default_user(&self) -> &'static str {
        match self {
            MachineImage::Ubuntu => "ubuntu",
            MachineImage::Al2023 | MachineImage::Id(_) => "ec2-user",
        }
    }
}

/// EKS control-plane settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Eks {
    pub endpoint_public: bool,
    pub endpoint_private: bool,
    pub public_access_cidrs: Vec<Ipv4Net>,
    /// Enabled log types, in [`EKS_LOG_TYPES`] order.
    pub logging: Vec<String>,
    pub secrets_encryption_key_arn: Option<String>,
    pub with_oidc: bool,
    pub fargate_profiles: Vec<FargateProfile>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FargateProfile {
    pub name: String,
    pub selectors: Vec<FargateSelector>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FargateSelector {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// Existing IAM roles to use instead of creating them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Iam {
    pub cluster_role_arn: Option<String>,
    pub node_role_arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub vpc: VpcSource,
    pub zones: Vec<String>,
    pub topology: Topology,
    pub nat_gateways: NatGateways,
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VpcSource {
    Create { cidr: Ipv4Net },
    Existing { id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub zone: String,
    pub kind: SubnetType,
    pub source: SubnetSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubnetSource {
    Create { cidr: Ipv4Net },
    Existing { id: String },
}

impl Subnet {
    /// Logical name, unique in the cluster: `public-us-east-1a`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.kind, self.zone)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControlPlane {
    pub count: u32,
    pub instance_type: String,
    pub api_allowed_cidrs: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeGroup {
    pub name: String,
    pub instance_types: Vec<String>,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_size: u32,
    pub spot: bool,
    pub gpu: bool,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub volume: Volume,
    pub subnets: SubnetType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

/// As kubectl and the kubelet's `--register-with-taints` write it: `key[=value]:Effect`.
impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}:{:?}", self.key, self.effect),
            None => write!(f, "{}:{:?}", self.key, self.effect),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub size_gib: u32,
    pub kind: String,
    pub encrypted: bool,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ssh {
    /// The OpenSSH public key line, read from `publicKeyFile` when given that way.
    pub public_key: Option<String>,
    /// As written in the spec, so the defaulted spec round-trips.
    pub public_key_file: Option<String>,
    pub allowed_cidrs: Vec<Ipv4Net>,
    pub bastion: Option<Bastion>,
    /// The private key to log in with (resolved against the spec file's directory); `None`: the ssh-agent's keys.
    pub identity_file: Option<PathBuf>,
    /// `identityFile` as written, so the defaulted spec round-trips.
    pub identity_file_as_written: Option<String>,
    /// As written; see [`Cluster::ssh_user`] for the effective one.
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bastion {
    pub instance_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Resolved against the spec file's directory.
    pub identity_file: PathBuf,
    /// As written, for rendering the spec back.
    pub identity_file_as_written: String,
    pub role: HostRole,
    pub host_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Addon {
    pub name: String,
    pub version: Option<String>,
}

/// One semantic problem in a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
    pub hint: String,
}

/// Every semantic problem found in a spec; `Display` is the user-facing report.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ValidationError {
    pub origin: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} problem{} in the spec",
            self.origin,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {}: {}\n    hint: {}", e.path, e.message, e.hint)?;
        }
        Ok(())
    }
}

/// Values that come from outside the spec file.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `--region`, `AWS_REGION` or `AWS_DEFAULT_REGION`, used when the spec has none.
    pub fallback_region: Option<String>,
    /// Directory that relative paths in the spec are resolved against.
    pub base_dir: PathBuf,
    /// Shown in error messages.
    pub origin: String,
}

struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }

    fn cidr(&mut self, path: &str, text: &str) -> Option<Ipv4Net> {
        match text.parse::<Ipv4Net>() {
            Ok(net) if net.trunc() == net => Some(net),
            Ok(net) => {
                self.err(
                    path,
                    format!("`{text}` has host bits set"),
                    format!("use the network address `{}`", net.trunc()),
                );
                None
            }
            Err(_) => {
                self.err(
                    path,
                    format!("`{text}` is not an IPv4 CIDR"),
                    "write it as ADDRESS/PREFIX, e.g. 10.0.0.0/16",
                );
                None
            }
        }
    }
}

/// The AWS name of what kforge makes for node group `group` of `cluster` (its launch template, its Auto Scaling
/// group): `kforge-CLUSTER.GROUP`. Both are DNS labels, which hold no dot, so two clusters never get one name
/// (with a dash, `aa` + `bb-cc` and `aa-bb` + `cc` did). Resources are found by their tags, not by name: what an
/// earlier version created as `kforge-CLUSTER-GROUP` keeps its name.
pub fn group_resource_name(cluster: &str, group: &str) -> String {
    format!("kforge-{cluster}.{group}")
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub(crate) fn is_region(s: &str) -> bool {
    // e.g. us-east-1, eu-central-2, us-gov-west-1, ap-southeast-5
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// A zone belongs to its region when it is the region name plus one letter (`us-east-1a`) or a local zone
/// (`us-east-1-bos-1a`).
fn zone_in_region(zone: &str, region: &str) -> bool {
    let Some(rest) = zone.strip_prefix(region) else {
        return false;
    };
    let letter = |s: &str| s.len() == 1 && s.chars().all(|c| c.is_ascii_lowercase());
    letter(rest)
        || rest.strip_prefix('-').is_some_and(|local| {
            local.len() > 2 && local.ends_with(|c: char| c.is_ascii_lowercase()) && local.contains('-')
        })
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.')
                .all(|l| is_dns_label(l, 63) || l.chars().all(|c| c.is_ascii_digit()))
    });
    name_ok && prefix_ok
}

fn is_public_key(k: &str) -> bool {
    let mut parts = k.split_whitespace();
    let algo_ok = parts
        .next()
        .is_some_and(|a| a == "ssh-ed25519" || a == "ssh-rsa" || a.starts_with("ecdsa-sha2-"));
    algo_ok && parts.next().is_some_and(|b| b.len() > 16)
}

fn is_gpu_type(t: &str) -> bool {
    let family = t.split('.').next().unwrap_or("");
    let mut chars = family.chars();
    matches!(chars.next(), Some('g' | 'p')) && chars.next().is_some_and(|c| c.is_ascii_digit())
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Cluster {
    /// Applies defaults and checks every rule, reporting all problems at once.
    pub fn from_spec(spec: &ClusterSpec, ctx: &Context) -> Result<Cluster, ValidationError> {
        let mut c = Checker { errors: Vec::new() };
        let body = &spec.spec;

        if spec.api_version != spec::API_VERSION {
            c.err(
                "apiVersion",
                format!("`{}` is not supported", spec.api_version),
                format!("use `{}`", spec::API_VERSION),
            );
        }
        if spec.kind != "Cluster" {
            c.err(
                "kind",
                format!("`{}` is not `Cluster`", spec.kind),
                "use `kind: Cluster`",
            );
        }
        let name = spec.metadata.name.clone();
        if !is_dns_label(&name, 40) {
            c.err(
                "metadata.name",
                format!("`{name}` is not a valid cluster name"),
                "use 1-40 lowercase letters, digits and '-', starting with a letter and not ending with '-'",
            );
        }

        let provider = body.provider;
        let cloud = provider != Provider::Hosts;
        let region = body.region.clone().or_else(|| ctx.fallback_region.clone());
        match &region {
            Some(r) if !is_region(r) => c.err(
                "spec.region",
                format!("`{r}` is not an AWS region name"),
                "use a region such as us-east-1 or eu-west-2",
            ),
            None if cloud => c.err(
                "spec.region",
                "no region is set",
                "set spec.region, pass --region, or export AWS_REGION",
            ),
            _ => {}
        }

        let kubernetes_version = body
            .kubernetes_version
            .clone()
            .unwrap_or_else(|| DEFAULT_VERSION.to_string());
        // EKS runs what AWS offers; a self-built cluster what kforge has an asset manifest (pinned binaries) for.
        let supported: Vec<&str> = if provider == Provider::Eks {
            SUPPORTED_VERSIONS.to_vec()
        } else {
            crate::assets::known_versions()
        };
        if !supported.contains(&kubernetes_version.as_str()) {
            c.err(
                "spec.kubernetesVersion",
                format!("version `{kubernetes_version}` is not supported with provider {provider}"),
                format!("use one of {}", supported.join(", ")),
            );
        }

        let network = if cloud {
            let region = region.clone().unwrap_or_default();
            Some(network(&mut c, body.network.as_ref(), &region, provider))
        } else {
            if body.network.is_some() {
                c.err(
                    "spec.network",
                    "provider hosts uses existing machines and has no network",
                    "remove spec.network",
                );
            }
            None
        };

        let control_plane = match (provider, &body.control_plane) {
            (Provider::Ec2, cp) => {
                let count = cp.as_ref().and_then(|cp| cp.count).unwrap_or(1);
                if ![1, 3, 5].contains(&count) {
                    c.err(
                        "spec.controlPlane.count",
                        format!("{count} masters cannot keep an etcd quorum well"),
                        "use 1, 3 or 5 (an odd number keeps etcd available through failures)",
                    );
                }
                if let Some(net) = &network
                    && (net.zones.len() as u32) < count
                    && count > 1
                {
                    c.err(
                        "spec.network.zones",
                        format!(
                            "{count} masters need {count} zones for HA, the spec has {}",
                            net.zones.len()
                        ),
                        "list as many zones as masters, or lower spec.controlPlane.count",
                    );
                }
                let mut api_allowed_cidrs = Vec::new();
                match cp.as_ref().and_then(|cp| cp.api_allowed_cidrs.as_ref()) {
                    None => api_allowed_cidrs.push(Ipv4Net::default()),
                    Some(list) => {
                        for (i, text) in list.iter().enumerate() {
                            if let Some(net) = c.cidr(&format!("spec.controlPlane.apiAllowedCidrs[{i}]"), text) {
                                api_allowed_cidrs.push(net);
                            }
                        }
                    }
                }
                Some(ControlPlane {
                    count,
                    instance_type: cp
                        .as_ref()
                        .and_then(|cp| cp.instance_type.clone())
                        .unwrap_or_else(|| DEFAULT_MASTER_INSTANCE_TYPE.into()),
                    api_allowed_cidrs,
                })
            }
            (_, Some(_)) => {
                let why = if provider == Provider::Eks {
                    "EKS runs the control plane for you"
                } else {
                    "with provider hosts, masters are the hosts with role master"
                };
                c.err(
                    "spec.controlPlane",
                    format!("not used with provider {provider}: {why}"),
                    "remove spec.controlPlane",
                );
                None
            }
            (_, None) => None,
        };

        let topology = network.as_ref().map(|n| n.topology).unwrap_or(Topology::Public);
        let node_groups = node_groups(&mut c, body.node_groups.as_deref(), provider, topology);

        let ssh = ssh(&mut c, body.ssh.as_ref(), ctx, provider);

        let hosts = hosts(&mut c, body.hosts.as_deref(), ctx, provider);

        let addons = addons(&mut c, body.addons.as_deref(), provider);

        let iam = iam(&mut c, body.iam.as_ref(), provider);

        let eks = eks(&mut c, body.eks.as_ref(), provider, network.as_ref());

        let image = image(&mut c, body.image.as_deref(), provider);

        let assets = assets(&mut c, body.assets.as_ref(), provider, &kubernetes_version);
        let kubelet = kubelet(&mut c, body.kubelet.as_ref(), provider, &kubernetes_version);
        if provider == Provider::Ec2
            && ssh.public_key.is_none()
            && body.ssh.as_ref().is_none_or(|s| s.public_key_file.is_none())
        {
            c.err(
                "spec.ssh.publicKey",
                "provider ec2 needs an SSH public key to put on its machines",
                "set spec.ssh.publicKeyFile to your key's .pub file (make one with `ssh-keygen -t ed25519 -f ~/.ssh/kforge`)",
            );
        }

        let tags = body.tags.clone().unwrap_or_default();
        if tags.len() > MAX_USER_TAGS {
            c.err(
                "spec.tags",
                format!(
                    "{} tags: AWS allows 50 per resource and kforge sets 6 of its own",
                    tags.len()
                ),
                format!("keep at most {MAX_USER_TAGS}"),
            );
        }
        for (k, v) in &tags {
            let path = format!("spec.tags.{k}");
            if k.is_empty() || k.len() > 128 || v.len() > 256 {
                c.err(
                    &path,
                    "AWS tags have keys of 1-128 and values of up to 256 characters",
                    "shorten the tag",
                );
            }
            if k.starts_with("aws:") || k.starts_with("kforge.dev/") || k.starts_with("kubernetes.io/cluster/") {
                c.err(
                    &path,
                    format!("`{k}` is a reserved tag prefix"),
                    "kforge sets these tags itself; choose another key",
                );
            }
        }

        if !c.errors.is_empty() {
            return Err(ValidationError {
                origin: ctx.origin.clone(),
                errors: c.errors,
            });
        }
        Ok(Cluster {
            name,
            provider,
            region,
            kubernetes_version,
            network,
            control_plane,
            node_groups,
            ssh,
            hosts,
            addons,
            iam,
            eks,
            image,
            tags,
            assets,
            kubelet,
        })
    }

    /// The user kforge logs in as on provider ec2's machines.
    pub fn ssh_user(&self) -> String {
        self.ssh.user.clone().unwrap_or_else(|| {
            self.image
                .as_ref()
                .map_or("ec2-user", MachineImage::default_user)
                .to_string()
        })
    }

    /// The AWS region; only `None` for provider hosts without one.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// Renders the fully defaulted spec.
    pub fn to_spec(&self) -> ClusterSpec {
        let network = self.network.as_ref().map(|n| NetworkSpec {
            vpc_cidr: match &n.vpc {
                VpcSource::Create { cidr } => Some(cidr.to_string()),
                VpcSource::Existing { .. } => None,
            },
            vpc_id: match &n.vpc {
                VpcSource::Existing { id } => Some(id.clone()),
                VpcSource::Create { .. } => None,
            },
            zones: Some(n.zones.clone()),
            topology: Some(n.topology),
            nat_gateways: Some(n.nat_gateways),
            subnets: Some(
                n.subnets
                    .iter()
                    .map(|s| SubnetSpec {
                        zone: s.zone.clone(),
                        kind: s.kind,
                        cidr: match &s.source {
                            SubnetSource::Create { cidr } => Some(cidr.to_string()),
                            SubnetSource::Existing { .. } => None,
                        },
                        id: match &s.source {
                            SubnetSource::Existing { id } => Some(id.clone()),
                            SubnetSource::Create { .. } => None,
                        },
                    })
                    .collect(),
            ),
        });
        ClusterSpec {
            api_version: spec::API_VERSION.into(),
            kind: "Cluster".into(),
            metadata: Metadata {
                name: self.name.clone(),
            },
            spec: ClusterBody {
                provider: self.provider,
                region: self.region.clone(),
                kubernetes_version: Some(self.kubernetes_version.clone()),
                network,
                control_plane: self.control_plane.as_ref().map(|cp| ControlPlaneSpec {
                    count: Some(cp.count),
                    instance_type: Some(cp.instance_type.clone()),
                    api_allowed_cidrs: Some(cp.api_allowed_cidrs.iter().map(|c| c.to_string()).collect()),
                }),
                node_groups: (self.provider != Provider::Hosts).then(|| {
                    self.node_groups
                        .iter()
                        .map(|g| NodeGroupSpec {
                            name: g.name.clone(),
                            instance_type: None,
                            instance_types: Some(g.instance_types.clone()),
                            min_size: Some(g.min_size),
                            max_size: Some(g.max_size),
                            desired_size: Some(g.desired_size),
                            spot: Some(g.spot),
                            gpu: Some(g.gpu),
                            labels: Some(g.labels.clone()),
                            taints: Some(
                                g.taints
                                    .iter()
                                    .map(|t| TaintSpec {
                                        key: t.key.clone(),
                                        value: t.value.clone(),
                                        effect: t.effect,
                                    })
                                    .collect(),
                            ),
                            volume: Some(VolumeSpec {
                                size: Some(g.volume.size_gib),
                                kind: Some(g.volume.kind.clone()),
                                encrypted: Some(g.volume.encrypted),
                                iops: g.volume.iops,
                                throughput: g.volume.throughput,
                            }),
                            subnets: Some(g.subnets),
                        })
                        .collect()
                }),
                ssh: Some(SshSpec {
                    public_key: if self.ssh.public_key_file.is_some() {
                        None
                    } else {
                        self.ssh.public_key.clone()
                    },
                    public_key_file: self.ssh.public_key_file.clone(),
                    identity_file: self.ssh.identity_file_as_written.clone(),
                    user: self.ssh.user.clone(),
                    allowed_cidrs: Some(self.ssh.allowed_cidrs.iter().map(|c| c.to_string()).collect()),
                    bastion: Some(BastionSpec {
                        enabled: Some(self.ssh.bastion.is_some()),
                        instance_type: self.ssh.bastion.as_ref().map(|b| b.instance_type.clone()),
                    }),
                }),
                hosts: (self.provider == Provider::Hosts).then(|| {
                    self.hosts
                        .iter()
                        .map(|h| HostSpec {
                            name: h.name.clone(),
                            address: h.address.clone(),
                            port: Some(h.port),
                            user: Some(h.user.clone()),
                            identity_file: h.identity_file_as_written.clone(),
                            role: h.role,
                            host_key: h.host_key.clone(),
                        })
                        .collect()
                }),
                addons: Some(
                    self.addons
                        .iter()
                        .map(|a| AddonSpec {
                            name: a.name.clone(),
                            version: a.version.clone(),
                        })
                        .collect(),
                ),
                iam: (self.iam != Iam::default()).then(|| IamSpec {
                    cluster_role_arn: self.iam.cluster_role_arn.clone(),
                    node_role_arn: self.iam.node_role_arn.clone(),
                }),
                eks: self.eks.as_ref().map(|e| EksSpec {
                    endpoint: Some(EksEndpointSpec {
                        public_access: Some(e.endpoint_public),
                        private_access: Some(e.endpoint_private),
                        public_access_cidrs: e
                            .endpoint_public
                            .then(|| e.public_access_cidrs.iter().map(|c| c.to_string()).collect()),
                    }),
                    logging: Some(e.logging.clone()),
                    secrets_encryption_key_arn: e.secrets_encryption_key_arn.clone(),
                    with_oidc: Some(e.with_oidc),
                    fargate_profiles: Some(
                        e.fargate_profiles
                            .iter()
                            .map(|p| FargateProfileSpec {
                                name: p.name.clone(),
                                selectors: p
                                    .selectors
                                    .iter()
                                    .map(|s| FargateSelectorSpec {
                                        namespace: s.namespace.clone(),
                                        labels: (!s.labels.is_empty()).then(|| s.labels.clone()),
                                    })
                                    .collect(),
                            })
                            .collect(),
                    ),
                }),
                image: self.image.as_ref().map(MachineImage::as_spec),
                tags: Some(self.tags.clone()),
                kubelet: self.kubelet.fail_cgroup_v1_set.then_some(spec::KubeletSpec {
                    fail_cgroup_v1: Some(self.kubelet.fail_cgroup_v1),
                }),
                assets: (self.assets != Assets::default()).then(|| spec::AssetsSpec {
                    mirror: self.assets.mirror.clone(),
                    image_registry: self.assets.image_registry.clone(),
                    files: Some(
                        self.assets
                            .files
                            .iter()
                            .map(|(k, o)| {
                                let digest = |algo: &str| {
                                    o.digest
                                        .as_deref()
                                        .and_then(|d| d.strip_prefix(algo))
                                        .map(str::to_string)
                                };
                                (
                                    k.clone(),
                                    spec::AssetFileSpec {
                                        version: o.version.clone(),
                                        url: o.url.clone(),
                                        sha256: digest("sha256:"),
                                        sha512: digest("sha512:"),
                                    },
                                )
                            })
                            .collect(),
                    ),
                }),
            },
        }
    }
}

/// `spec.assets`: a mirror URL and per-asset sources, checked against the manifest of the cluster's version.
fn assets(c: &mut Checker, spec: Option<&spec::AssetsSpec>, provider: Provider, version: &str) -> Assets {
    let Some(spec) = spec else {
        return Assets::default();
    };
    if provider == Provider::Eks {
        c.err(
            "spec.assets",
            "provider eks installs nothing on hosts (EKS brings its own binaries)",
            "remove spec.assets",
        );
        return Assets::default();
    }
    let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
    if let Some(m) = &spec.mirror
        && !http(m)
    {
        c.err(
            "spec.assets.mirror",
            format!("`{m}` is not an http(s) URL"),
            "give the mirror's base URL, e.g. https://mirror.internal/kforge",
        );
    }
    let known: Option<Vec<String>> = crate::assets::manifest(version)
        .ok()
        .map(|m| m.assets.into_iter().map(|a| a.name).collect());
    let mut files = BTreeMap::new();
    for (name, f) in spec.files.iter().flatten() {
        let path = format!("spec.assets.files.{name}");
        if let Some(known) = &known
            && !known.contains(name)
        {
            c.err(
                &path,
                format!("`{name}` is not an asset of Kubernetes {version}"),
                format!("use one of {}", known.join(", ")),
            );
        }
        let mut digest = None;
        for (algo, value, len) in [("sha256", &f.sha256, 64), ("sha512", &f.sha512, 128)] {
            if let Some(v) = value {
                if v.len() != len || !v.chars().all(|ch| ch.is_ascii_hexdigit()) {
                    c.err(
                        format!("{path}.{algo}"),
                        format!("not a {algo} ({len} hex digits)"),
                        "copy the digest the file's publisher lists",
                    );
                }
                digest = Some(format!("{algo}:{}", v.to_ascii_lowercase()));
            }
        }
        if f.sha256.is_some() && f.sha512.is_some() {
            c.err(&path, "both sha256 and sha512 given", "give one digest");
        }
        if let Some(v) = &f.version {
            let digits = v.strip_prefix('v').unwrap_or(v);
            if digits.is_empty()
                || !digits
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ".-+".contains(ch))
            {
                c.err(
                    format!("{path}.version"),
                    format!("`{v}` is not a version"),
                    "give the release's version, e.g. v1.7.28",
                );
            }
            if digest.is_none() {
                c.err(
                    &path,
                    format!("version {v} without a digest"),
                    "add sha256 (or sha512) of that version's file: the manifest pins only its own version",
                );
            }
        }
        if let Some(u) = &f.url {
            if !http(u) {
                c.err(
                    format!("{path}.url"),
                    format!("`{u}` is not an http(s) URL"),
                    "give the file's download URL",
                );
            }
            if digest.is_none() {
                c.err(
                    &path,
                    "a URL without a digest",
                    "add sha256 (or sha512) of the file: kforge installs nothing it cannot verify",
                );
            }
        }
        files.insert(
            name.clone(),
            AssetOverride {
                version: f.version.clone(),
                url: f.url.clone(),
                digest,
            },
        );
    }
    if let Some(r) = &spec.image_registry
        && (r.is_empty() || r.contains("://") || r.chars().any(char::is_whitespace) || r.ends_with('/'))
    {
        c.err(
            "spec.assets.imageRegistry",
            format!("`{r}` is not a registry"),
            "give the registry host and optional path, without a scheme, e.g. mirror.internal:5000/k8s",
        );
    }
    Assets {
        mirror: spec.mirror.as_ref().map(|m| m.trim_end_matches('/').to_string()),
        files,
        image_registry: spec.image_registry.clone(),
    }
}

/// `spec.kubelet`: self-built only; cgroup v1 cannot be allowed where Kubernetes requires v2 (1.35 on).
fn kubelet(c: &mut Checker, spec: Option<&spec::KubeletSpec>, provider: Provider, version: &str) -> Kubelet {
    let v2_required = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= 35);
    let mut out = Kubelet {
        fail_cgroup_v1: v2_required,
        fail_cgroup_v1_set: false,
    };
    let Some(spec) = spec else { return out };
    if provider == Provider::Eks {
        c.err(
            "spec.kubelet",
            "provider eks configures its nodes' kubelets itself",
            "remove spec.kubelet",
        );
        return out;
    }
    if let Some(fail) = spec.fail_cgroup_v1 {
        if v2_required && !fail {
            c.err(
                "spec.kubelet.failCgroupV1",
                format!("Kubernetes {version} requires cgroup v2: a kubelet that runs on cgroup v1 is not supported"),
                "remove the setting and run the hosts on cgroup v2 (systemd.unified_cgroup_hierarchy=1), or use \
                 Kubernetes 1.34",
            );
        }
        out.fail_cgroup_v1 = fail || v2_required;
        out.fail_cgroup_v1_set = true;
    }
    out
}

/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty() && !n.ends_with('/'))
}

fn iam(c: &mut Checker, spec: Option<&IamSpec>, provider: Provider) -> Iam {
    let Some(spec) = spec else {
        return Iam::default();
    };
    if provider != Provider::Eks {
        c.err(
            "spec.iam",
            format!("provider {provider} does not take IAM roles yet"),
            "remove spec.iam",
        );
    }
    for (field, arn) in [
        ("clusterRoleArn", &spec.cluster_role_arn),
        ("nodeRoleArn", &spec.node_role_arn),
    ] {
        if let Some(arn) = arn
            && !is_role_arn(arn)
        {
            c.err(
                format!("spec.iam.{field}"),
                format!("`{arn}` is not an IAM role ARN"),
                "role ARNs look like arn:aws:iam::123456789012:role/my-role",
            );
        }
    }
    Iam {
        cluster_role_arn: spec.cluster_role_arn.clone(),
        node_role_arn: spec.node_role_arn.clone(),
    }
}

/// `arn:PARTITION:kms:REGION:ACCOUNT:key/ID` or `...:alias/NAME`.
fn is_kms_key_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "kms"
        && is_region(parts[3])
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && (parts[5].strip_prefix("key/").is_some_and(|k| !k.is_empty())
            || parts[5].strip_prefix("alias/").is_some_and(|k| !k.is_empty()))
}

fn eks(c: &mut Checker, spec: Option<&EksSpec>, provider: Provider, network: Option<&Network>) -> Option<Eks> {
    if provider != Provider::Eks {
        if spec.is_some() {
            c.err(
                "spec.eks",
                format!("not used with provider {provider}"),
                "remove spec.eks (it configures EKS managed control planes)",
            );
        }
        return None;
    }
    let empty = EksSpec {
        endpoint: None,
        logging: None,
        secrets_encryption_key_arn: None,
        with_oidc: None,
        fargate_profiles: None,
    };
    let spec = spec.unwrap_or(&empty);
    let endpoint = spec.endpoint.as_ref();
    let endpoint_public = endpoint.and_then(|e| e.public_access).unwrap_or(true);
    let endpoint_private = endpoint.and_then(|e| e.private_access).unwrap_or(true);
    if !endpoint_public && !endpoint_private {
        c.err(
            "spec.eks.endpoint",
            "with neither public nor private access nobody can reach the API server",
            "set privateAccess: true (reachable from the VPC) or publicAccess: true",
        );
    }
    let mut public_access_cidrs = Vec::new();
    match endpoint.and_then(|e| e.public_access_cidrs.as_ref()) {
        Some(_) if !endpoint_public => c.err(
            "spec.eks.endpoint.publicAccessCidrs",
            "the public endpoint is off, so these CIDRs would have no effect",
            "remove publicAccessCidrs or set publicAccess: true",
        ),
        Some(cidrs) if cidrs.is_empty() => c.err(
            "spec.eks.endpoint.publicAccessCidrs",
            "empty list",
            "list the CIDRs allowed to reach the API, or set publicAccess: false",
        ),
        Some(cidrs) => {
            for (i, text) in cidrs.iter().enumerate() {
                if let Some(net) = c.cidr(&format!("spec.eks.endpoint.publicAccessCidrs[{i}]"), text) {
                    public_access_cidrs.push(net);
                }
            }
        }
        None if endpoint_public => public_access_cidrs.push("0.0.0.0/0".parse().expect("valid CIDR")),
        None => {}
    }
    let mut logging = Vec::new();
    for (i, t) in spec.logging.iter().flatten().enumerate() {
        if !EKS_LOG_TYPES.contains(&t.as_str()) {
            c.err(
                format!("spec.eks.logging[{i}]"),
                format!("`{t}` is not an EKS control-plane log type"),
                format!("use some of {}", EKS_LOG_TYPES.join(", ")),
            );
        }
    }
    for t in EKS_LOG_TYPES {
        if spec.logging.iter().flatten().any(|l| l == t) {
            logging.push(t.to_string());
        }
    }
    if let Some(arn) = &spec.secrets_encryption_key_arn
        && !is_kms_key_arn(arn)
    {
        c.err(
            "spec.eks.secretsEncryptionKeyArn",
            format!("`{arn}` is not a KMS key ARN"),
            "KMS key ARNs look like arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        );
    }
    let mut fargate_profiles = Vec::new();
    let mut names = BTreeSet::new();
    for (i, p) in spec.fargate_profiles.iter().flatten().enumerate() {
        let path = format!("spec.eks.fargateProfiles[{i}]");
        let name_ok = !p.name.is_empty()
            && p.name.len() <= 63
            && p.name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            c.err(
                format!("{path}.name"),
                format!("`{}` is not a valid Fargate profile name", p.name),
                "use 1-63 letters, digits, '-' and '_', starting with a letter or digit",
            );
        }
        if !names.insert(p.name.clone()) {
            c.err(
                format!("{path}.name"),
                format!("Fargate profile `{}` is defined twice", p.name),
                "give each profile its own name",
            );
        }
        if p.selectors.is_empty() || p.selectors.len() > 5 {
            c.err(
                format!("{path}.selectors"),
                format!("{} selectors; EKS takes 1 to 5", p.selectors.len()),
                "list the namespaces (and labels) whose pods run on Fargate",
            );
        }
        for (j, s) in p.selectors.iter().enumerate() {
            if !is_dns_label(&s.namespace, 63) {
                c.err(
                    format!("{path}.selectors[{j}].namespace"),
                    format!("`{}` is not a namespace name", s.namespace),
                    "namespaces are lowercase DNS labels such as kube-system",
                );
            }
            for k in s.labels.iter().flatten().map(|(k, _)| k) {
                if !is_label_key(k) {
                    c.err(
                        format!("{path}.selectors[{j}].labels.{k}"),
                        format!("`{k}` is not a Kubernetes label key"),
                        "label keys look like app or example.com/tier",
                    );
                }
            }
        }
        fargate_profiles.push(FargateProfile {
            name: p.name.clone(),
            selectors: p
                .selectors
                .iter()
                .map(|s| FargateSelector {
                    namespace: s.namespace.clone(),
                    labels: s.labels.clone().unwrap_or_default(),
                })
                .collect(),
        });
    }
    if !fargate_profiles.is_empty()
        && let Some(net) = network
        && !net.subnets.iter().any(|s| s.kind == SubnetType::Private)
    {
        c.err(
            "spec.eks.fargateProfiles",
            "Fargate runs pods only in private subnets, and the network has none",
            "use spec.network.topology: private (or list private subnets)",
        );
    }
    Some(Eks {
        endpoint_public,
        endpoint_private,
        public_access_cidrs,
        logging,
        secrets_encryption_key_arn: spec.secrets_encryption_key_arn.clone(),
        with_oidc: spec.with_oidc.unwrap_or(false),
        fargate_profiles,
    })
}

fn network(c: &mut Checker, spec: Option<&NetworkSpec>, region: &str, provider: Provider) -> Network {
    let empty = NetworkSpec {
        vpc_cidr: None,
        vpc_id: None,
        zones: None,
        topology: None,
        nat_gateways: None,
        subnets: None,
    };
    let spec = spec.unwrap_or(&empty);
    let topology = spec.topology.unwrap_or(Topology::Private);
    let nat_gateways = spec.nat_gateways.unwrap_or(match topology {
        Topology::Private => NatGateways::Single,
        Topology::Public => NatGateways::None,
    });
    if topology == Topology::Public && nat_gateways != NatGateways::None {
        c.err(
            "spec.network.natGateways",
            "NAT gateways serve private subnets, and the public topology has none",
            "set natGateways: none, or topology: private",
        );
    }

    let vpc = match (&spec.vpc_cidr, &spec.vpc_id) {
        (Some(_), Some(_)) => {
            c.err(
                "spec.network.vpcId",
                "vpcId and vpcCidr exclude each other",
                "give vpcCidr to create a VPC, or vpcId to use one",
            );
            VpcSource::Existing { id: String::new() }
        }
        (None, Some(id)) => {
            if !(id.starts_with("vpc-") && id.len() > 4 && id[4..].chars().all(|c| c.is_ascii_hexdigit())) {
                c.err(
                    "spec.network.vpcId",
                    format!("`{id}` is not a VPC id"),
                    "VPC ids look like vpc-0123456789abcdef0",
                );
            }
            VpcSource::Existing { id: id.clone() }
        }
        (cidr, None) => {
            let text = cidr.as_deref().unwrap_or(DEFAULT_VPC_CIDR);
            let cidr = c
                .cidr("spec.network.vpcCidr", text)
                .unwrap_or_else(|| DEFAULT_VPC_CIDR.parse().unwrap());
            if !(16..=24).contains(&cidr.prefix_len()) {
                c.err(
                    "spec.network.vpcCidr",
                    format!("a /{} VPC is outside what kforge supports", cidr.prefix_len()),
                    "use a prefix between /16 and /24",
                );
            }
            VpcSource::Create { cidr }
        }
    };
    let existing = matches!(vpc, VpcSource::Existing { .. });

    let zones: Vec<String> = match (&spec.zones, &spec.subnets, existing) {
        (Some(z), _, _) => z.clone(),
        // With an existing VPC the zones are those of the listed subnets.
        (None, Some(subnets), true) => {
            let mut zones: Vec<String> = Vec::new();
            for s in subnets {
                if !zones.contains(&s.zone) {
                    zones.push(s.zone.clone());
                }
            }
            zones
        }
        _ => ["a", "b", "c"].iter().map(|l| format!("{region}{l}")).collect(),
    };
    let mut seen = BTreeSet::new();
    for (i, z) in zones.iter().enumerate() {
        if !region.is_empty() && !zone_in_region(z, region) {
            c.err(
                format!("spec.network.zones[{i}]"),
                format!("zone `{z}` is not in region {region}"),
                format!("use zones of {region}, such as {region}a"),
            );
        }
        if !seen.insert(z) {
            c.err(
                format!("spec.network.zones[{i}]"),
                format!("zone `{z}` is listed twice"),
                "list each zone once",
            );
        }
    }
    if zones.is_empty() {
        c.err("spec.network.zones", "no zones", "list at least one availability zone");
    }
    if provider == Provider::Eks && zones.len() < 2 {
        c.err(
            "spec.network.zones",
            format!("EKS needs subnets in at least 2 zones, the spec has {}", zones.len()),
            "list two or more zones",
        );
    }

    let wanted_kinds: &[SubnetType] = match topology {
        Topology::Private => &[SubnetType::Private, SubnetType::Public],
        Topology::Public => &[SubnetType::Public],
    };

    let subnets = match &spec.subnets {
        None if existing => {
            c.err(
                "spec.network.subnets",
                "an existing VPC needs its subnets listed",
                "list the subnets to use with zone, type and id",
            );
            Vec::new()
        }
        None => match &vpc {
            VpcSource::Create { cidr } => compute_subnets(c, *cidr, &zones, wanted_kinds),
            VpcSource::Existing { .. } => Vec::new(),
        },
        Some(list) => {
            let mut out = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let path = format!("spec.network.subnets[{i}]");
                if !zones.contains(&s.zone) {
                    c.err(
                        format!("{path}.zone"),
                        format!("zone `{}` is not in spec.network.zones", s.zone),
                        "add the zone to spec.network.zones or fix the subnet's zone",
                    );
                }
                if !wanted_kinds.contains(&s.kind) {
                    c.err(
                        format!("{path}.type"),
                        "the public topology has no private subnets",
                        "set topology: private, or remove the private subnets",
                    );
                }
                let source = match (&vpc, &s.cidr, &s.id) {
                    (VpcSource::Create { cidr: vpc_cidr }, Some(text), None) => {
                        let cidr = c.cidr(&format!("{path}.cidr"), text);
                        if let Some(cidr) = cidr
                            && !vpc_cidr.contains(&cidr)
                        {
                            c.err(
                                format!("{path}.cidr"),
                                format!("{cidr} is outside the VPC {vpc_cidr}"),
                                "choose a block inside spec.network.vpcCidr, or omit subnets to have them computed",
                            );
                        }
                        cidr.map(|cidr| SubnetSource::Create { cidr })
                    }
                    (VpcSource::Create { .. }, _, _) => {
                        c.err(
                            &path,
                            "a subnet of a VPC kforge creates needs a cidr and no id",
                            "give cidr, or omit subnets to have them computed",
                        );
                        None
                    }
                    (VpcSource::Existing { .. }, None, Some(id)) => {
                        if !id.starts_with("subnet-") {
                            c.err(
                                format!("{path}.id"),
                                format!("`{id}` is not a subnet id"),
                                "subnet ids look like subnet-0123456789abcdef0",
                            );
                        }
                        Some(SubnetSource::Existing { id: id.clone() })
                    }
                    (VpcSource::Existing { .. }, _, _) => {
                        c.err(
                            &path,
                            "a subnet of an existing VPC needs an id and no cidr",
                            "give the existing subnet's id",
                        );
                        None
                    }
                };
                if let Some(source) = source {
                    out.push(Subnet {
                        zone: s.zone.clone(),
                        kind: s.kind,
                        source,
                    });
                }
            }
            for (i, a) in out.iter().enumerate() {
                for b in &out[..i] {
                    if a.zone == b.zone && a.kind == b.kind {
                        c.err(
                            format!("spec.network.subnets[{i}]"),
                            format!("a second {} subnet in {}", a.kind, a.zone),
                            "kforge uses one subnet per zone and type",
                        );
                    }
                    if let (SubnetSource::Create { cidr: x }, SubnetSource::Create { cidr: y }) = (&a.source, &b.source)
                        && overlaps(x, y)
                    {
                        c.err(
                            format!("spec.network.subnets[{i}].cidr"),
                            format!("{x} overlaps {y} of the {} subnet", b.name()),
                            "give every subnet its own block",
                        );
                    }
                }
            }
            for z in &zones {
                for kind in wanted_kinds {
                    if !out.iter().any(|s| &s.zone == z && s.kind == *kind) && !existing {
                        c.err(
                            "spec.network.subnets",
                            format!("zone {z} has no {kind} subnet"),
                            format!("add a {kind} subnet in {z}, or omit subnets to have them computed"),
                        );
                    }
                }
            }
            out
        }
    };

    if nat_gateways == NatGateways::PerZone || nat_gateways == NatGateways::Single {
        for z in &zones {
            let has_public = subnets.iter().any(|s| &s.zone == z && s.kind == SubnetType::Public);
            if nat_gateways == NatGateways::PerZone && !has_public && !existing {
                c.err(
                    "spec.network.natGateways",
                    format!("zone {z} has no public subnet for its NAT gateway"),
                    "add a public subnet there",
                );
            }
        }
        if existing {
            c.err(
                "spec.network.natGateways",
                "kforge does not add NAT gateways to an existing VPC",
                "set natGateways: none; the existing VPC's routing is used as is",
            );
        }
    }

    Network {
        vpc,
        zones,
        topology,
        nat_gateways,
        subnets,
    }
}

/// Splits the VPC into equal blocks: private subnets first (zone order), then public ones.
fn compute_subnets(c: &mut Checker, vpc: Ipv4Net, zones: &[String], kinds: &[SubnetType]) -> Vec<Subnet> {
    let count = zones.len() * kinds.len();
    let extra_bits = (count.max(1) as f64).log2().ceil() as u8;
    let prefix = vpc.prefix_len() + extra_bits.max(1);
    if prefix > 28 {
        c.err(
            "spec.network.vpcCidr",
            format!("{vpc} is too small for {count} subnets"),
            "use a larger VPC block or fewer zones",
        );
        return Vec::new();
    }
    let mut blocks = vpc.subnets(prefix).expect("prefix checked");
    let mut out = Vec::new();
    for kind in kinds {
        for zone in zones {
            let cidr = blocks.next().expect("enough blocks by construction");
            out.push(Subnet {
                zone: zone.clone(),
                kind: *kind,
                source: SubnetSource::Create { cidr },
            });
        }
    }
    out
}

fn node_groups(
    c: &mut Checker,
    spec: Option<&[NodeGroupSpec]>,
    provider: Provider,
    topology: Topology,
) -> Vec<NodeGroup> {
    if provider == Provider::Hosts {
        if spec.is_some() {
            c.err(
                "spec.nodeGroups",
                "provider hosts takes its workers from spec.hosts",
                "remove spec.nodeGroups and list worker hosts",
            );
        }
        return Vec::new();
    }
    let default_group = [NodeGroupSpec {
        name: "ng-1".into(),
        instance_type: None,
        instance_types: None,
        min_size: Some(2),
        max_size: Some(2),
        desired_size: Some(2),
        spot: None,
        gpu: None,
        labels: None,
        taints: None,
        volume: None,
        subnets: None,
    }];
    let spec = spec.unwrap_or(&default_group);
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, g) in spec.iter().enumerate() {
        let path = format!("spec.nodeGroups[{i}]");
        if !is_dns_label(&g.name, 63) {
            c.err(
                format!("{path}.name"),
                format!("`{}` is not a valid group name", g.name),
                "use lowercase letters, digits and '-', starting with a letter",
            );
        }
        if !names.insert(g.name.clone()) {
            c.err(
                format!("{path}.name"),
                format!("group `{}` is defined twice", g.name),
                "give each group its own name",
            );
        }
        // The masters' and the bastion's launch templates are `launch-template/masters` and `/bastion`.
        if provider == Provider::Ec2 && ["masters", "bastion"].contains(&g.name.as_str()) {
            c.err(
                format!("{path}.name"),
                format!("`{}` is the name of kforge's own machines in an ec2 cluster", g.name),
                "give the group another name, such as workers",
            );
        }
        let spot = g.spot.unwrap_or(false);
        let gpu = g.gpu.unwrap_or(false);
        let instance_types = match (&g.instance_type, &g.instance_types) {
            (Some(_), Some(_)) => {
                c.err(
                    format!("{path}.instanceTypes"),
                    "instanceType and instanceTypes exclude each other",
                    "use one of them",
                );
                Vec::new()
            }
            (Some(t), None) => vec![t.clone()],
            (None, Some(ts)) if ts.is_empty() => {
                c.err(
                    format!("{path}.instanceTypes"),
                    "empty list",
                    "list at least one instance type",
                );
                Vec::new()
            }
            (None, Some(ts)) => ts.clone(),
            (None, None) if spot => {
                c.err(
                    format!("{path}.instanceTypes"),
                    "a spot group needs its instance types stated",
                    "list several similar types (e.g. [m5.large, m5a.large, m6i.large]) so spot capacity can be found",
                );
                Vec::new()
            }
            (None, None) if gpu => {
                c.err(
                    format!("{path}.instanceTypes"),
                    "a GPU group needs its instance types stated",
                    "list GPU types such as g5.xlarge",
                );
                Vec::new()
            }
            (None, None) => vec![DEFAULT_INSTANCE_TYPE.into()],
        };
        for (j, t) in instance_types.iter().enumerate() {
            let valid = t.split_once('.').is_some_and(|(f, s)| {
                !f.is_empty()
                    && !s.is_empty()
                    && f.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
            let field = if g.instance_type.is_some() {
                format!("{path}.instanceType")
            } else {
                format!("{path}.instanceTypes[{j}]")
            };
            if !valid {
                c.err(
                    &field,
                    format!("`{t}` is not an instance type"),
                    "instance types look like m5.large",
                );
            } else if gpu && !is_gpu_type(t) {
                c.err(
                    &field,
                    format!("`{t}` has no GPU"),
                    "use a GPU family such as g5, g6 or p4d",
                );
            }
        }
        if provider == Provider::Ec2 && g.min_size.is_none() && g.max_size.is_none() && g.desired_size.is_none() {
            c.err(
                &path,
                "the instance group has no size",
                "set desiredSize (and minSize/maxSize for autoscaling)",
            );
        }
        let (min, max, desired) = match (g.min_size, g.max_size, g.desired_size) {
            (None, None, None) => (2, 2, 2),
            (min, max, Some(d)) => (min.unwrap_or(d), max.unwrap_or(d.max(min.unwrap_or(d))), d),
            (min, max, None) => {
                let min = min.unwrap_or(0);
                (min, max.unwrap_or(min.max(1)), min)
            }
        };
        if min > max {
            c.err(
                format!("{path}.minSize"),
                format!("minSize {min} is above maxSize {max}"),
                "make minSize <= maxSize",
            );
        } else if desired < min || desired > max {
            c.err(
                format!("{path}.desiredSize"),
                format!("desiredSize {desired} is outside {min}..{max}"),
                "make minSize <= desiredSize <= maxSize",
            );
        }
        if max == 0 {
            c.err(
                format!("{path}.maxSize"),
                "maxSize is 0",
                "a group needs room for at least one node",
            );
        }
        for (field, n) in [("minSize", min), ("maxSize", max), ("desiredSize", desired)] {
            if n > MAX_GROUP_SIZE {
                c.err(
                    format!("{path}.{field}"),
                    format!("{n} nodes is more than a group can hold"),
                    format!(
                        "use at most {MAX_GROUP_SIZE} (AWS quotas keep groups far smaller: EKS allows 450 nodes per \
                         managed nodegroup); split the nodes into several groups"
                    ),
                );
            }
        }
        let mut labels = BTreeMap::new();
        for (k, v) in g.labels.clone().unwrap_or_default() {
            if !is_label_key(&k) || v.len() > 63 {
                c.err(
                    format!("{path}.labels.{k}"),
                    format!("`{k}: {v}` is not a valid Kubernetes label"),
                    "keys are [prefix/]name with name up to 63 characters; values up to 63",
                );
            }
            labels.insert(k, v);
        }
        let mut taints = Vec::new();
        for (j, t) in g.taints.iter().flatten().enumerate() {
            if !is_label_key(&t.key) {
                c.err(
                    format!("{path}.taints[{j}].key"),
                    format!("`{}` is not a valid taint key", t.key),
                    "taint keys follow label key rules",
                );
            }
            taints.push(Taint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect,
            });
        }
        let v = g.volume.clone().unwrap_or(VolumeSpec {
            size: None,
            kind: None,
            encrypted: None,
            iops: None,
            throughput: None,
        });
        let volume = Volume {
            size_gib: v.size.unwrap_or(80),
            kind: v.kind.unwrap_or_else(|| "gp3".into()),
            encrypted: v.encrypted.unwrap_or(true),
            iops: v.iops,
            throughput: v.throughput,
        };
        if !(8..=16384).contains(&volume.size_gib) {
            c.err(
                format!("{path}.volume.size"),
                format!("{} GiB is out of range", volume.size_gib),
                "use 8 to 16384 GiB",
            );
        }
        if !VOLUME_TYPES.contains(&volume.kind.as_str()) {
            c.err(
                format!("{path}.volume.type"),
                format!("`{}` is not supported", volume.kind),
                format!("use one of {}", VOLUME_TYPES.join(", ")),
            );
        }
        if volume.iops.is_some() && volume.kind == "gp2" {
            c.err(
                format!("{path}.volume.iops"),
                "gp2 volumes have no provisioned IOPS",
                "use gp3, io1 or io2, or remove iops",
            );
        }
        if volume.throughput.is_some() && volume.kind != "gp3" {
            c.err(
                format!("{path}.volume.throughput"),
                "only gp3 volumes take a throughput",
                "use gp3 or remove throughput",
            );
        }
        // EBS's documented ranges per volume type.
        let iops_range = match volume.kind.as_str() {
            "gp3" => Some((3000, 16000)),
            "io1" => Some((100, 64000)),
            "io2" => Some((100, 256000)),
            _ => None,
        };
        match (iops_range, volume.iops) {
            (Some((lo, hi)), Some(iops)) if !(lo..=hi).contains(&iops) => c.err(
                format!("{path}.volume.iops"),
                format!("{iops} IOPS is out of range for {}", volume.kind),
                format!("use {lo} to {hi}"),
            ),
            (Some(_), None) if volume.kind.starts_with("io") => c.err(
                format!("{path}.volume.iops"),
                format!("{} volumes need provisioned IOPS", volume.kind),
                "set iops (100 to 64000 for io1, 100 to 256000 for io2)",
            ),
            _ => {}
        }
        if let Some(t) = volume.throughput
            && volume.kind == "gp3"
            && !(125..=1000).contains(&t)
        {
            c.err(
                format!("{path}.volume.throughput"),
                format!("{t} MiB/s is out of range for gp3"),
                "use 125 to 1000",
            );
        }
        let subnets = g.subnets.unwrap_or(match topology {
            Topology::Private => SubnetType::Private,
            Topology::Public => SubnetType::Public,
        });
        if topology == Topology::Public && subnets == SubnetType::Private {
            c.err(
                format!("{path}.subnets"),
                "the public topology has no private subnets",
                "use subnets: public or topology: private",
            );
        }
        out.push(NodeGroup {
            name: g.name.clone(),
            instance_types,
            min_size: min,
            max_size: max,
            desired_size: desired,
            spot,
            gpu,
            labels,
            taints,
            volume,
            subnets,
        });
    }
    out
}

fn ssh(c: &mut Checker, spec: Option<&SshSpec>, ctx: &Context, provider: Provider) -> Ssh {
    let Some(spec) = spec else {
        return Ssh::default();
    };
    let public_key = match (&spec.public_key, &spec.public_key_file) {
        (Some(_), Some(_)) => {
            c.err(
                "spec.ssh.publicKeyFile",
                "publicKey and publicKeyFile exclude each other",
                "use one of them",
            );
            None
        }
        (Some(k), None) => Some(k.trim().to_string()),
        // An OpenSSH public key is one line of well under a kilobyte; 64 KiB bounds what a wrong path (a device,
        // a disk image) makes kforge read.
        (None, Some(f)) => match crate::fsutil::read_limited(&ctx.base_dir.join(f), 64 * 1024)
            .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")))
        {
            Ok(k) => Some(k.trim().to_string()),
            Err(e) => {
                c.err(
                    "spec.ssh.publicKeyFile",
                    format!("cannot read `{f}`: {e}"),
                    "give a path relative to the spec file",
                );
                None
            }
        },
        (None, None) => None,
    };
    if let Some(k) = &public_key
        && !is_public_key(k)
    {
        let path = if spec.public_key_file.is_some() {
            "spec.ssh.publicKeyFile"
        } else {
            "spec.ssh.publicKey"
        };
        c.err(
            path,
            "not an OpenSSH public key",
            "give one line such as `ssh-ed25519 AAAA... you@host` (the .pub file)",
        );
    }
    let mut allowed_cidrs = Vec::new();
    for (i, text) in spec.allowed_cidrs.iter().flatten().enumerate() {
        if let Some(net) = c.cidr(&format!("spec.ssh.allowedCidrs[{i}]"), text) {
            allowed_cidrs.push(net);
        }
    }
    let bastion = spec
        .bastion
        .as_ref()
        .filter(|b| b.enabled.unwrap_or(false))
        .map(|b| Bastion {
            instance_type: b.instance_type.clone().unwrap_or_else(|| "t3.micro".into()),
        });
    if bastion.is_some() && provider != Provider::Ec2 {
        c.err(
            "spec.ssh.bastion",
            format!("provider {provider} creates no bastion"),
            "remove spec.ssh.bastion",
        );
    }
    // The private half of a key given as a file sits next to it, as ssh-keygen writes them.
    let identity_file_as_written = spec.identity_file.clone().or_else(|| {
        spec.public_key_file
            .as_ref()
            .and_then(|f| f.strip_suffix(".pub"))
            .map(str::to_string)
    });
    if spec.identity_file.as_ref().is_some_and(|f| f.trim().is_empty()) {
        c.err(
            "spec.ssh.identityFile",
            "empty path",
            "give the private key kforge logs in with, or remove the field to use the ssh-agent",
        );
    }
    if let Some(u) = &spec.user
        && (u.is_empty() || u.contains(|ch: char| ch.is_whitespace() || ch == '@'))
    {
        c.err(
            "spec.ssh.user",
            format!("`{u}` is not a user name"),
            "give a login name such as ec2-user",
        );
    }
    Ssh {
        public_key,
        public_key_file: spec.public_key_file.clone(),
        allowed_cidrs,
        bastion,
        identity_file: identity_file_as_written.as_ref().map(|f| ctx.base_dir.join(f)),
        identity_file_as_written,
        user: spec.user.clone(),
    }
}

fn image(c: &mut Checker, spec: Option<&str>, provider: Provider) -> Option<MachineImage> {
    if provider != Provider::Ec2 {
        if spec.is_some() {
            c.err(
                "spec.image",
                format!("provider {provider} does not choose machine images"),
                "remove spec.image",
            );
        }
        return None;
    }
    Some(match spec.unwrap_or("al2023") {
        "al2023" => MachineImage::Al2023,
        "ubuntu" => MachineImage::Ubuntu,
        id if id.starts_with("ami-") && id.len() > 4 && id[4..].chars().all(|ch| ch.is_ascii_hexdigit()) => {
            MachineImage::Id(id.to_string())
        }
        other => {
            c.err(
                "spec.image",
                format!("`{other}` is not a machine image kforge knows"),
                "use al2023, ubuntu, or an AMI id such as ami-0123456789abcdef0",
            );
            return None;
        }
    })
}

fn hosts(c: &mut Checker, spec: Option<&[HostSpec]>, ctx: &Context, provider: Provider) -> Vec<Host> {
    if provider != Provider::Hosts {
        if spec.is_some() {
            c.err(
                "spec.hosts",
                format!("provider {provider} creates its own machines"),
                "remove spec.hosts, or use provider: hosts",
            );
        }
        return Vec::new();
    }
    let Some(spec) = spec.filter(|h| !h.is_empty()) else {
        c.err(
            "spec.hosts",
            "provider hosts needs the machines listed",
            "list each host with name, address, identityFile and role",
        );
        return Vec::new();
    };
    let mut names = BTreeSet::new();
    let mut endpoints = BTreeSet::new();
    let mut out = Vec::new();
    for (i, h) in spec.iter().enumerate() {
        let path = format!("spec.hosts[{i}]");
        if !is_dns_label(&h.name, 63) {
            c.err(
                format!("{path}.name"),
                format!("`{}` is not a valid host name", h.name),
                "use lowercase letters, digits and '-'",
            );
        }
        if !names.insert(h.name.clone()) {
            c.err(
                format!("{path}.name"),
                format!("host `{}` is listed twice", h.name),
                "give each host its own name",
            );
        }
        let port = h.port.unwrap_or(22);
        if h.address.trim().is_empty() || h.address.contains(char::is_whitespace) {
            c.err(
                format!("{path}.address"),
                "not an address",
                "give an IP address or DNS name",
            );
        } else if !endpoints.insert((h.address.clone(), port)) {
            c.err(
                format!("{path}.address"),
                format!("{}:{port} is used by two hosts", h.address),
                "each host needs its own address",
            );
        }
        // Existence is checked when the hosts are contacted, not here: a spec stays valid on any machine.
        let identity_file = ctx.base_dir.join(&h.identity_file);
        if h.identity_file.trim().is_empty() {
            c.err(
                format!("{path}.identityFile"),
                "empty path",
                "give the private key used to log in, relative to the spec file",
            );
        }
        if let Some(k) = &h.host_key
            && !is_public_key(k)
        {
            c.err(
                format!("{path}.hostKey"),
                "not an OpenSSH public key line",
                "copy a line of /etc/ssh/ssh_host_*_key.pub",
            );
        }
        out.push(Host {
            name: h.name.clone(),
            address: h.address.clone(),
            port,
            user: h.user.clone().unwrap_or_else(|| "root".into()),
            identity_file,
            identity_file_as_written: h.identity_file.clone(),
            role: h.role,
            host_key: h.host_key.clone(),
        });
    }
    let masters = out.iter().filter(|h| h.role == HostRole::Master).count();
    if masters == 0 {
        c.err(
            "spec.hosts",
            "no host has role master",
            "give one, three or five hosts role: master",
        );
    } else if masters % 2 == 0 {
        c.err(
            "spec.hosts",
            format!("{masters} masters cannot keep an etcd quorum well"),
            "use 1, 3 or 5 masters (an odd number keeps etcd available through failures)",
        );
    }
    out
}

fn addons(c: &mut Checker, spec: Option<&[AddonSpec]>, provider: Provider) -> Vec<Addon> {
    let known: Vec<&str> = match provider {
        Provider::Eks => EKS_ADDONS.to_vec(),
        Provider::Ec2 => SELF_BUILT_ADDONS.to_vec(),
        Provider::Hosts => SELF_BUILT_ADDONS
            .iter()
            .copied()
            .filter(|a| !EC2_ONLY_ADDONS.contains(a))
            .collect(),
    };
    let Some(spec) = spec else {
        let defaults: &[&str] = match provider {
            Provider::Eks => &["vpc-cni", "coredns", "kube-proxy"],
            Provider::Ec2 => &["flannel", "coredns", "aws-ebs-csi-driver"],
            Provider::Hosts => &["flannel", "coredns"],
        };
        return defaults
            .iter()
            .map(|n| Addon {
                name: n.to_string(),
                version: None,
            })
            .collect();
    };
    for (i, a) in spec.iter().enumerate() {
        let path = format!("spec.addons[{i}].name");
        if known.contains(&a.name.as_str()) {
            continue;
        }
        // The addons kforge cannot apply, each refused with why (the generic refusal follows for the rest).
        let why = match (provider, a.name.as_str()) {
            (Provider::Hosts, n) if EC2_ONLY_ADDONS.contains(&n) => Some((
                format!("`{n}` needs AWS, and provider hosts has no cloud"),
                "remove it; bring your own storage provisioner for existing machines".to_string(),
            )),
            (Provider::Ec2, CLOUD_CONTROLLER) => Some((
                "the AWS cloud controller manager comes with every provider ec2 cluster".to_string(),
                "remove it from spec.addons".to_string(),
            )),
            (p, "calico") if p != Provider::Eks => Some((
                "`calico` is not an addon kforge installs: the bootstrap's pod network is flannel".to_string(),
                "use flannel, or leave flannel out of spec.addons and install calico through the API after create"
                    .to_string(),
            )),
            _ => None,
        };
        if let Some((message, hint)) = why {
            c.err(path, message, hint);
        }
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, a) in spec.iter().enumerate() {
        let refused_above = c.errors.iter().any(|e| e.path == format!("spec.addons[{i}].name"));
        if !known.contains(&a.name.as_str()) && !refused_above {
            let bring_your_own = if provider == Provider::Eks {
                String::new()
            } else {
                "; install other addons through the API after create (`addons: []` leaves the pod network and DNS to you)"
                    .to_string()
            };
            c.err(
                format!("spec.addons[{i}].name"),
                format!("`{}` is not an addon kforge installs with provider {provider}", a.name),
                format!("use one of {}{bring_your_own}", known.join(", ")),
            );
        }
        if provider != Provider::Eks && a.version.is_some() {
            c.err(
                format!("spec.addons[{i}].version"),
                format!(
                    "the version of self-built addon `{}` comes from the asset manifest of the Kubernetes version",
                    a.name
                ),
                "remove the version (`kforge get assets --version V` lists the addons' images)",
            );
        }
        if !names.insert(&a.name) {
            c.err(
                format!("spec.addons[{i}].name"),
                format!("addon `{}` is listed twice", a.name),
                "list each addon once",
            );
        }
        out.push(Addon {
            name: a.name.clone(),
            version: a.version.clone(),
        });
    }
    out
}

/// Reads, parses and validates a spec file in one step.
pub fn load_cluster(path: &Path, fallback_region: Option<String>) -> anyhow::Result<Cluster> {
    let spec = spec::load(path)?;
    let ctx = Context {
        fallback_region,
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        origin: path.display().to_string(),
    };
    Ok(Cluster::from_spec(&spec, &ctx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            fallback_region: None,
            base_dir: PathBuf::from("."),
            origin: "t.yaml".into(),
        }
    }

    fn check(yaml_spec_body: &str) -> Result<Cluster, ValidationError> {
        let text =
            format!("apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n{yaml_spec_body}");
        let spec = spec::parse(&text, "t.yaml").unwrap();
        Cluster::from_spec(&spec, &ctx())
    }

    fn paths(e: &ValidationError) -> Vec<&str> {
        e.errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn defaults_for_eks() {
        let c = check("  provider: eks\n  region: us-east-1\n").unwrap();
        let net = c.network.as_ref().unwrap();
        assert_eq!(net.zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
        assert_eq!(net.nat_gateways, NatGateways::Single);
        assert_eq!(net.subnets.len(), 6);
        assert_eq!(
            net.subnets[0].source,
            SubnetSource::Create {
                cidr: "10.0.0.0/19".parse().unwrap()
            }
        );
        assert_eq!(net.subnets[3].kind, SubnetType::Public);
        assert_eq!(
            net.subnets[3].source,
            SubnetSource::Create {
                cidr: "10.0.96.0/19".parse().unwrap()
            }
        );
        assert_eq!(c.node_groups[0].desired_size, 2);
        assert_eq!(c.kubernetes_version, *SUPPORTED_VERSIONS.last().unwrap());
        assert_eq!(c.addons.len(), 3);
    }

    #[test]
    fn defaulted_spec_round_trips() {
        let c = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: eu-west-1\n  controlPlane: {count: 3}\n  nodeGroups:\n  - name: a\n    desiredSize: 3\n").unwrap();
        let text = serde_norway::to_string(&c.to_spec()).unwrap();
        let again = Cluster::from_spec(&spec::parse(&text, "x").unwrap(), &ctx()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn region_falls_back_to_context_and_is_required() {
        let e = check("  provider: eks\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.region"]);
        let spec = spec::parse(
            "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec: {provider: eks}\n",
            "t",
        )
        .unwrap();
        let c = Cluster::from_spec(
            &spec,
            &Context {
                fallback_region: Some("us-west-2".into()),
                ..ctx()
            },
        )
        .unwrap();
        assert_eq!(c.region(), Some("us-west-2"));
    }

    #[test]
    fn subnet_outside_vpc_and_overlap() {
        let e = check(
            "  provider: eks\n  region: us-east-1\n  network:\n    vpcCidr: 10.0.0.0/16\n    zones: [us-east-1a, us-east-1b]\n    topology: public\n    subnets:\n    - {zone: us-east-1a, type: public, cidr: 10.1.0.0/24}\n    - {zone: us-east-1b, type: public, cidr: 10.0.0.0/20}\n    - {zone: us-east-1b, type: public, cidr: 10.0.1.0/24}\n",
        )
        .unwrap_err();
        let p = paths(&e);
        assert!(p.contains(&"spec.network.subnets[0].cidr"), "{e}");
        assert!(p.contains(&"spec.network.subnets[2].cidr"), "{e}");
        assert!(e.to_string().contains("outside the VPC 10.0.0.0/16"), "{e}");
        assert!(e.to_string().contains("overlaps"), "{e}");
    }

    #[test]
    fn bad_cidr_and_host_bits() {
        let e = check("  provider: eks\n  region: us-east-1\n  network: {vpcCidr: 10.0.0.0/33}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.network.vpcCidr"]);
        let e = check("  provider: eks\n  region: us-east-1\n  network: {vpcCidr: 10.0.0.1/16}\n").unwrap_err();
        assert!(e.to_string().contains("use the network address `10.0.0.0/16`"), "{e}");
    }

    #[test]
    fn ec2_needs_a_key_and_a_known_image() {
        let e = check("  provider: ec2\n  region: us-east-1\n  image: debian\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.image", "spec.ssh.publicKey"]);
        assert!(e.to_string().contains("ssh-keygen -t ed25519"), "{e}");
        let c = check(&format!(
            "  provider: ec2\n{}  region: us-east-1\n  image: ubuntu\n",
            "  ssh: {publicKeyFile: id.pub, publicKey: x}\n"
        ))
        .unwrap_err();
        assert_eq!(paths(&c), ["spec.ssh.publicKeyFile"]);
        let c = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n  image: ubuntu\n  controlPlane: {apiAllowedCidrs: [10.0.0.0/8]}\n").unwrap();
        assert_eq!(c.ssh_user(), "ubuntu");
        assert_eq!(c.image, Some(MachineImage::Ubuntu));
        assert_eq!(
            c.control_plane.unwrap().api_allowed_cidrs,
            ["10.0.0.0/8".parse::<Ipv4Net>().unwrap()]
        );
        let e = check("  provider: eks\n  region: us-east-1\n  image: al2023\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.image"]);
    }

    #[test]
    fn ha_needs_zones_and_odd_masters() {
        let e = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n  network: {zones: [us-east-1a, us-east-1b]}\n  controlPlane: {count: 3}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.network.zones"]);
        let e = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n  controlPlane: {count: 2}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.controlPlane.count"]);
    }

    #[test]
    fn zones_outside_region() {
        let e =
            check("  provider: eks\n  region: us-east-1\n  network: {zones: [us-east-1a, eu-west-1b]}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.network.zones[1]"]);
        assert!(zone_in_region("us-east-1-bos-1a", "us-east-1"));
        assert!(!zone_in_region("us-east-12a", "us-east-1"));
    }

    #[test]
    fn node_group_rules() {
        let e = check(
            "  provider: eks\n  region: us-east-1\n  nodeGroups:\n  - {name: a, minSize: 3, maxSize: 1}\n  - {name: b, spot: true}\n  - {name: B}\n  - {name: g, gpu: true, instanceType: m5.large}\n",
        )
        .unwrap_err();
        assert_eq!(
            paths(&e),
            [
                "spec.nodeGroups[0].minSize",
                "spec.nodeGroups[1].instanceTypes",
                "spec.nodeGroups[2].name",
                "spec.nodeGroups[3].instanceType"
            ]
        );
        let e = check("  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n  nodeGroups:\n  - {name: a}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.nodeGroups[0]"]);
    }

    #[test]
    fn group_names_never_collide() {
        // With a dash between them, cluster `aa` + group `bb-cc` and cluster `aa-bb` + group `cc` were one name.
        assert_ne!(group_resource_name("aa", "bb-cc"), group_resource_name("aa-bb", "cc"));
        assert_eq!(group_resource_name("aa", "bb-cc"), "kforge-aa.bb-cc");
        // An ec2 group may not take the name of the masters' or the bastion's launch template.
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me";
        for reserved in ["masters", "bastion"] {
            let e = check(&format!(
                "  provider: ec2\n  ssh: {{publicKey: {key}}}\n  region: us-east-1\n  nodeGroups:\n  - {{name: {reserved}, instanceType: m5.large, desiredSize: 1}}\n"
            ))
            .unwrap_err();
            assert_eq!(paths(&e), ["spec.nodeGroups[0].name"], "{reserved}: {e}");
        }
        // An EKS cluster has neither, so the names are free there.
        assert!(check("  provider: eks\n  region: us-east-1\n  nodeGroups:\n  - {name: masters}\n").is_ok());
    }

    #[test]
    fn provider_specific_sections() {
        let e = check("  provider: eks\n  region: us-east-1\n  controlPlane: {count: 1}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.controlPlane"]);
        let e = check("  provider: hosts\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.hosts"]);
    }

    #[test]
    fn unsupported_version_and_bad_name() {
        let text = "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata: {name: Bad_Name}\nspec: {provider: eks, region: us-east-1, kubernetesVersion: '1.12'}\n";
        let e = Cluster::from_spec(&spec::parse(text, "t").unwrap(), &ctx()).unwrap_err();
        assert_eq!(paths(&e), ["metadata.name", "spec.kubernetesVersion"]);
        assert!(e.to_string().contains("hint: use one of 1.30"), "{e}");
        assert!(e.to_string().contains("not supported with provider eks"), "{e}");
    }

    #[test]
    fn role_arns_are_checked() {
        let c = check("  provider: eks\n  region: us-east-1\n  iam: {clusterRoleArn: 'arn:aws:iam::123456789012:role/eks/cluster'}\n").unwrap();
        assert_eq!(
            c.iam.cluster_role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/eks/cluster")
        );
        let e = check("  provider: eks\n  region: us-east-1\n  iam: {nodeRoleArn: 'arn:aws:iam::1234:role/x'}\n")
            .unwrap_err();
        assert_eq!(paths(&e), ["spec.iam.nodeRoleArn"]);
    }

    #[test]
    fn reserved_tags_refused() {
        let e = check("  provider: eks\n  region: us-east-1\n  tags: {kforge.dev/cluster: x}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.tags.kforge.dev/cluster"]);
    }

    #[test]
    fn public_topology_has_no_nat() {
        let c = check("  provider: eks\n  region: us-east-1\n  network: {topology: public}\n").unwrap();
        let net = c.network.unwrap();
        assert_eq!(net.nat_gateways, NatGateways::None);
        assert!(net.subnets.iter().all(|s| s.kind == SubnetType::Public));
        let e = check("  provider: eks\n  region: us-east-1\n  network: {topology: public, natGateways: single}\n")
            .unwrap_err();
        assert_eq!(paths(&e), ["spec.network.natGateways"]);
    }

    #[test]
    fn self_built_addons_are_the_ones_the_bootstrap_applies() {
        let ec2 = "  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n";
        let c = check(ec2).unwrap();
        let names: Vec<&str> = c.addons.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["flannel", "coredns", "aws-ebs-csi-driver"]);
        let none = check(&format!("{ec2}  addons: []\n")).unwrap();
        assert!(none.addons.is_empty());
        let ok = check(&format!(
            "{ec2}  addons: [{{name: coredns}}, {{name: metrics-server}}]\n"
        ))
        .unwrap();
        assert_eq!(ok.addons.len(), 2);
        let e = check(&format!(
            "{ec2}  addons: [{{name: coredns}}, {{name: calico}}, {{name: aws-cloud-controller-manager}}, {{name: flannel, version: v1}}, {{name: weave}}]\n"
        ))
        .unwrap_err();
        assert_eq!(
            paths(&e),
            [
                "spec.addons[1].name",
                "spec.addons[2].name",
                "spec.addons[3].version",
                "spec.addons[4].name"
            ]
        );
        let text = e.to_string();
        assert!(
            text.contains("`calico` is not an addon kforge installs: the bootstrap's pod network is flannel"),
            "{text}"
        );
        assert!(text.contains("comes with every provider ec2 cluster"), "{text}");
        // Provider hosts has no cloud: the EBS CSI driver cannot work there.
        let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
        let c = check(hosts).unwrap();
        let names: Vec<&str> = c.addons.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["flannel", "coredns"]);
        let e = check(&format!(
            "{hosts}  addons: [{{name: metrics-server}}, {{name: aws-ebs-csi-driver}}]\n"
        ))
        .unwrap_err();
        assert_eq!(paths(&e), ["spec.addons[1].name"]);
        assert!(
            e.to_string().contains("needs AWS, and provider hosts has no cloud"),
            "{e}"
        );
    }

    #[test]
    fn self_built_versions_are_those_with_a_manifest() {
        let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
        for v in ["1.33", "1.34", "1.35"] {
            let c = check(&format!("{hosts}  kubernetesVersion: '{v}'\n")).unwrap();
            assert_eq!(c.kubernetes_version, v);
        }
        assert_eq!(check(hosts).unwrap().kubernetes_version, DEFAULT_VERSION);
        for v in ["1.32", "1.36"] {
            let e = check(&format!("{hosts}  kubernetesVersion: '{v}'\n")).unwrap_err();
            assert_eq!(paths(&e), ["spec.kubernetesVersion"]);
            assert!(e.to_string().contains("use one of 1.33, 1.34, 1.35"), "{e}");
        }
    }

    #[test]
    fn cgroup_v1_cannot_be_allowed_where_kubernetes_requires_v2() {
        let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
        assert!(!check(hosts).unwrap().kubelet.fail_cgroup_v1);
        assert!(
            check(&format!("{hosts}  kubernetesVersion: '1.35'\n"))
                .unwrap()
                .kubelet
                .fail_cgroup_v1
        );
        let strict = check(&format!("{hosts}  kubelet: {{failCgroupV1: true}}\n")).unwrap();
        assert!(strict.kubelet.fail_cgroup_v1);
        let e = check(&format!(
            "{hosts}  kubernetesVersion: '1.35'\n  kubelet: {{failCgroupV1: false}}\n"
        ))
        .unwrap_err();
        assert_eq!(paths(&e), ["spec.kubelet.failCgroupV1"]);
        assert!(e.to_string().contains("requires cgroup v2"), "{e}");
        let e = check("  provider: eks\n  region: us-east-1\n  kubelet: {failCgroupV1: true}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.kubelet"]);
    }

    #[test]
    fn asset_versions_need_a_digest_and_the_image_registry_a_registry() {
        let hosts = "  provider: hosts\n  hosts: [{name: m1, address: 10.0.0.1, role: master, identityFile: id}]\n";
        let sha = "a".repeat(64);
        let c = check(&format!(
            "{hosts}  assets:\n    imageRegistry: mirror.internal:5000/k8s\n    files:\n      containerd: {{version: v1.7.28, sha256: {sha}}}\n"
        ))
        .unwrap();
        assert_eq!(c.assets.image_registry.as_deref(), Some("mirror.internal:5000/k8s"));
        assert_eq!(c.assets.files["containerd"].version.as_deref(), Some("v1.7.28"));
        assert_eq!(Cluster::from_spec(&c.to_spec(), &ctx()).unwrap(), c, "round trip");
        let e = check(&format!(
            "{hosts}  assets:\n    imageRegistry: https://mirror/\n    files:\n      containerd: {{version: v1.7.28}}\n      etcd: {{version: 'v3 6', sha256: {sha}}}\n"
        ))
        .unwrap_err();
        assert_eq!(
            paths(&e),
            [
                "spec.assets.files.containerd",
                "spec.assets.files.etcd.version",
                "spec.assets.imageRegistry"
            ]
        );
    }

    #[test]
    fn a_public_key_file_that_is_no_key_is_refused_after_reading_a_little() {
        let e = check("  provider: ec2\n  region: us-east-1\n  ssh: {publicKeyFile: /dev/zero}\n").unwrap_err();
        assert_eq!(paths(&e), ["spec.ssh.publicKeyFile"]);
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
    }

    #[test]
    fn numbers_are_held_to_what_aws_takes() {
        let ec2 = "  provider: ec2\n  ssh: {publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm me}\n  region: us-east-1\n";
        let group = |fields: &str| {
            check(&format!(
                "{ec2}  nodeGroups:\n  - {{name: a, desiredSize: 1, {fields}}}\n"
            ))
        };
        let e = group("maxSize: 4294967295").unwrap_err();
        assert_eq!(paths(&e), ["spec.nodeGroups[0].maxSize"]);
        let e = group("volume: {type: gp3, iops: 4294967295, throughput: 2000}").unwrap_err();
        assert_eq!(
            paths(&e),
            ["spec.nodeGroups[0].volume.iops", "spec.nodeGroups[0].volume.throughput"]
        );
        let e = group("volume: {type: io2}").unwrap_err();
        assert_eq!(paths(&e), ["spec.nodeGroups[0].volume.iops"]);
        assert!(group("volume: {type: io1, iops: 5000}").is_ok());
        assert!(group("maxSize: 1000, volume: {type: gp3, iops: 16000, throughput: 1000}").is_ok());
        let tags: String = (0..45).map(|i| format!("t{i}: v, ")).collect();
        let e = check(&format!("{ec2}  tags: {{{tags}}}\n")).unwrap_err();
        assert_eq!(paths(&e), ["spec.tags"]);
        assert_eq!(aws_i32(MAX_GROUP_SIZE), 1000);
    }
}
