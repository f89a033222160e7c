//! The bootstrap of a self-built cluster, host by host and stage by stage: connect (keys verified), the preflight
//! checks of every host (nothing is installed anywhere unless all pass) and the kernel settings pods need, the etcd
//! members on the masters and their health, the container runtime everywhere, the Kubernetes binaries, the control
//! plane one master at a time, kubelet and kube-proxy on the workers (each waited for until healthy and
//! registered as a Node), then the addons of `spec.addons` through the API. Hosts of a stage run in parallel
//! (bounded by `--concurrency`, each on a blocking thread since libssh2 blocks); a stage starts only when the
//! previous one succeeded on every host it concerns, so a failure never leaves a later stage half-done. Every
//! step is guarded, so a re-run after any failure continues where it stopped and changes nothing that is right.

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

/// Installs the assets of `stage_of` that the host's role needs.
fn install_assets(h: &mut HostWork, shared: &Shared, stage_of: Stage) -> Result<(), StepError> {
    let role = h.host.role;
    for asset in shared
        .manifest
        .assets
        .iter()
        .filter(|a| a.stage == stage_of && a.for_role(role))
    {
        let step = format!("asset {}", asset.name);
        let resolved = asset
            .resolve(
                &h.arch,
                shared.assets.mirror.as_deref(),
                &shared.assets.files,
                &shared.version,
            )
            .map_err(|e| StepError {
                host: h.host.name.clone(),
                step: step.clone(),
                message: e.to_string(),
                hint: "pin the asset in spec.assets.files".into(),
                transient: false,
            })?;
        let out = h.conn().run(&step, &resolved.install_script())?;
        if out.status != 0 {
            let (message, hint) = resolved.failure(out.status, &out.stderr);
            return Err(StepError {
                host: h.host.name.clone(),
                step,
                message,
                hint,
                transient: false,
            });
        }
        let changed = out.stdout.contains("installed");
        if changed {
            h.installed.push(asset.name.clone());
        }
        h.record(&step, changed, Vec::new());
    }
    Ok(())
}

/// The units that run the binaries of asset `name` (restarted when a run installs a new one).
fn units_of_asset(name: &str) -> &'static [&'static str] {
    match name {
        "etcd" => &["kforge-etcd"],
        "containerd" | "runc" => &["kforge-containerd"],
        "kubernetes-server" => &[
            "kforge-kube-apiserver",
            "kforge-kube-controller-manager",
            "kforge-kube-scheduler",
        ],
        "kubernetes-node" => &[health::KUBELET, health::KUBE_PROXY],
        _ => &[],
    }
}

/// `restart` and the units among `units` whose binaries this run `installed`, in `units`' order.
fn with_new_binaries(installed: &[String], units: &[String], restart: Vec<String>) -> Vec<String> {
    let new: Vec<&str> = installed
        .iter()
        .flat_map(|a| units_of_asset(a).iter().copied())
        .collect();
    units
        .iter()
        .filter(|u| restart.contains(u) || new.contains(&u.as_str()))
        .cloned()
        .collect()
}

/// Moves a master whose etcd is a 3.5 before the manifest's bridge release onto it first (etcd's upgrade path to
/// 3.6), restarting its member and waiting until every member is healthy; refuses what etcd cannot do by a binary
/// swap. Runs one master at a time.
fn etcd_bridge_step(h: &mut HostWork, shared: &Shared, members: usize) -> Result<(), StepError> {
    let step = "etcd: upgrade path";
    let have = h.conn().run_ok(step, &assets::installed_etcd_version_command())?.stdout;
    let have = have.trim();
    let Some(wanted) = shared.manifest.version_of("etcd", &shared.assets.files) else {
        return Ok(());
    };
    let bridge = shared.manifest.etcd_upgrade_bridge.as_ref().map(|b| b.version.as_str());
    let failed = |message: String, hint: &str| StepError {
        host: h.host.name.clone(),
        step: step.into(),
        message,
        hint: hint.into(),
        transient: false,
    };
    match assets::etcd_move((!have.is_empty()).then_some(have), &wanted, bridge) {
        assets::EtcdMove::Install => Ok(()),
        assets::EtcdMove::Refuse(why) => {
            let (message, hint) = why.split_once("\n  hint: ").unwrap_or((&why, ""));
            Err(failed(message.to_string(), hint))
        }
        assets::EtcdMove::Bridge(via) => {
            let resolved = shared
                .manifest
                .etcd_bridge(&h.arch, shared.assets.mirror.as_deref(), &shared.version)
                .map_err(|e| failed(e.to_string(), "pin the asset in spec.assets.files"))?
                .ok_or_else(|| failed("the manifest has no etcd bridge".into(), ""))?;
            let out = h.conn().run(step, &resolved.install_script())?;
            if out.status != 0 {
                let (message, hint) = resolved.failure(out.status, &out.stderr);
                return Err(failed(message, &hint));
            }
            h.conn().run_ok(step, "systemctl restart kforge-etcd")?;
            etcd::wait_healthy(h.conn(), members, shared.opts.health_timeout)?;
            h.record(
                &format!("etcd {have} -> {via} (on the way to {wanted})"),
                true,
                Vec::new(),
            );
            Ok(())
        }
    }
}

/// Enables `units`, restarts those in `restart` (after a daemon-reload, since unit files may have changed) and
/// starts any that is not running. Returns whether anything was (re)started.
fn ensure_running(h: &mut HostWork, step: &str, units: &[String], restart: &[String]) -> Result<bool, StepError> {
    let list = units.join(" ");
    if !restart.is_empty() {
        h.conn().run_ok(
            step,
            &format!(
                "systemctl daemon-reload && systemctl enable --quiet {list} && systemctl restart {}",
                restart.join(" ")
            ),
        )?;
    }
    let checks: Vec<String> = units
        .iter()
        .map(|u| format!("systemctl is-active --quiet {u}"))
        .collect();
    let started = h.conn().run_guarded(
        step,
        &checks.join(" && "),
        &format!("systemctl enable --quiet {list} && systemctl start {list}"),
    )?;
    Ok(started || !restart.is_empty())
}

/// Disables a unit the distribution started that would fight over the same ports (guarded).
fn disable_distro_unit(h: &HostWork, step: &str, unit: &str) -> Result<bool, StepError> {
    h.conn().run_guarded(
        step,
        &format!("! systemctl is-enabled --quiet {unit} 2>/dev/null && ! systemctl is-active --quiet {unit}"),
        &format!("systemctl disable --now {unit}"),
    )
}

fn connect_step(h: &mut HostWork, opts: &Options) -> Result<(), StepError> {
    let conn = ssh::connect(&h.host, opts.connect_timeout)?;
    let out = conn.run_ok(
        "inspect",
        "uname -m; command -v systemctl >/dev/null || echo no-systemd",
    )?;
    if out.stdout.contains("no-systemd") {
        return Err(StepError {
            host: h.host.name.clone(),
            step: "inspect".into(),
            message: "systemd is not the init system".into(),
            hint: "kforge runs every component as a systemd unit; use a systemd-based image".into(),
            transient: false,
        });
    }
    let machine = out.stdout.lines().next().unwrap_or_default().trim().to_string();
    h.arch = assets::arch_of(&machine)
        .ok_or_else(|| StepError {
            host: h.host.name.clone(),
            step: "inspect".into(),
            message: format!("architecture {machine} is not supported"),
            hint: "kforge installs amd64 and arm64 binaries".into(),
            transient: false,
        })?
        .to_string();
    h.conn = Some(conn);
    Ok(())
}

/// The read-only checks of one host; `Err` names everything that stops it.
fn preflight_step(h: &mut HostWork, version: &str, fail_cgroup_v1: bool) -> Result<(), StepError> {
    let out = h.conn().run_ok("preflight", &preflight::probe_script())?;
    let facts = preflight::parse_probe(&out.stdout);
    let (problems, warnings) = preflight::judge(&facts, h.host.role, version, fail_cgroup_v1);
    h.warnings = warnings;
    h.clock = Some(preflight::sample_clock(h.conn())?);
    if problems.is_empty() {
        return Ok(());
    }
    Err(StepError {
        host: h.host.name.clone(),
        step: "preflight".into(),
        message: problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        hint: problems.iter().map(|p| p.hint.as_str()).collect::<Vec<_>>().join("; "),
        transient: false,
    })
}

/// The kernel settings pods need, made persistent and applied (guarded: nothing runs when they are in force).
fn host_settings_step(h: &mut HostWork) -> Result<(), StepError> {
    let step = "host settings";
    let uploaded = h.conn().sync_files(step, &preflight::settings_files())?;
    let in_force = h.conn().run(step, &preflight::settings_in_force_command())?.status == 0;
    let applied = if in_force && uploaded.is_empty() {
        false
    } else {
        let out = h.conn().run(step, &preflight::apply_settings_command())?;
        if out.status != 0 {
            return Err(StepError {
                host: h.host.name.clone(),
                step: step.into(),
                message: format!(
                    "net.ipv4.ip_forward and net.bridge.bridge-nf-call-iptables could not be set to 1: {}",
                    out.stderr.trim().lines().last().unwrap_or("the values did not change")
                ),
                hint: "set them on the host (on a container host, /proc/sys may be read-only: set them where it is not), then re-run"
                    .into(),
                transient: false,
            });
        }
        true
    };
    h.record(step, applied || !uploaded.is_empty(), uploaded);
    Ok(())
}

/// The asset manifest of `version`, or the failure of the run that needs it.
fn manifest_of(version: &str, cluster: &str) -> Result<Manifest, BootstrapFailed> {
    assets::manifest(version).map_err(|e| BootstrapFailed {
        stage: "assets".into(),
        failures: vec![StepError {
            host: cluster.to_string(),
            step: "asset manifest".into(),
            message: e.to_string(),
            hint: format!("kforge has manifests for {}", assets::known_versions().join(", ")),
            transient: false,
        }],
        report: Report::default(),
    })
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
    let version_of = shared.version.clone();
    let fail_cgroup_v1 = shared.facts.fail_cgroup_v1;
    let failed = stage(
        &mut work,
        n,
        |_| true,
        move |h| preflight_step(h, &version_of, fail_cgroup_v1),
    )
    .await;
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

/// The Node `host` registers as (the provider ID of an ec2 instance from what EC2 says of it; the node stage has
/// checked it against the instance's own metadata).
fn node_identity(host: &BootstrapHost) -> units::NodeIdentity<'_> {
    units::NodeIdentity {
        name: &host.name,
        address: &host.address,
        labels: &host.labels,
        taints: &host.taints,
        master: host.role == HostRole::Master,
        provider_id: host
            .zone
            .as_deref()
            .zip(host.instance_id.as_deref())
            .map(|(zone, id)| units::aws_provider_id(zone, id)),
    }
}

/// The instance metadata (IMDSv2: a session token first; kforge's instances refuse v1) asked for the instance ID
/// and zone of the host behind `h`'s connection.
const IMDS_IDENTITY: &str = "t=$(curl -sS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
     http://169.254.169.254/latest/api/token) && \
     z=$(curl -sS --max-time 5 -H \"X-aws-ec2-metadata-token: $t\" \
     http://169.254.169.254/latest/meta-data/placement/availability-zone) && \
     i=$(curl -sS --max-time 5 -H \"X-aws-ec2-metadata-token: $t\" http://169.254.169.254/latest/meta-data/instance-id) && \
     echo \"$z $i\"";

/// Checks that the instance the host's metadata names is the one kforge found in EC2 for it (so the provider ID
/// the kubelet registers with is the machine's own), and fills it in when EC2 did not say.
fn verify_provider_id(h: &mut HostWork) -> Result<(), StepError> {
    let step = "node: instance metadata";
    let out = h.conn().run_ok(step, IMDS_IDENTITY)?;
    let (zone, id) = parse_imds_identity(&out.stdout).ok_or_else(|| StepError {
        host: h.host.name.clone(),
        step: step.into(),
        message: format!(
            "the instance metadata answered {:?}, not a zone and an instance ID",
            out.stdout.trim()
        ),
        hint: "the kubelet's provider ID comes from the instance metadata (IMDSv2): check that the instance's \
               metadata endpoint is enabled"
            .into(),
        transient: true,
    })?;
    match (&h.host.instance_id, &h.host.zone) {
        (Some(known), Some(known_zone)) if (known, known_zone) != (&id, &zone) => Err(StepError {
            host: h.host.name.clone(),
            step: step.into(),
            message: format!(
                "the host at {} is instance {id} in {zone} by its metadata, but EC2 lists {known} in {known_zone} \
                 at that address",
                h.host.address
            ),
            hint: "the address moved to another instance since kforge listed them: re-run".into(),
            transient: false,
        }),
        _ => {
            h.host.instance_id = Some(id);
            h.host.zone = Some(zone);
            Ok(())
        }
    }
}

/// `ZONE INSTANCE-ID` as [`IMDS_IDENTITY`] prints it.
fn parse_imds_identity(text: &str) -> Option<(String, String)> {
    let (zone, id) = text.trim().split_once(' ')?;
    (id.starts_with("i-") && zone.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && !zone.contains(' '))
        .then(|| (zone.to_string(), id.to_string()))
}

/// The merge patch that gives a master's Node (as the API returned it) the control-plane role, `None` when it has
/// it. The labels alone merge into the Node's others, so that patch needs no precondition; a missing taint means
/// writing the whole taint list, so that patch carries the resourceVersion it was computed from and fails (409)
/// rather than overwrite a taint another client (the node lifecycle controller) changed since.
fn control_plane_patch(node: &serde_json::Value) -> Option<serde_json::Value> {
    let labelled = health::has_label(node, health::CONTROL_PLANE_ROLE)
        && health::has_label(node, health::EXCLUDE_FROM_LOAD_BALANCERS);
    let tainted = health::has_control_plane_taint(node);
    let labels = serde_json::json!({health::CONTROL_PLANE_ROLE: "", health::EXCLUDE_FROM_LOAD_BALANCERS: ""});
    match (labelled, tainted) {
        (true, true) => None,
        (false, true) => Some(serde_json::json!({"metadata": {"labels": labels}})),
        (_, false) => {
            let mut taints: Vec<serde_json::Value> = node
                .pointer("/spec/taints")
                .and_then(|t| t.as_array())
                .cloned()
                .unwrap_or_default();
            taints.retain(|t| t["key"] != health::CONTROL_PLANE_ROLE);
            taints.push(serde_json::json!({"key": health::CONTROL_PLANE_ROLE, "effect": "NoSchedule"}));
            Some(serde_json::json!({
                "metadata": {
                    "resourceVersion": node.pointer("/metadata/resourceVersion"),
                    "labels": labels,
                },
                "spec": {"taints": taints},
            }))
        }
    }
}

/// Gives master `name`'s Node the control-plane role ([`control_plane_patch`]; a conflicting write is retried on
/// the Node read again); `Ok(true)` when the Node lacked something. The taint normally comes from the kubelet's
/// registration: this puts back one removed since.
async fn ensure_control_plane_role(api: &ApiClient, name: &str) -> Result<bool, StepError> {
    let failed = |message: String| StepError {
        host: name.to_string(),
        step: "node: control-plane role".into(),
        message,
        hint: "check the API server's log; re-run to label the Node".into(),
        transient: true,
    };
    let path = format!("/api/v1/nodes/{name}");
    for _ in 0..5 {
        let (status, node) = api.get_json(&path).await.map_err(failed)?;
        if !status.is_success() {
            return Err(failed(format!("GET Node {name}: HTTP {status}")));
        }
        let Some(patch) = control_plane_patch(&node) else {
            return Ok(false);
        };
        let (status, body) = api
            .send(
                hyper::Method::PATCH,
                &path,
                Some("application/merge-patch+json"),
                bytes::Bytes::from(patch.to_string()),
            )
            .await
            .map_err(failed)?;
        if status.is_success() {
            return Ok(true);
        }
        if status != hyper::StatusCode::CONFLICT {
            return Err(failed(format!(
                "PATCH Node {name}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
    }
    Err(failed(format!(
        "the Node {name} kept changing under 5 attempts to patch it"
    )))
}

async fn apply_addons(shared: &Shared) -> Result<Vec<addons::Applied>, StepError> {
    let api = &shared.facts.api_url;
    let images = shared.manifest.images_in(shared.assets.image_registry.as_deref());
    let objects = addons::objects(&shared.facts, &images, &shared.addons).map_err(|m| StepError {
        host: api.clone(),
        step: "addons: render".into(),
        message: m,
        hint: "kforge's addon templates are broken: report it with this message".into(),
        transient: false,
    })?;
    addons::apply(&shared.api, api, &objects, shared.opts.health_timeout).await
}

/// Every file the bootstrap renders for `host` (the stages' own lists, in one).
pub fn host_files(facts: &ClusterFacts, pki: &Pki, host: &BootstrapHost) -> Vec<ssh::FileSpec> {
    let mut files = units::runtime_files(facts);
    if host.role == HostRole::Master {
        let me = facts
            .masters
            .iter()
            .find(|m| m.name == host.name)
            .expect("every master is a member");
        files.extend(etcd::member_files(pki, &facts.cluster, me, ETCD_BINARY));
        files.extend(units::control_plane_files(facts, pki, me));
    }
    if health::runs_kubelet(host.role) {
        files.extend(preflight::settings_files());
        files.extend(units::node_files(facts, pki, &node_identity(host)));
    }
    files
}

/// What the bootstrap would change on each of `hosts`, changing nothing: the files whose bytes or mode differ and
/// the assets not installed at their pinned digest, host by host (an empty list: up to date). The rolling update's
/// measure of "out of date".
pub async fn pending_changes(
    hosts: &[BootstrapHost],
    facts: ClusterFacts,
    pki: Pki,
    version: &str,
    asset_settings: Assets,
    opts: &Options,
) -> Result<BTreeMap<String, Vec<String>>, BootstrapFailed> {
    let fail = |stage: &str, failures: Vec<StepError>| BootstrapFailed {
        stage: stage.into(),
        failures,
        report: Report::default(),
    };
    let manifest = manifest_of(version, &facts.cluster)?;
    let mut work: Vec<HostWork> = hosts.iter().map(HostWork::new).collect();
    let o = opts.clone();
    let failed = stage(&mut work, opts.concurrency, |_| true, move |h| connect_step(h, &o)).await;
    if !failed.is_empty() {
        return Err(fail("connect", failed));
    }
    let version = version.to_string();
    let failed = stage(
        &mut work,
        opts.concurrency,
        |_| true,
        move |h| {
            let files = host_files(&facts, &pki, &h.host);
            let stale: Vec<String> = h
                .conn()
                .stale_files("check: files", &files)?
                .into_iter()
                .map(|f| format!("file {}", f.path))
                .collect();
            let mut pending = stale;
            for asset in manifest.assets.iter().filter(|a| a.for_role(h.host.role)) {
                let Ok(resolved) = asset.resolve(
                    &h.arch,
                    asset_settings.mirror.as_deref(),
                    &asset_settings.files,
                    &version,
                ) else {
                    pending.push(format!("asset {} (cannot be resolved)", asset.name));
                    continue;
                };
                if h.conn().run("check: assets", &resolved.installed_check())?.status != 0 {
                    pending.push(format!("asset {}", asset.name));
                }
            }
            h.pending = pending;
            Ok(())
        },
    )
    .await;
    if !failed.is_empty() {
        return Err(fail("check", failed));
    }
    Ok(work.into_iter().map(|h| (h.host.name, h.pending)).collect())
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn a_master_node_is_patched_only_for_what_it_lacks() {
        let cp = health::CONTROL_PLANE_ROLE;
        let taint = serde_json::json!({"key": cp, "effect": "NoSchedule"});
        let not_ready = serde_json::json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"});
        // Just registered: tainted by the kubelet, not labelled. The labels alone, no precondition to fail on.
        let fresh = serde_json::json!({"metadata": {"resourceVersion": "7", "labels": {"kubernetes.io/os": "linux"}},
                                       "spec": {"taints": [taint, not_ready]}});
        let patch = control_plane_patch(&fresh).unwrap();
        assert_eq!(patch["metadata"]["labels"][cp], "");
        assert!(
            patch.get("spec").is_none() && patch["metadata"].get("resourceVersion").is_none(),
            "{patch}"
        );
        // Done: nothing to write.
        let done = serde_json::json!({"metadata": {"labels": {cp: "", health::EXCLUDE_FROM_LOAD_BALANCERS: ""}},
                                      "spec": {"taints": [taint]}});
        assert_eq!(control_plane_patch(&done), None);
        // The taint removed by hand: the whole list, the others kept, guarded by the resourceVersion.
        let untainted = serde_json::json!({"metadata": {"resourceVersion": "9", "labels": {cp: ""}},
                                           "spec": {"taints": [not_ready]}});
        let patch = control_plane_patch(&untainted).unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "9");
        assert_eq!(patch["spec"]["taints"], serde_json::json!([not_ready, taint]));
    }

    #[test]
    fn a_new_binary_restarts_the_units_that_run_it() {
        let units: Vec<String> = [
            "kforge-kube-apiserver",
            "kforge-kube-controller-manager",
            "kforge-kube-scheduler",
        ]
        .map(String::from)
        .to_vec();
        assert!(with_new_binaries(&[], &units, Vec::new()).is_empty());
        assert_eq!(
            with_new_binaries(&[], &units, vec!["kforge-kube-scheduler".into()]),
            ["kforge-kube-scheduler"]
        );
        assert_eq!(
            with_new_binaries(&["kubernetes-server".into()], &units, Vec::new()),
            units
        );
        // Another asset's binaries leave these units alone.
        assert!(with_new_binaries(&["kubernetes-node".into(), "cni-plugins".into()], &units, Vec::new()).is_empty());
        let node: Vec<String> = [health::KUBELET, health::KUBE_PROXY].map(String::from).to_vec();
        assert_eq!(with_new_binaries(&["kubernetes-node".into()], &node, Vec::new()), node);
        let containerd = vec!["kforge-containerd".to_string()];
        assert_eq!(with_new_binaries(&["runc".into()], &containerd, Vec::new()), containerd);
    }

    #[test]
    fn the_provider_id_comes_from_what_imds_says() {
        assert_eq!(
            parse_imds_identity("us-east-1a i-0abc123\n"),
            Some(("us-east-1a".into(), "i-0abc123".into()))
        );
        assert_eq!(parse_imds_identity("<html>404</html>"), None);
        assert_eq!(parse_imds_identity(""), None);
        // The command asks IMDSv2 (token first) and sh parses it.
        assert!(IMDS_IDENTITY.contains("X-aws-ec2-metadata-token-ttl-seconds") && IMDS_IDENTITY.contains("-X PUT"));
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", IMDS_IDENTITY])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    fn failure(host: &str, message: &str) -> StepError {
        StepError {
            host: host.into(),
            step: "api".into(),
            message: message.into(),
            hint: "check it".into(),
            transient: false,
        }
    }

    #[test]
    fn a_failure_names_each_host_once() {
        // Seven hosts' checks of one endpoint fail alike: the endpoint is named once, not seven times.
        let same: Vec<StepError> = (0..7).map(|_| failure("https://10.0.0.5:6443", "not ready")).collect();
        let text = grouped(&same);
        assert_eq!(text.matches("https://10.0.0.5:6443").count(), 1, "{text}");
        // Different hosts failing alike are listed together; different causes on lines of their own.
        let mixed = [failure("m1", "down"), failure("m2", "down"), failure("w1", "full")];
        assert_eq!(
            grouped(&mixed),
            "  - m1, m2: api: down\n    hint: check it\n  - w1: api: full\n    hint: check it"
        );
    }
}
