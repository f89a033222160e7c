//! The etcd cluster across the masters, over TLS with client and peer certificate authentication: kforge's
//! certificates and a systemd unit (`templates/etcd.service`) are put on each master (uploads skipped when
//! unchanged), the distribution's own single-node etcd unit is disabled, and the member is (re)started only when
//! something it reads changed. Health is checked with kforge's own etcd client certificate.

use std::time::Duration;

use crate::engine::Step;
use crate::engine::wait::{Wait, Waited};

use super::pki::{ETCD_CA, Member, Pki};
use super::ssh::{Connection, FileSpec};
use crate::bootstrap::StepError;

const UNIT: &str = include_str!("../../templates/etcd.service");
const UNIT_PATH: &str = "/etc/systemd/system/kforge-etcd.service";
pub const PKI_DIR: &str = "/etc/kforge/pki/etcd";
/// Debian's etcd-server package starts a single-node etcd of its own on localhost:2379.
const DISTRO_UNIT: &str = "etcd.service";

/// Where a member keeps its data; a master without `member/` in it has never started (or lost its data).
pub const DATA_DIR: &str = "/var/lib/kforge-etcd";
/// The first start's `--initial-cluster` and `--initial-cluster-state` (as etcd's `ETCD_*` variables; the unit
/// reads it, and etcd ignores both once its data directory holds a member).
pub const INITIAL_ENV: &str = "/etc/kforge/etcd-initial.env";

/// The unit of `member` (what a member needs on every start; the first start's settings are in [`INITIAL_ENV`]).
pub fn render_unit(cluster: &str, member: &Member, binary: &str) -> String {
    UNIT.replace("{{cluster}}", cluster)
        .replace("{{name}}", &member.name)
        .replace("{{address}}", &member.address.to_string())
        .replace("{{binary}}", binary)
}

/// The peer URL etcd knows `member` by.
pub fn peer_url(member: &Member) -> String {
    format!("https://{}:2380", member.address)
}

/// [`INITIAL_ENV`]'s text: `members` as (name, peer URL), `existing` for a member joining a running etcd, else the
/// members of a new cluster.
pub fn initial_env(members: &[(String, String)], existing: bool) -> String {
    let initial: Vec<String> = members.iter().map(|(n, url)| format!("{n}={url}")).collect();
    format!(
        "# kforge: read by etcd on its first start only.\nETCD_INITIAL_CLUSTER_STATE={}\nETCD_INITIAL_CLUSTER={}\n",
        if existing { "existing" } else { "new" },
        initial.join(",")
    )
}

/// The masters that join a running etcd rather than start a new one: in a cluster bootstrapped before
/// (`established`) where some master holds etcd data, those that hold none (added to the spec, or whose data was
/// lost). `with_data` is (master, has data). A cluster never bootstrapped starts all its members new, also when an
/// interrupted first run left data on some.
pub fn joiners(established: bool, with_data: &[(String, bool)]) -> Vec<String> {
    if !established || !with_data.iter().any(|(_, has)| *has) {
        return Vec::new();
    }
    with_data
        .iter()
        .filter(|(_, has)| !has)
        .map(|(name, _)| name.clone())
        .collect()
}

/// What one member's step changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberReport {
    pub uploaded: Vec<String>,
    pub restarted: bool,
    pub disabled_distro_unit: bool,
    /// Files changed under a running member, left for the caller to restart (one member at a time).
    pub restart_due: bool,
}

impl MemberReport {
    pub fn changed(&self) -> bool {
        !self.uploaded.is_empty() || self.restarted || self.disabled_distro_unit
    }
}

/// The certificates and unit of `member` (what [`ensure_member`] keeps up to date on its master).
pub fn member_files(pki: &Pki, cluster: &str, member: &Member, binary: &str) -> Vec<FileSpec> {
    let cert = |name: &str| pki.certs.get(name).expect("the PKI has every member's certificates");
    let server = cert(&format!("etcd-server-{}", member.name));
    let peer = cert(&format!("etcd-peer-{}", member.name));
    let health = cert("etcd-healthcheck-client");
    let files: [(&str, &str, i32); 7] = [
        ("ca.crt", cert(ETCD_CA).cert_pem.as_str(), 0o644),
        ("server.crt", server.cert_pem.as_str(), 0o644),
        ("server.key", server.key_pem.as_str(), 0o600),
        ("peer.crt", peer.cert_pem.as_str(), 0o644),
        ("peer.key", peer.key_pem.as_str(), 0o600),
        ("healthcheck-client.crt", health.cert_pem.as_str(), 0o644),
        ("healthcheck-client.key", health.key_pem.as_str(), 0o600),
    ];
    let mut batch: Vec<FileSpec> = files
        .iter()
        .map(|(name, pem, mode)| FileSpec {
            path: format!("{PKI_DIR}/{name}"),
            bytes: pem.as_bytes().to_vec(),
            mode: *mode,
        })
        .collect();
    batch.push(FileSpec {
        path: UNIT_PATH.into(),
        bytes: render_unit(cluster, member, binary).into_bytes(),
        mode: 0o644,
    });
    batch
}

/// How [`ensure_member`] starts a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Started (or restarted on a changed file) now: a new cluster's members start together, since none becomes
    /// ready without a quorum.
    Now,
    /// A member that is running: a changed file is reported as `restart_due`, for a restart one member at a time.
    Deferred,
    /// A member joining a running etcd: files only; [`join`] adds it and starts it.
    Join,
}

/// Puts certificates and unit on `member` (and, before its first start in a new cluster, when it `has_data` not
/// yet, `members` as the initial cluster), and starts it as `start` says (without waiting for the others).
#[allow(clippy::too_many_arguments)]
pub fn ensure_member(
    conn: &Connection,
    pki: &Pki,
    cluster: &str,
    member: &Member,
    members: &[Member],
    binary: &str,
    has_data: bool,
    start: Start,
) -> Result<MemberReport, StepError> {
    let mut report = MemberReport::default();
    let step = "etcd";
    let mut batch = member_files(pki, cluster, member, binary);
    if start != Start::Join && !has_data {
        let all: Vec<(String, String)> = members.iter().map(|m| (m.name.clone(), peer_url(m))).collect();
        batch.push(FileSpec {
            path: INITIAL_ENV.into(),
            bytes: initial_env(&all, false).into_bytes(),
            mode: 0o644,
        });
    }
    report.uploaded = conn.sync_files(&format!("{step}: files"), &batch)?;
    report.disabled_distro_unit = conn.run_guarded(
        &format!("{step}: disable the distribution's etcd"),
        &format!(
            "! systemctl is-enabled --quiet {DISTRO_UNIT} 2>/dev/null && ! systemctl is-active --quiet {DISTRO_UNIT}"
        ),
        &format!("systemctl disable --now {DISTRO_UNIT}"),
    )?;
    let changed = !report.uploaded.is_empty() || report.disabled_distro_unit;
    match start {
        Start::Join => {}
        Start::Deferred if changed => {
            conn.run_ok(&format!("{step}: files"), "systemctl daemon-reload")?;
            report.restart_due = true;
        }
        _ if changed => {
            conn.run_ok(
                &format!("{step}: start"),
                "systemctl daemon-reload && systemctl enable --quiet kforge-etcd && systemctl restart --no-block kforge-etcd",
            )?;
            report.restarted = true;
        }
        _ => {
            report.restarted = conn.run_guarded(
                &format!("{step}: start"),
                "systemctl is-active --quiet kforge-etcd",
                "systemctl enable --quiet kforge-etcd && systemctl start --no-block kforge-etcd",
            )?;
        }
    }
    Ok(report)
}

/// Whether the member on `conn` holds data (it has started before).
pub fn has_data(conn: &Connection) -> Result<bool, StepError> {
    Ok(conn.run("etcd: data", &format!("test -d {DATA_DIR}/member"))?.status == 0)
}

/// The etcdctl of the etcd asset (a host need not have one of its own on its PATH).
pub const ETCDCTL: &str = "/opt/kforge/bin/etcdctl";

/// `etcdctl ARGS` against the local member with kforge's client certificate, run on a master.
pub fn etcdctl(args: &str) -> String {
    etcdctl_at("https://127.0.0.1:2379", args)
}

/// `etcdctl ARGS` against `endpoints` (comma-separated URLs) with kforge's client certificate, run on a master.
pub fn etcdctl_at(endpoints: &str, args: &str) -> String {
    format!(
        "ETCDCTL_API=3 {ETCDCTL} --endpoints={endpoints} --cacert={PKI_DIR}/ca.crt \
         --cert={PKI_DIR}/healthcheck-client.crt --key={PKI_DIR}/healthcheck-client.key {args}"
    )
}

/// One line of `etcdctl member list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMember {
    pub id: String,
    pub started: bool,
    /// Empty until the member has started.
    pub name: String,
    pub peer_url: String,
}

/// `etcdctl member list`'s lines: `ID, started|unstarted, NAME, PEER URLS, CLIENT URLS, IS LEARNER` (kforge's
/// members have one peer URL each).
pub fn parse_member_list(text: &str) -> Vec<ListedMember> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f.len() >= 4 && (f[1] == "started" || f[1] == "unstarted")).then(|| ListedMember {
                id: f[0].to_string(),
                started: f[1] == "started",
                name: f[2].to_string(),
                peer_url: f[3].to_string(),
            })
        })
        .collect()
}

/// Runs a membership change (`member add` / `member remove`), retrying while etcd refuses it as an "unhealthy
/// cluster": it does until every member has been connected to the leader for a few seconds (one restarted just
/// now has not), which passes. `done_when` recognises an answer that means it is already done.
pub fn reconfigure(
    conn: &Connection,
    step: &str,
    command: &str,
    done_when: &str,
    deadline: Duration,
) -> Result<String, StepError> {
    Wait::new(step, deadline)
        .until_blocking(|| {
            let out = conn.run(step, command)?;
            let said = format!("{}{}", out.stdout, out.stderr);
            if out.status == 0 || said.contains(done_when) {
                Ok(Step::Done(said))
            } else if said.contains("unhealthy cluster") {
                Ok(Step::Blocked { reason: said })
            } else {
                // Any other refusal is the answer: run_ok turns it into the error naming the command's output.
                conn.run_ok(step, command).map(|o| Step::Done(o.stdout))
            }
        })
        .or_else(|w| match w {
            Waited::Failed(e) => Err(e),
            Waited::TimedOut(_) => conn.run_ok(step, command).map(|o| o.stdout),
        })
}

/// Joins `me` (files in place, no data) to the running etcd of `seeds`: a member of its peer URL that has started
/// is one whose data is gone (removed first); `member add` unless etcd lists it unstarted already (an interrupted
/// join); then its first start with the members etcd lists, and a wait until all of them are healthy. Refused,
/// changing nothing, while etcd lists another member added but never started. Returns how many members etcd has
/// now.
pub fn join(conn: &Connection, me: &Member, seeds: &[Member], deadline: Duration) -> Result<usize, StepError> {
    let step = "etcd: join";
    let endpoints: Vec<String> = seeds.iter().map(|m| format!("https://{}:2379", m.address)).collect();
    let at = |args: &str| etcdctl_at(&endpoints.join(","), args);
    let mine = peer_url(me);
    let listed = |conn: &Connection| -> Result<Vec<ListedMember>, StepError> {
        Ok(parse_member_list(&conn.run_ok(step, &at("member list"))?.stdout))
    };
    let failed = |message: String, hint: &str| StepError {
        host: conn.host.clone(),
        step: step.into(),
        message,
        hint: hint.into(),
        transient: false,
    };
    let mut members = listed(conn)?;
    // Decided on the first listing, before any change: a refusal leaves the membership as it was.
    let changes = membership_changes(&members, &mine).map_err(|refusal| {
        failed(
            refusal,
            "bring up the master with that address (re-run), or remove the member on a master with `etcdctl member \
             remove ID`",
        )
    })?;
    for change in changes {
        let (command, already_done) = match change {
            MembershipChange::RemoveStale(id) => (format!("member remove {id}"), "member not found"),
            MembershipChange::Add => (
                format!("member add {} --peer-urls={mine}", me.name),
                "Peer URLs already exists",
            ),
        };
        reconfigure(conn, step, &at(&command), already_done, deadline)?;
        members = listed(conn)?;
    }
    if !members.iter().any(|m| m.peer_url == mine) {
        return Err(failed(
            format!("etcd does not list {mine} after `member add`"),
            "re-run",
        ));
    }
    let initial: Vec<(String, String)> = members
        .iter()
        .map(|m| {
            let name = if m.peer_url == mine { &me.name } else { &m.name };
            (name.clone(), m.peer_url.clone())
        })
        .collect();
    conn.sync_files(
        step,
        &[FileSpec {
            path: INITIAL_ENV.into(),
            bytes: initial_env(&initial, true).into_bytes(),
            mode: 0o644,
        }],
    )?;
    conn.run_ok(
        step,
        "systemctl daemon-reload && systemctl enable --quiet kforge-etcd && systemctl restart --no-block kforge-etcd",
    )?;
    wait_healthy(conn, members.len(), deadline)?;
    Ok(members.len())
}

/// A change to etcd's membership a joining member needs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// A started member of the joiner's peer URL: the joiner's data is gone, so that member is removed first.
    RemoveStale(String),
    /// The joiner is not listed yet (listed unstarted means an interrupted join: it only needs its first start).
    Add,
}

/// What `members` (etcd's member list) needs before the member of peer URL `mine` can start and join, or why it
/// cannot: another member added but never started would be a second missing member (etcd counts it towards the
/// quorum), so nothing is changed until it has started or been removed.
pub fn membership_changes(members: &[ListedMember], mine: &str) -> Result<Vec<MembershipChange>, String> {
    if let Some(other) = members.iter().find(|m| !m.started && m.peer_url != mine) {
        return Err(format!(
            "etcd lists member {} ({}) as added but never started; a second member cannot join before it has",
            other.id, other.peer_url
        ));
    }
    let mut changes = Vec::new();
    match members.iter().find(|m| m.peer_url == mine) {
        Some(stale) if stale.started => {
            changes.push(MembershipChange::RemoveStale(stale.id.clone()));
            changes.push(MembershipChange::Add);
        }
        Some(_) => {}
        None => changes.push(MembershipChange::Add),
    }
    Ok(changes)
}

/// `etcdctl endpoint health --cluster` with kforge's client certificate, run on a master.
pub fn health_command() -> String {
    etcdctl("endpoint health --cluster")
}

/// `etcdctl endpoint health` of each of `members` by its own address, run on a master: every member is asked
/// even when the local one is down (`--cluster` would first need the local one for the member list).
pub fn health_command_of(members: &[Member]) -> String {
    let endpoints: Vec<String> = members.iter().map(|m| format!("https://{}:2379", m.address)).collect();
    etcdctl_at(&endpoints.join(","), "endpoint health")
}

/// Waits until every one of `expected` members reports healthy, asking through `conn`.
pub fn wait_healthy(conn: &Connection, expected: usize, deadline: Duration) -> Result<String, StepError> {
    Wait::new("etcd: health", deadline)
        .poll(Duration::from_secs(1))
        .until_blocking(|| {
            let out = conn.run("etcd: health", &health_command())?;
            let text = format!("{}{}", out.stdout, out.stderr);
            let healthy = text.lines().filter(|l| l.contains("is healthy")).count();
            Ok(if out.status == 0 && healthy >= expected {
                Step::Done(text)
            } else {
                Step::Blocked {
                    reason: format!(
                        "{healthy} of {expected} members healthy after {}s: {}",
                        deadline.as_secs(),
                        text.lines().last().unwrap_or_default()
                    ),
                }
            })
        })
        .map_err(|w| {
            w.or_timed_out(|t| StepError {
                host: conn.host.clone(),
                step: "etcd: health".into(),
                message: t.reason,
                hint: "check `journalctl -u kforge-etcd` on the masters; a member that cannot reach its peers on \
                       2380 is the usual cause"
                    .into(),
                transient: true,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_requires_certificates_and_leaves_the_first_start_to_its_environment() {
        let member = Member {
            name: "m2".into(),
            address: "10.0.0.2".parse().unwrap(),
        };
        let unit = render_unit("lab", &member, "/usr/bin/etcd");
        assert!(unit.contains("--name=m2"));
        assert!(unit.contains(&format!("EnvironmentFile=-{INITIAL_ENV}")));
        // etcd refuses an ETCD_* variable that a flag shadows: the first start's settings are only in the file.
        assert!(!unit.contains("--initial-cluster=") && !unit.contains("--initial-cluster-state"));
        assert!(unit.contains("--listen-client-urls=https://10.0.0.2:2379,https://127.0.0.1:2379"));
        assert!(unit.contains("--client-cert-auth") && unit.contains("--peer-client-cert-auth"));
        assert!(!unit.contains("http://"), "no plain-HTTP listener");
        assert!(!unit.contains("{{"), "every placeholder filled");
    }

    #[test]
    fn the_first_start_names_every_member_new_or_joins_existing() {
        let members = [
            ("m1".to_string(), "https://10.0.0.1:2380".to_string()),
            ("m2".to_string(), "https://10.0.0.2:2380".to_string()),
        ];
        let new = initial_env(&members, false);
        assert!(new.contains("\nETCD_INITIAL_CLUSTER_STATE=new\n"));
        assert!(new.contains("\nETCD_INITIAL_CLUSTER=m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380\n"));
        assert!(initial_env(&members, true).contains("ETCD_INITIAL_CLUSTER_STATE=existing"));
    }

    #[test]
    fn only_masters_without_data_of_an_established_cluster_join() {
        let with = |v: &[(&str, bool)]| -> Vec<(String, bool)> { v.iter().map(|(n, h)| (n.to_string(), *h)).collect() };
        let grown = with(&[("m1", true), ("m2", false), ("m3", false)]);
        assert_eq!(joiners(true, &grown), ["m2", "m3"]);
        // A first create interrupted after one member started: still one new cluster.
        assert!(joiners(false, &grown).is_empty());
        // Every member's data gone: nothing to join, a new cluster (a restore brings the data back).
        assert!(joiners(true, &with(&[("m1", false), ("m2", false), ("m3", false)])).is_empty());
        assert!(joiners(true, &with(&[("m1", true), ("m2", true), ("m3", true)])).is_empty());
    }

    #[test]
    fn a_joiner_is_added_or_started_and_refused_beside_another_unstarted_member() {
        let member = |id: &str, started: bool, ip: u8| ListedMember {
            id: id.into(),
            started,
            name: if started { format!("m{ip}") } else { String::new() },
            peer_url: format!("https://10.0.0.{ip}:2380"),
        };
        let mine = "https://10.0.0.3:2380";
        let running = [member("a1", true, 1), member("a2", true, 2)];
        assert_eq!(membership_changes(&running, mine), Ok(vec![MembershipChange::Add]));
        // An interrupted join: added, never started; it only needs its first start.
        let interrupted = [member("a1", true, 1), member("a2", true, 2), member("a3", false, 3)];
        assert_eq!(membership_changes(&interrupted, mine), Ok(vec![]));
        // Its data lost while etcd still counts it started: removed, then added again.
        let lost = [member("a1", true, 1), member("a2", true, 2), member("a3", true, 3)];
        assert_eq!(
            membership_changes(&lost, mine),
            Ok(vec![MembershipChange::RemoveStale("a3".into()), MembershipChange::Add])
        );
        // Another master added and never started: refused before anything changes, naming it.
        for listed in [
            vec![member("a1", true, 1), member("a2", false, 2)],
            vec![member("a1", true, 1), member("a2", false, 2), member("a3", true, 3)],
        ] {
            let refusal = membership_changes(&listed, mine).unwrap_err();
            assert!(
                refusal.contains("a2 (https://10.0.0.2:2380) as added but never started"),
                "{refusal}"
            );
        }
    }

    #[test]
    fn the_member_list_is_read_with_unstarted_members() {
        let text = "8e9e05c52164694d, started, m1, https://10.0.0.1:2380, https://10.0.0.1:2379, false\n\
                    a8266ecf031671f3, unstarted, , https://10.0.0.2:2380, , false\n";
        let members = parse_member_list(text);
        assert_eq!(members.len(), 2);
        assert_eq!(
            members[1],
            ListedMember {
                id: "a8266ecf031671f3".into(),
                started: false,
                name: String::new(),
                peer_url: "https://10.0.0.2:2380".into()
            }
        );
        assert!(members[0].started && members[0].name == "m1");
        assert!(parse_member_list("Error: context deadline exceeded\n").is_empty());
    }
}
