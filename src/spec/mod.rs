//! The user-facing cluster spec: serde DTOs exactly as written in YAML, and the loader that turns a file into them.
//!
//! Invariants: every struct rejects unknown fields; syntax and type errors carry `file:line:col`; nothing here
//! applies defaults or checks meaning. That happens once, in [`crate::model`], which converts a [`ClusterSpec`]
//! into a validated `Cluster` and can render the fully defaulted spec back (for `--dry-run -o yaml`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod ecs;
#[cfg(test)]
mod fuzz_tests;

pub const API_VERSION: &str = "kforge.dev/v1alpha1";

/// A `kind: Cluster` document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Always `kforge.dev/v1alpha1`.
    pub api_version: String,
    /// Always `Cluster`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ClusterBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Cluster name: 1–40 characters, lowercase letters, digits and '-', starting with a letter.
    pub name: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// EKS managed control plane with managed nodegroups.
    Eks,
    /// Self-built cluster on EC2 instances, bootstrapped by kforge over SSH.
    Ec2,
    /// Self-built cluster on machines you already have; no cloud calls at all.
    Hosts,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Eks => "eks",
            Provider::Ec2 => "ec2",
            Provider::Hosts => "hosts",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterBody {
    pub provider: Provider,
    /// AWS region. Default: `--region`, then `AWS_REGION` / `AWS_DEFAULT_REGION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Kubernetes minor version, e.g. "1.33". Default: the newest supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// Control-plane machines (provider ec2 only; EKS manages its own, hosts take roles from `hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneSpec>,
    /// Worker groups. Default for eks/ec2: one group `ng-1` of 2 m5.large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_groups: Option<Vec<NodeGroupSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
    /// Existing machines (provider hosts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addons: Option<Vec<AddonSpec>>,
    /// IAM roles: created by kforge unless existing ones are named here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<IamSpec>,
    /// EKS control-plane settings (provider eks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks: Option<EksSpec>,
    /// Machine image of provider ec2: `al2023` (default: Amazon Linux 2023, resolved from its public SSM parameter),
    /// `ubuntu` (Ubuntu 24.04 LTS, likewise) or an AMI id (`ami-0123...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra tags put on every AWS resource kforge creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Where self-built clusters' hosts download etcd, containerd and the Kubernetes binaries (provider ec2 and
    /// hosts). Default: the upstream URLs of kforge's manifest, each checked against its pinned digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<AssetsSpec>,
    /// Settings of self-built clusters' kubelets (provider ec2 and hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletSpec {
    /// Whether the kubelet refuses to run on a cgroup v1 host. Default: true from Kubernetes 1.35 on (which
    /// requires cgroup v2, so `false` is refused there), false before (a cgroup v1 host gets a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_cgroup_v1: Option<bool>,
    /// Hard eviction thresholds by signal (`memory.available`, `nodefs.available`, `nodefs.inodesFree`,
    /// `imagefs.available`, `imagefs.inodesFree`, `containerfs.available`, `containerfs.inodesFree`,
    /// `pid.available`): a quantity (`500Mi`) or a percentage (`10%`). Signals not listed keep the kubelet's
    /// defaults (memory 100Mi, nodefs 10%, nodefs inodes 5%, imagefs 15%, imagefs inodes 5%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// Image filesystem usage (percent) above which the kubelet deletes unused images. Default 85; 100 turns
    /// image garbage collection off.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "imageGCHighThresholdPercent"
    )]
    pub image_gc_high_threshold_percent: Option<u32>,
    /// Usage (percent) image garbage collection frees down to; below the high threshold. Default 80.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "imageGCLowThresholdPercent"
    )]
    pub image_gc_low_threshold_percent: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssetsSpec {
    /// Base URL of a mirror (air-gapped installs): a file of upstream `https://HOST/PATH` is fetched from
    /// `MIRROR/HOST/PATH`. `kforge get assets --version V` lists what to put there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Per asset (by its name in the manifest: etcd, containerd, runc, cni-plugins, kubernetes-server,
    /// kubernetes-node): another URL and the digest of the file found there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, AssetFileSpec>>,
    /// Registry every addon image and the sandbox (pause) image are pulled from instead of their upstream
    /// registries (air-gapped installs): `registry.k8s.io/coredns/coredns:v1.12.1` becomes
    /// `IMAGE_REGISTRY/coredns/coredns:v1.12.1`. `kforge get assets --version V` lists the images to mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssetFileSpec {
    /// Another version than the manifest's (e.g. `v1.7.28` for containerd): its URL follows, and a digest is
    /// required since the manifest pins only its own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Download URL; `{arch}` becomes amd64 or arm64, `{version}` the version without its leading `v`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Hex sha256 of the file (required when url is given, unless sha512 is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Hex sha512 of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Topology {
    /// Public subnets for load balancers and NAT, private subnets for nodes.
    Private,
    /// Public subnets only; nodes get public addresses.
    Public,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum NatGateways {
    None,
    Single,
    PerZone,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum SubnetType {
    Public,
    Private,
}

impl fmt::Display for SubnetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubnetType::Public => "public",
            SubnetType::Private => "private",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    /// CIDR of the VPC kforge creates. Default 10.0.0.0/16. Exclusive with `vpcId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_cidr: Option<String>,
    /// Use this existing VPC instead of creating one; then `subnets` must list existing subnet ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Availability zones. Default: the region's first three (`<region>a`, `b`, `c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// Default `private`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// Default `single` for the private topology, `none` for public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateways: Option<NatGateways>,
    /// Subnets; computed from `vpcCidr` and `zones` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<SubnetSpec>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubnetSpec {
    pub zone: String,
    #[serde(rename = "type")]
    pub kind: SubnetType,
    /// CIDR inside the VPC (created subnets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Existing subnet id (with `network.vpcId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// 1, 3 or 5 masters, spread one per zone. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Default t3.medium.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// CIDRs allowed to reach the Kubernetes API (TCP 6443). Default 0.0.0.0/0, as kops and EKS: the API
    /// authenticates every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_allowed_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroupSpec {
    pub name: String,
    /// Shorthand for a single entry in `instanceTypes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Several types (spot groups should list more than one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_size: Option<u32>,
    /// Run on spot capacity. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<bool>,
    /// Use a GPU-enabled AMI. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<TaintSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSpec>,
    /// Which subnets the group runs in. Default: private in the private topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<SubnetType>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaintSpec {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSpec {
    /// GiB. Default 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// gp3 (default), gp2, io1, io2.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Default true; kforge refuses unencrypted root volumes unless set to false explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshSpec {
    /// OpenSSH public key line (`ssh-ed25519 AAAA... comment`). Exclusive with `publicKeyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Path of a public key file, relative to the spec file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<String>,
    /// Private key kforge logs in with, relative to the spec file. Default: `publicKeyFile` without `.pub`, else
    /// the keys of the running ssh-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Login user on the machines. Default: `ec2-user` (al2023 and AMI ids), `ubuntu` (ubuntu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// CIDRs allowed to reach port 22. Default: none (SSH closed to the world).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<BastionSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BastionSpec {
    /// Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Default t3.micro.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum HostRole {
    Master,
    Worker,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostSpec {
    pub name: String,
    /// IP address or DNS name.
    pub address: String,
    /// Default 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Default root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Private key used to log in, relative to the spec file.
    pub identity_file: String,
    pub role: HostRole,
    /// The host's public key line (`ssh-ed25519 AAAA...`); when omitted it must be in ~/.ssh/known_hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IamSpec {
    /// Existing role the EKS control plane assumes (provider eks). Default: kforge creates
    /// `kforge-<cluster>-cluster` with AmazonEKSClusterPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_role_arn: Option<String>,
    /// Existing role the worker nodes assume (provider eks). Default: kforge creates `kforge-<cluster>-node` with
    /// the worker, CNI and ECR read-only policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_role_arn: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddonSpec {
    pub name: String,
    /// Default: the version matched to the Kubernetes version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EksSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EksEndpointSpec>,
    /// Control-plane log types sent to CloudWatch: api, audit, authenticator, controllerManager, scheduler.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Vec<String>>,
    /// KMS key ARN for envelope encryption of Kubernetes secrets. Can be added later, never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_encryption_key_arn: Option<String>,
    /// Create the IAM OIDC provider for IAM roles for service accounts (IRSA). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_oidc: Option<bool>,
    /// Pods matching a profile's selectors run on Fargate (in the private subnets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fargate_profiles: Option<Vec<FargateProfileSpec>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EksEndpointSpec {
    /// The API server is reachable from the internet (limited to `publicAccessCidrs`). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access: Option<bool>,
    /// The API server is reachable from inside the VPC (nodes use it). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_access: Option<bool>,
    /// Who may reach the public endpoint. Default [0.0.0.0/0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FargateProfileSpec {
    pub name: String,
    /// 1 to 5 selectors; a pod matching any of them runs on Fargate.
    pub selectors: Vec<FargateSelectorSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FargateSelectorSpec {
    pub namespace: String,
    /// Pods must carry all of these labels. Default: any pod of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Why a spec file could not be read as a document; `Display` is the whole user-facing message.
#[derive(Debug, thiserror::Error)]
pub enum SpecLoadError {
    #[error("cannot read spec {path}: {source}\n  hint: check the path given to -f")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {message}\n  hint: {hint}")]
    Parse {
        location: String,
        message: String,
        hint: String,
    },
}

/// Reads and parses a spec file; no defaults, no semantic checks.
pub fn load(path: &Path) -> Result<ClusterSpec, SpecLoadError> {
    load_kind(path, "Cluster", "this command takes a `kind: Cluster` document")
}

/// The largest spec file kforge reads: the biggest real spec is a few kilobytes.
pub const MAX_SPEC_BYTES: u64 = 1024 * 1024;
/// How deeply a spec's YAML may nest (a real spec nests about 6 levels).
pub const MAX_DEPTH: usize = 64;

/// Reads and parses a document of `kind` (`Cluster`, `EcsService`); `hint` says which command takes it.
pub fn load_kind<T: DeserializeOwned + Serialize>(path: &Path, kind: &str, hint: &str) -> Result<T, SpecLoadError> {
    let text = read_text(path)?;
    parse_kind(&text, &path.display().to_string(), kind, hint)
}

/// A spec file's text: at most `MAX_SPEC_BYTES`, UTF-8 (an invalid byte is named by line, column and offset).
pub fn read_text(path: &Path) -> Result<String, SpecLoadError> {
    let origin = path.display().to_string();
    let bytes = crate::fsutil::read_limited(path, MAX_SPEC_BYTES).map_err(|source| {
        if source.kind() == std::io::ErrorKind::InvalidData {
            SpecLoadError::Parse {
                location: origin.clone(),
                message: format!("the file is {source}"),
                hint: "a kforge spec is a few kilobytes of YAML: check the path given to -f".into(),
            }
        } else {
            SpecLoadError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = bytes[..at].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        SpecLoadError::Parse {
            location: format!("{origin}:{line}:{}", at - line_start + 1),
            message: format!(
                "not UTF-8 text: byte {at} (0x{:02x}) is not part of a UTF-8 character",
                bytes[at]
            ),
            hint: "save the spec as UTF-8".into(),
        }
    })
}

/// Refuses YAML nested deeper than `MAX_DEPTH` before any parser sees it (deeply nested documents make YAML
/// parsers slow or exhaust their stack). Counts, per line, the open flow collections (`[`, `{`, outside quotes and
/// comments), the block levels (a stack of indentations, as Python counts its blocks) and the `- ` entries that
/// open on that line. An over-estimate for odd layouts, which only a spec nested near the limit could meet.
fn check_depth(text: &str, origin: &str) -> Result<(), SpecLoadError> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow: usize = 0;
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if flow == 0 {
            while indents.last().is_some_and(|top| *top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let mut rest = body;
        let mut dashes = 0;
        while let Some(r) = rest.strip_prefix("- ").or_else(|| (rest == "-").then_some("")) {
            dashes += 1;
            rest = r.trim_start_matches(' ');
        }
        let mut deepest = flow;
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for ch in rest.chars() {
            match quote {
                Some(q) if ch == q => quote = None,
                Some(_) => {}
                None => match ch {
                    '\'' | '"' => quote = Some(ch),
                    '#' if prev == ' ' => break,
                    '[' | '{' => {
                        flow += 1;
                        deepest = deepest.max(flow);
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            prev = ch;
        }
        let depth = indents.len() + dashes + deepest;
        if depth > MAX_DEPTH {
            return Err(SpecLoadError::Parse {
                location: format!("{origin}:{}:1", n + 1),
                message: format!("the document nests deeper than {MAX_DEPTH} levels"),
                hint: "a kforge spec nests a few levels: check that this is the spec you meant".into(),
            });
        }
    }
    Ok(())
}

/// The line where a second YAML document starts (`---` after content, or the second `---`).
fn second_document_line(text: &str) -> Option<usize> {
    let mut content = false;
    let mut markers = 0;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") {
            markers += 1;
            if content || markers == 2 {
                return Some(n + 1);
            }
        } else if !t.is_empty() && !t.starts_with('#') {
            content = true;
        }
    }
    None
}

/// Parses YAML text; `origin` names the file in error messages.
pub fn parse(text: &str, origin: &str) -> Result<ClusterSpec, SpecLoadError> {
    parse_kind(text, origin, "Cluster", "this command takes a `kind: Cluster` document")
}

/// The `kind` of a YAML document, if it has one.
pub fn kind_of(text: &str) -> Option<String> {
    check_depth(text, "").ok()?;
    serde_norway::from_str::<DocumentHeader>(text).ok().and_then(|h| h.kind)
}

pub(crate) fn parse_kind<T: DeserializeOwned + Serialize>(
    text: &str,
    origin: &str,
    expected: &str,
    hint: &str,
) -> Result<T, SpecLoadError> {
    if text.len() as u64 > MAX_SPEC_BYTES {
        return Err(SpecLoadError::Parse {
            location: origin.to_string(),
            message: format!("the document is larger than {MAX_SPEC_BYTES} bytes, the most kforge reads of a spec"),
            hint: "a kforge spec is a few kilobytes of YAML".into(),
        });
    }
    check_depth(text, origin)?;
    if let Some(line) = second_document_line(text) {
        return Err(SpecLoadError::Parse {
            location: format!("{origin}:{line}:1"),
            message: "a second YAML document starts here: a spec file holds one document".into(),
            hint: "put each spec in a file of its own".into(),
        });
    }
    // A key given twice in one mapping: typed parsing would keep the last one silently (maps such as tags).
    let untyped = serde_norway::from_str::<serde_norway::Value>(text);
    if let Err(e) = &untyped
        && e.to_string().contains("duplicate entry")
    {
        return Err(parse_error(e, origin));
    }
    // Check apiVersion/kind first so a document of another kind gets a clear message instead of
    // a list of unknown fields.
    if let Ok(header) = serde_norway::from_str::<DocumentHeader>(text) {
        if let Some(kind) = header.kind.as_deref()
            && kind != expected
        {
            return Err(SpecLoadError::Parse {
                location: format!("{origin}:1:1"),
                message: format!("kind: expected `{expected}`, found `{kind}`"),
                hint: hint.into(),
            });
        }
        if let Some(v) = header.api_version.as_deref()
            && v != API_VERSION
        {
            return Err(SpecLoadError::Parse {
                location: format!("{origin}:1:1"),
                message: format!("apiVersion: expected `{API_VERSION}`, found `{v}`"),
                hint: format!("set `apiVersion: {API_VERSION}`"),
            });
        }
    }
    let parsed: T = serde_norway::from_str(text).map_err(|e| parse_error(&e, origin))?;
    if let Some(path) = untyped.ok().and_then(|input| null_in_a_string(&input, &parsed)) {
        return Err(SpecLoadError::Parse {
            location: null_location(text, &path)
                .map_or_else(|| origin.to_string(), |(l, c)| format!("{origin}:{l}:{c}")),
            message: format!("{path}: null where a string is required"),
            hint: "give the field a value, quote it ('null') if you mean that word, or leave the field out".into(),
        });
    }
    Ok(parsed)
}

/// The field path of the first YAML `null` (or empty value) that typed parsing turned into a string: serde_norway
/// gives a plain `null` to a `String` field as the text "null", so `address: null` would reach AWS or SSH as a
/// host called null. Found by comparing the untyped document with the typed value written back: where the
/// document says null and the typed value holds a string, the field wanted a string.
fn null_in_a_string<T: Serialize>(input: &serde_norway::Value, parsed: &T) -> Option<String> {
    use serde_norway::Value;
    fn walk(input: &Value, typed: &Value, path: &str) -> Option<String> {
        match (input, typed) {
            (Value::Null, Value::String(_)) => Some(path.to_string()),
            (Value::Mapping(a), Value::Mapping(b)) => a.iter().find_map(|(k, v)| {
                let key = k.as_str()?;
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                walk(v, b.get(key)?, &child)
            }),
            (Value::Sequence(a), Value::Sequence(b)) => a
                .iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (v, w))| walk(v, w, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    let typed = serde_norway::to_value(parsed).ok()?;
    walk(input, &typed, "")
}

/// Line and column of the null at `path`, when exactly one line of the document gives the path's last key a null
/// or empty value (a flow mapping or a repeated key name leaves the field path alone to say where).
fn null_location(text: &str, path: &str) -> Option<(usize, usize)> {
    let key = path.rsplit('.').next()?.split('[').next()?;
    let found: Vec<(usize, usize)> = text
        .lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let trimmed = line.trim_start();
            let col = line.len() - trimmed.len();
            let (col, rest) = match trimmed.strip_prefix("- ") {
                Some(r) => (col + 2, r.trim_start()),
                None => (col, trimmed),
            };
            let value = rest.strip_prefix(key)?.trim_start().strip_prefix(':')?;
            let value = value.split(" #").next().unwrap_or_default().trim();
            matches!(value, "" | "~" | "null" | "Null" | "NULL").then_some((n + 1, col + 1))
        })
        .collect();
    (found.len() == 1).then(|| found[0])
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DocumentHeader {
    api_version: Option<String>,
    kind: Option<String>,
}

fn parse_error(e: &serde_norway::Error, origin: &str) -> SpecLoadError {
    // Without a position from the parser, the error is the document's as a whole: its start.
    let location = match e.location() {
        Some(l) => format!("{origin}:{}:{}", l.line(), l.column()),
        None => format!("{origin}:1:1"),
    };
    let mut message = e.to_string();
    // serde_norway appends " at line L column C"; the location is already in front.
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    let hint = if message.contains("duplicate entry") || message.contains("duplicate field") {
        "the key appears twice in one mapping: keep one"
    } else if message.contains("unknown field") {
        "remove the field or fix its spelling; `kforge schema` lists every field"
    } else if message.contains("missing field") {
        "add the required field; docs/spec.md documents every field"
    } else if message.contains("invalid type") || message.contains("unknown variant") {
        "fix the value's type; docs/spec.md shows an example for every field"
    } else {
        "fix the YAML syntax at that position"
    };
    SpecLoadError::Parse {
        location,
        message,
        hint: hint.into(),
    }
}

/// JSON Schema of the `Cluster` document, for editors and `kforge schema`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ClusterSpec)).expect("schema serializes")
}

/// JSON Schema of the `EcsService` document (`kforge schema EcsService`).
pub fn ecs_service_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ecs::EcsServiceSpec)).expect("schema serializes")
}

#[cfg(test)]
mod tests;
