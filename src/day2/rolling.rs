//! `kforge rolling-update cluster`: one host at a time (masters first, each only with every etcd member healthy),
//! drained, updated in place or (ec2 workers) replaced through its Auto Scaling group, waited Ready and valid,
//! uncordoned; `--force` runs record their progress so a re-run resumes.

use super::*;

/// What a rolling update did (or, with --dry-run, would do) with one host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rolled {
    pub host: String,
    pub role: String,
    /// Why it rolls (what is out of date), or why not.
    pub reason: String,
    /// `rolled`, `would roll`, `up to date`, or `done earlier` (a resumed --force run).
    pub result: String,
}

/// How a rolling update goes.
pub struct RollOptions {
    pub force: bool,
    pub dry_run: bool,
    pub validate_timeout: Duration,
    pub drain: DrainOptions,
    pub bootstrap: Options,
    /// Provider ec2: replace worker instances only, without the cluster's API or SSH.
    pub cloud_only: bool,
    /// Provider ec2: how long a group gets to replace an instance, and a new machine to show its host keys.
    pub replace_timeout: Duration,
    pub host_key_timeout: Duration,
    /// Only hosts of these roles (empty: all).
    pub roles: Vec<HostRole>,
    /// Provider ec2: instances of one group replaced at once.
    pub max_unavailable: usize,
    /// Provider ec2: start the replacements before the old instances go.
    pub surge: bool,
}

/// Where the record keeps the hosts a `--force` rolling update has finished (so a re-run resumes after them).
pub(super) const ROLLING_OUTPUT: &str = "rolling-update";

pub(super) async fn rolled_so_far(store: &StateStore, cluster: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(store
        .get(cluster)
        .await?
        .and_then(|r| r.outputs.get(ROLLING_OUTPUT)?.get("done").cloned())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default())
}

pub(super) async fn save_rolled(
    store: &StateStore,
    cluster: &str,
    done: Option<&BTreeSet<String>>,
) -> anyhow::Result<()> {
    let Some(mut record) = store.get(cluster).await? else {
        return Ok(());
    };
    match done {
        Some(done) => {
            record.outputs.insert(
                ROLLING_OUTPUT.into(),
                [("done".to_string(), serde_json::to_string(done)?)].into(),
            );
        }
        None => {
            record.outputs.remove(ROLLING_OUTPUT);
        }
    }
    store.put(&record).await
}

/// Every check of `validate cluster` until all pass, or `Err` with the ones still failing after `timeout`;
/// `then` is the hint's advice once the cause is fixed.
pub(super) async fn wait_valid(
    store: &StateStore,
    record: &ClusterRecord,
    list: &HostList,
    timeout: Duration,
    then: &str,
) -> anyhow::Result<()> {
    Wait::new(format!("validation of cluster {}", record.name), timeout)
        .poll(Duration::from_secs(3))
        .until(|| async {
            let checks = selfbuilt::checks(store, record, list, Duration::from_secs(20)).await?;
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {} ({})", c.host, c.check, c.detail))
                .collect();
            Ok(if failed.is_empty() {
                Step::Done(())
            } else {
                Step::Blocked {
                    reason: failed.join("; "),
                }
            })
        })
        .await
        .map_err(|e| match e.downcast::<TimedOut>() {
            Ok(t) => anyhow::anyhow!(
                "the cluster did not pass validation in {}s: {}\n  hint: see `kforge validate cluster {}`; fix the \
                 cause, then {then}",
                timeout.as_secs(),
                t.reason,
                record.name
            ),
            Err(e) => e,
        })
}

/// `kforge rolling-update cluster`: see the module comment. `cluster` and `list` are what to roll to (the spec
/// given, or the last applied one).
pub async fn rolling_update(
    store: &StateStore,
    record: &ClusterRecord,
    cluster: &Cluster,
    list: &HostList,
    opts: &RollOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<Vec<Rolled>> {
    roll_in_place(store, record, cluster, list, opts, true, reporter).await
}

/// The in-place roll of `list`'s hosts (the workers too unless `workers`is false: an ec2 cluster's workers are
/// replaced instead).
pub(super) async fn roll_in_place(
    store: &StateStore,
    record: &ClusterRecord,
    cluster: &Cluster,
    list: &HostList,
    opts: &RollOptions,
    workers: bool,
    reporter: &dyn Reporter,
) -> anyhow::Result<Vec<Rolled>> {
    let recorded = selfbuilt::recorded_hosts(record)?;
    // (Without the workers, an ec2 cluster's, only the masters must match: its workers come and go with their
    // groups.)
    let rolled = |h: &&BootstrapHost| workers || h.role == HostRole::Master;
    let known: BTreeSet<&str> = recorded.hosts.iter().filter(rolled).map(|h| h.name.as_str()).collect();
    let added: Vec<&str> = list
        .hosts
        .iter()
        .filter(rolled)
        .map(|h| h.name.as_str())
        .filter(|n| !known.contains(n))
        .collect();
    let gone: Vec<&str> = recorded
        .hosts
        .iter()
        .filter(rolled)
        .map(|h| h.name.as_str())
        .filter(|n| !list.hosts.iter().any(|h| h.name == *n))
        .collect();
    if !added.is_empty() || !gone.is_empty() {
        anyhow::bail!(
            "the spec adds ({}) or removes ({}) hosts: a rolling update only rolls the hosts the cluster has\n  hint: \
             run `kforge apply -f SPEC` first (it joins new hosts and drains and removes old ones)",
            added.join(", "),
            gone.join(", ")
        );
    }
    let pki = selfbuilt::ensure_pki(store, cluster, list).await?;
    let facts = selfbuilt::cluster_facts(cluster, list)?;
    let candidates: Vec<BootstrapHost> = list.hosts.iter().filter(rolled).cloned().collect();
    let pending = run::pending_changes(
        &candidates,
        facts,
        pki.clone(),
        &cluster.kubernetes_version,
        cluster.assets.clone(),
        &opts.bootstrap,
    )
    .await?;
    let mut done = if opts.force {
        rolled_so_far(store, &record.name).await?
    } else {
        BTreeSet::new()
    };
    // Masters first (kops' order): the nodes then roll against an up-to-date control plane.
    let mut order: Vec<&BootstrapHost> = list.hosts.iter().filter(|h| h.role == HostRole::Master).collect();
    if workers {
        order.extend(list.hosts.iter().filter(|h| h.role != HostRole::Master));
    }
    order.retain(|h| opts.roles.is_empty() || opts.roles.contains(&h.role));
    let mut out = Vec::new();
    let (url, _, _, _) = selfbuilt::admin_credentials(store, record, list).await?;
    let kube = ApiClient::kube_admin(&record.name, &url, &pki).await?;
    let api = selfbuilt::admin_client(store, record, list).await?;
    let masters = run::members(&list.hosts).map_err(anyhow::Error::msg)?;
    for host in order {
        let stale = pending.get(&host.name).cloned().unwrap_or_default();
        let row = |reason: String, result: &str| Rolled {
            host: host.name.clone(),
            role: host.role_name().into(),
            reason,
            result: result.into(),
        };
        if done.contains(&host.name) {
            out.push(row(
                "rolled by an earlier run of this --force update".into(),
                "done earlier",
            ));
            continue;
        }
        let reason = if !stale.is_empty() {
            stale.join(", ")
        } else if opts.force {
            "--force".into()
        } else {
            out.push(row("configuration and binaries are current".into(), "up to date"));
            continue;
        };
        if opts.dry_run {
            out.push(row(reason, "would roll"));
            continue;
        }
        reporter.event(Event::Note(format!(
            "rolling-update: {} ({}): {reason}",
            host.name,
            host.role_name()
        )));
        roll_host(
            store, record, cluster, list, host, &masters, &kube, &api, opts, reporter,
        )
        .await?;
        if opts.force {
            done.insert(host.name.clone());
            save_rolled(store, &record.name, Some(&done)).await?;
        }
        out.push(row(reason, "rolled"));
    }
    if opts.force && !opts.dry_run && workers {
        save_rolled(store, &record.name, None).await?;
    }
    Ok(out)
}

/// Drains `node`, saying so in lines that start with `step` (`remove`, `rolling-update`): `true` once drained,
/// `false` when the node never registered (nothing to drain). A drain that cannot finish is the error.
pub(super) async fn drain_node(
    kube: &kube::Client,
    node: &str,
    opts: &drain::DrainOptions,
    step: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<bool> {
    let progress = |line: String| reporter.event(Event::Note(format!("{step}: {line}")));
    match drain::drain(kube, node, opts, &progress).await {
        Ok(d) => {
            let left = if d.skipped.is_empty() {
                "none".to_string()
            } else {
                d.skipped.join(", ")
            };
            reporter.event(Event::Note(format!(
                "{step}: {node} drained ({} pods evicted, {} left: {left})",
                d.evicted.len(),
                d.skipped.len()
            )));
            Ok(true)
        }
        Err(drain::DrainError::NoNode { .. }) => {
            reporter.event(Event::Note(format!("{step}: {node} has no Node to drain")));
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the Node object `node` (gone already is fine).
pub(super) async fn delete_node(kube: &kube::Client, node: &str, step: &str) -> anyhow::Result<()> {
    let nodes: kube::Api<Node> = kube::Api::all(kube.clone());
    match nodes.delete(node, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => anyhow::bail!("{step}: delete Node {node}: {e}"),
    }
}

/// Drains `node` before its machine goes (nothing to do without the cluster's API).
pub(super) async fn drain_for_replacement(
    kube: Option<&kube::Client>,
    node: &str,
    opts: &RollOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    if let Some(kube) = kube {
        drain_node(kube, node, &opts.drain, "rolling-update", reporter).await?;
    }
    Ok(())
}

/// `kforge rolling-update cluster` of a `provider: ec2` cluster: the masters in place (as for `provider: hosts`),
/// then every worker instance out of date (or all, with --force) replaced one at a time: drained, terminated through
/// its Auto Scaling group, its replacement waited for until it is in service and shows its host keys, bootstrapped,
/// Ready and the cluster valid before the next. `--cloud-only` replaces the instances and nothing else.
pub async fn rolling_update_ec2(
    aws: &crate::aws::Aws,
    store: &StateStore,
    record: &ClusterRecord,
    cluster: &Cluster,
    opts: &RollOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<Vec<Rolled>> {
    use crate::providers::{asg_roll, hosts};
    let mut out = Vec::new();
    let mut list = None;
    if !opts.cloud_only {
        let found = hosts::discover_ec2(aws, cluster, opts.host_key_timeout, true, reporter).await?;
        out = roll_in_place(store, record, cluster, &found, opts, false, reporter).await?;
        list = Some(found);
    }
    let mut done = if opts.force {
        rolled_so_far(store, &record.name).await?
    } else {
        BTreeSet::new()
    };
    let api = match &list {
        Some(list) => {
            let pki = selfbuilt::ensure_pki(store, cluster, list).await?;
            let (url, _, _, _) = selfbuilt::admin_credentials(store, record, list).await?;
            Some((
                ApiClient::kube_admin(&record.name, &url, &pki).await?,
                selfbuilt::admin_client(store, record, list).await?,
            ))
        }
        None => None,
    };
    // What rolls, in batches of --max-unavailable instances of one group.
    let mut batches: Vec<Vec<(asg_roll::GroupInstance, String)>> = Vec::new();
    let instances = if opts.roles.is_empty() || opts.roles.contains(&HostRole::Worker) {
        asg_roll::group_instances(aws, &cluster.name).await?
    } else {
        Vec::new()
    };
    for instance in instances {
        let row = |reason: String, result: &str| Rolled {
            host: instance.host_name(),
            role: "worker".into(),
            reason,
            result: result.into(),
        };
        if done.contains(&instance.instance_id) {
            out.push(row(
                "replaced by an earlier run of this --force update".into(),
                "done earlier",
            ));
            continue;
        }
        let reason = match instance.outdated() {
            Some(why) => why,
            None if opts.force => "--force".into(),
            None => {
                out.push(row(
                    format!("launch template version {}", instance.current),
                    "up to date",
                ));
                continue;
            }
        };
        if opts.dry_run {
            out.push(row(reason, "would replace"));
            continue;
        }
        match batches.last_mut() {
            Some(b) if b.len() < opts.max_unavailable.max(1) && b[0].0.asg == instance.asg => {
                b.push((instance, reason))
            }
            _ => batches.push(vec![(instance, reason)]),
        }
    }
    for batch in batches {
        let asg = batch[0].0.asg.clone();
        let group = batch[0].0.group.clone();
        let old: Vec<asg_roll::GroupInstance> = batch.iter().map(|(i, _)| i.clone()).collect();
        let old_ids: Vec<String> = old.iter().map(|i| i.instance_id.clone()).collect();
        for (i, reason) in &batch {
            reporter.event(Event::Note(format!(
                "rolling-update: {} (worker): {reason}",
                i.host_name()
            )));
        }
        let before = asg_roll::live_ids(aws, &cluster.name, &asg).await?;
        // Without a surge the old machines go first (drained, terminated, replaced); with one the replacements
        // come first and must be in service (and, through the cluster, Ready) before anything is drained.
        let (new_ids, restore_max) = if opts.surge {
            let restore = asg_roll::surge(aws, &cluster.name, &asg, old.len()).await?;
            reporter.event(Event::Note(format!(
                "rolling-update: group {asg} surges by {} before anything is drained",
                old.len()
            )));
            let new =
                asg_roll::wait_settled(aws, &cluster.name, &asg, &before, &[], old.len(), opts.replace_timeout).await?;
            (new, restore)
        } else {
            for i in &old {
                drain_for_replacement(api.as_ref().map(|a| &a.0), &i.host_name(), opts, reporter).await?;
            }
            asg_roll::terminate(aws, &old, false, reporter).await?;
            let new = asg_roll::wait_settled(
                aws,
                &cluster.name,
                &asg,
                &before,
                &old_ids,
                old.len(),
                opts.replace_timeout,
            )
            .await?;
            (new, None)
        };
        let found = hosts::discover_ec2(aws, cluster, opts.host_key_timeout, true, reporter).await?;
        let new_names: Vec<String> = new_ids.iter().map(|id| format!("{group}-{id}")).collect();
        for name in &new_names {
            let key = found
                .hosts
                .iter()
                .find(|h| &h.name == name)
                .map(BootstrapHost::host_key_shown)
                .unwrap_or_default();
            reporter.event(Event::Note(format!(
                "rolling-update: {name} in service, host key read from its console ({key})"
            )));
        }
        let mut bootstrapped = None;
        if let (Some((_, client)), false) = (&api, opts.cloud_only) {
            let report =
                selfbuilt::bootstrap_some(store, cluster, &found, &new_names, opts.bootstrap.clone(), reporter).await?;
            selfbuilt::record(store, cluster, &found, Some(&report)).await?;
            bootstrapped = Some(report);
            for name in &new_names {
                health::wait_node_ready(client, name, opts.bootstrap.health_timeout)
                    .await
                    .map_err(|e| anyhow::anyhow!("rolling-update: {name}: {e}"))?;
            }
        }
        if opts.surge {
            for i in &old {
                drain_for_replacement(api.as_ref().map(|a| &a.0), &i.host_name(), opts, reporter).await?;
            }
            asg_roll::terminate(aws, &old, true, reporter).await?;
            let after = asg_roll::live_ids(aws, &cluster.name, &asg).await?;
            asg_roll::wait_settled(aws, &cluster.name, &asg, &after, &old_ids, 0, opts.replace_timeout).await?;
            if let Some(max) = restore_max {
                asg_roll::restore_max(aws, &asg, max).await?;
            }
        }
        if let (Some((kube, _)), false) = (&api, opts.cloud_only) {
            for i in &old {
                delete_node(kube, &i.host_name(), "rolling-update").await?;
            }
            // The hosts without the old machines (a surge listed both).
            let found = hosts::discover_ec2(aws, cluster, opts.host_key_timeout, true, reporter).await?;
            if let Some(report) = &bootstrapped {
                selfbuilt::record(store, cluster, &found, Some(report)).await?;
            }
            let record = store.get(&record.name).await?.unwrap_or_else(|| record.clone());
            wait_valid(
                store,
                &record,
                &found,
                opts.validate_timeout,
                "re-run the rolling update (it resumes)",
            )
            .await?;
        }
        if opts.force {
            done.extend(old_ids.iter().cloned().chain(new_ids.iter().cloned()));
            save_rolled(store, &record.name, Some(&done)).await?;
        }
        for (i, reason) in &batch {
            out.push(Rolled {
                host: i.host_name(),
                role: "worker".into(),
                reason: format!("{reason}; replaced (new: {})", new_ids.join(", ")),
                result: "replaced".into(),
            });
        }
    }
    if opts.force && !opts.dry_run {
        save_rolled(store, &record.name, None).await?;
    }
    if opts.cloud_only && out.iter().any(|r| r.result == "replaced") {
        reporter.event(Event::Note(
            "rolling-update: --cloud-only: the new machines join the cluster at the next `kforge apply`".into(),
        ));
    }
    Ok(out)
}

/// One host of a rolling update: quorum check (masters), drain (kubelet hosts), update, restart, wait, validate,
/// uncordon.
#[allow(clippy::too_many_arguments)]
pub(super) async fn roll_host(
    store: &StateStore,
    record: &ClusterRecord,
    cluster: &Cluster,
    list: &HostList,
    host: &BootstrapHost,
    masters: &[Member],
    kube: &kube::Client,
    api: &ApiClient,
    opts: &RollOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let timeout = opts.bootstrap.health_timeout;
    let conn = connect(host, opts.bootstrap.connect_timeout)
        .await
        .map_err(step_failed)?;
    let conn = if host.role == HostRole::Master {
        let health = etcd::health_command_of(masters);
        let (conn, out) = blocking(conn, move |c| c.run("rolling-update: etcd health", &health)).await;
        let out = out.map_err(step_failed)?;
        let unhealthy = unhealthy_members(&format!("{}{}", out.stdout, out.stderr), masters);
        if !unhealthy.is_empty() {
            anyhow::bail!(
                "not rolling master {}: etcd member(s) {} are not healthy, and restarting {} now could cost etcd its \
                 quorum\n  hint: make etcd healthy (`kforge validate cluster {}`), then re-run",
                host.name,
                unhealthy.join(", "),
                host.name,
                record.name
            );
        }
        conn
    } else {
        conn
    };
    let kubelet = health::runs_kubelet(host.role);
    let cordoned = kubelet && drain_node(kube, &host.name, &opts.drain, "rolling-update", reporter).await?;
    // Update what is out of date (the bootstrap of this host alone restarts what reads a changed file)...
    selfbuilt::bootstrap_some(
        store,
        cluster,
        list,
        std::slice::from_ref(&host.name),
        opts.bootstrap.clone(),
        reporter,
    )
    .await?;
    // ...then restart every unit, one after the other, each waited for: the node comes back as after a reboot.
    let role = host.role;
    let expected = masters.len();
    let (_, r) = blocking(conn, move |c| {
        for unit in units_in_order(role) {
            c.run_ok("rolling-update: restart", &format!("systemctl restart {unit}"))?;
            match unit {
                "kforge-etcd" => {
                    etcd::wait_healthy(c, expected, timeout)?;
                }
                "kforge-kube-apiserver" => health::wait_apiserver_ready(c, timeout)?,
                _ => {}
            }
        }
        Ok(())
    })
    .await;
    r.map_err(step_failed)?;
    if kubelet {
        health::wait_node_ready(api, &host.name, timeout).await.map_err(|e| {
            anyhow::anyhow!(
                "rolling-update: {}: {e}\n  hint: see `journalctl -u kforge-kubelet` on the host",
                host.name
            )
        })?;
    }
    wait_valid(
        store,
        record,
        list,
        opts.validate_timeout,
        "re-run the rolling update (it resumes)",
    )
    .await?;
    if cordoned {
        drain::cordon(kube, &host.name, false).await?;
    }
    reporter.event(Event::Note(format!(
        "rolling-update: {} rolled, cluster valid",
        host.name
    )));
    Ok(())
}
