//! Day-2 commands: rolling updates, etcd backups and restores of self-built clusters; EKS nodegroups and upgrades.

use super::*;

pub(super) fn bootstrap_options(g: &GlobalArgs, a: &crate::cli::BootstrapArgs) -> crate::bootstrap::run::Options {
    crate::bootstrap::run::Options {
        concurrency: g.concurrency as usize,
        connect_timeout: a.ssh_timeout,
        health_timeout: a.health_timeout,
        partial: false,
        established: false,
    }
}

pub(super) fn drain_options(a: &crate::cli::DrainArgs) -> crate::bootstrap::drain::DrainOptions {
    crate::bootstrap::drain::DrainOptions {
        delete_emptydir_data: a.delete_emptydir_data,
        force: a.force_drain,
        timeout: a.drain_timeout,
    }
}

/// The record of a self-built cluster, or an error saying why there is none to work on.
pub(super) async fn self_built_record(
    store: &StateStore,
    name: &str,
    what: &str,
) -> anyhow::Result<state::ClusterRecord> {
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
pub(super) async fn rolling_update_cluster(
    s: &Session<'_>,
    args: crate::cli::RollingUpdateArgs,
) -> anyhow::Result<Finished> {
    let g = s.g;
    let started = Instant::now();
    let (name, from_file) = match (&args.name, &args.file) {
        (_, Some(file)) => {
            let cluster = load(g, file)?;
            (cluster.name.clone(), Some((cluster, file.clone())))
        }
        (Some(name), None) => (name.clone(), None),
        (None, None) => unreachable!("clap requires a name or -f"),
    };
    let store = s.store(fallback_region(g).as_deref()).await?;
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
        Some(regional_aws(s, cluster.region(), "rolling a provider ec2 cluster").await?)
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
pub(super) async fn backup_cluster(s: &Session<'_>, name: &str, ssh_timeout: Duration) -> anyhow::Result<Finished> {
    let g = s.g;
    let store = s.store(fallback_region(g).as_deref()).await?;
    let record = self_built_record(&store, name, "back up").await?;
    let backup = crate::day2::backup(&store, &record, ssh_timeout).await?;
    print(g.output, &backup, || backups_table(std::slice::from_ref(&backup)))?;
    Ok(Finished::Ok)
}

/// `kforge get backups`.
pub(super) async fn get_backups(s: &Session<'_>, name: &str) -> anyhow::Result<Finished> {
    let g = s.g;
    let store = s.store(fallback_region(g).as_deref()).await?;
    let backups = store.list_backups(name).await?;
    print(g.output, &backups, || backups_table(&backups))?;
    Ok(Finished::Ok)
}

/// `kforge restore cluster`.
pub(super) async fn restore_cluster(s: &Session<'_>, args: crate::cli::RestoreClusterArgs) -> anyhow::Result<Finished> {
    let g = s.g;
    let started = Instant::now();
    let store = s.store(fallback_region(g).as_deref()).await?;
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

pub(super) fn day2_waiting(g: &GlobalArgs, started: Instant) -> providers::eks_day2::Waiting {
    providers::eks_day2::Waiting {
        poll: Duration::from_secs(15),
        deadline: started + g.timeout,
    }
}

pub(super) async fn get_nodegroups(s: &Session<'_>, cluster: &str) -> anyhow::Result<Finished> {
    let g = s.g;
    let ctx = existing_cluster_ctx(s, cluster).await?;
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

pub(super) async fn scale_nodegroup(s: &Session<'_>, args: ScaleNodegroupArgs) -> anyhow::Result<Finished> {
    let g = s.g;
    let started = Instant::now();
    let ctx = existing_cluster_ctx(s, &args.cluster).await?;
    let store = s.store(Some(&ctx.aws.region())).await?;
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

pub(super) async fn upgrade_cluster(s: &Session<'_>, args: UpgradeClusterArgs) -> anyhow::Result<Finished> {
    let g = s.g;
    let started = Instant::now();
    let ctx = existing_cluster_ctx(s, &args.name).await?;
    let store = s.store(Some(&ctx.aws.region())).await?;
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
