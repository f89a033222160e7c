//! etcd snapshots and restores on the masters, over SSH: a snapshot is taken from a healthy member with kforge's
//! etcd client certificate, read back as root and checked against the sha256 the host computed; a restore puts the
//! snapshot (checked again on the host) in place of each member's data directory under a new cluster token, so a
//! member of the old cluster can never rejoin the restored one. The old data directory is kept beside it
//! (`/var/lib/kforge-etcd.before-restore`) until the next restore.

use sha2::{Digest as _, Sha256};

use super::etcd;
use super::pki::Member;
use super::ssh::Connection;
use crate::bootstrap::StepError;
use crate::shell::shell_quote;

/// Where snapshots are written and staged on a master (root only).
const WORK_DIR: &str = "/var/lib/kforge-backup";
/// The member's data directory (templates/etcd.service).
pub const DATA_DIR: &str = "/var/lib/kforge-etcd";

/// A snapshot read back from a member.
pub struct Snapshot {
    pub member: String,
    pub bytes: Vec<u8>,
    /// hex
    pub sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The first word of what `sha256sum` printed.
fn host_sum(out: &str) -> String {
    out.lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// Takes a snapshot on `conn`'s member (which must answer healthy itself) and reads it back; the copy is checked
/// against the sha256 the host computed, and the host's file removed.
pub fn take_snapshot(conn: &Connection, id: &str) -> Result<Snapshot, StepError> {
    conn.run_ok("backup: member health", &etcd::etcdctl("endpoint health"))?;
    let path = format!("{WORK_DIR}/{id}.db");
    let q = shell_quote(&path);
    let out = conn.run_ok(
        "backup: snapshot",
        &format!(
            "set -e; umask 077; install -d -m 0700 {WORK_DIR}; {save} >/dev/null; chmod 0600 {q}; sha256sum {q}",
            save = etcd::etcdctl(&format!("snapshot save {q}"))
        ),
    )?;
    let want = host_sum(&out.stdout);
    let bytes = conn.read_file("backup: download", &path)?;
    conn.run_ok("backup: clean up", &format!("rm -f {q}"))?;
    let got = sha256_hex(&bytes);
    if got != want {
        return Err(StepError {
            host: conn.host.clone(),
            step: "backup: download".into(),
            message: format!("the snapshot read back has sha256 {got}, the host's has {want}"),
            hint: "the transfer was corrupted; re-run the backup".into(),
            transient: true,
        });
    }
    Ok(Snapshot {
        member: conn.host.clone(),
        bytes,
        sha256: got,
    })
}

/// The command that restores `snapshot_path` into a new data directory for `member` and swaps it in (etcd must
/// be stopped). etcd 3.5+ ships `etcdutl` for this; 3.4's `etcdctl snapshot restore` does the same.
pub fn restore_command(snapshot_path: &str, member: &Member, members: &[Member], token: &str) -> String {
    let initial: Vec<String> = members
        .iter()
        .map(|m| format!("{}=https://{}:2380", m.name, m.address))
        .collect();
    let staged = format!("{DATA_DIR}.restoring");
    format!(
        "set -e\n\
         if [ -x /opt/kforge/bin/etcdutl ]; then tool=/opt/kforge/bin/etcdutl; else tool=\"env ETCDCTL_API=3 {etcdctl}\"; fi\n\
         rm -rf {staged}\n\
         $tool snapshot restore {snap} --name {name} --initial-cluster {initial} --initial-cluster-token {token} \
         --initial-advertise-peer-urls https://{address}:2380 --data-dir {staged} >/dev/null\n\
         chmod 0700 {staged}\n\
         if [ -d {DATA_DIR} ]; then rm -rf {DATA_DIR}.before-restore; mv {DATA_DIR} {DATA_DIR}.before-restore; fi\n\
         mv {staged} {DATA_DIR}\n\
         rm -f {snap}\n",
        etcdctl = etcd::ETCDCTL,
        snap = shell_quote(snapshot_path),
        name = shell_quote(&member.name),
        initial = shell_quote(&initial.join(",")),
        token = shell_quote(token),
        address = member.address,
    )
}

/// Puts `snapshot` on `conn`'s master, checks its sha256 there against `sha256`, and restores the member from it
/// (etcd must be stopped).
pub fn restore_member(
    conn: &Connection,
    snapshot: &[u8],
    sha256: &str,
    member: &Member,
    members: &[Member],
    token: &str,
) -> Result<(), StepError> {
    let path = format!("{WORK_DIR}/restore.db");
    conn.run_ok("restore: prepare", &format!("install -d -m 0700 {WORK_DIR}"))?;
    conn.upload("restore: upload", snapshot, &path, 0o600)?;
    let out = conn.run_ok("restore: checksum", &format!("sha256sum {}", shell_quote(&path)))?;
    let on_host = host_sum(&out.stdout);
    if on_host != sha256 {
        return Err(StepError {
            host: conn.host.clone(),
            step: "restore: checksum".into(),
            message: format!("the snapshot on the host has sha256 {on_host}, the backup's record says {sha256}"),
            hint: "the upload was corrupted; re-run the restore (nothing was restored on this host)".into(),
            transient: true,
        });
    }
    conn.run_ok("restore: etcd data", &restore_command(&path, member, members, token))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_names_every_member_and_a_new_token_and_keeps_the_old_data() {
        let members: Vec<Member> = (1..=3)
            .map(|i| Member {
                name: format!("master-{i}"),
                address: format!("10.0.0.{i}").parse().unwrap(),
            })
            .collect();
        let cmd = restore_command(
            "/var/lib/kforge-backup/restore.db",
            &members[1],
            &members,
            "kforge-lab-20261202T101500Z",
        );
        assert!(cmd.contains("--name 'master-2'"), "{cmd}");
        assert!(
            cmd.contains(
                "'master-1=https://10.0.0.1:2380,master-2=https://10.0.0.2:2380,master-3=https://10.0.0.3:2380'"
            ),
            "{cmd}"
        );
        assert!(cmd.contains("--initial-cluster-token 'kforge-lab-20261202T101500Z'"));
        assert!(cmd.contains("--initial-advertise-peer-urls https://10.0.0.2:2380"));
        assert!(cmd.contains("mv /var/lib/kforge-etcd /var/lib/kforge-etcd.before-restore"));
        assert_eq!(host_sum("abc  /x\n"), "abc");
    }
}
