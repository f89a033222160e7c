//! How commands print: JSON/YAML or the tables each command shows.

use super::*;

pub(super) fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)? + "\n",
        OutputFormat::Yaml => serde_norway::to_string(value)?,
        OutputFormat::Table => table(),
    };
    write_stdout(text.as_bytes())
}

/// Writes to standard output; a reader that went away (`kforge ... | head`) is not an error.
pub(super) fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// What an apply did, resource by resource.
pub(super) fn applied_table(entries: &[engine::Applied]) -> String {
    table(
        &["RESOURCE", "KIND", "ACTION", "RESULT", "ID"],
        entries
            .iter()
            .map(|e| {
                vec![
                    e.resource.clone(),
                    e.kind.into(),
                    e.action.into(),
                    e.result.clone(),
                    e.id.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    )
}

pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    for r in rows {
        t.add_row(r);
    }
    let s = t.to_string();
    // Columns padded for alignment, trailing spaces trimmed.
    s.lines()
        .map(|l| l.trim_end().trim_start_matches(' '))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub(super) fn report_hosts(reporter: &dyn progress::Reporter, list: &providers::hosts::HostList) {
    for h in &list.hosts {
        let via = h
            .jump
            .as_ref()
            .map(|j| format!(" via {}", j.address))
            .unwrap_or_default();
        reporter.event(Event::Note(format!(
            "host {} ({}): {} key {}{via}",
            h.name,
            h.role_name(),
            h.ssh_target(),
            h.host_key_shown()
        )));
    }
    if let Some(api) = &list.api_endpoint {
        reporter.event(Event::Note(format!(
            "cluster {}: Kubernetes API endpoint {api}",
            list.cluster
        )));
    }
}

pub(super) fn hosts_table(list: &providers::hosts::HostList) -> String {
    table(&providers::hosts::TABLE_HEADER, list.rows())
}

pub(super) fn backups_table(backups: &[state::BackupRecord]) -> String {
    table(
        &["ID", "CREATED", "MEMBER", "SIZE", "SHA256"],
        backups
            .iter()
            .map(|b| {
                vec![
                    b.id.clone(),
                    b.created_at.clone(),
                    b.member.clone(),
                    b.size.to_string(),
                    b.sha256.clone(),
                ]
            })
            .collect(),
    )
}

pub(super) fn bootstrap_table(report: &crate::bootstrap::run::Report) -> String {
    table(
        &["HOST", "STEP", "RESULT", "UPLOADED"],
        report
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.host.clone(),
                    s.step.clone(),
                    if s.changed { "changed" } else { "ok" }.to_string(),
                    s.uploaded.len().to_string(),
                ]
            })
            .collect(),
    )
}
