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
    BackupCommand, Cli, Command, CreateClusterArgs, CreateCommand, DeleteClusterArgs, DeleteCommand, DeleteServiceArgs,
    DeployArgs, GetCommand, GlobalArgs, OutputFormat, PlanArgs, PushCommand, PushImageArgs, RestoreCommand,
    RollingUpdateCommand, ScaleCommand, ScaleNodegroupArgs, SchemaKind, UpgradeClusterArgs, UpgradeCommand,
    ValidateCommand,
};
use crate::delete;
use crate::engine::{self, Ctx, ExecOptions, Phase};
use crate::model::{self, Cluster};
use crate::progress::{self, Event};
use crate::providers;
use crate::registry;
use crate::spec;
use crate::state::{self, ClusterRecord, StateStore};

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
    match cli.command {
        Command::Create(CreateCommand::Cluster(args)) => create_cluster(g, args).await,
        Command::Apply(args) => {
            apply(
                g,
                CreateClusterArgs {
                    spec: args.spec,
                    phase: args.phase,
                    dry_run: false,
                    // Only `create` adds the cluster to a kubeconfig, as eksctl does.
                    no_kubeconfig: true,
                    kubeconfig: None,
                    host_key_timeout: args.host_key_timeout,
                    bootstrap: args.bootstrap,
                },
                "kforge apply",
            )
            .await
        }
        Command::Plan(args) => plan(g, args).await,
        Command::Delete(DeleteCommand::Cluster(args)) => delete_cluster(g, args).await,
        Command::Get(GetCommand::Clusters) => get_clusters(g).await,
        Command::Get(GetCommand::Cluster { name }) => get_cluster(g, &name).await,
        Command::Get(GetCommand::Nodegroups { cluster }) => get_nodegroups(g, &cluster).await,
        Command::Get(GetCommand::Hosts(spec)) => get_hosts(g, &spec.file).await,
        Command::Get(GetCommand::Assets { version, mirror }) => get_assets(g, &version, mirror.as_deref()),
        Command::Scale(ScaleCommand::Nodegroup(args)) => scale_nodegroup(g, args).await,
        Command::Upgrade(UpgradeCommand::Cluster(args)) => upgrade_cluster(g, args).await,
        Command::RollingUpdate(RollingUpdateCommand::Cluster(args)) => rolling_update_cluster(g, args).await,
        Command::Backup(BackupCommand::Cluster { name, ssh_timeout }) => backup_cluster(g, &name, ssh_timeout).await,
        Command::Restore(RestoreCommand::Cluster(args)) => restore_cluster(g, args).await,
        Command::Get(GetCommand::Backups { name }) => get_backups(g, &name).await,
        Command::Validate(ValidateCommand::Spec(f)) => validate_spec(g, &f.file),
        Command::Validate(ValidateCommand::Cluster { name, ssh_timeout }) => {
            validate_cluster(g, &name, ssh_timeout).await
        }
        Command::Kubeconfig { name, kubeconfig } => write_kubeconfig(g, &name, kubeconfig).await,
        Command::Token { cluster } => {
            // A protocol document for kubectl, so always JSON whatever -o says.
            let aws = aws_for(g, None).await;
            let credential = crate::aws::eks_token::exec_credential(&aws, &cluster).await?;
            println!("{}", serde_json::to_string(&credential)?);
            Ok(Finished::Ok)
        }
        Command::Push(PushCommand::Image(args)) => push_image(g, args).await,
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Cluster => spec::json_schema(),
                SchemaKind::EcsService => spec::ecs_service_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(Finished::Ok)
        }
        Command::Deploy(args) => deploy_service(g, args).await,
        Command::Delete(DeleteCommand::Service(args)) => delete_service(g, args).await,
        Command::Get(GetCommand::Services { cluster }) => get_services(g, cluster.as_deref()).await,
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

async fn aws_for(g: &GlobalArgs, region: Option<&str>) -> Aws {
    Aws::load(&AwsOptions {
        region: region.map(str::to_string).or_else(|| fallback_region(g)),
        profile: g.profile.clone(),
        endpoint_url: g.endpoint_url.clone(),
    })
    .await
}

async fn state_store(g: &GlobalArgs, region: Option<&str>) -> anyhow::Result<StateStore> {
    let location = g.state.as_deref();
    let aws = if location.is_some_and(|l| l.starts_with("s3://")) {
        // The bucket's region is the run's region unless the profile says otherwise.
        Some(Arc::new(aws_for(g, region.or(Some("us-east-1"))).await))
    } else {
        None
    };
    Ok(StateStore::from_location(location, move || {
        aws.expect("s3 location has a client")
    })?)
}

fn exec_options(g: &GlobalArgs, started: Instant) -> ExecOptions {
    ExecOptions {
        concurrency: g.concurrency as usize,
        overall_deadline: Some(started + g.timeout),
        ..ExecOptions::default()
    }
}

fn print<T: Serialize>(format: OutputFormat, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)? + "\n",
        OutputFormat::Yaml => serde_norway::to_string(value)?,
        OutputFormat::Table => table(),
    };
    write_stdout(text.as_bytes())
}

/// Writes to standard output; a reader that went away (`kforge ... | head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// What an apply did, resource by resource.
fn applied_table(entries: &[engine::Applied]) -> String {
    table(
        &["RESOURCE", "KIND", "ACTION", "RESULT", "ID"],
        entries
            .iter()
            .map(|e| {
                vec![
                    e.resource.clone(),
                    e.kind.into(),
                    e.action.into(),
                    e.result.clone(),
                    e.id.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    )
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    for r in rows {
        t.add_row(r);
    }
    let s = t.to_string();
    // Columns padded for alignment, trailing spaces trimmed.
    s.lines()
        .map(|l| l.trim_end().trim_start_matches(' '))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn validate_spec(g: &GlobalArgs, file: &Path) -> anyhow::Result<Finished> {
    let kind = spec::read_text(file).ok().and_then(|t| spec::kind_of(&t));
    if kind.as_deref() == Some("EcsService") {
        let s = crate::ecs::load_service(file, fallback_region(g))?;
        let summary = serde_json::json!({
            "file": file.display().to_string(),
            "valid": true,
            "service": s.name,
            "cluster": s.cluster,
            "region": s.region,
            "cpu": s.cpu,
            "memory": s.memory,
            "desiredCount": s.desired_count,
        });
        return print(g.output, &summary, || {
            format!(
                "{}: valid. ECS service {} in cluster {} ({} cpu, {} MiB, {} tasks, region {})\n",
                file.display(),
                s.name,
                s.cluster,
                s.cpu,
                s.memory,
                s.desired_count,
                s.region
            )
        })
        .map(|()| Finished::Ok);
    }
    let cluster = load(g, file)?;
    let net = cluster.network.as_ref();
    let summary = serde_json::json!({
        "file": file.display().to_string(),
        "valid": true,
        "cluster": cluster.name,
        "provider": cluster.provider.to_string(),
        "region": cluster.region,
        "kubernetesVersion": cluster.kubernetes_version,
        "zones": net.map(|n| n.zones.clone()).unwrap_or_default(),
        "subnets": net.map(|n| n.subnets.len()).unwrap_or(0),
        "nodeGroups": cluster.node_groups.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        "hosts": cluster.hosts.len(),
    });
    print(g.output, &summary, || {
        format!(
            "{}: valid. Cluster {} (provider {}, Kubernetes {}{})\n",
            file.display(),
            cluster.name,
            cluster.provider,
            cluster.kubernetes_version,
            cluster
                .region
                .as_deref()
                .map(|r| format!(", region {r}"))
                .unwrap_or_default()
        )
    })?;
    Ok(Finished::Ok)
}

async fn create_cluster(g: &GlobalArgs, args: CreateClusterArgs) -> anyhow::Result<Finished> {
    if args.dry_run {
        let cluster = load(g, &args.spec.file)?;
        let spec = cluster.to_spec();
        // A spec is a document, not a table: table output means YAML here.
        let format = if g.output == OutputFormat::Json {
            OutputFormat::Json
        } else {
            OutputFormat::Yaml
        };
        print(format, &spec, String::new)?;
        return Ok(Finished::Ok);
    }
    apply(g, args, "kforge create cluster").await
}

/// Everything a reconcile needs, prepared before any mutating call.
struct Prepared {
    cluster: Cluster,
    phases: Vec<Phase>,
    ctx: Arc<Ctx>,
    resources: Vec<Arc<dyn engine::Resource>>,
}

async fn prepare(g: &GlobalArgs, cluster: Cluster, phase: &[Phase]) -> anyhow::Result<Prepared> {
    // Refused before any cloud call: a provider without the phase never starts half a cluster.
    let phases = providers::selected_phases(cluster.provider, phase)?;
    let aws = aws_for(g, cluster.region()).await;
    let mut ctx = Ctx::new(aws, &cluster.name);
    ctx.prefetch = Some(providers::prefetch);
    let ctx = Arc::new(ctx);
    let resources = providers::resources(&cluster, &phases);
    Ok(Prepared {
        cluster,
        phases,
        ctx,
        resources,
    })
}

/// The engine's plan plus the deletions of what the spec no longer wants (found by tag).
async fn plan_with_deletions(
    p: Prepared,
    opts: &ExecOptions,
    reporter: &dyn progress::Reporter,
) -> anyhow::Result<(engine::Plan, Vec<delete::Doomed>)> {
    let wanted: BTreeSet<String> = p.resources.iter().map(|r| r.id().to_string()).collect();
    let cloud = !p.resources.is_empty();
    let mut plan = engine::plan(&p.ctx, p.resources, &p.phases, opts, reporter).await?;
    let orphans = if cloud {
        delete::orphans(&p.ctx, &wanted, &p.phases).await?
    } else {
        Vec::new()
    };
    plan.deletions = orphans
        .iter()
        .map(|d| engine::PlannedDeletion {
            resource: d.logical.clone().unwrap_or_default(),
            kind: d.kind.name(),
            id: d.cloud_id.clone(),
        })
        .collect();
    Ok((plan, orphans))
}

async fn plan(g: &GlobalArgs, args: PlanArgs) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let p = prepare(g, load(g, &args.spec.file)?, &args.phase).await?;
    let (plan, _) = plan_with_deletions(p, &exec_options(g, started), &progress::Silent).await?;
    print(g.output, &plan.entries(), || plan.render())?;
    Ok(if args.detailed_exitcode && plan.has_changes() {
        Finished::Changes
    } else {
        Finished::Ok
    })
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

fn report_hosts(reporter: &dyn progress::Reporter, list: &providers::hosts::HostList) {
    for h in &list.hosts {
        let via = h
            .jump
            .as_ref()
            .map(|j| format!(" via {}", j.address))
            .unwrap_or_default();
        reporter.event(Event::Note(format!(
            "host {} ({}): {} key {}{via}",
            h.name,
            h.role_name(),
            h.ssh_target(),
            h.host_key_shown()
        )));
    }
    if let Some(api) = &list.api_endpoint {
        reporter.event(Event::Note(format!(
            "cluster {}: Kubernetes API endpoint {api}",
            list.cluster
        )));
    }
}

fn hosts_table(list: &providers::hosts::HostList) -> String {
    table(&providers::hosts::TABLE_HEADER, list.rows())
}

/// `kforge get hosts -f SPEC`: the machines the bootstrap would work on.
async fn get_hosts(g: &GlobalArgs, file: &Path) -> anyhow::Result<Finished> {
    let cluster = load(g, file)?;
    let list = match cluster.provider {
        spec::Provider::Hosts => providers::hosts::from_spec(&cluster, &file.display().to_string())?,
        spec::Provider::Ec2 => {
            let aws = aws_for(g, cluster.region()).await;
            providers::hosts::discover_ec2(&aws, &cluster, Duration::ZERO, false, &progress::Silent).await?
        }
        spec::Provider::Eks => anyhow::bail!(
            "cluster {}: provider eks has no hosts to bootstrap (EKS runs the control plane, managed nodegroups join by themselves)\n  hint: `kforge get nodegroups --cluster {}` lists its nodes' groups",
            cluster.name,
            cluster.name
        ),
    };
    print(g.output, &list, || {
        let mut s = hosts_table(&list);
        if let Some(api) = &list.api_endpoint {
            s.push_str(&format!("API endpoint: {api}\n"));
        }
        s
    })?;
    Ok(Finished::Ok)
}

async fn apply(g: &GlobalArgs, args: CreateClusterArgs, command: &str) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let cluster = load(g, &args.spec.file)?;
    if cluster.provider == spec::Provider::Hosts {
        // No cloud at all: check the machines' list and bootstrap them.
        providers::selected_phases(cluster.provider, &args.phase)?;
        let list = providers::hosts::from_spec(&cluster, &args.spec.file.display().to_string())?;
        let reporter = progress::console(g.quiet);
        report_hosts(reporter.as_ref(), &list);
        let store = state_store(g, cluster.region()).await?;
        let name = cluster.name.clone();
        return locked(g, started, &store, &name, command, None, async {
            let report = crate::selfbuilt::bootstrap(
                &store,
                &cluster,
                &list,
                bootstrap_options(g, &args.bootstrap),
                &drain_options(&args.bootstrap.drain),
                reporter.as_ref(),
            )
            .await?;
            print(g.output, &report, || bootstrap_table(&report))?;
            Ok(Finished::Ok)
        })
        .await;
    }
    let p = prepare(g, cluster, &args.phase).await?;
    let store = state_store(g, p.cluster.region()).await?;
    let reporter = progress::console(g.quiet);
    let opts = exec_options(g, started);
    let name = p.cluster.name.clone();
    let (cluster, phases, ctx) = (p.cluster.clone(), p.phases.clone(), Arc::clone(&p.ctx));
    locked(g, started, &store, &name, command, Some(&ctx), async {
        let (plan, orphans) = plan_with_deletions(p, &opts, reporter.as_ref()).await?;
        let entries = plan.entries();
        let count = |verb: &str| entries.iter().filter(|e| e.change.verb() == verb).count();
        reporter.event(Event::Note(format!(
            "cluster {name}: {} to create, {} to update, {} to replace, {} to delete, {} unchanged",
            count("create"),
            count("update"),
            count("replace"),
            count("delete"),
            count("unchanged")
        )));
        let mut report = engine::apply(&ctx, plan, &opts, reporter.as_ref()).await?;
        // Only once everything wanted is in place: routes have moved off a NAT gateway before it goes.
        if report.errors.is_empty() && !orphans.is_empty() {
            let deleted = delete::sweep(&ctx, orphans, true, &opts, reporter.as_ref()).await?;
            report.errors.extend(deleted.errors);
            report
                .entries
                .extend(deleted.entries.into_iter().map(|d| engine::Applied {
                    resource: d.resource.unwrap_or_default(),
                    kind: d.kind,
                    action: "delete",
                    result: match d.result {
                        delete::DeleteResult::Deleted => "ok".into(),
                        other => other.to_string(),
                    },
                    id: Some(d.id),
                }));
        }
        record_apply(&store, &cluster, &phases, &report).await?;
        print(g.output, &report.entries, || applied_table(&report.entries))?;
        if !report.errors.is_empty() {
            return Err(failures(&report.errors).into());
        }
        if cluster.provider == spec::Provider::Ec2
            && (phases.contains(&Phase::Cluster) || phases.contains(&Phase::Bootstrap))
        {
            let hosts =
                providers::hosts::discover_ec2(&ctx.aws, &cluster, args.host_key_timeout, true, reporter.as_ref())
                    .await?;
            report_hosts(reporter.as_ref(), &hosts);
            if phases.contains(&Phase::Bootstrap) {
                crate::selfbuilt::bootstrap(
                    &store,
                    &cluster,
                    &hosts,
                    bootstrap_options(g, &args.bootstrap),
                    &drain_options(&args.bootstrap.drain),
                    reporter.as_ref(),
                )
                .await?;
            }
        }
        if cluster.provider == spec::Provider::Eks && phases.contains(&Phase::Cluster) && !args.no_kubeconfig {
            let path = args.kubeconfig.clone().unwrap_or_else(crate::kubeconfig::default_path);
            let context = merge_kubeconfig(g, &ctx.aws, &name, &path).await?;
            reporter.event(Event::Note(format!(
                "kubeconfig: context {context} added to {} and made current",
                path.display()
            )));
        }
        reporter.event(Event::Note(format!(
            "cluster {name}: phases {} applied in {:.1}s",
            phases.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
            started.elapsed().as_secs_f64()
        )));
        Ok(Finished::Ok)
    })
    .await
}

fn bootstrap_options(g: &GlobalArgs, a: &crate::cli::BootstrapArgs) -> crate::bootstrap::run::Options {
    crate::bootstrap::run::Options {
        concurrency: g.concurrency as usize,
        connect_timeout: a.ssh_timeout,
        health_timeout: a.health_timeout,
        partial: false,
        established: false,
    }
}

fn drain_options(a: &crate::cli::DrainArgs) -> crate::bootstrap::drain::DrainOptions {
    crate::bootstrap::drain::DrainOptions {
        delete_emptydir_data: a.delete_emptydir_data,
        force: a.force_drain,
        timeout: a.drain_timeout,
    }
}

/// The record of a self-built cluster, or an error saying why there is none to work on.
async fn self_built_record(store: &StateStore, name: &str, what: &str) -> anyhow::Result<state::ClusterRecord> {
    let record = store.get(name).await?.with_context(|| {
        format!(
            "cluster {name} is not in the state store {}\n  hint: check the name and --state",
            store.location()
        )
    })?;
    if record.provider == spec::Provider::Eks {
        anyhow::bail!(
            "cluster {name} is an EKS cluster: AWS runs its control plane and etcd, so kforge does not {what} it\n  \
             hint: `kforge upgrade cluster` and `kforge scale nodegroup` operate EKS clusters"
        );
    }
    Ok(record)
}

/// `kforge rolling-update cluster`.
async fn rolling_update_cluster(g: &GlobalArgs, args: crate::cli::RollingUpdateArgs) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let (name, from_file) = match (&args.name, &args.file) {
        (_, Some(file)) => {
            let cluster = load(g, file)?;
            (cluster.name.clone(), Some((cluster, file.clone())))
        }
        (Some(name), None) => (name.clone(), None),
        (None, None) => unreachable!("clap requires a name or -f"),
    };
    let store = state_store(g, fallback_region(g).as_deref()).await?;
    let record = self_built_record(&store, &name, "roll").await?;
    let ec2 = record.provider == spec::Provider::Ec2;
    if args.cloud_only && !ec2 {
        anyhow::bail!(
            "--cloud-only replaces the instances of a provider ec2 cluster's groups; cluster {name} is provider \
             hosts\n  hint: leave --cloud-only out"
        );
    }
    let cluster = match &from_file {
        Some((cluster, _)) => cluster.clone(),
        None => {
            let ctx = crate::model::Context {
                fallback_region: record.region.clone().or_else(|| fallback_region(g)),
                base_dir: std::env::current_dir()?,
                origin: format!("the spec last applied to {name}"),
            };
            crate::model::Cluster::from_spec(&record.spec, &ctx)?
        }
    };
    let opts = crate::day2::RollOptions {
        force: args.force,
        dry_run: args.dry_run,
        validate_timeout: args.validate_timeout,
        drain: drain_options(&args.bootstrap.drain),
        bootstrap: bootstrap_options(g, &args.bootstrap),
        cloud_only: args.cloud_only,
        replace_timeout: args.replace_timeout,
        host_key_timeout: args.host_key_timeout,
        roles: args.role.clone(),
        max_unavailable: args.max_unavailable as usize,
        surge: args.surge,
    };
    let reporter = progress::console(g.quiet);
    let aws = if ec2 {
        Some(regional_aws(g, cluster.region(), "rolling a provider ec2 cluster").await?)
    } else {
        None
    };
    let work = async {
        let rolled = match &aws {
            Some(aws) => {
                crate::day2::rolling_update_ec2(aws, &store, &record, &cluster, &opts, reporter.as_ref()).await?
            }
            None => {
                let list = match &from_file {
                    Some((cluster, file)) => providers::hosts::from_spec(cluster, &file.display().to_string())?,
                    None => crate::selfbuilt::recorded_hosts(&record)?,
                };
                crate::day2::rolling_update(&store, &record, &cluster, &list, &opts, reporter.as_ref()).await?
            }
        };
        print(g.output, &rolled, || {
            table(
                &["HOST", "ROLE", "RESULT", "REASON"],
                rolled
                    .iter()
                    .map(|r| vec![r.host.clone(), r.role.clone(), r.result.clone(), r.reason.clone()])
                    .collect(),
            )
        })?;
        let count = rolled
            .iter()
            .filter(|r| r.result == "rolled" || r.result == "replaced")
            .count();
        reporter.event(Event::Note(format!(
            "rolling-update: {count} of {} hosts rolled in {:.1}s",
            rolled.len(),
            started.elapsed().as_secs_f64()
        )));
        Ok(Finished::Ok)
    };
    if args.dry_run {
        return work.await;
    }
    locked(g, started, &store, &name, "kforge rolling-update cluster", None, work).await
}

/// `kforge backup cluster`.
async fn backup_cluster(g: &GlobalArgs, name: &str, ssh_timeout: Duration) -> anyhow::Result<Finished> {
    let store = state_store(g, fallback_region(g).as_deref()).await?;
    let record = self_built_record(&store, name, "back up").await?;
    let backup = crate::day2::backup(&store, &record, ssh_timeout).await?;
    print(g.output, &backup, || backups_table(std::slice::from_ref(&backup)))?;
    Ok(Finished::Ok)
}

fn backups_table(backups: &[state::BackupRecord]) -> String {
    table(
        &["ID", "CREATED", "MEMBER", "SIZE", "SHA256"],
        backups
            .iter()
            .map(|b| {
                vec![
                    b.id.clone(),
                    b.created_at.clone(),
                    b.member.clone(),
                    b.size.to_string(),
                    b.sha256.clone(),
                ]
            })
            .collect(),
    )
}

/// `kforge get backups`.
async fn get_backups(g: &GlobalArgs, name: &str) -> anyhow::Result<Finished> {
    let store = state_store(g, fallback_region(g).as_deref()).await?;
    let backups = store.list_backups(name).await?;
    print(g.output, &backups, || backups_table(&backups))?;
    Ok(Finished::Ok)
}

/// `kforge restore cluster`.
async fn restore_cluster(g: &GlobalArgs, args: crate::cli::RestoreClusterArgs) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let store = state_store(g, fallback_region(g).as_deref()).await?;
    let record = self_built_record(&store, &args.name, "restore").await?;
    let name = args.name.clone();
    if !args.yes {
        confirm_action(
            "restore",
            &format!("cluster {name} from backup {}", args.backup),
            &format!(
                "Replace the etcd data of cluster {name} with backup {} (everything written since is lost)? Type the \
                 cluster name to confirm: ",
                args.backup
            ),
            &name,
        )?;
    }
    let reporter = progress::console(g.quiet);
    let opts = bootstrap_options(g, &args.bootstrap);
    locked(g, started, &store, &name, "kforge restore cluster", None, async {
        crate::day2::restore(
            &store,
            &record,
            &args.backup,
            &opts,
            args.validate_timeout,
            reporter.as_ref(),
        )
        .await?;
        reporter.event(Event::Note(format!(
            "restore: cluster {name} restored from backup {} in {:.1}s",
            args.backup,
            started.elapsed().as_secs_f64()
        )));
        Ok(Finished::Ok)
    })
    .await
}

fn bootstrap_table(report: &crate::bootstrap::run::Report) -> String {
    table(
        &["HOST", "STEP", "RESULT", "UPLOADED"],
        report
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.host.clone(),
                    s.step.clone(),
                    if s.changed { "changed" } else { "ok" }.to_string(),
                    s.uploaded.len().to_string(),
                ]
            })
            .collect(),
    )
}

/// What `kforge get assets` prints: the files a mirror must hold, and the images the addons pull (a registry
/// mirror must hold those for an air-gapped cluster).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AssetListing {
    files: Vec<crate::assets::Resolved>,
    images: std::collections::BTreeMap<String, String>,
}

/// `kforge get assets --version V`: what a mirror must hold.
fn get_assets(g: &GlobalArgs, version: &str, mirror: Option<&str>) -> anyhow::Result<Finished> {
    let listing = AssetListing {
        files: crate::assets::listing(version, mirror, &Default::default())?,
        images: crate::assets::manifest(version)?.images,
    };
    print(g.output, &listing, || {
        table(
            &["NAME", "VERSION", "URL", "DIGEST"],
            listing
                .files
                .iter()
                .map(|a| vec![a.name.clone(), a.version.clone(), a.url.clone(), a.digest()])
                .collect(),
        ) + "\n"
            + &table(
                &["ADDON IMAGE", "REFERENCE"],
                listing.images.iter().map(|(n, r)| vec![n.clone(), r.clone()]).collect(),
            )
    })?;
    Ok(Finished::Ok)
}

/// `kforge validate cluster NAME` for self-built clusters: exit 1 unless every check passes.
async fn validate_cluster(g: &GlobalArgs, name: &str, ssh_timeout: Duration) -> anyhow::Result<Finished> {
    let store = state_store(g, fallback_region(g).as_deref()).await?;
    let record = store.get(name).await?.with_context(|| {
        format!(
            "cluster {name} is not in the state store {}
  hint: check the name and --state",
            store.location()
        )
    })?;
    if record.provider == spec::Provider::Eks {
        anyhow::bail!(
            "cluster {name} is an EKS cluster: AWS runs its control plane
  hint: `kforge get nodegroups --cluster {name}` shows its nodes"
        );
    }
    let checks = crate::selfbuilt::validate(&store, &record, ssh_timeout).await?;
    print(g.output, &checks, || {
        table(
            &["HOST", "CHECK", "OK", "DETAIL"],
            checks
                .iter()
                .map(|c| {
                    vec![
                        c.host.clone(),
                        c.check.clone(),
                        if c.ok { "yes" } else { "NO" }.into(),
                        c.detail.clone(),
                    ]
                })
                .collect(),
        )
    })?;
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.host, c.check))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "cluster {name}: {} of {} checks failed ({})\n  hint: the DETAIL column says what each host answered",
            failed.len(),
            checks.len(),
            failed.join(", ")
        );
    }
    Ok(Finished::Ok)
}

/// Records the applied spec and outputs, keeping what earlier runs recorded of other phases.
async fn record_apply(
    store: &StateStore,
    cluster: &Cluster,
    phases: &[Phase],
    report: &engine::ApplyReport,
) -> anyhow::Result<()> {
    let previous = store.get(&cluster.name).await?;
    let now = state::now();
    let mut applied: Vec<Phase> = previous.as_ref().map(|r| r.phases.clone()).unwrap_or_default();
    if report.errors.is_empty() {
        for p in phases {
            if !applied.contains(p) {
                applied.push(*p);
            }
        }
        applied.sort();
    }
    let mut outputs = previous.as_ref().map(|r| r.outputs.clone()).unwrap_or_default();
    outputs.extend(report.outputs.clone());
    let record = ClusterRecord {
        name: cluster.name.clone(),
        provider: cluster.provider,
        region: cluster.region.clone(),
        kubernetes_version: cluster.kubernetes_version.clone(),
        phases: applied,
        status: if report.errors.is_empty() {
            "applied".into()
        } else {
            "failed".into()
        },
        spec: cluster.to_spec(),
        outputs,
        created_at: previous.map(|r| r.created_at).unwrap_or_else(|| now.clone()),
        updated_at: now,
        kforge_version: env!("CARGO_PKG_VERSION").into(),
    };
    store.put(&record).await
}

async fn delete_cluster(g: &GlobalArgs, args: DeleteClusterArgs) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let (name, spec_region) = match (&args.name, &args.file) {
        (_, Some(file)) => {
            // Only the name and region matter: a spec that no longer validates must not block a delete.
            let spec = spec::load(file)?;
            (spec.metadata.name, spec.spec.region)
        }
        (Some(name), None) => (name.clone(), None),
        (None, None) => unreachable!("clap requires a name or -f"),
    };
    let region_hint = spec_region.clone().or_else(|| fallback_region(g));
    let store = state_store(g, region_hint.as_deref()).await?;
    let record = store.get(&name).await?;
    // The spec's or --region, then the region the cluster was recorded in, and only then the environment's
    // default: a CI job whose AWS_REGION is another region must not look there, find nothing and exit 0.
    let recorded = record.as_ref().and_then(|r| r.region.clone());
    let region = spec_region
        .or_else(|| g.region.clone())
        .or_else(|| recorded.clone())
        .or(region_hint);
    if let (Some(r), Some(at)) = (&recorded, &region)
        && r != at
    {
        tracing::warn!("cluster {name} was recorded in {r}; deleting what is tagged with it in {at} as asked");
    }
    let reporter = progress::console(g.quiet);
    let opts = exec_options(g, started);
    let cloud = record.as_ref().is_none_or(|r| r.provider != spec::Provider::Hosts);
    if cloud && region.is_none() {
        anyhow::bail!(
            "cannot tell which region cluster {name} is in: no spec region, no --region, no AWS_REGION, and no state record\n  hint: pass --region"
        );
    }
    let wait = !args.no_wait;
    locked(g, started, &store, &name, "kforge delete cluster", None, async {
        let ctx = Arc::new(Ctx::new(aws_for(g, region.as_deref()).await, &name));
        let found = if cloud {
            delete::discover(&ctx, &Phase::ALL).await?
        } else {
            Vec::new()
        };
        if found.is_empty() && record.is_none() {
            reporter.event(Event::Note(format!("cluster {name}: nothing to delete")));
            print(g.output, &delete::DeleteReport::default(), || {
                format!("cluster {name}: nothing to delete\n")
            })?;
            return Ok(Finished::Ok);
        }
        if !args.yes {
            let count = found.len();
            confirm(
                &format!("cluster {name} ({count} resources)"),
                &format!("Delete cluster {name} and its {count} resources? Type the cluster name to confirm: "),
                &name,
            )?;
        }
        reporter.event(Event::Note(format!(
            "cluster {name}: deleting {} resources",
            found.len()
        )));
        let report = delete::sweep(&ctx, found, wait, &opts, reporter.as_ref()).await?;
        let finished = report.finished();
        if finished {
            store.remove(&name).await?;
        }
        print(g.output, &report, || {
            let mut s = table(
                &["KIND", "ID", "RESOURCE", "RESULT"],
                report
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.kind.into(),
                            e.id.clone(),
                            e.resource.clone().unwrap_or_default(),
                            e.result.to_string(),
                        ]
                    })
                    .collect(),
            );
            s.push_str(&format!("cluster {name}: {} deleted", report.deleted()));
            if !finished && report.errors.is_empty() {
                s.push_str("; the rest is still deleting: run delete again to finish");
            }
            s.push('\n');
            s
        })?;
        if !report.errors.is_empty() {
            return Err(failures(&report.errors).into());
        }
        Ok(Finished::Ok)
    })
    .await
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
async fn cluster_region(g: &GlobalArgs, name: &str) -> anyhow::Result<Option<String>> {
    Ok(match fallback_region(g) {
        Some(r) => Some(r),
        None => state_store(g, None).await?.get(name).await?.and_then(|r| r.region),
    })
}

/// A context for a cluster that already exists somewhere in AWS (region from [`cluster_region`]).
async fn existing_cluster_ctx(g: &GlobalArgs, name: &str) -> anyhow::Result<Ctx> {
    let region = cluster_region(g, name).await?;
    let aws = aws_for(g, region.as_deref()).await;
    anyhow::ensure!(
        !aws.region().is_empty(),
        "no region for cluster {name}\n  hint: pass --region, or set AWS_REGION"
    );
    Ok(Ctx::new(aws, name))
}

/// Merges an EKS cluster's endpoint, CA and a `kforge token` exec entry into a kubeconfig.
async fn write_kubeconfig(g: &GlobalArgs, name: &str, file: Option<std::path::PathBuf>) -> anyhow::Result<Finished> {
    let store = state_store(g, fallback_region(g).as_deref()).await?;
    if let Some(record) = store.get(name).await?
        && record.provider != spec::Provider::Eks
    {
        let text = crate::selfbuilt::admin_kubeconfig(&store, &record).await?;
        let path = file.unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(format!(".kube/kforge-{name}.yaml"))
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::fsutil::write_private(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        let result = serde_json::json!({"context": format!("kubernetes-admin@{name}"), "kubeconfig": path.display().to_string()});
        print(g.output, &result, || {
            format!(
                "admin kubeconfig of {name} written to {} (0600); use it with: export KUBECONFIG={}\n",
                path.display(),
                path.display()
            )
        })?;
        return Ok(Finished::Ok);
    }
    let ctx = existing_cluster_ctx(g, name).await?;
    let path = file.unwrap_or_else(crate::kubeconfig::default_path);
    let context = merge_kubeconfig(g, &ctx.aws, name, &path).await?;
    let result = serde_json::json!({"context": context, "kubeconfig": path.display().to_string()});
    print(g.output, &result, || {
        format!("context {context} added to {} and made current\n", path.display())
    })?;
    Ok(Finished::Ok)
}

/// Adds cluster `name` to the kubeconfig at `path`; returns the context name.
async fn merge_kubeconfig(g: &GlobalArgs, aws: &Aws, name: &str, path: &Path) -> anyhow::Result<String> {
    let region = aws.region();
    let Some(cluster) = crate::aws::eks::describe_cluster(aws, name, &format!("EKS cluster {name}")).await? else {
        anyhow::bail!(
            "EKS cluster {name} not found in {region}\n  hint: check the name and --region (`aws eks list-clusters`)"
        )
    };
    let server = cluster.endpoint().ok_or_else(|| {
        anyhow::anyhow!(
            "EKS cluster {name} has no endpoint yet (status {})\n  hint: wait until it is ACTIVE, then run this again",
            cluster.status().map(|s| s.as_str()).unwrap_or("unknown")
        )
    })?;
    let ca = cluster
        .certificate_authority()
        .and_then(|c| c.data())
        .unwrap_or_default();
    let context = cluster
        .arn()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{name}.{region}.kforge"));
    let command = std::env::current_exe()
        .context("locating the kforge binary for the exec plugin")?
        .display()
        .to_string();
    let access = crate::kubeconfig::EksAccess {
        name: context.clone(),
        server: server.to_string(),
        certificate_authority_data: ca.to_string(),
        command,
        args: ["token", "--cluster", name, "--region", &region]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        env: g
            .profile
            .iter()
            .map(|p| ("AWS_PROFILE".to_string(), p.clone()))
            .collect(),
    };
    crate::kubeconfig::write(path, &access)?;
    Ok(context)
}

fn day2_waiting(g: &GlobalArgs, started: Instant) -> providers::eks_day2::Waiting {
    providers::eks_day2::Waiting {
        poll: Duration::from_secs(15),
        deadline: started + g.timeout,
    }
}

async fn get_nodegroups(g: &GlobalArgs, cluster: &str) -> anyhow::Result<Finished> {
    let ctx = existing_cluster_ctx(g, cluster).await?;
    let rows = providers::eks_day2::nodegroups(&ctx).await?;
    print(g.output, &rows, || {
        table(
            &[
                "NAME",
                "STATUS",
                "VERSION",
                "INSTANCE TYPES",
                "CAPACITY",
                "AMI TYPE",
                "MIN",
                "DESIRED",
                "MAX",
                "ISSUES",
            ],
            rows.iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.status.clone(),
                        r.version.clone(),
                        r.instance_types.join(","),
                        r.capacity.clone(),
                        r.ami_type.clone(),
                        r.min.to_string(),
                        r.desired.to_string(),
                        r.max.to_string(),
                        r.issues.join("; "),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(Finished::Ok)
}

async fn scale_nodegroup(g: &GlobalArgs, args: ScaleNodegroupArgs) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let ctx = existing_cluster_ctx(g, &args.cluster).await?;
    let store = state_store(g, Some(&ctx.aws.region())).await?;
    let reporter = progress::console(g.quiet);
    let wait = (!args.no_wait).then(|| day2_waiting(g, started));
    let record = store.get(&args.cluster).await?;
    let scaled = locked(
        g,
        started,
        &store,
        &args.cluster,
        "kforge scale nodegroup",
        None,
        async {
            providers::eks_day2::scale_nodegroup(
                &ctx,
                &args.name,
                args.nodes,
                args.min,
                args.max,
                wait,
                reporter.as_ref(),
            )
            .await
        },
    )
    .await?;
    // The spec still says what it said: tell the user, since the next apply converges to the spec.
    let spec_size = record.as_ref().and_then(|r| {
        r.spec
            .spec
            .node_groups
            .as_ref()?
            .iter()
            .find(|n| n.name == args.name)?
            .desired_size
    });
    if let Some(size) = spec_size.filter(|s| *s as i32 != scaled.to[1]) {
        reporter.event(Event::Note(format!(
            "note: the spec of {} says desiredSize {size} for {}; set it to {} there, or the next apply scales back",
            args.cluster, args.name, args.nodes
        )));
    }
    print(g.output, &scaled, || {
        format!(
            "nodegroup {}: min/desired/max {}/{}/{} -> {}/{}/{} ({})\n",
            scaled.nodegroup,
            scaled.from[0],
            scaled.from[1],
            scaled.from[2],
            scaled.to[0],
            scaled.to[1],
            scaled.to[2],
            scaled.status
        )
    })?;
    Ok(Finished::Ok)
}

async fn upgrade_cluster(g: &GlobalArgs, args: UpgradeClusterArgs) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let ctx = existing_cluster_ctx(g, &args.name).await?;
    let store = state_store(g, Some(&ctx.aws.region())).await?;
    let reporter = progress::console(g.quiet);
    let waiting = day2_waiting(g, started);
    let steps = locked(g, started, &store, &args.name, "kforge upgrade cluster", None, async {
        providers::eks_day2::upgrade(&ctx, &args.to, args.dry_run, waiting, reporter.as_ref()).await
    })
    .await?;
    if !args.dry_run
        && let Some(mut record) = store.get(&args.name).await?
    {
        record.kubernetes_version = args.to.clone();
        record.updated_at = state::now();
        store.put(&record).await?;
    }
    print(g.output, &steps, || {
        let mut s = table(
            &["TARGET", "FROM", "TO", "RESULT"],
            steps
                .iter()
                .map(|s| vec![s.target.clone(), s.from.clone(), s.to.clone(), s.result.clone()])
                .collect(),
        );
        if steps.is_empty() {
            s = format!("cluster {} already runs Kubernetes {} everywhere\n", args.name, args.to);
        } else if !args.dry_run {
            s.push_str(&format!(
                "set spec.kubernetesVersion: \"{}\" in the cluster's spec so apply agrees\n",
                args.to
            ));
        }
        s
    })?;
    Ok(Finished::Ok)
}

async fn get_clusters(g: &GlobalArgs) -> anyhow::Result<Finished> {
    let store = state_store(g, None).await?;
    let records = store.list().await?;
    #[derive(Serialize)]
    struct Row<'a> {
        name: &'a str,
        provider: String,
        region: Option<&'a str>,
        version: &'a str,
        phases: Vec<Phase>,
        status: &'a str,
        updated: &'a str,
    }
    let rows: Vec<Row> = records
        .iter()
        .map(|r| Row {
            name: &r.name,
            provider: r.provider.to_string(),
            region: r.region.as_deref(),
            version: &r.kubernetes_version,
            phases: r.phases.clone(),
            status: &r.status,
            updated: &r.updated_at,
        })
        .collect();
    print(g.output, &rows, || {
        if rows.is_empty() {
            return format!("no clusters in {}\n", store.location());
        }
        table(
            &["NAME", "PROVIDER", "REGION", "VERSION", "PHASES", "STATUS", "UPDATED"],
            rows.iter()
                .map(|r| {
                    vec![
                        r.name.into(),
                        r.provider.clone(),
                        r.region.unwrap_or("-").into(),
                        r.version.into(),
                        r.phases.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","),
                        r.status.into(),
                        r.updated.into(),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(Finished::Ok)
}

async fn get_cluster(g: &GlobalArgs, name: &str) -> anyhow::Result<Finished> {
    let store = state_store(g, fallback_region(g).as_deref()).await?;
    let record = store.get(name).await?;
    let region = fallback_region(g).or_else(|| record.as_ref().and_then(|r| r.region.clone()));
    let cloud = record.as_ref().is_none_or(|r| r.provider != spec::Provider::Hosts);
    // The same listing delete works from: everything tagged with the cluster.
    let resources = match (&region, cloud) {
        (Some(region), true) => {
            let ctx = Ctx::new(aws_for(g, Some(region)).await, name);
            delete::discover(&ctx, &Phase::ALL).await?
        }
        _ => Vec::new(),
    };
    if record.is_none() && resources.is_empty() {
        anyhow::bail!(
            "cluster {name} not found: no record in {} and nothing tagged with it{}\n  hint: check the name, --state and --region",
            store.location(),
            region.as_deref().map(|r| format!(" in {r}")).unwrap_or_default()
        );
    }
    #[derive(Serialize)]
    struct Resource<'a> {
        kind: &'a str,
        id: &'a str,
        resource: &'a str,
    }
    #[derive(Serialize)]
    struct View<'a> {
        name: &'a str,
        record: Option<&'a ClusterRecord>,
        resources: Vec<Resource<'a>>,
    }
    let view = View {
        name,
        record: record.as_ref(),
        resources: resources
            .iter()
            .map(|d| Resource {
                kind: d.kind.name(),
                id: &d.cloud_id,
                resource: d.logical.as_deref().unwrap_or_default(),
            })
            .collect(),
    };
    print(g.output, &view, || {
        let mut s = String::new();
        match &record {
            Some(r) => s.push_str(&format!(
                "Cluster {}: provider {}, region {}, Kubernetes {}, phases [{}], {} (updated {})\n\n",
                r.name,
                r.provider,
                r.region.as_deref().unwrap_or("-"),
                r.kubernetes_version,
                r.phases.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
                r.status,
                r.updated_at
            )),
            None => s.push_str(&format!(
                "Cluster {name}: no record in {} (found by tags only)\n\n",
                store.location()
            )),
        }
        s.push_str(&table(
            &["KIND", "ID", "RESOURCE"],
            view.resources
                .iter()
                .map(|r| vec![r.kind.into(), r.id.into(), r.resource.into()])
                .collect(),
        ));
        s
    })?;
    Ok(Finished::Ok)
}

async fn push_image(g: &GlobalArgs, args: PushImageArgs) -> anyhow::Result<Finished> {
    let source = registry::Source::parse(&args.source)?;
    let target = registry::Target::parse(&args.target)?;
    let credentials = match args.username.clone() {
        Some(username) => {
            let password = if args.password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password from stdin")?;
                line.trim_end_matches(['\n', '\r']).to_string()
            } else {
                std::env::var("KFORGE_REGISTRY_PASSWORD").map_err(|_| {
                    anyhow::anyhow!(
                        "--username needs a password\n  hint: pipe it to --password-stdin or set KFORGE_REGISTRY_PASSWORD"
                    )
                })?
            };
            Some(registry::Credentials { username, password })
        }
        None => None,
    };
    // The source is read and checked first: a broken image fails before any AWS or registry call.
    let image = registry::load_source(&source).await?;
    let settings = registry::ecr::RepositorySettings {
        scan_on_push: args.scan_on_push,
        immutable_tags: args.immutable_tags,
        keep_images: args.keep_images,
        expire_untagged_days: args.expire_untagged_days,
    };
    let endpoint = args.registry_endpoint.as_deref();
    let dest = match &target {
        registry::Target::Ecr { repository, tag } => {
            let aws = aws_for(g, None).await;
            if aws.region().is_empty() {
                anyhow::bail!(
                    "pushing to ECR repository {repository} needs a region\n  hint: pass --region or set AWS_REGION, \
                     or give a full registry reference HOST/REPO:TAG"
                );
            }
            let tag = registry::effective_tag(tag.as_deref(), &image);
            ecr_push_destination(g, &aws, repository, None, tag, &settings, endpoint).await?
        }
        registry::Target::Registry(r) => {
            let tag = registry::effective_tag(r.tag.as_deref(), &image);
            match registry::EcrHost::parse(&r.registry) {
                Some(host) => {
                    let aws = aws_for(g, Some(&host.region)).await;
                    let account = Some(host.account.as_str());
                    ecr_push_destination(g, &aws, &r.repository, account, tag, &settings, endpoint).await?
                }
                None => registry::registry_destination(r, tag, args.insecure, credentials)?,
            }
        }
    };
    let opts = registry::PushOptions {
        jobs: args.jobs as usize,
        attempts: args.attempts as usize,
        ..Default::default()
    };
    if !g.quiet {
        eprintln!(
            "pushing {} ({} blobs, {}) to {}:{}",
            image.source,
            image.blobs.len(),
            registry::source::human_bytes(image.total_size()),
            dest.name(),
            dest.tag.as_deref().unwrap_or_default()
        );
    }
    let report = registry::push_image(&image, &dest, &opts, g.quiet).await?;
    if !g.quiet {
        eprintln!(
            "pushed {} in {:.1}s: {} uploaded ({}), {} already present, {} mounted",
            report.reference,
            report.seconds,
            report.blobs_uploaded,
            registry::source::human_bytes(report.bytes_sent),
            report.blobs_present,
            report.blobs_mounted
        );
    }
    print(g.output, &report, || format!("{}\n", report.digest))?;
    Ok(Finished::Ok)
}

/// Finds or creates the ECR repository (and says so), then points the push at its registry.
async fn ecr_push_destination(
    g: &GlobalArgs,
    aws: &Aws,
    repository: &str,
    account: Option<&str>,
    tag: String,
    settings: &registry::ecr::RepositorySettings,
    endpoint: Option<&str>,
) -> anyhow::Result<registry::Destination> {
    let (dest, repo) = registry::ecr_destination(aws, repository, account, tag, settings, endpoint).await?;
    if !g.quiet {
        if repo.created {
            eprintln!("created ECR repository {} in {}", repo.name, aws.region());
        }
        for change in &repo.updated {
            eprintln!("updated ECR repository {}: {change}", repo.name);
        }
    }
    Ok(dest)
}

async fn deploy_service(g: &GlobalArgs, args: DeployArgs) -> anyhow::Result<Finished> {
    let started = Instant::now();
    // Every spec problem is reported before any AWS call.
    let service = crate::ecs::load_service(&args.file, fallback_region(g))?;
    let aws = aws_for(g, Some(&service.region)).await;
    let reporter = progress::console(g.quiet);
    let opts = exec_options(g, started);
    let report = crate::ecs::deploy(aws, &service, &opts, reporter.as_ref(), g.quiet).await?;
    reporter.event(Event::Note(format!(
        "service {} in cluster {} is stable on {} ({:.1}s)",
        report.service,
        report.cluster,
        report.task_definition.rsplit('/').next().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    )));
    print(g.output, &report, || applied_table(&report.resources))?;
    Ok(Finished::Ok)
}

/// An `Aws` for commands that name no spec: the region must come from `--region`, the environment or the profile.
async fn regional_aws(g: &GlobalArgs, region: Option<&str>, what: &str) -> anyhow::Result<Aws> {
    let aws = aws_for(g, region).await;
    if aws.region().is_empty() {
        anyhow::bail!("{what} needs a region\n  hint: pass --region or set AWS_REGION");
    }
    Ok(aws)
}

async fn get_services(g: &GlobalArgs, cluster: Option<&str>) -> anyhow::Result<Finished> {
    let aws = regional_aws(g, None, "listing ECS services").await?;
    let rows = crate::ecs::list_services(&aws, cluster).await?;
    print(g.output, &rows, || {
        table(
            &[
                "CLUSTER",
                "SERVICE",
                "STATUS",
                "TASK DEFINITION",
                "DESIRED",
                "RUNNING",
                "PENDING",
                "ROLLOUT",
            ],
            rows.iter()
                .map(|r| {
                    vec![
                        r.cluster.clone(),
                        r.service.clone(),
                        r.status.clone(),
                        r.task_definition.clone(),
                        r.desired.to_string(),
                        r.running.to_string(),
                        r.pending.to_string(),
                        r.rollout.clone(),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(Finished::Ok)
}

async fn delete_service(g: &GlobalArgs, args: DeleteServiceArgs) -> anyhow::Result<Finished> {
    let (cluster, name, region) = match (&args.file, &args.name, &args.cluster) {
        (Some(file), _, _) => {
            let (c, n, r) = crate::ecs::names_from_spec(file, fallback_region(g))?;
            (c, n, Some(r))
        }
        (None, Some(name), Some(cluster)) => (cluster.clone(), name.clone(), None),
        _ => unreachable!("clap requires a name with --cluster, or -f"),
    };
    if !args.yes {
        confirm(
            &format!("service {name} of cluster {cluster}"),
            &format!("Delete ECS service {name} of cluster {cluster}? Type the service name to confirm: "),
            &name,
        )?;
    }
    let aws = regional_aws(g, region.as_deref(), "deleting an ECS service").await?;
    let reporter = progress::console(g.quiet);
    let deleted = crate::ecs::delete_service(aws, &cluster, &name, args.purge, g.timeout, reporter.as_ref()).await?;
    if deleted.is_empty() {
        reporter.event(Event::Note(format!(
            "service {name} of cluster {cluster}: nothing to delete"
        )));
    }
    print(g.output, &deleted, || {
        table(
            &["KIND", "NAME", "RESULT"],
            deleted
                .iter()
                .map(|d| vec![d.kind.to_string(), d.name.clone(), d.result.to_string()])
                .collect(),
        )
    })?;
    Ok(Finished::Ok)
}
