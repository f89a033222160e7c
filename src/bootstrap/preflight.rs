//! Checks of every host before the bootstrap installs anything, as kubeadm's preflight does: what kube-proxy and
//! the kubelet need of the host (iptables, bridge netfilter, IP forwarding, no swap, the cgroup version the
//! Kubernetes version requires), the ports the components will listen on, and the hosts' clocks against each
//! other. The probe only reads; the kernel settings kforge may make itself are made afterwards, persistently, by
//! `settings_files` and `apply_settings_command`, and checked again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::health;
use super::ssh::{Connection, FileSpec};
use crate::bootstrap::StepError;
use crate::spec::HostRole;

/// What the probe found on one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    pub iptables: bool,
    pub swap_devices: u32,
    pub cgroup_v2: bool,
    /// `/proc/sys/net/bridge` exists (br_netfilter is loaded).
    pub bridge_netfilter: bool,
    pub modprobe: bool,
    /// `ss` was there to list listeners.
    pub ss: bool,
    pub listeners: Vec<Listener>,
    /// The units of `OWNERS` that are running.
    pub active_units: Vec<String>,
    /// The filesystems the kubelet watches for eviction, as `df` saw them.
    pub disks: Vec<Disk>,
}

/// The filesystem under one of the kubelet's eviction signals (`nodefs`: the kubelet's directory; `imagefs`:
/// containerd's), found through the nearest existing directory of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `nodefs` or `imagefs`.
    pub signal: String,
    /// The directory `df` was asked about.
    pub path: String,
    pub size_kib: u64,
    pub available_kib: u64,
}

/// The directory of each disk eviction signal (containerd's root is the one kforge's configuration sets).
const EVICTION_DISKS: [(&str, &str); 2] = [
    ("nodefs", "/var/lib/kubelet"),
    ("imagefs", "/var/lib/kforge-containerd"),
];

/// A listening TCP socket and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    pub program: String,
    /// The systemd unit of the process (`etcd.service`), `-` when it runs outside any.
    pub unit: String,
}

/// One read-only shell script; each line is `KEY VALUE...`.
pub fn probe_script() -> String {
    r#"set -u
if command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || [ -x /sbin/iptables ]; then echo "iptables yes"; else echo "iptables no"; fi
echo "swap $(awk 'NR > 1' /proc/swaps 2>/dev/null | wc -l)"
echo "cgroupfs $(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo unknown)"
if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then echo "bridge yes"; else echo "bridge no"; fi
if command -v modprobe >/dev/null 2>&1 || [ -x /usr/sbin/modprobe ] || [ -x /sbin/modprobe ]; then echo "modprobe yes"; else echo "modprobe no"; fi
if command -v ss >/dev/null 2>&1; then
  echo "ss yes"
  ss -Hltnp 2>/dev/null | while read -r _state _recv _send local _peer users; do
    port=${local##*:}
    pid=$(printf '%s' "${users:-}" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1)
    prog=$(printf '%s' "${users:-}" | sed -n 's/^users:(("\([^"]*\)".*/\1/p')
    unit=""
    [ -n "$pid" ] && unit=$(grep -o '[^/]*\.service' "/proc/$pid/cgroup" 2>/dev/null | head -n 1)
    echo "listen $port ${prog:-?} ${unit:--}"
  done
else
  echo "ss no"
fi
for u in {owners}; do systemctl is-active --quiet "$u" 2>/dev/null && echo "active $u"; done
for pair in {disks}; do
  signal=${pair%%=*}; d=${pair#*=}
  while [ ! -d "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
  df -Pk "$d" 2>/dev/null | awk -v s="$signal" -v d="$d" 'NR == 2 {print "disk", s, d, $2, $4}'
done
exit 0
"#
    .replace("{owners}", &OWNERS.join(" "))
    .replace(
        "{disks}",
        &EVICTION_DISKS
            .iter()
            .map(|(signal, dir)| format!("{signal}={dir}"))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The units that may hold the components' ports: kforge's own (a re-run) and the distribution's that kforge stops
/// and disables itself.
const OWNERS: &[&str] = &[
    "kforge-kube-apiserver.service",
    "kforge-etcd.service",
    "etcd.service",
    "kforge-kube-controller-manager.service",
    "kforge-kube-scheduler.service",
    "kforge-kubelet.service",
    "kforge-kube-proxy.service",
];

pub fn parse_probe(text: &str) -> HostFacts {
    let mut f = HostFacts::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("iptables"), Some(v)) => f.iptables = v == "yes",
            (Some("swap"), Some(v)) => f.swap_devices = v.parse().unwrap_or(0),
            (Some("cgroupfs"), Some(v)) => f.cgroup_v2 = v == "cgroup2fs",
            (Some("bridge"), Some(v)) => f.bridge_netfilter = v == "yes",
            (Some("modprobe"), Some(v)) => f.modprobe = v == "yes",
            (Some("ss"), Some(v)) => f.ss = v == "yes",
            (Some("active"), Some(unit)) => f.active_units.push(unit.to_string()),
            (Some("disk"), Some(signal)) => {
                let rest: Vec<&str> = words.collect();
                if let [path, size, available] = rest[..]
                    && let (Ok(size_kib), Ok(available_kib)) = (size.parse(), available.parse())
                {
                    f.disks.push(Disk {
                        signal: signal.to_string(),
                        path: path.to_string(),
                        size_kib,
                        available_kib,
                    });
                }
            }
            (Some("listen"), Some(port)) => {
                if let Ok(port) = port.parse() {
                    f.listeners.push(Listener {
                        port,
                        program: words.next().unwrap_or("?").to_string(),
                        unit: words.next().unwrap_or("-").to_string(),
                    });
                }
            }
            _ => {}
        }
    }
    f
}

/// A port the components of a host listen on, and the units (of `OWNERS`) that may hold it.
pub struct Port {
    pub port: u16,
    pub what: &'static str,
    pub owners: &'static [&'static str],
}

const fn port(port: u16, what: &'static str, owners: &'static [&'static str]) -> Port {
    Port { port, what, owners }
}

const ETCD_OWNERS: &[&str] = &["kforge-etcd.service", "etcd.service"];
const KUBELET_OWNERS: &[&str] = &["kforge-kubelet.service"];
const MASTER_PORTS: &[Port] = &[
    port(6443, "kube-apiserver", &["kforge-kube-apiserver.service"]),
    port(2379, "etcd clients", ETCD_OWNERS),
    port(2380, "etcd peers", ETCD_OWNERS),
    port(
        10257,
        "kube-controller-manager",
        &["kforge-kube-controller-manager.service"],
    ),
    port(10259, "kube-scheduler", &["kforge-kube-scheduler.service"]),
];
const NODE_PORTS: &[Port] = &[
    port(10250, "kubelet", KUBELET_OWNERS),
    port(10248, "kubelet healthz", KUBELET_OWNERS),
    port(10256, "kube-proxy healthz", &["kforge-kube-proxy.service"]),
];

/// The ports the components of a `role` host listen on (every host is a Node: the kubelet's and kube-proxy's
/// ports on masters too).
pub fn ports_of(role: HostRole) -> Vec<&'static Port> {
    match role {
        HostRole::Master => MASTER_PORTS.iter().chain(NODE_PORTS).collect(),
        HostRole::Worker => NODE_PORTS.iter().collect(),
    }
}

/// A failed check: what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub hint: String,
}

fn problem(message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem {
        message: message.into(),
        hint: hint.into(),
    }
}

/// The minor version of `major.minor`.
fn minor(version: &str) -> u32 {
    version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0)
}

/// What stops the bootstrap of a `role` host with `facts` for Kubernetes `version`, and what only deserves a
/// warning. `fail_cgroup_v1`: the kubelet is configured to refuse cgroup v1 (1.35's default, or the spec's
/// `kubelet.failCgroupV1`).
pub fn judge(facts: &HostFacts, role: HostRole, version: &str, fail_cgroup_v1: bool) -> (Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if health::runs_kubelet(role) {
        if !facts.iptables {
            problems.push(problem(
                "iptables is not installed: kube-proxy programs Services with it",
                "install the distribution's iptables package on the host (`apt-get install iptables`, \
                 `dnf install iptables-nft`), then re-run",
            ));
        }
        if !facts.bridge_netfilter && !facts.modprobe {
            problems.push(problem(
                "the br_netfilter kernel module is not loaded and there is no modprobe to load it",
                "load br_netfilter on the host (`modprobe br_netfilter`; on a container host, on the machine \
                 that runs it), then re-run",
            ));
        }
        if facts.swap_devices > 0 {
            problems.push(problem(
                format!(
                    "swap is on ({} devices): the kubelet refuses to start with swap",
                    facts.swap_devices
                ),
                "turn it off on the host (`swapoff -a`, and remove swap entries from /etc/fstab), then re-run",
            ));
        }
        if !facts.cgroup_v2 {
            if minor(version) >= 35 {
                problems.push(problem(
                    format!("the host runs cgroup v1: Kubernetes {version} requires cgroup v2"),
                    "boot the host with the unified hierarchy (systemd.unified_cgroup_hierarchy=1; every current \
                     distribution's default), or use Kubernetes 1.34",
                ));
            } else if fail_cgroup_v1 {
                problems.push(problem(
                    "the host runs cgroup v1, and spec.kubelet.failCgroupV1 makes the kubelet refuse it",
                    "boot the host with the unified hierarchy (systemd.unified_cgroup_hierarchy=1), or set \
                     spec.kubelet.failCgroupV1: false",
                ));
            } else {
                warnings
                    .push("the host runs cgroup v1, deprecated: Kubernetes 1.35 and later require cgroup v2".into());
            }
        }
    }
    if facts.ss {
        for Port { port, what, owners } in ports_of(role) {
            for l in facts.listeners.iter().filter(|l| l.port == *port) {
                // Without the right to read other processes' descriptors, `ss` cannot name the owner: then a
                // running unit that may hold the port is taken to.
                let ours = if l.unit == "-" && l.program == "?" {
                    owners.iter().any(|u| facts.active_units.iter().any(|a| a == u))
                } else {
                    owners.contains(&l.unit.as_str())
                };
                if !ours {
                    problems.push(problem(
                        format!(
                            "port {port} ({what}) is taken by {}",
                            match (l.program.as_str(), l.unit.as_str()) {
                                ("?", "-") => "a process kforge cannot name".to_string(),
                                (p, "-") => format!("{p} (unit none)"),
                                (p, u) => format!("{p} (unit {u})"),
                            }
                        ),
                        format!("stop what listens on {port} (`ss -ltnp 'sport = :{port}'`), then re-run"),
                    ));
                }
            }
        }
    } else {
        warnings.push("`ss` is not installed: the ports kforge needs were not checked".into());
    }
    (problems, warnings)
}

/// The bytes a kubelet eviction threshold stands for on a filesystem of `size` bytes: a percentage of it, or a
/// quantity (`500Mi`, `2G`, as validated by the model); `None` for what it cannot read and for `0%`, which turns
/// the signal off.
fn threshold_bytes(threshold: &str, size: u64) -> Option<u64> {
    if let Some(p) = threshold.strip_suffix('%') {
        let p = p.parse::<f64>().ok().filter(|p| *p > 0.0)?;
        return Some((p / 100.0 * size as f64) as u64);
    }
    let digits = threshold.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &threshold[digits.len()..] {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    Some((digits.parse::<f64>().ok()? * unit as f64) as u64)
}

/// Warnings for disks already past the kubelet's hard eviction thresholds (`eviction_hard`: the rendered map,
/// empty for the kubelet's defaults): such a Node reports DiskPressure and is tainted as soon as it registers, so
/// nothing new is scheduled there, and its kubelet deletes unused images (which a host that cannot pull loses).
pub fn disk_warnings(facts: &HostFacts, role: HostRole, eviction_hard: &BTreeMap<String, String>) -> Vec<String> {
    if !health::runs_kubelet(role) {
        return Vec::new();
    }
    let threshold_of = |signal: &str| -> Option<String> {
        if eviction_hard.is_empty() {
            crate::model::KUBELET_EVICTION_HARD_DEFAULTS
                .iter()
                .find(|(s, _)| *s == signal)
                .map(|(_, t)| t.to_string())
        } else {
            eviction_hard.get(signal).cloned()
        }
    };
    let gib = |kib: u64| kib as f64 / (1u64 << 20) as f64;
    facts
        .disks
        .iter()
        .filter_map(|d| {
            let signal = format!("{}.available", d.signal);
            let threshold = threshold_of(&signal)?;
            let floor = threshold_bytes(&threshold, d.size_kib * 1024)?;
            (d.available_kib * 1024 < floor).then(|| {
                format!(
                    "{} has {:.1} GiB free of {:.1} GiB ({:.0}%), under the kubelet's eviction threshold \
                     {signal}<{threshold}: the Node will report DiskPressure and be tainted so nothing new is \
                     scheduled on it (free disk space, or lower spec.kubelet.evictionHard.{signal})",
                    d.path,
                    gib(d.available_kib),
                    gib(d.size_kib),
                    d.available_kib as f64 * 100.0 / d.size_kib.max(1) as f64,
                )
            })
        })
        .collect()
}

/// How far a host's clock may be from the others' before etcd and certificate checks suffer (etcd warns at 1 s).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(1);

/// One host's clock against this machine's: its offset and how precisely the round trip let us know it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockSample {
    pub offset: f64,
    pub uncertainty: f64,
}

/// Reads the host's clock, timed from here.
pub fn sample_clock(conn: &Connection) -> Result<ClockSample, StepError> {
    let now = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };
    let (before, sent) = (now(), Instant::now());
    let out = conn.run_ok("preflight: clock", "date +%s.%N")?;
    let round_trip = sent.elapsed().as_secs_f64();
    let theirs: f64 = out.stdout.trim().parse().unwrap_or(0.0);
    Ok(ClockSample {
        offset: theirs - (before + round_trip / 2.0),
        uncertainty: round_trip / 2.0,
    })
}

/// The hosts whose clocks are off the others' (the median of the offsets) by more than `MAX_CLOCK_SKEW` beyond
/// what the round trips leave uncertain.
pub fn clock_skew(samples: &[(String, ClockSample)]) -> Vec<(String, Problem)> {
    if samples.len() < 2 {
        return Vec::new();
    }
    let mut sorted: Vec<&ClockSample> = samples.iter().map(|(_, s)| s).collect();
    sorted.sort_by(|a, b| a.offset.total_cmp(&b.offset));
    let reference = sorted[sorted.len() / 2];
    let median = reference.offset;
    samples
        .iter()
        .filter(|(_, s)| {
            (s.offset - median).abs() - s.uncertainty - reference.uncertainty > MAX_CLOCK_SKEW.as_secs_f64()
        })
        .map(|(host, s)| {
            (
                host.clone(),
                problem(
                    format!(
                        "its clock is {:+.1}s off the other hosts' (more than {}s)",
                        s.offset - median,
                        MAX_CLOCK_SKEW.as_secs()
                    ),
                    "synchronise the hosts' clocks (chrony or systemd-timesyncd against one NTP source), then re-run",
                ),
            )
        })
        .collect()
}

const SYSCTL_CONF: &str = "/etc/sysctl.d/99-kforge.conf";

/// The kernel settings kforge makes persistent on hosts that run pods.
pub fn settings_files() -> Vec<FileSpec> {
    vec![
        FileSpec {
            path: "/etc/modules-load.d/kforge.conf".into(),
            bytes: b"# kforge: modules Kubernetes networking needs, loaded at boot.\noverlay\nbr_netfilter\n".to_vec(),
            mode: 0o644,
        },
        FileSpec {
            path: SYSCTL_CONF.into(),
            bytes: b"# kforge: what kube-proxy and pod networking need. Rendered by kforge; edits are overwritten.\n\
net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n"
                .to_vec(),
            mode: 0o644,
        },
    ]
}

/// Succeeds when the settings are in force.
pub fn settings_in_force_command() -> String {
    "[ \"$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)\" = 1 ] && \
     [ \"$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)\" = 1 ]"
        .into()
}

/// Loads br_netfilter when it is not, and applies kforge's sysctl file.
pub fn apply_settings_command() -> String {
    format!(
        "{{ [ -e /proc/sys/net/bridge ] || modprobe br_netfilter; }} && sysctl -q -p {SYSCTL_CONF} && {}",
        settings_in_force_command()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> HostFacts {
        HostFacts {
            iptables: true,
            swap_devices: 0,
            cgroup_v2: true,
            bridge_netfilter: true,
            modprobe: true,
            ss: true,
            listeners: Vec::new(),
            active_units: Vec::new(),
            disks: Vec::new(),
        }
    }

    #[test]
    fn a_disk_already_past_an_eviction_threshold_is_warned_of() {
        let out = parse_probe(
            "disk nodefs /var/lib 104857600 20971520\ndisk imagefs /var/lib/kforge-containerd 104857600 10485760\n\
             disk imagefs /x garbage 1\n",
        );
        // 100 GiB each; 20 GiB free where the kubelet's data lives, 10 GiB where containerd's does.
        assert_eq!(out.disks.len(), 2, "{:?}", out.disks);
        let facts = HostFacts {
            disks: out.disks,
            ..healthy()
        };
        let defaults = disk_warnings(&facts, HostRole::Worker, &BTreeMap::new());
        assert_eq!(defaults.len(), 1, "{defaults:?}");
        assert!(
            defaults[0].starts_with(
                "/var/lib/kforge-containerd has 10.0 GiB free of 100.0 GiB (10%), under the \
                                     kubelet's eviction threshold imagefs.available<15%"
            ),
            "{defaults:?}"
        );
        let lowered: BTreeMap<String, String> = [
            ("imagefs.available", "5%"),
            ("nodefs.available", "30Gi"),
            ("memory.available", "100Mi"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let w = disk_warnings(&facts, HostRole::Master, &lowered);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("/var/lib has 20.0 GiB free") && w[0].contains("nodefs.available<30Gi"),
            "{w:?}"
        );
        assert_eq!(threshold_bytes("1.5Ki", 0), Some(1536));
        assert_eq!(threshold_bytes("10%", 1000), Some(100));
        assert_eq!(threshold_bytes("0%", 1000), None);
        assert_eq!(threshold_bytes("2G", 0), Some(2_000_000_000));
    }

    #[test]
    fn the_probe_output_is_read_back() {
        let f = parse_probe(
            "iptables no\nswap 1\ncgroupfs tmpfs\nbridge yes\nmodprobe no\nss yes\nlisten 2379 etcd etcd.service\nlisten 22 sshd ssh.service\nactive etcd.service\n",
        );
        assert!(!f.iptables && f.bridge_netfilter && !f.modprobe && !f.cgroup_v2 && f.ss);
        assert_eq!(f.swap_devices, 1);
        assert_eq!(f.listeners.len(), 2);
        assert_eq!(f.listeners[0].unit, "etcd.service");
        assert_eq!(f.active_units, ["etcd.service"]);
        let script = probe_script();
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // The probe runs here too: it only reads, and finds the eviction disks through their nearest directory.
        let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let here = parse_probe(&String::from_utf8_lossy(&out.stdout));
        let signals: Vec<&str> = here.disks.iter().map(|d| d.signal.as_str()).collect();
        assert_eq!(signals, ["nodefs", "imagefs"], "{here:?}");
        assert!(
            here.disks
                .iter()
                .all(|d| d.size_kib >= d.available_kib && d.path.starts_with('/')),
            "{here:?}"
        );
    }

    #[test]
    fn a_worker_without_iptables_or_with_swap_is_refused_with_what_to_do() {
        let mut f = healthy();
        assert_eq!(judge(&f, HostRole::Worker, "1.34", false), (vec![], vec![]));
        f.iptables = false;
        f.swap_devices = 2;
        let (p, _) = judge(&f, HostRole::Worker, "1.34", false);
        assert_eq!(p.len(), 2);
        assert!(
            p[0].message.contains("iptables") && p[0].hint.contains("install"),
            "{p:?}"
        );
        assert!(
            p[1].message.contains("swap") && p[1].hint.contains("swapoff -a"),
            "{p:?}"
        );
        // Masters are Nodes too: they need the same.
        assert_eq!(judge(&f, HostRole::Master, "1.34", false).0, p);
    }

    #[test]
    fn cgroup_v1_warns_on_1_34_and_stops_1_35() {
        let f = HostFacts {
            cgroup_v2: false,
            ..healthy()
        };
        let (p, w) = judge(&f, HostRole::Worker, "1.34", false);
        assert!(p.is_empty() && w.len() == 1, "{p:?} {w:?}");
        let (p, _) = judge(&f, HostRole::Worker, "1.35", true);
        assert!(p[0].message.contains("requires cgroup v2"), "{p:?}");
    }

    #[test]
    fn ports_held_by_others_are_refused_but_kforge_s_own_and_taken_over_units_pass() {
        let mut f = healthy();
        let l = |port, program: &str, unit: &str| Listener {
            port,
            program: program.into(),
            unit: unit.into(),
        };
        f.listeners = vec![
            l(2379, "etcd", "etcd.service"),
            l(6443, "kube-apiserver", "kforge-kube-apiserver.service"),
            l(10257, "nginx", "nginx.service"),
            l(10259, "python3", "-"),
        ];
        let (p, _) = judge(&f, HostRole::Master, "1.34", false);
        let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "port 10257 (kube-controller-manager) is taken by nginx (unit nginx.service)",
                "port 10259 (kube-scheduler) is taken by python3 (unit none)"
            ]
        );
        f.listeners = vec![l(10250, "kubelet", "k3s.service")];
        assert_eq!(judge(&f, HostRole::Worker, "1.34", false).0.len(), 1);
        // Owners unknown (no right to read other processes' descriptors): a unit that may hold the port runs.
        f.listeners = vec![l(2379, "?", "-"), l(6443, "?", "-")];
        f.active_units = vec!["etcd.service".into()];
        let (p, _) = judge(&f, HostRole::Master, "1.34", false);
        let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            ["port 6443 (kube-apiserver) is taken by a process kforge cannot name"]
        );
    }

    #[test]
    fn a_clock_off_the_others_is_named() {
        let s = |offset: f64| ClockSample {
            offset,
            uncertainty: 0.05,
        };
        let samples = vec![
            ("a".to_string(), s(0.1)),
            ("b".to_string(), s(0.2)),
            ("c".to_string(), s(-4.0)),
        ];
        let off = clock_skew(&samples);
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].0, "c");
        assert!(off[0].1.message.contains("-4.1s"), "{:?}", off[0]);
        assert!(clock_skew(&samples[..2]).is_empty());
        // A slow round trip widens what counts as in sync.
        let unsure = vec![
            ("a".to_string(), s(0.0)),
            (
                "b".to_string(),
                ClockSample {
                    offset: 1.5,
                    uncertainty: 0.8,
                },
            ),
        ];
        assert!(clock_skew(&unsure).is_empty());
    }

    #[test]
    fn settings_command_is_valid_shell() {
        for c in [apply_settings_command(), settings_in_force_command()] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &c])
                .output()
                .unwrap();
            assert!(out.status.success(), "{c}");
        }
    }
}
