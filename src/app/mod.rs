//! What each command does: raw arguments are turned into validated values here, once, and handed to the engine,
//! the delete sweep and the state store. Results go to stdout in the chosen format; progress and errors to stderr.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::CommandFactory;
use serde::Serialize;

use crate::aws::{Aws, AwsOptions};
use crate::cli::{
    ApplyArgs, BackupCommand, Cli, Command, CreateClusterArgs, CreateCommand, DeleteClusterArgs, DeleteCommand,
    DeleteServiceArgs, DeployArgs, GetCommand, GlobalArgs, OutputFormat, PlanArgs, PushCommand, PushImageArgs,
    RestoreCommand, RollingUpdateCommand, ScaleCommand, ScaleNodegroupArgs, SchemaKind, UpgradeClusterArgs,
    UpgradeCommand, ValidateCommand,
};
use crate::delete;
use crate::engine::{self, Ctx, ExecOptions, Phase};
use crate::model::{self, Cluster};
use crate::progress::{self, Event};
use crate::providers;
use crate::registry;
use crate::spec;
use crate::state::{self, ClusterRecord, StateStore};

mod cluster;
mod day_two;
mod output;
mod push;
mod service;

use cluster::*;
use day_two::*;
use output::*;
use push::*;
use service::*;

/// How a command ended, beyond success and error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Ok,
    /// `plan --detailed-exitcode` found changes.
    Changes,
}

/// Runs the command within `--timeout`, a hard deadline: a hung connection cannot hang a CI job.
pub async fn run(cli: Cli) -> anyhow::Result<Finished> {
    let limit = cli.global.timeout;
    // Commands holding a lock stop themselves at the deadline (so they release it); this is the backstop.
    match tokio::time::timeout(limit + LOCK_RELEASE_GRACE, run_command(cli)).await {
        Ok(r) => r,
        Err(_) => Err(RunTimedOut { limit }.into()),
    }
}

/// Time a command stopped at its deadline gets to release its lock.
const LOCK_RELEASE_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("gave up after {} (--timeout); what was started may still be in progress in AWS\n  hint: re-run the same command to continue, or raise --timeout", humantime::format_duration(*.limit))]
pub struct RunTimedOut {
    pub limit: Duration,
}

async fn run_command(cli: Cli) -> anyhow::Result<Finished> {
    let g = &cli.global;
    let s = &Session::new(g);
    match cli.command {
        Command::Create(CreateCommand::Cluster(args)) => create_cluster(s, args).await,
        // Only `create` adds the cluster to a kubeconfig, as eksctl does.
        Command::Apply(args) => apply(s, &args, None, "kforge apply").await,
        Command::Plan(args) => plan(s, args).await,
        Command::Delete(DeleteCommand::Cluster(args)) => delete_cluster(s, args).await,
        Command::Get(GetCommand::Clusters) => get_clusters(s).await,
        Command::Get(GetCommand::Cluster { name }) => get_cluster(s, &name).await,
        Command::Get(GetCommand::Nodegroups { cluster }) => get_nodegroups(s, &cluster).await,
        Command::Get(GetCommand::Hosts(spec)) => get_hosts(s, &spec.file).await,
        Command::Get(GetCommand::Assets { version, mirror }) => get_assets(g, &version, mirror.as_deref()),
        Command::Scale(ScaleCommand::Nodegroup(args)) => scale_nodegroup(s, args).await,
        Command::Upgrade(UpgradeCommand::Cluster(args)) => upgrade_cluster(s, args).await,
        Command::RollingUpdate(RollingUpdateCommand::Cluster(args)) => rolling_update_cluster(s, args).await,
        Command::Backup(BackupCommand::Cluster { name, ssh_timeout }) => backup_cluster(s, &name, ssh_timeout).await,
        Command::Restore(RestoreCommand::Cluster(args)) => restore_cluster(s, args).await,
        Command::Get(GetCommand::Backups { name }) => get_backups(s, &name).await,
        Command::Validate(ValidateCommand::Spec(f)) => validate_spec(g, &f.file),
        Command::Validate(ValidateCommand::Cluster { name, ssh_timeout }) => {
            validate_cluster(s, &name, ssh_timeout).await
        }
        Command::Kubeconfig { name, kubeconfig } => write_kubeconfig(s, &name, kubeconfig).await,
        Command::Token { cluster } => {
            // A protocol document for kubectl, so always JSON whatever -o says.
            let aws = s.aws(None).await;
            let credential = crate::aws::eks_token::exec_credential(&aws, &cluster).await?;
            println!("{}", serde_json::to_string(&credential)?);
            Ok(Finished::Ok)
        }
        Command::Push(PushCommand::Image(args)) => push_image(s, args).await,
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Cluster => spec::json_schema(),
                SchemaKind::EcsService => spec::ecs_service_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(Finished::Ok)
        }
        Command::Deploy(args) => deploy_service(s, args).await,
        Command::Delete(DeleteCommand::Service(args)) => delete_service(s, args).await,
        Command::Get(GetCommand::Services { cluster }) => get_services(s, cluster.as_deref()).await,
        Command::Completion { shell } => {
            // Into a buffer first: clap_complete panics when stdout breaks (`kforge completion bash | head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kforge", &mut script);
            write_stdout(&script)?;
            Ok(Finished::Ok)
        }
    }
}

/// `--region`, then the environment, as the spec's fallback.
fn fallback_region(g: &GlobalArgs) -> Option<String> {
    g.region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .filter(|r| !r.is_empty())
}

fn load(g: &GlobalArgs, file: &Path) -> anyhow::Result<Cluster> {
    model::load_cluster(file, fallback_region(g))
}

/// What every command starts from: the global flags, read once, and what they lead to, made on first use and
/// shared by the rest of the command: one AWS context per region, one state store.
pub(super) struct Session<'a> {
    pub g: &'a GlobalArgs,
    aws: tokio::sync::Mutex<std::collections::BTreeMap<Option<String>, Aws>>,
    store: tokio::sync::OnceCell<StateStore>,
}

impl<'a> Session<'a> {
    pub(super) fn new(g: &'a GlobalArgs) -> Session<'a> {
        Session {
            g,
            aws: Default::default(),
            store: Default::default(),
        }
    }

    /// The AWS clients for `region` (else `--region` or the environment's), made once per region.
    pub(super) async fn aws(&self, region: Option<&str>) -> Aws {
        let region = region.map(str::to_string).or_else(|| fallback_region(self.g));
        let mut made = self.aws.lock().await;
        if let Some(aws) = made.get(&region) {
            return aws.clone();
        }
        let aws = Aws::load(&AwsOptions {
            region: region.clone(),
            profile: self.g.profile.clone(),
            endpoint_url: self.g.endpoint_url.clone(),
        })
        .await;
        made.insert(region, aws.clone());
        aws
    }

    /// The state store of `--state` (an `s3://` one with a client in `region`, else the run's, else us-east-1,
    /// unless the profile says otherwise), made once.
    pub(super) async fn store(&self, region: Option<&str>) -> anyhow::Result<StateStore> {
        self.store
            .get_or_try_init(|| async {
                let location = self.g.state.as_deref();
                let aws = if location.is_some_and(|l| l.starts_with("s3://")) {
                    Some(Arc::new(self.aws(region.or(Some("us-east-1"))).await))
                } else {
                    None
                };
                StateStore::from_location(location, move || aws.expect("s3 location has a client"))
                    .map_err(anyhow::Error::from)
            })
            .await
            .cloned()
    }
}

fn exec_options(g: &GlobalArgs, started: Instant) -> ExecOptions {
    ExecOptions {
        concurrency: g.concurrency as usize,
        overall_deadline: Some(started + g.timeout),
        ..ExecOptions::default()
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, which CI runners send when a job is cancelled.
async fn interrupted() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `work` holding the cluster's lock; the lock is released however `work` ends: done, failed, Ctrl-C or
/// SIGTERM (exit 130), or the `--timeout` deadline.
async fn locked<T>(
    g: &GlobalArgs,
    started: Instant,
    store: &StateStore,
    cluster: &str,
    command: &str,
    ctx: Option<&Ctx>,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let lock = store.lock(cluster, command, g.force_unlock).await?;
    if let Some(ctx) = ctx {
        ctx.set_generation(lock.generation());
    }
    let deadline = tokio::time::Instant::from_std(started + g.timeout);
    let result = tokio::select! {
        r = work => r,
        _ = interrupted() => Err(anyhow::Error::new(Interrupted)),
        _ = tokio::time::sleep_until(deadline) => Err(RunTimedOut { limit: g.timeout }.into()),
    };
    let released = lock.release().await;
    let value = result?;
    released.context("releasing the state lock")?;
    Ok(value)
}

#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted; what was started may still be in progress in AWS\n  hint: re-run the same command: it finds what exists and continues"
)]
pub struct Interrupted;

#[derive(Debug, thiserror::Error)]
#[error("{count} resource{} failed:\n{}\n  hint: fix the cause and re-run; kforge continues from what exists", if *.count == 1 { "" } else { "s" }, .details)]
pub struct ResourcesFailed {
    pub count: usize,
    pub details: String,
}

fn failures(errors: &[anyhow::Error]) -> ResourcesFailed {
    ResourcesFailed {
        count: errors.len(),
        details: errors
            .iter()
            .map(|e| format!("  - {e:#}"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// Asks `prompt` on the terminal before deleting `what`; the answer must be `name`. Without a terminal, refuses.
fn confirm(what: &str, prompt: &str, name: &str) -> anyhow::Result<()> {
    confirm_action("delete", what, prompt, name)
}

/// Asks for `name` to be typed before `verb`ing `what`; refuses when nobody can answer (stdin not a terminal).
fn confirm_action(verb: &str, what: &str, prompt: &str, name: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to {verb} {what} without confirmation\n  hint: pass --yes (stdin is not a terminal)");
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != name {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// The region of an existing cluster: flags and environment first, then what the state store recorded.
async fn cluster_region(s: &Session<'_>, name: &str) -> anyhow::Result<Option<String>> {
    let g = s.g;
    Ok(match fallback_region(g) {
        Some(r) => Some(r),
        None => s.store(None).await?.get(name).await?.and_then(|r| r.region),
    })
}

/// A context for a cluster that already exists somewhere in AWS (region from [`cluster_region`]).
async fn existing_cluster_ctx(s: &Session<'_>, name: &str) -> anyhow::Result<Ctx> {
    let region = cluster_region(s, name).await?;
    let aws = s.aws(region.as_deref()).await;
    anyhow::ensure!(
        !aws.region().is_empty(),
        "no region for cluster {name}\n  hint: pass --region, or set AWS_REGION"
    );
    Ok(Ctx::new(aws, name))
}

/// An `Aws` for commands that name no spec: the region must come from `--region`, the environment or the profile.
async fn regional_aws(s: &Session<'_>, region: Option<&str>, what: &str) -> anyhow::Result<Aws> {
    let aws = s.aws(region).await;
    if aws.region().is_empty() {
        anyhow::bail!("{what} needs a region\n  hint: pass --region or set AWS_REGION");
    }
    Ok(aws)
}
