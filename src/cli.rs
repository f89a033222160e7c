//! Command-line interface: clap derive types only. Help text comes from these doc comments; behaviour lives in
//! [`crate::app`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::Phase;

/// Provision Kubernetes clusters on AWS (EKS or self-built), from one declarative spec.
///
/// Exit codes: 0 success; 1 failure (bad spec, cloud error, failed resources); 2 `plan --detailed-exitcode` found
/// changes; 3 the cluster's state is locked by another run; 4 a deadline passed (re-run to continue); 5 `deploy`:
/// the new revision failed and ECS rolled the service back; 64 bad command line; 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "kforge", version, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// AWS region; default: the spec's region, then AWS_REGION / AWS_DEFAULT_REGION, then the profile's
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS shared-config profile (AWS_PROFILE works too)
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// AWS API endpoint, e.g. a local emulator (AWS_ENDPOINT_URL works too)
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// State store: a directory, or s3://BUCKET/PREFIX for teams [default: ~/.kforge]
    #[arg(
        long,
        global = true,
        env = "KFORGE_STATE",
        hide_env_values = true,
        value_name = "DIR|URL"
    )]
    pub state: Option<String>,
    /// Output format of results on stdout
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress output; results and errors only
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How many cloud operations (and, in the bootstrap, hosts) run at once
    #[arg(long, global = true, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Give up on the whole run after this long (e.g. 30m, 1h)
    #[arg(long, global = true, default_value = "45m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Break the cluster's state lock held by another run (only when that run is known to be dead)
    #[arg(long, global = true)]
    pub force_unlock: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create resources
    #[command(subcommand)]
    Create(CreateCommand),
    /// Show what apply would change, without changing anything
    Plan(PlanArgs),
    /// Reconcile the cloud with a spec (create what is missing, update what differs)
    Apply(ApplyArgs),
    /// Delete resources
    #[command(subcommand)]
    Delete(DeleteCommand),
    /// Show resources
    #[command(subcommand)]
    Get(GetCommand),
    /// Check input without touching the cloud
    #[command(subcommand)]
    Validate(ValidateCommand),
    /// Change the size of a node group
    #[command(subcommand)]
    Scale(ScaleCommand),
    /// Move a cluster to the next Kubernetes minor version
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Roll a self-built cluster's nodes one at a time (drain, update, validate)
    #[command(subcommand, name = "rolling-update")]
    RollingUpdate(RollingUpdateCommand),
    /// Back up a self-built cluster's etcd to the state store
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Restore a self-built cluster's etcd from a backup
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Push container images to ECR or any OCI registry
    #[command(subcommand)]
    Push(PushCommand),
    /// Deploy an ECS (Fargate) service from a `kind: EcsService` spec and wait until it is stable
    Deploy(DeployArgs),
    /// Add an EKS cluster to a kubeconfig (other entries kept) and make it the current context; for a self-built
    /// cluster, write an admin kubeconfig (client certificate) of its own [default: ~/.kube/kforge-NAME.yaml]
    Kubeconfig {
        /// Cluster name
        name: String,
        /// File to merge into [default: first of $KUBECONFIG, else ~/.kube/config]
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
    /// Print an EKS bearer token as a kubectl ExecCredential (the exec plugin of kforge's kubeconfigs)
    Token {
        /// EKS cluster name
        #[arg(long)]
        cluster: String,
    },
    /// Print the JSON Schema of a spec kind (for editors and CI linting)
    Schema {
        /// Which document
        #[arg(value_enum, default_value_t = SchemaKind::Cluster)]
        kind: SchemaKind,
    },
    /// Print a shell completion script
    Completion {
        /// Shell to generate completions for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// `kind: Cluster`
    Cluster,
    /// `kind: EcsService`
    #[value(name = "ecs-service", alias = "EcsService")]
    EcsService,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Service spec file (YAML, `kind: EcsService`)
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a cluster from a spec; re-running it resumes and converges
    Cluster(CreateClusterArgs),
}

#[derive(Debug, Args)]
pub struct SpecFile {
    /// Cluster spec file (YAML)
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CreateClusterArgs {
    #[command(flatten)]
    pub apply: ApplyArgs,
    /// Print the fully defaulted spec and stop; nothing is called
    #[arg(long)]
    pub dry_run: bool,
    /// Do not add the new EKS cluster to a kubeconfig
    #[arg(long)]
    pub no_kubeconfig: bool,
    /// Kubeconfig to merge the new EKS cluster into [default: first of $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "FILE", conflicts_with = "no_kubeconfig")]
    pub kubeconfig: Option<PathBuf>,
}

/// How the bootstrap phase of self-built clusters works on its hosts.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// How long to keep trying to reach each host's sshd
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub ssh_timeout: std::time::Duration,
    /// How long etcd and each API server get to report healthy
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub health_timeout: std::time::Duration,
    #[command(flatten)]
    pub drain: DrainArgs,
}

/// How a node is drained before it is taken away (a host removed from the spec, a rolling update).
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// How long evictions of one node's pods may wait for PodDisruptionBudgets
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Evict pods that keep data in emptyDir volumes too (that data is lost)
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Evict pods that no controller recreates too (kubectl drain's --force)
    #[arg(long)]
    pub force_drain: bool,
}

#[derive(Debug, Subcommand)]
pub enum RollingUpdateCommand {
    /// Restart or replace a self-built cluster's out-of-date nodes one at a time: drain, update, wait until Ready
    /// and `validate cluster` passes, uncordon; masters only while etcd keeps quorum. Re-running resumes
    Cluster(RollingUpdateArgs),
}

#[derive(Debug, Args)]
pub struct RollingUpdateArgs {
    /// Cluster name (or give -f)
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub name: Option<String>,
    /// Cluster spec file: roll to this spec (the name is read from it) instead of the last applied one
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Roll every node, out of date or not
    #[arg(long)]
    pub force: bool,
    /// Only the hosts of these roles (kops' --instance-group-roles), e.g. master or worker
    #[arg(long, value_enum, value_delimiter = ',')]
    pub role: Vec<crate::spec::HostRole>,
    /// List what would roll and why; nothing is changed
    #[arg(long)]
    pub dry_run: bool,
    /// How long the cluster gets to pass `validate cluster` after each node
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub validate_timeout: std::time::Duration,
    /// Provider ec2: only replace the worker instances (no drain, bootstrap or validation through the cluster's
    /// API; masters are left alone); the new machines join at the next `kforge apply`
    #[arg(long)]
    pub cloud_only: bool,
    /// Provider ec2: how many instances of one Auto Scaling group are replaced at once
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_unavailable: u16,
    /// Provider ec2: launch each batch's replacements first (the group grows, its maximum too if it must), and
    /// drain and terminate the old instances only once those are in service
    #[arg(long)]
    pub surge: bool,
    /// Provider ec2: how long an Auto Scaling group gets to replace a terminated instance
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
    pub replace_timeout: std::time::Duration,
    /// Provider ec2: how long to wait for a new machine to print its SSH host keys to the console
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub host_key_timeout: std::time::Duration,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write an etcd snapshot of a self-built cluster (from a healthy member, over TLS, checksum recorded) to the
    /// state store, private as its PKI is
    Cluster {
        /// Cluster name
        name: String,
        /// How long to keep trying to reach each master
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        ssh_timeout: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Restore a self-built cluster's etcd from a backup: API servers stopped, every member restored from the
    /// snapshot under a new cluster token, started, then the cluster validated
    Cluster(RestoreClusterArgs),
}

#[derive(Debug, Args)]
pub struct RestoreClusterArgs {
    /// Cluster name
    pub name: String,
    /// Backup ID (`kforge get backups NAME` lists them)
    #[arg(long, value_name = "ID")]
    pub backup: String,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// How long the cluster gets to pass `validate cluster` after the restore
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub validate_timeout: std::time::Duration,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecFile,
    /// Only these phases, e.g. network or network,security
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phase: Vec<Phase>,
    /// Exit 0 when there is nothing to change, 2 when there is (1 stays an error)
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub spec: SpecFile,
    /// Only these phases, e.g. network or network,security (earlier phases must exist already)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phase: Vec<Phase>,
    /// How long to wait for new EC2 machines to print their SSH host keys to the console (provider ec2)
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub host_key_timeout: std::time::Duration,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(Debug, Subcommand)]
pub enum DeleteCommand {
    /// Delete a cluster and everything tagged with it; works without local state
    Cluster(DeleteClusterArgs),
    /// Delete an ECS service: scale to 0, delete, wait until inactive (--purge: also its task definitions, log group,
    /// the roles and security group kforge created)
    Service(DeleteServiceArgs),
}

#[derive(Debug, Args)]
pub struct DeleteServiceArgs {
    /// Service name (with --cluster), or give -f
    #[arg(required_unless_present = "file", conflicts_with = "file", requires = "cluster")]
    pub name: Option<String>,
    /// ECS cluster of the service
    #[arg(long)]
    pub cluster: Option<String>,
    /// Service spec file; the names and region are read from it
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Also deregister and delete its task definitions and delete its log group and the roles and security group
    /// kforge created for it
    #[arg(long)]
    pub purge: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct DeleteClusterArgs {
    /// Cluster name (or give -f)
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub name: Option<String>,
    /// Cluster spec file; the name and region are read from it
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Return once deletions are requested instead of waiting until everything is gone
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// List the clusters in the state store
    Clusters,
    /// Show one cluster: its record and the resources tagged with it
    Cluster {
        /// Cluster name
        name: String,
    },
    /// List the machines a self-built cluster's bootstrap works on (address, role, SSH identity, expected host key)
    Hosts(SpecFile),
    /// List ECS services (of one cluster, or of every cluster in the region) with their rollout state
    Services {
        /// Only this ECS cluster
        #[arg(long)]
        cluster: Option<String>,
    },
    /// List the files a self-built cluster installs (URL, digest, where a mirror serves it), for air-gapped mirrors
    #[command(disable_version_flag = true)]
    Assets {
        /// Kubernetes minor version
        #[arg(long, value_name = "VERSION")]
        version: String,
        /// Also print each file's URL on this mirror (spec.assets.mirror)
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
    },
    /// List a self-built cluster's etcd backups in the state store (newest last)
    Backups {
        /// Cluster name
        name: String,
    },
    /// List an EKS cluster's managed nodegroups with their status and sizes
    Nodegroups {
        /// Cluster name
        #[arg(long)]
        cluster: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// Set an EKS managed nodegroup's desired size (and min/max when given); waits until it is ACTIVE
    Nodegroup(ScaleNodegroupArgs),
}

#[derive(Debug, Args)]
pub struct ScaleNodegroupArgs {
    /// Nodegroup name
    pub name: String,
    /// Cluster name
    #[arg(long)]
    pub cluster: String,
    /// Desired number of nodes
    #[arg(long)]
    pub nodes: u32,
    /// New minimum size (needed when --nodes is below the current minimum)
    #[arg(long)]
    pub min: Option<u32>,
    /// New maximum size (needed when --nodes is above the current maximum)
    #[arg(long)]
    pub max: Option<u32>,
    /// Return once the change is requested
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Upgrade an EKS cluster one minor version: control plane, then nodegroups, then addons; re-running resumes
    Cluster(UpgradeClusterArgs),
}

#[derive(Debug, Args)]
pub struct UpgradeClusterArgs {
    /// Cluster name
    pub name: String,
    /// Target Kubernetes version: the current one plus one minor (e.g. 1.34 from 1.33)
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// Show the steps and stop; nothing is changed
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ValidateCommand {
    /// Parse, default and check a spec; nothing is called
    Spec(SpecFile),
    /// Check a self-built cluster host by host: etcd health, API server /readyz, kubelets, node readiness
    Cluster {
        /// Cluster name
        name: String,
        /// How long to keep trying to reach each host
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        ssh_timeout: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Push an image without a Docker daemon: blobs the registry has are skipped, the rest stream from disk in
    /// parallel; the manifest goes last, so a failed push leaves nothing half-visible. Prints the pushed digest.
    ///
    /// Examples:
    ///   kforge push image oci:./out:v1 myapp:v1                 (ECR repository myapp, created if missing)
    ///   kforge push image docker-archive:app.tar registry.example.com/team/app:1.2
    ///   kforge push image myapp:dev localhost:5000/myapp --insecure   (from the local Docker daemon)
    #[command(verbatim_doc_comment)]
    Image(PushImageArgs),
}

#[derive(Debug, Args)]
pub struct PushImageArgs {
    /// The image: oci:DIR[:TAG], docker-archive:FILE.tar[:NAME:TAG], docker-daemon:NAME[:TAG] or NAME[:TAG]
    /// (a Docker daemon image, read through DOCKER_HOST or the default socket)
    pub source: String,
    /// Where to: an ECR repository REPO[:TAG] of the current account and region (created if missing), or any
    /// registry HOST[:PORT]/REPO[:TAG]; without a tag, the source's tag, else latest
    pub target: String,
    /// Blobs uploaded at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Tries per blob before giving up (network failures and 5xx answers are retried with backoff)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub attempts: u16,
    /// Plain HTTP to the registry (local or test registries)
    #[arg(long)]
    pub insecure: bool,
    /// Registry username (else the credentials `docker login` stored); not used for ECR
    #[arg(long, env = "KFORGE_REGISTRY_USERNAME", value_name = "NAME")]
    pub username: Option<String>,
    /// Read the registry password from stdin (else KFORGE_REGISTRY_PASSWORD)
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// ECR: the registry endpoint to push to instead of https://ACCOUNT.dkr.ecr.REGION.amazonaws.com (a private
    /// link, a proxy, a test registry); repositories and tokens still come from the ECR API
    #[arg(long, env = "KFORGE_ECR_REGISTRY_ENDPOINT", value_name = "URL")]
    pub registry_endpoint: Option<String>,
    /// ECR: scan images on push [default for new repositories: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub scan_on_push: Option<bool>,
    /// ECR: tags cannot be moved once pushed [default for new repositories: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub immutable_tags: Option<bool>,
    /// ECR lifecycle policy: keep only the N most recent images
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_images: Option<u32>,
    /// ECR lifecycle policy: expire untagged images after DAYS days
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub expire_untagged_days: Option<u32>,
}
