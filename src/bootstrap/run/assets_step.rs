//! The asset stages: each pinned binary installed through its guarded script, the units that run a new binary
//! restarted (etcd one member at a time, through the 3.5.26 bridge when a 3.5 cluster moves to 3.6).

use super::*;

/// Installs the assets of `stage_of` that the host's role needs.
pub(super) fn install_assets(h: &mut HostWork, shared: &Shared, stage_of: Stage) -> Result<(), StepError> {
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
pub(super) fn units_of_asset(name: &str) -> &'static [&'static str] {
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
pub(super) fn with_new_binaries(installed: &[String], units: &[String], restart: Vec<String>) -> Vec<String> {
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
pub(super) fn etcd_bridge_step(h: &mut HostWork, shared: &Shared, members: usize) -> Result<(), StepError> {
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
pub(super) fn ensure_running(
    h: &mut HostWork,
    step: &str,
    units: &[String],
    restart: &[String],
) -> Result<bool, StepError> {
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
pub(super) fn disable_distro_unit(h: &HostWork, step: &str, unit: &str) -> Result<bool, StepError> {
    h.conn().run_guarded(
        step,
        &format!("! systemctl is-enabled --quiet {unit} 2>/dev/null && ! systemctl is-active --quiet {unit}"),
        &format!("systemctl disable --now {unit}"),
    )
}
