//! The commands' side of self-built clusters (provider ec2 and hosts): the bootstrap phase with the PKI kept in the
//! state store, the hosts and API endpoint recorded for later commands, `kforge kubeconfig` from the admin
//! certificate, and `kforge validate cluster` (`bootstrap::health`'s checks of every host and of the API).

use std::time::Duration;

use anyhow::Context as _;

use crate::bootstrap::api::ApiClient;
use crate::bootstrap::drain::DrainOptions;
use crate::bootstrap::pki::{Pki, PkiRequest};
use crate::bootstrap::run::{self, Options, Report};
use crate::bootstrap::units::{self, ClusterFacts};
use crate::bootstrap::{health, ssh};
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

/// What the cluster's certificates must name.
pub fn pki_request(cluster: &Cluster, list: &HostList) -> anyhow::Result<PkiRequest> {
    Ok(PkiRequest {
        cluster: cluster.name.clone(),
        masters: run::members(&list.hosts).map_err(anyhow::Error::msg)?,
        nodes: run::nodes(&list.hosts).map_err(anyhow::Error::msg)?,
        api_endpoint: list
            .api_endpoint
            .as_deref()
            .map(|e| e.rsplit_once(':').map(|(h, _)| h).unwrap_or(e).to_string()),
        service_cidr: SERVICE_CIDR.parse().expect("valid CIDR"),
        cluster_domain: CLUSTER_DOMAIN.into(),
    })
}

/// Every file the bootstrap would write to each host of `list`, by host name, rendered with the PKI in `pki_dir`
/// (created there when missing): what `create` puts on the machines, without connecting to any.
pub fn rendered_files(
    cluster: &Cluster,
    list: &HostList,
    pki_dir: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<ssh::FileSpec>>> {
    let (pki, _) = Pki::ensure(pki_dir, &pki_request(cluster, list)?)?;
    let facts = cluster_facts(cluster, list)?;
    Ok(list
        .hosts
        .iter()
        .map(|h| (h.name.clone(), run::host_files(&facts, &pki, h)))
        .collect())
}

/// The PKI of the cluster, created or brought up to date in the state store.
pub(crate) async fn ensure_pki(store: &StateStore, cluster: &Cluster, list: &HostList) -> anyhow::Result<Pki> {
    let request = pki_request(cluster, list)?;
    let dir = store.open_pki(&cluster.name).await?;
    let (pki, _) = Pki::ensure(&dir.path, &request)?;
    store.save_pki(&cluster.name, &dir).await?;
    Ok(pki)
}

/// The addons the bootstrap applies: the spec's, after the cloud controller on provider ec2 (its kubelets run
/// with `--cloud-provider=external` and keep their Nodes tainted uninitialized until it runs).
pub fn addon_names(cluster: &Cluster) -> Vec<String> {
    let cloud = (cluster.provider == crate::spec::Provider::Ec2)
        .then(|| crate::bootstrap::addons::CLOUD_CONTROLLER.to_string());
    cloud
        .into_iter()
        .chain(cluster.addons.iter().map(|a| a.name.clone()))
        .collect()
}

/// What every host's files are rendered from.
pub(crate) fn cluster_facts(cluster: &Cluster, list: &HostList) -> anyhow::Result<ClusterFacts> {
    let masters = run::members(&list.hosts).map_err(anyhow::Error::msg)?;
    let manifest = crate::assets::manifest(&cluster.kubernetes_version)?;
    let registry = cluster.assets.image_registry.as_deref();
    let containerd = manifest
        .version_of("containerd", &cluster.assets.files)
        .context("the asset manifest has no containerd")?;
    Ok(ClusterFacts {
        cluster: cluster.name.clone(),
        api_url: api_url(list, &masters),
        masters,
        service_cidr: SERVICE_CIDR.into(),
        pod_cidr: POD_CIDR.into(),
        cluster_domain: CLUSTER_DOMAIN.into(),
        cluster_dns: CLUSTER_DNS.into(),
        containerd_major: crate::assets::major_of(&containerd),
        external_cloud: cluster.provider == crate::spec::Provider::Ec2,
        fail_cgroup_v1: cluster.kubelet.fail_cgroup_v1,
        eviction_hard: cluster.kubelet.eviction_hard_rendered(),
        image_gc: cluster.kubelet.image_gc_rendered(),
        sandbox_image: manifest
            .image("pause", registry)
            .context("the asset manifest has no pause image")?,
    })
}

/// The bootstrap phase: PKI, then the hosts taken out of the spec (drained, their Nodes deleted, their units
/// stopped), then every host; the hosts are recorded even when the bootstrap fails (for validate/kubeconfig), but
/// only once the removed ones are gone (so an interrupted removal is retried).
pub async fn bootstrap(
    store: &StateStore,
    cluster: &Cluster,
    list: &HostList,
    opts: Options,
    drain: &DrainOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<Report> {
    let pki = ensure_pki(store, cluster, list).await?;
    let mut established = false;
    if let Some(previous) = store.get(&cluster.name).await?
        && let Ok(before) = recorded_hosts(&previous)
    {
        established = previous.phases.contains(&Phase::Bootstrap);
        crate::day2::remove_hosts(store, &previous, &before, list, &pki, &opts, drain, reporter).await?;
    }
    let facts = cluster_facts(cluster, list)?;
    let result = run::run(
        &list.hosts,
        facts,
        pki,
        &cluster.kubernetes_version,
        cluster.assets.clone(),
        &addon_names(cluster),
        Options { established, ..opts },
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

/// The bootstrap of some hosts of an existing cluster (`names`), rendered for the whole of `list`: the rolling
/// update's "update this host". Cluster-wide stages (etcd's health across members, the addons) are left to the
/// full run, and nothing is recorded.
pub(crate) async fn bootstrap_some(
    store: &StateStore,
    cluster: &Cluster,
    list: &HostList,
    names: &[String],
    opts: Options,
    reporter: &dyn Reporter,
) -> anyhow::Result<Report> {
    let pki = ensure_pki(store, cluster, list).await?;
    let facts = cluster_facts(cluster, list)?;
    let hosts: Vec<_> = list.hosts.iter().filter(|h| names.contains(&h.name)).cloned().collect();
    Ok(run::run(
        &hosts,
        facts,
        pki,
        &cluster.kubernetes_version,
        cluster.assets.clone(),
        &[],
        Options {
            partial: true,
            established: true,
            ..opts
        },
        reporter,
    )
    .await?)
}

pub(crate) async fn record(
    store: &StateStore,
    cluster: &Cluster,
    list: &HostList,
    done: Option<&Report>,
) -> anyhow::Result<()> {
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

/// The cluster admin's credentials from the PKI in the state store: (API URL, CA, certificate, key) PEMs.
pub(crate) async fn admin_credentials(
    store: &StateStore,
    record: &ClusterRecord,
    list: &HostList,
) -> anyhow::Result<(String, String, String, String)> {
    let dir = store.open_pki(&record.name).await?;
    let read = |f: &str| {
        std::fs::read_to_string(dir.path.join(f))
            .with_context(|| format!("the state store has no {f} for cluster {}", record.name))
    };
    let masters = run::members(&list.hosts).map_err(anyhow::Error::msg)?;
    Ok((
        api_url(list, &masters),
        read("ca.crt")?,
        read("admin.crt")?,
        read("admin.key")?,
    ))
}

/// An admin kubeconfig of a self-built cluster, from the PKI in the state store.
pub async fn admin_kubeconfig(store: &StateStore, record: &ClusterRecord) -> anyhow::Result<String> {
    let list = recorded_hosts(record)?;
    let (url, ca, cert, key) = admin_credentials(store, record, &list).await?;
    Ok(units::kubeconfig(
        &record.name,
        &url,
        &ca,
        "kubernetes-admin",
        &cert,
        &key,
    ))
}

pub use crate::bootstrap::health::Check;

/// `kforge validate cluster`: every host over SSH (each unit on its own, each component's health endpoint), at
/// once, and the cluster through its API as the admin (a Ready Node for every host that runs a kubelet, the
/// system pods, the control plane's leader leases).
pub async fn validate(
    store: &StateStore,
    record: &ClusterRecord,
    connect_timeout: Duration,
) -> anyhow::Result<Vec<Check>> {
    let list = recorded_hosts(record)?;
    checks(store, record, &list, connect_timeout).await
}

/// The checks of `validate cluster` on the hosts of `list`.
pub(crate) async fn checks(
    store: &StateStore,
    record: &ClusterRecord,
    list: &HostList,
    connect_timeout: Duration,
) -> anyhow::Result<Vec<Check>> {
    let masters = list.hosts.iter().filter(|h| h.role == HostRole::Master).count();
    let per_host = list.hosts.iter().cloned().map(|h| {
        tokio::task::spawn_blocking(move || match ssh::connect(&h, connect_timeout) {
            Ok(conn) => health::check_host(&conn, &h, masters),
            Err(e) => vec![Check {
                host: h.name.clone(),
                check: "ssh".into(),
                ok: false,
                detail: format!("{}: {}", e.step, e.message),
            }],
        })
    });
    let api = admin_client(store, record, list).await?;
    let (hosts, cluster) = tokio::join!(
        futures::future::join_all(per_host),
        health::check_cluster(&api, &list.hosts)
    );
    let mut checks = Vec::new();
    for h in hosts {
        checks.extend(h.context("a host check panicked")?);
    }
    checks.extend(cluster);
    Ok(checks)
}

/// kforge's admin client of the cluster's API, from the PKI in the state store.
pub(crate) async fn admin_client(
    store: &StateStore,
    record: &ClusterRecord,
    list: &HostList,
) -> anyhow::Result<ApiClient> {
    let (url, ca, cert, key) = admin_credentials(store, record, list).await?;
    ApiClient::new(&url, &ca, &cert, &key)
}
