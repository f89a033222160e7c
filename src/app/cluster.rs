//! The cluster commands: validate spec, create/apply/plan, get hosts/assets/clusters, validate, kubeconfig, delete.

use super::*;

pub(super) fn validate_spec(g: &GlobalArgs, file: &Path) -> anyhow::Result<Finished> {
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

pub(super) async fn create_cluster(s: &Session<'_>, args: CreateClusterArgs) -> anyhow::Result<Finished> {
    let g = s.g;
    if args.dry_run {
        let cluster = load(g, &args.apply.spec.file)?;
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
    let kubeconfig =
        (!args.no_kubeconfig).then(|| args.kubeconfig.clone().unwrap_or_else(crate::kubeconfig::default_path));
    apply(s, &args.apply, kubeconfig, "kforge create cluster").await
}

/// Everything a reconcile needs, prepared before any mutating call.
pub(super) struct Prepared {
    cluster: Cluster,
    phases: Vec<Phase>,
    ctx: Arc<Ctx>,
    resources: Vec<Arc<dyn engine::Resource>>,
}

pub(super) async fn prepare(s: &Session<'_>, cluster: Cluster, phase: &[Phase]) -> anyhow::Result<Prepared> {
    // Refused before any cloud call: a provider without the phase never starts half a cluster.
    let phases = providers::selected_phases(cluster.provider, phase)?;
    let aws = s.aws(cluster.region()).await;
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
pub(super) async fn plan_with_deletions(
    p: Prepared,
    opts: &ExecOptions,
    reporter: &dyn progress::Reporter,
) -> anyhow::Result<(engine::Plan, Vec<delete::Doomed>)> {
    let wanted: BTreeSet<String> = p.resources.iter().map(|r| r.id().to_string()).collect();
    let cloud = !p.resources.is_empty();
    let mut plan = engine::plan(&p.ctx, p.resources, &p.phases, opts, reporter).await?;
    let orphans = if cloud {
        delete::orphans(&p.ctx, &providers::kinds(), &wanted, &p.phases).await?
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

pub(super) async fn plan(s: &Session<'_>, args: PlanArgs) -> anyhow::Result<Finished> {
    let g = s.g;
    let started = Instant::now();
    let p = prepare(s, load(g, &args.spec.file)?, &args.phase).await?;
    let (plan, _) = plan_with_deletions(p, &exec_options(g, started), &progress::Silent).await?;
    print(g.output, &plan.entries(), || plan.render())?;
    Ok(if args.detailed_exitcode && plan.has_changes() {
        Finished::Changes
    } else {
        Finished::Ok
    })
}

/// `kforge get hosts -f SPEC`: the machines the bootstrap would work on.
pub(super) async fn get_hosts(s: &Session<'_>, file: &Path) -> anyhow::Result<Finished> {
    let g = s.g;
    let cluster = load(g, file)?;
    let list = match cluster.provider {
        spec::Provider::Hosts => providers::hosts::from_spec(&cluster, &file.display().to_string())?,
        spec::Provider::Ec2 => {
            let aws = s.aws(cluster.region()).await;
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

/// `apply` and `create cluster`: reconcile the spec; `kubeconfig` is where an EKS cluster's entry goes (`create`
/// only, as eksctl does).
pub(super) async fn apply(
    s: &Session<'_>,
    args: &ApplyArgs,
    kubeconfig: Option<std::path::PathBuf>,
    command: &str,
) -> anyhow::Result<Finished> {
    let g = s.g;
    let started = Instant::now();
    let cluster = load(g, &args.spec.file)?;
    if cluster.provider == spec::Provider::Hosts {
        // No cloud at all: check the machines' list and bootstrap them.
        providers::selected_phases(cluster.provider, &args.phase)?;
        let list = providers::hosts::from_spec(&cluster, &args.spec.file.display().to_string())?;
        let reporter = progress::console(g.quiet);
        report_hosts(reporter.as_ref(), &list);
        let store = s.store(cluster.region()).await?;
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
    let p = prepare(s, cluster, &args.phase).await?;
    let store = s.store(p.cluster.region()).await?;
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
        if cluster.provider == spec::Provider::Eks
            && phases.contains(&Phase::Cluster)
            && let Some(path) = &kubeconfig
        {
            let context = merge_kubeconfig(g, &ctx.aws, &name, path).await?;
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

/// What `kforge get assets` prints: the files a mirror must hold, and the images the addons pull (a registry
/// mirror must hold those for an air-gapped cluster).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AssetListing {
    files: Vec<crate::assets::Resolved>,
    images: std::collections::BTreeMap<String, String>,
}

/// `kforge get assets --version V`: what a mirror must hold.
pub(super) fn get_assets(g: &GlobalArgs, version: &str, mirror: Option<&str>) -> anyhow::Result<Finished> {
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
pub(super) async fn validate_cluster(s: &Session<'_>, name: &str, ssh_timeout: Duration) -> anyhow::Result<Finished> {
    let g = s.g;
    let store = s.store(fallback_region(g).as_deref()).await?;
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
pub(super) async fn record_apply(
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

pub(super) async fn delete_cluster(s: &Session<'_>, args: DeleteClusterArgs) -> anyhow::Result<Finished> {
    let g = s.g;
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
    let store = s.store(region_hint.as_deref()).await?;
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
        let ctx = Arc::new(Ctx::new(s.aws(region.as_deref()).await, &name));
        let found = if cloud {
            delete::discover(&ctx, &providers::kinds(), &Phase::ALL).await?
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

/// Merges an EKS cluster's endpoint, CA and a `kforge token` exec entry into a kubeconfig.
pub(super) async fn write_kubeconfig(
    s: &Session<'_>,
    name: &str,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<Finished> {
    let g = s.g;
    let store = s.store(fallback_region(g).as_deref()).await?;
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
    let ctx = existing_cluster_ctx(s, name).await?;
    let path = file.unwrap_or_else(crate::kubeconfig::default_path);
    let context = merge_kubeconfig(g, &ctx.aws, name, &path).await?;
    let result = serde_json::json!({"context": context, "kubeconfig": path.display().to_string()});
    print(g.output, &result, || {
        format!("context {context} added to {} and made current\n", path.display())
    })?;
    Ok(Finished::Ok)
}

/// Adds cluster `name` to the kubeconfig at `path`; returns the context name.
pub(super) async fn merge_kubeconfig(g: &GlobalArgs, aws: &Aws, name: &str, path: &Path) -> anyhow::Result<String> {
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

pub(super) async fn get_clusters(s: &Session<'_>) -> anyhow::Result<Finished> {
    let g = s.g;
    let store = s.store(None).await?;
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

pub(super) async fn get_cluster(s: &Session<'_>, name: &str) -> anyhow::Result<Finished> {
    let g = s.g;
    let store = s.store(fallback_region(g).as_deref()).await?;
    let record = store.get(name).await?;
    let region = fallback_region(g).or_else(|| record.as_ref().and_then(|r| r.region.clone()));
    let cloud = record.as_ref().is_none_or(|r| r.provider != spec::Provider::Hosts);
    // The same listing delete works from: everything tagged with the cluster.
    let resources = match (&region, cloud) {
        (Some(region), true) => {
            let ctx = Ctx::new(s.aws(Some(region)).await, name);
            delete::discover(&ctx, &providers::kinds(), &Phase::ALL).await?
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
