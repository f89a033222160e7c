//! Day 2 of self-built clusters: hosts taken out of the spec (drained, Node deleted, units stopped; a master only
//! while etcd keeps quorum, its member removed first), `kforge rolling-update cluster` (one node at a time:
//! drain, update, wait until Ready and `validate cluster` passes, uncordon; masters first and only with every etcd
//! member healthy), and etcd `backup` / `restore` through the state store.
//!
//! Files: `rolling` (rolling-update), `snapshots` (backup and restore); hosts leaving the spec and the helpers they
//! share are here.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::bootstrap::StepError;
use crate::bootstrap::api::{self, ApiClient};
use crate::bootstrap::drain::{self, DrainOptions};
use crate::bootstrap::host::BootstrapHost;
use crate::bootstrap::pki::{Member, Pki};
use crate::bootstrap::run::{self, Options};
use crate::bootstrap::ssh::{self, Connection};
use crate::bootstrap::{backup, etcd, health};
use crate::engine::Step;
use crate::engine::executor::TimedOut;
use crate::engine::wait::Wait;
use crate::model::Cluster;
use crate::progress::{Event, Reporter};
use crate::providers::hosts::HostList;
use crate::selfbuilt;
use crate::spec::HostRole;
use crate::state::{BackupRecord, ClusterRecord, StateStore};

/// The units kforge runs on a host of `role`, in the order a restart takes them.
fn units_in_order(role: HostRole) -> Vec<&'static str> {
    health::units_of(role).to_vec()
}

/// Connects to `host` on a blocking thread.
async fn connect(host: &BootstrapHost, timeout: Duration) -> Result<Connection, StepError> {
    let host = host.clone();
    tokio::task::spawn_blocking(move || ssh::connect(&host, timeout))
        .await
        .expect("connect does not panic")
}

/// Runs `f` with `conn` on a blocking thread (libssh2 blocks) and gives the connection back.
async fn blocking<T: Send + 'static>(
    conn: Connection,
    f: impl FnOnce(&Connection) -> Result<T, StepError> + Send + 'static,
) -> (Connection, Result<T, StepError>) {
    tokio::task::spawn_blocking(move || {
        let r = f(&conn);
        (conn, r)
    })
    .await
    .expect("SSH steps do not panic")
}

fn step_failed(e: StepError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}: {}\n  hint: {}", e.host, e.step, e.message, e.hint)
}

/// Why taking `removed` masters out of `before` would break etcd, or `None` when it keeps quorum: never every
/// master, and only while every member that stays is healthy. Members then leave one after the other, each removal
/// committed by all of the (healthy) members that remain, so etcd has a quorum at every step; the spec's own rule
/// (one, three or five masters) means going from three to one takes two at once.
pub fn master_removal_problem(before: &[String], removed: &[String], unhealthy: &[String]) -> Option<String> {
    if removed.is_empty() {
        return None;
    }
    if removed.len() >= before.len() {
        return Some("no master would be left: delete the cluster instead".into());
    }
    let staying_unhealthy: Vec<&str> = unhealthy
        .iter()
        .filter(|u| !removed.contains(u))
        .map(String::as_str)
        .collect();
    if !staying_unhealthy.is_empty() {
        return Some(format!(
            "etcd member(s) {} that stay are not healthy: without {} etcd could lose its quorum",
            staying_unhealthy.join(", "),
            removed.join(", ")
        ));
    }
    None
}

/// The etcd members `endpoint health --cluster` did not call healthy (by address), named as masters.
fn unhealthy_members(health_output: &str, masters: &[Member]) -> Vec<String> {
    masters
        .iter()
        .filter(|m| {
            !health_output
                .lines()
                .any(|l| l.contains(&format!("https://{}:2379", m.address)) && l.contains("is healthy"))
        })
        .map(|m| m.name.clone())
        .collect()
}

/// Takes the hosts of `before` that `after` no longer has out of the cluster (see the module comment). Runs
/// before the bootstrap of `after`, which then renders the remaining masters without the removed ones.
#[allow(clippy::too_many_arguments)]
pub async fn remove_hosts(
    store: &StateStore,
    record: &ClusterRecord,
    before: &HostList,
    after: &HostList,
    pki: &Pki,
    opts: &Options,
    drain_opts: &DrainOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let keep: BTreeSet<&str> = after.hosts.iter().map(|h| h.name.as_str()).collect();
    let removed: Vec<&BootstrapHost> = before
        .hosts
        .iter()
        .filter(|h| !keep.contains(h.name.as_str()))
        .collect();
    if removed.is_empty() {
        return Ok(());
    }
    let (url, _, _, _) = selfbuilt::admin_credentials(store, record, before).await?;
    let client = api::ApiClient::kube_admin(&record.name, &url, pki).await?;
    let masters_before = run::members(&before.hosts).map_err(anyhow::Error::msg)?;
    let removed_masters: Vec<String> = removed
        .iter()
        .filter(|h| h.role == HostRole::Master)
        .map(|h| h.name.clone())
        .collect();
    // A master leaves etcd first, asked on one that stays.
    let mut stays = None;
    if !removed_masters.is_empty() {
        let staying = before
            .hosts
            .iter()
            .find(|h| h.role == HostRole::Master && !removed_masters.contains(&h.name))
            .context("every master would be removed: delete the cluster instead")?;
        let conn = connect(staying, opts.connect_timeout).await.map_err(step_failed)?;
        let health = etcd::health_command_of(&masters_before);
        let (conn, out) = blocking(conn, move |c| c.run("remove: etcd health", &health)).await;
        let out = out.map_err(step_failed)?;
        let unhealthy = unhealthy_members(&format!("{}{}", out.stdout, out.stderr), &masters_before);
        let names: Vec<String> = masters_before.iter().map(|m| m.name.clone()).collect();
        if let Some(problem) = master_removal_problem(&names, &removed_masters, &unhealthy) {
            anyhow::bail!(
                "cannot remove master {}: {problem}\n  hint: put the master back in the spec, make etcd healthy \
                 (`kforge validate cluster {}`), and re-run",
                removed_masters.join(", "),
                record.name
            );
        }
        stays = Some(conn);
    }
    for host in removed {
        reporter.event(Event::Note(format!(
            "remove: {} ({}) is no longer in the spec",
            host.name,
            host.role_name()
        )));
        if health::runs_kubelet(host.role) {
            drain_node(&client, &host.name, drain_opts, "remove", reporter).await?;
            delete_node(&client, &host.name, "remove").await?;
        }
        if host.role == HostRole::Master
            && let Some(conn) = stays.take()
        {
            let name = host.name.clone();
            let timeout = opts.health_timeout;
            let (conn, r) = blocking(conn, move |c| {
                let list = c.run_ok("remove: etcd members", &etcd::etcdctl("member list"))?;
                let listed = etcd::parse_member_list(&list.stdout);
                let Some(member) = listed.iter().find(|m| m.name == name) else {
                    return Ok(());
                };
                let remove = etcd::etcdctl(&format!("member remove {}", member.id));
                etcd::reconfigure(c, "remove: etcd member", &remove, "member not found", timeout).map(|_| ())
            })
            .await;
            r.map_err(step_failed)?;
            stays = Some(conn);
            reporter.event(Event::Note(format!("remove: {} left etcd", host.name)));
        }
        let units = units_in_order(host.role).join(" ");
        match connect(host, opts.connect_timeout).await {
            Ok(conn) => {
                let (_, r) = blocking(conn, move |c| {
                    c.run_ok(
                        "remove: stop units",
                        &format!(
                            "systemctl disable --now {units} 2>/dev/null; systemctl reset-failed 2>/dev/null; true"
                        ),
                    )?;
                    // A removed member must never start again on its old data (it would try to rejoin under an
                    // ID etcd removed): kept aside, not deleted, so that nothing is lost.
                    c.run_ok(
                        "remove: etcd data",
                        &format!(
                            "if [ -d {data} ]; then mv {data} {data}.removed-$(date -u +%Y%m%dT%H%M%SZ); fi; rm -f {env}",
                            data = etcd::DATA_DIR,
                            env = etcd::INITIAL_ENV
                        ),
                    )
                })
                .await;
                r.map_err(step_failed)?;
                reporter.event(Event::Note(format!("remove: {}: kforge's units stopped", host.name)));
            }
            Err(e) => reporter.event(Event::Note(format!(
                "remove: warning: {} is unreachable ({}): its units were not stopped; if it comes back, stop them \
                 by hand (`systemctl disable --now kforge-kubelet ...`)",
                host.name, e.message
            ))),
        }
    }
    Ok(())
}

mod rolling;
mod snapshots;
pub use rolling::*;
pub use snapshots::*;

#[cfg(test)]
mod tests;
