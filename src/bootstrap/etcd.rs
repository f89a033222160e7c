//! The etcd cluster across the masters, over TLS with client and peer certificate authentication: kforge's
//! certificates and a systemd unit (`templates/etcd.service`) are put on each master (uploads skipped when
//! unchanged), the distribution's own single-node etcd unit is disabled, and the member is (re)started only when
//! something it reads changed. Health is checked with kforge's own etcd client certificate.

use std::time::{Duration, Instant};

use super::pki::{ETCD_CA, Member, Pki};
use super::ssh::{Connection, FileSpec, SshError};

const UNIT: &str = include_str!("../../templates/etcd.service");
const UNIT_PATH: &str = "/etc/systemd/system/kforge-etcd.service";
pub const PKI_DIR: &str = "/etc/kforge/pki/etcd";
/// Debian's etcd-server package starts a single-node etcd of its own on localhost:2379.
const DISTRO_UNIT: &str = "etcd.service";

/// The unit of `member`, with every member in the initial cluster.
pub fn render_unit(cluster: &str, member: &Member, members: &[Member], binary: &str) -> String {
    let initial: Vec<String> = members
        .iter()
        .map(|m| format!("{}=https://{}:2380", m.name, m.address))
        .collect();
    UNIT.replace("{{cluster}}", cluster)
        .replace("{{name}}", &member.name)
        .replace("{{address}}", &member.address.to_string())
        .replace("{{initial_cluster}}", &initial.join(","))
        .replace("{{binary}}", binary)
}

/// What one member's step changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberReport {
    pub uploaded: Vec<String>,
    pub restarted: bool,
    pub disabled_distro_unit: bool,
}

impl MemberReport {
    pub fn changed(&self) -> bool {
        !self.uploaded.is_empty() || self.restarted || self.disabled_distro_unit
    }
}

/// The certificates and unit of `member` (what [`ensure_member`] puts on its master).
pub fn member_files(pki: &Pki, cluster: &str, member: &Member, members: &[Member], binary: &str) -> Vec<FileSpec> {
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
        bytes: render_unit(cluster, member, members, binary).into_bytes(),
        mode: 0o644,
    });
    batch
}

/// Puts certificates and unit on `member` and starts it (without waiting for the others: a new member only
/// becomes ready with a quorum).
pub fn ensure_member(
    conn: &Connection,
    pki: &Pki,
    cluster: &str,
    member: &Member,
    members: &[Member],
    binary: &str,
) -> Result<MemberReport, SshError> {
    let mut report = MemberReport::default();
    let step = "etcd";
    let batch = member_files(pki, cluster, member, members, binary);
    report.uploaded = conn.sync_files(&format!("{step}: files"), &batch)?;
    report.disabled_distro_unit = conn.run_guarded(
        &format!("{step}: disable the distribution's etcd"),
        &format!(
            "! systemctl is-enabled --quiet {DISTRO_UNIT} 2>/dev/null && ! systemctl is-active --quiet {DISTRO_UNIT}"
        ),
        &format!("systemctl disable --now {DISTRO_UNIT}"),
    )?;
    if !report.uploaded.is_empty() || report.disabled_distro_unit {
        conn.run_ok(
            &format!("{step}: start"),
            "systemctl daemon-reload && systemctl enable --quiet kforge-etcd && systemctl restart --no-block kforge-etcd",
        )?;
        report.restarted = true;
    } else {
        report.restarted = conn.run_guarded(
            &format!("{step}: start"),
            "systemctl is-active --quiet kforge-etcd",
            "systemctl enable --quiet kforge-etcd && systemctl start --no-block kforge-etcd",
        )?;
    }
    Ok(report)
}

/// The etcdctl of the etcd asset (a host need not have one of its own on its PATH).
pub const ETCDCTL: &str = "/opt/kforge/bin/etcdctl";

/// `etcdctl ARGS` against the local member with kforge's client certificate, run on a master.
pub fn etcdctl(args: &str) -> String {
    format!(
        "ETCDCTL_API=3 {ETCDCTL} --endpoints=https://127.0.0.1:2379 --cacert={PKI_DIR}/ca.crt \
         --cert={PKI_DIR}/healthcheck-client.crt --key={PKI_DIR}/healthcheck-client.key {args}"
    )
}

/// `etcdctl endpoint health --cluster` with kforge's client certificate, run on a master.
pub fn health_command() -> String {
    etcdctl("endpoint health --cluster")
}

/// Waits until every one of `expected` members reports healthy, asking through `conn`.
pub fn wait_healthy(conn: &Connection, expected: usize, deadline: Duration) -> Result<String, SshError> {
    let until = Instant::now() + deadline;
    loop {
        let out = conn.run("etcd: health", &health_command())?;
        let text = format!("{}{}", out.stdout, out.stderr);
        let healthy = text.lines().filter(|l| l.contains("is healthy")).count();
        if out.status == 0 && healthy >= expected {
            return Ok(text);
        }
        if Instant::now() > until {
            return Err(SshError {
                host: conn.host.clone(),
                step: "etcd: health".into(),
                message: format!(
                    "{healthy} of {expected} members healthy after {}s: {}",
                    deadline.as_secs(),
                    text.lines().last().unwrap_or_default()
                ),
                hint: "check `journalctl -u kforge-etcd` on the masters; a member that cannot reach its peers on \
                       2380 is the usual cause"
                    .into(),
                transient: true,
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_names_every_member_and_requires_certificates() {
        let members: Vec<Member> = (1..=3)
            .map(|i| Member {
                name: format!("m{i}"),
                address: format!("10.0.0.{i}").parse().unwrap(),
            })
            .collect();
        let unit = render_unit("lab", &members[1], &members, "/usr/bin/etcd");
        assert!(unit.contains("--name=m2"));
        assert!(
            unit.contains(
                "--initial-cluster=m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380"
            )
        );
        assert!(unit.contains("--listen-client-urls=https://10.0.0.2:2379,https://127.0.0.1:2379"));
        assert!(unit.contains("--client-cert-auth") && unit.contains("--peer-client-cert-auth"));
        assert!(!unit.contains("http://"), "no plain-HTTP listener");
        assert!(!unit.contains("{{"), "every placeholder filled");
    }
}
