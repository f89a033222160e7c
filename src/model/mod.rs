//! The validated cluster: what a [`ClusterSpec`] means once every default is applied and every rule checked.
//!
//! Conversion happens in one place ([`Cluster::from_spec`]) and reports *all* semantic problems at once, each with
//! its field path and a hint. Past this boundary nothing re-checks or re-defaults: providers trust a `Cluster`.
//! [`Cluster::to_spec`] renders the fully defaulted spec back (for `--dry-run -o yaml`); parsing that output
//! yields the same `Cluster`.
//!
//! By concern: `network`, `nodes` (control plane, node groups), `eks` (EKS settings, existing IAM roles), `ssh`
//! (access, provider hosts' machines), `assets` (files, kubelet, machine image), `addons`, each with its types and
//! its validation; this module holds the `Cluster`, the checker every rule reports through, and the shared checks.

mod addons;
mod assets;
mod eks;
mod network;
mod nodes;
mod ssh;
#[cfg(test)]
mod tests;

pub use addons::*;
pub use assets::*;
pub use eks::*;
pub use network::*;
pub use nodes::*;
pub use ssh::*;
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
                kubelet: (self.kubelet.fail_cgroup_v1_set
                    || !self.kubelet.eviction_hard.is_empty()
                    || self.kubelet.image_gc_rendered().is_some())
                .then(|| spec::KubeletSpec {
                    fail_cgroup_v1: self.kubelet.fail_cgroup_v1_set.then_some(self.kubelet.fail_cgroup_v1),
                    eviction_hard: (!self.kubelet.eviction_hard.is_empty()).then(|| self.kubelet.eviction_hard.clone()),
                    image_gc_high_threshold_percent: self.kubelet.image_gc_high_threshold_percent,
                    image_gc_low_threshold_percent: self.kubelet.image_gc_low_threshold_percent,
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
