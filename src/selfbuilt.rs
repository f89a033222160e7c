//! The commands' side of self-built clusters (provider ec2 and hosts): the bootstrap phase with the PKI kept in the
//! state store, the hosts and API endpoint recorded for later commands, `kforge kubeconfig` from the admin
//! certificate, and `kforge validate cluster`, which asks etcd, the API server and the kubelets host by host.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::bootstrap::pki::{Pki, PkiRequest};
use crate::bootstrap::run::{self, Options, Report};
use crate::bootstrap::units::{self, ClusterFacts};
use crate::bootstrap::{etcd, ssh};
use crate::engine::{Outputs, Phase};
use crate::model::Cluster;
use crate::progress::{Event, Reporter};
use crate::providers::hosts::HostList;
use crate::spec::HostRole;
use crate::state::{ClusterRecord, StateStore};

/// The service network, pod network and DNS of every self-built cluster (kubeadm's defaults).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const CLUSTER_DNS: &str = "10.96.0.10";

/// Where the record keeps what the bootstrap worked on.
const HOSTS_OUTPUT: &str = "bootstrap";

fn api_url(list: &HostList, masters: &[crate::bootstrap::pki::Member]) -> String {
    match &list.api_endpoint {
        Some(e) => format!("https://{e}"),
        None => format!(
            "https://{}:6443",
            masters.first().map(|m| m.address.to_string()).unwrap_or_default()
        ),
    }
}

/// The PKI of the cluster, created or brought up to date in the state store.
async fn ensure_pki(store: &StateStore, cluster: &Cluster, list: &HostList) -> anyhow::Result<Pki> {
    let masters = run::members(&list.hosts).map_err(anyhow::Error::msg)?;
    let request = PkiRequest {
        cluster: cluster.name.clone(),
        masters,
        nodes: list
            .hosts
            .iter()
            .filter(|h| h.role == HostRole::Worker)
            .map(|h| h.name.clone())
            .collect(),
        api_endpoint: list
            .api_endpoint
            .as_deref()
            .map(|e| e.rsplit_once(':').map(|(h, _)| h).unwrap_or(e).to_string()),
        service_cidr: SERVICE_CIDR.parse().expect("valid CIDR"),
        cluster_domain: CLUSTER_DOMAIN.into(),
    };
    let dir = store.open_pki(&cluster.name).await?;
    let (pki, _) = Pki::ensure(&dir.path, &request)?;
    store.save_pki(&cluster.name, &dir).await?;
    Ok(pki)
}

/// The bootstrap phase: PKI, then every host; the hosts are recorded even when it fails (for validate/kubeconfig).
pub async fn bootstrap(
    store: &StateStore,
    cluster: &Cluster,
    list: &HostList,
    opts: Options,
    reporter: &dyn Reporter,
) -> anyhow::Result<Report> {
    let pki = ensure_pki(store, cluster, list).await?;
    let masters = run::members(&list.hosts).map_err(anyhow::Error::msg)?;
    let facts = ClusterFacts {
        cluster: cluster.name.clone(),
        api_url: api_url(list, &masters),
        masters,
        service_cidr: SERVICE_CIDR.into(),
        pod_cidr: POD_CIDR.into(),
        cluster_domain: CLUSTER_DOMAIN.into(),
        cluster_dns: CLUSTER_DNS.into(),
    };
    let result = run::run(
        &list.hosts,
        facts,
        pki,
        &cluster.kubernetes_version,
        cluster.assets.clone(),
        opts,
        reporter,
    )
    .await;
    record(store, cluster, list, result.as_ref().ok()).await?;
    match result {
        Ok(report) => {
            reporter.event(Event::Note(format!(
                "bootstrap: {} hosts, {} changes, {} files uploaded in {:.1}s",
                list.hosts.len(),
                report.changes(),
                report.uploads(),
                report.seconds
            )));
            Ok(report)
        }
        Err(failed) => {
            reporter.event(Event::Note(format!(
                "bootstrap: {} changes, {} files uploaded before it stopped",
                failed.report.changes(),
                failed.report.uploads()
            )));
            Err(failed.into())
        }
    }
}

async fn record(store: &StateStore, cluster: &Cluster, list: &HostList, done: Option<&Report>) -> anyhow::Result<()> {
    let previous = store.get(&cluster.name).await?;
    let now = crate::state::now();
    let mut outputs = previous.as_ref().map(|r| r.outputs.clone()).unwrap_or_default();
    let mut o = Outputs::new();
    o.insert("hosts".into(), serde_json::to_string(list)?);
    outputs.insert(HOSTS_OUTPUT.into(), o);
    let mut phases = previous.as_ref().map(|r| r.phases.clone()).unwrap_or_default();
    if done.is_some() && !phases.contains(&Phase::Bootstrap) {
        phases.push(Phase::Bootstrap);
    }
    store
        .put(&ClusterRecord {
            name: cluster.name.clone(),
            provider: cluster.provider,
            region: cluster.region.clone(),
            kubernetes_version: cluster.kubernetes_version.clone(),
            phases,
            status: if done.is_some() { "applied" } else { "failed" }.into(),
            spec: cluster.to_spec(),
            outputs,
            created_at: previous.map(|r| r.created_at).unwrap_or_else(|| now.clone()),
            updated_at: now,
            kforge_version: env!("CARGO_PKG_VERSION").into(),
        })
        .await
}

/// The hosts a self-built cluster's last bootstrap worked on.
pub fn recorded_hosts(record: &ClusterRecord) -> anyhow::Result<HostList> {
    let text = record
        .outputs
        .get(HOSTS_OUTPUT)
        .and_then(|o| o.get("hosts"))
        .with_context(|| {
            format!(
                "cluster {} has not been bootstrapped yet\n  hint: run `kforge create cluster -f SPEC` (or `apply`) first",
                record.name
            )
        })?;
    Ok(serde_json::from_str(text)?)
}

/// An admin kubeconfig of a self-built cluster, from the PKI in the state store.
pub async fn admin_kubeconfig(store: &StateStore, record: &ClusterRecord) -> anyhow::Result<String> {
    let list = recorded_hosts(record)?;
    let dir = store.open_pki(&record.name).await?;
    let read = |f: &str| {
        std::fs::read_to_string(dir.path.join(f))
            .with_context(|| format!("the state store has no {f} for cluster {}", record.name))
    };
    let masters = run::members(&list.hosts).map_err(anyhow::Error::msg)?;
    Ok(units::kubeconfig(
        &record.name,
        &api_url(&list, &masters),
        &read("ca.crt")?,
        "kubernetes-admin",
        &read("admin.crt")?,
        &read("admin.key")?,
    ))
}

/// One line of `kforge validate cluster`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub host: String,
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Asks every host: etcd health and the API server's /readyz on masters, kubelet on workers, and the nodes'
/// Ready condition as the API reports it.
pub async fn validate(list: HostList, connect_timeout: Duration) -> Vec<Check> {
    tokio::task::spawn_blocking(move || {
        let mut checks = Vec::new();
        let masters = list.hosts.iter().filter(|h| h.role == HostRole::Master).count();
        let mut asked_nodes = false;
        for h in &list.hosts {
            let mut add = |check: &str, ok: bool, detail: String| {
                checks.push(Check {
                    host: h.name.clone(),
                    check: check.into(),
                    ok,
                    detail,
                })
            };
            let conn = match ssh::connect(h, connect_timeout) {
                Ok(c) => c,
                Err(e) => {
                    add("ssh", false, format!("{}: {}", e.step, e.message));
                    continue;
                }
            };
            let mut probe =
                |check: &str, command: &str, ok: &dyn Fn(&ssh::Output) -> bool| match conn.run(check, command) {
                    Ok(out) => {
                        let text = format!("{}{}", out.stdout, out.stderr);
                        let last = text.trim().lines().last().unwrap_or_default().to_string();
                        add(check, ok(&out), last);
                        Some(out)
                    }
                    Err(e) => {
                        add(check, false, e.message);
                        None
                    }
                };
            if h.role == HostRole::Master {
                probe("etcd health", &etcd::health_command(), &|o| {
                    o.status == 0
                        && o.stdout.matches("is healthy").count() + o.stderr.matches("is healthy").count() >= masters
                });
                probe("apiserver readyz", &run::readyz_command(), &|o| {
                    o.status == 0 && o.stdout.trim() == "ok"
                });
                if !asked_nodes {
                    asked_nodes = true;
                    if let Some(out) = probe(
                        "nodes ready",
                        "/opt/kforge/bin/kubectl --kubeconfig /etc/kforge/admin.kubeconfig get nodes --no-headers",
                        &|o| {
                            o.status == 0
                                && !o.stdout.is_empty()
                                && o.stdout.lines().all(|l| l.split_whitespace().nth(1) == Some("Ready"))
                        },
                    ) {
                        let _ = out;
                    }
                }
            } else {
                probe(
                    "kubelet",
                    "systemctl is-active kforge-kubelet kforge-kube-proxy kforge-containerd",
                    &|o| o.status == 0,
                );
            }
        }
        checks
    })
    .await
    .expect("validation does not panic")
}
