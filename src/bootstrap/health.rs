//! The health of a self-built cluster as its hosts and its API report it, each signal on its own: every kforge
//! unit of every host (a unit that is not active is named with the end of its journal), each component's health
//! endpoint, a Ready Node for every host that runs a kubelet, kube-system's pods, and the leader leases of the
//! controller manager and the scheduler. `kforge validate cluster` reports them all; the bootstrap's node stage
//! waits for the kubelet's and kube-proxy's before it calls a host done.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::api::ApiClient;
use super::etcd;
use super::ssh::{Connection, Output};
use super::units;
use crate::bootstrap::StepError;
use crate::bootstrap::host::BootstrapHost;
use crate::engine::Step;
use crate::engine::executor::TimedOut;
use crate::engine::wait::Wait;
use crate::spec::HostRole;

/// One line of `kforge validate cluster`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub host: String,
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(host: &str, check: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            host: host.into(),
            check: check.into(),
            ok,
            detail: detail.into(),
        }
    }
}

pub const KUBELET: &str = "kforge-kubelet";
pub const KUBE_PROXY: &str = "kforge-kube-proxy";

/// The units kforge runs on a host of `role`.
pub fn units_of(role: HostRole) -> &'static [&'static str] {
    match role {
        HostRole::Master => &[
            "kforge-etcd",
            "kforge-containerd",
            "kforge-kube-apiserver",
            "kforge-kube-controller-manager",
            "kforge-kube-scheduler",
            KUBELET,
            KUBE_PROXY,
        ],
        HostRole::Worker => &["kforge-containerd", KUBELET, KUBE_PROXY],
    }
}

/// Whether hosts of `role` run a kubelet (and so must be Nodes) and kube-proxy: every host does, the masters as
/// Nodes with the control-plane label and `NoSchedule` taint (as kubeadm and kops make them), so what must run on
/// the control plane (the cloud controller manager, the EBS CSI controller) has a place to run.
pub fn runs_kubelet(_role: HostRole) -> bool {
    true
}

/// The label and taint a master's Node carries (kubeadm's).
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";
/// The label that keeps the masters out of Service load balancers' targets (kubeadm sets it on its control plane;
/// the AWS cloud controller manager honours it).
pub const EXCLUDE_FROM_LOAD_BALANCERS: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// `/readyz` of the local API server, asked with the API server's own kubelet-client certificate (system:masters).
pub fn readyz_command() -> String {
    let pki = units::PKI_DIR;
    format!(
        "curl -sS --max-time 5 --cacert {pki}/ca.crt --cert {pki}/apiserver-kubelet-client.crt \
         --key {pki}/apiserver-kubelet-client.key https://127.0.0.1:6443/readyz"
    )
}

/// A health endpoint of one component, asked on its host.
struct Probe {
    check: &'static str,
    command: String,
    /// What a healthy component prints.
    healthy: fn(&Output, usize) -> bool,
}

fn says_ok(o: &Output, _: usize) -> bool {
    o.status == 0 && o.stdout.trim() == "ok"
}

/// The controller manager and the scheduler serve `/healthz` on their secure ports with a certificate they made
/// themselves, and allow it without authentication (`--authorization-always-allow-paths`): `-k` sends nothing
/// secret.
fn probes(role: HostRole) -> Vec<Probe> {
    let curl = "curl -sS --max-time 5";
    match role {
        HostRole::Master => vec![
            Probe {
                check: "etcd health",
                command: etcd::health_command(),
                healthy: |o, masters| {
                    o.status == 0
                        && o.stdout.matches("is healthy").count() + o.stderr.matches("is healthy").count() >= masters
                },
            },
            Probe {
                check: "apiserver readyz",
                command: readyz_command(),
                healthy: says_ok,
            },
            Probe {
                check: "controller-manager healthz",
                command: format!("{curl} -k https://127.0.0.1:10257/healthz"),
                healthy: says_ok,
            },
            Probe {
                check: "scheduler healthz",
                command: format!("{curl} -k https://127.0.0.1:10259/healthz"),
                healthy: says_ok,
            },
            kubelet_probe(),
            kube_proxy_probe(),
        ],
        HostRole::Worker => vec![kubelet_probe(), kube_proxy_probe()],
    }
}

fn kubelet_probe() -> Probe {
    Probe {
        check: "kubelet healthz",
        command: "curl -sS --max-time 5 http://127.0.0.1:10248/healthz".into(),
        healthy: says_ok,
    }
}

/// kube-proxy's `/healthz` answers 200 once it has programmed the node's rules recently (503 otherwise).
fn kube_proxy_probe() -> Probe {
    Probe {
        check: "kube-proxy healthz",
        command: "curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:10256/healthz".into(),
        healthy: |o, _| o.status == 0 && o.stdout.trim() == "200",
    }
}

/// What systemd says of one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub unit: String,
    pub active: String,
    pub sub: String,
    /// Automatic restarts since the unit was last started by hand (a crash loop counts up here).
    pub restarts: u32,
}

impl UnitState {
    pub fn is_active(&self) -> bool {
        self.active == "active"
    }

    fn describe(&self) -> String {
        format!("{} ({}), restarted {} times", self.active, self.sub, self.restarts)
    }
}

/// Parses `systemctl show -p Id,ActiveState,SubState,NRestarts U...` (blocks separated by blank lines).
pub fn parse_unit_states(text: &str) -> Vec<UnitState> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut s = UnitState {
                unit: String::new(),
                active: String::new(),
                sub: String::new(),
                restarts: 0,
            };
            for line in block.lines() {
                match line.split_once('=') {
                    Some(("Id", v)) => s.unit = v.trim_end_matches(".service").to_string(),
                    Some(("ActiveState", v)) => s.active = v.to_string(),
                    Some(("SubState", v)) => s.sub = v.to_string(),
                    Some(("NRestarts", v)) => s.restarts = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            (!s.unit.is_empty()).then_some(s)
        })
        .collect()
}

/// The state of each of `units` on the host.
pub fn unit_states(conn: &Connection, step: &str, units: &[&str]) -> Result<Vec<UnitState>, StepError> {
    let out = conn.run_ok(
        step,
        &format!(
            "systemctl show -p Id,ActiveState,SubState,NRestarts {}",
            units.join(" ")
        ),
    )?;
    Ok(parse_unit_states(&out.stdout))
}

/// The last `lines` lines of a unit's journal, joined on one line.
pub fn journal_tail(conn: &Connection, unit: &str, lines: usize) -> String {
    match conn.run(
        "journal",
        &format!("journalctl -u {unit} -n {lines} --no-pager -o cat 2>&1 | tail -n {lines}"),
    ) {
        Ok(out) => {
            let text: Vec<&str> = out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            if text.is_empty() {
                "(its journal is empty)".into()
            } else {
                text.join(" | ")
            }
        }
        Err(e) => format!("(its journal could not be read: {})", e.message),
    }
}

/// The last line a probe printed (stdout, then stderr), or `nothing`.
fn last_line(o: &Output) -> String {
    let text = format!("{}{}", o.stdout, o.stderr);
    text.trim().lines().last().unwrap_or("nothing").trim().to_string()
}

/// Every unit and health endpoint of one host, each a check of its own.
pub fn check_host(conn: &Connection, host: &BootstrapHost, masters: usize) -> Vec<Check> {
    let name = host.name.as_str();
    let mut out = Vec::new();
    let wanted = units_of(host.role);
    match unit_states(conn, "units", wanted) {
        Ok(states) => {
            for unit in wanted {
                match states.iter().find(|s| s.unit == *unit) {
                    Some(s) if s.is_active() => out.push(Check::new(name, format!("unit {unit}"), true, "active")),
                    Some(s) => out.push(Check::new(
                        name,
                        format!("unit {unit}"),
                        false,
                        format!("{}; journal: {}", s.describe(), journal_tail(conn, unit, 5)),
                    )),
                    None => out.push(Check::new(
                        name,
                        format!("unit {unit}"),
                        false,
                        "systemd does not know it",
                    )),
                }
            }
        }
        Err(e) => out.push(Check::new(name, "units", false, e.message)),
    }
    for p in probes(host.role) {
        match conn.run(p.check, &p.command) {
            Ok(o) => out.push(Check::new(name, p.check, (p.healthy)(&o, masters), last_line(&o))),
            Err(e) => out.push(Check::new(name, p.check, false, e.message)),
        }
    }
    out
}

/// A Node's Ready condition: `(ready, reason: message)`.
fn node_ready(node: &serde_json::Value) -> (bool, String) {
    match ready_condition(node) {
        Some(c) => (
            c["status"] == "True",
            condition_text(&format!("Ready={}", c["status"].as_str().unwrap_or("?")), c),
        ),
        None => (false, "no Ready condition yet".into()),
    }
}

/// `LABEL: reason message` of a Node condition.
fn condition_text(label: &str, c: &serde_json::Value) -> String {
    format!(
        "{label}: {} {}",
        c["reason"].as_str().unwrap_or_default(),
        c["message"].as_str().unwrap_or_default()
    )
    .trim()
    .to_string()
}

/// The resource pressure a Node's kubelet reports (`MemoryPressure`, `DiskPressure`, `PIDPressure` True), as
/// `Type: reason message` lines; `None` without any. Under pressure the kubelet evicts pods and the Node is tainted
/// so that nothing new is scheduled there, while it stays Ready.
fn node_pressure(node: &serde_json::Value) -> Option<String> {
    let conditions = node.pointer("/status/conditions").and_then(|c| c.as_array())?;
    let under: Vec<String> = conditions
        .iter()
        .filter(|c| c["type"].as_str().is_some_and(|t| t.ends_with("Pressure")) && c["status"] == "True")
        .map(|c| condition_text(c["type"].as_str().unwrap_or("?"), c))
        .collect();
    (!under.is_empty()).then(|| under.join("; "))
}

/// Whether a Node's kubelet is posting its status: a Ready condition that is not `Unknown`. The node lifecycle
/// controller sets `Unknown` when the kubelet stopped posting (it was stopped, or the API server it talks to was,
/// which for a master is its own); `False` is a kubelet that reports, e.g. no pod network yet.
fn kubelet_reporting(node: &serde_json::Value) -> bool {
    ready_condition(node).is_some_and(|c| c["status"] != "Unknown")
}

/// A Node's `Ready` condition, when it has one.
fn ready_condition(node: &serde_json::Value) -> Option<&serde_json::Value> {
    node.pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
}

/// Why a pod is not healthy, or `None` when it is (Running with every container ready, or finished).
pub fn pod_problem(pod: &serde_json::Value) -> Option<String> {
    let phase = pod
        .pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or("Unknown");
    if phase == "Succeeded" {
        return None;
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s["ready"] == true);
    if phase == "Running" && all_ready {
        return None;
    }
    // The most telling reason: a container waiting or terminated, else an unmet pod condition.
    let container = statuses.iter().find_map(|s| {
        let state = s.get("state")?;
        let (how, detail) = state
            .get("waiting")
            .map(|w| ("waiting", w))
            .or_else(|| state.get("terminated").map(|t| ("terminated", t)))?;
        Some(format!(
            "container {} {how}: {} {}",
            s["name"].as_str().unwrap_or("?"),
            detail["reason"].as_str().unwrap_or_default(),
            detail["message"].as_str().unwrap_or_default()
        ))
    });
    let condition = || {
        pod.pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .and_then(|cs| cs.iter().find(|c| c["status"] != "True"))
            .map(|c| {
                format!(
                    "{} is {}: {} {}",
                    c["type"].as_str().unwrap_or("?"),
                    c["status"].as_str().unwrap_or("?"),
                    c["reason"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                )
            })
    };
    let why = container.or_else(condition).unwrap_or_else(|| "not ready".into());
    Some(format!("{phase}; {}", why.trim()))
}

/// The namespaces whose pods make the cluster work: kube-system and the addons' own.
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-flannel"];

/// How long a leader may go without renewing its lease before the check says nobody leads.
const LEASE_STALE: Duration = Duration::from_secs(60);

fn seconds_since(rfc3339: &str) -> Option<f64> {
    let at = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(match SystemTime::now().duration_since(at) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}

/// What the API says: a Ready Node for every host that runs a kubelet, healthy system pods, and a current
/// leader for the controller manager and the scheduler.
pub async fn check_cluster(api: &ApiClient, hosts: &[BootstrapHost]) -> Vec<Check> {
    let mut out = Vec::new();
    let endpoint = api.base().to_string();
    let nodes = match api.get_json("/api/v1/nodes").await {
        Ok((s, v)) if s.is_success() => v["items"].as_array().cloned().unwrap_or_default(),
        Ok((s, v)) => {
            out.push(Check::new(
                &endpoint,
                "api",
                false,
                format!("GET nodes: HTTP {s}: {}", v["message"]),
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::new(&endpoint, "api", false, e));
            return out;
        }
    };
    for h in hosts.iter().filter(|h| runs_kubelet(h.role)) {
        match nodes
            .iter()
            .find(|n| n.pointer("/metadata/name").and_then(|v| v.as_str()) == Some(&h.name))
        {
            Some(node) => {
                let (ready, detail) = node_ready(node);
                out.push(Check::new(&h.name, "node ready", ready, detail));
                let pressure = node_pressure(node);
                out.push(Check::new(
                    &h.name,
                    "node pressure",
                    pressure.is_none(),
                    match pressure {
                        Some(p) => format!(
                            "{p} (the kubelet evicts pods and nothing new is scheduled here: free the resource, or \
                             tune spec.kubelet.evictionHard)"
                        ),
                        None => "no memory, disk or PID pressure".into(),
                    },
                ));
                if h.role == HostRole::Master {
                    let problem = control_plane_problem(node);
                    let ok = problem.is_none();
                    out.push(Check::new(
                        &h.name,
                        "control-plane node",
                        ok,
                        problem.unwrap_or_else(|| format!("labelled and tainted {CONTROL_PLANE_ROLE}:NoSchedule")),
                    ));
                }
            }
            None => out.push(Check::new(
                &h.name,
                "node registered",
                false,
                format!(
                    "the API has no Node {}: its kubelet has not registered, or the Node was deleted \
                     (`kforge apply` restarts the kubelet, which registers it again)",
                    h.name
                ),
            )),
        }
    }
    let mut running = 0;
    for ns in SYSTEM_NAMESPACES {
        let pods = match api.get_json(&format!("/api/v1/namespaces/{ns}/pods")).await {
            Ok((s, v)) if s.is_success() => v["items"].as_array().cloned().unwrap_or_default(),
            Ok((s, v)) => {
                out.push(Check::new(
                    &endpoint,
                    format!("pods of {ns}"),
                    false,
                    format!("HTTP {s}: {}", v["message"]),
                ));
                continue;
            }
            Err(e) => {
                out.push(Check::new(&endpoint, format!("pods of {ns}"), false, e));
                continue;
            }
        };
        for pod in &pods {
            let name = pod.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("?");
            let node = pod
                .pointer("/spec/nodeName")
                .and_then(|v| v.as_str())
                .unwrap_or("(unscheduled)");
            match pod_problem(pod) {
                Some(problem) => out.push(Check::new(node, format!("pod {ns}/{name}"), false, problem)),
                None => running += 1,
            }
        }
    }
    if out.iter().all(|c| !c.check.starts_with("pod")) {
        out.push(Check::new(&endpoint, "system pods", true, format!("{running} running")));
    }
    for (component, lease) in [
        ("controller-manager", "kube-controller-manager"),
        ("scheduler", "kube-scheduler"),
    ] {
        let check = format!("{component} leader");
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}");
        match api.get_json(&path).await {
            Ok((s, v)) if s.is_success() => {
                let holder = v
                    .pointer("/spec/holderIdentity")
                    .and_then(|h| h.as_str())
                    .unwrap_or_default();
                let age = v
                    .pointer("/spec/renewTime")
                    .and_then(|t| t.as_str())
                    .and_then(seconds_since);
                let host = holder.split('_').next().filter(|h| !h.is_empty()).unwrap_or(&endpoint);
                match age {
                    Some(age) if !holder.is_empty() && age <= LEASE_STALE.as_secs_f64() => {
                        out.push(Check::new(host, check, true, format!("lease renewed {age:.0}s ago")))
                    }
                    Some(age) => out.push(Check::new(
                        host,
                        check,
                        false,
                        format!("lease {lease} was last renewed {age:.0}s ago by {holder:?}: no instance leads"),
                    )),
                    None => out.push(Check::new(host, check, false, format!("lease {lease} has no holder"))),
                }
            }
            Ok((s, _)) => out.push(Check::new(
                &endpoint,
                check,
                false,
                format!("lease {lease}: HTTP {s} (no instance has ever led)"),
            )),
            Err(e) => out.push(Check::new(&endpoint, check, false, e)),
        }
    }
    out
}

/// Whether `node` (as the API returns it) carries label `key`.
pub fn has_label(node: &serde_json::Value, key: &str) -> bool {
    node.pointer("/metadata/labels").and_then(|l| l.get(key)).is_some()
}

/// Whether `node` carries the control-plane `NoSchedule` taint.
pub fn has_control_plane_taint(node: &serde_json::Value) -> bool {
    node.pointer("/spec/taints")
        .and_then(|t| t.as_array())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == CONTROL_PLANE_ROLE && t["effect"] == "NoSchedule")
        })
}

/// What a master's Node lacks of the control-plane role: the label (workloads and the cloud integration find
/// the control plane by it) or the `NoSchedule` taint (without it, ordinary pods land on the masters).
pub fn control_plane_problem(node: &serde_json::Value) -> Option<String> {
    let labelled = has_label(node, CONTROL_PLANE_ROLE);
    let tainted = has_control_plane_taint(node);
    let mut missing = Vec::new();
    if !labelled {
        missing.push(format!("the label {CONTROL_PLANE_ROLE}"));
    }
    if !tainted {
        missing.push(format!(
            "the taint {CONTROL_PLANE_ROLE}:NoSchedule (ordinary pods can land on it)"
        ));
    }
    (!missing.is_empty()).then(|| {
        format!(
            "the Node lacks {} (`kforge apply` puts them back)",
            missing.join(" and ")
        )
    })
}

/// Waits until the API server on `conn`'s master answers /readyz ok, within `deadline`.
pub fn wait_apiserver_ready(conn: &Connection, deadline: Duration) -> Result<(), StepError> {
    let step = "control plane: readyz";
    Wait::new(step, deadline)
        .until_blocking(|| {
            let out = conn.run(step, &readyz_command())?;
            Ok(if out.status == 0 && out.stdout.trim() == "ok" {
                Step::Done(())
            } else {
                Step::Blocked {
                    reason: format!("{}{}", out.stdout.trim(), out.stderr.trim()),
                }
            })
        })
        .map_err(|w| {
            w.or_timed_out(|t| StepError {
                host: conn.host.clone(),
                step: step.into(),
                message: format!(
                    "the API server did not become ready in {}s: {}",
                    deadline.as_secs(),
                    t.reason
                ),
                hint: "see `journalctl -u kforge-kube-apiserver` on the host".into(),
                transient: true,
            })
        })
}

/// Waits until Node `name` reports Ready through the API, within `deadline`; `Err` says what it reported last.
pub async fn wait_node_ready(api: &ApiClient, name: &str, deadline: Duration) -> Result<(), String> {
    Wait::new(format!("Node {name}"), deadline)
        .poll(POLL)
        .until(|| async {
            let said = match api.get_json(&format!("/api/v1/nodes/{name}")).await {
                Ok((s, node)) if s.is_success() => match node_ready(&node) {
                    (true, _) => return Ok(Step::Done(())),
                    (false, why) => why,
                },
                Ok((s, _)) => format!("HTTP {s}"),
                Err(e) => e,
            };
            Ok(Step::Blocked { reason: said })
        })
        .await
        .map_err(|e| match e.downcast_ref::<TimedOut>() {
            Some(t) => format!("Node {name} not Ready after {}s ({})", deadline.as_secs(), t.reason),
            None => format!("{e:#}"),
        })
}

/// How often the node stage looks again, and how many automatic restarts after kforge started a unit make a
/// crash loop (kforge's units restart 5 s after a failure).
const POLL: Duration = Duration::from_secs(2);
const CRASH_LOOP_RESTARTS: u32 = 3;

/// Waits until kubelet and kube-proxy on `host` answer healthy and the host is registered as a Node whose status
/// the kubelet posts (Ready not `Unknown`: a master's kubelet talks to its own API server, and after that was down
/// its Node stays `Unknown` until the kubelet reports again), within `deadline`. A unit that keeps crashing fails at once, with the end of its journal. When the kubelet is healthy
/// but its Node is gone (deleted through the API), the kubelet is restarted once: it registers at start.
/// `rt` runs the API calls (this runs on a blocking thread of that runtime).
pub fn wait_node(
    conn: &Connection,
    host: &str,
    api: &ApiClient,
    rt: &tokio::runtime::Handle,
    deadline: Duration,
) -> Result<(), StepError> {
    let step = "node: health";
    let started = Instant::now();
    let units = [KUBELET, KUBE_PROXY];
    let baseline: Vec<UnitState> = unit_states(conn, step, &units)?;
    let mut restarted_for_registration = false;
    let fail = |message: String, unit: &str| StepError {
        host: host.to_string(),
        step: step.into(),
        message: format!("{message}; journal of {unit}: {}", journal_tail(conn, unit, 8)),
        hint: format!(
            "see `journalctl -u {unit}` on the host; fix the cause and re-run (the node stage waits up to \
             --health-timeout)"
        ),
        transient: false,
    };
    let secs = deadline.as_secs();
    // The unit the last answer blames (its journal goes with the error at the deadline).
    let mut blamed = KUBELET;
    Wait::new(step, deadline)
        .poll(POLL)
        .until_blocking(|| {
            let states = unit_states(conn, step, &units)?;
            for s in &states {
                let before = baseline.iter().find(|b| b.unit == s.unit).map_or(0, |b| b.restarts);
                if s.active == "failed" || s.restarts >= before + CRASH_LOOP_RESTARTS {
                    return Err(fail(format!("{} is crash-looping: {}", s.unit, s.describe()), &s.unit));
                }
            }
            let ask = |p: &Probe| conn.run(step, &p.command).map(|o| ((p.healthy)(&o, 0), o));
            let (kubelet_ok, kubelet_said) = ask(&kubelet_probe())?;
            let (proxy_ok, proxy_said) = ask(&kube_proxy_probe())?;
            let node = if kubelet_ok {
                match rt.block_on(api.get_json(&format!("/api/v1/nodes/{host}"))) {
                    Ok((s, node)) if s.is_success() => Some(node),
                    _ => None,
                }
            } else {
                None
            };
            let registered = node.is_some();
            let reporting = node.as_ref().is_some_and(kubelet_reporting);
            if kubelet_ok && proxy_ok && reporting {
                return Ok(Step::Done(()));
            }
            // A kubelet registers its Node when it starts; one that has run healthy for a while without a Node
            // (it was deleted) needs a restart to register again.
            if kubelet_ok && !registered && !restarted_for_registration && started.elapsed() > Duration::from_secs(10) {
                restarted_for_registration = true;
                conn.run_ok(step, &format!("systemctl restart {KUBELET}"))?;
            }
            let state = |u: &str| {
                states
                    .iter()
                    .find(|s| s.unit == u)
                    .map(UnitState::describe)
                    .unwrap_or_default()
            };
            let (reason, unit) = if !kubelet_ok {
                (
                    format!(
                        "the kubelet's healthz did not answer ok in {secs}s (it said: {}; unit {})",
                        last_line(&kubelet_said),
                        state(KUBELET)
                    ),
                    KUBELET,
                )
            } else if !registered {
                (
                    format!("the kubelet is healthy but the API has no Node {host} after {secs}s"),
                    KUBELET,
                )
            } else if !reporting {
                let said = node.as_ref().map(|n| node_ready(n).1).unwrap_or_default();
                (
                    format!(
                        "the kubelet is healthy but has not posted Node {host}'s status for {secs}s ({said}): it \
                         cannot reach the API server it is configured with"
                    ),
                    KUBELET,
                )
            } else {
                (
                    format!(
                        "kube-proxy's healthz did not answer 200 in {secs}s (it said: {}; unit {})",
                        last_line(&proxy_said),
                        state(KUBE_PROXY)
                    ),
                    KUBE_PROXY,
                )
            };
            blamed = unit;
            Ok(Step::Blocked { reason })
        })
        .map_err(|w| w.or_timed_out(|t| fail(t.reason, blamed)))
}

#[cfg(test)]
mod tests;
