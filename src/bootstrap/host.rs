//! One machine as the bootstrap and its SSH layer receive it: where to reach it, as whom, and how to recognise
//! it (the host key kforge expects). Providers make these (`providers::hosts` from a spec or from EC2).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::HostRole;

/// How kforge will know it talks to the right machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ExpectedHostKey {
    /// The host's public key line, from the spec.
    PublicKey { key: String },
    /// `SHA256:...` fingerprints of the host's keys, from its console output.
    Fingerprints { sha256: Vec<String> },
    /// Whatever `~/.ssh/known_hosts` says (spec hosts without `hostKey`).
    KnownHosts,
    /// Not established (yet): such a host is never connected to.
    Unknown { reason: String },
}

/// One machine, as the bootstrap receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapHost {
    pub name: String,
    pub role: HostRole,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key to log in with; `None`: the ssh-agent's keys.
    pub identity_file: Option<PathBuf>,
    pub host_key: ExpectedHostKey,
    /// The jump host to reach it through (the bastion), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<Box<BootstrapHost>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Worker group, labels and taints the kubelet registers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
}

impl BootstrapHost {
    pub fn key_established(&self) -> bool {
        !matches!(self.host_key, ExpectedHostKey::Unknown { .. })
    }
}

impl BootstrapHost {
    pub fn role_name(&self) -> &'static str {
        match self.role {
            HostRole::Master => "master",
            HostRole::Worker => "worker",
        }
    }

    /// `user@address:port`.
    pub fn ssh_target(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }

    /// The expected key as shown to people: the key itself, its first fingerprint, or where it will come from.
    pub fn host_key_shown(&self) -> String {
        match &self.host_key {
            ExpectedHostKey::PublicKey { key } => key.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
            ExpectedHostKey::Fingerprints { sha256 } => sha256.first().cloned().unwrap_or_default(),
            ExpectedHostKey::KnownHosts => "(known_hosts)".into(),
            ExpectedHostKey::Unknown { .. } => "(unknown)".into(),
        }
    }
}
