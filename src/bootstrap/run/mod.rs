//! The bootstrap of a self-built cluster, host by host and stage by stage: connect (keys verified), the preflight
//! checks of every host (nothing is installed anywhere unless all pass) and the kernel settings pods need, the etcd
//! members on the masters and their health, the container runtime everywhere, the Kubernetes binaries, the control
//! plane one master at a time, kubelet and kube-proxy on the workers (each waited for until healthy and
//! registered as a Node), then the addons of `spec.addons` through the API. Hosts of a stage run in parallel
//! (bounded by `--concurrency`, each on a blocking thread since libssh2 blocks); a stage starts only when the
//! previous one succeeded on every host it concerns, so a failure never leaves a later stage half-done. Every
//! step is guarded, so a re-run after any failure continues where it stopped and changes nothing that is right.
//!
//! Files: `host_steps` (connect, preflight, host settings), `assets_step` (binaries and their restarts),
//! `node_role` (instance identity, control-plane role, addons), `pending` (what is out of date); the stages'
//! order and the shared types are here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::addons;
use super::api::ApiClient;
use super::etcd;
use super::health;
use super::pki::{Member, Pki};
use super::preflight::{self, ClockSample};
use super::ssh::{self, Connection};
use super::units::{self, ClusterFacts};
use crate::assets::{self, Manifest, Stage};
use crate::bootstrap::StepError;
use crate::bootstrap::host::BootstrapHost;
use crate::model::Assets;
use crate::progress::{Event, Reporter};
use crate::spec::HostRole;

/// Where the etcd asset puts etcd.
const ETCD_BINARY: &str = "/opt/kforge/bin/etcd";

#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts worked on at once.
    pub concurrency: usize,
    /// How long to keep trying to reach a host's sshd (new machines take a while).
    pub connect_timeout: Duration,
    /// How long the etcd members and the API server get to report healthy.
    pub health_timeout: Duration,
    /// Only some hosts of the cluster (a rolling update's one host): the addons are left to a full run.
    pub partial: bool,
    /// The cluster has been bootstrapped before: a master without etcd data joins the running etcd (an added
    /// master, or one whose data was lost) instead of starting a new one.
    pub established: bool,
}

/// One step on one host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    pub host: String,
    pub step: String,
    pub changed: bool,
    pub uploaded: Vec<String>,
}

/// Everything a run did (also on failure: what finished before).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub steps: Vec<StepResult>,
    pub seconds: f64,
}

impl Report {
    pub fn changes(&self) -> usize {
        self.steps.iter().filter(|s| s.changed).count()
    }

    pub fn uploads(&self) -> usize {
        self.steps.iter().map(|s| s.uploaded.len()).sum()
    }
}

/// The stage that failed and why, host by host (hosts failing the same way are listed together).
#[derive(Debug, thiserror::Error)]
#[error("bootstrap stopped at stage {stage}:\n{}", grouped(.failures))]
pub struct BootstrapFailed {
    pub stage: String,
    pub failures: Vec<StepError>,
    pub report: Report,
}

fn grouped(failures: &[StepError]) -> String {
    let mut by_cause: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for f in failures {
        let hosts = by_cause
            .entry((f.step.clone(), f.message.clone(), f.hint.clone()))
            .or_default();
        // A failure seen from every host of a stage (the API endpoint, the asset manifest) carries one name: once.
        if !hosts.contains(&f.host) {
            hosts.push(f.host.clone());
        }
    }
    by_cause
        .into_iter()
        .map(|((step, message, hint), hosts)| format!("  - {}: {step}: {message}\n    hint: {hint}", hosts.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A host with its connection while the bootstrap works on it.
struct HostWork {
    host: BootstrapHost,
    conn: Option<Connection>,
    arch: String,
    results: Vec<StepResult>,
    /// What the preflight found worth saying but not worth stopping for.
    warnings: Vec<String>,
    clock: Option<ClockSample>,
    /// What a check-only pass found out of date on the host.
    pending: Vec<String>,
    /// The assets this run installed on the host (their units must restart to run them).
    installed: Vec<String>,
    /// Whether etcd was running before this run installed a new etcd (so it must be restarted, in turn).
    etcd_was_active: bool,
    /// The member's files changed while it ran: restarted in turn, one member at a time.
    etcd_restart_due: bool,
    /// The member holds etcd data (it has started before).
    etcd_has_data: bool,
    /// A master that joins the running etcd (see [`Options::established`]).
    etcd_joining: bool,
}

impl HostWork {
    fn new(host: &BootstrapHost) -> HostWork {
        HostWork {
            host: host.clone(),
            conn: None,
            arch: String::new(),
            results: Vec::new(),
            warnings: Vec::new(),
            clock: None,
            pending: Vec::new(),
            installed: Vec::new(),
            etcd_was_active: false,
            etcd_restart_due: false,
            etcd_has_data: false,
            etcd_joining: false,
        }
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("connected in the first stage")
    }

    fn record(&mut self, step: &str, changed: bool, uploaded: Vec<String>) {
        self.results.push(StepResult {
            host: self.host.name.clone(),
            step: step.into(),
            changed,
            uploaded,
        });
    }

    fn is_master(&self) -> bool {
        self.host.role == HostRole::Master
    }
}

/// What every stage reads.
struct Shared {
    facts: ClusterFacts,
    pki: Pki,
    manifest: Manifest,
    assets: Assets,
    version: String,
    opts: Options,
    /// The addons to apply (`spec.addons`).
    addons: Vec<String>,
    /// The cluster's API as its admin.
    api: ApiClient,
    /// The runtime the blocking stages call the API through.
    rt: tokio::runtime::Handle,
}

impl Shared {
    /// The etcd member (and control-plane instance) of master `name`.
    fn member(&self, name: &str) -> Member {
        self.facts
            .masters
            .iter()
            .find(|m| m.name == name)
            .expect("every master is a member")
            .clone()
    }
}

/// The masters as etcd and the certificates name them (addresses resolved once).
pub fn members(hosts: &[BootstrapHost]) -> Result<Vec<Member>, String> {
    resolved(hosts.iter().filter(|h| h.role == HostRole::Master))
}

/// Every host as the kubelets' serving certificates name it (every host is a Node).
pub fn nodes(hosts: &[BootstrapHost]) -> Result<Vec<Member>, String> {
    resolved(hosts.iter())
}

fn resolved<'a>(hosts: impl Iterator<Item = &'a BootstrapHost>) -> Result<Vec<Member>, String> {
    use std::net::ToSocketAddrs as _;
    hosts
        .map(|h| {
            let address = h
                .address
                .parse()
                .ok()
                .or_else(|| (h.address.as_str(), 0).to_socket_addrs().ok()?.next().map(|a| a.ip()))
                .ok_or_else(|| format!("{}: cannot resolve {}", h.name, h.address))?;
            Ok(Member {
                name: h.name.clone(),
                address,
            })
        })
        .collect()
}

/// Runs `work` on every selected host, at most `concurrency` at once; returns the failures.
async fn stage<F>(
    hosts: &mut Vec<HostWork>,
    concurrency: usize,
    select: impl Fn(&HostWork) -> bool,
    work: F,
) -> Vec<StepError>
where
    F: Fn(&mut HostWork) -> Result<(), StepError> + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::new();
    let mut kept = Vec::new();
    for (i, h) in std::mem::take(hosts).into_iter().enumerate() {
        if !select(&h) {
            kept.push((i, h));
            continue;
        }
        let sem = Arc::clone(&sem);
        let work = Arc::clone(&work);
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            tokio::task::spawn_blocking(move || {
                let mut h = h;
                let r = work(&mut h);
                (i, h, r)
            })
            .await
            .expect("bootstrap steps do not panic")
        }));
    }
    let mut failures = Vec::new();
    for handle in handles {
        let (i, h, r) = handle.await.expect("bootstrap steps do not panic");
        if let Err(e) = r {
            failures.push(e);
        }
        kept.push((i, h));
    }
    kept.sort_by_key(|(i, _)| *i);
    *hosts = kept.into_iter().map(|(_, h)| h).collect();
    failures
}

/// Runs the whole bootstrap. `reporter` gets a line per finished stage.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    hosts: &[BootstrapHost],
    facts: ClusterFacts,
    pki: Pki,
    version: &str,
    asset_settings: Assets,
    addon_names: &[String],
    opts: Options,
    reporter: &dyn Reporter,
) -> Result<Report, BootstrapFailed> {
    let started = Instant::now();
    let fail = |stage: &str, failures: Vec<StepError>, hosts: &[HostWork]| BootstrapFailed {
        stage: stage.into(),
        failures,
        report: Report {
            steps: hosts.iter().flat_map(|h| h.results.clone()).collect(),
            seconds: started.elapsed().as_secs_f64(),
        },
    };
    let manifest = manifest_of(version, &facts.cluster)?;
    let api = ApiClient::admin(&facts.api_url, &pki).map_err(|e| BootstrapFailed {
        stage: "credentials".into(),
        failures: vec![StepError {
            host: facts.api_url.clone(),
            step: "admin client".into(),
            message: format!("{e:#}"),
            hint: "the state store's PKI is broken: report it with this message".into(),
            transient: false,
        }],
        report: Report::default(),
    })?;
    let shared = Arc::new(Shared {
        facts,
        pki,
        manifest,
        assets: asset_settings,
        version: version.into(),
        opts: opts.clone(),
        addons: addon_names.to_vec(),
        api,
        rt: tokio::runtime::Handle::current(),
    });
    let mut work: Vec<HostWork> = hosts.iter().map(HostWork::new).collect();
    let n = opts.concurrency;
    let done = |what: &str| {
        reporter.event(Event::Note(format!(
            "bootstrap: {what} ({:.1}s)",
            started.elapsed().as_secs_f64()
        )));
    };

    // 1. Connect to every host (host keys checked) and learn its architecture.
    let s = Arc::clone(&shared);
    let failed = stage(&mut work, n, |_| true, move |h| connect_step(h, &s.opts)).await;
    if !failed.is_empty() {
        return Err(fail("connect", failed, &work));
    }
    done(&format!("{} hosts reached, keys verified", work.len()));

    // Preflight: read-only checks of every host and of their clocks against each other; nothing is installed
    // anywhere unless every host passes.
    let s = Arc::clone(&shared);
    let failed = stage(&mut work, n, |_| true, move |h| preflight_step(h, &s.facts, &s.version)).await;
    if !failed.is_empty() {
        return Err(fail("preflight", failed, &work));
    }
    let samples: Vec<(String, ClockSample)> = work
        .iter()
        .filter_map(|h| Some((h.host.name.clone(), h.clock.clone()?)))
        .collect();
    let skewed: Vec<StepError> = preflight::clock_skew(&samples)
        .into_iter()
        .map(|(host, p)| StepError {
            host,
            step: "preflight: clock".into(),
            message: p.message,
            hint: p.hint,
            transient: false,
        })
        .collect();
    if !skewed.is_empty() {
        return Err(fail("preflight", skewed, &work));
    }
    let mut warned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in &work {
        for w in &h.warnings {
            warned.entry(w.clone()).or_default().push(h.host.name.clone());
        }
    }
    for (warning, hosts) in warned {
        reporter.event(Event::Note(format!(
            "bootstrap: warning: {}: {warning}",
            hosts.join(", ")
        )));
    }
    let failed = stage(&mut work, n, |h| health::runs_kubelet(h.host.role), host_settings_step).await;
    if !failed.is_empty() {
        return Err(fail("host settings", failed, &work));
    }
    done("preflight passed on every host");

    // 2. etcd on the masters, then its health through kforge's client certificate. In a cluster bootstrapped
    //    before, a master without etcd data joins the running members (one at a time, after the others are up to
    //    date). A 3.5 member before the bridge release moves onto it first, one master at a time; a running member
    //    whose binary or files changed is restarted afterwards, one at a time, each waited healthy (a restart must
    //    not cost the quorum).
    let failed = stage(&mut work, n, HostWork::is_master, |h| {
        h.etcd_was_active = h.conn().run("etcd", "systemctl is-active --quiet kforge-etcd")?.status == 0;
        h.etcd_has_data = etcd::has_data(h.conn())?;
        Ok(())
    })
    .await;
    if !failed.is_empty() {
        return Err(fail("etcd", failed, &work));
    }
    let with_data: Vec<(String, bool)> = work
        .iter()
        .filter(|h| h.is_master())
        .map(|h| (h.host.name.clone(), h.etcd_has_data))
        .collect();
    let joiners = etcd::joiners(opts.established, &with_data);
    for h in work.iter_mut() {
        h.etcd_joining = joiners.contains(&h.host.name);
    }
    // The members etcd has before any joins (the bridge and restarts wait for these to be healthy).
    let running_members = shared.facts.masters.len() - joiners.len();
    let seeds: Vec<Member> = shared
        .facts
        .masters
        .iter()
        .filter(|m| !joiners.contains(&m.name))
        .cloned()
        .collect();
    if !joiners.is_empty() {
        reporter.event(Event::Note(format!(
            "bootstrap: {} join the running etcd of {}",
            joiners.join(", "),
            seeds.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let s = Arc::clone(&shared);
    let failed = stage(
        &mut work,
        1,
        |h| h.is_master() && !h.etcd_joining,
        move |h| etcd_bridge_step(h, &s, running_members),
    )
    .await;
    if !failed.is_empty() {
        return Err(fail("etcd upgrade", failed, &work));
    }
    let s = Arc::clone(&shared);
    let failed = stage(&mut work, n, HostWork::is_master, move |h| {
        install_assets(h, &s, Stage::Etcd)?;
        let me = s.member(&h.host.name);
        let start = if h.etcd_joining {
            etcd::Start::Join
        } else if h.etcd_was_active {
            etcd::Start::Deferred
        } else {
            etcd::Start::Now
        };
        let r = etcd::ensure_member(
            h.conn(),
            &s.pki,
            &s.facts.cluster,
            &me,
            &s.facts.masters,
            ETCD_BINARY,
            h.etcd_has_data,
            start,
        )?;
        let changed = r.changed();
        h.etcd_restart_due = r.restart_due || (h.etcd_was_active && h.installed.iter().any(|a| a == "etcd"));
        h.record("etcd member", changed, r.uploaded);
        Ok(())
    })
    .await;
    if !failed.is_empty() {
        return Err(fail("etcd", failed, &work));
    }
    let s = Arc::clone(&shared);
    let failed = stage(
        &mut work,
        1,
        |h| h.etcd_restart_due,
        move |h| {
            h.conn().run_ok("etcd: restart", "systemctl restart kforge-etcd")?;
            etcd::wait_healthy(h.conn(), running_members, s.opts.health_timeout)?;
            h.record("etcd restarted (new binary or files)", true, Vec::new());
            Ok(())
        },
    )
    .await;
    if !failed.is_empty() {
        return Err(fail("etcd", failed, &work));
    }
    let s = Arc::clone(&shared);
    let failed = stage(
        &mut work,
        1,
        |h| h.etcd_joining,
        move |h| {
            let me = s.member(&h.host.name);
            let members = etcd::join(h.conn(), &me, &seeds, s.opts.health_timeout)?;
            h.record(&format!("etcd member joined ({members} members)"), true, Vec::new());
            Ok(())
        },
    )
    .await;
    if !failed.is_empty() {
        return Err(fail("etcd join", failed, &work));
    }
    let s = Arc::clone(&shared);
    let first_master = work.iter().find(|h| h.is_master()).map(|h| h.host.name.clone());
    let failed = stage(
        &mut work,
        1,
        move |h| Some(&h.host.name) == first_master.as_ref(),
        move |h| {
            etcd::wait_healthy(h.conn(), s.facts.masters.len(), s.opts.health_timeout)
                .map_err(|mut e| {
                    e.step = "etcd health".into();
                    e
                })
                .map(|_| ())
        },
    )
    .await;
    if !failed.is_empty() {
        return Err(fail("etcd health", failed, &work));
    }
    done(&format!(
        "etcd: {} members healthy over TLS",
        shared.facts.masters.len()
    ));

    // 3. The container runtime on every host.
    let s = Arc::clone(&shared);
    let failed = stage(&mut work, n, |_| true, move |h| {
        install_assets(h, &s, Stage::Runtime)?;
        let files = units::runtime_files(&s.facts);
        let uploaded = h.conn().sync_files("containerd: files", &files)?;
        let distro = disable_distro_unit(h, "containerd: disable the distribution's containerd", "containerd.service")?;
        let containerd = ["kforge-containerd".to_string()];
        let restart = if uploaded.is_empty() { Vec::new() } else { containerd.to_vec() };
        let restart = with_new_binaries(&h.installed, &containerd, restart);
        let restarted = ensure_running(h, "containerd: start", &containerd, &restart)?;
        h.conn().run_ok(
            "containerd: check",
            &format!(
                "for i in $(seq 1 30); do /opt/kforge/bin/ctr --address {} version >/dev/null 2>&1 && exit 0; sleep 1; done; \
                 systemctl status --no-pager kforge-containerd | tail -5; exit 1",
                units::CONTAINERD_SOCKET
            ),
        )?;
        h.record("containerd", !uploaded.is_empty() || distro || restarted, uploaded);
        Ok(())
    })
    .await;
    if !failed.is_empty() {
        return Err(fail("container runtime", failed, &work));
    }
    done("containerd running on every host");

    // 4. The Kubernetes binaries.
    let s = Arc::clone(&shared);
    let failed = stage(
        &mut work,
        n,
        |_| true,
        move |h| install_assets(h, &s, Stage::Kubernetes),
    )
    .await;
    if !failed.is_empty() {
        return Err(fail("kubernetes binaries", failed, &work));
    }
    done("Kubernetes binaries installed");

    // 5. The control plane, one master at a time: a changed master is restarted and must answer /readyz before
    //    the next one is touched, so the API stays up through a configuration change.
    let s = Arc::clone(&shared);
    let failed = stage(&mut work, 1, HostWork::is_master, move |h| {
        let me = s.member(&h.host.name);
        let files = units::control_plane_files(&s.facts, &s.pki, &me);
        let uploaded = h.conn().sync_files("control plane: files", &files)?;
        let units = units::units_in(&files);
        let restart = with_new_binaries(&h.installed, &units, units::restarts_for(&files, &uploaded));
        let restarted = ensure_running(h, "control plane: start", &units, &restart)?;
        health::wait_apiserver_ready(h.conn(), s.opts.health_timeout)?;
        h.record("control plane", !uploaded.is_empty() || restarted, uploaded);
        Ok(())
    })
    .await;
    if !failed.is_empty() {
        return Err(fail("control plane", failed, &work));
    }
    done("control plane ready on every master");

    // 6. kubelet and kube-proxy on every host (the masters are Nodes too, tainted NoSchedule and labelled
    //    control-plane through the API once registered).
    let s = Arc::clone(&shared);
    let failed = stage(
        &mut work,
        n,
        |_| true,
        move |h| {
            if s.facts.external_cloud {
                verify_provider_id(h)?;
            }
            let files = units::node_files(&s.facts, &s.pki, &node_identity(&h.host));
            let uploaded = h.conn().sync_files("node: files", &files)?;
            let units = units::units_in(&files);
            let restart = with_new_binaries(&h.installed, &units, units::restarts_for(&files, &uploaded));
            let restarted = ensure_running(h, "node: start", &units, &restart)?;
            health::wait_node(h.conn(), &h.host.name, &s.api, &s.rt, s.opts.health_timeout)?;
            let labelled = h.is_master() && s.rt.block_on(ensure_control_plane_role(&s.api, &h.host.name))?;
            h.record(
                "kubelet and kube-proxy",
                !uploaded.is_empty() || restarted || labelled,
                uploaded,
            );
            Ok(())
        },
    )
    .await;
    if !failed.is_empty() {
        return Err(fail("nodes", failed, &work));
    }
    done("kubelet and kube-proxy healthy on every host, each registered as a Node");

    // 7. The core addons (flannel, CoreDNS) through the API, as the cluster's admin.
    let api = shared.facts.api_url.clone();
    let applied = apply_addons(&shared)
        .await
        .map_err(|e| fail("addons", vec![e], &work))?;
    if shared.opts.partial {
        done("addons left to the next full run");
    } else if shared.addons.is_empty() {
        done("no addons to apply (spec.addons is empty)");
    } else {
        done(&format!("addons applied: {}", shared.addons.join(", ")));
    }

    let mut steps: Vec<StepResult> = work.iter().flat_map(|h| h.results.clone()).collect();
    for addon in &shared.addons {
        steps.push(StepResult {
            host: api.clone(),
            step: format!("addon {addon}"),
            changed: applied.iter().any(|a| a.addon == addon.as_str() && a.changed),
            uploaded: Vec::new(),
        });
    }
    Ok(Report {
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}

mod assets_step;
mod host_steps;
mod node_role;
mod pending;
use assets_step::*;
use host_steps::*;
use node_role::*;
pub use pending::*;

#[cfg(test)]
mod failure_tests;
