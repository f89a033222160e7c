//! The ECS service commands: deploy, get services, delete service.

use super::*;

pub(super) async fn deploy_service(s: &Session<'_>, args: DeployArgs) -> anyhow::Result<Finished> {
    let g = s.g;
    let started = Instant::now();
    // Every spec problem is reported before any AWS call.
    let service = crate::ecs::load_service(&args.file, fallback_region(g))?;
    let aws = s.aws(Some(&service.region)).await;
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

pub(super) async fn get_services(s: &Session<'_>, cluster: Option<&str>) -> anyhow::Result<Finished> {
    let g = s.g;
    let aws = regional_aws(s, None, "listing ECS services").await?;
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

pub(super) async fn delete_service(s: &Session<'_>, args: DeleteServiceArgs) -> anyhow::Result<Finished> {
    let g = s.g;
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
    let aws = regional_aws(s, region.as_deref(), "deleting an ECS service").await?;
    let reporter = progress::console(g.quiet);
    // --timeout and --concurrency as for every walk through the executor.
    let opts = exec_options(g, Instant::now());
    let deleted = crate::ecs::delete_service(aws, &cluster, &name, args.purge, &opts, reporter.as_ref()).await?;
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
