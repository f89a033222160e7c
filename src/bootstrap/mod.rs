//! kforge's own control-plane bootstrap of self-built clusters: the PKI (`pki`), the SSH layer (`ssh`) and the host it reaches (`host`), the hosts'
//! preflight checks (`preflight`), etcd (`etcd`), the systemd units and files
//! (`units`), the API client (`api`) and the core addons applied through it (`addons`), the health checks
//! (`health`), and the staged run over every host (`run`); for day 2, drain through the Eviction API (`drain`) and
//! etcd snapshots and restores (`backup`). The pinned downloads they install are `crate::assets`' manifests.

pub mod addons;
pub mod api;
pub mod backup;
pub mod drain;
pub mod etcd;
pub mod health;
pub mod host;
pub mod pki;
pub mod preflight;
pub mod run;
pub mod ssh;
pub mod units;

/// A failed step of the bootstrap or of a day-2 command on one host (or on the cluster's API), as the user should
/// read it: an SSH failure, a command that failed on the host, or an API call the step made.
#[derive(Debug, thiserror::Error)]
#[error("{host}: {step}: {message}\n  hint: {hint}")]
pub struct StepError {
    pub host: String,
    pub step: String,
    pub message: String,
    pub hint: String,
    /// Worth trying again (sshd not up yet, connection refused or reset, an API server starting).
    pub transient: bool,
}
