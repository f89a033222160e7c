//! The first stages on each host: connect (host key verified), preflight (read only), kernel settings.

use super::*;

pub(super) fn connect_step(h: &mut HostWork, opts: &Options) -> Result<(), StepError> {
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
pub(super) fn preflight_step(h: &mut HostWork, facts_of: &ClusterFacts, version: &str) -> Result<(), StepError> {
    let out = h.conn().run_ok("preflight", &preflight::probe_script())?;
    let facts = preflight::parse_probe(&out.stdout);
    let (problems, mut warnings) = preflight::judge(&facts, h.host.role, version, facts_of.fail_cgroup_v1);
    warnings.extend(preflight::disk_warnings(&facts, h.host.role, &facts_of.eviction_hard));
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
pub(super) fn host_settings_step(h: &mut HostWork) -> Result<(), StepError> {
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
pub(super) fn manifest_of(version: &str, cluster: &str) -> Result<Manifest, BootstrapFailed> {
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
