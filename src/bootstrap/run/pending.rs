//! What `rolling-update` asks before touching a host: the files and assets out of date there, read only.

use super::*;

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
