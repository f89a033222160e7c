//! Command-line interface: clap derive types only. Help text comes from these doc comments; behaviour lives in
//! [`crate::app`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::Phase;

/// Provision Kubernetes clusters on AWS (EKS or self-built), from one declarative spec.
///
/// Exit codes: 0 success; 1 failure (bad spec, cloud error, failed resources); 2 `plan --detailed-exitcode` found
/// changes; 3 the cluster's state is locked by another run; 4 a deadline passed (re-run to continue);
/// 64 bad command line; 130 interrupted.
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
    /// How many cloud operations run at once
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
    /// Add an EKS cluster to a kubeconfig (other entries kept) and make it the current context
    Kubeconfig {
        /// EKS cluster name
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
    /// Print the JSON Schema of the cluster spec (for editors and CI linting)
    Schema,
    /// Print a shell completion script
    Completion {
        /// Shell to generate completions for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    pub spec: SpecFile,
    /// Only these phases, e.g. network or network,security (earlier phases must exist already)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phase: Vec<Phase>,
    /// Print the fully defaulted spec and stop; nothing is called
    #[arg(long)]
    pub dry_run: bool,
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
}

#[derive(Debug, Subcommand)]
pub enum DeleteCommand {
    /// Delete a cluster and everything tagged with it; works without local state
    Cluster(DeleteClusterArgs),
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
}

#[derive(Debug, Subcommand)]
pub enum ValidateCommand {
    /// Parse, default and check a spec; nothing is called
    Spec(SpecFile),
}
