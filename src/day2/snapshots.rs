//! etcd `backup` (a snapshot read back over SSH, checked, kept in the state store) and `restore` (checked before
//! anything stops, the old data kept beside the new).

use super::*;

/// `kforge backup cluster`: a snapshot from the first master whose member is healthy, into the state store.
pub async fn backup(store: &StateStore, record: &ClusterRecord, ssh_timeout: Duration) -> anyhow::Result<BackupRecord> {
    let list = selfbuilt::recorded_hosts(record)?;
    let id = crate::state::new_backup_id();
    let mut tried = Vec::new();
    for host in list.hosts.iter().filter(|h| h.role == HostRole::Master) {
        let conn = match connect(host, ssh_timeout).await {
            Ok(c) => c,
            Err(e) => {
                tried.push(format!("{}: {}", e.host, e.message));
                continue;
            }
        };
        let snapshot_id = id.clone();
        let (_, r) = blocking(conn, move |c| backup::take_snapshot(c, &snapshot_id)).await;
        match r {
            Ok(snapshot) => {
                let backup = BackupRecord {
                    id,
                    cluster: record.name.clone(),
                    created_at: crate::state::now(),
                    member: snapshot.member,
                    sha256: snapshot.sha256,
                    size: snapshot.bytes.len() as u64,
                    kubernetes_version: record.kubernetes_version.clone(),
                    kforge_version: env!("CARGO_PKG_VERSION").into(),
                };
                store.put_backup(&backup, &snapshot.bytes).await?;
                return Ok(backup);
            }
            Err(e) => tried.push(format!("{}: {}: {}", e.host, e.step, e.message)),
        }
    }
    anyhow::bail!(
        "no master gave a snapshot of cluster {}: {}\n  hint: `kforge validate cluster {}` shows etcd's health",
        record.name,
        tried.join("; "),
        record.name
    )
}

/// `kforge restore cluster`: see the module comment of `bootstrap::backup`. The snapshot's checksum is verified
/// before anything is stopped.
pub async fn restore(
    store: &StateStore,
    record: &ClusterRecord,
    id: &str,
    opts: &Options,
    validate_timeout: Duration,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let (backup, snapshot) = store.get_backup(&record.name, id).await?.with_context(|| {
        format!(
            "cluster {} has no backup {id}\n  hint: `kforge get backups {}` lists them",
            record.name, record.name
        )
    })?;
    let got = format!("{:x}", Sha256::digest(&snapshot));
    if got != backup.sha256 {
        anyhow::bail!(
            "backup {id} of cluster {} is corrupt: its snapshot has sha256 {got}, its record says {}\n  hint: \
             nothing was changed; restore another backup",
            record.name,
            backup.sha256
        );
    }
    let list = selfbuilt::recorded_hosts(record)?;
    let members = run::members(&list.hosts).map_err(anyhow::Error::msg)?;
    let hosts: Vec<&BootstrapHost> = list.hosts.iter().filter(|h| h.role == HostRole::Master).collect();
    let mut conns = Vec::new();
    for h in &hosts {
        conns.push(connect(h, opts.connect_timeout).await.map_err(step_failed)?);
    }
    let note = |s: String| reporter.event(Event::Note(format!("restore: {s}")));
    note(format!(
        "backup {id} ({} bytes, sha256 verified, taken from {} at {})",
        backup.size, backup.member, backup.created_at
    ));
    // Nothing may write to etcd while its members are replaced: the API servers (and what talks only to them)
    // stop first, on every master, then etcd.
    let control_plane = "kforge-kube-scheduler kforge-kube-controller-manager kforge-kube-apiserver";
    let mut stopped = Vec::new();
    for conn in conns {
        let (conn, r) = blocking(conn, move |c| {
            c.run_ok(
                "restore: stop",
                &format!("systemctl stop {control_plane} && systemctl stop kforge-etcd"),
            )
        })
        .await;
        r.map_err(step_failed)?;
        stopped.push(conn);
    }
    note(format!("API servers and etcd stopped on {} masters", stopped.len()));
    let token = format!("kforge-{}-restore-{}", record.name, id.to_lowercase());
    let snapshot = std::sync::Arc::new(snapshot);
    let mut restored = Vec::new();
    for conn in stopped {
        let me = members
            .iter()
            .find(|m| m.name == conn.host)
            .context("a master that is no etcd member")?
            .clone();
        let (all, token, snapshot, sum) = (members.clone(), token.clone(), snapshot.clone(), backup.sha256.clone());
        let (conn, r) = blocking(conn, move |c| {
            backup::restore_member(c, &snapshot, &sum, &me, &all, &token)
        })
        .await;
        r.map_err(step_failed)?;
        restored.push(conn);
    }
    note(format!(
        "every member restored from the snapshot (cluster token {token})"
    ));
    let mut started = Vec::new();
    for conn in restored {
        let (conn, r) = blocking(conn, |c| {
            c.run_ok("restore: start etcd", "systemctl start --no-block kforge-etcd")
        })
        .await;
        r.map_err(step_failed)?;
        started.push(conn);
    }
    let expected = members.len();
    let deadline = opts.health_timeout;
    let mut ready = Vec::new();
    for (i, conn) in started.into_iter().enumerate() {
        let (conn, r) = blocking(conn, move |c| {
            if i == 0 {
                etcd::wait_healthy(c, expected, deadline)?;
            }
            c.run_ok(
                "restore: start control plane",
                &format!("systemctl start {control_plane}"),
            )?;
            health::wait_apiserver_ready(c, deadline)
        })
        .await;
        r.map_err(step_failed)?;
        ready.push(conn);
    }
    note(format!("etcd: {expected} members healthy; API servers ready"));
    wait_valid(
        store,
        record,
        &list,
        validate_timeout,
        "`kforge validate cluster` (the restore itself is done: do not restore again)",
    )
    .await?;
    note("cluster valid".into());
    Ok(())
}
